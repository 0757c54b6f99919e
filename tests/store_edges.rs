//! Store edge cases found while proving the CRDT laws: anti-entropy after tombstone
//! collection in standalone mode, a delayed concurrent increment surviving collection, drift
//! measured against the node's own clock, and zero increments.
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
