//! Several in-process regions side by side (each a hash-slot cluster of `ClusterNode`s) that
//! find each other through `region-peers` and replicate over real QUIC with mutual TLS. Shared
//! by the test binaries that drive regions node by node (`tests/regions.rs`,
//! `tests/slot_purge.rs`); `common::regions` is the higher-level variant with cluster clients.

use super::cluster::{free_ports, shared_pki, ClusterNode, NodeSpec};
use std::time::Duration;

/// Regions started side by side; `nodes[r][i]` is node `i` of region `r` (primaries first).
pub struct World {
    pub specs: Vec<Vec<NodeSpec>>,
    pub nodes: Vec<Vec<Option<ClusterNode>>>,
}

impl World {
    /// Starts one region per `(nodes, replicas)`. Every node gets the mesh address of the first
    /// node of each other region as `region-peers`, plus the flags `extra(region, node)`.
    pub async fn start(
        layout: &[(usize, usize)],
        extra: impl Fn(usize, usize) -> Vec<(String, String)>,
    ) -> World {
        let pki = shared_pki();
        let ports: Vec<Vec<(u16, u16)>> = layout.iter().map(|l| free_ports(l.0)).collect();
        let mut specs = Vec::new();
        for (r, (&(_, replicas), ports_r)) in layout.iter().zip(&ports).enumerate() {
            let list = ports_r
                .iter()
                .map(|(p, m)| format!("127.0.0.1:{p}@{m}"))
                .collect::<Vec<_>>()
                .join(" ");
            let peers = ports
                .iter()
                .enumerate()
                .filter(|(o, _)| *o != r)
                .map(|(_, p)| format!("127.0.0.1:{}", p[0].1))
                .collect::<Vec<_>>()
                .join(" ");
            specs.push(
                ports_r
                    .iter()
                    .enumerate()
                    .map(|(i, &(resp_port, mesh_port))| {
                        let mut flags = extra(r, i);
                        flags.push(("region-peers".into(), peers.clone()));
                        NodeSpec {
                            resp_port,
                            mesh_port,
                            region: format!("r{r}"),
                            cluster_nodes: list.clone(),
                            replicas,
                            tls_dir: pki.clone(),
                            extra: flags,
                        }
                    })
                    .collect::<Vec<_>>(),
            );
        }
        let mut nodes = Vec::new();
        for region in &specs {
            let mut v = Vec::new();
            for s in region {
                v.push(Some(ClusterNode::start(s).await));
            }
            nodes.push(v);
        }
        // Every node serves before the test starts (see `ClusterNode::wait_serving`).
        for (r, region) in nodes.iter().enumerate() {
            for (i, n) in region.iter().flatten().enumerate() {
                let serving = n.wait_serving(super::cluster::FORM_TIMEOUT).await;
                assert!(serving, "node {r}/{i} never reached cluster_state:ok");
            }
        }
        World { specs, nodes }
    }

    pub fn node(&self, r: usize, i: usize) -> &ClusterNode {
        self.nodes[r][i].as_ref().expect("node is running")
    }

    pub async fn con(&self, r: usize, i: usize) -> redis::aio::MultiplexedConnection {
        self.node(r, i).con().await
    }

    /// Stops node (r, i); [`World::start_again`] brings it back with the same spec.
    pub async fn stop(&mut self, r: usize, i: usize) {
        self.nodes[r][i].take().expect("running").shutdown().await;
    }

    /// Starts node (r, i) again and waits (bounded, 3 s) until it says `cluster_state:ok`. A
    /// region left without an owner for some slots never does; the wait then just ends.
    pub async fn start_again(&mut self, r: usize, i: usize) {
        let n = ClusterNode::start(&self.specs[r][i]).await;
        n.wait_serving(Duration::from_secs(3)).await;
        self.nodes[r][i] = Some(n);
    }

    /// Waits (bounded) until node (r, i) sees every other region up with links.
    pub async fn wait_linked(&self, r: usize, i: usize) {
        let others = self.specs.len() - 1;
        let addr = self.node(r, i).addr;
        let ok = super::eventually(Duration::from_secs(20), || async move {
            let mut c = super::client(addr).await;
            let info: String = crate::q!(c, "INFO", "regions").unwrap_or_default();
            info.contains(&format!("peer_regions:{others}\r\n"))
                && info.matches("state=up").count() == others
        })
        .await;
        assert!(ok, "node {r}/{i} never saw the other regions up");
    }

    pub async fn shutdown(self) {
        for n in self.nodes.into_iter().flatten().flatten() {
            n.shutdown().await;
        }
    }
}
