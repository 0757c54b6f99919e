//! In-memory replication between replicators of one test (no QUIC): a [`Wire`] delivers each
//! frame straight to the replicator on its address, and can cut addresses off.

use super::*;
use crate::clock::Hlc;
use std::collections::HashSet;
use std::sync::Weak;

/// Delivers each frame to the replicator on its address, unless that address is down;
/// remembers every frame delivered to each address.
#[derive(Default)]
pub(super) struct Wire {
    pub(super) nodes: Mutex<HashMap<SocketAddr, Weak<Replicator>>>,
    pub(super) down: Mutex<HashSet<SocketAddr>>,
    pub(super) frames: Mutex<HashMap<SocketAddr, Vec<bytes::Bytes>>>,
}

impl Transport for Wire {
    fn send(
        &self,
        to: SocketAddr,
        frame: bytes::Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        let target = if self.down.lock().contains(&to) {
            None
        } else {
            self.nodes.lock().get(&to).and_then(Weak::upgrade)
        };
        if target.is_some() {
            self.frames
                .lock()
                .entry(to)
                .or_default()
                .push(frame.clone());
        }
        Box::pin(async move {
            let target = target.ok_or("unreachable")?;
            target.on_frame(&frame).await;
            Ok(())
        })
    }
}

pub(super) struct Node {
    pub(super) repl: Arc<Replicator>,
    pub(super) ks: Arc<Keyspace>,
}

/// A replicator with its keyspace, reachable on `addr` through `wire`.
pub(super) fn node(wire: &Arc<Wire>, id: u64, addr: SocketAddr) -> Node {
    let repl = Replicator::new(id, wire.clone());
    let ks = Arc::new(Keyspace::new(
        Arc::new(Hlc::new(id, Duration::from_millis(500))),
        None,
    ));
    repl.attach(ks.clone());
    wire.nodes.lock().insert(addr, Arc::downgrade(&repl));
    Node { repl, ks }
}
