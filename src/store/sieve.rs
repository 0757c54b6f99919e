//! The SIEVE policy's per-slot queue (Zhang et al., NSDI'24): keys in insertion order, a hand
//! that sweeps from the oldest toward the newest, clearing visited bits and evicting the first
//! key not visited since the hand last passed. A hit only sets the node's visited bit, so reads
//! never reorder anything.
//!
//! The queue records (hash, node address) pairs: the address identifies a boxed node, whose
//! allocation never moves while it is in the table, and is only compared, never dereferenced. An
//! entry whose node is gone (deleted, collected, migrated) is dropped when the hand reaches it.
//! A queue is (re)built from its table when the policy is switched on (a new epoch), so keys
//! written under another policy are not invisible to it.

use super::shard::Node;
use hashbrown::HashTable;
use std::collections::VecDeque;

pub struct Sieve {
    /// Oldest first.
    queue: VecDeque<(u64, usize)>,
    /// Index of the next entry the hand examines.
    hand: usize,
    /// The policy epoch the queue was built for (see `Eviction::sieve_epoch`).
    epoch: u32,
}

impl Sieve {
    /// A queue holding every node of `table`, for `epoch`.
    pub fn build(table: &HashTable<Box<Node>>, epoch: u32, hasher: impl Fn(&[u8]) -> u64) -> Self {
        Sieve {
            queue: table.iter().map(|n| (hasher(&n.key), n.addr())).collect(),
            hand: 0,
            epoch,
        }
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Queues a new node (at the newest end) if the queue belongs to the current epoch; a stale
    /// queue is rebuilt before it is used, which includes the node anyway.
    pub fn admit(&mut self, epoch: u32, hash: u64, addr: usize) {
        if self.epoch == epoch {
            self.queue.push_back((hash, addr));
        }
    }

    /// Entries held, stale ones included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.len()
    }

    /// Moves the hand to the next victim among the nodes `eligible` accepts: returns its hash
    /// and key, already removed from the queue (the caller removes the node). The hand makes at
    /// most one pass: `None` when every eligible node was visited (their bits are now clear) or
    /// none is queued, and the caller moves on to the next slot — so across slots the hands act
    /// as one hand sweeping the whole keyspace, and a slot holding only hot keys keeps them.
    pub fn victim(
        &mut self,
        table: &mut HashTable<Box<Node>>,
        eligible: impl Fn(&Node) -> bool,
    ) -> Option<(u64, Box<[u8]>)> {
        if self.queue.len() > 2 * table.len() + 16 {
            self.queue
                .retain(|&(h, a)| table.find(h, |n| n.addr() == a).is_some());
            self.hand = 0;
        }
        let mut budget = self.queue.len();
        while budget > 0 && !self.queue.is_empty() {
            budget -= 1;
            if self.hand >= self.queue.len() {
                self.hand = 0;
            }
            let (hash, addr) = self.queue[self.hand];
            let Some(node) = table.find_mut(hash, |n| n.addr() == addr) else {
                self.queue.remove(self.hand);
                continue;
            };
            if !eligible(node) {
                self.hand += 1;
            } else if node.visited {
                node.visited = false;
                self.hand += 1;
            } else {
                self.queue.remove(self.hand);
                return Some((hash, Box::from(&node.key[..])));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::Entry;

    fn table(keys: &[&[u8]]) -> HashTable<Box<Node>> {
        let mut t = HashTable::new();
        for (i, k) in keys.iter().enumerate() {
            t.insert_unique(i as u64, Box::new(Node::new(k, Entry::empty(), 0)), |_| 0);
        }
        t
    }

    #[test]
    fn visited_keys_survive_one_sweep() {
        let mut t = table(&[b"a", b"b", b"c"]);
        let mut s = Sieve::build(&t, 1, |k| (k[0] - b'a') as u64);
        t.find_mut(0, |n| &*n.key == b"a").unwrap().visited = true;
        let (_, k) = s.victim(&mut t, |_| true).unwrap();
        assert_eq!(
            &*k, b"b",
            "the hand skips and clears the visited oldest key"
        );
        assert!(!t.find(0, |n| &*n.key == b"a").unwrap().visited);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_slot_of_visited_keys_is_passed_once_then_evicts() {
        let mut t = table(&[b"a"]);
        let mut s = Sieve::build(&t, 1, |k| (k[0] - b'a') as u64);
        t.find_mut(0, |n| &*n.key == b"a").unwrap().visited = true;
        assert!(s.victim(&mut t, |_| true).is_none());
        assert_eq!(&*s.victim(&mut t, |_| true).unwrap().1, b"a");
    }

    #[test]
    fn stale_entries_are_dropped() {
        let mut t = table(&[b"a", b"b"]);
        let mut s = Sieve::build(&t, 1, |k| (k[0] - b'a') as u64);
        if let Ok(e) = t.find_entry(0, |n| &*n.key == b"a") {
            e.remove();
        }
        let (_, k) = s.victim(&mut t, |_| true).unwrap();
        assert_eq!(&*k, b"b");
        assert_eq!(s.len(), 0);
        assert!(s.victim(&mut t, |_| true).is_none());
    }
}
