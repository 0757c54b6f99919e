//! When a link sends: the adaptive ack timeout, the reconnect rule and the short batching delay
//! for cold keys. Kept apart from `link` so the outbox logic reads the same as before.
//!
//! - **Adaptive ack timeout.** A batch not acknowledged within the link's retransmission
//!   timeout (RTO) is considered lost and its keys go back to the outbox. The RTO follows the
//!   measured ack times as TCP does (RFC 6298: smoothed time + 4 × variation), between
//!   [`MIN_RTO`] and [`MAX_RTO`], starting at [`INITIAL_RTO`]; each timeout doubles it until the
//!   next ack. The fixed 2 s timeout it replaces was both too long (after a partition healed,
//!   the window sent into it blocked the link for 2 s) and too short (a receiver merging a
//!   backlog on a busy core acked later than 2 s, and whole windows were re-sent for nothing).
//!   A batch's ack time includes the receiver's merge, so a slow receiver raises the RTO.
//! - **Reconnect.** Batches sent before the transport failed were sent into a dead connection:
//!   when a send succeeds again, they are treated as lost at once instead of after the RTO.
//!   Likewise when a link that is backing off (a batch timed out, no ack since) hears from its
//!   peer after more than a second of silence (idle links send keep-alives every 300 ms): a
//!   partition (which QUIC may not notice) has healed, and waiting out a backed-off RTO of up to
//!   [`MAX_RTO`] would only delay the catch-up. A slow peer that keeps talking does not trigger
//!   it, so it does not cause a burst of re-sends.
//! - **Batching delay.** A region link woken by a publish with only a few cold keys queued
//!   waits `repl::scope::COLD_DELAY` before building the batch, so that writes of the next instant share its
//!   frame (one frame header, one compression) and repeated writes to a key coalesce. The
//!   delay is skipped when enough keys are already queued to fill a good batch.

use std::time::{Duration, Instant};

/// The ack timeout before any ack was measured (the old fixed timeout).
pub const INITIAL_RTO: Duration = Duration::from_secs(2);
/// Never time out faster than this (ack of a batch includes the peer's merge of it).
pub const MIN_RTO: Duration = Duration::from_millis(200);
/// Never wait longer than this for an ack.
pub const MAX_RTO: Duration = Duration::from_secs(8);
/// How often a backing-off link probes its peer.
pub const PROBE_EVERY: Duration = Duration::from_millis(300);
/// Queued keys from which a batch leaves without the delay.
pub const BATCH_NOW: usize = 64;

/// Ack-time estimator of one link (RFC 6298).
#[derive(Debug, Clone, Copy)]
pub struct Rtt {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    /// Batches sent before this instant count as lost (set on reconnect).
    pub lost_before: Option<Instant>,
    /// A batch timed out since the last ack: the peer may be unreachable.
    backoff: bool,
    last_probe: Option<Instant>,
}

impl Default for Rtt {
    fn default() -> Self {
        Rtt {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: INITIAL_RTO,
            lost_before: None,
            backoff: false,
            last_probe: None,
        }
    }
}

impl Rtt {
    /// An ack arrived `sample` after its batch was sent.
    pub fn sample(&mut self, sample: Duration) {
        self.backoff = false;
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(sample);
                self.rttvar = self.rttvar * 3 / 4 + diff / 4;
                self.srtt = Some(srtt * 7 / 8 + sample / 8);
            }
        }
        let srtt = self.srtt.expect("set above");
        self.rto = (srtt + self.rttvar * 4).clamp(MIN_RTO, MAX_RTO);
    }

    /// A batch timed out: back off until the next ack.
    pub fn timed_out(&mut self) {
        self.rto = (self.rto * 2).min(MAX_RTO);
        self.backoff = true;
    }

    /// Whether to send a probe now: while backing off, every [`PROBE_EVERY`]. A link whose
    /// window is full sends nothing else, and two such links (both sides of a healed
    /// partition) would each wait out their backed-off timeout before either heard the other.
    pub fn probe_due(&mut self) -> bool {
        if !self.backoff || self.last_probe.is_some_and(|t| t.elapsed() < PROBE_EVERY) {
            return false;
        }
        self.last_probe = Some(Instant::now());
        true
    }

    /// The peer was heard from (it sent us a frame). If we were backing off, the path is back
    /// (a partition healed): what is in flight was sent into it, so it counts as lost now and
    /// the timeout returns to its measured value. Returns whether that happened.
    pub fn peer_back(&mut self) -> bool {
        if !self.backoff {
            return false;
        }
        self.backoff = false;
        self.lost_before = Some(Instant::now());
        if let Some(srtt) = self.srtt {
            self.rto = (srtt + self.rttvar * 4).clamp(MIN_RTO, MAX_RTO);
        }
        true
    }

    pub fn rto(&self) -> Duration {
        self.rto
    }

    /// Whether a batch sent at `sent` counts as lost now.
    pub fn lost(&self, sent: Instant) -> bool {
        sent.elapsed() > self.rto || self.lost_before.is_some_and(|t| sent < t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rto_follows_ack_times_and_backs_off() {
        let mut r = Rtt::default();
        assert_eq!(r.rto(), INITIAL_RTO);
        for _ in 0..20 {
            r.sample(Duration::from_millis(5));
        }
        assert_eq!(r.rto(), MIN_RTO, "fast acks: the floor");
        for _ in 0..20 {
            r.sample(Duration::from_millis(900));
        }
        assert!(r.rto() > Duration::from_millis(900), "{:?}", r.rto());
        r.timed_out();
        r.timed_out();
        r.timed_out();
        r.timed_out();
        assert_eq!(r.rto(), MAX_RTO);
        let old = Instant::now();
        r.lost_before = Some(Instant::now());
        assert!(r.lost(old));
        assert!(!r.lost(Instant::now()));
    }
}
