//! The registry of connected clients: what CLIENT LIST/INFO/KILL and INFO clients report.
//!
//! The connection task owns its socket and its [`super::ClientState`]; the registry holds a
//! shared [`ClientHandle`] per connection with the fields other clients may read, and a kill
//! switch the connection polls between batches.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;

/// What others may see of, and do to, one connection.
pub struct ClientHandle {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub created: Instant,
    /// Milliseconds since `created` of the last command.
    pub last_active_ms: AtomicU64,
    pub name: Mutex<String>,
    pub lib_name: Mutex<String>,
    pub lib_ver: Mutex<String>,
    /// Name of the last command run (`cmd=` in CLIENT LIST), as in the command table.
    pub last_cmd: Mutex<&'static str>,
    pub resp: AtomicU8,
    pub in_multi: AtomicBool,
    pub no_evict: AtomicBool,
    pub no_touch: AtomicBool,
    pub killed: AtomicBool,
    pub kill_signal: Notify,
    /// Client-side caching: the connection's push inbox, which also carries what CLIENT LIST
    /// shows of tracking and Pub/Sub (`crate::tracking`).
    pub track: Arc<crate::tracking::Mailbox>,
}

impl ClientHandle {
    pub fn new(id: u64, addr: SocketAddr, laddr: SocketAddr) -> Self {
        ClientHandle {
            id,
            addr,
            laddr,
            created: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            name: Mutex::new(String::new()),
            lib_name: Mutex::new(String::new()),
            lib_ver: Mutex::new(String::new()),
            last_cmd: Mutex::new("NULL"),
            resp: AtomicU8::new(2),
            in_multi: AtomicBool::new(false),
            no_evict: AtomicBool::new(false),
            no_touch: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            kill_signal: Notify::new(),
            track: Arc::new(crate::tracking::Mailbox::new(id)),
        }
    }

    pub fn kill(&self) {
        self.killed.store(true, Relaxed);
        self.kill_signal.notify_one();
    }

    /// One line of CLIENT LIST, in Redis's field order.
    pub fn info_line(&self) -> String {
        let age = self.created.elapsed().as_secs();
        let idle = (self.created.elapsed().as_millis() as u64)
            .saturating_sub(self.last_active_ms.load(Relaxed))
            / 1000;
        let mut flags = String::new();
        let subs = self.track.subscriptions();
        if subs > 0 {
            flags.push('P');
        }
        if self.in_multi.load(Relaxed) {
            flags.push('x');
        }
        flags.push_str(self.track.list_flags());
        if self.no_evict.load(Relaxed) {
            flags.push('e');
        }
        if self.no_touch.load(Relaxed) {
            flags.push('T');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        format!(
            "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags={} db=0 sub={} psub=0 ssub=0 multi={} watch=0 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=16384 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir={} resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.name.lock(),
            age,
            idle,
            flags,
            subs,
            if self.in_multi.load(Relaxed) { 0 } else { -1 },
            self.last_cmd.lock(),
            self.track.list_redirect(),
            self.resp.load(Relaxed),
            self.lib_name.lock(),
            self.lib_ver.lock(),
        )
    }
}

/// All connected clients, by ID.
#[derive(Default)]
pub struct Clients {
    next_id: AtomicU64,
    map: Mutex<BTreeMap<u64, Arc<ClientHandle>>>,
}

impl Clients {
    /// Registers a connection unless `maxclients` are already connected.
    pub fn register(
        &self,
        addr: SocketAddr,
        laddr: SocketAddr,
        max: usize,
    ) -> Option<Arc<ClientHandle>> {
        let mut map = self.map.lock();
        if map.len() >= max {
            return None;
        }
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let h = Arc::new(ClientHandle::new(id, addr, laddr));
        map.insert(id, h.clone());
        Some(h)
    }

    pub fn unregister(&self, id: u64) {
        self.map.lock().remove(&id);
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<Arc<ClientHandle>> {
        self.map.lock().values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<Arc<ClientHandle>> {
        self.map.lock().get(&id).cloned()
    }
}
