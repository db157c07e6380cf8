//! The loader against real files on disk: a local provider, crashes, cancellations, limits.

use std::time::{Duration, Instant};

use wingkv_common::file_digest::{DigestKind, FileDigest};
use wingkv_common::provider::{open_provider, ProviderConfig};

use super::*;
use crate::bulk_load::source::ProviderFiles;
use object_store::ObjectStore;
use wingkv_common::bulk_load::BULK_LOAD_METADATA;

/// A loader of job `source` from the provider `store` (files listed by its metadata).
fn start(
    source: BulkLoadSource,
    replica: &Path,
    store: Arc<dyn ObjectStore>,
    limits: Arc<DownloadLimits>,
) -> BulkLoader {
    let from: Arc<dyn FileSource> = Arc::new(ProviderFiles::new(store, &source.partition_dir).unwrap());
    BulkLoader::start(source, replica, from, None, limits)
}

struct Remote {
    _dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    /// The bytes of every file.
    total: u64,
}

/// An SST file (uncompressed) holding one record whose value is `content`.
fn sst_of(content: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.sst");
    let mut opts = rocksdb::Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::None);
    let mut w = rocksdb::SstFileWriter::create(&opts);
    w.open(&path).unwrap();
    w.put(b"key", content).unwrap();
    w.finish().unwrap();
    std::fs::read(&path).unwrap()
}

/// A local provider holding partition `t/0` with SST files (name, the value they hold) and
/// metadata that describes them, as `tamper` leaves it.
async fn remote(files: &[(&str, Vec<u8>)], tamper: impl Fn(&mut BulkLoadMetadata)) -> Remote {
    remote_by(DigestKind::Md5, files, tamper).await
}

/// [`remote`] with metadata listing `kind` digests.
async fn remote_by(kind: DigestKind, files: &[(&str, Vec<u8>)], tamper: impl Fn(&mut BulkLoadMetadata)) -> Remote {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ProviderConfig::local(dir.path());
    let store = open_provider("local", &cfg).unwrap();
    let pdir = object_store::path::Path::from("bl/c/t/0");
    let mut meta = BulkLoadMetadata::default();
    for (name, content) in files {
        let content = sst_of(content);
        store.put(&pdir.child(*name), content.clone().into()).await.unwrap();
        meta.files.push(FileMeta {
            name: name.to_string(),
            size: content.len() as u64,
            digest: FileDigest::of(kind, &content),
        });
        meta.file_total_size += content.len() as u64;
    }
    let total = meta.file_total_size;
    tamper(&mut meta);
    store.put(&pdir.child(BULK_LOAD_METADATA), serde_json::to_vec(&meta).unwrap().into()).await.unwrap();
    Remote { _dir: dir, store, total }
}

fn source(job_id: u64) -> BulkLoadSource {
    BulkLoadSource { job_id, provider: "local".into(), partition_dir: "bl/c/t/0".into() }
}

fn limits(bytes_per_sec: u64) -> Arc<DownloadLimits> {
    Arc::new(DownloadLimits {
        limiter: RateLimiter::new(bytes_per_sec),
        slots: Semaphore::new(2),
        min_free_bytes: 0,
        retry: BackoffPolicy::new(Duration::from_millis(10), Duration::from_millis(100)),
        retries: AtomicU64::new(0),
        max_metadata_bytes: 64 << 10,
        max_files: 100,
        io: crate::bulk_load::io_pool::BulkIoPool::new(2).unwrap(),
    })
}

async fn settle(loader: &BulkLoader) -> LoaderStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = loader.status();
        if s.state != LoaderState::Downloading || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn downloads_and_verifies_every_file() {
    let r = remote(&[("0.sst", vec![1; 100_000]), ("1.sst", vec![2; 5])], |_| {}).await;
    let replica = tempfile::tempdir().unwrap();
    let loader = start(source(7), replica.path(), r.store.clone(), limits(0));
    let s = settle(&loader).await;
    assert_eq!(s.state, LoaderState::Downloaded);
    assert_eq!((s.downloaded_bytes, s.total_bytes, s.live_tasks), (r.total, r.total, 0));
    assert_eq!(loader.downloaded_files().unwrap().len(), 2);
    let remote_file = object_store::path::Path::from("bl/c/t/0/1.sst");
    let want = r.store.get(&remote_file).await.unwrap().bytes().await.unwrap();
    assert_eq!(std::fs::read(replica.path().join("bulk_load/7/1.sst")).unwrap(), want.to_vec());
    let dir = loader.dir().to_path_buf();
    loader.clear().await;
    assert!(!dir.exists());
}

/// Metadata that lists its files by xxh3 (as backups write it) is checked by xxh3: the right
/// digest downloads, a wrong one fails naming the file and the digests, and the verified list
/// keeps the kind.
#[tokio::test]
async fn files_listed_by_xxh3_are_checked_by_xxh3() {
    let files = [("0.sst", vec![1; 100_000]), ("1.sst", vec![2; 5])];
    let replica = tempfile::tempdir().unwrap();
    let r = remote_by(DigestKind::Xxh3, &files, |_| {}).await;
    let loader = start(source(8), replica.path(), r.store.clone(), limits(0));
    assert_eq!(settle(&loader).await.state, LoaderState::Downloaded);
    let verified = loader.downloaded_files().unwrap();
    assert!(verified.iter().all(|f| f.digest.kind() == DigestKind::Xxh3), "{verified:?}");
    loader.clear().await;

    let wrong = |m: &mut BulkLoadMetadata| m.files[1].digest = FileDigest::of(DigestKind::Xxh3, b"something else");
    let r = remote_by(DigestKind::Xxh3, &files, wrong).await;
    let loader = start(source(9), replica.path(), r.store.clone(), limits(0));
    match settle(&loader).await.state {
        LoaderState::Failed(reason) => {
            assert!(reason.contains("1.sst") && reason.contains("has xxh3") && reason.contains("says xxh3"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    loader.clear().await;
}

#[tokio::test]
async fn bad_files_fail_with_a_reason_and_leave_no_partial_file() {
    let replica = tempfile::tempdir().unwrap();
    let r = remote(&[("0.sst", vec![1; 1000])], |m| {
        m.files[0].digest = FileDigest::new(DigestKind::Md5, "0".repeat(32)).unwrap()
    })
    .await;
    let loader = start(source(1), replica.path(), r.store.clone(), limits(0));
    match settle(&loader).await.state {
        LoaderState::Failed(reason) => assert!(reason.contains("md5"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(!replica.path().join("bulk_load/1/0.tmp").exists());
    assert!(!replica.path().join("bulk_load/1/0.sst").exists());

    let r = remote(&[("0.sst", vec![1; 1000])], |m| {
        m.files[0].size -= 1;
        m.file_total_size -= 1;
    })
    .await;
    let loader = start(source(2), replica.path(), r.store.clone(), limits(0));
    assert!(matches!(settle(&loader).await.state, LoaderState::Failed(ref m) if m.contains("larger")));

    let r = remote(&[], |m| {
        m.files.push(FileMeta { name: "../escape.sst".into(), size: 1, digest: FileDigest::md5_of(b"x") });
        m.file_total_size = 1;
    })
    .await;
    let loader = start(source(3), replica.path(), r.store.clone(), limits(0));
    assert!(matches!(settle(&loader).await.state, LoaderState::Failed(ref m) if m.contains("..")));

    let empty = tempfile::tempdir().unwrap();
    let cfg = ProviderConfig::local(empty.path());
    let store = open_provider("local", &cfg).unwrap();
    let loader = start(source(4), replica.path(), store, limits(0));
    assert!(matches!(settle(&loader).await.state, LoaderState::Failed(ref m) if m.contains("does not exist")));
}

/// A provider whose first `failures` reads fail as a flaky network would, then recover.
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn ObjectStore>,
    failures: AtomicU32,
    /// Only reads of paths ending so fail ("" = all).
    suffix: &'static str,
}

impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flaky({})", self.inner)
    }
}

#[tonic::async_trait]
impl ObjectStore for Flaky {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        if location.as_ref().ends_with(self.suffix)
            && self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
        {
            return Err(object_store::Error::Generic { store: "flaky", source: "connection reset by peer".into() });
        }
        self.inner.get_opts(location, options).await
    }

    async fn delete(&self, location: &object_store::path::Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &object_store::path::Path, to: &object_store::path::Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
    ) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[tokio::test]
async fn transient_provider_failures_are_retried_with_backoff() {
    let r = remote(&[("0.sst", vec![6; 50_000]), ("1.sst", vec![7; 50_000])], |_| {}).await;
    let flaky: Arc<dyn ObjectStore> =
        Arc::new(Flaky { inner: r.store.clone(), failures: AtomicU32::new(5), suffix: "" });
    let replica = tempfile::tempdir().unwrap();
    let limits = limits(0);
    let loader = start(source(11), replica.path(), flaky, limits.clone());
    let s = settle(&loader).await;
    assert_eq!(s.state, LoaderState::Downloaded, "a flaky provider failed the job");
    assert_eq!((s.retries, s.backoff_ms, s.downloaded_bytes), (5, 0, r.total));
    assert_eq!(limits.retries.load(Ordering::Relaxed), 5);
    assert_eq!(loader.downloaded_files().unwrap().len(), 2);

    // While the provider stays down, the loader waits with growing backoff and cancels at once.
    let down: Arc<dyn ObjectStore> =
        Arc::new(Flaky { inner: r.store.clone(), failures: AtomicU32::new(u32::MAX), suffix: "" });
    let loader = start(source(12), replica.path(), down, limits.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while loader.status().retries < 4 {
        assert!(Instant::now() < deadline, "no retries");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(loader.status().state, LoaderState::Downloading, "a transient failure must not fail the job");
    let s = loader.clear().await;
    assert_eq!((s.state, s.live_tasks), (LoaderState::Canceled, 0));
}

/// Holds the first thread that reaches a fail point until the test releases it.
#[cfg(feature = "failpoints")]
struct Gate {
    entered: std::sync::mpsc::Receiver<()>,
    release: std::sync::mpsc::Sender<()>,
}

#[cfg(feature = "failpoints")]
impl Gate {
    fn install(name: &str) -> Self {
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let (entered_tx, release_rx) = (Mutex::new(Some(entered_tx)), Mutex::new(release_rx));
        fail::cfg_callback(name, move || {
            // Only the first arrival waits; later ones pass.
            if let Some(tx) = entered_tx.lock().unwrap().take() {
                let _ = tx.send(());
                let _ = release_rx.lock().unwrap().recv_timeout(Duration::from_secs(30));
            }
        })
        .unwrap();
        Self { entered, release }
    }

    /// Waits (off the runtime) until a thread is held at the fail point.
    async fn wait_entered(self) -> std::sync::mpsc::Sender<()> {
        let Gate { entered, release } = self;
        tokio::task::spawn_blocking(move || entered.recv_timeout(Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("nothing reached the fail point");
        release
    }
}

/// The Pegasus core dump, forced: a clear lands while a download task is between two chunks.
/// The clear must wait for that task, and only then remove the files.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failpoint_a_clear_between_two_chunks_waits_for_the_task() {
    let scenario = fail::FailScenario::setup();
    let gate = Gate::install("bulk_load::between_chunks");
    let r = remote(&[("0.sst", vec![8; 2_000_000])], |_| {}).await;
    let replica = tempfile::tempdir().unwrap();
    let loader = start(source(21), replica.path(), r.store.clone(), limits(0));
    let (dir, shared) = (loader.dir().to_path_buf(), loader.shared.clone());
    let release = gate.wait_entered().await;
    assert_eq!(shared.live.load(Ordering::SeqCst), 2, "the coordinator and the file task are live");
    let mut clear = Box::pin(loader.clear());
    // The task is held mid-download: the clear must not get past it.
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut clear).await.is_err(), "clear did not wait");
    assert!(dir.exists(), "files removed under a live task");
    release.send(()).unwrap();
    let s = tokio::time::timeout(Duration::from_secs(10), clear).await.expect("clear hangs");
    assert_eq!((s.state, s.live_tasks), (LoaderState::Canceled, 0));
    assert!(!dir.exists());
    scenario.teardown();
}

/// A new job starting while an old job's clear is between "tasks ended" and "files removed"
/// keeps its own files: everything is keyed by job id.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failpoint_a_new_job_during_an_old_jobs_clear_keeps_its_files() {
    let scenario = fail::FailScenario::setup();
    let r = remote(&[("0.sst", vec![9; 30_000])], |_| {}).await;
    let replica = tempfile::tempdir().unwrap();
    let old = start(source(31), replica.path(), r.store.clone(), limits(0));
    assert_eq!(settle(&old).await.state, LoaderState::Downloaded);
    let gate = Gate::install("bulk_load::before_clear");
    let old_dir = old.dir().to_path_buf();
    let clearing = tokio::spawn(old.clear());
    let release = gate.wait_entered().await;
    let new = start(source(32), replica.path(), r.store.clone(), limits(0));
    assert_eq!(settle(&new).await.state, LoaderState::Downloaded);
    release.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), clearing).await.expect("clear hangs").unwrap();
    assert!(!old_dir.exists());
    assert!(new.dir().join("0.sst").exists(), "the old job's clear removed the new job's file");
    assert_eq!(new.downloaded_files().unwrap().len(), 1);
    scenario.teardown();
}

#[tokio::test]
async fn a_file_that_is_not_an_sst_is_refused_at_download() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ProviderConfig::local(dir.path());
    let store = open_provider("local", &cfg).unwrap();
    let pdir = object_store::path::Path::from("bl/c/t/0");
    let junk = b"this is not a table file at all".to_vec();
    store.put(&pdir.child("0.sst"), junk.clone().into()).await.unwrap();
    let meta = BulkLoadMetadata {
        files: vec![FileMeta { name: "0.sst".into(), size: junk.len() as u64, digest: FileDigest::md5_of(&junk) }],
        file_total_size: junk.len() as u64,
    };
    store.put(&pdir.child(BULK_LOAD_METADATA), serde_json::to_vec(&meta).unwrap().into()).await.unwrap();
    let replica = tempfile::tempdir().unwrap();
    let loader = start(source(8), replica.path(), store, limits(0));
    assert!(matches!(settle(&loader).await.state, LoaderState::Failed(ref m) if m.contains("not an SST")));
}

#[tokio::test]
async fn clear_during_download_ends_every_task_before_removing_files() {
    let r = remote(&[("0.sst", vec![3; 400_000]), ("1.sst", vec![4; 400_000])], |_| {}).await;
    let replica = tempfile::tempdir().unwrap();
    // 50 KB/s: the download takes seconds, so it is surely running when cleared.
    let loader = start(source(9), replica.path(), r.store.clone(), limits(50_000));
    let deadline = Instant::now() + Duration::from_secs(10);
    while loader.status().downloaded_bytes == 0 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(loader.status().live_tasks > 0);
    let dir = loader.dir().to_path_buf();
    let shared = loader.shared.clone();
    // What is left to download takes this long at 50 KB/s: a clear that waited for the
    // download instead of stopping it would take at least as long (a bound that holds on a
    // loaded machine, unlike a small wall-clock budget).
    let status = loader.status();
    let left = Duration::from_secs_f64((status.total_bytes - status.downloaded_bytes) as f64 / 50_000.0);
    let started = Instant::now();
    loader.clear().await;
    assert!(started.elapsed() < left, "cancel took {:?}, the rest of the download {left:?}", started.elapsed());
    assert_eq!(shared.live.load(Ordering::SeqCst), 0, "a download task outlived clear()");
    assert_eq!(*shared.state.lock().unwrap(), LoaderState::Canceled);
    assert!(!dir.exists(), "files of a canceled job are left");
}

#[tokio::test]
async fn a_paused_job_resumes_without_downloading_verified_files_again() {
    let r = remote(&[("0.sst", vec![5; 10_000])], |_| {}).await;
    let replica = tempfile::tempdir().unwrap();
    let first = start(source(5), replica.path(), r.store.clone(), limits(0));
    assert_eq!(settle(&first).await.state, LoaderState::Downloaded);
    first.stop().await;
    drop(first);
    let again = start(source(5), replica.path(), r.store.clone(), limits(0));
    let s = settle(&again).await;
    assert_eq!((s.state, s.downloaded_bytes), (LoaderState::Downloaded, r.total));
}

#[tokio::test]
async fn oversized_metadata_and_too_many_files_fail_naming_the_limit() {
    let replica = tempfile::tempdir().unwrap();
    // 101 files: over the limit of 100.
    let many: Vec<(String, Vec<u8>)> = (0..101).map(|i| (format!("{i}.sst"), vec![1u8; 3])).collect();
    let many: Vec<(&str, Vec<u8>)> = many.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let r = remote(&many, |_| {}).await;
    let loader = start(source(41), replica.path(), r.store.clone(), limits(0));
    match settle(&loader).await.state {
        LoaderState::Failed(m) => assert!(m.contains("101 files") && m.contains("max_files_per_partition"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Metadata over 64 KiB: refused before it is read.
    let r = remote(&[("0.sst", vec![1; 10])], |m| {
        m.files.extend((0..2_000).map(|i| FileMeta {
            name: format!("pad-{i}.sst"),
            size: 0,
            digest: FileDigest::md5_of(b""),
        }))
    })
    .await;
    let loader = start(source(42), replica.path(), r.store.clone(), limits(0));
    match settle(&loader).await.state {
        LoaderState::Failed(m) => assert!(m.contains("max_metadata_bytes"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(!replica.path().join("bulk_load/41").exists() && !replica.path().join("bulk_load/42").exists());
}

#[tokio::test]
async fn a_verified_list_is_recorded_only_once_every_file_is_verified() {
    let r = remote(&[("0.sst", vec![1; 1000]), ("1.sst", vec![2; 1000])], |_| {}).await;
    let replica = tempfile::tempdir().unwrap();
    let loader = start(source(43), replica.path(), r.store.clone(), limits(0));
    assert_eq!(settle(&loader).await.state, LoaderState::Downloaded);
    let mut listed = read_verified_list(loader.dir()).expect("no verified list");
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["0.sst", "1.sst"]);
    // The producer replaced 1.sst: a new attempt drops the list before it touches any file.
    let r = remote(&[("0.sst", vec![1; 1000]), ("1.sst", vec![3; 1000])], |_| {}).await;
    let down: Arc<dyn ObjectStore> =
        Arc::new(Flaky { inner: r.store.clone(), failures: AtomicU32::new(u32::MAX), suffix: "1.sst" });
    let again = start(source(43), replica.path(), down, limits(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while again.status().retries == 0 {
        assert!(Instant::now() < deadline, "no retry");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(read_verified_list(again.dir()).is_none(), "a verified list outlived the start of a new attempt");
    again.stop().await;
}

/// A file that ends like an SST, with the md5 its metadata says, but a damaged block: RocksDB's
/// block checksums refuse it at download, before any ingestion is proposed.
#[tokio::test]
async fn a_damaged_sst_with_a_matching_md5_is_refused_by_rocksdb_at_download() {
    let r = remote(&[("0.sst", vec![7; 10_000])], |_| {}).await;
    let pdir = object_store::path::Path::from("bl/c/t/0");
    let mut bytes = r.store.get(&pdir.child("0.sst")).await.unwrap().bytes().await.unwrap().to_vec();
    bytes[100] ^= 0x5a;
    r.store.put(&pdir.child("0.sst"), bytes.clone().into()).await.unwrap();
    let meta = BulkLoadMetadata {
        files: vec![FileMeta { name: "0.sst".into(), size: bytes.len() as u64, digest: FileDigest::md5_of(&bytes) }],
        file_total_size: bytes.len() as u64,
    };
    r.store.put(&pdir.child(BULK_LOAD_METADATA), serde_json::to_vec(&meta).unwrap().into()).await.unwrap();
    let replica = tempfile::tempdir().unwrap();
    let loader = start(source(44), replica.path(), r.store.clone(), limits(0));
    match settle(&loader).await.state {
        LoaderState::Failed(m) => assert!(m.contains("0.sst") && m.contains("damaged"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(read_verified_list(loader.dir()).is_none());
}
