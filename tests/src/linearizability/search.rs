//! The search for a linearization of one key's operations (see the module doc of
//! [`linearizability`](super)): a depth-first search over the call and return events by time,
//! held by [`Search`].

use std::collections::HashMap;

use super::memo::{DoneSet, Explored, Memo, MemoKey};
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
    /// It found a linearization.
    Linearizable,
    /// It exhausted every order: none is a linearization.
    Violation(Stuck),
    /// It ran out of budget first.
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
    if !ops.iter().any(required) {
        return Run { outcome: Outcome::Linearizable, states: 0, reuse };
    }
    Search::new(ops, budget, reuse).run()
}

/// Whether the search must linearize `op`: it completed and is not optional.
fn required(op: &KeyOp) -> bool {
    op.complete.is_some() && !op.optional
}

/// `v`, or [`UNSEEN`] when no operation still to linearize compares the register with it
/// (`observers` counts them per value).
fn canon(v: u32, observers: &[u32]) -> u32 {
    if v >= FIRST_SEEN && observers[v as usize] == 0 {
        UNSEEN
    } else {
        v
    }
}

/// The number by which the memo knows operation `i`.
fn rank(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// A node of the [`Timeline`].
#[derive(Clone, Copy, Debug)]
struct Entry {
    op: usize,
    call: bool,
    prev: usize,
    next: usize,
}

const HEAD: usize = 0;

/// The call and return events of the operations, by time, as a doubly linked list from
/// [`HEAD`] to `tail`. An operation being linearized has its events unlinked (dancing links: an
/// unlinked node keeps its neighbours, so undoing in reverse order of unlinking restores the
/// list).
struct Timeline {
    entries: Vec<Entry>,
    /// The end of the list (not an event).
    tail: usize,
    /// Per operation, its call's entry.
    call_of: Vec<usize>,
    /// Per operation, its return's entry (`None`: unknown outcome).
    return_of: Vec<Option<usize>>,
}

impl Timeline {
    /// The events of `ops`. Calls sort before returns at equal times: equal times count as
    /// overlapping, the lenient reading of clocks too coarse to order them.
    fn new(ops: &[KeyOp]) -> Self {
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
        Self { entries, tail, call_of, return_of }
    }

    /// The first event still linked.
    fn first(&self) -> usize {
        self.entries[HEAD].next
    }

    /// The event linked after `x`.
    fn next(&self, x: usize) -> usize {
        self.entries[x].next
    }

    /// Whether `x` is the call of an operation.
    fn is_call(&self, x: usize) -> bool {
        x != self.tail && self.entries[x].call
    }

    /// The operation of event `x` (`usize::MAX` at the tail).
    fn op(&self, x: usize) -> usize {
        if x != self.tail {
            self.entries[x].op
        } else {
            usize::MAX
        }
    }

    /// The event linked after the call of operation `i`.
    fn after_call(&self, i: usize) -> usize {
        self.entries[self.call_of[i]].next
    }

    fn unlink(&mut self, x: usize) {
        let Entry { prev, next, .. } = self.entries[x];
        self.entries[prev].next = next;
        self.entries[next].prev = prev;
    }

    fn relink(&mut self, x: usize) {
        let Entry { prev, next, .. } = self.entries[x];
        self.entries[prev].next = x;
        self.entries[next].prev = x;
    }

    /// Unlinks the events of operations `ops`.
    fn lift(&mut self, ops: &[usize]) {
        for &m in ops {
            self.unlink(self.call_of[m]);
            if let Some(r) = self.return_of[m] {
                self.unlink(r);
            }
        }
    }

    /// Undoes [`Self::lift`] of the same `ops`.
    fn unlift(&mut self, ops: &[usize]) {
        for &m in ops.iter().rev() {
            if let Some(r) = self.return_of[m] {
                self.relink(r);
            }
            self.relink(self.call_of[m]);
        }
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

/// What [`Search::enter`] did.
enum Entered {
    /// It went one level deeper, to a state not explored before.
    Deeper,
    /// The state is covered by one explored before: nothing changed.
    Covered,
    /// The budget ran out.
    OutOfBudget,
}

/// The state of one search of one key's operations (in invoke order): the register value and
/// the choices made so far, undone on backtracking, and the memo of the states explored.
struct Search {
    /// The operations, in invoke order (their index is their rank in the memo).
    ops: Vec<KeyOp>,
    /// An operation of unknown outcome may take effect any number of times.
    reuse: bool,
    budget: usize,
    timeline: Timeline,
    /// Per operation, it and the alternatives of its group, which it resolves too.
    resolved: Vec<Vec<usize>>,
    /// Per value, how many operations still to linearize compare the register with it. A value
    /// none does can never be told from another such value: all count as [`UNSEEN`] (the set of
    /// such values only grows along a search path), so writes of such values become
    /// interchangeable as the search goes on. Operations of unknown outcome observe for good:
    /// whether a value is still observed then depends only on the completed operations done
    /// with, which the memo's key holds.
    observers: Vec<u32>,
    /// Per operation, the value it stops observing once done with (completed ones only).
    releases: Vec<Option<u32>>,
    /// Pending operations of unknown outcome with the same step are interchangeable: none has a
    /// return, so once invoked each can take effect at any later time. Only the first of such a
    /// class in the list is tried at a search level: per level, the steps of the unknown
    /// operations tried there.
    tried: Vec<Vec<Step>>,
    memo: Memo,
    /// The completed operations done with: the set part of the memo's key.
    done: DoneSet,
    /// Scratch for the memo: the key of the state being entered.
    key: MemoKey,
    /// Scratch for the memo: the state being entered.
    explored: Explored,
    /// The operations of unknown outcome linearized, by rank (sorted); not kept with `reuse`.
    unknown_done: Vec<u32>,
    /// The register value.
    state: u32,
    /// When the last operation linearized was of unknown outcome, the value before it.
    after_unknown: Option<u32>,
    /// The choices made, to undo on backtracking.
    stack: Vec<Frame>,
    /// States explored.
    states: usize,
    /// Required operations not yet linearized.
    remaining: usize,
    total_required: usize,
    /// Where the search got stuck with the most required operations linearized, and how many.
    best: Option<(usize, Stuck)>,
    /// Each level first tries the completed operations, then those of unknown outcome: a state
    /// reached without the latter covers the same state reached with them, and is best
    /// explored first. This is whether the current level is trying the latter.
    unknown_pass: bool,
    /// The event the search is at.
    cur: usize,
}

impl Search {
    /// A search of `ops`, sorted by invoke time, at least one of them required.
    fn new(ops: Vec<KeyOp>, budget: usize, reuse: bool) -> Self {
        let remaining = ops.iter().filter(|o| required(o)).count();
        let timeline = Timeline::new(&ops);
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
        let observed: Vec<Option<u32>> = ops.iter().map(|o| o.step.observes()).collect();
        let mut observers = vec![0u32; ops.iter().map(|o| o.step.max_value()).max().unwrap_or(0) as usize + 1];
        for v in observed.iter().flatten() {
            observers[*v as usize] += 1;
        }
        let releases: Vec<Option<u32>> =
            ops.iter().zip(&observed).map(|(o, v)| v.filter(|_| o.complete.is_some())).collect();
        let done = DoneSet::new(&ops);
        let cur = timeline.first();
        Self {
            ops,
            reuse,
            budget,
            timeline,
            resolved,
            observers,
            releases,
            tried: vec![Vec::new()],
            memo: Memo::default(),
            done,
            key: MemoKey::default(),
            explored: Explored::default(),
            unknown_done: Vec::new(),
            state: ABSENT,
            after_unknown: None,
            stack: Vec::new(),
            states: 0,
            remaining,
            total_required: remaining,
            best: None,
            unknown_pass: false,
            cur,
        }
    }

    /// Runs the search to its end.
    fn run(mut self) -> Run {
        loop {
            if self.remaining == 0 {
                return self.end(Outcome::Linearizable);
            }
            let at_call = self.timeline.is_call(self.cur);
            let i = self.timeline.op(self.cur);
            if at_call && self.unknown_pass != self.unknown(i) {
                self.cur = self.timeline.next(self.cur);
                continue;
            }
            if !at_call && !self.unknown_pass {
                self.unknown_pass = true;
                self.cur = self.timeline.first();
                continue;
            }
            if let Some((next, dropped)) = self.candidate(at_call, i) {
                match self.enter(i, next, dropped) {
                    Entered::Deeper => continue,
                    Entered::OutOfBudget => return self.end(Outcome::Unknown),
                    Entered::Covered => {}
                }
            }
            if at_call {
                self.cur = self.timeline.next(self.cur);
                continue;
            }
            // The return of an operation not linearized (nor droppable), or the end of the
            // list: this order cannot be completed, undo the last choice.
            if self.cur != self.timeline.tail && !self.ops[i].optional {
                self.note_stuck(i);
            }
            if !self.backtrack() {
                let stuck = self.best.take().map(|(_, s)| s).unwrap_or_default();
                return self.end(Outcome::Violation(stuck));
            }
        }
    }

    fn end(&self, outcome: Outcome) -> Run {
        Run { outcome, states: self.states, reuse: self.reuse }
    }

    /// Whether operation `i` is of unknown outcome.
    fn unknown(&self, i: usize) -> bool {
        self.ops[i].complete.is_none()
    }

    /// What the search may do at the current event, of operation `i`: at a call, linearize it
    /// (the register value after it); at the return of an optional operation, drop it (the
    /// value unchanged; second: true). `None` when neither is allowed.
    fn candidate(&mut self, at_call: bool, i: usize) -> Option<(u32, bool)> {
        if !at_call {
            return (self.cur != self.timeline.tail && self.ops[i].optional).then_some((self.state, true));
        }
        let unknown = self.unknown(i);
        let step = self.ops[i].step.canonical(|v| canon(v, &self.observers));
        let level = self.tried.len() - 1;
        let repeat = unknown && self.tried[level].contains(&step);
        if unknown && !repeat {
            self.tried[level].push(step);
        }
        let next = match self.after_unknown {
            // Another of its class was tried here.
            _ if repeat => None,
            // The unknown operation just linearized would be erased unseen.
            Some(_) if step.blind_write() => None,
            // This read does not need the unknown operation before it.
            Some(before) if step.read_only() && step.apply(before).is_some() => None,
            _ => step.apply(self.state),
        };
        // An unknown or optional operation that changes nothing can as well not happen.
        next.filter(|&next| !((unknown || self.ops[i].optional) && next == self.state)).map(|next| (next, false))
    }

    /// Linearizes operation `i` (drops it, if `dropped`), leaving register value `next`,
    /// unless the state that makes is covered by one explored already.
    fn enter(&mut self, i: usize, next: u32, dropped: bool) -> Entered {
        let unknown = self.unknown(i);
        self.take(i, dropped);
        let next = if dropped { self.state } else { canon(next, &self.observers) };
        self.done.fill(&mut self.key);
        self.key.state = next;
        let explored = &mut self.explored;
        explored.after_unknown =
            if dropped { self.after_unknown } else { (unknown && !self.reuse).then_some(self.state) };
        explored.ids.clear();
        (explored.unseen_sets, explored.dels) = (0, 0);
        for &u in &self.unknown_done {
            match self.ops[u as usize].step.canonical(|v| canon(v, &self.observers)) {
                Step::Set(UNSEEN) => explored.unseen_sets += 1,
                Step::Del => explored.dels += 1,
                _ => explored.ids.push(u),
            }
        }
        if !self.memo.record(&self.key, &self.explored) {
            self.forget(i, dropped);
            return Entered::Covered;
        }
        self.states += 1;
        if self.states > self.budget {
            return Entered::OutOfBudget;
        }
        self.stack.push(Frame { op: i, dropped, state: self.state, after_unknown: self.after_unknown });
        self.tried.push(Vec::new());
        self.after_unknown = self.explored.after_unknown;
        self.state = next;
        if required(&self.ops[i]) {
            self.remaining -= 1;
        }
        if !(self.reuse && unknown) {
            self.timeline.lift(&self.resolved[i]);
        }
        self.unknown_pass = false;
        self.cur = self.timeline.first();
        Entered::Deeper
    }

    /// Counts operation `i` (and its group) done with, linearized or `dropped`: a linearized
    /// one no longer observes its value.
    fn take(&mut self, i: usize, dropped: bool) {
        if let (Some(v), false) = (self.releases[i], dropped) {
            self.observers[v as usize] -= 1;
        }
        if self.unknown(i) {
            if !self.reuse {
                let rank = rank(i);
                let at = self.unknown_done.partition_point(|&u| u < rank);
                self.unknown_done.insert(at, rank);
            }
        } else {
            for &m in &self.resolved[i] {
                self.done.set(m);
            }
        }
    }

    /// Undoes [`Self::take`] of the same operation.
    fn forget(&mut self, i: usize, dropped: bool) {
        if self.unknown(i) {
            let rank = rank(i);
            self.unknown_done.retain(|&u| u != rank);
        } else {
            for &m in &self.resolved[i] {
                self.done.clear(m);
            }
        }
        if let (Some(v), false) = (self.releases[i], dropped) {
            self.observers[v as usize] += 1;
        }
    }

    /// Notes that the search got stuck at the return of operation `i`, if it got further than
    /// before: that is the place a violation is reported.
    fn note_stuck(&mut self, i: usize) {
        let done = self.total_required - self.remaining;
        if self.best.as_ref().is_none_or(|(d, _)| done > *d) {
            let prefix = self.stack.iter().filter(|f| !f.dropped).map(|f| self.ops[f.op].event).collect();
            self.best = Some((done, Stuck { prefix, blocked: Some(self.ops[i].event) }));
        }
    }

    /// Undoes choices up to the last linearization, and moves on to the event after its
    /// call; returns false when there is none left to undo. Undoing a drop puts that return
    /// back in the way, so the choice before it is undone too.
    fn backtrack(&mut self) -> bool {
        while let Some(frame) = self.stack.pop() {
            let i = frame.op;
            self.forget(i, frame.dropped);
            self.state = frame.state;
            self.after_unknown = frame.after_unknown;
            self.tried.pop();
            if required(&self.ops[i]) {
                self.remaining += 1;
            }
            if !(self.reuse && self.unknown(i)) {
                self.timeline.unlift(&self.resolved[i]);
            }
            if !frame.dropped {
                self.unknown_pass = self.unknown(i);
                self.cur = self.timeline.after_call(i);
                return true;
            }
        }
        false
    }
}
