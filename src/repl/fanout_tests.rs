//! Fan-out groups between replicators joined by an in-memory transport: a writer whose two
//! region links carry the same slots sends each batch built once (shared frames) to both, and
//! a peer that cannot be reached neither holds up the other nor misses anything once it is
//! back; a peer that restarts empty is repaired on its own link while the other link goes on
//! with the group's batches, and `WAITREGIONS` waits for the repair.

use super::test_wire::{node, Node, Wire};
use super::*;
use crate::store::Ttl;

const ADDRS: [&str; 3] = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"];

fn addr(i: usize) -> SocketAddr {
    ADDRS[i].parse().unwrap()
}

fn all_slots() -> SlotSet {
    SlotSet::from_ranges(&[(0, 16383)])
}

/// The link to node `j` (region `j`, node id `j + 1`) carrying `slots`.
fn region_link(j: usize, slots: SlotSet) -> LinkSpec {
    LinkSpec {
        peer: j as u64 + 1,
        kind: LinkKind::Region,
        group: format!("region-{j}"),
        addr: addr(j),
        slots,
    }
}

/// Three regions of one node each, every node linked to the two others (all slots).
fn mesh(wire: &Arc<Wire>) -> Vec<Node> {
    let nodes: Vec<Node> = (0..3).map(|i| node(wire, i as u64 + 1, addr(i))).collect();
    for (i, n) in nodes.iter().enumerate() {
        let links = (0..3)
            .filter(|&j| j != i)
            .map(|j| region_link(j, all_slots()))
            .collect();
        n.repl.set_links(links);
    }
    nodes
}

fn write(ks: &Keyspace, from: usize, to: usize) {
    for i in from..to {
        let key = format!("key:{i}");
        ks.lock([key.as_bytes()])
            .key(key.as_bytes())
            .set_bytes(format!("value-{i}").as_bytes(), Ttl::Clear);
    }
}

/// Whether `reader` holds keys `key:0..n` exactly as `writer` does.
fn holds_all(writer: &Keyspace, reader: &Keyspace, n: usize) -> bool {
    (0..n).all(|i| {
        let key = format!("key:{i}");
        let want = writer.entry(key.as_bytes()).map(|e| e.to_delta());
        want.is_some() && reader.entry(key.as_bytes()).map(|e| e.to_delta()) == want
    })
}

async fn until(what: impl Fn() -> bool, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if what() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    what()
}

#[tokio::test]
async fn a_writer_ships_one_batch_built_once_to_both_regions() {
    let wire = Arc::new(Wire::default());
    let nodes = mesh(&wire);
    assert_eq!(
        nodes[0].repl.groups.read().len(),
        1,
        "one group of two links"
    );
    write(&nodes[0].ks, 0, 3000);
    assert_eq!(
        nodes[0].repl.wait_regions(2, Duration::from_secs(10)).await,
        2,
        "both regions acknowledge every write"
    );
    for n in &nodes[1..] {
        assert!(holds_all(&nodes[0].ks, &n.ks, 3000), "every write arrived");
    }
    // A batch built once: frames to the two regions that end in the same packed entries
    // (their heads differ: each link's own session and batch number).
    let same = {
        let frames = wire.frames.lock();
        let tail = |f: &bytes::Bytes| f.slice(f.len().saturating_sub(200)..);
        let to_second: Vec<_> = frames[&addr(2)]
            .iter()
            .filter(|f| f.len() > 400)
            .map(tail)
            .collect();
        frames[&addr(1)]
            .iter()
            .filter(|f| f.len() > 400)
            .filter(|f| to_second.contains(&tail(f)))
            .count()
    };
    assert!(same >= 1, "the same packed entries went to both regions");
    for l in nodes[0].repl.status() {
        assert!(l.batches_shared > 0, "counted: {l:?}");
        assert!(l.batches_shared <= l.batches_sent);
    }
    for n in &nodes {
        n.repl.shutdown().await;
    }
}

#[tokio::test]
async fn an_unreachable_region_holds_up_nobody_and_catches_up_when_back() {
    let wire = Arc::new(Wire::default());
    let nodes = mesh(&wire);
    // Region 3 is cut off while 20 windows' worth of batches are written.
    wire.down.lock().insert(addr(2));
    for round in 0..20 {
        write(&nodes[0].ks, round * 600, (round + 1) * 600);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        until(
            || holds_all(&nodes[0].ks, &nodes[1].ks, 12_000),
            Duration::from_secs(10)
        )
        .await,
        "the reachable region gets everything while the other is away"
    );
    assert_eq!(nodes[0].repl.regions_acked(), 1);
    let to_c = nodes[0]
        .repl
        .status()
        .into_iter()
        .find(|l| l.peer == 3)
        .unwrap();
    assert!(
        to_c.pending_keys > 0,
        "the cut-off link still owes its keys"
    );
    assert!(
        to_c.pending_keys <= 12_000,
        "each key owed once, however it was queued: {}",
        to_c.pending_keys
    );
    wire.down.lock().clear();
    assert_eq!(
        nodes[0].repl.wait_regions(2, Duration::from_secs(20)).await,
        2,
        "region 3 acknowledges everything once back"
    );
    assert!(
        holds_all(&nodes[0].ks, &nodes[2].ks, 12_000),
        "nothing was lost"
    );
    for n in &nodes {
        n.repl.shutdown().await;
    }
}

#[tokio::test]
async fn links_whose_slots_differ_are_not_grouped_and_a_regroup_loses_nothing() {
    let wire = Arc::new(Wire::default());
    let nodes = mesh(&wire);
    wire.down.lock().insert(addr(1));
    wire.down.lock().insert(addr(2));
    write(&nodes[0].ks, 0, 500);
    // Changes queued in the group when the links change: both links keep them.
    let all = all_slots();
    let mut most = all.clone();
    most.remove(16383);
    nodes[0]
        .repl
        .set_links(vec![region_link(1, all.clone()), region_link(2, most)]);
    assert!(nodes[0].repl.groups.read().is_empty(), "different slots");
    wire.down.lock().clear();
    nodes[0]
        .repl
        .set_links(vec![region_link(1, all.clone()), region_link(2, all)]);
    assert_eq!(nodes[0].repl.groups.read().len(), 1, "the same slots again");
    write(&nodes[0].ks, 500, 1000);
    assert_eq!(
        nodes[0].repl.wait_regions(2, Duration::from_secs(20)).await,
        2
    );
    for n in &nodes[1..] {
        assert!(
            holds_all(&nodes[0].ks, &n.ks, 1000),
            "nothing lost across the regroups"
        );
    }
    for n in &nodes {
        n.repl.shutdown().await;
    }
}

#[tokio::test]
async fn a_region_that_restarts_empty_is_repaired_while_the_other_keeps_its_batches() {
    let wire = Arc::new(Wire::default());
    let mut nodes = mesh(&wire);
    write(&nodes[0].ks, 0, 2000);
    assert_eq!(
        nodes[0].repl.wait_regions(2, Duration::from_secs(10)).await,
        2
    );
    // Region 3 restarts with nothing: the writer's next batch to it starts a session it never
    // saw, so it answers `need_resync` and that link alone is repaired by digests.
    let old = nodes.pop().expect("three nodes");
    old.repl.shutdown().await;
    let fresh = node(&wire, 3, addr(2));
    fresh
        .repl
        .set_links((0..2).map(|j| region_link(j, all_slots())).collect());
    let shared_to_b = |n: &Node| {
        n.repl
            .status()
            .into_iter()
            .find(|l| l.peer == 2)
            .map_or(0, |l| l.batches_shared)
    };
    let before = shared_to_b(&nodes[0]);
    write(&nodes[0].ks, 2000, 4000);
    assert_eq!(
        nodes[0].repl.wait_regions(2, Duration::from_secs(20)).await,
        2,
        "WAITREGIONS waits for the repaired region too"
    );
    assert!(
        holds_all(&nodes[0].ks, &fresh.ks, 4000),
        "the restarted region holds what it lost and what came after"
    );
    assert!(holds_all(&nodes[0].ks, &nodes[1].ks, 4000));
    assert!(
        shared_to_b(&nodes[0]) > before,
        "region 2 went on receiving shared batches"
    );
    for n in nodes.iter().chain([&fresh]) {
        n.repl.shutdown().await;
    }
}
