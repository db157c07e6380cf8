//! Where the replicas of a new table go: each partition's replicas on distinct alive nodes,
//! replicas and would-be primaries (the first member, which the meta makes the group's primary)
//! spread evenly by always picking the least loaded nodes; would-be primaries per table first.

use std::collections::BTreeMap;

use wingkv_common::WingError;

/// Per-node load: `(replicas, first-member replicas)`.
pub type Load = BTreeMap<u64, (u32, u32)>;

/// Chooses members for `partition_count` partitions of `replica_count` replicas among `alive`
/// nodes, given their current `load` (updated as replicas are placed).
pub fn place(alive: &[u64], load: &Load, partition_count: u32, replica_count: u32) -> Result<Vec<Vec<u64>>, WingError> {
    if (alive.len() as u32) < replica_count {
        return Err(WingError::InvalidArgument(format!(
            "replica count {replica_count} needs {replica_count} alive replica servers; {} are alive",
            alive.len()
        )));
    }
    let mut load: BTreeMap<u64, (u32, u32)> =
        alive.iter().map(|n| (*n, load.get(n).copied().unwrap_or((0, 0)))).collect();
    // First places of this table: primaries are balanced per table first (a table's requests
    // go to its primaries), then over the cluster.
    let mut table_firsts: BTreeMap<u64, u32> = BTreeMap::new();
    let mut placement = Vec::with_capacity(partition_count as usize);
    for _ in 0..partition_count {
        let mut by_load: Vec<u64> = load.keys().copied().collect();
        by_load.sort_by_key(|n| (load[n].0, load[n].1, *n));
        let mut members: Vec<u64> = by_load[..replica_count as usize].to_vec();
        // The member with the fewest first places leads the group (see the meta's bootstrap).
        members.sort_by_key(|n| (table_firsts.get(n).copied().unwrap_or(0), load[n].1, load[n].0, *n));
        for (i, m) in members.iter().enumerate() {
            let e = load.entry(*m).or_default();
            e.0 += 1;
            if i == 0 {
                e.1 += 1;
                *table_firsts.entry(*m).or_default() += 1;
            }
        }
        placement.push(members);
    }
    Ok(placement)
}

/// A replacement for a lost member: the least loaded alive node that is not a member yet.
pub fn replacement(alive: &[u64], load: &Load, members: &[u64]) -> Option<u64> {
    alive.iter().filter(|n| !members.contains(n)).min_by_key(|n| (load.get(n).map(|l| l.0).unwrap_or(0), **n)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_distinct_and_spread_evenly() {
        let alive = [1, 2, 3, 4];
        let p = place(&alive, &Load::new(), 8, 3).unwrap();
        let mut replicas = BTreeMap::new();
        let mut firsts = BTreeMap::new();
        for members in &p {
            let mut m = members.clone();
            m.sort();
            m.dedup();
            assert_eq!(m.len(), 3, "{members:?}");
            for n in members {
                *replicas.entry(*n).or_insert(0) += 1;
            }
            *firsts.entry(members[0]).or_insert(0) += 1;
        }
        // 24 replicas over 4 nodes, 8 primaries over 4 nodes.
        assert!(replicas.values().all(|c| *c == 6), "{replicas:?}");
        assert!(firsts.values().all(|c| *c == 2), "{firsts:?}");
    }

    #[test]
    fn existing_load_is_taken_into_account() {
        let mut load = Load::new();
        load.insert(1, (10, 5));
        let p = place(&[1, 2, 3], &load, 2, 2).unwrap();
        assert!(p.iter().all(|m| !m.contains(&1)), "{p:?}");
    }

    #[test]
    fn first_places_are_spread_per_table_before_the_cluster() {
        // Node 3 already has the most first places; a new table still gives it its share.
        let load: Load = [(1, (8, 2)), (2, (8, 3)), (3, (8, 5))].into_iter().collect();
        let p = place(&[1, 2, 3], &load, 8, 3).unwrap();
        let mut firsts: BTreeMap<u64, u32> = BTreeMap::new();
        for m in &p {
            *firsts.entry(m[0]).or_default() += 1;
        }
        let (min, max) = (firsts.values().min().copied(), firsts.values().max().copied());
        assert!(firsts.len() == 3 && max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{firsts:?}");
    }

    #[test]
    fn too_few_nodes_is_a_clear_error() {
        let err = place(&[1, 2], &Load::new(), 4, 3).unwrap_err();
        assert!(err.to_string().contains("2 are alive"), "{err}");
    }

    #[test]
    fn replacement_avoids_members() {
        let mut load = Load::new();
        load.insert(3, (5, 0));
        load.insert(4, (1, 0));
        assert_eq!(replacement(&[1, 2, 3, 4], &load, &[1, 2]), Some(4));
        assert_eq!(replacement(&[1, 2], &load, &[1, 2]), None);
    }
}
