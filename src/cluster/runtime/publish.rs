//! What the control loop sends out on each pass: this node's record, by gossip, to every node
//! it knows (and its region's records to the other regions), and to the replicator the links
//! the current roles imply.

use super::{Control, GossipFrame};
use crate::clock::unix_ms;
use crate::cluster::topology::{NodeInfo, Role};
use crate::repl::{LinkKind, LinkSpec};
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Instant;

impl Control {
    /// Sends this node's record (with its current replication offset) to every known node;
    /// returns the version sent.
    pub(super) fn gossip(&mut self) -> u64 {
        self.last_gossip = Instant::now();
        let offset = {
            let t = self.cluster.topology();
            match t.me().role {
                Role::Primary => self.repl.offset(),
                Role::Replica { of } => self.repl.applied_from(of),
            }
        };
        let info = self
            .cluster
            .update(|t| t.update_me(unix_ms(), |me| me.repl_offset = offset));
        let version = info.version;
        let Some(frame) = GossipFrame::V1(info).encode() else {
            return version;
        };
        let mut targets: Vec<SocketAddr> = self.members.values().copied().collect();
        let t = self.cluster.topology();
        for v in t.nodes.values().filter(|v| v.info.id != t.myself) {
            targets.push(v.info.mesh);
        }
        targets.sort();
        targets.dedup();
        self.cluster
            .messages_sent
            .fetch_add(targets.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for to in targets {
            self.send(to, frame.clone());
        }
        // The other regions get every record of ours (see `regions`).
        let remote = self.cluster.regions.targets();
        if !remote.is_empty() {
            // Version 0 = a placeholder guessed from `cluster-nodes`, not a published record:
            // it lacks the node's `region-announce-addr`, so the other regions would dial an
            // address they may not reach. The node's own record follows within a gossip round.
            let records: Vec<NodeInfo> = t
                .nodes
                .values()
                .filter(|v| v.info.version > 0)
                .map(|v| v.info.clone())
                .collect();
            if let Some(frame) = GossipFrame::Region(records).encode() {
                for to in remote {
                    self.send(to, frame.clone());
                }
            }
        }
        version
    }

    /// Sends a frame without waiting (a slow or unreachable peer must not stall the loop).
    fn send(&self, to: SocketAddr, frame: Bytes) {
        let mesh = self.mesh.clone();
        tokio::spawn(async move {
            let _ = mesh.send_frame(to, frame).await;
        });
    }

    /// Links implied by roles: a primary to each of its replicas and to the owner of each of
    /// its slots in every other region; a replica to its primary. Links inside the region carry
    /// every slot of the shard's primary.
    pub(super) fn wanted_links(&self) -> Vec<LinkSpec> {
        let t = self.cluster.topology();
        match t.me().role {
            Role::Primary => {
                let slots = t.owned_by(t.myself);
                let mut links: Vec<LinkSpec> = t
                    .replicas_of(t.myself)
                    .iter()
                    .map(|r| LinkSpec {
                        peer: r.info.id,
                        kind: LinkKind::Replica,
                        group: String::new(),
                        addr: r.info.mesh,
                        slots: slots.clone(),
                    })
                    .collect();
                links.extend(self.cluster.regions.owners_of(&slots).into_iter().map(|o| {
                    LinkSpec {
                        peer: o.id,
                        kind: LinkKind::Region,
                        group: o.region,
                        addr: o.mesh,
                        slots: o.slots,
                    }
                }));
                links
            }
            Role::Replica { of } => t
                .node(of)
                .map(|p| LinkSpec {
                    peer: of,
                    kind: LinkKind::Primary,
                    group: String::new(),
                    addr: p.info.mesh,
                    slots: t.owned_by(of),
                })
                .into_iter()
                .collect(),
        }
    }
}
