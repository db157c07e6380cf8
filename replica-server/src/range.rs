//! Reading a key range of a replica in bounded batches that can resume where they stopped.

use rocksdb::{Direction, IteratorMode, DB};
use wingkv_common::key::{encode_key, hash_key_range};
use wingkv_common::value::{decode_value, is_expired};
use wingkv_common::WingError;

use crate::store::data_cf;

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

    /// Reads up to `max_count` live records (and stops after `max_bytes` of keys and values,
    /// 0 = no byte limit) at `now`, advancing the range past them.
    pub fn read(
        &mut self,
        db: &DB,
        max_count: usize,
        max_bytes: u64,
        now: u32,
        with_values: bool,
    ) -> Result<Vec<RangeRecord>, WingError> {
        let mut out = Vec::new();
        if self.exhausted || max_count == 0 {
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
            if out.len() >= max_count || (max_bytes > 0 && bytes >= max_bytes) {
                return Ok(out);
            }
        }
        self.exhausted = true;
        Ok(out)
    }
}

impl KeyRange {
    /// A range with nothing left (ends a stream after an error).
    pub fn exhausted_marker() -> Self {
        Self { exhausted: true, ..Self::whole() }
    }
}
