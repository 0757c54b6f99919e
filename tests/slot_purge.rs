//! Stale slots (`cluster::runtime::purge`): a node whose shard lost a slot removes the entries
//! it still holds there, after a grace, locally (nothing replicated), and for good (the log
//! records the removal, so a restart does not bring them back).
//!
//! The world: region r0 with two primaries (A = node 0, B = node 1) and a replica each; region
//! r1 with one node C owning every slot. Keys of one slot of A are written in both regions, so
//! A and its replica hold them. The slot then moves to B with `CLUSTER SETSLOT NODE` alone: A's
//! copies stay behind, as deltas do that a remote region keeps sending to an old owner. C learns
//! the new owner and syncs the slot to B.
//!
//! Then an aborted import: MIGRATE takes a key of another slot of A to B, and both nodes close
//! the slot with `SETSLOT STABLE`. B holds the only copy of that key in a slot it never owned:
//! it must keep it (Redis only deletes the keys of slots that were the node's).

mod common;

use common::cluster::{key_slot, parse_nodes, scratch_dir};
use common::info_field;
use common::world::World;
use std::time::{Duration, Instant};

type Con = redis::aio::MultiplexedConnection;

/// How long anything this test waits for may take.
const LIMIT: Duration = Duration::from_secs(30);

/// Regions `(nodes, replicas)` whose nodes log to their own data directories.
async fn start(layout: &[(usize, usize)]) -> World {
    World::start(layout, |_, _| {
        vec![
            ("appendonly".into(), "yes".into()),
            (
                "dir".into(),
                scratch_dir("slot-purge").to_string_lossy().into_owned(),
            ),
        ]
    })
    .await
}

/// Polls `f` every 100 ms until it holds or [`LIMIT`] passes.
async fn until<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + LIMIT;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count_in_slot(con: &mut Con, slot: u16) -> i64 {
    q!(*con, "CLUSTER", "COUNTKEYSINSLOT", slot).expect("COUNTKEYSINSLOT")
}

async fn dbsize(con: &mut Con) -> i64 {
    q!(*con, "DBSIZE").expect("DBSIZE")
}

async fn cluster_info(con: &mut Con, field: &str) -> u64 {
    let info: String = q!(*con, "INFO", "cluster").expect("INFO cluster");
    info_field(&info, field)
        .unwrap_or_else(|| panic!("no {field} in {info}"))
        .parse()
        .unwrap()
}

/// The keys of the moved slot and the values every region must end with.
fn expected(tag: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = (0..20)
        .flat_map(|i| {
            [
                (format!("{{{tag}}}:c{i}"), format!("from-c-{i}")),
                (format!("{{{tag}}}:a{i}"), format!("from-a-{i}")),
            ]
        })
        .collect();
    // 3 increments in r0 and 4 in r1.
    v.push((format!("{{{tag}}}:n"), "7".into()));
    v
}

async fn holds_all(con: &mut Con, want: &[(String, String)]) -> bool {
    for (k, v) in want {
        let got: Option<String> = q!(*con, "GET", k).unwrap_or(None);
        if got.as_deref() != Some(v.as_str()) {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_removes_the_keys_of_a_slot_its_shard_lost_for_good() {
    let _serial = common::cluster::serial().lock_owned().await;
    let mut w = start(&[(4, 1), (1, 0)]).await;
    for i in 0..4 {
        w.wait_linked(0, i).await;
    }
    w.wait_linked(1, 0).await;
    let (mut a, mut b, mut c) = (w.con(0, 0).await, w.con(0, 1).await, w.con(1, 0).await);
    // A's replica, and a slot of A's (the layout gives A 0-8191 and B the rest).
    let nodes: String = q!(a, "CLUSTER", "NODES").unwrap();
    let lines = parse_nodes(&nodes);
    let (a_name, b_name) = (w.node(0, 0).name.clone(), w.node(0, 1).name.clone());
    let a_replica = (2..4)
        .find(|&i| {
            lines
                .iter()
                .any(|l| l.name == w.node(0, i).name && l.primary == a_name)
        })
        .unwrap_or_else(|| panic!("no replica of A in {nodes}"));
    let mut ar = w.con(0, a_replica).await;
    let tag = (0..)
        .map(|n| format!("t{n}"))
        .find(|t| key_slot(t.as_bytes()) < 8192)
        .unwrap();
    let slot = key_slot(tag.as_bytes());
    let keep = (0..)
        .map(|n| format!("keep{n}"))
        .find(|k| {
            let s = key_slot(k.as_bytes());
            s < 8192 && s != slot
        })
        .unwrap();

    // 1. The slot's keys, written in both regions; A, its replica and C hold them all.
    let want = expected(&tag);
    for i in 0..20 {
        let () = q!(c, "SET", format!("{{{tag}}}:c{i}"), format!("from-c-{i}")).unwrap();
        let () = q!(a, "SET", format!("{{{tag}}}:a{i}"), format!("from-a-{i}")).unwrap();
    }
    let _: i64 = q!(a, "INCRBY", format!("{{{tag}}}:n"), 3).unwrap();
    let _: i64 = q!(c, "INCRBY", format!("{{{tag}}}:n"), 4).unwrap();
    let () = q!(a, "SET", &keep, "stays").unwrap();
    for con in [&mut a, &mut c] {
        let acked: i64 = q!(*con, "MERIDIAN.WAITREGIONS", 1, 10_000).unwrap();
        assert_eq!(acked, 1, "the other region acknowledged");
    }
    assert!(
        until(|| {
            let (mut a, want) = (a.clone(), want.clone());
            async move { holds_all(&mut a, &want).await }
        })
        .await,
        "A holds every key"
    );
    let _: i64 = q!(a, "WAIT", 1, 5000).unwrap();
    let held = want.len() as i64;
    assert!(
        until(|| {
            let mut ar = ar.clone();
            async move { count_in_slot(&mut ar, slot).await == held }
        })
        .await,
        "A's replica holds every key"
    );
    assert!(holds_all(&mut c, &want).await, "C holds every key");
    assert_eq!(count_in_slot(&mut a, slot).await, held);

    // 2. The slot moves to B without MIGRATE: A's copies stay behind.
    for (con, who) in [(&mut b, "B"), (&mut a, "A")] {
        let r: String = q!(*con, "CLUSTER", "SETSLOT", slot, "NODE", &b_name)
            .unwrap_or_else(|e| panic!("SETSLOT on {who}: {e}"));
        assert_eq!(r, "OK");
    }
    let moved = Instant::now();
    let e = common::err(&mut a, &["GET", &want[0].0]).await;
    assert!(e.starts_with(&format!("MOVED {slot} ")), "{e}");
    assert_eq!(
        count_in_slot(&mut a, slot).await,
        held,
        "the grace has not passed yet"
    );

    // 3. C learns the new owner and syncs the slot to B, which serves every key.
    assert!(
        until(|| {
            let (mut b, want) = (b.clone(), want.clone());
            async move { holds_all(&mut b, &want).await }
        })
        .await,
        "B serves every key of the slot"
    );

    // 4. After the grace, A and its replica no longer hold the slot's keys; nothing else
    //    changed anywhere.
    let purged =
        until(|| {
            let (mut a, mut ar) = (a.clone(), ar.clone());
            async move {
                count_in_slot(&mut a, slot).await == 0 && count_in_slot(&mut ar, slot).await == 0
            }
        })
        .await;
    assert!(
        purged,
        "A still holds {} keys of slot {slot}, its replica {} (A's INFO cluster: {:?})",
        count_in_slot(&mut a, slot).await,
        count_in_slot(&mut ar, slot).await,
        q!(a, "INFO", "cluster").unwrap_or_else(|_| String::new()),
    );
    assert!(
        moved.elapsed() >= Duration::from_secs(3),
        "purged after {:?}, before the grace",
        moved.elapsed()
    );
    assert_eq!(dbsize(&mut a).await, 1, "A keeps its own slots' keys");
    assert_eq!(dbsize(&mut ar).await, 1, "so does its replica");
    let v: Option<String> = q!(a, "GET", &keep).unwrap();
    assert_eq!(v.as_deref(), Some("stays"));
    let info: String = q!(a, "INFO", "keyspace").unwrap();
    assert!(info.contains("db0:keys=1,"), "{info}");
    assert!(cluster_info(&mut a, "cluster_stale_keys_purged").await >= held as u64);
    assert!(cluster_info(&mut ar, "cluster_stale_keys_purged").await >= held as u64);
    assert_eq!(cluster_info(&mut a, "cluster_stale_keys").await, 0);
    assert_eq!(cluster_info(&mut b, "cluster_stale_keys_purged").await, 0);
    assert!(holds_all(&mut b, &want).await, "B still serves every key");
    assert!(
        holds_all(&mut c, &want).await,
        "C still has every key: nothing was replicated"
    );
    assert_eq!(count_in_slot(&mut b, slot).await, held);

    // 5. An aborted import leaves the only copy of a key on B, in a slot B never owned: kept.
    let tag2 = (0..)
        .map(|n| format!("u{n}"))
        .find(|t| {
            let s = key_slot(t.as_bytes());
            s < 8192 && s != slot && s != key_slot(keep.as_bytes())
        })
        .unwrap();
    let (slot2, orphan) = (key_slot(tag2.as_bytes()), format!("{{{tag2}}}:orphan"));
    let () = q!(a, "SET", &orphan, "only-on-b").unwrap();
    let r: String = q!(b, "CLUSTER", "SETSLOT", slot2, "IMPORTING", &a_name).unwrap();
    assert_eq!(r, "OK");
    let r: String = q!(a, "CLUSTER", "SETSLOT", slot2, "MIGRATING", &b_name).unwrap();
    assert_eq!(r, "OK");
    let b_addr = w.node(0, 1).addr;
    let r: String = q!(
        a,
        "MIGRATE",
        b_addr.ip().to_string(),
        b_addr.port(),
        "",
        0,
        5000,
        "KEYS",
        &orphan
    )
    .unwrap();
    assert_eq!(r, "OK");
    for con in [&mut b, &mut a] {
        let r: String = q!(*con, "CLUSTER", "SETSLOT", slot2, "STABLE").unwrap();
        assert_eq!(r, "OK");
    }
    assert_eq!(
        count_in_slot(&mut a, slot2).await,
        0,
        "MIGRATE took it out of A"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        count_in_slot(&mut b, slot2).await,
        1,
        "B kept the only copy of a key in a slot it never owned"
    );
    assert_eq!(cluster_info(&mut b, "cluster_stale_keys_purged").await, 0);

    // 6. A restart replays A's log: the removals hold.
    w.stop(0, 0).await;
    w.start_again(0, 0).await;
    let mut a = w.con(0, 0).await;
    assert_eq!(
        count_in_slot(&mut a, slot).await,
        0,
        "the log brought the keys back"
    );
    // Besides `keep`, only the orphan may be back by now: slot2 is A's, and the repair of A's
    // new session with region C (which holds the orphan) sends it.
    let orphans = count_in_slot(&mut a, slot2).await;
    assert!(orphans <= 1, "{orphans} keys in slot {slot2}");
    assert_eq!(dbsize(&mut a).await - orphans, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count_in_slot(&mut a, slot).await, 0);
    let v: Option<String> = q!(a, "GET", &keep).unwrap();
    assert_eq!(v.as_deref(), Some("stays"));
    assert_eq!(
        common::err(&mut a, &["GET", &want[0].0]).await,
        format!("MOVED {slot} {}", w.node(0, 1).hostport())
    );
    w.shutdown().await;
}
