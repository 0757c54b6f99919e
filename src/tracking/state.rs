//! The tracker's state under its mutex: the key table, the BCAST prefixes, the clients' modes,
//! and how one invalidation reaches a client (itself, or its REDIRECT target).
//!
//! Validation and texts follow Redis 7's `networking.c`/`tracking.c`, checked side by side with
//! `redis-server` 7.0.

use super::mailbox::{
    invalidate_message, invalidate_push, redir_broken_push, Mailbox, Payload, BCAST, TRACKING,
};
use indexmap::IndexMap;
use smallvec::SmallVec;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A CLIENT TRACKING ON request, already parsed.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub redirect: u64,
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    pub prefixes: Vec<Box<[u8]>>,
}

/// Refusals of CLIENT TRACKING ON that depend on the client's state, with Redis's texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackError {
    #[error("ERR PREFIX option requires BCAST mode to be enabled")]
    PrefixWithoutBcast,
    #[error("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.")]
    BcastSwitch,
    #[error("ERR OPTIN and OPTOUT are not compatible with BCAST")]
    OptWithBcast,
    #[error("ERR You can't specify both OPTIN mode and OPTOUT mode")]
    OptinAndOptout,
    #[error("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.")]
    OptSwitch,
    #[error("ERR Prefix '{0}' overlaps with an existing prefix '{1}'. Prefixes for a single client must not overlap.")]
    OverlapExisting(String, String),
    #[error("ERR Prefix '{0}' overlaps with another provided prefix '{1}'. Prefixes for a single client must not overlap.")]
    OverlapGiven(String, String),
}

/// What CLIENT TRACKINGINFO reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackingInfo {
    pub on: bool,
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    pub broken_redirect: bool,
    pub redirect: u64,
    pub prefixes: Vec<Box<[u8]>>,
}

/// One tracking client's mode.
#[derive(Debug, Clone, Default)]
pub(super) struct Mode {
    bcast: bool,
    optin: bool,
    optout: bool,
    noloop: bool,
    redirect: u64,
    broken_redirect: bool,
    prefixes: Vec<Box<[u8]>>,
}

#[derive(Default)]
pub(super) struct State {
    /// Key → clients that may cache it. Insertion-ordered with O(1) swap-removal, so a random
    /// victim can be picked when the table is over its limit.
    pub table: IndexMap<Box<[u8]>, SmallVec<[u64; 2]>, ahash::RandomState>,
    /// Sum of the clients over every key (`tracking_total_items`).
    pub items: usize,
    /// BCAST prefix → its clients.
    pub prefixes: BTreeMap<Box<[u8]>, SmallVec<[u64; 2]>>,
    pub modes: HashMap<u64, Mode>,
    pub mailboxes: HashMap<u64, Arc<Mailbox>>,
    /// Keys written by a client in its current batch of commands, announced to BCAST clients
    /// when the batch ends (`end_batch`): like Redis, which groups them per event-loop turn.
    pending_bcast: HashMap<u64, Vec<Box<[u8]>>>,
    /// Consecutive limit runs that ended still over the limit (Redis's `timeout_counter`).
    over_limit_runs: usize,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Either is a prefix of the other (Redis's `stringCheckPrefix`).
fn overlaps(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

impl State {
    pub fn enable(&mut self, id: u64, o: Options) -> Result<(), TrackError> {
        if !o.bcast && !o.prefixes.is_empty() {
            return Err(TrackError::PrefixWithoutBcast);
        }
        let cur = self.modes.get(&id);
        if cur.is_some_and(|m| m.bcast != o.bcast) {
            return Err(TrackError::BcastSwitch);
        }
        if o.bcast && (o.optin || o.optout) {
            return Err(TrackError::OptWithBcast);
        }
        if o.optin && o.optout {
            return Err(TrackError::OptinAndOptout);
        }
        if cur.is_some_and(|m| (o.optin && m.optout) || (o.optout && m.optin)) {
            return Err(TrackError::OptSwitch);
        }
        if o.bcast {
            for (i, p) in o.prefixes.iter().enumerate() {
                if let Some(old) = cur.and_then(|m| m.prefixes.iter().find(|e| overlaps(e, p))) {
                    return Err(TrackError::OverlapExisting(lossy(p), lossy(old)));
                }
                if let Some(other) = o.prefixes[i + 1..].iter().find(|q| overlaps(p, q)) {
                    return Err(TrackError::OverlapGiven(lossy(p), lossy(other)));
                }
            }
        }
        let mode = self.modes.entry(id).or_default();
        mode.bcast = o.bcast;
        mode.optin = o.optin;
        mode.optout = o.optout;
        mode.noloop = o.noloop;
        mode.redirect = o.redirect;
        mode.broken_redirect = false;
        if o.bcast {
            // Like Redis, BCAST without PREFIX tracks the empty prefix (every key), and a
            // second ON adds prefixes to those the client has.
            let mut new = o.prefixes;
            if new.is_empty() {
                new.push(Box::default());
            }
            for p in new {
                if !mode.prefixes.contains(&p) {
                    mode.prefixes.push(p.clone());
                    let clients = self.prefixes.entry(p).or_default();
                    if !clients.contains(&id) {
                        clients.push(id);
                    }
                }
            }
        }
        if let Some(m) = self.mailboxes.get(&id) {
            m.set_mode(
                TRACKING | if o.bcast { BCAST } else { 0 },
                o.redirect as i64,
            );
        }
        Ok(())
    }

    /// Stops tracking for `id`. Its table entries stay until their keys are invalidated (as in
    /// Redis: they are skipped, and freed then).
    pub fn disable(&mut self, id: u64) {
        let Some(mode) = self.modes.remove(&id) else {
            return;
        };
        if let Some(m) = self.mailboxes.get(&id) {
            m.set_mode(0, -1);
        }
        for p in mode.prefixes {
            if let Some(clients) = self.prefixes.get_mut(&p) {
                clients.retain(|c| *c != id);
                if clients.is_empty() {
                    self.prefixes.remove(&p);
                }
            }
        }
    }

    pub fn info(&self, id: u64) -> TrackingInfo {
        match self.modes.get(&id) {
            None => TrackingInfo::default(),
            Some(m) => TrackingInfo {
                on: true,
                bcast: m.bcast,
                optin: m.optin,
                optout: m.optout,
                noloop: m.noloop,
                broken_redirect: m.broken_redirect,
                redirect: m.redirect,
                prefixes: {
                    let mut p = m.prefixes.clone();
                    p.sort();
                    p
                },
            },
        }
    }

    pub fn remember(&mut self, id: u64, key: &[u8]) {
        let ids = match self.table.get_mut(key) {
            Some(ids) => ids,
            None => self.table.entry(key.into()).or_default(),
        };
        if !ids.contains(&id) {
            ids.push(id);
            self.items += 1;
        }
    }

    /// Invalidates random keys until the table holds at most `max`, with Redis's effort bound:
    /// 100 keys per run, more each consecutive run that could not get under the limit.
    pub fn limit(&mut self, max: usize) {
        use rand::Rng;
        let mut effort = 100 * (self.over_limit_runs + 1);
        let mut rng = rand::thread_rng();
        while effort > 0 && self.table.len() > max {
            effort -= 1;
            let i = rng.gen_range(0..self.table.len());
            let key = self.table.get_index(i).map(|(k, _)| k.clone());
            if let Some(key) = key {
                self.invalidate_key(&key, 0);
            }
        }
        if self.table.len() > max {
            self.over_limit_runs += 1;
        } else {
            self.over_limit_runs = 0;
        }
    }

    pub fn flush_all(&mut self) {
        let ids: Vec<u64> = self.modes.keys().copied().collect();
        for id in ids {
            let resp3 = self.mailboxes.get(&id).is_some_and(|m| m.resp3());
            self.deliver(id, Payload::All { resp3 });
        }
        self.table.clear();
        self.items = 0;
    }

    pub fn invalidate(&mut self, keys: &[&[u8]], writer: u64) {
        if !self.prefixes.is_empty() {
            if writer != 0 {
                let pending = self.pending_bcast.entry(writer).or_default();
                pending.extend(keys.iter().map(|k| Box::from(*k)));
            } else {
                let mut keys = keys.to_vec();
                keys.sort_unstable();
                keys.dedup();
                self.broadcast(&keys, writer);
            }
        }
        if !self.table.is_empty() {
            for k in keys {
                self.invalidate_key(k, writer);
            }
        }
    }

    pub fn has_pending_bcast(&self) -> bool {
        !self.pending_bcast.is_empty()
    }

    /// Announces what `writer` changed in its batch to the BCAST clients: each key once, in
    /// byte order (Redis iterates a radix tree).
    pub fn end_batch(&mut self, writer: u64) {
        let Some(mut keys) = self.pending_bcast.remove(&writer) else {
            return;
        };
        keys.sort_unstable();
        keys.dedup();
        let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        self.broadcast(&refs, writer);
    }

    /// One message per (prefix, client) with the batch's keys under that prefix; a NOLOOP
    /// client does not hear of its own writes.
    fn broadcast(&mut self, keys: &[&[u8]], writer: u64) {
        let mut sends: Vec<(u64, Vec<&[u8]>)> = Vec::new();
        for (prefix, clients) in &self.prefixes {
            let matching: Vec<&[u8]> = keys
                .iter()
                .copied()
                .filter(|k| k.starts_with(prefix))
                .collect();
            if matching.is_empty() {
                continue;
            }
            for &c in clients {
                let noloop = self.modes.get(&c).is_some_and(|m| m.noloop);
                if noloop && c == writer {
                    continue;
                }
                sends.push((c, matching.clone()));
            }
        }
        for (c, keys) in sends {
            self.deliver(c, Payload::Keys(&keys));
        }
    }

    fn invalidate_key(&mut self, key: &[u8], writer: u64) {
        let Some(ids) = self.table.swap_remove(key) else {
            return;
        };
        self.items -= ids.len();
        for id in ids {
            let Some(mode) = self.modes.get(&id) else {
                continue;
            };
            if mode.bcast || (mode.noloop && id == writer) {
                continue;
            }
            self.deliver(id, Payload::Keys(&[key]));
        }
    }

    /// Sends one invalidation for tracking client `id`, to itself or its REDIRECT target.
    fn deliver(&mut self, id: u64, p: Payload<'_>) {
        let Some(mode) = self.modes.get_mut(&id) else {
            return;
        };
        let (target, redirected) = if mode.redirect != 0 {
            match self.mailboxes.get(&mode.redirect) {
                Some(t) => (t, true),
                None => {
                    mode.broken_redirect = true;
                    let redirect = mode.redirect;
                    if let Some(me) = self.mailboxes.get(&id) {
                        me.mark_broken();
                        if me.resp3() {
                            me.post(|b| redir_broken_push(b, redirect));
                        }
                    }
                    return;
                }
            }
        } else {
            match self.mailboxes.get(&id) {
                Some(t) => (t, false),
                None => return,
            }
        };
        if target.resp3() {
            target.post(|b| invalidate_push(b, p));
        } else if redirected && target.pubsub() {
            target.post(|b| invalidate_message(b, p));
        }
        // A RESP2 client without a subscribed redirect target has no way to receive pushes.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn state_with(ids: &[u64]) -> State {
        let mut st = State::default();
        for &id in ids {
            let m = Arc::new(Mailbox::new(id));
            m.set_resp3(true);
            st.mailboxes.insert(id, m);
        }
        st
    }

    fn drained(st: &State, id: u64) -> Vec<u8> {
        let mut out = BytesMut::new();
        st.mailboxes[&id].drain_into(&mut out);
        out.to_vec()
    }

    #[test]
    fn one_read_one_invalidation_and_items_counted() {
        let mut st = state_with(&[1, 2]);
        st.enable(1, Options::default()).unwrap();
        st.enable(2, Options::default()).unwrap();
        st.remember(1, b"k");
        st.remember(2, b"k");
        st.remember(1, b"k");
        assert_eq!((st.table.len(), st.items), (1, 2));
        st.invalidate(&[b"k"], 0);
        assert_eq!((st.table.len(), st.items), (0, 0));
        assert_eq!(
            drained(&st, 1),
            b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"
        );
        st.invalidate(&[b"k"], 0);
        assert!(drained(&st, 1).is_empty());
    }

    #[test]
    fn limit_invalidates_until_the_table_fits() {
        let mut st = state_with(&[1]);
        st.enable(1, Options::default()).unwrap();
        for i in 0..50 {
            st.remember(1, format!("k{i}").as_bytes());
        }
        st.limit(10);
        assert_eq!(st.table.len(), 10);
        let pushes = drained(&st, 1);
        let n = pushes.windows(10).filter(|w| w == b"invalidate").count();
        assert_eq!(n, 40);
    }

    #[test]
    fn prefixes_must_not_overlap_and_noloop_skips_the_writer() {
        let mut st = state_with(&[1]);
        let bcast = |p: &[&str], noloop| Options {
            bcast: true,
            noloop,
            prefixes: p.iter().map(|s| s.as_bytes().into()).collect(),
            ..Options::default()
        };
        assert_eq!(
            st.enable(1, bcast(&["a", "ab"], false)),
            Err(TrackError::OverlapGiven("a".into(), "ab".into()))
        );
        st.enable(1, bcast(&["a"], true)).unwrap();
        assert_eq!(
            st.enable(1, bcast(&["abc"], true)),
            Err(TrackError::OverlapExisting("abc".into(), "a".into()))
        );
        st.invalidate(&[b"a1", b"b1"], 1);
        st.end_batch(1);
        assert!(drained(&st, 1).is_empty());
        // Another client's batch: announced once at its end, keys deduplicated and sorted.
        st.invalidate(&[b"a2", b"b1"], 2);
        st.invalidate(&[b"a1", b"a2"], 2);
        assert!(drained(&st, 1).is_empty());
        st.end_batch(2);
        assert_eq!(
            drained(&st, 1),
            b">2\r\n$10\r\ninvalidate\r\n*2\r\n$2\r\na1\r\n$2\r\na2\r\n"
        );
        st.disable(1);
        assert!(st.prefixes.is_empty());
    }

    #[test]
    fn redirect_to_a_gone_client_is_reported_once_per_invalidation() {
        let mut st = state_with(&[1]);
        st.enable(
            1,
            Options {
                redirect: 9,
                ..Options::default()
            },
        )
        .unwrap();
        st.remember(1, b"k");
        st.invalidate(&[b"k"], 0);
        assert_eq!(
            drained(&st, 1),
            b">2\r\n$21\r\ntracking-redir-broken\r\n:9\r\n"
        );
        assert!(st.info(1).broken_redirect);
        assert_eq!(st.mailboxes[&1].list_flags(), "tR");
    }
}
