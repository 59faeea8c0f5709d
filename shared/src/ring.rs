//! Which peers a node times itself: its neighbours on a ring of the cluster's node names.
//!
//! If every node timed every peer, an idle cluster's heartbeats would grow with the square of its
//! size. Instead the nodes, sorted by name, form a ring, and each node times only the
//! [`NEIGHBOURS_EACH_SIDE`] nodes after it and as many before it. Every node is then timed by
//! twice that many others whatever the cluster's size, so a node's idle cost stays flat. A watcher
//! that finds a peer silent tells every other node, and each of those probes the peer itself
//! (`membership.rs`), so every node still learns of a hang within about a second.

/// How many ring neighbours on each side a node times: each node is timed by twice this many.
/// Two on each side keeps a hang detected while up to three of a node's watchers are down too.
pub(crate) const NEIGHBOURS_EACH_SIDE: usize = 2;

/// For peers sorted by name (not including `own`), whether `own` times each one. Both ends of a
/// pair decide the same whenever they know the same members: each is within the other's
/// distance on the ring. A cluster small enough that every peer is a neighbour times them all.
pub(crate) fn watched(own: &str, sorted: &[&str]) -> Vec<bool> {
    let peers = sorted.len();
    if peers <= 2 * NEIGHBOURS_EACH_SIDE {
        return vec![true; peers];
    }
    // The first peer after `own` on the ring (the smallest name when `own` sorts last).
    let after = sorted.partition_point(|peer| *peer < own);
    let mut watched = vec![false; peers];
    for step in 0..NEIGHBOURS_EACH_SIDE {
        watched[(after + step) % peers] = true;
        watched[(after + peers - 1 - step) % peers] = true;
    }
    watched
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("node-{i:03}")).collect()
    }

    /// Who `own` times, out of every name but its own.
    fn timed_by(own: &str, all: &[String]) -> Vec<String> {
        let peers: Vec<&str> = all
            .iter()
            .map(String::as_str)
            .filter(|n| *n != own)
            .collect();
        watched(own, &peers)
            .into_iter()
            .zip(&peers)
            .filter(|(watched, _)| *watched)
            .map(|(_, peer)| peer.to_string())
            .collect()
    }

    #[test]
    fn a_small_cluster_times_every_peer() {
        let all = names(5);
        assert_eq!(timed_by("node-002", &all).len(), 4);
    }

    #[test]
    fn a_node_times_its_neighbours_on_each_side_wrapping_around() {
        let all = names(10);
        assert_eq!(
            timed_by("node-005", &all),
            ["node-003", "node-004", "node-006", "node-007"]
        );
        assert_eq!(
            timed_by("node-000", &all),
            ["node-001", "node-002", "node-008", "node-009"]
        );
        assert_eq!(
            timed_by("node-009", &all),
            ["node-000", "node-001", "node-007", "node-008"]
        );
    }

    #[test]
    fn watching_is_mutual_and_every_node_has_the_same_number_of_watchers() {
        for size in [3, 5, 6, 16, 64, 128] {
            let all = names(size);
            for node in &all {
                let watchers = all
                    .iter()
                    .filter(|other| *other != node && timed_by(other, &all).contains(node))
                    .count();
                assert_eq!(
                    watchers,
                    (size - 1).min(2 * NEIGHBOURS_EACH_SIDE),
                    "{node} of {size}"
                );
                for peer in timed_by(node, &all) {
                    assert!(timed_by(&peer, &all).contains(node), "{node} and {peer}");
                }
            }
        }
    }
}
