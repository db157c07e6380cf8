//! A linearizability checker for register histories recorded by fault-injection tests, in the
//! manner of Jepsen's Knossos and of Porcupine.
//!
//! Concurrent clients run get/set/del/cas on a few keys while servers are killed and paused, and
//! record each operation's invoke time and, when they learned it, its completion time and result.
//! A history is linearizable when some total order of its operations (a linearization) respects
//! real time (an operation that completed before another was invoked comes first) and explains
//! every result by one register per key. Keys are independent registers and linearizability is
//! compositional, so each key's sub-history is checked on its own: that keeps every search small.
//!
//! The search is Wing & Gong's, with Lowe's just-in-time linearization and the memoization of
//! Porcupine: call and return events sorted by time form a linked list; the search linearizes
//! some operation whose call precedes the first pending return, and backtracks when it meets the
//! return of an operation it has not linearized. Each (linearized set, register value) pair is
//! explored at most once, which makes ordinary histories cost about linear time.
//!
//! An operation of unknown outcome (timeout, lost connection) may take effect at any time after
//! its invoke, or never: it has no return event, and since linearizing it last is the same as
//! leaving it out, the search is done once every completed operation is linearized. Such
//! operations stay pending to the end and could multiply the states; sound reductions keep them
//! in check. One is never linearized where it changes nothing, nor right before a blind write
//! (set, del), which would erase it unseen: leaving it out explains the same results. Nor right
//! before a read (a get, a cas that did not write) that is valid without it: taking the read
//! first explains the same results and ends in the same state. Pending ones with the same effect
//! are interchangeable, and so are all values nothing still to linearize reads. A state that
//! differs from one explored only by more of them used is not explored: it can do no more. And
//! a violation is first sought with each allowed to take effect any number of times, which is
//! cheaper to refute and more permissive, so what fails there fails for real (see [`check`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use anyhow::{bail, Result};

/// An operation on one key's register.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Reads the value.
    Get,
    /// Sets the value.
    Set(Vec<u8>),
    /// Removes the value.
    Del,
    /// Sets `new` if the value equals `expected` (`None`: the value does not exist).
    Cas {
        /// The value required for the write (`None`: absent).
        expected: Option<Vec<u8>>,
        /// The value written when the check passes.
        new: Vec<u8>,
    },
}

/// The result of a completed operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OpResult {
    /// What a `Get` read (`None`: absent).
    Value(Option<Vec<u8>>),
    /// A `Set` or `Del` was acknowledged.
    Done,
    /// Whether a `Cas` wrote.
    Cas(bool),
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The client that ran it (for reports only: the checker does not need clients to be
    /// sequential).
    pub client: usize,
    /// The key it touched.
    pub key: String,
    /// The operation and its inputs.
    pub op: Op,
    /// When it was invoked, in any monotonic unit shared by all clients.
    pub invoke: u64,
    /// When it completed and what it returned; `None` when the outcome is unknown (it may take
    /// effect at any time after `invoke`, or never). A completion earlier than `invoke` counts
    /// as a completion at `invoke`.
    pub complete: Option<(u64, OpResult)>,
}

/// A recorded history: operations of all clients on all keys, in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The operations.
    pub events: Vec<Event>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a whole event.
    pub fn push(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Records the invocation of `op` on `key` by `client` at `time`, outcome unknown until
    /// [`History::complete`]; returns its id for that call.
    pub fn invoke(&mut self, client: usize, key: impl Into<String>, op: Op, time: u64) -> usize {
        self.events.push(Event { client, key: key.into(), op, invoke: time, complete: None });
        self.events.len() - 1
    }

    /// Records that operation `id` (from [`History::invoke`]) completed at `time` with `result`.
    pub fn complete(&mut self, id: usize, time: u64, result: OpResult) -> Result<()> {
        let Some(event) = self.events.get_mut(id) else {
            bail!("no operation {id} in a history of {} operations", self.events.len());
        };
        if event.complete.is_some() {
            bail!("operation {id} already completed");
        }
        event.complete = Some((time, result));
        Ok(())
    }
}

/// The verdict on a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's sub-history is linearizable.
    Ok,
    /// A key's sub-history is not linearizable.
    Violation(Violation),
    /// No violation was found, but the search on some key ran out of budget, so nothing is
    /// claimed for it (see [`Report::unknown_keys`]).
    Unknown,
}

/// A key whose sub-history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// A minimal non-linearizable part of its sub-history, by invoke time (see [`check`] for
    /// what minimal means here).
    pub minimal: Vec<Event>,
    /// One line on what goes wrong.
    pub explanation: String,
}

/// What [`check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// How many keys the history touches.
    pub keys: usize,
    /// How many operations it holds.
    pub ops: usize,
    /// The verdict.
    pub verdict: Verdict,
    /// Keys whose search ran out of budget (their verdict is unknown).
    pub unknown_keys: Vec<String>,
    /// Search states explored by the check (shrinking a violation not included).
    pub states: usize,
}

/// Checks that `history` is linearizable for a register per key (initially absent), spending
/// at most `budget` search states per key.
///
/// Keys are checked in order and the check stops at the first violating key. Its sub-history is
/// then shrunk to a minimal failing part: single completed events are removed while the rest
/// still fails, until no single removal does, after passes that remove whole stretches of
/// events to go fast. A removal is kept only when the rest fails even with the removed writes
/// still allowed to take effect within their recorded intervals, or not at all (and those of
/// unknown outcome as before): a plain removal can create a violation of its own (remove the
/// write a read saw) and shrinking would end on that instead of on the real one. The writes
/// that wrote a value an event shown read are shown too. Shrinking spends at most `budget`
/// states in all; when it stops early, the explanation says so.
pub fn check(history: &History, budget: usize) -> Report {
    let by_key = group_by_key(history);
    let mut report = Report {
        keys: by_key.len(),
        ops: history.events.len(),
        verdict: Verdict::Ok,
        unknown_keys: Vec::new(),
        states: 0,
    };
    for (key, events) in &by_key {
        let all: Vec<(usize, bool)> = (0..events.len()).map(|i| (i, false)).collect();
        let run = decide(&build_ops(events, &all, &[]), budget);
        report.states += run.states;
        match run.outcome {
            Outcome::Linearizable => {}
            Outcome::Unknown => report.unknown_keys.push((*key).to_string()),
            Outcome::Violation(stuck) => {
                report.verdict = Verdict::Violation(minimize(key, events, stuck, (run.states, run.reuse), budget));
                return report;
            }
        }
    }
    if !report.unknown_keys.is_empty() {
        report.verdict = Verdict::Unknown;
    }
    report
}

/// Keys whose value read after the run (`final_values`, read once every recorded operation had
/// completed or been abandoned) no linearization of the history could end with. Keys absent
/// from `final_values` are not checked; the history must hold every write to the keys checked.
///
/// Writes are sets, dels and cas, except a cas that returned false. A write is acknowledged when
/// it completed with the result of its kind (`Done`; `Cas(true)`). Acknowledged write `a` is
/// definitely followed by acknowledged write `b` when `b` was invoked strictly after `a`
/// completed: `b` took effect after `a`. The final value must be what some write not definitely
/// followed wrote (a del writes "absent"); writes of unknown outcome always count, since they
/// may take effect last. Absent also fits when no write was acknowledged (the initial value).
/// So this reports a final value nobody wrote, and a final value older than an acknowledged
/// write that every other write (acknowledged) completed before. It never flags a linearizable
/// history: the last write of any linearization is one of those counted, even if writes of
/// unknown outcome take effect after the final read.
pub fn lost_acknowledged_writes(history: &History, final_values: &BTreeMap<String, Option<Vec<u8>>>) -> Vec<String> {
    let by_key = group_by_key(history);
    let mut lost = Vec::new();
    for (key, final_value) in final_values {
        let events = by_key.get(key.as_str()).map(Vec::as_slice).unwrap_or_default();
        // (value written, completion time if acknowledged)
        let mut writes: Vec<(Option<&[u8]>, Option<u64>)> = Vec::new();
        for e in events {
            let (value, acked) = match (&e.op, e.complete.as_ref().map(|(_, r)| r)) {
                (Op::Get, _) | (Op::Cas { .. }, Some(OpResult::Cas(false))) => continue,
                (Op::Set(v), r) => (Some(v.as_slice()), r == Some(&OpResult::Done)),
                (Op::Del, r) => (None, r == Some(&OpResult::Done)),
                (Op::Cas { new, .. }, r) => (Some(new.as_slice()), r == Some(&OpResult::Cas(true))),
            };
            let acked_at = match &e.complete {
                Some((t, _)) if acked => Some((*t).max(e.invoke)),
                _ => None,
            };
            writes.push((value, acked_at));
        }
        let last_acked_invoke = events
            .iter()
            .filter(|e| {
                matches!(
                    (&e.op, e.complete.as_ref().map(|(_, r)| r)),
                    (Op::Set(_) | Op::Del, Some(OpResult::Done)) | (Op::Cas { .. }, Some(OpResult::Cas(true)))
                )
            })
            .map(|e| e.invoke)
            .max();
        let could_be_last = |acked_at: Option<u64>| match (acked_at, last_acked_invoke) {
            (Some(done), Some(later)) => later <= done,
            _ => true,
        };
        let fits = writes.iter().any(|&(value, acked_at)| could_be_last(acked_at) && value == final_value.as_deref())
            || (last_acked_invoke.is_none() && final_value.is_none());
        if !fits {
            lost.push(key.clone());
        }
    }
    lost
}

/// Each key's events, by invoke time (ties in history order).
fn group_by_key(history: &History) -> BTreeMap<&str, Vec<&Event>> {
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in &history.events {
        by_key.entry(e.key.as_str()).or_default().push(e);
    }
    for events in by_key.values_mut() {
        events.sort_by_key(|e| e.invoke);
    }
    by_key
}

/// How one operation acts on the register, values interned as numbers so states are cheap to
/// compare and store: [`ABSENT`], [`UNSEEN`], or a value some operation observes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Step {
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
    fn apply(self, state: u32) -> Option<u32> {
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
    fn blind_write(self) -> bool {
        matches!(self, Step::Set(_) | Step::Del)
    }

    /// Whether it never changes the value.
    fn read_only(self) -> bool {
        matches!(self, Step::Get(_) | Step::Cas { result: Some(false), .. } | Step::Mismatch)
    }

    /// The value it compares the register with, if one some write may produce.
    fn observes(self) -> Option<u32> {
        match self {
            Step::Get(v) | Step::Cas { expected: v, .. } => (v >= FIRST_SEEN).then_some(v),
            _ => None,
        }
    }

    /// The largest value it names.
    fn max_value(self) -> u32 {
        match self {
            Step::Get(v) | Step::Set(v) => v,
            Step::Cas { expected, new, .. } => expected.max(new),
            Step::Del | Step::Mismatch => ABSENT,
        }
    }

    /// The step with the value it writes mapped by `canon`.
    fn canonical(self, canon: impl Fn(u32) -> u32) -> Step {
        match self {
            Step::Set(v) => Step::Set(canon(v)),
            Step::Cas { expected, new, result } => Step::Cas { expected, new: canon(new), result },
            other => other,
        }
    }
}

/// The interned absent value.
const ABSENT: u32 = 0;
/// The interned value of every value no operation observes.
const UNSEEN: u32 = 1;
/// The first interned value that some operation observes.
const FIRST_SEEN: u32 = 2;

/// One operation prepared for the search.
#[derive(Clone, Copy, Debug)]
struct KeyOp {
    step: Step,
    invoke: u64,
    /// `None`: unknown outcome.
    complete: Option<u64>,
    /// A completed operation that may also not have happened at all (see [`Shrinker`]).
    optional: bool,
    /// Optional operations of one group are alternatives: at most one of them happens.
    group: Option<usize>,
    /// Its index in the key's events.
    event: usize,
}

/// An optional write standing for ghosts (see [`Shrinker::fails`]): what `event` writes (a cas
/// as if it were a set), at any time within `invoke..=complete`; at most one write of a group
/// happens.
struct Synthetic {
    event: usize,
    invoke: u64,
    complete: u64,
    group: usize,
}

/// The operations among `events` at indices `subset`, ready for [`search`]; completed ones
/// flagged true are optional. Gets of unknown outcome are left out: they change nothing and
/// constrain nothing. Then the `synthetic` writes.
fn build_ops<'a>(events: &[&'a Event], subset: &[(usize, bool)], synthetic: &[Synthetic]) -> Vec<KeyOp> {
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

/// Where a failed search got stuck, in indices of the key's events.
#[derive(Clone, Debug, Default)]
struct Stuck {
    /// The longest order of operations found consistent before getting stuck.
    prefix: Vec<usize>,
    /// The operation whose return came before any such order could include it.
    blocked: Option<usize>,
}

#[derive(Debug)]
enum Outcome {
    Linearizable,
    Violation(Stuck),
    Unknown,
}

struct Run {
    outcome: Outcome,
    /// States explored (memoized pairs).
    states: usize,
    /// Whether operations of unknown outcome could take effect many times (see [`decide`]).
    reuse: bool,
}

/// A node of the search's list of call and return events.
#[derive(Clone, Copy, Debug)]
struct Entry {
    op: usize,
    call: bool,
    prev: usize,
    next: usize,
}

/// The memo's key: the completed operations done with (linearized, or optional and dropped:
/// the future does not care which) and the register value. The operations are numbered in
/// invoke order and the set is stored compactly, as all of them before `first_pending` and
/// those of `beyond`: it then takes space for the operations in flight, not for the history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct MemoKey {
    first_pending: u32,
    beyond: Vec<u32>,
    state: u32,
}

/// A state explored under a [`MemoKey`]: when the last operation linearized was of unknown
/// outcome, the value before it (which restricts the next operation, see the module doc), and
/// the operations of unknown outcome linearized. Dels, and sets of values nothing still to
/// linearize observes, are interchangeable once invoked (and the ones linearized were invoked
/// before the operations in flight, which the key fixes), so only their numbers count; the
/// others count by identity (sorted).
#[derive(Clone, Debug, Default)]
struct Explored {
    after_unknown: Option<u32>,
    ids: Vec<u32>,
    unseen_sets: u32,
    dels: u32,
}

impl Explored {
    /// Whether every continuation of `other` is one of this state too: an operation of unknown
    /// outcome not yet linearized can still be, or never be, and no restriction is more than
    /// the same restriction.
    fn covers(&self, other: &Explored) -> bool {
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
struct DoneSet {
    bits: Vec<u64>,
    unknown: Vec<u64>,
}

impl DoneSet {
    fn new(ops: &[KeyOp]) -> Self {
        let mut unknown = vec![0u64; ops.len().div_ceil(64)];
        for (i, op) in ops.iter().enumerate() {
            if op.complete.is_none() {
                unknown[i / 64] |= 1 << (i % 64);
            }
        }
        Self { bits: unknown.clone(), unknown }
    }

    fn set(&mut self, i: usize) {
        self.bits[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.bits[i / 64] &= !(1 << (i % 64));
    }

    /// Fills the set part of `key`.
    fn fill(&self, key: &mut MemoKey) {
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

/// A frame of the search stack: an operation linearized (or an optional one dropped) and what
/// to restore when undoing it.
struct Frame {
    op: usize,
    dropped: bool,
    state: u32,
    after_unknown: Option<u32>,
}

const HEAD: usize = 0;

/// Decides whether `ops` (one key) are linearizable, exploring at most `budget` states.
///
/// Proving a violation means exhausting the search, and there operations of unknown outcome
/// are costly: the ways to use some of them and not others multiply. So first comes a search
/// where each may take effect any number of times (after its invoke): more permissive, it
/// proves most violations cheaply. Only when it finds a linearization, which may use some
/// operation twice, comes the exact search, which then usually finds one quickly too.
fn decide(ops: &[KeyOp], budget: usize) -> Run {
    if ops.iter().all(|o| o.complete.is_some()) {
        return search(ops, budget, false);
    }
    let relaxed = search(ops, budget, true);
    match relaxed.outcome {
        Outcome::Linearizable => {
            let exact = search(ops, budget.saturating_sub(relaxed.states), false);
            Run { states: relaxed.states + exact.states, ..exact }
        }
        _ => relaxed,
    }
}

/// Decides whether `ops` (one key) are linearizable, exploring at most `budget` states; with
/// `reuse`, an operation of unknown outcome may take effect any number of times.
fn search(ops: &[KeyOp], budget: usize, reuse: bool) -> Run {
    // Invoke order makes the memo's keys compact (see `MemoKey`).
    let mut ops = ops.to_vec();
    ops.sort_by_key(|o| o.invoke);
    let ops = ops;
    let required = |o: &KeyOp| o.complete.is_some() && !o.optional;
    let mut remaining = ops.iter().filter(|o| required(o)).count();
    let total_required = remaining;
    if remaining == 0 {
        return Run { outcome: Outcome::Linearizable, states: 0, reuse };
    }

    // Calls sort before returns at equal times: equal times count as overlapping, the lenient
    // reading of clocks too coarse to order them.
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.invoke, false, i));
        if let Some(t) = op.complete {
            order.push((t, true, i));
        }
    }
    order.sort_unstable();
    let tail = order.len() + 1;
    let mut entries = Vec::with_capacity(order.len() + 2);
    entries.push(Entry { op: usize::MAX, call: false, prev: usize::MAX, next: 1 });
    let mut call_of = vec![0; ops.len()];
    let mut return_of = vec![None; ops.len()];
    for (k, &(_, is_return, op)) in order.iter().enumerate() {
        let idx = k + 1;
        entries.push(Entry { op, call: !is_return, prev: idx - 1, next: idx + 1 });
        if is_return {
            return_of[op] = Some(idx);
        } else {
            call_of[op] = idx;
        }
    }
    entries.push(Entry { op: usize::MAX, call: false, prev: tail - 1, next: usize::MAX });

    // Dancing links: an unlinked node keeps its neighbours, so undoing in reverse order of
    // unlinking restores the list.
    fn unlink(entries: &mut [Entry], x: usize) {
        let Entry { prev, next, .. } = entries[x];
        entries[prev].next = next;
        entries[next].prev = prev;
    }
    fn relink(entries: &mut [Entry], x: usize) {
        let Entry { prev, next, .. } = entries[x];
        entries[prev].next = x;
        entries[next].prev = x;
    }
    // An operation and the alternatives of its group, which it resolves too.
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Some(g) = op.group {
            groups.entry(g).or_default().push(i);
        }
    }
    let resolved: Vec<Vec<usize>> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| op.group.and_then(|g| groups.get(&g).cloned()).unwrap_or(vec![i]))
        .collect();
    let lift = |entries: &mut [Entry], i: usize| {
        for &m in &resolved[i] {
            unlink(entries, call_of[m]);
            if let Some(r) = return_of[m] {
                unlink(entries, r);
            }
        }
    };
    let unlift = |entries: &mut [Entry], i: usize| {
        for &m in resolved[i].iter().rev() {
            if let Some(r) = return_of[m] {
                relink(entries, r);
            }
            relink(entries, call_of[m]);
        }
    };

    // A value no operation still to linearize compares the register with can never be told
    // from another such value: all count as UNSEEN (the set of such values only grows along a
    // search path). So writes of such values become interchangeable as the search goes on.
    // Operations of unknown outcome observe for good: whether a value is still observed then
    // depends only on the completed operations done with, which the memo's key holds.
    let observed: Vec<Option<u32>> = ops.iter().map(|o| o.step.observes()).collect();
    let mut observers = vec![0u32; ops.iter().map(|o| o.step.max_value()).max().unwrap_or(0) as usize + 1];
    for v in observed.iter().flatten() {
        observers[*v as usize] += 1;
    }
    let releases: Vec<Option<u32>> =
        ops.iter().zip(&observed).map(|(o, v)| v.filter(|_| o.complete.is_some())).collect();
    let canon = |v: u32, observers: &[u32]| if v >= FIRST_SEEN && observers[v as usize] == 0 { UNSEEN } else { v };
    // Pending operations of unknown outcome with the same step are interchangeable: none has a
    // return, so once invoked each can take effect at any later time. Only the first of such a
    // class in the list is tried at a search level: `tried` holds, per level, the steps of the
    // unknown operations tried there.
    let mut tried: Vec<Vec<Step>> = vec![Vec::new()];

    // Explored states, failed or under way: a state covered by one of them is not explored
    // again (under way, the covering state is an ancestor that will try what it could).
    let mut memo: HashMap<MemoKey, Vec<Explored>, BuildHasherDefault<FastHasher>> = HashMap::default();
    let mut done = DoneSet::new(&ops);
    let mut key = MemoKey::default();
    let mut explored = Explored::default();
    let mut unknown_done: Vec<u32> = Vec::new();
    let mut state = ABSENT;
    let mut after_unknown: Option<u32> = None;
    let mut stack: Vec<Frame> = Vec::new();
    let mut states = 0usize;
    let mut best: Option<(usize, Stuck)> = None;
    // Each level first tries the completed operations, then those of unknown outcome: a state
    // reached without the latter covers the same state reached with them, and is best explored
    // first.
    let mut unknown_pass = false;
    let mut cur = entries[HEAD].next;
    loop {
        if remaining == 0 {
            return Run { outcome: Outcome::Linearizable, states, reuse };
        }
        let at_call = cur != tail && entries[cur].call;
        let i = if cur != tail { entries[cur].op } else { usize::MAX };
        if at_call && unknown_pass != ops[i].complete.is_none() {
            cur = entries[cur].next;
            continue;
        }
        if !at_call && !unknown_pass {
            unknown_pass = true;
            cur = entries[HEAD].next;
            continue;
        }
        // Try to linearize the operation of a call, or to drop an optional one at its return.
        let (next, dropped) = if at_call {
            let unknown = ops[i].complete.is_none();
            let step = ops[i].step.canonical(|v| canon(v, &observers));
            let level = tried.len() - 1;
            let repeat = unknown && tried[level].contains(&step);
            if unknown && !repeat {
                tried[level].push(step);
            }
            let next = match after_unknown {
                // Another of its class was tried here.
                _ if repeat => None,
                // The unknown operation just linearized would be erased unseen.
                Some(_) if step.blind_write() => None,
                // This read does not need the unknown operation before it.
                Some(before) if step.read_only() && step.apply(before).is_some() => None,
                _ => step.apply(state),
            };
            // An unknown or optional operation that changes nothing can as well not happen.
            (next.filter(|&next| !((unknown || ops[i].optional) && next == state)), false)
        } else if cur != tail && ops[i].optional {
            (Some(state), true)
        } else {
            (None, false)
        };
        if let Some(next) = next {
            let unknown = ops[i].complete.is_none();
            let rank = u32::try_from(i).unwrap_or(u32::MAX);
            if let (Some(v), false) = (releases[i], dropped) {
                observers[v as usize] -= 1;
            }
            let next = if dropped { state } else { canon(next, &observers) };
            if unknown {
                if !reuse {
                    let at = unknown_done.partition_point(|&u| u < rank);
                    unknown_done.insert(at, rank);
                }
            } else {
                for &m in &resolved[i] {
                    done.set(m);
                }
            }
            done.fill(&mut key);
            key.state = next;
            explored.after_unknown = if dropped { after_unknown } else { (unknown && !reuse).then_some(state) };
            explored.ids.clear();
            (explored.unseen_sets, explored.dels) = (0, 0);
            for &u in &unknown_done {
                match ops[u as usize].step.canonical(|v| canon(v, &observers)) {
                    Step::Set(UNSEEN) => explored.unseen_sets += 1,
                    Step::Del => explored.dels += 1,
                    _ => explored.ids.push(u),
                }
            }
            let next_after = explored.after_unknown;
            let covered = memo.get(&key).is_some_and(|seen| seen.iter().any(|e| e.covers(&explored)));
            if !covered {
                states += 1;
                if states > budget {
                    return Run { outcome: Outcome::Unknown, states, reuse };
                }
                let explored = explored.clone();
                match memo.get_mut(&key) {
                    Some(seen) => {
                        seen.retain(|e| !explored.covers(e));
                        seen.push(explored);
                    }
                    None => {
                        memo.insert(key.clone(), vec![explored]);
                    }
                }
                stack.push(Frame { op: i, dropped, state, after_unknown });
                tried.push(Vec::new());
                after_unknown = next_after;
                state = next;
                if required(&ops[i]) {
                    remaining -= 1;
                }
                if !(reuse && unknown) {
                    lift(&mut entries, i);
                }
                unknown_pass = false;
                cur = entries[HEAD].next;
                continue;
            }
            if unknown {
                unknown_done.retain(|&u| u != rank);
            } else {
                for &m in &resolved[i] {
                    done.clear(m);
                }
            }
            if let (Some(v), false) = (releases[i], dropped) {
                observers[v as usize] += 1;
            }
            if at_call {
                cur = entries[cur].next;
                continue;
            }
        } else if at_call {
            cur = entries[cur].next;
            continue;
        }

        // The return of an operation not linearized (nor droppable), or the end of the list:
        // this order cannot be completed, undo the last choice. Undoing a drop puts that return
        // back in the way, so undo the choice before it too.
        if cur != tail && !ops[i].optional {
            let done = total_required - remaining;
            if best.as_ref().is_none_or(|(d, _)| done > *d) {
                let prefix = stack.iter().filter(|f| !f.dropped).map(|f| ops[f.op].event).collect();
                best = Some((done, Stuck { prefix, blocked: Some(ops[i].event) }));
            }
        }
        loop {
            let Some(frame) = stack.pop() else {
                let stuck = best.map(|(_, s)| s).unwrap_or_default();
                return Run { outcome: Outcome::Violation(stuck), states, reuse };
            };
            let i = frame.op;
            if ops[i].complete.is_none() {
                let rank = u32::try_from(i).unwrap_or(u32::MAX);
                unknown_done.retain(|&u| u != rank);
            } else {
                for &m in &resolved[i] {
                    done.clear(m);
                }
            }
            state = frame.state;
            after_unknown = frame.after_unknown;
            tried.pop();
            if let (Some(v), false) = (releases[i], frame.dropped) {
                observers[v as usize] += 1;
            }
            if required(&ops[i]) {
                remaining += 1;
            }
            if !(reuse && ops[i].complete.is_none()) {
                unlift(&mut entries, i);
            }
            if !frame.dropped {
                unknown_pass = ops[i].complete.is_none();
                cur = entries[call_of[i]].next;
                break;
            }
        }
    }
}

/// The value an event shows it read: a get's value, or the expected value of a cas that wrote.
fn read_of(e: &Event) -> Option<&[u8]> {
    match (&e.op, e.complete.as_ref().map(|(_, r)| r)) {
        (Op::Get, Some(OpResult::Value(Some(v)))) => Some(v),
        (Op::Cas { expected: Some(x), .. }, Some(OpResult::Cas(true))) => Some(x),
        _ => None,
    }
}

/// The value an event may have written (not a del's absence).
fn write_of(e: &Event) -> Option<&[u8]> {
    match (&e.op, e.complete.as_ref().map(|(_, r)| r)) {
        (Op::Set(v), _) => Some(v),
        (Op::Cas { .. }, Some(OpResult::Cas(false))) => None,
        (Op::Cas { new, .. }, _) => Some(new),
        _ => None,
    }
}

/// Whether an event cannot change the register: a get, or a cas that did not write.
fn read_only(e: &Event) -> bool {
    matches!((&e.op, e.complete.as_ref().map(|(_, r)| r)), (Op::Get, _) | (Op::Cas { .. }, Some(OpResult::Cas(false))))
}

/// Shrinks a failing key history within a bounded number of search states.
///
/// Removing an event from a history can create a violation of its own (drop the write a read
/// saw, and the read sees a value nobody wrote), and shrinking would then wander off to that
/// new, meaningless violation. So a removed write is not dropped: it stays in the history tried
/// as an optional "ghost", which takes effect within its interval as recorded, or never (writes
/// of unknown outcome are ghosts from the start). A removed read is dropped. Both make the
/// history only more permissive, so every history tried fails only for reasons the original
/// has, and the events kept fail on their own too (with fewer ghosts, a history is less
/// permissive). An optional write costs the search little: unlike one of unknown outcome, it
/// is pending only until its recorded return.
struct Shrinker<'a> {
    events: &'a [&'a Event],
    budget: usize,
    spent: usize,
    /// The most states one try may take: a try much costlier than the check that found the
    /// violation is likely a history that passes, and would only eat the budget.
    per_try: usize,
    /// Whether the violation shows even when operations of unknown outcome may take effect
    /// many times: then tries use that cheaper search (see [`decide`]), which only proves
    /// fewer removals.
    reuse: bool,
}

impl Shrinker<'_> {
    fn exhausted(&self) -> bool {
        self.spent >= self.budget
    }

    /// The ghosts that can change an outcome beside the `kept` events. A ghost write of a value
    /// nothing observes, when no cas failed on another value, could only take effect right
    /// before another write erases it unseen, so leaving it out changes nothing; likewise a
    /// ghost del when nothing observes absence. Ghosts that are not needed only cost search.
    fn useful_ghosts(&self, kept: &[usize], ghosts: &[usize]) -> Vec<usize> {
        let mut observed: HashSet<&[u8]> = HashSet::new();
        let mut absence_observed = false;
        let mut failed_on_absent = false;
        let mut failed_on: HashSet<&[u8]> = HashSet::new();
        for &i in kept {
            let e = self.events[i];
            match (&e.op, e.complete.as_ref().map(|(_, r)| r)) {
                (Op::Get, Some(OpResult::Value(Some(v)))) => {
                    observed.insert(v);
                }
                (Op::Get, Some(OpResult::Value(None))) => absence_observed = true,
                (Op::Cas { expected: Some(x), .. }, Some(OpResult::Cas(true))) => {
                    observed.insert(x);
                }
                (Op::Cas { expected: None, .. }, Some(OpResult::Cas(true))) => absence_observed = true,
                (Op::Cas { expected: Some(x), .. }, Some(OpResult::Cas(false))) => {
                    failed_on.insert(x);
                }
                (Op::Cas { expected: None, .. }, Some(OpResult::Cas(false))) => failed_on_absent = true,
                _ => {}
            }
        }
        // A ghost cas may need a ghost write of its expected value before it.
        for &i in ghosts {
            if let Op::Cas { expected, .. } = &self.events[i].op {
                match expected {
                    Some(x) => {
                        observed.insert(x);
                    }
                    None => absence_observed = true,
                }
            }
        }
        ghosts
            .iter()
            .copied()
            .filter(|&i| match &self.events[i].op {
                Op::Set(v) | Op::Cas { new: v, .. } => {
                    let v = v.as_slice();
                    observed.contains(v) || failed_on_absent || failed_on.iter().any(|&x| x != v)
                }
                Op::Del => absence_observed || !failed_on.is_empty(),
                Op::Get => false,
            })
            .collect()
    }

    /// Where `kept` with `ghosts` gets stuck, if not linearizable (within the budget left).
    fn fails(&mut self, kept: &[usize], ghosts: &[usize]) -> Option<Stuck> {
        if kept.is_empty() || self.exhausted() {
            return None;
        }
        let events = self.events;
        let span = |i: usize| {
            let e = events[i];
            (e.invoke, e.complete.as_ref().map_or(u64::MAX, |(t, _)| (*t).max(e.invoke)))
        };
        // When kept operations are in flight, by time.
        let mut busy: Vec<(u64, u64)> = kept.iter().map(|&i| span(i)).collect();
        busy.sort_unstable();
        let mut windows: Vec<(u64, u64)> = Vec::new();
        for (a, b) in busy {
            match windows.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => windows.push((a, b)),
            }
        }
        // A ghost after every kept operation cannot matter. The ghosts between two windows
        // come after the kept operations before and before those after: together they can only
        // leave one of their values (or keep the value from before), so one optional write per
        // value, over the whole gap, allows all they allow. That keeps long gaps cheap.
        let mut subset: Vec<(usize, bool)> = kept.iter().map(|&i| (i, false)).collect();
        let mut in_gaps: Vec<(usize, usize)> = Vec::new();
        for g in self.useful_ghosts(kept, ghosts) {
            let (a, b) = span(g);
            let window = windows.partition_point(|w| w.1 < a);
            match windows.get(window) {
                None => {}
                Some(w) if b < w.0 => in_gaps.push((window, g)),
                Some(_) => subset.push((g, true)),
            }
        }
        let mut observed: HashSet<&[u8]> = HashSet::new();
        for &(i, _) in &subset {
            match (&events[i].op, &events[i].complete) {
                (Op::Get, Some((_, OpResult::Value(Some(v))))) => {
                    observed.insert(v);
                }
                (Op::Cas { expected: Some(x), .. }, _) => {
                    observed.insert(x);
                }
                _ => {}
            }
        }
        let mut gaps: BTreeMap<usize, Gap> = BTreeMap::new();
        for (window, g) in in_gaps {
            let (a, b) = span(g);
            let written = match &events[g].op {
                Op::Set(v) | Op::Cas { new: v, .. } => Some(v.as_slice()),
                _ => None,
            };
            let class = match written {
                Some(v) if !observed.contains(v) => None,
                other => Some(other),
            };
            let gap = gaps.entry(window).or_insert(Gap { span: (a, b), writes: BTreeMap::new() });
            gap.span = (gap.span.0.min(a), gap.span.1.max(b));
            gap.writes.insert(class, g);
        }
        let synthetic: Vec<Synthetic> = gaps
            .iter()
            .flat_map(|(&group, gap)| {
                let (invoke, complete) = gap.span;
                gap.writes.values().map(move |&g| Synthetic { event: g, invoke, complete, group })
            })
            .collect();
        let ops = build_ops(events, &subset, &synthetic);
        let budget = (self.budget - self.spent).min(self.per_try);
        let run = if self.reuse { search(&ops, budget, true) } else { decide(&ops, budget) };
        self.spent += run.states.max(1);
        match run.outcome {
            Outcome::Violation(stuck) => Some(stuck),
            _ => None,
        }
    }

    /// Removes `removed` (positions in `kept`) when the rest, the writes among them turned into
    /// ghosts, still fails.
    fn try_remove(&mut self, shrunk: &mut Shrunk, removed: impl Fn(usize, usize) -> bool) -> bool {
        let (mut kept, mut ghosts) = (Vec::new(), shrunk.ghosts.clone());
        for (pos, &i) in shrunk.kept.iter().enumerate() {
            if !removed(pos, i) {
                kept.push(i);
            } else if !read_only(self.events[i]) {
                ghosts.push(i);
            }
        }
        if kept.len() == shrunk.kept.len() {
            return false;
        }
        match self.fails(&kept, &ghosts) {
            Some(stuck) => {
                *shrunk = Shrunk { kept, ghosts, stuck };
                true
            }
            None => false,
        }
    }

    /// Shrinks `shrunk`; returns whether shrinking finished within the budget.
    fn shrink(&mut self, shrunk: &mut Shrunk) -> bool {
        // Fast paths first. What was invoked after the stuck operation returned rarely matters;
        // nor, often, what returned long before it was invoked: try windows of growing width.
        if let Some(b) = shrunk.stuck.blocked {
            let blocked = self.events[b];
            let (start, end) = (blocked.invoke, blocked.complete.as_ref().map_or(u64::MAX, |(t, _)| *t));
            self.try_remove(shrunk, |_, i| self.events[i].invoke > end);
            let first = shrunk.kept.iter().map(|&i| self.events[i].invoke).min().unwrap_or(start);
            let mut width = end.saturating_sub(start).max(1);
            while start.saturating_sub(width) > first && !self.exhausted() {
                let from = start - width;
                let before = |i: usize| self.events[i].complete.as_ref().is_some_and(|(t, _)| *t < from);
                if self.try_remove(shrunk, |_, i| before(i)) {
                    break;
                }
                width = width.saturating_mul(2);
            }
        }
        // Then whole chunks, halving their size.
        let mut chunk = shrunk.kept.len() / 2;
        while chunk > 1 && !self.exhausted() {
            let mut start = 0;
            while start < shrunk.kept.len() && !self.exhausted() {
                if !self.try_remove(shrunk, |pos, _| (start..start + chunk).contains(&pos)) {
                    start += chunk;
                }
            }
            chunk /= 2;
        }
        // Then single events, until a whole pass removes none.
        loop {
            let mut removed = false;
            let mut at = 0;
            while at < shrunk.kept.len() && !self.exhausted() {
                if self.try_remove(shrunk, |pos, _| pos == at) {
                    removed = true;
                } else {
                    at += 1;
                }
            }
            if !removed || self.exhausted() {
                return !self.exhausted();
            }
        }
    }
}

/// The ghosts between two windows of kept operations (see [`Shrinker::fails`]).
struct Gap<'a> {
    /// From the first invoke to the last completion.
    span: (u64, u64),
    /// Per written value (`None`: any value nothing observes; `Some(None)`: absent), a ghost
    /// that writes it.
    writes: BTreeMap<Option<Option<&'a [u8]>>, usize>,
}

/// A failing part of a key history: completed events kept, removed writes and writes of unknown
/// outcome as ghosts (see [`Shrinker`]), and where it gets stuck.
struct Shrunk {
    kept: Vec<usize>,
    ghosts: Vec<usize>,
    stuck: Stuck,
}

/// The violation on `key`, its events shrunk to a minimal failing part and explained.
/// `found`: the states the check spent on the key, and whether it let operations of unknown
/// outcome take effect many times (see [`decide`]).
fn minimize(key: &str, events: &[&Event], stuck: Stuck, found: (usize, bool), budget: usize) -> Violation {
    let (kept, ghosts): (Vec<usize>, Vec<usize>) = (0..events.len()).partition(|&i| events[i].complete.is_some());
    let ghosts: Vec<usize> = ghosts.into_iter().filter(|&i| !read_only(events[i])).collect();
    let (cost, reuse) = found;
    let per_try = cost.max(10_000).saturating_mul(2);
    let mut shrinker = Shrinker { events, budget, spent: 0, per_try, reuse };
    let mut shrunk = Shrunk { kept, ghosts, stuck };
    let finished = shrinker.shrink(&mut shrunk);

    // Show the ghosts that wrote what a shown event read: without them those reads would look
    // like reads of values nobody wrote. Showing more ghosts (as they were recorded) keeps the
    // events shown failing, as they are a part of the last history that failed.
    let mut shown = shrunk.kept.clone();
    loop {
        let observed: HashSet<&[u8]> = shown
            .iter()
            .filter_map(|&i| {
                read_of(events[i]).or_else(|| match &events[i].op {
                    Op::Cas { expected: Some(x), .. } if events[i].complete.is_none() => Some(x.as_slice()),
                    _ => None,
                })
            })
            .collect();
        let before = shown.len();
        for &g in &shrunk.ghosts {
            if !shown.contains(&g) && write_of(events[g]).is_some_and(|v| observed.contains(v)) {
                shown.push(g);
            }
        }
        if shown.len() == before {
            break;
        }
    }
    shown.sort_unstable();
    let minimal: Vec<Event> = shown.iter().map(|&i| events[i].clone()).collect();

    let written: HashSet<&[u8]> = events.iter().filter_map(|e| write_of(e)).collect();
    let unwritten = shown.iter().map(|&i| events[i]).find(|e| read_of(e).is_some_and(|x| !written.contains(x)));
    let mut explanation = if let Some(e) = unwritten {
        let what = if matches!(e.op, Op::Get) { "read" } else { "expected and found" };
        let value = read_of(e).map(show_bytes).unwrap_or_default();
        format!("client {}'s {} {what} {value}, which no operation on this key wrote", e.client, e.op)
    } else {
        // The end of the longest consistent order is where it goes wrong.
        const SHOWN: usize = 6;
        let order = &shrunk.stuck.prefix;
        let mut prefix: Vec<String> =
            order[order.len().saturating_sub(SHOWN)..].iter().map(|&i| short(events[i])).collect();
        if order.len() > SHOWN {
            prefix.insert(0, format!("{} more...", order.len() - SHOWN));
        }
        match shrunk.stuck.blocked.map(|b| events[b]) {
            Some(b) => format!(
                "no order of these {} operations respects both real time and a register: the longest \
                 consistent order [{}] cannot take client {}'s {} -> {} before it returned at {}",
                shown.len(),
                prefix.join(", "),
                b.client,
                b.op,
                show_result(b),
                b.complete.as_ref().map(|(t, _)| t.to_string()).unwrap_or_else(|| "?".into()),
            ),
            None => format!("no order of these {} operations respects both real time and a register", shown.len()),
        }
    };
    if !finished {
        explanation.push_str(" (shrinking stopped at its work bound: the events may not be minimal)");
    }
    Violation { key: key.to_string(), minimal, explanation }
}

/// A value for people: quoted text when printable, else hex; long values cut.
fn show_bytes(v: &[u8]) -> String {
    const MAX: usize = 40;
    let cut = &v[..v.len().min(MAX)];
    let more = if v.len() > MAX { format!("...({} bytes)", v.len()) } else { String::new() };
    match std::str::from_utf8(cut) {
        Ok(s) if !s.chars().any(char::is_control) => format!("{s:?}{more}"),
        _ => {
            let hex: String = cut.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}{more}")
        }
    }
}

fn show_value(v: Option<&[u8]>) -> String {
    v.map(show_bytes).unwrap_or_else(|| "nil".into())
}

fn show_result(e: &Event) -> String {
    e.complete.as_ref().map(|(_, r)| r.to_string()).unwrap_or_else(|| "unknown".into())
}

/// "c1 get -> nil": an event in a list.
fn short(e: &Event) -> String {
    format!("c{} {} -> {}", e.client, e.op, show_result(e))
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get => write!(f, "get"),
            Op::Set(v) => write!(f, "set({})", show_bytes(v)),
            Op::Del => write!(f, "del"),
            Op::Cas { expected, new } => write!(f, "cas({} -> {})", show_value(expected.as_deref()), show_bytes(new)),
        }
    }
}

impl fmt::Display for OpResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpResult::Value(v) => write!(f, "{}", show_value(v.as_deref())),
            OpResult::Done => write!(f, "ok"),
            OpResult::Cas(set) => write!(f, "{set}"),
        }
    }
}

impl fmt::Display for Violation {
    /// The key, the explanation, then the events as a table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "key {:?} is not linearizable: {}", self.key, self.explanation)?;
        let header = ["client", "op", "result", "invoke", "complete"];
        let rows: Vec<[String; 5]> = self
            .minimal
            .iter()
            .map(|e| {
                [
                    e.client.to_string(),
                    e.op.to_string(),
                    show_result(e),
                    e.invoke.to_string(),
                    e.complete.as_ref().map(|(t, _)| t.to_string()).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: [&str; 5]| -> fmt::Result {
            // Text columns left-aligned, numbers right-aligned.
            writeln!(
                f,
                "  {:>w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
                w4 = widths[4],
            )
        };
        line(f, header)?;
        for row in &rows {
            line(f, [&row[0], &row[1], &row[2], &row[3], &row[4]])?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    /// One line for a linearizable or unknown verdict; the violation's table otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = format!("{} keys, {} ops, {} search states", self.keys, self.ops, self.states);
        match &self.verdict {
            Verdict::Ok => write!(f, "linearizable ({size})"),
            Verdict::Unknown => {
                write!(f, "unknown: the search budget ran out on keys {:?} ({size})", self.unknown_keys)
            }
            Verdict::Violation(v) => write!(f, "NOT linearizable ({size})\n{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Instant;

    const BUDGET: usize = 1_000_000;

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn set(v: &str) -> Op {
        Op::Set(b(v))
    }

    fn cas(expected: Option<&str>, new: &str) -> Op {
        Op::Cas { expected: expected.map(b), new: b(new) }
    }

    fn val(v: Option<&str>) -> OpResult {
        OpResult::Value(v.map(b))
    }

    /// A completed operation on key "k".
    fn done(client: usize, op: Op, invoke: u64, complete: u64, result: OpResult) -> Event {
        Event { client, key: "k".into(), op, invoke, complete: Some((complete, result)) }
    }

    /// An operation of unknown outcome on key "k".
    fn lost(client: usize, op: Op, invoke: u64) -> Event {
        Event { client, key: "k".into(), op, invoke, complete: None }
    }

    fn assert_ok(events: Vec<Event>) {
        let report = check(&History { events }, BUDGET);
        assert_eq!(report.verdict, Verdict::Ok, "{report}");
    }

    fn violation(events: Vec<Event>) -> Violation {
        let report = check(&History { events }, BUDGET);
        match report.verdict {
            Verdict::Violation(v) => v,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn sequential_valid_histories_pass() {
        assert_ok(vec![]);
        assert_ok(vec![
            done(0, Op::Get, 0, 1, val(None)),
            done(0, set("a"), 2, 3, OpResult::Done),
            done(1, Op::Get, 4, 5, val(Some("a"))),
            done(1, cas(Some("a"), "b"), 6, 7, OpResult::Cas(true)),
            done(0, cas(Some("a"), "c"), 8, 9, OpResult::Cas(false)),
            done(0, Op::Get, 10, 11, val(Some("b"))),
            done(1, Op::Del, 12, 13, OpResult::Done),
            done(1, Op::Get, 14, 15, val(None)),
            done(0, cas(None, "d"), 16, 17, OpResult::Cas(true)),
            done(0, Op::Get, 18, 19, val(Some("d"))),
        ]);
    }

    #[test]
    fn sequential_read_of_never_written_value_fails() {
        let v = violation(vec![done(0, set("a"), 0, 1, OpResult::Done), done(1, Op::Get, 2, 3, val(Some("zzz")))]);
        assert_eq!(v.minimal.len(), 1, "{v}");
        assert!(v.explanation.contains("no operation on this key wrote"), "{v}");
    }

    #[test]
    fn sequential_stale_read_after_write_fails() {
        let events = vec![
            done(0, set("a"), 0, 1, OpResult::Done),
            done(0, set("b"), 2, 3, OpResult::Done),
            done(1, Op::Get, 4, 5, val(Some("a"))),
        ];
        let v = violation(events.clone());
        // Every event is needed: without the first set the read would be of a never-written
        // value, without the second it would be fresh.
        assert_eq!(v.minimal, events, "{v}");
        let table = v.to_string();
        assert!(table.contains("client") && table.contains("set(\"b\")") && table.contains("\"a\""), "{table}");
        // A stale absence too: a read of nil after an acknowledged write.
        violation(vec![done(0, set("a"), 0, 1, OpResult::Done), done(1, Op::Get, 2, 3, val(None))]);
    }

    #[test]
    fn read_overlapping_a_write_may_see_either_value() {
        for seen in [Some("a"), Some("b")] {
            assert_ok(vec![
                done(0, set("a"), 0, 10, OpResult::Done),
                done(0, set("b"), 20, 40, OpResult::Done),
                done(1, Op::Get, 25, 30, val(seen)),
            ]);
        }
        // Touching intervals (a return and a call at the same instant) count as overlapping.
        assert_ok(vec![done(0, set("a"), 0, 10, OpResult::Done), done(1, Op::Get, 10, 12, val(None))]);
    }

    #[test]
    fn new_then_old_value_reads_fail() {
        let events = vec![
            done(0, set("a"), 0, 10, OpResult::Done),
            done(0, set("b"), 20, 100, OpResult::Done),
            done(1, Op::Get, 30, 40, val(Some("b"))),
            done(2, Op::Get, 50, 60, val(Some("a"))),
        ];
        let v = violation(events.clone());
        assert_eq!(v.minimal, events, "{v}");
        // The same reads, overlapping each other, are fine.
        let mut overlapping = events;
        overlapping[3].invoke = 35;
        assert_ok(overlapping);
    }

    #[test]
    fn concurrent_cas_from_absent_both_succeeding_fails() {
        violation(vec![
            done(0, cas(None, "a"), 0, 10, OpResult::Cas(true)),
            done(1, cas(None, "b"), 0, 10, OpResult::Cas(true)),
        ]);
    }

    #[test]
    fn concurrent_cas_from_absent_one_succeeding_passes() {
        assert_ok(vec![
            done(0, cas(None, "a"), 0, 10, OpResult::Cas(true)),
            done(1, cas(None, "b"), 0, 10, OpResult::Cas(false)),
            done(2, Op::Get, 20, 30, val(Some("a"))),
        ]);
    }

    #[test]
    fn unknown_write_later_read_passes() {
        assert_ok(vec![
            done(0, set("a"), 0, 10, OpResult::Done),
            lost(1, set("b"), 20),
            done(2, Op::Get, 30, 40, val(Some("a"))),
            done(2, Op::Get, 1000, 1010, val(Some("b"))),
            done(3, Op::Get, 2000, 2010, val(Some("b"))),
        ]);
        // An unknown cas taking effect long after its client gave up.
        assert_ok(vec![
            done(0, set("a"), 0, 10, OpResult::Done),
            lost(1, cas(Some("a"), "b"), 20),
            done(2, Op::Get, 30, 40, val(Some("a"))),
            done(2, Op::Get, 1000, 1010, val(Some("b"))),
        ]);
    }

    #[test]
    fn unknown_write_never_read_passes() {
        assert_ok(vec![
            done(0, set("a"), 0, 10, OpResult::Done),
            lost(1, set("b"), 20),
            lost(1, Op::Del, 25),
            lost(1, Op::Get, 26),
            done(2, Op::Get, 30, 40, val(Some("a"))),
            done(2, Op::Get, 50, 60, val(Some("a"))),
        ]);
    }

    #[test]
    fn value_no_write_wrote_fails_despite_unknown_writes() {
        let v = violation(vec![
            done(0, set("a"), 0, 10, OpResult::Done),
            lost(1, set("b"), 20),
            done(2, Op::Get, 30, 40, val(Some("c"))),
        ]);
        assert!(v.minimal.iter().all(|e| e.complete.is_some()), "{v}");
        // And an unknown write cannot come back once overwritten by a later acknowledged write.
        violation(vec![
            lost(1, set("b"), 0),
            done(2, Op::Get, 10, 20, val(Some("b"))),
            done(0, set("a"), 30, 40, OpResult::Done),
            done(2, Op::Get, 50, 60, val(Some("b"))),
        ]);
    }

    #[test]
    fn mismatched_result_kind_is_a_violation() {
        violation(vec![done(0, Op::Get, 0, 1, OpResult::Done)]);
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut events = vec![done(0, set("a"), 0, 10, OpResult::Done), done(1, Op::Get, 20, 30, val(Some("a")))];
        // The same times and values on another key, which never saw "a".
        events.push(Event { key: "other".into(), ..done(1, Op::Get, 20, 30, val(None)) });
        let report = check(&History { events: events.clone() }, BUDGET);
        assert_eq!((report.keys, report.ops, &report.verdict), (2, 3, &Verdict::Ok), "{report}");
        events.push(Event { key: "other".into(), ..done(1, Op::Get, 40, 50, val(Some("a"))) });
        match check(&History { events }, BUDGET).verdict {
            Verdict::Violation(v) => assert_eq!(v.key, "other"),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn exhausted_budget_is_unknown_not_ok() {
        let events: Vec<Event> = (0..6).map(|c| done(c, set(&format!("v{c}")), 0, 10, OpResult::Done)).collect();
        let report = check(&History { events: events.clone() }, 2);
        assert_eq!(report.verdict, Verdict::Unknown, "{report}");
        assert_eq!(report.unknown_keys, vec!["k".to_string()]);
        assert!(report.to_string().contains("unknown"), "{report}");
        assert_eq!(check(&History { events }, BUDGET).verdict, Verdict::Ok);
    }

    #[test]
    fn history_builder_records_invocations_and_completions() {
        let mut h = History::new();
        let w = h.invoke(0, "k", set("a"), 0);
        let r = h.invoke(1, "k", Op::Get, 5);
        h.complete(w, 10, OpResult::Done).unwrap();
        h.complete(r, 12, val(Some("a"))).unwrap();
        assert!(h.complete(r, 13, val(None)).is_err());
        assert!(h.complete(7, 13, val(None)).is_err());
        h.push(lost(2, Op::Del, 20));
        assert_eq!(h.events.len(), 3);
        assert_eq!(check(&h, BUDGET).verdict, Verdict::Ok);
    }

    #[test]
    fn minimal_subhistory_strips_noise() {
        let mut events = Vec::new();
        // 100 unrelated valid operations: writes, each read back, some concurrent.
        for i in 0..50u64 {
            let t = i * 20;
            let value = format!("n{i}");
            events.push(done((i % 3) as usize, set(&value), t, t + 10, OpResult::Done));
            events.push(done(3 + (i % 2) as usize, Op::Get, t + 5, t + 15, val(Some(&value))));
        }
        // Then new-then-old reads around a slow write.
        let violating = vec![
            done(5, set("a"), 2000, 2010, OpResult::Done),
            done(6, set("b"), 2020, 2100, OpResult::Done),
            done(7, Op::Get, 2030, 2040, val(Some("b"))),
            done(8, Op::Get, 2050, 2060, val(Some("a"))),
        ];
        events.extend(violating.iter().cloned());
        let v = violation(events);
        assert!(v.minimal.len() <= 4, "{v}");
        for e in &violating[2..] {
            assert!(v.minimal.contains(e), "{v}");
        }
        assert_eq!(v.minimal, violating, "{v}");
        assert!(!v.explanation.contains("stopped"), "{v}");
    }

    #[test]
    fn shrinking_is_bounded_by_the_budget() {
        // A read nobody explains, found at once, then many valid operations to shrink away.
        let mut events = vec![done(1, Op::Get, 0, 5, val(Some("zzz")))];
        for i in 0..50u64 {
            let (t, value) = (10 + i * 20, format!("n{i}"));
            events.push(done(0, set(&value), t, t + 5, OpResult::Done));
            events.push(done(0, Op::Get, t + 10, t + 15, val(Some(&value))));
        }
        let history = History { events };
        // Enough for the check, not for the shrinking.
        match check(&history, 1).verdict {
            Verdict::Violation(v) => assert!(v.explanation.contains("stopped"), "{v}"),
            other => panic!("expected a violation, got {other:?}"),
        }
        match check(&history, BUDGET).verdict {
            Verdict::Violation(v) => {
                assert_eq!(v.minimal.len(), 1, "{v}");
                assert!(!v.explanation.contains("stopped"), "{v}");
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    /// xorshift64: deterministic randomness without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A history of a real linearizable register per key: each operation takes effect at a
    /// point inside its interval (for an unknown one: some time after its invoke, or never) and
    /// operations apply in the order of those points. Returns it with the final values.
    fn generate(seed: u64, clients: usize, keys: usize, total: usize) -> (History, BTreeMap<String, Option<Vec<u8>>>) {
        struct Planned {
            event: Event,
            /// When it takes effect, if it does.
            point: Option<u64>,
        }
        let mut rng = XorShift(seed);
        let mut clock = vec![0u64; clients];
        let mut recent: Vec<Vec<Vec<u8>>> = vec![Vec::new(); keys];
        let mut planned = Vec::with_capacity(total);
        for n in 0..total {
            let c = n % clients;
            let k = rng.below(keys as u64) as usize;
            let value = format!("c{c}-{n}").into_bytes();
            let op = match rng.below(10) {
                0..=3 => Op::Get,
                4..=6 => Op::Set(value.clone()),
                7 => Op::Del,
                _ => {
                    let expected = match rng.below(3) {
                        0 => None,
                        _ => recent[k].iter().rev().nth(rng.below(3) as usize).cloned(),
                    };
                    Op::Cas { expected, new: value.clone() }
                }
            };
            if !matches!(op, Op::Get | Op::Del) {
                recent[k].push(value);
            }
            let invoke = clock[c] + rng.below(20);
            let point = invoke + rng.below(60);
            let unknown = rng.below(100) < 3;
            let (point, complete) = if unknown {
                clock[c] = invoke + 100;
                (rng.below(2).eq(&0).then(|| invoke + rng.below(400)), None)
            } else {
                let complete = point + rng.below(60);
                clock[c] = complete;
                (Some(point), Some(complete))
            };
            let event = Event {
                client: c,
                key: format!("key{k}"),
                op,
                invoke,
                complete: complete.map(|t| (t, OpResult::Done)),
            };
            planned.push(Planned { event, point });
        }
        let mut by_point: Vec<usize> = (0..planned.len()).filter(|&i| planned[i].point.is_some()).collect();
        by_point.sort_by_key(|&i| planned[i].point);
        let mut registers: BTreeMap<String, Option<Vec<u8>>> = (0..keys).map(|k| (format!("key{k}"), None)).collect();
        for i in by_point {
            let event = &mut planned[i].event;
            let Some(register) = registers.get_mut(&event.key) else { continue };
            let result = match &event.op {
                Op::Get => OpResult::Value(register.clone()),
                Op::Set(v) => {
                    *register = Some(v.clone());
                    OpResult::Done
                }
                Op::Del => {
                    *register = None;
                    OpResult::Done
                }
                Op::Cas { expected, new } => {
                    let set = register == expected;
                    if set {
                        *register = Some(new.clone());
                    }
                    OpResult::Cas(set)
                }
            };
            if let Some((_, r)) = &mut event.complete {
                *r = result;
            }
        }
        let history = History { events: planned.into_iter().map(|p| p.event).collect() };
        (history, registers)
    }

    /// Makes one late read of `history` return a value overwritten long before it: written by a
    /// set that completed before an acknowledged write of something else was invoked, which
    /// itself completed before the read was invoked. Returns the read's index.
    fn perturb(history: &mut History) -> usize {
        let events = &history.events;
        let acked_other_write = |e: &Event, x: &[u8]| match (&e.op, e.complete.as_ref().map(|(_, r)| r)) {
            (Op::Set(v), Some(OpResult::Done)) => v.as_slice() != x,
            (Op::Del, Some(OpResult::Done)) => true,
            (Op::Cas { new, .. }, Some(OpResult::Cas(true))) => new.as_slice() != x,
            _ => false,
        };
        let mut reads: Vec<usize> =
            (0..events.len()).filter(|&i| matches!(events[i].op, Op::Get) && events[i].complete.is_some()).collect();
        reads.sort_by_key(|&i| std::cmp::Reverse(events[i].invoke));
        for g in reads {
            let read = &events[g];
            for w in events.iter().filter(|w| w.key == read.key) {
                let (Op::Set(x), Some((w_done, OpResult::Done))) = (&w.op, &w.complete) else { continue };
                let overwritten = events.iter().any(|o| {
                    o.key == read.key
                        && acked_other_write(o, x)
                        && o.invoke > *w_done
                        && o.complete.as_ref().is_some_and(|(t, _)| *t < read.invoke)
                });
                if overwritten && read.complete.as_ref().is_some_and(|(_, r)| *r != OpResult::Value(Some(x.clone()))) {
                    let x = x.clone();
                    if let Some((_, r)) = &mut history.events[g].complete {
                        *r = OpResult::Value(Some(x));
                    }
                    return g;
                }
            }
        }
        panic!("no read to perturb");
    }

    #[test]
    fn generated_valid_history_passes_and_perturbed_one_fails() {
        let (mut history, finals) = generate(0x9E37_79B9_7F4A_7C15, 8, 5, 2000);
        let unknown = history.events.iter().filter(|e| e.complete.is_none()).count();
        assert!(unknown > 10, "only {unknown} operations of unknown outcome");

        let start = Instant::now();
        let report = check(&history, BUDGET);
        let elapsed = start.elapsed();
        eprintln!("2000 ops over 5 keys ({unknown} unknown): {report} in {elapsed:?}");
        assert_eq!(report.verdict, Verdict::Ok, "{report}");
        let limit = if cfg!(debug_assertions) { 20 } else { 2 };
        assert!(elapsed.as_secs() < limit, "the check took {elapsed:?}");
        assert!(lost_acknowledged_writes(&history, &finals).is_empty());

        let g = perturb(&mut history);
        let read = history.events[g].clone();
        let start = Instant::now();
        let report = check(&history, BUDGET);
        eprintln!("perturbed: checked and shrunk in {:?}: {report}", start.elapsed());
        match report.verdict {
            Verdict::Violation(v) => {
                assert_eq!(v.key, read.key);
                assert!(v.minimal.contains(&read), "{v}");
                assert!(v.minimal.len() <= 4, "{v}");
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn generated_single_key_history_with_high_concurrency_passes() {
        let (history, finals) = generate(42, 8, 1, 1000);
        let start = Instant::now();
        let report = check(&history, BUDGET);
        eprintln!("1000 ops on 1 key: {report} in {:?}", start.elapsed());
        assert_eq!(report.verdict, Verdict::Ok, "{report}");
        assert!(lost_acknowledged_writes(&history, &finals).is_empty());
    }

    #[test]
    fn lost_writes_correct_histories_report_nothing() {
        let history = History {
            events: vec![
                done(0, set("a"), 0, 10, OpResult::Done),
                // Overlaps the last write: either may be last.
                done(1, set("b"), 20, 40, OpResult::Done),
                done(2, set("c"), 30, 50, OpResult::Done),
                lost(3, set("d"), 35),
                done(0, cas(Some("z"), "e"), 60, 70, OpResult::Cas(false)),
            ],
        };
        for final_value in ["b", "c", "d"] {
            let finals = BTreeMap::from([("k".to_string(), Some(b(final_value)))]);
            assert!(lost_acknowledged_writes(&history, &finals).is_empty(), "{final_value}");
        }
        // No acknowledged write: absent, or what an unknown write wrote.
        let history = History { events: vec![lost(0, set("a"), 0), done(1, Op::Get, 5, 6, val(None))] };
        for final_value in [None, Some(b("a"))] {
            let finals = BTreeMap::from([("k".to_string(), final_value)]);
            assert!(lost_acknowledged_writes(&history, &finals).is_empty());
        }
        // A del last.
        let history = History {
            events: vec![done(0, set("a"), 0, 10, OpResult::Done), done(0, Op::Del, 20, 30, OpResult::Done)],
        };
        assert!(lost_acknowledged_writes(&history, &BTreeMap::from([("k".to_string(), None)])).is_empty());
    }

    #[test]
    fn lost_writes_stale_or_unwritten_final_value_is_reported() {
        let history = History {
            events: vec![
                done(0, set("a"), 0, 10, OpResult::Done),
                done(1, set("b"), 20, 30, OpResult::Done),
                done(0, cas(Some("b"), "c"), 40, 50, OpResult::Cas(true)),
                done(2, cas(Some("q"), "x"), 45, 55, OpResult::Cas(false)),
            ],
        };
        for stale in [Some("a"), Some("b"), None, Some("x"), Some("never")] {
            let finals = BTreeMap::from([("k".to_string(), stale.map(b))]);
            assert_eq!(lost_acknowledged_writes(&history, &finals), vec!["k".to_string()], "{stale:?}");
        }
        let finals = BTreeMap::from([("k".to_string(), Some(b("c")))]);
        assert!(lost_acknowledged_writes(&history, &finals).is_empty());
        // A key without any recorded write must still be absent.
        let finals = BTreeMap::from([("untouched".to_string(), Some(b("c")))]);
        assert_eq!(lost_acknowledged_writes(&history, &finals), vec!["untouched".to_string()]);
    }

    /// Every linearization by brute force (for a few operations): whether one exists, and the
    /// final values linearizations can end with.
    fn brute_force(events: &[Event]) -> (bool, Vec<Option<Vec<u8>>>) {
        fn go(events: &[Event], used: &mut [bool], state: Option<Vec<u8>>, finals: &mut Vec<Option<Vec<u8>>>) -> bool {
            let mut ok = false;
            if events.iter().zip(used.iter()).all(|(e, &u)| u || e.complete.is_none()) {
                ok = true;
                if !finals.contains(&state) {
                    finals.push(state.clone());
                }
            }
            for i in 0..events.len() {
                if used[i] {
                    continue;
                }
                let e = &events[i];
                let blocked = events
                    .iter()
                    .zip(used.iter())
                    .any(|(o, &u)| !u && o.complete.as_ref().is_some_and(|(t, _)| (*t).max(o.invoke) < e.invoke));
                if blocked {
                    continue;
                }
                let result = e.complete.as_ref().map(|(_, r)| r);
                let next = match (&e.op, result) {
                    (Op::Get, None) => continue,
                    (Op::Get, Some(OpResult::Value(v))) if *v == state => state.clone(),
                    (Op::Set(v), None | Some(OpResult::Done)) => Some(v.clone()),
                    (Op::Del, None | Some(OpResult::Done)) => None,
                    (Op::Cas { expected, new }, None | Some(OpResult::Cas(true))) if *expected == state => {
                        Some(new.clone())
                    }
                    (Op::Cas { expected, .. }, None | Some(OpResult::Cas(false))) if *expected != state => {
                        state.clone()
                    }
                    _ => continue,
                };
                used[i] = true;
                ok |= go(events, used, next, finals);
                used[i] = false;
            }
            ok
        }
        let mut finals = Vec::new();
        let ok = go(events, &mut vec![false; events.len()], None, &mut finals);
        (ok, finals)
    }

    /// A random small history on key "k" over few values, so that values repeat and
    /// operations overlap: most are not linearizable.
    fn random_small_history(rng: &mut XorShift) -> Vec<Event> {
        let pick = |rng: &mut XorShift| -> Option<Vec<u8>> {
            match rng.below(4) {
                0 => None,
                n => Some(vec![b'a' + n as u8 - 1]),
            }
        };
        let n = 1 + rng.below(7) as usize;
        (0..n)
            .map(|c| {
                let op = match rng.below(4) {
                    0 => Op::Get,
                    1 => Op::Set(pick(rng).unwrap_or_else(|| b("a"))),
                    2 => Op::Del,
                    _ => Op::Cas { expected: pick(rng), new: pick(rng).unwrap_or_else(|| b("b")) },
                };
                let invoke = rng.below(20);
                let complete = invoke + rng.below(10);
                let result = match &op {
                    Op::Get => OpResult::Value(pick(rng)),
                    Op::Set(_) | Op::Del => OpResult::Done,
                    Op::Cas { .. } => OpResult::Cas(rng.below(2) == 0),
                };
                let complete = (rng.below(5) != 0).then_some((complete, result));
                Event { client: c, key: "k".into(), op, invoke, complete }
            })
            .collect()
    }

    #[test]
    fn agrees_with_brute_force_on_random_small_histories() {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        let (mut linearizable, mut not) = (0, 0);
        for _ in 0..20_000 {
            let events = random_small_history(&mut rng);
            let (expected, finals) = brute_force(&events);
            let history = History { events: events.clone() };
            let report = check(&history, BUDGET);
            match &report.verdict {
                Verdict::Ok => {
                    assert!(expected, "claimed linearizable: {events:#?}");
                    linearizable += 1;
                    // No final value a linearization can end with is reported lost.
                    for f in finals {
                        let map = BTreeMap::from([("k".to_string(), f.clone())]);
                        assert!(lost_acknowledged_writes(&history, &map).is_empty(), "final {f:?}: {events:#?}");
                    }
                }
                Verdict::Violation(v) => {
                    assert!(!expected, "claimed a violation: {v}\n{events:#?}");
                    not += 1;
                    // What is shown fails on its own, and is part of the history.
                    assert!(!brute_force(&v.minimal).0, "minimal part is linearizable: {v}");
                    assert!(v.minimal.iter().all(|e| events.contains(e)), "{v}");
                }
                Verdict::Unknown => panic!("budget exceeded: {events:#?}"),
            }
        }
        assert!(linearizable > 2_000 && not > 2_000, "{linearizable} linearizable, {not} not");
    }
}
