//! Reading a key range of a replica in bounded batches that can resume where they stopped.

use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{Direction, IteratorMode, DB};
use wingkv_common::key::{encode_key, hash_key_range};
use wingkv_common::value::{decode_value, is_expired};
use wingkv_common::WingError;

use crate::store::data_cf;

/// Records examined by every range read of this process (scans, counts, range `multi_get`s,
/// expired records included), for `/metrics`: it shows what reads cost and that an abandoned
/// scan stops.
pub static RANGE_STEPS: AtomicU64 = AtomicU64::new(0);

/// How much one [`KeyRange::read`] may hand out and examine.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Most live records handed out (at least 1 to read anything).
    pub records: usize,
    /// Stop once this many bytes of keys and values are handed out (0 = no byte limit).
    pub bytes: u64,
    /// Most records examined, expired ones included: a run of expired records (waiting for
    /// compaction) costs as much to skip as to read, so it is bounded too.
    pub steps: usize,
}

/// A live record read from a range.
#[derive(Debug, Clone)]
pub struct RangeRecord {
    /// Encoded key.
    pub key: Vec<u8>,
    /// Seconds since 2016 when it expires, 0 = never.
    pub expire_ts: u32,
    /// User value (empty when values were not asked for).
    pub value: Vec<u8>,
}

/// A range of encoded keys, advanced past every record it hands out.
#[derive(Debug, Clone)]
pub struct KeyRange {
    start: Vec<u8>,
    start_inclusive: bool,
    end: Option<Vec<u8>>,
    end_inclusive: bool,
    exhausted: bool,
}

impl KeyRange {
    /// Every key of the partition.
    pub fn whole() -> Self {
        Self { start: Vec::new(), start_inclusive: true, end: None, end_inclusive: false, exhausted: false }
    }

    /// The sort keys of `hash_key` from `start_sk` to `stop_sk` (empty stop = to the end of the
    /// hash key).
    pub fn hash_key(
        hash_key: &[u8],
        start_sk: &[u8],
        start_inclusive: bool,
        stop_sk: &[u8],
        stop_inclusive: bool,
    ) -> Result<Self, WingError> {
        let start = encode_key(hash_key, start_sk)?;
        let (end, end_inclusive) = if stop_sk.is_empty() {
            (hash_key_range(hash_key)?.1, false)
        } else {
            (Some(encode_key(hash_key, stop_sk)?), stop_inclusive)
        };
        Ok(Self { start, start_inclusive, end, end_inclusive, exhausted: false })
    }

    /// Whether every record has been handed out.
    pub fn is_exhausted(&self) -> bool {
        self.exhausted
    }

    fn past_end(&self, key: &[u8]) -> bool {
        match &self.end {
            Some(end) if self.end_inclusive => key > end.as_slice(),
            Some(end) => key >= end.as_slice(),
            None => false,
        }
    }

    /// Reads the live records at `now` within `limits`, advancing the range past every record
    /// examined. Fewer records than asked with the range not exhausted means a limit stopped it.
    pub fn read(
        &mut self,
        db: &DB,
        limits: ReadLimits,
        now: u32,
        with_values: bool,
    ) -> Result<Vec<RangeRecord>, WingError> {
        let mut steps = 0usize;
        let read = self.read_counted(db, limits, now, with_values, &mut steps);
        RANGE_STEPS.fetch_add(steps as u64, Ordering::Relaxed);
        read
    }

    fn read_counted(
        &mut self,
        db: &DB,
        limits: ReadLimits,
        now: u32,
        with_values: bool,
        steps: &mut usize,
    ) -> Result<Vec<RangeRecord>, WingError> {
        let mut out = Vec::new();
        if self.exhausted || limits.records == 0 {
            return Ok(out);
        }
        let mut bytes = 0u64;
        let it = db.iterator_cf(data_cf(db)?, IteratorMode::From(&self.start, Direction::Forward));
        for item in it {
            let (k, v) = item?;
            if !self.start_inclusive && k.as_ref() == self.start.as_slice() {
                continue;
            }
            if self.past_end(&k) {
                self.exhausted = true;
                return Ok(out);
            }
            if *steps >= limits.steps {
                return Ok(out);
            }
            *steps += 1;
            self.start = k.to_vec();
            self.start_inclusive = false;
            let (ts, user) = decode_value(&v)?;
            if is_expired(ts, now) {
                continue;
            }
            bytes += (k.len() + if with_values { user.len() } else { 0 }) as u64;
            out.push(RangeRecord {
                key: k.to_vec(),
                expire_ts: ts,
                value: if with_values { user.to_vec() } else { Vec::new() },
            });
            if out.len() >= limits.records || (limits.bytes > 0 && bytes >= limits.bytes) {
                return Ok(out);
            }
        }
        self.exhausted = true;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use crate::store::SharedStorage;
    use wingkv_common::value::encode_value;

    /// A run of expired records is skipped in bounded steps: each read stops after its step
    /// budget, resumes where it stopped, and the live records after the run are all found.
    #[test]
    fn expired_runs_are_skipped_within_the_step_budget() {
        let dir = tempfile::tempdir().unwrap();
        let db = SharedStorage::new(StorageConfig::default()).open(dir.path()).unwrap();
        let cf = data_cf(&db).unwrap();
        for i in 0..250u32 {
            let expire_ts = if i < 240 { 10 } else { 0 };
            let key = encode_key(b"hk", format!("{i:04}").as_bytes()).unwrap();
            db.put_cf(cf, key, encode_value(expire_ts, b"v")).unwrap();
        }
        let mut range = KeyRange::hash_key(b"hk", b"", true, b"", false).unwrap();
        let limits = ReadLimits { records: 1_000, bytes: 0, steps: 100 };
        let mut reads = 0;
        let mut live = Vec::new();
        while !range.is_exhausted() {
            live.extend(range.read(&db, limits, 1_000, true).unwrap());
            reads += 1;
            assert!(reads <= 10, "the range does not advance");
        }
        assert_eq!(live.len(), 10);
        assert_eq!(reads, 3, "100 + 100 + 50 steps");
        assert_eq!(decode_key_sk(&live[0].key), b"0240");
    }

    fn decode_key_sk(key: &[u8]) -> &[u8] {
        wingkv_common::key::decode_key(key).unwrap().1
    }
}
