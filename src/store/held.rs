//! Publication held back to the end of a connection's read batch, for the sinks that ask
//! for it (replication).
//!
//! Why: a pipelined client sends many writes in one read. Handing each write's delta to the
//! replicator on its own costs a lock of the publication order, two clock reads, and a lock of
//! every link's outbox per write; on a writer replicating to two regions that was the largest
//! part of replication's cost on the command path. Held back, the deltas of a whole read reach
//! the replicator in one call.
//!
//! Invariants:
//! - Only deltas of the scope's origin and of the keyspace that opened it are held: a
//!   connection holds its [`Origin::Local`] writes, a peer's batch its merges
//!   (`store::merge`). Others (a merge that must go back to its sender, other keyspaces:
//!   in-process tests run several nodes on one thread) publish at once.
//! - A scope never spans an `await`: the connection ends it before it blocks (WAIT and its
//!   kin read the replication offset when they first run, so they see every write before
//!   them) and at the end of each read. Another task running on the thread meanwhile would
//!   otherwise have its writes held in this connection's scope.
//! - Sinks that do not ask ([`DeltaSink::batched`] false: persistence, client tracking) get
//!   every delta at once, as before, so `appendfsync always` and invalidation order are
//!   unchanged.
//! - Scopes do not nest: an inner [`Keyspace::hold_publish`] is a no-op.

use super::{Delta, DeltaSink, Deltas, Keyspace, Origin};
use std::cell::RefCell;
use std::sync::Arc;

/// The open scope of this thread: the keyspace it holds for (by address), the origin of the
/// deltas it holds, and those deltas.
struct Held {
    keyspace: usize,
    origin: Origin,
    deltas: Vec<Delta>,
}

/// Deltas a scope makes room for at its first write (a pipeline of 16 commands, a few keys
/// each).
const HELD_CAPACITY: usize = 32;

thread_local! {
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Ends the scope when dropped, publishing what it held.
pub struct HeldPublish<'a> {
    /// `None` for an inner (no-op) scope.
    ks: Option<&'a Keyspace>,
}

impl Keyspace {
    /// Opens a scope in which this thread's local writes reach batched sinks together, when
    /// the returned guard is dropped. The guard must be dropped before the next `await`.
    pub fn hold_publish(&self) -> HeldPublish<'_> {
        self.hold_publish_as(Origin::Local)
    }

    /// A scope holding the deltas of `origin` (see [`Keyspace::hold_publish`]).
    pub(super) fn hold_publish_as(&self, origin: Origin) -> HeldPublish<'_> {
        let opened = HELD.with(|h| {
            let mut h = h.borrow_mut();
            if h.is_some() {
                return false;
            }
            *h = Some(Held {
                keyspace: self as *const Keyspace as usize,
                origin,
                deltas: Vec::new(),
            });
            true
        });
        HeldPublish {
            ks: opened.then_some(self),
        }
    }

    /// Whether deltas of `origin` published now wait for the end of a scope.
    pub(super) fn holding(&self, origin: Origin) -> bool {
        HELD.with(|h| {
            h.borrow().as_ref().is_some_and(|h| {
                h.origin == origin && h.keyspace == self as *const Keyspace as usize
            })
        })
    }

    /// Adds deltas to the open scope (see [`Keyspace::holding`]).
    pub(super) fn hold(&self, deltas: &mut Deltas) {
        HELD.with(|h| {
            if let Some(h) = h.borrow_mut().as_mut() {
                if h.deltas.capacity() == 0 {
                    // Sized for a pipelined read at once, not doubled up to it write by write.
                    h.deltas.reserve(HELD_CAPACITY);
                }
                h.deltas.extend(deltas.drain(..));
            }
        });
    }

    /// Hands `deltas` to every batched sink (a copy each but the last).
    fn publish_batched(&self, mut deltas: Vec<Delta>, origin: Origin) {
        let sinks = self.sinks.load();
        let batched: Vec<&Arc<dyn DeltaSink>> = sinks.iter().filter(|s| s.batched()).collect();
        if let Some((last, rest)) = batched.split_last() {
            for s in rest {
                s.publish(deltas.clone(), origin);
            }
            last.publish(std::mem::take(&mut deltas), origin);
        }
    }
}

impl Drop for HeldPublish<'_> {
    fn drop(&mut self) {
        let Some(ks) = self.ks else { return };
        let held = HELD.with(|h| h.borrow_mut().take());
        if let Some(held) = held.filter(|h| !h.deltas.is_empty()) {
            ks.publish_batched(held.deltas, held.origin);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Hlc;
    use crate::store::Ttl;
    use parking_lot::Mutex;
    use std::time::Duration;

    /// Records each publish: its origin and how many deltas it carried.
    struct Calls {
        batched: bool,
        calls: Mutex<Vec<(Origin, usize)>>,
    }

    impl Calls {
        fn new(batched: bool) -> Arc<Self> {
            Arc::new(Calls {
                batched,
                calls: Mutex::new(Vec::new()),
            })
        }

        fn take(&self) -> Vec<(Origin, usize)> {
            std::mem::take(&mut self.calls.lock())
        }
    }

    impl DeltaSink for Calls {
        fn publish(&self, deltas: Vec<Delta>, origin: Origin) {
            self.calls.lock().push((origin, deltas.len()));
        }

        fn batched(&self) -> bool {
            self.batched
        }
    }

    /// A keyspace with a sink that publishes at once (`log`) and a batched one (`repl`).
    fn with_sinks() -> (Keyspace, Arc<Calls>, Arc<Calls>) {
        let ks = Keyspace::new(Arc::new(Hlc::new(1, Duration::from_millis(500))), None);
        let (log, repl) = (Calls::new(false), Calls::new(true));
        ks.add_sink(log.clone());
        ks.add_sink(repl.clone());
        (ks, log, repl)
    }

    fn set(ks: &Keyspace, key: &[u8]) {
        ks.lock([key]).key(key).set_bytes(b"v", Ttl::Clear);
    }

    #[test]
    fn a_scope_hands_batched_sinks_its_writes_at_once_and_others_each_write() {
        let (ks, log, repl) = with_sinks();
        // Without a scope every sink gets every write.
        set(&ks, b"a");
        assert_eq!(log.take(), [(Origin::Local, 1)]);
        assert_eq!(repl.take(), [(Origin::Local, 1)]);
        {
            let _scope = ks.hold_publish();
            let inner = ks.hold_publish(); // nested: a no-op
            set(&ks, b"b");
            set(&ks, b"c");
            drop(inner);
            // A peer's change is never held (nor is another keyspace's).
            let other = Keyspace::new(Arc::new(Hlc::new(2, Duration::from_millis(500))), None);
            set(&other, b"p");
            let e = other.entry(b"p").expect("written").to_delta();
            ks.merge_from(Origin::Peer(9), b"p", &e, 0);
            assert_eq!(
                log.take(),
                [(Origin::Local, 1), (Origin::Local, 1), (Origin::Peer(9), 1)]
            );
            assert_eq!(
                repl.take(),
                [(Origin::Peer(9), 1)],
                "held until the scope ends"
            );
        }
        assert_eq!(
            repl.take(),
            [(Origin::Local, 2)],
            "both writes in one publish"
        );
        assert!(log.take().is_empty());
        // The scope is closed: writes publish at once again.
        set(&ks, b"d");
        assert_eq!(repl.take(), [(Origin::Local, 1)]);
    }

    #[test]
    fn a_peer_batch_reaches_batched_sinks_in_one_publish_with_its_origin() {
        let (ks, log, repl) = with_sinks();
        let other = Keyspace::new(Arc::new(Hlc::new(2, Duration::from_millis(500))), None);
        let keys: [&[u8]; 3] = [b"x", b"y", b"z"];
        let deltas: Vec<_> = keys
            .iter()
            .map(|k| {
                set(&other, k);
                other.entry(k).expect("written").to_delta()
            })
            .collect();
        let keys: Vec<Arc<[u8]>> = keys.iter().map(|&k| Arc::from(k)).collect();
        let deltas: Vec<_> = deltas.into_iter().map(Arc::new).collect();
        let batch: Vec<_> = keys.iter().zip(deltas.iter()).collect();
        assert_eq!(ks.merge_batch(Origin::Peer(9), &batch, 0), 0);
        assert_eq!(log.take(), [(Origin::Peer(9), 1); 3]);
        assert_eq!(repl.take(), [(Origin::Peer(9), 3)]);
        // Merged again: nothing changed, nothing published.
        ks.merge_batch(Origin::Peer(9), &batch, 0);
        assert!(repl.take().is_empty() && log.take().is_empty());
        // Local writes after it are not held by a scope that ended.
        set(&ks, b"d");
        assert_eq!(repl.take(), [(Origin::Local, 1)]);
    }
}
