//! Operator tooling: `meridian certs` (a dev PKI for the mesh's mutual TLS), `meridian demo`
//! (a local topology of node processes), each node's admin HTTP port (`serve`): the
//! dashboard, Prometheus `/metrics`, `/health` and `/api/state` (docs/observability.md), and
//! the hidden `meridian wan-relay` (WAN latency for the compose demo in `regions/`).

pub mod demo;
pub mod http;
pub mod metrics;
pub mod serve;
pub mod state;
pub mod wan_relay;

use crate::mesh::certs::{self, Ca};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Mesh(#[from] crate::mesh::MeshError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Demo(String),
    #[error("{0}")]
    Config(String),
}

/// `meridian certs --out DIR [--names a,b]`: creates (or reuses) the deployment CA in `DIR`
/// and writes a node certificate for `names` next to it (ca.pem, node.pem, node.key), the
/// layout `cluster-tls-dir` reads.
pub fn certs(out: &Path, names: &[String]) -> Result<(), AdminError> {
    let ca = if out.join(certs::CA_KEY_FILE).exists() {
        Ca::load(out)?
    } else {
        let ca = Ca::generate()?;
        ca.write(out)?;
        ca
    };
    let material = ca.issue(names)?;
    certs::write_dir(out, &material)?;
    Ok(())
}
