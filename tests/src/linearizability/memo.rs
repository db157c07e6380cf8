//! The search's memo: which states were explored, keyed compactly by the completed operations
//! done with and the register value, and compared by coverage rather than equality.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::model::KeyOp;

/// The memo's key: the completed operations done with (linearized, or optional and dropped:
/// the future does not care which) and the register value. The operations are numbered in
/// invoke order and the set is stored compactly, as all of them before `first_pending` and
/// those of `beyond`: it then takes space for the operations in flight, not for the history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct MemoKey {
    first_pending: u32,
    beyond: Vec<u32>,
    pub(super) state: u32,
}

/// A state explored under a [`MemoKey`]: when the last operation linearized was of unknown
/// outcome, the value before it (which restricts the next operation, see the module doc), and
/// the operations of unknown outcome linearized. Dels, and sets of values nothing still to
/// linearize observes, are interchangeable once invoked (and the ones linearized were invoked
/// before the operations in flight, which the key fixes), so only their numbers count; the
/// others count by identity (sorted).
#[derive(Clone, Debug, Default)]
pub(super) struct Explored {
    pub(super) after_unknown: Option<u32>,
    pub(super) ids: Vec<u32>,
    pub(super) unseen_sets: u32,
    pub(super) dels: u32,
}

impl Explored {
    /// Whether every continuation of `other` is one of this state too: an operation of unknown
    /// outcome not yet linearized can still be, or never be, and no restriction is more than
    /// the same restriction.
    pub(super) fn covers(&self, other: &Explored) -> bool {
        (self.after_unknown.is_none() || self.after_unknown == other.after_unknown)
            && self.unseen_sets <= other.unseen_sets
            && self.dels <= other.dels
            && is_subset(&self.ids, &other.ids)
    }
}

/// Whether sorted `a` is a subset of sorted `b`.
fn is_subset(a: &[u32], b: &[u32]) -> bool {
    let mut b = b.iter();
    a.iter().all(|x| b.by_ref().any(|y| y == x))
}

/// The completed operations done with, one bit per operation in invoke order; the bits of
/// operations of unknown outcome are always set, so that they do not hold back
/// [`MemoKey::first_pending`] (they are tracked apart).
pub(super) struct DoneSet {
    bits: Vec<u64>,
    unknown: Vec<u64>,
}

impl DoneSet {
    pub(super) fn new(ops: &[KeyOp]) -> Self {
        let mut unknown = vec![0u64; ops.len().div_ceil(64)];
        for (i, op) in ops.iter().enumerate() {
            if op.complete.is_none() {
                unknown[i / 64] |= 1 << (i % 64);
            }
        }
        Self { bits: unknown.clone(), unknown }
    }

    pub(super) fn set(&mut self, i: usize) {
        self.bits[i / 64] |= 1 << (i % 64);
    }

    pub(super) fn clear(&mut self, i: usize) {
        self.bits[i / 64] &= !(1 << (i % 64));
    }

    /// Fills the set part of `key`.
    pub(super) fn fill(&self, key: &mut MemoKey) {
        let first = self.bits.iter().position(|w| *w != u64::MAX).unwrap_or(self.bits.len());
        let offset = self.bits.get(first).map_or(0, |w| w.trailing_ones() as usize);
        key.first_pending = u32::try_from(first * 64 + offset).unwrap_or(u32::MAX);
        key.beyond.clear();
        for (w, (&bits, &unknown)) in self.bits.iter().zip(&self.unknown).enumerate().skip(first) {
            let mut rest = bits & !unknown;
            while rest != 0 {
                let b = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                if let Ok(i) = u32::try_from(w * 64 + b) {
                    if i > key.first_pending {
                        key.beyond.push(i);
                    }
                }
            }
        }
    }
}

/// A fast non-cryptographic hasher for the memo: the keys are not adversarial, and SipHash would
/// dominate the search's time.
#[derive(Default)]
struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // Spread the high bits down: the hash table picks buckets from the low bits.
        self.0 ^ (self.0 >> 29)
    }
}

/// The states explored, failed or under way, per [`MemoKey`]: a state covered by one of them
/// (see [`Explored::covers`]) is not explored again (under way, the covering state is an
/// ancestor that will try what it could).
#[derive(Default)]
pub(super) struct Memo {
    seen: HashMap<MemoKey, Vec<Explored>, BuildHasherDefault<FastHasher>>,
}

impl Memo {
    /// Records `explored` under `key` unless a state recorded there covers it (then it is not
    /// to be explored); returns whether it was recorded. States it covers are forgotten.
    pub(super) fn record(&mut self, key: &MemoKey, explored: &Explored) -> bool {
        if self.seen.get(key).is_some_and(|seen| seen.iter().any(|e| e.covers(explored))) {
            return false;
        }
        let explored = explored.clone();
        match self.seen.get_mut(key) {
            Some(seen) => {
                seen.retain(|e| !explored.covers(e));
                seen.push(explored);
            }
            None => {
                self.seen.insert(key.clone(), vec![explored]);
            }
        }
        true
    }
}
