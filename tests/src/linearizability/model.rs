//! The register model the search runs on: each operation of one key as a [`Step`] on interned
//! values, with its interval.

use std::collections::HashMap;

use super::history::{Event, Op, OpResult};

/// How one operation acts on the register, values interned as numbers so states are cheap to
/// compare and store: [`ABSENT`], [`UNSEEN`], or a value some operation observes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Step {
    /// A read that returned this value.
    Get(u32),
    Set(u32),
    Del,
    /// `result` is `None` when the outcome is unknown.
    Cas {
        expected: u32,
        new: u32,
        result: Option<bool>,
    },
    /// A completed operation whose result does not fit its kind: it can never take effect.
    Mismatch,
}

impl Step {
    /// The register value after this step from `state`, or `None` when the step's result
    /// contradicts `state`.
    pub(super) fn apply(self, state: u32) -> Option<u32> {
        match self {
            Step::Get(v) => (v == state).then_some(state),
            Step::Set(v) => Some(v),
            Step::Del => Some(ABSENT),
            Step::Cas { expected, new, result } => match result {
                Some(true) => (state == expected).then_some(new),
                Some(false) => (state != expected).then_some(state),
                None => Some(if state == expected { new } else { state }),
            },
            Step::Mismatch => None,
        }
    }

    /// Whether it writes without looking at the value, erasing any trace of earlier writes.
    pub(super) fn blind_write(self) -> bool {
        matches!(self, Step::Set(_) | Step::Del)
    }

    /// Whether it never changes the value.
    pub(super) fn read_only(self) -> bool {
        matches!(self, Step::Get(_) | Step::Cas { result: Some(false), .. } | Step::Mismatch)
    }

    /// The value it compares the register with, if one some write may produce.
    pub(super) fn observes(self) -> Option<u32> {
        match self {
            Step::Get(v) | Step::Cas { expected: v, .. } => (v >= FIRST_SEEN).then_some(v),
            _ => None,
        }
    }

    /// The largest value it names.
    pub(super) fn max_value(self) -> u32 {
        match self {
            Step::Get(v) | Step::Set(v) => v,
            Step::Cas { expected, new, .. } => expected.max(new),
            Step::Del | Step::Mismatch => ABSENT,
        }
    }

    /// The step with the value it writes mapped by `canon`.
    pub(super) fn canonical(self, canon: impl Fn(u32) -> u32) -> Step {
        match self {
            Step::Set(v) => Step::Set(canon(v)),
            Step::Cas { expected, new, result } => Step::Cas { expected, new: canon(new), result },
            other => other,
        }
    }
}

/// The interned absent value.
pub(super) const ABSENT: u32 = 0;
/// The interned value of every value no operation observes.
pub(super) const UNSEEN: u32 = 1;
/// The first interned value that some operation observes.
pub(super) const FIRST_SEEN: u32 = 2;

/// One operation prepared for the search.
#[derive(Clone, Copy, Debug)]
pub(super) struct KeyOp {
    /// What it does to the register.
    pub(super) step: Step,
    /// When it was invoked.
    pub(super) invoke: u64,
    /// When it completed (never before `invoke`); `None`: unknown outcome.
    pub(super) complete: Option<u64>,
    /// A completed operation that may also not have happened at all (a ghost: see
    /// [`shrink`](super::shrink)).
    pub(super) optional: bool,
    /// Optional operations of one group are alternatives: at most one of them happens.
    pub(super) group: Option<usize>,
    /// Its index in the key's events.
    pub(super) event: usize,
}

/// An optional write standing for ghosts (see `Shrinker::fails` in [`shrink`](super::shrink)):
/// what `event` writes (a cas as if it were a set), at any time within `invoke..=complete`; at
/// most one write of a group happens.
pub(super) struct Synthetic {
    /// The ghost whose write it is.
    pub(super) event: usize,
    /// The start of the interval it may take effect in.
    pub(super) invoke: u64,
    /// The end of that interval.
    pub(super) complete: u64,
    /// Its group of alternatives.
    pub(super) group: usize,
}

/// The operations among `events` at indices `subset`, ready for
/// [`search`](super::search::search); completed ones flagged true are optional. Gets of unknown
/// outcome are left out: they change nothing and constrain nothing. Then the `synthetic` writes.
pub(super) fn build_ops<'a>(events: &[&'a Event], subset: &[(usize, bool)], synthetic: &[Synthetic]) -> Vec<KeyOp> {
    let completion = |i: usize| events[i].complete.as_ref();
    // Values no operation compares the register with (a get's result, a cas's expected value)
    // are all the same to the model: one number for all of them lets the search see that
    // writes of such values are interchangeable.
    let mut values: HashMap<&'a [u8], u32> = HashMap::new();
    for &(i, _) in subset {
        let observed = match (&events[i].op, completion(i)) {
            (Op::Get, Some((_, OpResult::Value(Some(v))))) => Some(v),
            (Op::Cas { expected: Some(x), .. }, _) => Some(x),
            _ => None,
        };
        if let Some(v) = observed {
            let next = u32::try_from(values.len()).map_or(u32::MAX, |n| n.saturating_add(FIRST_SEEN));
            values.entry(v).or_insert(next);
        }
    }
    let intern = |v: Option<&[u8]>| -> u32 {
        match v {
            None => ABSENT,
            Some(bytes) => values.get(bytes).copied().unwrap_or(UNSEEN),
        }
    };
    let mut ops = Vec::with_capacity(subset.len());
    for &(i, optional) in subset {
        let e = events[i];
        let complete = completion(i);
        let result = complete.map(|(_, r)| r);
        let step = match (&e.op, result) {
            (Op::Get, None) => continue,
            (Op::Get, Some(OpResult::Value(v))) => Step::Get(intern(v.as_deref())),
            (Op::Set(v), None | Some(OpResult::Done)) => Step::Set(intern(Some(v))),
            (Op::Del, None | Some(OpResult::Done)) => Step::Del,
            (Op::Cas { expected, new }, None) => {
                Step::Cas { expected: intern(expected.as_deref()), new: intern(Some(new)), result: None }
            }
            (Op::Cas { expected, new }, Some(OpResult::Cas(set))) => {
                Step::Cas { expected: intern(expected.as_deref()), new: intern(Some(new)), result: Some(*set) }
            }
            _ => Step::Mismatch,
        };
        let complete = complete.map(|(t, _)| (*t).max(e.invoke));
        let optional = optional && complete.is_some();
        ops.push(KeyOp { step, invoke: e.invoke, complete, optional, group: None, event: i });
    }
    for w in synthetic {
        let step = match &events[w.event].op {
            Op::Set(v) | Op::Cas { new: v, .. } => Step::Set(intern(Some(v))),
            _ => Step::Del,
        };
        let (complete, group) = (Some(w.complete), Some(w.group));
        ops.push(KeyOp { step, invoke: w.invoke, complete, optional: true, group, event: w.event });
    }
    ops
}
