//! Replies to a peer we have no link to yet, parked until the link is made.
//!
//! Replies (acks, digest answers) go back on the address of our own link to the sender. When a
//! region starts, or a role changes, a peer's new link can send its first batch and digest
//! question a few milliseconds before membership made our link to that peer. Dropping those
//! replies made the peer wait for its retry: two seconds for a digest question, during which
//! its link promised nothing, so `WAIT 1 1000` right after a replica joined counted 0.
//!
//! Invariants:
//! - What is parked is bounded: [`PER_PEER`] frames per peer, [`MAX_PEERS`] peers, each
//!   frame for [`TTL`]. A sender that never gets a link (garbage, a node of another
//!   deployment's layout) costs that much memory and no more.
//! - A parked frame is sent at most once, on the first link made to its peer. A late or
//!   dropped reply is harmless: acks and answers name their session and question, and a
//!   peer ignores those it no longer waits for, then asks again.

use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Frames kept per peer (the newest win).
pub const PER_PEER: usize = 64;
/// Peers with parked frames; frames for further peers are dropped.
pub const MAX_PEERS: usize = 256;
/// How long a parked frame stays worth sending.
pub const TTL: Duration = Duration::from_secs(5);

/// Encoded replies waiting for a link, per peer node id.
#[derive(Default)]
pub struct Parked {
    by_peer: Mutex<HashMap<u64, VecDeque<(Instant, Bytes)>>>,
}

impl Parked {
    /// Keeps `frame` for `peer` until [`Parked::take`], within the bounds.
    pub fn park(&self, peer: u64, frame: Bytes) {
        let now = Instant::now();
        let mut by_peer = self.by_peer.lock();
        by_peer.retain(|_, q| {
            q.retain(|(at, _)| now.duration_since(*at) < TTL);
            !q.is_empty()
        });
        if by_peer.len() >= MAX_PEERS && !by_peer.contains_key(&peer) {
            tracing::debug!(peer = %format_args!("{peer:x}"), "too many peers without a link; reply dropped");
            return;
        }
        let q = by_peer.entry(peer).or_default();
        if q.len() >= PER_PEER {
            q.pop_front();
        }
        q.push_back((now, frame));
    }

    /// The frames parked for `peer` that are still fresh, oldest first; forgets them all.
    pub fn take(&self, peer: u64) -> Vec<Bytes> {
        let Some(q) = self.by_peer.lock().remove(&peer) else {
            return Vec::new();
        };
        let now = Instant::now();
        (q.into_iter())
            .filter(|(at, _)| now.duration_since(*at) < TTL)
            .map(|(_, f)| f)
            .collect()
    }

    /// Peers with frames parked.
    #[cfg(test)]
    fn peers(&self) -> usize {
        self.by_peer.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn frames_are_handed_over_once_in_order() {
        let p = Parked::default();
        p.park(7, frame(1));
        p.park(7, frame(2));
        p.park(8, frame(3));
        assert_eq!(p.take(7), vec![frame(1), frame(2)]);
        assert!(p.take(7).is_empty(), "taken frames are forgotten");
        assert_eq!(p.take(8), vec![frame(3)]);
        assert_eq!(p.peers(), 0);
    }

    #[test]
    fn a_peer_keeps_only_its_newest_frames() {
        let p = Parked::default();
        for n in 0..(PER_PEER + 10) {
            p.park(1, frame(n as u8));
        }
        let got = p.take(1);
        assert_eq!(got.len(), PER_PEER);
        assert_eq!(got[0], frame(10));
        assert_eq!(got[PER_PEER - 1], frame((PER_PEER + 9) as u8));
    }

    #[test]
    fn unknown_senders_cost_bounded_memory() {
        let p = Parked::default();
        for peer in 0..(MAX_PEERS as u64 + 100) {
            p.park(peer, frame(0));
        }
        assert_eq!(p.peers(), MAX_PEERS);
        assert!(
            p.take(MAX_PEERS as u64 + 50).is_empty(),
            "over the bound: dropped"
        );
        assert_eq!(p.take(0), vec![frame(0)], "within the bound: kept");
    }
}
