//! The conflict table of DESIGN.md §2, row by row, with two regions simulated in one process.
//!
//! Each region is a `Keyspace` with its own `Hlc` (node IDs 1 and 2) and a `DeltaSink` that
//! collects the deltas its writes produce. Ops go through the store API (`lock`/`key`/`set`/
//! `delete`/`add_int`/`add_float`/`set_deadline`); concurrent means "issued before the other
//! region's deltas arrived". [`World::converge`] then exchanges the deltas with
//! `Keyspace::merge` — region 2 gets region 1's in order, region 1 gets region 2's reversed and
//! twice — and feeds three observer keyspaces the same deltas in production order, in reverse
//! with duplicates, and with every other delta lost and repaired from full state
//! (`slot_entries`, `entry(k).to_delta()`). It asserts all five hold identical entries and read
//! identical bytes; each test then asserts what those bytes are.
//!
//! Which of two concurrent ops has the larger stamp is made deterministic by giving one region a
//! physical clock 2 s fast (`Hlc::with_clock`): its concurrent writes carry the larger stamps.
//! Most rows run both ways. Also proved: a causally later write wins even against a fast clock,
//! a late or duplicated delta never resurrects an expired or deleted key, and once a tombstone
//! is collected an old delta for it is dropped as `MergeOutcome::Stale`.

use meridian::clock::{unix_ms, Hlc};
use meridian::crdt::{Entry, Stamp};
use meridian::store::{key_slot, Delta, DeltaSink, Keyspace, MergeOutcome, Origin, Ttl};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::Duration;
use uhlc::NTP64;

const DRIFT: Duration = Duration::from_millis(500);
const HOUR_MS: u64 = 3_600_000;

/// A physical clock 2 s ahead of the system clock.
fn fast_clock() -> NTP64 {
    uhlc::system_time_clock() + NTP64::from(Duration::from_secs(2))
}

#[derive(Default)]
struct Outbox(Mutex<Vec<Delta>>);

impl DeltaSink for Outbox {
    fn publish(&self, deltas: Vec<Delta>, _: Origin) {
        self.0.lock().unwrap().extend(deltas);
    }
}

fn read(ks: &Keyspace, k: &str) -> Option<Vec<u8>> {
    let mut txn = ks.lock([k]);
    let v = txn.key(k.as_bytes()).read().map(|v| v.into_owned());
    v
}

fn some(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

struct Region {
    ks: Keyspace,
    out: Arc<Outbox>,
}

impl Region {
    fn new(hlc: Hlc) -> Self {
        let out = Arc::new(Outbox::default());
        let sink: Arc<dyn DeltaSink> = out.clone();
        Region {
            ks: Keyspace::new(Arc::new(hlc), Some(sink)),
            out,
        }
    }

    fn set(&self, k: &str, v: &str, ttl: Ttl) {
        let mut txn = self.ks.lock([k]);
        txn.key(k.as_bytes()).set(v.as_bytes().into(), ttl);
    }

    fn del(&self, k: &str) -> bool {
        let mut txn = self.ks.lock([k]);
        let existed = txn.key(k.as_bytes()).delete();
        existed
    }

    fn incrby(&self, k: &str, by: i64) {
        let mut txn = self.ks.lock([k]);
        txn.key(k.as_bytes()).add_int(by);
    }

    fn incrbyfloat(&self, k: &str, by: f64) {
        let mut txn = self.ks.lock([k]);
        txn.key(k.as_bytes()).add_float(by);
    }

    /// APPEND: a read-modify-write of the whole register, keeping the TTL.
    fn append(&self, k: &str, suffix: &str) {
        let mut txn = self.ks.lock([k]);
        let mut key = txn.key(k.as_bytes());
        let mut v = key.value().map(|v| v.into_owned()).unwrap_or_default();
        v.extend_from_slice(suffix.as_bytes());
        key.set(v.into(), Ttl::Keep);
    }

    /// EXPIREAT (Some) or PERSIST (None) on a live key.
    fn expire(&self, k: &str, deadline_ms: Option<u64>) {
        let mut txn = self.ks.lock([k]);
        let mut key = txn.key(k.as_bytes());
        assert!(key.exists(), "EXPIRE/PERSIST need a live key");
        key.set_deadline(deadline_ms);
    }

    fn get(&self, k: &str) -> Option<Vec<u8>> {
        read(&self.ks, k)
    }

    /// `None`: no key; `Some(None)`: no TTL.
    fn deadline(&self, k: &str) -> Option<Option<u64>> {
        let mut txn = self.ks.lock([k]);
        let d = txn.key(k.as_bytes()).deadline();
        d
    }

    fn stamp(&self, k: &str) -> Stamp {
        self.ks
            .entry(k.as_bytes())
            .expect("key held")
            .register_stamp()
    }

    /// Drains the deltas produced since the last call.
    fn take(&self) -> Vec<Delta> {
        std::mem::take(&mut *self.out.0.lock().unwrap())
    }

    /// Applies deltas whose sender promised everything up to `delivered` already arrived.
    fn apply_promised<'a>(
        &self,
        deltas: impl IntoIterator<Item = &'a Delta>,
        delivered: u64,
    ) -> Vec<MergeOutcome> {
        deltas
            .into_iter()
            .map(|d| {
                self.ks
                    .merge_from(Origin::Peer(2), &d.key, &d.entry, delivered)
                    .0
            })
            .collect()
    }

    fn apply<'a>(&self, deltas: impl IntoIterator<Item = &'a Delta>) -> Vec<MergeOutcome> {
        deltas
            .into_iter()
            .map(|d| self.ks.merge(&d.key, &d.entry).0)
            .collect()
    }
}

struct World {
    r1: Region,
    r2: Region,
    /// 1 or 2: the region whose physical clock is 2 s fast (0: neither).
    fast: u8,
    observers: [Keyspace; 3],
}

impl World {
    fn new(fast: u8) -> Self {
        let hlc = |node: u64| {
            if fast as u64 == node {
                Hlc::with_clock(node, DRIFT, fast_clock)
            } else {
                Hlc::new(node, DRIFT)
            }
        };
        let observer = |node| Keyspace::new(Arc::new(Hlc::new(node, DRIFT)), None);
        World {
            r1: Region::new(hlc(1)),
            r2: Region::new(hlc(2)),
            fast,
            observers: [observer(11), observer(12), observer(13)],
        }
    }

    /// The region whose concurrent writes carry the larger stamps.
    fn fast(&self) -> &Region {
        if self.fast == 1 {
            &self.r1
        } else {
            &self.r2
        }
    }

    fn slow(&self) -> &Region {
        if self.fast == 1 {
            &self.r2
        } else {
            &self.r1
        }
    }

    /// Exchanges every pending delta (see the module doc) and asserts all replicas agree on `keys`.
    fn converge(&self, keys: &[&str]) {
        let (d1, d2) = (self.r1.take(), self.r2.take());
        self.r2.apply(&d1);
        self.r1.apply(d2.iter().rev().chain(&d2));
        let all: Vec<&Delta> = d1.iter().chain(&d2).collect();
        let [in_order, reversed, lossy] = &self.observers;
        for d in &all {
            in_order.merge(&d.key, &d.entry);
        }
        for d in all.iter().rev() {
            reversed.merge(&d.key, &d.entry);
            reversed.merge(&d.key, &d.entry);
        }
        for d in all.iter().step_by(2) {
            lossy.merge(&d.key, &d.entry);
        }
        for k in keys {
            for (key, entry) in self.r1.ks.slot_entries(key_slot(k.as_bytes())) {
                lossy.merge(&key, &entry.to_delta());
            }
            if let Some(e) = self.r2.ks.entry(k.as_bytes()) {
                lossy.merge(k.as_bytes(), &e.to_delta());
            }
        }
        for k in keys {
            let entry: Option<Entry> = self.r1.ks.entry(k.as_bytes());
            let value = self.r1.get(k);
            assert_eq!(self.r2.ks.entry(k.as_bytes()), entry, "region 2, key {k}");
            assert_eq!(self.r2.get(k), value, "region 2 reads, key {k}");
            for (i, o) in self.observers.iter().enumerate() {
                assert_eq!(o.entry(k.as_bytes()), entry, "observer {i}, key {k}");
                assert_eq!(read(o, k), value, "observer {i} reads, key {k}");
            }
        }
    }
}

#[test]
fn set_vs_set_the_larger_stamp_wins() {
    for fast in [1, 2] {
        let w = World::new(fast);
        // Region 1 writes first in real time; only the stamps decide.
        w.r1.set("k", "from-1", Ttl::Clear);
        w.r2.set("k", "from-2", Ttl::Clear);
        let (s1, s2) = (w.r1.stamp("k"), w.r2.stamp("k"));
        let winner = if s1 > s2 { "from-1" } else { "from-2" };
        assert_eq!(
            winner,
            format!("from-{fast}"),
            "the fast region stamps larger"
        );
        w.converge(&["k"]);
        assert_eq!(w.r1.get("k"), some(winner), "fast region {fast}");
    }
}

#[test]
fn set_vs_del_the_larger_stamp_wins() {
    for fast in [1, 2] {
        let w = World::new(fast);
        w.r1.set("k", "old", Ttl::Clear);
        w.converge(&["k"]);
        assert!(w.r1.del("k"));
        w.r2.set("k", "new", Ttl::Clear);
        let del_wins = w.r1.stamp("k") > w.r2.stamp("k");
        assert_eq!(del_wins, fast == 1);
        w.converge(&["k"]);
        let want = if del_wins { None } else { some("new") };
        assert_eq!(w.r1.get("k"), want, "fast region {fast}");
    }
}

#[test]
fn incrby_vs_incrby_adds_both() {
    let w = World::new(0);
    w.r1.set("k", "10", Ttl::Clear);
    w.converge(&["k"]);
    w.r1.incrby("k", 5);
    w.r2.incrby("k", -3);
    w.r2.incrby("k", 7);
    w.r1.incrby("fresh", 2);
    w.r2.incrby("fresh", 3);
    assert_eq!(w.r1.get("k"), some("15"), "region 1 sees its own increment");
    assert_eq!(
        w.r2.get("k"),
        some("14"),
        "region 2 sees its own increments"
    );
    w.converge(&["k", "fresh"]);
    assert_eq!(w.r1.get("k"), some("19"), "no increment is lost");
    assert_eq!(w.r1.get("fresh"), some("5"));
}

#[test]
fn set_vs_incrby_adds_to_an_integer_and_keeps_a_string() {
    // fast = 1: the SET has the larger stamp; fast = 2: the INCRBY has.
    for fast in [1, 2] {
        let w = World::new(fast);
        w.r1.set("n", "1", Ttl::Clear);
        w.r1.set("s", "1", Ttl::Clear);
        w.converge(&["n", "s"]);
        w.r1.set("n", "100", Ttl::Clear);
        w.r2.incrby("n", 5);
        w.r1.set("s", "abc", Ttl::Clear);
        w.r2.incrby("s", 5);
        w.converge(&["n", "s"]);
        assert_eq!(w.r1.get("n"), some("105"), "fast region {fast}");
        assert_eq!(w.r1.get("s"), some("abc"), "fast region {fast}");
    }
}

#[test]
fn del_vs_incrby_keeps_only_the_unobserved_increment() {
    for fast in [1, 2] {
        let w = World::new(fast);
        w.r1.incrby("c", 10);
        w.r1.set("s", "10", Ttl::Clear);
        w.converge(&["c", "s"]);
        assert_eq!(w.r2.get("c"), some("10"));
        assert!(w.r1.del("c"));
        assert!(w.r1.del("s"));
        w.r2.incrby("c", 3);
        w.r2.incrby("s", 3);
        w.converge(&["c", "s"]);
        assert_eq!(w.r1.get("c"), some("3"), "fast region {fast}");
        assert_eq!(w.r1.get("s"), some("3"), "fast region {fast}");
    }
}

#[test]
fn incrbyfloat_vs_incrbyfloat_gives_identical_bytes() {
    let w = World::new(0);
    w.r1.set("f", "10.5", Ttl::Clear);
    w.r1.set("m", "10", Ttl::Clear);
    w.converge(&["f", "m"]);
    w.r1.incrbyfloat("f", 0.1);
    w.r2.incrbyfloat("f", 0.2);
    assert_eq!(w.r1.get("f"), some("10.6"));
    assert_eq!(w.r2.get("f"), some("10.7"));
    w.converge(&["f"]);
    assert_eq!(w.r1.get("f"), some("10.8"));
    w.r1.incrbyfloat("f", 0.1);
    w.r1.incrbyfloat("f", 0.1);
    w.r2.incrbyfloat("f", -0.05);
    // Mixed: an integer increment concurrent with a float one.
    w.r1.incrby("m", 1);
    w.r2.incrbyfloat("m", 0.5);
    w.converge(&["f", "m"]);
    assert_eq!(w.r1.get("f"), some("10.95"));
    assert_eq!(w.r1.get("m"), some("11.5"));
}

#[test]
fn append_vs_append_is_whole_value_last_writer_wins() {
    for fast in [1, 2] {
        let w = World::new(fast);
        let deadline = unix_ms() + HOUR_MS;
        w.r1.set("k", "base", Ttl::At(deadline));
        w.converge(&["k"]);
        w.r1.append("k", "-x");
        w.r2.append("k", "-y");
        w.converge(&["k"]);
        let want = if fast == 1 { "base-x" } else { "base-y" };
        assert_eq!(
            w.r1.get("k"),
            some(want),
            "one whole value, never both suffixes"
        );
        assert_eq!(
            w.r1.deadline("k"),
            Some(Some(deadline)),
            "APPEND keeps the TTL"
        );
    }
}

#[test]
fn expire_vs_expire_the_later_stamp_decides_not_the_longer_ttl() {
    for fast in [1, 2] {
        let w = World::new(fast);
        let (short, long) = (unix_ms() + HOUR_MS, unix_ms() + 2 * HOUR_MS);
        w.r1.set("a", "v", Ttl::Clear);
        w.r1.set("b", "v", Ttl::Clear);
        w.converge(&["a", "b"]);
        w.fast().expire("a", Some(short));
        w.slow().expire("a", Some(long));
        w.fast().expire("b", Some(long));
        w.slow().expire("b", Some(short));
        w.converge(&["a", "b"]);
        assert_eq!(w.r1.deadline("a"), Some(Some(short)), "fast region {fast}");
        assert_eq!(w.r1.deadline("b"), Some(Some(long)), "fast region {fast}");
    }
}

#[test]
fn expire_vs_persist_the_later_stamp_decides() {
    for fast in [1, 2] {
        let w = World::new(fast);
        let (base, t) = (unix_ms() + HOUR_MS, unix_ms() + 2 * HOUR_MS);
        w.r1.set("a", "v", Ttl::At(base));
        w.r1.set("b", "v", Ttl::At(base));
        w.converge(&["a", "b"]);
        w.fast().expire("a", Some(t));
        w.slow().expire("a", None);
        w.fast().expire("b", None);
        w.slow().expire("b", Some(t));
        w.converge(&["a", "b"]);
        assert_eq!(w.r1.deadline("a"), Some(Some(t)), "fast region {fast}");
        assert_eq!(w.r1.deadline("b"), Some(None), "fast region {fast}");
    }
}

#[test]
fn set_clearing_ttl_vs_expire_the_later_stamp_decides() {
    for fast in [1, 2] {
        let w = World::new(fast);
        let t = unix_ms() + HOUR_MS;
        w.r1.set("a", "v", Ttl::Clear);
        w.r1.set("b", "v", Ttl::Clear);
        w.converge(&["a", "b"]);
        w.fast().set("a", "w", Ttl::Clear);
        w.slow().expire("a", Some(t));
        w.fast().expire("b", Some(t));
        w.slow().set("b", "w", Ttl::Clear);
        w.converge(&["a", "b"]);
        assert_eq!(w.r1.get("a"), some("w"));
        assert_eq!(w.r1.deadline("a"), Some(None), "fast region {fast}");
        assert_eq!(w.r1.get("b"), some("w"));
        assert_eq!(w.r1.deadline("b"), Some(Some(t)), "fast region {fast}");
    }
}

#[test]
fn a_causally_later_write_wins_even_against_a_fast_clock() {
    let w = World::new(1); // region 1's physical clock is 2 s ahead
    w.r1.set("k", "first", Ttl::Clear);
    w.r1.incrby("c", 5);
    w.r1.set("d", "x", Ttl::Clear);
    w.converge(&["k", "c", "d"]);
    let first = w.r1.stamp("k");
    assert!(
        first.unix_ms() > unix_ms() + 1_000,
        "region 1 stamps in the future"
    );
    assert!(
        w.r2.ks.clock().skew_alarms() >= 1,
        "the skew raised an alarm"
    );
    // Region 2 has seen region 1's writes; its own writes follow them causally.
    w.r2.set("k", "second", Ttl::Clear);
    w.r2.set("c", "7", Ttl::Clear);
    assert!(w.r2.del("d"));
    assert!(
        w.r2.stamp("k") > first,
        "a causally later write has a larger stamp"
    );
    w.converge(&["k", "c", "d"]);
    assert_eq!(w.r1.get("k"), some("second"));
    assert_eq!(w.r1.get("c"), some("7"), "the SET observed the increment");
    assert_eq!(w.r1.get("d"), None);
}

#[test]
fn a_late_delta_does_not_resurrect_an_expired_or_deleted_key() {
    let w = World::new(0);
    // Expired: an older SET is held back, then the key is SET with a short TTL.
    w.r1.set("e", "old", Ttl::Clear);
    let old_set = w.r1.take();
    w.r1.set("e", "v", Ttl::At(unix_ms() + 500));
    w.converge(&["e"]);
    assert_eq!(w.r2.get("e"), some("v"));
    let ttl_set = w.r1.ks.entry(b"e").unwrap().to_delta();
    sleep(Duration::from_millis(700));
    assert_eq!(w.r2.get("e"), None, "expired");
    let outcomes = w.r2.apply(old_set.iter().chain(&old_set));
    assert!(outcomes.iter().all(|o| *o == MergeOutcome::Unchanged));
    w.r2.ks.merge(b"e", &ttl_set);
    assert_eq!(w.r2.get("e"), None, "late deltas keep it expired");
    // Deleted: the SET is lost, only the DEL is delivered; the SET then arrives late, twice.
    w.r1.set("d", "v", Ttl::Clear);
    let set = w.r1.take();
    assert!(w.r1.del("d"));
    w.converge(&["d"]);
    w.r2.apply(set.iter().chain(&set));
    assert_eq!(w.r2.get("d"), None, "the late SET lost to the DEL");
    assert_eq!(w.r2.ks.entry(b"d"), w.r1.ks.entry(b"d"));
    assert_eq!(w.r2.ks.dbsize(), 0);
}

#[test]
fn a_stale_delta_after_tombstone_collection_is_dropped() {
    let w = World::new(0);
    for r in [&w.r1, &w.r2] {
        r.ks.set_tombstone_grace_ms(0);
    }
    w.r1.set("k", "v", Ttl::Clear);
    let set = w.r1.take(); // lost on the way to region 2
    assert!(w.r1.del("k"));
    w.converge(&["k"]);
    assert!(
        w.r2.ks.entry(b"k").is_some(),
        "region 2 holds the tombstone"
    );
    sleep(Duration::from_millis(5));
    // Replication reports that everything up to now was delivered both ways (the lost SET
    // included, as far as the watermark protocol is concerned): collection may drop the
    // tombstone, and the sender promises every delta of its up to now has been delivered.
    let delivered = meridian::crdt::Stamp::ntp64_from_unix_ms(meridian::clock::unix_ms());
    for r in [&w.r1, &w.r2] {
        r.ks.set_peer_watermark(delivered);
        assert!(r.ks.expire_cycle(usize::MAX).collected >= 1);
        assert_eq!(r.ks.entry(b"k"), None, "tombstone collected");
    }
    // Without a promise, an old delta is new information and lands (nothing is dropped on
    // age alone: that lost writes after long partitions).
    let probe = Keyspace::new(Arc::new(Hlc::new(9, Duration::from_millis(500))), None);
    probe.set_peer_watermark(delivered);
    assert_eq!(
        probe.merge(&set[0].key, &set[0].entry).0,
        MergeOutcome::Changed
    );
    // The old SET arrives late (and twice) within the sender's promise: a duplicate of what
    // was merged and collected, dropped, not resurrected.
    assert_eq!(
        w.r2.apply_promised(set.iter().chain(&set), delivered),
        vec![MergeOutcome::Stale; 2]
    );
    assert_eq!(
        w.r1.apply_promised(&set, delivered),
        vec![MergeOutcome::Stale]
    );
    assert_eq!(w.r2.get("k"), None);
    assert_eq!(w.r2.ks.entry(b"k"), None);
    assert_eq!(
        w.r2.ks
            .stats
            .merges_dropped_stale
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // A new write to the collected key still replicates.
    w.r1.set("k", "again", Ttl::Clear);
    let again = w.r1.take();
    assert_eq!(w.r2.apply(&again), vec![MergeOutcome::Changed]);
    assert_eq!(w.r2.get("k"), some("again"));
}
