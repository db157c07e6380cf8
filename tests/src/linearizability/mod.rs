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
//!
//! The parts: [`History`] and its events (`history`), the register model the search runs on
//! (`model`), the search and its memo (`search`, `memo`), the shrinking of a violation to a
//! minimal counterexample (`shrink`) and the rendering of one for people (`render`).

mod history;
mod memo;
mod model;
mod render;
mod search;
mod shrink;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use history::{Event, History, Op, OpResult};
use model::build_ops;
use search::{decide, Outcome};
use shrink::minimize;

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
