//! Active-active across regions, as clients and operators see it: `MERIDIAN.WAITREGIONS` (a
//! cross-region WAIT) and the `# Regions` section of INFO.
//!
//! Guarantee of `MERIDIAN.WAITREGIONS numregions timeout` (docs/semantics.md): when it returns
//! `n`, every write this node had accepted before the call (from any client) has been merged by
//! the owner of its slot in `n` other regions. It does not make writes synchronous: a region
//! that has not acknowledged yet still gets them later, and a write is never rolled back. Like
//! WAIT, a timeout returns the count reached so far; 0 means block until reached.

use super::{arg_i64, CmdError, CmdResult, Ctx, Node};
use crate::repl::repair::RepairCounts;
use crate::repl::LinkKind;
use crate::resp::{Args, Out};
use crate::spec;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

#[rustfmt::skip]
pub const COMMANDS: &[super::CommandSpec] = &[
    spec!("meridian.waitregions", 3, [], 0, 0, 0, "generic", "0.1.0", "Blocks until the given number of other regions acknowledged every write this node accepted before the call, or the timeout.", waitregions),
];

fn waitregions(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let n = arg_i64(args.get(1))?.max(0) as usize;
    let timeout = arg_i64(args.get(2))?;
    if timeout < 0 {
        return Err(CmdError::Msg("ERR timeout is negative".into()));
    }
    let timeout = Duration::from_millis(timeout as u64);
    let repl = ctx
        .node
        .cluster
        .as_ref()
        .filter(|c| c.has_repl())
        .map(|c| c.repl().clone());
    let Some(repl) = repl else {
        return Err(CmdError::Msg(
            "ERR MERIDIAN.WAITREGIONS needs cluster-enabled (a standalone node has no regions)"
                .into(),
        ));
    };
    if ctx.db.exec.is_some() || n == 0 {
        ctx.out.int(repl.regions_acked() as i64);
        return Ok(());
    }
    ctx.client.blocked = Some(Box::pin(async move {
        let got = repl.wait_regions(n, timeout).await;
        Box::new(move |out: &mut Out| out.int(got as i64)) as Box<dyn FnOnce(&mut Out) + Send>
    }));
    Ok(())
}

/// Per other region, what INFO shows (and the admin port's metrics and dashboard, which read
/// the same figures through [`peer_regions`]).
#[derive(Default, Debug, Clone)]
pub struct PeerRegion {
    pub nodes: usize,
    pub links: usize,
    pub up: bool,
    pub lag_ms: u64,
    pub pending_keys: usize,
    pub batches_sent: u64,
    /// Of those, batches built once for several regions (a fan-out group, `repl::link::fanout`).
    pub batches_shared: u64,
    pub bytes_sent: u64,
    pub batches_received: u64,
    pub bytes_received: u64,
    /// Repair rounds (digest comparisons or full syncs) started on the links to the region,
    /// slots found different and sent in full, and the bytes repair cost.
    pub repair: RepairCounts,
    /// Received entries whose stamps raised a skew alarm, and when the latest did.
    pub skew_alarms: u64,
    pub last_skew: Option<std::time::Instant>,
}

/// Applies `repl-antientropy` (at start and on CONFIG SET) to every replication link.
pub fn apply_settings(node: &Node) {
    let ms = super::param(node, "repl-antientropy")
        .parse()
        .unwrap_or(60_000);
    if let Some(c) = node.cluster.as_deref().filter(|c| c.has_repl()) {
        c.repl()
            .set_antientropy(std::time::Duration::from_millis(ms));
    }
}

/// Every other region this node knows of (by gossip or by a replication link), with its
/// state and replication figures summed over the links to it.
pub fn peer_regions(node: &Node) -> std::collections::BTreeMap<String, PeerRegion> {
    let s = node.config.settings();
    let mut peers: std::collections::BTreeMap<String, PeerRegion> = Default::default();
    if let Some(c) = node.cluster.as_deref().filter(|c| c.has_repl()) {
        let timeout = Duration::from_millis(s.cluster.node_timeout_ms);
        for r in c.regions.summaries() {
            peers.insert(
                r.name,
                PeerRegion {
                    nodes: r.nodes,
                    up: r.since_heard < timeout * 2,
                    ..Default::default()
                },
            );
        }
        let repl = c.repl();
        for l in repl
            .status()
            .into_iter()
            .filter(|l| l.kind == LinkKind::Region)
        {
            let p = peers.entry(l.group.clone()).or_default();
            if p.links == 0 {
                p.up = true;
            }
            p.links += 1;
            p.up &= l.connected && repl.heard_within(l.peer, timeout);
            p.lag_ms = p.lag_ms.max(l.lag_ms);
            p.pending_keys += l.pending_keys;
            p.batches_sent += l.batches_sent;
            p.batches_shared += l.batches_shared;
            p.bytes_sent += l.bytes_sent;
            p.repair.rounds += l.repair.rounds;
            p.repair.checks += l.repair.checks;
            p.repair.asks += l.repair.asks;
            p.repair.slots += l.repair.slots;
            p.repair.bytes += l.repair.bytes;
            if let Some(i) = repl.inbound_from(l.peer) {
                p.batches_received += i.batches;
                p.bytes_received += i.bytes;
                p.skew_alarms += i.skew_alarms;
                p.last_skew = p.last_skew.max(i.last_skew);
            }
        }
    }
    peers
}

/// INFO `# Regions`.
pub fn info(node: &Node, t: &mut String) {
    let s = node.config.settings();
    let ks = &node.keyspace;
    let _ = write!(t, "# Regions\r\nregion:{}\r\n", s.region);
    let peers = peer_regions(node);
    let _ = write!(t, "peer_regions:{}\r\n", peers.len());
    for (name, p) in &peers {
        let _ = write!(
            t,
            "peer_region_{name}:state={},nodes={},links={},lag_ms={},pending_keys={},batches_sent={},batches_shared={},bytes_sent={},batches_received={},bytes_received={},resync_rounds={},repair_slots={},repair_bytes={},antientropy_checks={},skew_alarms={}\r\n",
            if p.up { "up" } else { "down" },
            p.nodes,
            p.links,
            p.lag_ms,
            p.pending_keys,
            p.batches_sent,
            p.batches_shared,
            p.bytes_sent,
            p.batches_received,
            p.bytes_received,
            p.repair.rounds,
            p.repair.slots,
            p.repair.bytes,
            p.repair.checks,
            p.skew_alarms,
        );
    }
    let _ = write!(
        t,
        "tombstones_pending:{}\r\nconflicts_register:{}\r\nconflicts_counter:{}\r\nconflicts_expiry:{}\r\nskew_alarms:{}\r\nmax_skew_seen_ms:{}\r\n",
        ks.tombstones_pending(),
        ks.stats.conflicts_register.load(Relaxed),
        ks.stats.conflicts_counter.load(Relaxed),
        ks.stats.conflicts_expiry.load(Relaxed),
        ks.clock().skew_alarms(),
        ks.clock().max_skew_seen_ms(),
    );
}
