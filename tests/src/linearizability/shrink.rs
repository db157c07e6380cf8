//! Shrinking a violation to a minimal counterexample: events are removed while the rest still
//! fails, the removed writes kept as optional "ghosts" so that no removal makes a violation of
//! its own.

use std::collections::{BTreeMap, HashSet};

use super::history::{read_of, read_only, write_of, Event, Op, OpResult};
use super::model::{build_ops, Synthetic};
use super::render::explain;
use super::search::{decide, search, Outcome, Stuck};
use super::Violation;

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
pub(super) fn minimize(key: &str, events: &[&Event], stuck: Stuck, found: (usize, bool), budget: usize) -> Violation {
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

    let explanation = explain(events, &shown, &shrunk.stuck, finished);
    Violation { key: key.to_string(), minimal, explanation }
}
