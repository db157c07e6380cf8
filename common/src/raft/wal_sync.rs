//! Group commit for a RocksDB write-ahead log.
//!
//! Raft log appends are written to RocksDB without sync (so they are readable at once) and then
//! handed to the [`WalSyncer`] thread, which fsyncs the WAL once for every batch of appends that
//! queued up while the previous fsync ran, and only then acknowledges them. One fsync covers
//! every entry of an append, and the acknowledgements go out in the order of the appends. (A
//! follower's raft core waits for each acknowledgement before its next append; a leader's goes
//! on and counts its entries once acknowledged: see `third_party/openraft/WINGKV.md`. The fsync
//! runs off the raft core's task.)

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rocksdb::DB;

type Ack = Box<dyn FnOnce(Result<(), io::Error>) + Send>;

/// Called on the sync thread before each fsync (tests hold a server's fsyncs with it).
pub type BeforeSync = Box<dyn Fn() + Send>;

enum Msg {
    Sync(Ack),
    Stop,
}

/// Owner of the fsync thread of one RocksDB instance. Cloning shares the thread.
#[derive(Clone)]
pub struct WalSyncer {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Mutex<mpsc::Sender<Msg>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    times: Arc<SyncTimes>,
}

/// How many fsyncs a [`WalSyncer`] ran and how long they took in all, counted since it started.
/// A reader takes the difference of two [`snapshot`](Self::snapshot)s: several readers never
/// disturb each other.
#[derive(Debug, Default)]
pub struct SyncTimes {
    syncs: AtomicU64,
    micros: AtomicU64,
}

impl SyncTimes {
    /// Fsyncs so far, and their time in all.
    pub fn snapshot(&self) -> (u64, Duration) {
        // The count first (`record` adds the time first): a sync counted here has its time in.
        let syncs = self.syncs.load(Ordering::Acquire);
        (syncs, Duration::from_micros(self.micros.load(Ordering::Acquire)))
    }

    /// Counts one fsync that took `took` (the sync thread alone does).
    fn record(&self, took: Duration) {
        self.micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Release);
        self.syncs.fetch_add(1, Ordering::Release);
    }
}

impl WalSyncer {
    /// Starts the fsync thread for `db`.
    pub fn start(db: Arc<DB>, name: String) -> io::Result<Self> {
        Self::start_with(db, name, None)
    }

    /// [`start`](Self::start), calling `before_sync` before each fsync.
    pub fn start_with(db: Arc<DB>, name: String, before_sync: Option<BeforeSync>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let times = Arc::new(SyncTimes::default());
        let counted = times.clone();
        let thread = std::thread::Builder::new()
            .name(format!("wal-sync-{name}"))
            .spawn(move || run(db, rx, before_sync, &counted))?;
        Ok(Self { inner: Arc::new(Inner { tx: Mutex::new(tx), thread: Mutex::new(Some(thread)), times }) })
    }

    /// The fsyncs this thread ran and their time (what the disk makes every raft append wait).
    pub fn times(&self) -> &SyncTimes {
        &self.inner.times
    }

    /// Calls `ack` once everything written to the WAL before this call is on disk.
    pub fn sync_then(&self, ack: impl FnOnce(Result<(), io::Error>) + Send + 'static) {
        let sent = match self.inner.tx.lock() {
            Ok(tx) => tx.send(Msg::Sync(Box::new(ack))),
            Err(_) => return,
        };
        if let Err(mpsc::SendError(Msg::Sync(ack))) = sent {
            ack(Err(io::Error::other("the WAL sync thread has stopped")));
        }
    }

    /// Syncs what is queued, stops the thread and waits for it.
    pub fn shutdown(&self) {
        if let Ok(tx) = self.inner.tx.lock() {
            let _ = tx.send(Msg::Stop);
        }
        let handle = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn run(db: Arc<DB>, rx: mpsc::Receiver<Msg>, before_sync: Option<BeforeSync>, times: &SyncTimes) {
    let mut stop = false;
    while !stop {
        let Ok(first) = rx.recv() else { break };
        let mut acks = Vec::new();
        let mut push = |m: Msg, stop: &mut bool| match m {
            Msg::Sync(a) => acks.push(a),
            Msg::Stop => *stop = true,
        };
        push(first, &mut stop);
        while let Ok(m) = rx.try_recv() {
            push(m, &mut stop);
        }
        if acks.is_empty() {
            continue;
        }
        if let Some(hook) = &before_sync {
            hook();
        }
        let started = Instant::now();
        let result = db.flush_wal(true).map_err(|e| e.into_string());
        times.record(started.elapsed());
        for ack in acks {
            ack(result.clone().map_err(io::Error::other));
        }
    }
    // Anything still queued after Stop is dropped with `rx`, and its waiter sees the channel
    // close; `sync_then` answers later calls with an error.
}
