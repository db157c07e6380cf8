use std::collections::BTreeMap;

use super::*;
use crate::catalog::PartitionState;
use crate::placement;

fn table(app_id: u32, partitions: u32, replicas: u32, nodes: &[u64]) -> AppState {
    let placement = placement::place(nodes, &placement::Load::new(), partitions, replicas).unwrap();
    AppState {
        app_id,
        name: format!("t{app_id}"),
        partition_count: partitions,
        replica_count: replicas,
        envs: BTreeMap::new(),
        create_time_ms: 0,
        dropped: None,
        partitions: placement.into_iter().map(|members| PartitionState { members, ballot: 1 }).collect(),
    }
}

/// The first member of every partition leads, as after a table's creation.
fn first_members_lead(apps: &[AppState]) -> HashMap<PartitionId, u64> {
    apps.iter()
        .flat_map(|a| {
            a.partitions.iter().enumerate().map(|(i, p)| (PartitionId::new(a.app_id, i as u32), p.members[0]))
        })
        .collect()
}

/// Plans and applies moves until none is left; answers how many, failing past `limit`.
fn run_to_end(view: &mut View, limit: usize) -> usize {
    for done in 0..limit {
        match view.next_move(&HashSet::new(), true) {
            Some(m) => {
                if let Move::Replica { pid, from, .. } = m {
                    assert_ne!(view.primaries.get(&pid), Some(&from), "a primary's own replica moved: {m:?}");
                }
                view.apply(&m);
                view.busy.clear();
            }
            None => return done,
        }
    }
    panic!("no end after {limit} moves");
}

fn check_members(view: &View) {
    for app in &view.apps {
        for p in &app.partitions {
            let mut m = p.members.clone();
            m.sort();
            m.dedup();
            assert_eq!(m.len(), app.replica_count as usize, "{:?}", p.members);
        }
    }
}

#[test]
fn two_added_nodes_get_their_share_of_replicas_and_primaries() {
    let apps = vec![table(1, 16, 3, &[1, 2, 3])];
    let primaries = first_members_lead(&apps);
    let mut view = View { draining: Vec::new(), nodes: vec![1, 2, 3, 4, 5], apps, primaries, busy: HashSet::new() };
    assert!(!view.assess().balanced());
    let moves = run_to_end(&mut view, 200);
    assert!(view.assess().balanced(), "stopped unbalanced after {moves} moves: {:?}", view.assess());
    check_members(&view);
    let counts = view.replica_counts(&view.apps[0]);
    // 48 replicas over 5 nodes: 9 or 10 each.
    assert!(counts.values().all(|c| *c == 9 || *c == 10), "{counts:?}");
    // No more moves than needed: the new nodes need 19 replicas.
    assert!(moves < 40, "{moves} moves");
}

#[test]
fn many_tables_are_balanced_each_and_together() {
    let apps = vec![table(1, 8, 3, &[1, 2, 3]), table(2, 4, 3, &[1, 2, 3]), table(3, 16, 2, &[1, 2, 3])];
    let primaries = first_members_lead(&apps);
    let mut view = View { draining: Vec::new(), nodes: vec![1, 2, 3, 4, 5, 6], apps, primaries, busy: HashSet::new() };
    run_to_end(&mut view, 500);
    assert!(view.assess().balanced(), "{:?}", view.assess());
    check_members(&view);
}

#[test]
fn a_balanced_cluster_plans_nothing() {
    let apps = vec![table(1, 16, 3, &[1, 2, 3, 4, 5])];
    let primaries = first_members_lead(&apps);
    let view = View { draining: Vec::new(), nodes: vec![1, 2, 3, 4, 5], apps, primaries, busy: HashSet::new() };
    assert!(view.assess().balanced(), "{:?}", view.assess());
    assert_eq!(view.next_move(&HashSet::new(), true), None);
}

#[test]
fn a_replica_that_leads_hands_its_primary_over_before_it_moves() {
    // One partition on nodes 1,2,3 led by 1; node 4 empty; node 1 is the most loaded.
    let mut app = table(1, 1, 3, &[1, 2, 3]);
    app.partitions[0].members = vec![1, 2, 3];
    let extra = AppState {
        app_id: 2,
        partitions: vec![PartitionState { members: vec![1, 2, 3], ballot: 1 }; 2],
        partition_count: 2,
        ..app.clone()
    };
    let primaries: HashMap<PartitionId, u64> =
        [(PartitionId::new(1, 0), 1), (PartitionId::new(2, 0), 1), (PartitionId::new(2, 1), 1)].into();
    let view =
        View { draining: Vec::new(), nodes: vec![1, 2, 3, 4], apps: vec![app, extra], primaries, busy: HashSet::new() };
    match view.next_move(&HashSet::new(), true) {
        Some(Move::Primary { from: 1, to, .. }) => assert!(to == 2 || to == 3),
        other => panic!("expected a primary handed over by node 1 first, got {other:?}"),
    }
}

#[test]
fn busy_partitions_and_loaded_nodes_are_left_alone() {
    let apps = vec![table(1, 4, 3, &[1, 2, 3])];
    let primaries = first_members_lead(&apps);
    let busy: HashSet<PartitionId> = (0..4).map(|i| PartitionId::new(1, i)).collect();
    let view =
        View { draining: Vec::new(), nodes: vec![1, 2, 3, 4], apps: apps.clone(), primaries: primaries.clone(), busy };
    assert_eq!(view.next_move(&HashSet::new(), true), None, "every partition is busy");
    let view = View { draining: Vec::new(), nodes: vec![1, 2, 3, 4], apps, primaries, busy: HashSet::new() };
    assert_eq!(view.next_move(&[4].into(), true), None, "the only target is at its limit");
    let m = view.next_move(&HashSet::new(), true).expect("a move to node 4");
    assert!(m.nodes().contains(&4), "{m:?}");
}

#[test]
fn partitions_with_a_member_outside_the_view_are_not_moved() {
    // Node 3 is dead (not in the view): its partitions are the repairer's, not the balancer's.
    let apps = vec![table(1, 3, 3, &[1, 2, 3])];
    let primaries = first_members_lead(&apps);
    let view = View { draining: Vec::new(), nodes: vec![1, 2, 4, 5], apps, primaries, busy: HashSet::new() };
    assert_eq!(view.next_move(&HashSet::new(), true), None);
}

#[test]
fn a_draining_node_hands_its_primaries_over_then_gives_every_replica_away() {
    let apps = vec![table(1, 16, 3, &[1, 2, 3, 4, 5])];
    let primaries = first_members_lead(&apps);
    let mut view = View { nodes: vec![1, 2, 3, 4], draining: vec![5], apps, primaries, busy: HashSet::new() };
    let mut replica_moves_started = false;
    for _ in 0..200 {
        // Not balancing: only the drain moves.
        let Some(m) = view.next_move(&HashSet::new(), false) else { break };
        match m {
            Move::Primary { from, to, .. } => {
                assert_eq!(from, 5, "{m:?}");
                assert_ne!(to, 5);
                assert!(!replica_moves_started, "a primary moved after replicas started to: {m:?}");
            }
            Move::Replica { from, to, .. } => {
                assert_eq!(from, 5, "{m:?}");
                assert_ne!(to, 5);
                replica_moves_started = true;
            }
        }
        view.apply(&m);
        view.busy.clear();
    }
    assert!(view.apps[0].partitions.iter().all(|p| !p.members.contains(&5)), "node 5 still holds replicas");
    assert!(view.primaries.values().all(|p| *p != 5));
    check_members(&view);
}

#[test]
fn a_drain_runs_without_balancing_and_balancing_skips_no_drain() {
    // Balance off: an unbalanced cluster with nothing to drain plans nothing.
    let apps = vec![table(1, 16, 3, &[1, 2, 3])];
    let primaries = first_members_lead(&apps);
    let view = View { nodes: vec![1, 2, 3, 4, 5], draining: Vec::new(), apps, primaries, busy: HashSet::new() };
    assert_eq!(view.next_move(&HashSet::new(), false), None);
    assert!(view.next_move(&HashSet::new(), true).is_some());
}

#[test]
fn a_plan_that_counts_the_running_moves_does_not_undo_them() {
    // Node 1 leads two primaries, node 2 one, node 3 none: one move balances them.
    let apps = vec![table(1, 3, 3, &[1, 2, 3])];
    let primaries: HashMap<PartitionId, u64> =
        [(0, 1), (1, 1), (2, 2)].into_iter().map(|(i, n)| (PartitionId::new(1, i), n)).collect();
    let fresh = || View {
        draining: Vec::new(),
        nodes: vec![1, 2, 3],
        apps: apps.clone(),
        primaries: primaries.clone(),
        busy: HashSet::new(),
    };
    let first = fresh().next_move(&HashSet::new(), true).expect("a primary move");
    assert!(matches!(first, Move::Primary { from: 1, to: 3, .. }), "{first:?}");
    // The next round, while that move runs: the reports still show node 1 leading it.
    let mut next = fresh();
    next.busy.insert(first.pid());
    let overshoot = next.next_move(&HashSet::new(), true);
    assert!(matches!(overshoot, Some(Move::Primary { from: 1, to: 3, .. })), "{overshoot:?}");
    // Counted as done, the running move leaves nothing to do.
    next.apply(&first);
    assert_eq!(next.next_move(&HashSet::new(), true), None);
}
