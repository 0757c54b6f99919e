//! Repair by per-slot digests: how a link session brings a peer up to date without shipping
//! every slot it carries.
//!
//! A session starts (a new link, a peer that answered `need_resync` because it restarted, slots
//! gained by a migration) with a *round*: the link asks the peer to compare digests of ranges
//! of its slots ([`ReplMsg::Digests`]: 64 slots per range at first, the XOR of their
//! `Keyspace::slot_digest`s). The peer answers with the ranges whose digest differs from its
//! own ([`ReplMsg::DigestDiff`]); each differing range is split in [`FANOUT`] and asked again,
//! down to single slots. Differing slots are then sent in full by the ordinary batches
//! (`Link::next_batch`), merged by the peer like any delta; equal ones are skipped.
//!
//! - **Byte budget.** A round ships at most [`ROUND_BYTES`] of full slots; the slots still
//!   queued then go back to comparison as a new round, so a repair never floods the link for
//!   longer than one budget without checking again which slots still differ (the peer may
//!   have received them meanwhile, e.g. from the other direction's repair or its replicas).
//!   Changed keys always go before repair slots in a batch.
//! - **Promises.** While a round is on (ranges to compare, a question unanswered, or slots to
//!   send), no batch claims to complete anything (`upto` = 0), so the link's delivery promise
//!   stays where the session start put it (0) until the repair is acknowledged. An equal
//!   digest means the peer held, when it answered, every entry we held when we asked; what we
//!   changed after asking is in the outbox. So a batch built after the round may claim to cover
//!   everything stamped before it, as a full sync's last batch did.
//! - **Failure.** A question unanswered within [`ASK_TIMEOUT`] is asked again; after
//!   [`MAX_TRIES`] (a peer too old to know digests drops the frame) its ranges are sent in full.
//! - **Anti-entropy.** Every `repl-antientropy` (default 60 s; 0 = off) an idle link of a
//!   quiet node *checks* its peer: one digest question in the current session, which ships
//!   nothing and holds no claim back. Two checks in a row that differ start a new session,
//!   so a round (`Link::start_antientropy_if_due` has the rules and why).
//! - Digests cover every entry a slot holds, tombstones included (a peer missing a tombstone
//!   could take back a deleted value from a third region). Evicted keys and collected
//!   tombstones therefore make slots differ: that costs bytes (the slot is sent), never
//!   correctness (a merge of what the peer already has, or dropped as stale).

use super::link::{Link, Outbox};
use super::wire::{self, ReplMsg};
use crate::cluster::SlotSet;
use crate::store::{Keyspace, SLOTS};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Slots per range in a round's first question (256 ranges for all 16384 slots).
pub const TOP_RANGE: u16 = 64;
/// A differing range is asked again as this many sub-ranges.
pub const FANOUT: u16 = 8;
/// Ranges per question (a frame stays far below the mesh's frame limit).
const MAX_RANGES: usize = 4096;
/// Bytes of full slots one round may send before the rest is compared again.
pub const ROUND_BYTES: usize = 8 << 20;
/// A question unanswered this long is asked again.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Unanswered questions before its ranges are sent in full.
pub const MAX_TRIES: u32 = 3;
/// How long the node must have had no write and no merge before an anti-entropy check.
pub const QUIET: Duration = Duration::from_secs(1);
/// After a check found a difference, the check that confirms it comes this much later.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(1);

/// What repair did on one link, for INFO.
#[derive(Debug, Default, Clone, Copy)]
pub struct RepairCounts {
    /// Rounds started (a session start, gained slots, or a round's budget running out).
    pub rounds: u64,
    /// Anti-entropy checks started (`Link::start_antientropy_if_due`).
    pub checks: u64,
    /// Digest questions sent.
    pub asks: u64,
    /// Slots found different and sent in full.
    pub slots: u64,
    /// Bytes of repair frames: questions, plus every batch that carried a full slot.
    pub bytes: u64,
}

/// A link's repair state (inside its outbox, under the same lock).
#[derive(Default)]
pub struct Repair {
    /// Ranges (first slot, length) waiting to be compared with the peer.
    compare: Vec<(u16, u16)>,
    asked: Option<Asked>,
    next_ask: u64,
    tries: u32,
    /// Bytes of full slots sent in the current round.
    round_bytes: usize,
    /// Changed keys were sent while slots found different waited (see [`slots_now`]).
    keys_since_found: bool,
    /// When the last round or check started (`None`: never), for periodic anti-entropy.
    last_round: Option<Instant>,
    /// The round is an anti-entropy check: it only compares (see
    /// `Link::start_antientropy_if_due`). It ships nothing and holds no claim back.
    checking: bool,
    /// The last check found a difference; the next one, [`CONFIRM_AFTER`] later, decides.
    suspect: bool,
    /// The replication offset the link last saw, and since when: the node is quiet when
    /// neither a local write nor a merge moved it for [`QUIET`].
    quiet: (u64, Option<Instant>),
    pub counts: RepairCounts,
}

struct Asked {
    ask: u64,
    sent: Instant,
    ranges: Vec<(u16, u16)>,
}

enum Step {
    Idle,
    Ask(u64, Vec<(u16, u16)>),
    GiveUp(Vec<(u16, u16)>),
}

/// `slots` as ranges of at most `TOP_RANGE` contiguous slots.
fn top_ranges(slots: &SlotSet) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    for (a, b) in slots.ranges() {
        let mut s = a as u32;
        while s <= b as u32 {
            let len = (b as u32 - s + 1).min(TOP_RANGE as u32);
            out.push((s as u16, len as u16));
            s += len;
        }
    }
    out
}

impl Repair {
    /// Starts a round over `slots`, forgetting any question of an earlier session.
    pub fn start(&mut self, slots: &SlotSet) {
        self.compare.clear();
        self.asked = None;
        self.tries = 0;
        self.checking = false;
        self.add(slots);
    }

    /// Ends whatever round or check is on, without starting another.
    fn stop(&mut self) {
        self.start(&SlotSet::default());
    }

    /// Starts an anti-entropy check over `slots` (the link is idle: no round is on). It counts
    /// as a check, not as a round.
    pub fn check(&mut self, slots: &SlotSet) {
        self.stop();
        if slots.is_empty() {
            return;
        }
        self.checking = true;
        self.counts.checks += 1;
        self.last_round = Some(Instant::now());
        self.compare.extend(top_ranges(slots));
    }

    /// Adds slots to compare; starts a round if none is on.
    pub fn add(&mut self, slots: &SlotSet) {
        if slots.is_empty() {
            return;
        }
        if !self.busy() {
            self.counts.rounds += 1;
            self.round_bytes = 0;
            self.last_round = Some(Instant::now());
        }
        self.compare.extend(top_ranges(slots));
    }

    /// Whether ranges are still to be compared or a question is unanswered.
    pub fn busy(&self) -> bool {
        !self.compare.is_empty() || self.asked.is_some()
    }

    /// Whether batches may not claim to complete anything: a repair round is on. An
    /// anti-entropy check ships nothing, so it holds no claim back.
    pub fn holds_claims(&self) -> bool {
        self.busy() && !self.checking
    }

    fn step(&mut self) -> Step {
        if let Some(a) = &self.asked {
            if a.sent.elapsed() < ASK_TIMEOUT {
                return Step::Idle;
            }
            let a = self.asked.take().expect("checked");
            self.tries += 1;
            if self.tries >= MAX_TRIES {
                self.tries = 0;
                return Step::GiveUp(a.ranges);
            }
            self.compare.splice(0..0, a.ranges);
        }
        if self.compare.is_empty() {
            return Step::Idle;
        }
        let n = self.compare.len().min(MAX_RANGES);
        let ranges: Vec<(u16, u16)> = self.compare.drain(..n).collect();
        self.next_ask += 1;
        self.counts.asks += 1;
        self.asked = Some(Asked {
            ask: self.next_ask,
            sent: Instant::now(),
            ranges: ranges.clone(),
        });
        Step::Ask(self.next_ask, ranges)
    }

    /// The peer's answer to question `ask`: differing single slots are returned (to be sent in
    /// full), larger differing ranges are split and queued for the next question.
    fn answered(&mut self, ask: u64, differ: &[(u16, u16)]) -> Option<Vec<u16>> {
        if self.asked.as_ref().is_none_or(|a| a.ask != ask) {
            return None;
        }
        let asked = self.asked.take().expect("checked");
        self.tries = 0;
        let asked: hashbrown::HashSet<(u16, u16)> = asked.ranges.into_iter().collect();
        let mut slots = Vec::new();
        for &(first, len) in differ.iter().filter(|r| asked.contains(*r)) {
            if len <= 1 {
                slots.push(first);
                continue;
            }
            let child = len.div_ceil(FANOUT);
            let end = first as u32 + len as u32;
            let mut s = first as u32;
            while s < end {
                let l = (end - s).min(child as u32);
                self.compare.push((s as u16, l as u16));
                s += l;
            }
        }
        Some(slots)
    }

    /// How long ago the last round or check started (`None`: never).
    pub fn since_round(&self) -> Option<Duration> {
        self.last_round.map(|t| t.elapsed())
    }

    /// Counts `bytes` of full slots sent; true when the round's budget is spent.
    pub fn spent(&mut self, bytes: usize) -> bool {
        self.round_bytes += bytes;
        self.round_bytes >= ROUND_BYTES
    }
}

/// The receiver's side of a question: the ranges whose digest differs from ours.
pub fn compare(ks: &Keyspace, ranges: &[(u16, u16, u64)]) -> Vec<(u16, u16)> {
    ranges
        .iter()
        .filter(|&&(first, len, _)| (first as usize) < SLOTS && len > 0)
        .filter(|&&(first, len, d)| ks.range_digest(first, len) != d)
        .map(|&(first, len, _)| (first, len))
        .collect()
}

impl Link {
    /// The next repair question to send, if one is due (the link task sends it before batches).
    pub(super) fn repair_frame(&self, ks: &Keyspace, from: u64) -> Option<bytes::Bytes> {
        let mut o = self.outbox.lock();
        let (ask, ranges) = match o.repair.step() {
            Step::Idle => return None,
            Step::Ask(ask, ranges) => (ask, ranges),
            Step::GiveUp(_) if o.repair.checking => {
                tracing::debug!(peer = %format_args!("{:x}", self.peer), "anti-entropy check unanswered; next period");
                o.repair.stop();
                return None;
            }
            Step::GiveUp(ranges) => {
                tracing::warn!(peer = %format_args!("{:x}", self.peer), ranges = ranges.len(),
                    "peer never answered a digest question: sending those slots in full");
                for (first, len) in ranges {
                    for s in first..first.saturating_add(len) {
                        o.resync_slots.insert(s);
                    }
                }
                o.resync = o.resync_slots.first().map(usize::from);
                return None;
            }
        };
        let session = o.session;
        drop(o);
        // Digests are computed outside the outbox lock (they lock the slots).
        let ranges: Vec<(u16, u16, u64)> = ranges
            .into_iter()
            .map(|(f, l)| (f, l, ks.range_digest(f, l)))
            .collect();
        let msg = ReplMsg::Digests {
            from,
            session,
            ask,
            ranges,
        };
        match wire::encode(msg, 0) {
            Ok(frame) => {
                self.outbox.lock().repair.counts.bytes += frame.len() as u64;
                Some(frame)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a digest question");
                None
            }
        }
    }

    /// A probe for a link that is backing off: an empty digest question (ask 0, which no
    /// answer matches). The peer answers it, and each side then hears the other after the
    /// silence, which re-sends what was in flight at once (`pacing`).
    pub(super) fn probe_frame(&self, from: u64) -> Option<bytes::Bytes> {
        let mut o = self.outbox.lock();
        if !o.rtt_probe_due() {
            return None;
        }
        let session = o.session;
        drop(o);
        let msg = ReplMsg::Digests {
            from,
            session,
            ask: 0,
            ranges: Vec::new(),
        };
        wire::encode(msg, 0).ok()
    }

    /// The peer answered digest question `ask` of `session`.
    pub fn on_digest_diff(&self, session: u64, ask: u64, differ: &[(u16, u16)]) {
        let slots = self.slots.lock().clone();
        let mut o = self.outbox.lock();
        if o.session != session {
            return;
        }
        if o.repair.checking {
            let Some(found) = o.repair.answered(ask, differ) else {
                return;
            };
            let differs = !found.is_empty() || o.repair.busy();
            o.repair.stop(); // the check is over either way
            if !differs {
                o.repair.suspect = false;
                return;
            }
            if !o.repair.suspect {
                // Perhaps a change on its way to either side: ask again shortly.
                o.repair.suspect = true;
                return;
            }
            // Two quiet checks in a row differ: a new session, whose round finds and ships it.
            o.repair.suspect = false;
            drop(o);
            tracing::info!(peer = %format_args!("{:x}", self.peer), "anti-entropy: peer differs; repair by digests");
            self.restart_session();
            return;
        }
        let Some(found) = o.repair.answered(ask, differ) else {
            return;
        };
        for s in found.into_iter().filter(|&s| slots.contains(s)) {
            o.resync_slots.insert(s);
        }
        o.resync = o.resync_slots.first().map(usize::from);
        drop(o);
        self.wake.notify_one();
    }

    /// The peer does not know `session` (it restarted): a new session, repaired by digests.
    /// Acks of the old session's other batches say the same and are ignored, so one restart
    /// of the peer costs one round, not one per batch that was in flight.
    pub fn lost_session(&self, session: u64) {
        if self.outbox.lock().session != session {
            return;
        }
        tracing::info!(peer = %format_args!("{:x}", self.peer), "peer lost its session: repair by digests");
        self.restart_session();
    }

    /// Periodic anti-entropy: starts a *check*, one digest question over the link's slots
    /// within the current session, when
    /// - the link is connected and idle (nothing queued, in flight or being repaired),
    /// - the node is quiet: no local write and no merge for [`QUIET`], so no change of ours
    ///   or of the peer's is on its way (the peer's would have been merged here),
    /// - and its last round started `repl-antientropy` ago, or [`CONFIRM_AFTER`] ago when the
    ///   last check found a difference.
    ///
    /// 1. Equal digests end the check. It shipped nothing, so batches went on claiming and
    ///    the watermark stayed: tombstone collection, eviction, slot purges and `WAIT` do not
    ///    notice it.
    /// 2. A difference makes the next check come [`CONFIRM_AFTER`] later; a change from a
    ///    third region still on its way to one side is gone by then.
    /// 3. Two checks in a row that differ start a new session, whose round descends to the
    ///    differing slots and ships them. A new session because those slots go out with their
    ///    old stamps: under the current delivery promise a receiver lacking such a key would
    ///    drop it as a late duplicate, and a new session promises nothing until its repair is
    ///    acknowledged, exactly as after a peer's restart.
    pub(super) fn start_antientropy_if_due(&self) {
        let period = Duration::from_millis(self.antientropy_ms.load(Relaxed));
        if period.is_zero() || !self.connected.load(Relaxed) {
            return;
        }
        // Lock order: slots, then outbox (as everywhere); the slots are copied only when due.
        let due = |o: &mut Outbox| {
            let now = Instant::now();
            let seen = o.seen();
            let r = &mut o.repair;
            if r.quiet.0 != seen || r.quiet.1.is_none() {
                r.quiet = (seen, Some(now));
            }
            let quiet = r.quiet.1.is_some_and(|t| now.duration_since(t) >= QUIET);
            let wait = if r.suspect { CONFIRM_AFTER } else { period };
            quiet && r.since_round().is_some_and(|d| d >= wait) && o.is_idle()
        };
        if !due(&mut self.outbox.lock()) {
            return;
        }
        let slots = self.slots.lock().clone();
        let mut o = self.outbox.lock();
        if due(&mut o) {
            o.repair.check(&slots);
            drop(o);
            self.wake.notify_one();
        }
    }

    /// Repair figures of this link.
    pub fn repair_counts(&self) -> RepairCounts {
        self.outbox.lock().repair.counts
    }
}

/// Whether the batch being built (which took `keys` changed keys) may also carry full slots.
/// Changed keys go first: slots wait until the queue is drained. And when changed keys were
/// sent since the slots were found different, the slots are compared again first (a new round):
/// after a partition the outbox's backlog usually carries what made them differ, and sending
/// them whole as well would ship every such key twice.
pub(super) fn slots_now(o: &mut Outbox, keys: usize) -> bool {
    if o.resync_slots.is_empty() {
        o.repair.keys_since_found = false;
        return true;
    }
    if keys > 0 {
        o.repair.keys_since_found = true;
    }
    if !o.queue_is_empty() {
        return false;
    }
    if o.repair.keys_since_found && !o.repair.busy() {
        o.repair.keys_since_found = false;
        let rest = std::mem::take(&mut o.resync_slots);
        o.resync = None;
        o.repair.add(&rest);
        return false;
    }
    true
}

/// After a batch took full slots (`bytes` of them, `sent` slots): counts them, and when the
/// round's budget is spent, moves the slots still to send back to comparison (a new round).
pub(super) fn after_sync(o: &mut Outbox, sent: usize, bytes: usize) {
    o.repair.counts.slots += sent as u64;
    if o.repair.spent(bytes) && !o.resync_slots.is_empty() {
        let rest = std::mem::take(&mut o.resync_slots);
        o.resync = None;
        o.repair.counts.rounds += 1;
        o.repair.round_bytes = 0;
        o.repair.compare.extend(top_ranges(&rest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_descends_to_the_differing_slots() {
        let all = SlotSet::from_ranges(&[(0, 16383)]);
        let mut r = Repair::default();
        r.start(&all);
        assert_eq!(r.counts.rounds, 1);
        let Step::Ask(ask, ranges) = r.step() else {
            panic!("no question")
        };
        assert_eq!(ranges.len(), 256);
        assert_eq!(ranges[1], (64, 64));
        // Nothing else is asked while the question is open.
        assert!(matches!(r.step(), Step::Idle));
        // Slot 100 differs: (64, 64) splits in 8 ranges of 8, then 8 single slots.
        assert_eq!(r.answered(ask + 1, &[(64, 64)]), None, "unknown question");
        assert_eq!(r.answered(ask, &[(64, 64)]), Some(vec![]));
        let Step::Ask(ask, ranges) = r.step() else {
            panic!()
        };
        assert_eq!(ranges.len(), 8);
        assert_eq!(r.answered(ask, &[(96, 8), (5000, 8)]), Some(vec![]));
        let Step::Ask(ask, ranges) = r.step() else {
            panic!()
        };
        assert_eq!(ranges, (96..104).map(|s| (s, 1)).collect::<Vec<_>>());
        assert_eq!(r.answered(ask, &[(100, 1)]), Some(vec![100]));
        assert!(!r.busy());
        assert_eq!(r.counts.asks, 3);
    }

    #[test]
    fn odd_slot_sets_are_covered_exactly() {
        let set = SlotSet::from_ranges(&[(3, 70), (100, 100)]);
        let ranges = top_ranges(&set);
        assert_eq!(ranges, vec![(3, 64), (67, 4), (100, 1)]);
        let mut r = Repair::default();
        r.start(&set);
        let Step::Ask(ask, _) = r.step() else {
            panic!()
        };
        // A 4-slot range splits into single slots.
        r.answered(ask, &[(67, 4)]);
        let Step::Ask(_, ranges) = r.step() else {
            panic!()
        };
        assert_eq!(ranges, vec![(67, 1), (68, 1), (69, 1), (70, 1)]);
    }
}
