//! Periodic anti-entropy between two replicators joined by an in-memory transport: a key one
//! side holds and replication never carried to the other (a third region's change, which
//! region links do not forward) reaches it within `repl-antientropy`, and not without it; a
//! check that finds nothing changes nothing.

use super::test_wire::{node, Node, Wire};
use super::*;
use crate::clock::Hlc;
use crate::store::Ttl;

/// Two region peers linked both ways; with `orphan`, `b` also holds a key merged from a third
/// region (9) that `a` lacks.
async fn pair(antientropy: Duration, orphan: bool) -> (Node, Node) {
    let wire = Arc::new(Wire::default());
    let a = node(&wire, 1, "127.0.0.1:7001".parse().unwrap());
    let b = node(&wire, 2, "127.0.0.1:7002".parse().unwrap());
    let link = |peer, addr: &str| LinkSpec {
        peer,
        kind: LinkKind::Region,
        group: format!("region-{peer}"),
        addr: addr.parse().unwrap(),
        slots: SlotSet::from_ranges(&[(0, 16383)]),
    };
    a.repl.set_links(vec![link(2, "127.0.0.1:7002")]);
    // b also links to region 9, which is unreachable: its changes are not b's to forward.
    b.repl
        .set_links(vec![link(1, "127.0.0.1:7001"), link(9, "127.0.0.1:7009")]);
    a.repl.set_antientropy(antientropy);
    b.repl.set_antientropy(antientropy);
    // Let the sessions' first repair rounds finish before the divergence appears.
    a.ks.lock([&b"shared"[..]])
        .key(b"shared")
        .set_bytes(b"v", Ttl::Clear);
    assert_eq!(a.repl.wait_regions(1, Duration::from_secs(5)).await, 1);
    assert!(
        b.ks.entry(b"shared").is_some(),
        "ordinary replication works"
    );

    if !orphan {
        return (a, b);
    }
    let third = Keyspace::new(Arc::new(Hlc::new(9, Duration::from_millis(500))), None);
    third
        .lock([&b"orphan"[..]])
        .key(b"orphan")
        .set_bytes(b"x", Ttl::Clear);
    let delta = third.entry(b"orphan").expect("written").to_delta();
    b.ks.merge_from(Origin::Peer(9), b"orphan", &delta, 0);
    (a, b)
}

async fn arrives(ks: &Keyspace, key: &[u8], within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if ks.entry(key).is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn an_idle_link_finds_and_ships_what_its_peer_lacks_within_the_period() {
    let (a, b) = pair(Duration::from_millis(300), true).await;
    assert!(
        arrives(&a.ks, b"orphan", Duration::from_secs(10)).await,
        "two quiet checks find the difference; the new session ships the slot"
    );
    let to_a = b
        .repl
        .status()
        .into_iter()
        .find(|l| l.peer == 1)
        .expect("b's link to a");
    assert!(to_a.repair.slots >= 1, "counted as a repaired slot");
    a.repl.shutdown().await;
    b.repl.shutdown().await;
}

#[tokio::test]
async fn without_anti_entropy_the_difference_stays() {
    let (a, b) = pair(Duration::ZERO, true).await;
    assert!(!arrives(&a.ks, b"orphan", Duration::from_secs(3)).await);
    a.repl.shutdown().await;
    b.repl.shutdown().await;
}

#[tokio::test]
async fn checks_that_find_nothing_ship_nothing_and_keep_the_promise() {
    let (a, b) = pair(Duration::from_millis(300), false).await;
    let checks = |n: &Node| n.repl.status().iter().map(|l| l.repair.checks).sum::<u64>();
    let settle = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.repl.watermark() == 0 && tokio::time::Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = checks(&a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        assert!(
            a.repl.watermark() > 0,
            "a check never resets the watermark (collection and eviction go on)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        checks(&a) >= before + 2,
        "a quiet, idle link checks every period"
    );
    let to_b = &a.repl.status()[0];
    assert_eq!(to_b.repair.slots, 0, "equal digests ship nothing");
    a.repl.shutdown().await;
    b.repl.shutdown().await;
}
