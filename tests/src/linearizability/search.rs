//! The search for a linearization of one key's operations (see the module doc of
//! [`linearizability`](super)).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::memo::{DoneSet, Explored, FastHasher, MemoKey};
use super::model::{KeyOp, Step, ABSENT, FIRST_SEEN, UNSEEN};

/// Where a failed search got stuck, in indices of the key's events.
#[derive(Clone, Debug, Default)]
pub(super) struct Stuck {
    /// The longest order of operations found consistent before getting stuck.
    pub(super) prefix: Vec<usize>,
    /// The operation whose return came before any such order could include it.
    pub(super) blocked: Option<usize>,
}

/// What a search found.
#[derive(Debug)]
pub(super) enum Outcome {
    Linearizable,
    Violation(Stuck),
    Unknown,
}

/// The end of a search.
pub(super) struct Run {
    /// What it found.
    pub(super) outcome: Outcome,
    /// States explored (memoized pairs).
    pub(super) states: usize,
    /// Whether operations of unknown outcome could take effect many times (see [`decide`]).
    pub(super) reuse: bool,
}

/// A node of the search's list of call and return events.
#[derive(Clone, Copy, Debug)]
struct Entry {
    op: usize,
    call: bool,
    prev: usize,
    next: usize,
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
pub(super) fn decide(ops: &[KeyOp], budget: usize) -> Run {
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
pub(super) fn search(ops: &[KeyOp], budget: usize, reuse: bool) -> Run {
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
