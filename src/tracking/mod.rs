//! Client-side caching (CLIENT TRACKING): which client may hold which key, and the
//! invalidation messages sent when a key changes.
//!
//! The tracker is a consumer of the keyspace's mutations, like persistence and replication
//! (DESIGN.md §3): it is a [`DeltaSink`], so local writes, writes merged from replicas and from
//! other regions, and (through [`DeltaSink::dropped`]) expirations and evictions all invalidate
//! alike. It knows connections only as numeric IDs with a [`Mailbox`]; commands (`cmd`) parse
//! CLIENT TRACKING and feed it, the connection (`server`) drains the mailboxes.
//!
//! State, as in Redis's `tracking.c`:
//! - the table: key → IDs of the clients that read it in the default mode (OPTIN/OPTOUT narrow
//!   which reads count). A key's entry is removed when it is invalidated, so each read is good
//!   for one invalidation. Bounded by `tracking-table-max-keys`: past it, random keys are
//!   invalidated (their clients told) until the table fits again;
//! - the prefixes: prefix → BCAST clients; no table entries, every change matching a prefix is
//!   announced, one message per (prefix, client) per batch of commands a connection ran
//!   (`end_batch`; changes from peers, expiry and eviction at once);
//! - the modes of the tracking clients, and the mailbox of every connection (redirect targets
//!   need not track anything themselves).
//!
//! One mutex guards it all; it is touched only by tracking clients' reads and, once a client
//! has enabled tracking, by each published batch of changes.

mod mailbox;
mod state;

pub use mailbox::{Mailbox, Payload, BCAST, BROKEN_REDIR, PENDING_CAP, TRACKING};
pub use state::{Options, TrackError, TrackingInfo};

use crate::store::{Delta, DeltaSink, Origin};
use parking_lot::Mutex;
use state::State;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

thread_local! {
    /// The client whose command is running on this thread (0 = none): NOLOOP compares with it.
    static WRITER: Cell<u64> = const { Cell::new(0) };
    /// Set while FLUSHALL deletes keys: the flush sends one null invalidation instead.
    static FLUSHING: Cell<bool> = const { Cell::new(false) };
}

/// Marks `client` as the author of the changes published on this thread until dropped.
pub struct WriterScope(u64);

pub fn writer_scope(client: u64) -> WriterScope {
    WriterScope(WRITER.with(|w| w.replace(client)))
}

impl Drop for WriterScope {
    fn drop(&mut self) {
        WRITER.with(|w| w.set(self.0));
    }
}

/// Runs `f` (a keyspace flush) without per-key invalidations.
pub fn flushing<R>(f: impl FnOnce() -> R) -> R {
    let prev = FLUSHING.with(|c| c.replace(true));
    let r = f();
    FLUSHING.with(|c| c.set(prev));
    r
}

/// Counters for INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub clients: usize,
    pub keys: usize,
    pub items: usize,
    pub prefixes: usize,
}

pub struct Tracker {
    state: Mutex<State>,
    /// Something to invalidate: keys in the table or BCAST prefixes. While false, a published
    /// change costs this one atomic load.
    active: AtomicBool,
    /// The tracker is installed as a keyspace sink (done at the first CLIENT TRACKING ON, so a
    /// node nobody tracks records no deltas for it).
    installed: AtomicBool,
    max_keys: AtomicU64,
    /// Some connection has BCAST announcements waiting for the end of its batch.
    bcast_pending: AtomicBool,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            state: Mutex::new(State::default()),
            active: AtomicBool::new(false),
            installed: AtomicBool::new(false),
            max_keys: AtomicU64::new(1_000_000),
            bcast_pending: AtomicBool::new(false),
        }
    }
}

impl Tracker {
    /// Registers a connection's mailbox (every connection: any may be a redirect target).
    pub fn attach(&self, mailbox: Arc<Mailbox>) {
        self.state.lock().mailboxes.insert(mailbox.id, mailbox);
    }

    /// Forgets a closed connection: its mode, prefixes and mailbox.
    pub fn detach(&self, id: u64) {
        let mut st = self.state.lock();
        st.end_batch(id);
        st.disable(id);
        st.mailboxes.remove(&id);
        self.refresh(&st);
    }

    pub fn client_exists(&self, id: u64) -> bool {
        self.state.lock().mailboxes.contains_key(&id)
    }

    /// `tracking-table-max-keys` (0 = no limit). Lowering it invalidates keys at once.
    pub fn set_max_keys(&self, n: u64) {
        self.max_keys.store(n, Relaxed);
        let mut st = self.state.lock();
        if n > 0 && st.table.len() > n as usize {
            st.limit(n as usize);
        }
        self.refresh(&st);
    }

    /// True once this tracker must be installed as a keyspace sink and was not yet.
    pub fn claim_install(&self) -> bool {
        !self.installed.swap(true, Relaxed)
    }

    /// CLIENT TRACKING ON: validates against the client's current mode, then enables.
    pub fn enable(&self, id: u64, opts: Options) -> Result<(), TrackError> {
        let mut st = self.state.lock();
        st.enable(id, opts)?;
        self.refresh(&st);
        Ok(())
    }

    /// CLIENT TRACKING OFF.
    pub fn disable(&self, id: u64) {
        let mut st = self.state.lock();
        st.disable(id);
        self.refresh(&st);
    }

    /// CLIENT TRACKINGINFO / GETREDIR.
    pub fn info(&self, id: u64) -> TrackingInfo {
        self.state.lock().info(id)
    }

    /// Remembers that client `id` (default mode) may cache `keys`, then enforces the limit.
    pub fn remember<'k>(&self, id: u64, keys: impl Iterator<Item = &'k [u8]>) {
        let mut st = self.state.lock();
        for k in keys {
            st.remember(id, k);
        }
        let max = self.max_keys.load(Relaxed) as usize;
        if max > 0 && st.table.len() > max {
            st.limit(max);
        }
        self.refresh(&st);
    }

    /// FLUSHALL: every tracking client is told to drop everything; the table is emptied.
    pub fn flush_all(&self) {
        let mut st = self.state.lock();
        st.flush_all();
        self.refresh(&st);
    }

    /// The keys `keys` changed (written by `writer`, 0 = no local client).
    pub fn invalidate(&self, keys: &[&[u8]], writer: u64) {
        if !self.active.load(Relaxed) || keys.is_empty() {
            return;
        }
        let mut st = self.state.lock();
        st.invalidate(keys, writer);
        self.refresh(&st);
    }

    /// The connection `writer` finished a batch of commands (or is about to block): its
    /// writes are announced to BCAST clients now, grouped.
    #[inline]
    pub fn end_batch(&self, writer: u64) {
        if !self.bcast_pending.load(Relaxed) {
            return;
        }
        let mut st = self.state.lock();
        st.end_batch(writer);
        self.refresh(&st);
    }

    pub fn stats(&self) -> Stats {
        let st = self.state.lock();
        Stats {
            clients: st.modes.len(),
            keys: st.table.len(),
            items: st.items,
            prefixes: st.prefixes.len(),
        }
    }

    fn refresh(&self, st: &State) {
        let active = !st.table.is_empty() || !st.prefixes.is_empty();
        if self.active.load(Relaxed) != active {
            self.active.store(active, Relaxed);
        }
        let pending = st.has_pending_bcast();
        if self.bcast_pending.load(Relaxed) != pending {
            self.bcast_pending.store(pending, Relaxed);
        }
    }
}

impl DeltaSink for Tracker {
    fn publish(&self, deltas: Vec<Delta>, origin: Origin) {
        if !self.active.load(Relaxed) || FLUSHING.with(|f| f.get()) {
            return;
        }
        let writer = match origin {
            Origin::Local => WRITER.with(|w| w.get()),
            Origin::Peer(_) => 0,
        };
        let keys: Vec<&[u8]> = deltas.iter().map(|d| &d.key[..]).collect();
        self.invalidate(&keys, writer);
    }

    fn dropped(&self, keys: &[Box<[u8]>]) {
        if !self.active.load(Relaxed) {
            return;
        }
        let keys: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        self.invalidate(&keys, 0);
    }
}
