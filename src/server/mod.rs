//! The node's network front: the RESP listener, one task per connection, and the background
//! tasks (active expiry, persistence), all stopped by one shutdown signal.
//!
//! Wiring ([`spawn`]) reads like the picture in DESIGN.md §3: clock → keyspace → persistence
//! (load, then log) → listeners → cluster layer → node → tasks. `main` and the in-process tests start nodes the same way.

mod conn;

use crate::clock::{random_node_id, Hlc};
use crate::cmd::{server_apply_settings, Node};
use crate::config::Config;
use crate::persist::Persist;
use crate::store::Keyspace;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("no bind address configured")]
    NoBind,
    #[error("debug-clock-offset: at most 16 skewed clocks per process")]
    ClockSlots,
    #[error("cannot start the cluster layer: {0}")]
    Cluster(crate::cluster::runtime::StartError),
    #[error("cannot load the data directory: {0}")]
    Persist(crate::persist::PersistError),
    #[error("{0}")]
    Admin(crate::admin::AdminError),
}

/// A running node.
pub struct Running {
    pub node: Arc<Node>,
    /// Addresses actually bound (port 0 resolved).
    pub addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    cluster: Option<crate::cluster::runtime::Runtime>,
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Stops accepting, closes every connection and background task, and waits for them
    /// (bounded: a task that does not stop within 5 s is aborted).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = self.tasks.join_next() => if next.is_none() { break },
                _ = &mut deadline => { self.tasks.abort_all(); break }
            }
        }
        if let Some(rt) = self.cluster.take() {
            rt.shutdown().await;
        }
        tracing::info!("shutdown complete");
    }
}

/// Builds a node from `config` and starts serving on the current tokio runtime.
pub async fn spawn(config: Config) -> Result<Running, ServerError> {
    spawn_with(config, None).await
}

/// [`spawn`] with a cluster handle installed before the first client connects.
pub async fn spawn_with(
    config: Config,
    cluster: Option<Arc<crate::cluster::Cluster>>,
) -> Result<Running, ServerError> {
    let s = config.settings();
    // 1. Clock: one HLC per node.
    let node_id = s.node_id.unwrap_or_else(random_node_id);
    let drift = Duration::from_millis(s.max_clock_drift_ms);
    let clock = Arc::new(match s.clock_offset_ms {
        0 => Hlc::new(node_id, drift),
        ms => {
            let physical = crate::clock::skewed_clock(ms).ok_or(ServerError::ClockSlots)?;
            tracing::warn!(
                offset_ms = ms,
                "debug-clock-offset: this node's clock is skewed on purpose"
            );
            Hlc::with_clock(node_id, drift, physical)
        }
    });
    // 2. Keyspace: per-slot shards of CRDT entries.
    let keyspace = Arc::new(Keyspace::new(clock, None));
    // 2b. Persistence: load the snapshot and replay the log before anyone else sees the
    // keyspace; its sink goes in first, so replication's comes after it.
    let persist = Persist::open(&s.persist, &keyspace).map_err(ServerError::Persist)?;
    if s.node_id.is_some()
        && s.cluster.enabled
        && persist.loaded.snapshot_keys + persist.loaded.log_records == 0
    {
        // The actor may have counted in a previous life whose totals only peers hold: an INCR
        // before the resync brings a key back opens a new epoch that replaces them
        // (docs/persistence.md, "Limits").
        tracing::warn!(
            node = %format_args!("{node_id:x}"),
            "node-id is fixed and nothing was loaded: counter totals this actor made before a \
             restart can be lost if its keys are incremented before the resync brings them back; \
             leave node-id unset (a new actor per start) or keep the data directory"
        );
    }
    // 3. Listeners first: a cluster node announces the port it really got.
    if s.bind.is_empty() {
        return Err(ServerError::NoBind);
    }
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for host in &s.bind {
        let addr = format!("{}:{}", host, s.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        addrs.push(local);
        listeners.push(listener);
    }
    // 3b. The admin port's listener, bound before anything starts that would need stopping.
    let admin = crate::admin::serve::bind(&config, addrs[0].port())
        .await
        .map_err(ServerError::Admin)?;
    // 4. Cluster layer (mesh, membership, replication) when this node is part of a region.
    let (cluster, runtime) = match (cluster, s.cluster.enabled) {
        (Some(c), _) => (Some(c), None),
        (None, true) => {
            let (c, rt) = crate::cluster::runtime::start_node(
                &s,
                &keyspace,
                Some(persist.clone()),
                addrs[0].port(),
            )
            .await
            .map_err(ServerError::Cluster)?;
            (Some(c), Some(rt))
        }
        (None, false) => (None, None),
    };
    // 5. Node: shared state for commands; then serve.
    let mut node = Node::new(keyspace, config);
    node.cluster = cluster;
    node.persist = Some(persist.clone());
    let node = Arc::new(node);
    server_apply_settings(&node, &s);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for listener in listeners {
        tasks.spawn(accept_loop(node.clone(), listener, shutdown_rx.clone()));
    }
    node.port.store(addrs[0].port() as u64, Relaxed);
    // 6. Background tasks.
    tasks.spawn(expire_task(node.clone(), shutdown_rx.clone()));
    // 6b. The admin HTTP port (dashboard, /metrics, /health), when configured.
    if let Some(l) = admin {
        crate::admin::serve::spawn(&mut tasks, node.clone(), l, shutdown_rx.clone());
    }
    tasks.spawn(persist.run(shutdown_rx.clone()));
    tasks.spawn(node.hot.clone().run(shutdown_rx.clone()));
    tracing::info!(node = %format_args!("{node_id:x}"), addrs = ?addrs, region = %s.region, "meridian ready");
    Ok(Running {
        node,
        addrs,
        shutdown,
        tasks,
        cluster: runtime,
    })
}

/// Accepts connections until shutdown; each gets its own task.
async fn accept_loop(node: Arc<Node>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    node.stats.connections_received.fetch_add(1, Relaxed);
                    conns.spawn(conn::serve(node.clone(), stream, peer, shutdown.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    tracing::debug!(task = "accept", "stopping");
    while conns.join_next().await.is_some() {}
}

/// The active expiry cycle: `hz` times a second, more often while many keys are expiring.
async fn expire_task(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let s = node.config.settings();
        let period = Duration::from_millis(1000 / s.hz.max(1));
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => break,
        }
        // Short slices, yielding to clients between them, while a quarter of what we examine
        // is expiring: throughput for the expiry wave without a long stall for anyone.
        for _ in 0..16 {
            let st = node.keyspace.expire_cycle(s.active_expire_budget);
            if st.examined == 0 || st.expired * 4 < st.examined {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    tracing::debug!(task = "expire", "stopping");
}
