//! Store edge cases found while proving the CRDT laws: anti-entropy after tombstone
//! collection in standalone mode, a delayed concurrent increment surviving collection, drift
//! measured against the node's own clock, zero increments, and register writes on a key the
//! writer collected or evicted (floors: docs/semantics.md).
use meridian::clock::{unix_ms, Hlc};
use meridian::crdt::Stamp;
use meridian::store::{key_slot, Delta, DeltaSink, Keyspace, MergeOutcome, Origin, Ttl};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uhlc::NTP64;

#[derive(Default)]
struct Outbox(Mutex<Vec<Delta>>);
impl DeltaSink for Outbox {
    fn publish(&self, d: Vec<Delta>, _: Origin) {
        self.0.lock().unwrap().extend(d);
    }
}
fn region(node: u64) -> (Keyspace, Arc<Outbox>) {
    let out = Arc::new(Outbox::default());
    let sink: Arc<dyn DeltaSink> = out.clone();
    (
        Keyspace::new(
            Arc::new(Hlc::new(node, Duration::from_millis(500))),
            Some(sink),
        ),
        out,
    )
}
fn read(ks: &Keyspace, k: &str) -> Option<Vec<u8>> {
    let mut t = ks.lock([k]);
    let v = t.key(k.as_bytes()).read().map(|v| v.into_owned());
    v
}

/// Asserts that every region (a, b, c... in order) reads `want` at `key`.
fn reads_everywhere(regions: &[&Keyspace], key: &str, want: Option<&[u8]>) {
    for (i, r) in regions.iter().enumerate() {
        let name = char::from(b'a' + i as u8);
        assert_eq!(
            read(r, key).as_deref(),
            want,
            "{name}: {:?}",
            r.entry(key.as_bytes())
        );
    }
}

/// Region 1 SETs a key; the delta is lost. Region 2 deletes an unrelated key and runs its
/// collector (grace 50 ms). Anti-entropy then sends region 1's full state of the first key:
/// region 2 drops it as Stale, and the regions never converge.
#[test]
fn anti_entropy_repairs_a_key_whose_delta_was_lost_before_a_collection_cycle() {
    let (r1, o1) = region(1);
    let (r2, o2) = region(2);
    r2.set_tombstone_grace_ms(50);
    r1.lock(["k"])
        .key(b"k")
        .set(b"v".to_vec().into(), Ttl::Clear);
    o1.0.lock().unwrap().clear(); // lost
    r2.lock(["other"])
        .key(b"other")
        .set(b"x".to_vec().into(), Ttl::Clear);
    r2.lock(["other"]).key(b"other").delete();
    o2.0.lock().unwrap().clear();
    std::thread::sleep(Duration::from_millis(100));
    r2.expire_cycle(usize::MAX);
    let mut outcomes = vec![];
    for (key, e) in r1.slot_entries(key_slot(b"k")) {
        outcomes.push(r2.merge(&key, &e.to_delta()).0);
    }
    assert_eq!(read(&r1, "k"), Some(b"v".to_vec()));
    assert_eq!(
        outcomes,
        vec![MergeOutcome::Changed],
        "anti-entropy of a live key was dropped"
    );
    assert_eq!(read(&r2, "k"), Some(b"v".to_vec()));
}

fn slow_clock() -> NTP64 {
    uhlc::system_time_clock() - NTP64::from(Duration::from_secs(2))
}

/// A node whose physical clock is 2 s slow receives a stamp from a correct node: that stamp is
/// 2 s ahead of its physical clock, beyond max_clock_drift, so it should alarm.
#[test]
fn drift_is_measured_against_the_nodes_own_physical_clock() {
    let slow = Hlc::with_clock(2, Duration::from_millis(500), slow_clock);
    let s = Hlc::new(1, Duration::from_millis(500)).now();
    assert!(
        slow.observe(s).is_err(),
        "stamp 2 s ahead of the slow clock raised no alarm"
    );
    let _ = (unix_ms(), Stamp::ZERO);
}

/// Region 1 DELs a counter while region 2 concurrently INCRBYs it; region 2's delta is delayed
/// past the tombstone grace and region 1's collector runs meanwhile. DESIGN: DEL ∥ INCRBY x → x.
#[test]
fn a_delayed_concurrent_increment_survives_tombstone_collection() {
    let (r1, o1) = region(1);
    let (r2, o2) = region(2);
    r1.set_tombstone_grace_ms(50);
    r1.lock(["c"]).key(b"c").add_int(10);
    for d in o1.0.lock().unwrap().drain(..) {
        r2.merge(&d.key, &d.entry);
    }
    r1.lock(["c"]).key(b"c").delete();
    r2.lock(["c"]).key(b"c").add_int(3); // concurrent with the DEL
    for d in o1.0.lock().unwrap().drain(..) {
        r2.merge(&d.key, &d.entry);
    }
    assert_eq!(read(&r2, "c"), Some(b"3".to_vec()));
    std::thread::sleep(Duration::from_millis(100)); // region 2's delta is in flight
    r1.expire_cycle(usize::MAX);
    let late: Vec<Delta> = o2.0.lock().unwrap().drain(..).collect();
    let outcomes: Vec<_> = late.iter().map(|d| r1.merge(&d.key, &d.entry).0).collect();
    assert_eq!(
        read(&r1, "c"),
        Some(b"3".to_vec()),
        "increment lost: {outcomes:?}"
    );
}

#[test]
fn incrby_zero_creates_a_missing_key_and_is_silent_on_an_existing_one() {
    let (r1, o1) = region(1);
    r1.lock(["z"]).key(b"z").add_int(0);
    assert_eq!(
        read(&r1, "z"),
        Some(b"0".to_vec()),
        "INCRBY z 0 creates \"0\" like Redis"
    );
    assert_eq!(
        o1.0.lock().unwrap().drain(..).count(),
        1,
        "one register write published"
    );
    r1.lock(["z"]).key(b"z").add_int(5);
    o1.0.lock().unwrap().clear();
    r1.lock(["z"]).key(b"z").add_int(0);
    r1.lock(["z"]).key(b"z").add_float(0.0);
    let out: Vec<Delta> = o1.0.lock().unwrap().drain(..).collect();
    assert!(
        out.is_empty(),
        "adding zero to a live key published {out:?}"
    );
    assert_eq!(read(&r1, "z"), Some(b"5".to_vec()));
}

/// The demo's counter bug (docs/operations.md, "Found by the demo"). Region a's actor counts
/// 1; region b deletes the key, observing it; a collects the tombstone while c, whose collector
/// lags, still holds it. a counts again: the key is new on a, which answers 1. c must answer 1
/// too, whether it gets a's delta or a's full entry (what replication ships). Before counters
/// had epochs, a's totals restarted at 1, which c's tombstone had already observed: c answered
/// nil.
#[test]
fn an_increment_after_tombstone_collection_shows_where_the_tombstone_is_still_held() {
    let (a, oa) = region(1);
    let (b, ob) = region(2);
    let (c, _) = region(3);
    let (d, _) = region(4);
    a.set_tombstone_grace_ms(50);
    c.set_tombstone_grace_ms(600_000);
    d.set_tombstone_grace_ms(600_000);
    let full = |from: &Keyspace| from.entry(b"k").expect("held").to_delta();
    a.lock(["k"]).key(b"k").add_int(1);
    for r in [&b, &c, &d] {
        r.merge(b"k", &full(&a));
    }
    assert!(b.lock(["k"]).key(b"k").delete());
    for r in [&a, &c, &d] {
        r.merge(b"k", &full(&b));
    }
    reads_everywhere(&[&a, &b, &c, &d], "k", None);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        a.expire_cycle(usize::MAX).collected,
        1,
        "a collects the tombstone"
    );
    assert_eq!(c.expire_cycle(usize::MAX).collected, 0, "c still holds it");
    assert!(a.entry(b"k").is_none());
    oa.0.lock().unwrap().clear();
    ob.0.lock().unwrap().clear();
    a.lock(["k"]).key(b"k").add_int(1);
    assert_eq!(read(&a, "k"), Some(b"1".to_vec()));
    let delta: Vec<Delta> = oa.0.lock().unwrap().drain(..).collect();
    assert_eq!(delta.len(), 1);
    c.merge(b"k", &delta[0].entry);
    d.merge(b"k", &full(&a));
    b.merge(b"k", &full(&a));
    for (name, r) in [
        ("c, from the delta", &c),
        ("d, from the entry", &d),
        ("b", &b),
    ] {
        assert_eq!(
            read(r, "k"),
            Some(b"1".to_vec()),
            "{name}: {:?}",
            r.entry(b"k")
        );
    }
    // Counting on continues the new epoch everywhere; a DEL observes it all.
    a.lock(["k"]).key(b"k").add_int(2);
    c.merge(b"k", &full(&a));
    assert_eq!(read(&c, "k"), Some(b"3".to_vec()));
    assert!(c.lock(["k"]).key(b"k").delete());
    a.merge(b"k", &full(&c));
    assert_eq!((read(&a, "k"), read(&c, "k")), (None, None));
}

/// Delivers every published delta to every other region until none is left (deltas moved by
/// hand; a merge that changes something publishes again, one that does not stays quiet).
fn pump(regions: &[(&Keyspace, &Outbox)]) {
    for _ in 0..16 {
        let mut moved = false;
        for (i, (_, out)) in regions.iter().enumerate() {
            let deltas: Vec<Delta> = out.0.lock().unwrap().drain(..).collect();
            for d in deltas {
                moved = true;
                for (j, (r, _)) in regions.iter().enumerate() {
                    if i != j {
                        r.merge(&d.key, &d.entry);
                    }
                }
            }
        }
        if !moved {
            return;
        }
    }
    panic!("deltas kept flowing");
}

/// Region b's actor counts 3; a DEL in a observes them; a collects the tombstone while b and c
/// (whose collectors lag) still hold it. Returns the three regions with their outboxes drained.
fn counted_deleted_collected(key: &str) -> [(Keyspace, Arc<Outbox>); 3] {
    let (a, oa) = region(1);
    let (b, ob) = region(2);
    let (c, oc) = region(3);
    a.set_tombstone_grace_ms(50);
    b.set_tombstone_grace_ms(600_000);
    c.set_tombstone_grace_ms(600_000);
    let k = key.as_bytes();
    b.lock([key]).key(k).add_int(3);
    pump(&[(&a, &oa), (&b, &ob), (&c, &oc)]);
    assert_eq!(read(&c, key), Some(b"3".to_vec()));
    assert!(a.lock([key]).key(k).delete());
    pump(&[(&a, &oa), (&b, &ob), (&c, &oc)]);
    reads_everywhere(&[&a, &b, &c], key, None);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(a.expire_cycle(usize::MAX).collected, 1, "a collects");
    assert_eq!(c.expire_cycle(usize::MAX).collected, 0, "c still holds it");
    assert!(a.entry(k).is_none() && b.entry(k).is_some() && c.entry(k).is_some());
    [(a, oa), (b, ob), (c, oc)]
}

/// docs/operations.md, "a register write on a key its node no longer holds": after the DEL
/// (which observed b's 3) and the collection, `SET k 5` in a must read 5 in every region. Before
/// floors, b and c took the SET with nothing observed and answered 8, and so did a once it
/// merged their entry.
#[test]
fn a_register_write_after_collection_observes_what_the_collected_tombstone_observed() {
    let [(a, oa), (b, ob), (c, oc)] = counted_deleted_collected("k");
    a.lock(["k"])
        .key(b"k")
        .set(b"5".to_vec().into(), Ttl::Clear);
    let set: Vec<Delta> = oa.0.lock().unwrap().drain(..).collect();
    assert_eq!(set.len(), 1);
    let floor = set[0].entry.register.as_ref().unwrap().floor;
    assert!(floor > 0, "the write carries the ghost's floor");
    c.merge(b"k", &set[0].entry);
    b.merge(b"k", &set[0].entry);
    reads_everywhere(&[&a, &b, &c], "k", Some(b"5"));
    // a learns what the tombstone observed (b and c share their entries), and then merges
    // their entries in full, as anti-entropy would: still 5.
    pump(&[(&a, &oa), (&b, &ob), (&c, &oc)]);
    for r in [&b, &c] {
        a.merge(b"k", &r.entry(b"k").unwrap().to_delta());
    }
    assert_eq!(read(&a, "k"), Some(b"5".to_vec()), "{:?}", a.entry(b"k"));
    assert!(
        !a.entry(b"k").unwrap().settled().is_empty(),
        "a learnt the settled totals"
    );
    // The next write of the key, anywhere, inherits the floor: it observes what the first did.
    b.merge(b"k", &a.entry(b"k").unwrap().to_delta());
    b.lock(["k"])
        .key(b"k")
        .set(b"6".to_vec().into(), Ttl::Clear);
    let next: Vec<Delta> = ob.0.lock().unwrap().drain(..).collect();
    assert_eq!(next[0].entry.register.as_ref().unwrap().floor, floor);
    c.merge(b"k", &next[0].entry);
    assert_eq!(read(&c, "k"), Some(b"6".to_vec()));
}

/// The same, with increments concurrent with the SET: b's (its actor, counting on past the 3
/// the DEL observed) and c's (a new actor). They were observed by nothing, so they add: 50 + 1
/// + 2 in every region. Before floors: 56, the 3 came back.
#[test]
fn increments_concurrent_with_a_write_after_collection_still_add() {
    let [(a, oa), (b, ob), (c, oc)] = counted_deleted_collected("n");
    a.lock(["n"])
        .key(b"n")
        .set(b"50".to_vec().into(), Ttl::Clear);
    b.lock(["n"]).key(b"n").add_int(1);
    c.lock(["n"]).key(b"n").add_int(2);
    pump(&[(&a, &oa), (&b, &ob), (&c, &oc)]);
    reads_everywhere(&[&a, &b, &c], "n", Some(b"53"));
    let digests: Vec<u64> = [&a, &b, &c]
        .iter()
        .map(|r| r.entry(b"n").unwrap().digest())
        .collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "one state");
}

/// The eviction variant: b counts 3 and a holds the key (live); a evicts it, then `SET e 5`.
/// The write must observe b's 3 as it would have before the eviction. Before, only a's own
/// totals came back from the eviction floor, the write observed nothing, and b and c read 8.
#[test]
fn a_register_write_after_eviction_observes_every_actors_totals() {
    use meridian::store::{EvictionSettings, Policy};
    let (a, oa) = region(1);
    let (b, ob) = region(2);
    let (c, oc) = region(3);
    b.lock(["e"]).key(b"e").add_int(3);
    pump(&[(&a, &oa), (&b, &ob), (&c, &oc)]);
    let limit = |maxmemory| EvictionSettings {
        maxmemory,
        policy: Policy::AllkeysRandom,
        samples: 5,
        lfu_log_factor: 10,
        lfu_decay_time: 1,
    };
    a.evict.configure(limit(1));
    let _ = a.ensure_memory();
    a.evict.configure(limit(0));
    assert!(a.entry(b"e").is_none(), "a evicted the key");
    a.lock(["e"])
        .key(b"e")
        .set(b"5".to_vec().into(), Ttl::Clear);
    pump(&[(&a, &oa), (&b, &ob), (&c, &oc)]);
    reads_everywhere(&[&a, &b, &c], "e", Some(b"5"));
}

/// After a collects its counter entry and writes the key again, a late duplicate brings back
/// an old contribution of a's own actor (5 of the 7 it had counted). a's next INCR must open a
/// new epoch, not continue from 5: continued, its totals (6) stay under the 7 the other regions
/// hold and the increment vanishes (10, not 11, everywhere).
#[test]
fn an_increment_after_a_late_duplicate_of_its_own_old_totals_is_not_lost() {
    let (a, oa) = region(1);
    let (b, ob) = region(2);
    let (c, oc) = region(3);
    a.set_tombstone_grace_ms(50);
    a.lock(["d"]).key(b"d").add_int(5);
    let old: Vec<Delta> = oa.0.lock().unwrap().clone();
    a.lock(["d"]).key(b"d").add_int(2);
    pump(&[(&a, &oa), (&b, &ob), (&c, &oc)]);
    assert!(a.lock(["d"]).key(b"d").delete());
    pump(&[(&a, &oa), (&b, &ob), (&c, &oc)]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(a.expire_cycle(usize::MAX).collected, 1);
    a.lock(["d"])
        .key(b"d")
        .set(b"10".to_vec().into(), Ttl::Clear);
    let set: Vec<Delta> = oa.0.lock().unwrap().drain(..).collect();
    for r in [&b, &c] {
        r.merge(b"d", &set[0].entry);
    }
    a.merge(b"d", &old[0].entry); // the late duplicate
    a.lock(["d"]).key(b"d").add_int(1);
    pump(&[(&a, &oa), (&b, &ob), (&c, &oc)]);
    reads_everywhere(&[&a, &b, &c], "d", Some(b"11"));
}

/// docs/operations.md, "an increment in a region still holding the tombstone": after the DEL
/// (which observed b's 3) and a's collection, b counts on. b and c read 1 (4 counted, 3 of them
/// observed by the DEL); a, which holds nothing of the key, must read 1 too, from the deltas
/// alone. Before, b's delta carried its contribution only and a read 4 until a repair.
#[test]
fn an_increment_after_a_delete_reaches_a_region_that_collected_it_with_the_tombstone() {
    let [(a, oa), (b, ob), (c, oc)] = counted_deleted_collected("k");
    b.lock(["k"]).key(b"k").add_int(1);
    c.lock(["k"]).key(b"k").add_int(2);
    pump(&[(&a, &oa), (&b, &ob), (&c, &oc)]);
    reads_everywhere(&[&a, &b, &c], "k", Some(b"3"));
    // An increment of a key that was never deleted still ships the contribution alone.
    b.lock(["n"]).key(b"n").add_int(1);
    b.lock(["n"]).key(b"n").add_int(1);
    let d: Vec<Delta> = ob.0.lock().unwrap().drain(..).collect();
    assert!(d.iter().all(|d| d.entry.register.is_none()), "{d:?}");
}
