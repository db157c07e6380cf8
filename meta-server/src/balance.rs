//! The balancer of the `lively` meta level: which replica or primary to move next so that every
//! node holds its share.
//!
//! Balanced means: for every table and for the whole cluster, the replicas per node differ by at
//! most one, and so do the primaries per node. The planner is greedy and pure (the reconcile
//! loop runs the moves): each replica move goes from a node above the others to one below them
//! (never onto a node that already holds the partition), each primary move hands a partition's
//! primary to a member that leads fewer, so every move strictly lowers the imbalance and the
//! process ends. Replicas are balanced first; a replica whose node is its partition's primary is
//! not moved (the group would first elect another leader, with a write pause): its primary is
//! handed to another member first.

use std::collections::{BTreeMap, HashMap, HashSet};

use wingkv_common::PartitionId;

use crate::catalog::AppState;

/// One move of the balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// A new replica on `to` joins the group, then the one on `from` leaves it.
    Replica {
        /// The partition.
        pid: PartitionId,
        /// The node that gives its replica up.
        from: u64,
        /// The node that gets one.
        to: u64,
    },
    /// The primary on `from` hands its role to the member on `to`.
    Primary {
        /// The partition.
        pid: PartitionId,
        /// The node that leads now.
        from: u64,
        /// The member that leads after.
        to: u64,
    },
}

impl Move {
    /// The partition moved.
    pub fn pid(&self) -> PartitionId {
        match self {
            Move::Replica { pid, .. } | Move::Primary { pid, .. } => *pid,
        }
    }

    /// The nodes the move loads (both ends).
    pub fn nodes(&self) -> [u64; 2] {
        match self {
            Move::Replica { from, to, .. } | Move::Primary { from, to, .. } => [*from, *to],
        }
    }

    /// `replica` or `primary`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Move::Replica { .. } => "replica",
            Move::Primary { .. } => "primary",
        }
    }
}

/// What the planner looks at (copies: planned moves are applied to it).
pub struct View {
    /// Nodes that may hold replicas and lead (alive; not draining).
    pub nodes: Vec<u64>,
    /// Alive nodes being decommissioned: everything they hold moves to `nodes`.
    pub draining: Vec<u64>,
    /// Tables to balance (live, not bulk-loading).
    pub apps: Vec<AppState>,
    /// The reported primary of each partition that has one.
    pub primaries: HashMap<PartitionId, u64>,
    /// Partitions with a membership change or a move in flight: left alone.
    pub busy: HashSet<PartitionId>,
}

/// How far the view is from balanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Assessment {
    /// Replicas per node within one of each other, per table and cluster-wide.
    pub replicas_balanced: bool,
    /// Primaries per node within one of each other, per table and cluster-wide.
    pub primaries_balanced: bool,
}

impl Assessment {
    /// Both balanced.
    #[cfg(test)]
    pub fn balanced(&self) -> bool {
        self.replicas_balanced && self.primaries_balanced
    }
}

/// Counts per node of the view's nodes.
type Counts = BTreeMap<u64, i64>;

fn spread(c: &Counts) -> i64 {
    match (c.values().max(), c.values().min()) {
        (Some(max), Some(min)) => max - min,
        _ => 0,
    }
}

impl View {
    fn zero(&self) -> Counts {
        self.nodes.iter().map(|n| (*n, 0)).collect()
    }

    /// Partitions of `app` the planner may touch: every member on a node of the view.
    fn movable<'b>(&'b self, app: &'b AppState) -> impl Iterator<Item = (PartitionId, &'b [u64])> + 'b {
        app.partitions.iter().enumerate().filter_map(move |(i, p)| {
            let pid = PartitionId::new(app.app_id, i as u32);
            let placed = p.members.iter().all(|m| self.nodes.contains(m) || self.draining.contains(m));
            (placed && !self.busy.contains(&pid)).then_some((pid, p.members.as_slice()))
        })
    }

    fn replica_counts(&self, app: &AppState) -> Counts {
        let mut c = self.zero();
        for p in &app.partitions {
            for m in &p.members {
                if let Some(n) = c.get_mut(m) {
                    *n += 1;
                }
            }
        }
        c
    }

    fn primary_counts(&self, app: &AppState) -> Counts {
        let mut c = self.zero();
        for i in 0..app.partitions.len() {
            if let Some(n) = self.primaries.get(&PartitionId::new(app.app_id, i as u32)).and_then(|p| c.get_mut(p)) {
                *n += 1;
            }
        }
        c
    }

    /// How far from balanced the view is.
    pub fn assess(&self) -> Assessment {
        let (mut replicas, mut primaries) = (self.zero(), self.zero());
        let mut a = Assessment { replicas_balanced: true, primaries_balanced: true };
        for app in &self.apps {
            let (r, p) = (self.replica_counts(app), self.primary_counts(app));
            a.replicas_balanced &= spread(&r) <= 1;
            a.primaries_balanced &= spread(&p) <= 1;
            for (n, c) in r {
                *replicas.entry(n).or_default() += c;
            }
            for (n, c) in p {
                *primaries.entry(n).or_default() += c;
            }
        }
        a.replicas_balanced &= spread(&replicas) <= 1;
        a.primaries_balanced &= spread(&primaries) <= 1;
        a
    }

    /// The next move: one that empties a draining node, or with `balance` one that lowers the
    /// imbalance; nodes in `loaded` (at their limit of moves in flight) are not touched.
    pub fn next_move(&self, loaded: &HashSet<u64>, balance: bool) -> Option<Move> {
        if let Some(m) = self.drain_move(loaded) {
            return Some(m);
        }
        if !balance {
            return None;
        }
        // Primaries only once the replicas are balanced: a primary balanced earlier may have to
        // be handed away again before its replica can move.
        // (Unless no replica move is possible at all, throttle aside: then primaries go on.)
        if self.assess().replicas_balanced || self.replica_move(&HashSet::new()).is_none() {
            self.primary_move(loaded)
        } else {
            self.replica_move(loaded)
        }
    }

    /// A move off a draining node: its primaries first (to the member that leads least), then
    /// its replicas (to the node that holds fewest of the table, then of all).
    fn drain_move(&self, loaded: &HashSet<u64>) -> Option<Move> {
        let draining: Vec<u64> = self.draining.iter().copied().filter(|n| !loaded.contains(n)).collect();
        if draining.is_empty() {
            return None;
        }
        let primaries = self.cluster_primaries();
        for app in &self.apps {
            for (pid, members) in self.movable(app) {
                let Some(from) = self.primaries.get(&pid).copied().filter(|p| draining.contains(p)) else {
                    continue;
                };
                let heir = members
                    .iter()
                    .copied()
                    .filter(|m| self.nodes.contains(m) && !loaded.contains(m))
                    .min_by_key(|m| (primaries[m], *m));
                if let Some(to) = heir {
                    return Some(Move::Primary { pid, from, to });
                }
            }
        }
        let total = self.cluster_replicas();
        for app in &self.apps {
            let counts = self.replica_counts(app);
            for (pid, members) in self.movable(app) {
                let Some(from) = members.iter().copied().find(|m| draining.contains(m)) else {
                    continue;
                };
                if self.primaries.get(&pid) == Some(&from) {
                    // Its primary moves first (above), once a member can take it.
                    continue;
                }
                let target = self
                    .nodes
                    .iter()
                    .copied()
                    .filter(|n| !members.contains(n) && !loaded.contains(n))
                    .min_by_key(|n| (counts[n], total[n], *n));
                if let Some(to) = target {
                    return Some(Move::Replica { pid, from, to });
                }
            }
        }
        None
    }

    /// Total replicas per node.
    fn cluster_replicas(&self) -> Counts {
        let mut total = self.zero();
        for app in &self.apps {
            for (n, c) in self.replica_counts(app) {
                *total.entry(n).or_default() += c;
            }
        }
        total
    }

    /// Total primaries per node.
    fn cluster_primaries(&self) -> Counts {
        let mut total = self.zero();
        for app in &self.apps {
            for (n, c) in self.primary_counts(app) {
                *total.entry(n).or_default() += c;
            }
        }
        total
    }

    fn replica_move(&self, loaded: &HashSet<u64>) -> Option<Move> {
        let total = self.cluster_replicas();
        // Per table first: a move from a node above the table's others to one below them.
        // Then cluster-wide: between nodes whose totals differ by more than one, moving a
        // replica of a table where the source holds more than the target (the table stays
        // within one).
        for app in &self.apps {
            let counts = self.replica_counts(app);
            if spread(&counts) > 1 {
                if let Some(m) = self.replica_move_between(app, &counts, &counts, &total, 2, loaded) {
                    return Some(m);
                }
            }
        }
        if spread(&total) > 1 {
            for app in &self.apps {
                let counts = self.replica_counts(app);
                if let Some(m) = self.replica_move_between(app, &total, &counts, &total, 1, loaded) {
                    return Some(m);
                }
            }
        }
        None
    }

    /// A replica move of `app` from a node to one that `by` ranks at least 2 lower, where the
    /// table's own `counts` differ by at least `table_gap`.
    fn replica_move_between(
        &self,
        app: &AppState,
        by: &Counts,
        counts: &Counts,
        total: &Counts,
        table_gap: i64,
        loaded: &HashSet<u64>,
    ) -> Option<Move> {
        // Sources from the most loaded, targets from the least (ties: the cluster total).
        let mut sources: Vec<u64> = self.nodes.iter().copied().filter(|n| !loaded.contains(n)).collect();
        sources.sort_by_key(|n| (-by[n], -total[n], *n));
        let mut targets = sources.clone();
        targets.sort_by_key(|n| (by[n], total[n], *n));
        for from in &sources {
            for to in &targets {
                if by[from] - by[to] < 2 || counts[from] - counts[to] < table_gap {
                    continue;
                }
                let mut led = None;
                for (pid, members) in self.movable(app) {
                    if !members.contains(from) || members.contains(to) {
                        continue;
                    }
                    if self.primaries.get(&pid) != Some(from) {
                        return Some(Move::Replica { pid, from: *from, to: *to });
                    }
                    led.get_or_insert((pid, members));
                }
                // Every candidate is led from the source: hand one's primary to the member that
                // leads least first.
                if let Some((pid, members)) = led {
                    let primaries = self.cluster_primaries();
                    let heir = members
                        .iter()
                        .copied()
                        .filter(|m| m != from && !loaded.contains(m))
                        .min_by_key(|m| (primaries.get(m).copied().unwrap_or(0), *m));
                    if let Some(to) = heir {
                        return Some(Move::Primary { pid, from: *from, to });
                    }
                }
            }
        }
        None
    }

    fn primary_move(&self, loaded: &HashSet<u64>) -> Option<Move> {
        let total = self.cluster_primaries();
        for app in &self.apps {
            let counts = self.primary_counts(app);
            if spread(&counts) > 1 {
                if let Some(m) = self.primary_move_by(app, &counts, &total, loaded) {
                    return Some(m);
                }
            }
        }
        if spread(&total) > 1 {
            for app in &self.apps {
                let counts = self.primary_counts(app);
                // Cluster-wide, a table may only move a primary between nodes it does not
                // leave more than one apart.
                let m = self.primary_move_by(app, &total, &total, loaded);
                if let Some(Move::Primary { from, to, .. }) = m {
                    if counts[&from] > counts[&to] {
                        return m;
                    }
                }
            }
        }
        None
    }

    /// A primary move of `app` from a node that `by` ranks highest to a member ranked at least
    /// two lower.
    fn primary_move_by(&self, app: &AppState, by: &Counts, total: &Counts, loaded: &HashSet<u64>) -> Option<Move> {
        let mut sources: Vec<u64> = self.nodes.iter().copied().filter(|n| !loaded.contains(n)).collect();
        sources.sort_by_key(|n| (-by[n], -total[n], *n));
        for from in sources {
            let mut best: Option<(PartitionId, u64)> = None;
            for (pid, members) in self.movable(app) {
                if self.primaries.get(&pid) != Some(&from) {
                    continue;
                }
                for to in members.iter().copied().filter(|m| *m != from && !loaded.contains(m)) {
                    if by[&from] - by[&to] < 2 {
                        continue;
                    }
                    if best.is_none_or(|(_, b)| (by[&to], total[&to], to) < (by[&b], total[&b], b)) {
                        best = Some((pid, to));
                    }
                }
            }
            if let Some((pid, to)) = best {
                return Some(Move::Primary { pid, from, to });
            }
        }
        None
    }
}

impl View {
    /// Records `m` as done, so that the next move planned in the same round sees it; its
    /// partition is then busy.
    pub fn apply(&mut self, m: &Move) {
        self.busy.insert(m.pid());
        match *m {
            Move::Primary { pid, to, .. } => {
                self.primaries.insert(pid, to);
            }
            Move::Replica { pid, from, to } => {
                let partition = self
                    .apps
                    .iter_mut()
                    .find(|a| a.app_id == pid.app_id)
                    .and_then(|a| a.partitions.get_mut(pid.partition_index as usize));
                if let Some(p) = partition {
                    for member in p.members.iter_mut().filter(|m| **m == from) {
                        *member = to;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
