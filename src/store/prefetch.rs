//! Warming the CPU caches for a run of keys before they are worked on one at a time.
//!
//! Why: a key that is not in the cache costs three dependent memory loads before its entry can
//! be read: its slot's `Mutex<Shard>` (16384 of them, more than L2 holds), the slot table's
//! control bytes and bucket, then the boxed node. Profiles of a receiving region and of a
//! pipelined writer put those misses at 25-45% of their cycles (docs/benchmarks.md, run H).
//! Taken one key after the other they wait in series; [`Keyspace::prefetch`] issues them for a
//! whole group of keys at once, so the waits overlap (what Redis 8 does for the keys of a
//! pipeline).
//!
//! Steps, per group of up to [`GROUP`] keys:
//! 1. Hash every key and ask for its slot's shard lines (a prefetch hint: no load, no lock).
//! 2. Try to lock each distinct slot. A slot someone else holds is skipped: this never waits,
//!    so it cannot deadlock with a caller holding locks in ascending order.
//! 3. Under those locks, probe each key's table with a comparison that always answers "no"
//!    and only hints the node a matching tag points to. The probes' loads do not depend on
//!    each other, so the CPU overlaps them; no node is dereferenced.
//! 4. Find each key for real (its lines are arriving) and hint the boxed parts of its entry
//!    that a merge reads: a counter's state is one more dependent miss (`Entry::boxed_parts`).
//! 5. Release the locks. The work that follows finds its lines in L1/L2.
//!
//! Invariant: prefetching changes nothing — no entry, no access time, no statistic. It is a
//! pure hint; skipping it (a held slot, an architecture without prefetch) only costs speed.

use super::shard::Node;
use super::{key_slot, Keyspace};
use smallvec::SmallVec;

/// Keys warmed together: enough misses to overlap, few enough that their lines (about five
/// per key) stay in L1 until they are used.
pub const GROUP: usize = 16;

impl Keyspace {
    /// Warms the caches for `keys` (see the module doc); at most [`GROUP`] of them are used.
    pub fn prefetch<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        // 1.
        let mut probes: SmallVec<[(u16, u64, &[u8]); GROUP]> = SmallVec::new();
        for key in keys.into_iter().take(GROUP) {
            let slot = key_slot(key);
            hint_all(&self.shards[slot as usize]);
            probes.push((slot, self.hash(key), key));
        }
        if probes.len() < 2 {
            // One key has nothing to overlap with.
            return;
        }
        // 2. Keys of one slot (a multi-key command's hash tag) share its lock: `owner[i]` is
        //    the probe whose guard key i uses.
        let mut guards: SmallVec<[_; GROUP]> = SmallVec::new();
        let mut owner: SmallVec<[usize; GROUP]> = SmallVec::new();
        for (i, &(slot, ..)) in probes.iter().enumerate() {
            match probes[..i].iter().position(|p| p.0 == slot) {
                Some(first) => {
                    owner.push(first);
                    guards.push(None);
                }
                None => {
                    owner.push(i);
                    guards.push(self.shards[slot as usize].try_lock());
                }
            }
        }
        let shard = |i: usize| guards[owner[i]].as_deref();
        // 3.
        for (i, &(_, hash, _)) in probes.iter().enumerate() {
            if let Some(shard) = shard(i) {
                shard.table.find(hash, |node| {
                    let at: *const Node = &**node;
                    hint(at);
                    hint(at.wrapping_byte_add(64));
                    false
                });
            }
        }
        // 4.
        for (i, &(_, hash, key)) in probes.iter().enumerate() {
            if let Some(node) = shard(i).and_then(|shard| shard.find(hash, key)) {
                node.entry.boxed_parts(hint_range);
            }
        }
        // 5. (guards drop here)
    }
}

/// Hints every line of `*v` (a shard is 104 bytes at a 104-byte stride: two or three lines,
/// and a merge reads its first and last fields).
#[inline(always)]
fn hint_all<T>(v: &T) {
    hint_range((v as *const T).cast(), size_of::<T>());
}

/// Hints every line of the `len` bytes at `p` (`len` > 0).
#[inline(always)]
fn hint_range(p: *const u8, len: usize) {
    for off in (0..len).step_by(64) {
        hint(p.wrapping_add(off));
    }
    hint(p.wrapping_add(len - 1));
}

/// Asks the CPU to bring the line holding `p` into its caches. Never faults, whatever `p`.
#[inline(always)]
fn hint<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing the program sees and never faults.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Hlc;
    use crate::store::Ttl;
    use std::sync::Arc;
    use std::time::Duration;

    fn keyspace() -> Keyspace {
        Keyspace::new(Arc::new(Hlc::new(1, Duration::from_millis(500))), None)
    }

    fn set(ks: &Keyspace, key: &[u8]) {
        ks.lock_key(key).key(key).set_bytes(key, Ttl::Clear);
    }

    #[test]
    fn prefetching_changes_nothing_a_reader_can_see() {
        let ks = keyspace();
        let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("k{i}").into_bytes()).collect();
        keys[..20].iter().for_each(|k| set(&ks, k));
        let before = ks.counts();
        ks.prefetch(keys.iter().map(|k| &k[..]));
        assert_eq!(ks.counts(), before);
        for (i, k) in keys.iter().enumerate() {
            let got = ks.lock_key(k).key(k).value().map(|v| v.into_owned());
            assert_eq!(got, (i < 20).then(|| k.clone()), "key {i}");
        }
    }

    #[test]
    fn a_slot_held_elsewhere_is_skipped_not_waited_for() {
        let ks = Arc::new(keyspace());
        let keys: Vec<Vec<u8>> = (0..16)
            .map(|i| format!("{{tag}}{i}").into_bytes())
            .collect();
        keys.iter().for_each(|k| set(&ks, k));
        // Every key shares one slot: hold it, as a command would, and prefetch from another
        // thread; it must return while the slot is still held.
        let held = ks.lock_key(&keys[0]);
        let (tx, rx) = std::sync::mpsc::channel();
        let ks2 = ks.clone();
        let keys2 = keys.clone();
        let t = std::thread::spawn(move || {
            ks2.prefetch(keys2.iter().map(|k| &k[..]));
            tx.send(()).unwrap();
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("prefetch waited for a held slot");
        drop(held);
        t.join().unwrap();
    }
}
