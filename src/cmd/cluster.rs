//! Cluster commands: CLUSTER (INFO, MYID, MYSHARDID, SLOTS, SHARDS, NODES, KEYSLOT,
//! COUNTKEYSINSLOT, GETKEYSINSLOT, LINKS, SETSLOT, FAILOVER, ADDSLOTS, ADDSLOTSRANGE, MEET,
//! REPLICATE, HELP), ASKING, READONLY, READWRITE — and [`admit`], the dispatch step that routes
//! every keyed command through `cluster::route` before it is queued or run.
//!
//! Replies and errors are Redis 7's, checked against redis-server 7.0. The subcommands that
//! change the map are in [`admin`].

mod admin;

use super::table::{dispatch_sub, lookup, lookup_sub, CommandSpec};
use super::{arg_i64, is, CmdError, CmdResult, Ctx, Node};
use crate::cluster::format::{self, BusStats};
use crate::cluster::route::{route, state_ok, Flags};
use crate::cluster::{node_name, Cluster};
use crate::resp::Args;
use crate::spec;
use crate::store::{key_slot, SLOTS};
use admin::{addslots, addslotsrange, failover, meet, replicate, setslot};

#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    spec!("cluster", -2, [], 0, 0, 0, "cluster", "3.0.0", "A container for Redis Cluster commands.", cluster, CLUSTER),
    spec!("asking", 1, ["fast"], 0, 0, 0, "cluster", "3.0.0", "Signals that a cluster client is following an -ASK redirect.", asking),
    spec!("readonly", 1, ["loading", "stale", "fast"], 0, 0, 0, "cluster", "3.0.0", "Enables read-only queries for a connection to a Redis Cluster replica node.", readonly),
    spec!("readwrite", 1, ["loading", "stale", "fast"], 0, 0, 0, "cluster", "3.0.0", "Enables read-write queries for a connection to a Reids Cluster replica node.", readwrite),
];

// COUNTKEYSINSLOT and GETKEYSINSLOT lock a slot themselves: `keyspace_wide` keeps EXEC from
// holding slot locks around them.
#[rustfmt::skip]
const CLUSTER: &[CommandSpec] = &[
    spec!("cluster|info", 2, ["stale"], 0, 0, 0, "cluster", "3.0.0", "Returns information about the state of a node.", info),
    spec!("cluster|myid", 2, ["stale"], 0, 0, 0, "cluster", "3.0.0", "Returns the ID of a node.", myid),
    spec!("cluster|myshardid", 2, ["stale"], 0, 0, 0, "cluster", "7.2.0", "Returns the shard ID of a node.", myshardid),
    spec!("cluster|slots", 2, ["loading", "stale"], 0, 0, 0, "cluster", "3.0.0", "Returns the mapping of cluster slots to nodes.", slots),
    spec!("cluster|shards", 2, ["loading", "stale"], 0, 0, 0, "cluster", "7.0.0", "Returns the mapping of cluster slots to shards.", shards),
    spec!("cluster|nodes", 2, ["stale"], 0, 0, 0, "cluster", "3.0.0", "Returns the cluster configuration for a node.", nodes),
    spec!("cluster|links", 2, ["stale"], 0, 0, 0, "cluster", "7.0.0", "Returns a list of all TCP links to and from peer nodes.", links),
    spec!("cluster|keyslot", 3, ["stale"], 0, 0, 0, "cluster", "3.0.0", "Returns the hash slot for a key.", keyslot),
    spec!("cluster|countkeysinslot", 3, ["stale", "keyspace_wide"], 0, 0, 0, "cluster", "3.0.0", "Returns the number of keys in a hash slot.", countkeysinslot),
    spec!("cluster|getkeysinslot", 4, ["stale", "keyspace_wide"], 0, 0, 0, "cluster", "3.0.0", "Returns the key names in a hash slot.", getkeysinslot),
    spec!("cluster|setslot", -4, ["admin", "stale", "no_async_loading"], 0, 0, 0, "cluster", "3.0.0", "Binds a hash slot to a node.", setslot),
    spec!("cluster|failover", -2, ["admin", "stale", "no_async_loading"], 0, 0, 0, "cluster", "3.0.0", "Forces a replica to perform a manual failover of its master.", failover),
    spec!("cluster|addslots", -3, ["admin", "stale", "no_async_loading"], 0, 0, 0, "cluster", "3.0.0", "Assigns new hash slots to a node.", addslots),
    spec!("cluster|addslotsrange", -4, ["admin", "stale", "no_async_loading"], 0, 0, 0, "cluster", "7.0.0", "Assigns new hash slot ranges to a node.", addslotsrange),
    spec!("cluster|meet", -4, ["admin", "stale", "no_async_loading"], 0, 0, 0, "cluster", "3.0.0", "Forces a node to handshake with another node.", meet),
    spec!("cluster|replicate", 3, ["admin", "stale", "no_async_loading"], 0, 0, 0, "cluster", "3.0.0", "Configure a node as replica of a master node.", replicate),
    spec!("cluster|help", 2, ["loading", "stale"], 0, 0, 0, "cluster", "5.0.0", "Returns helpful text about the different subcommands.", help),
];

// ----- routing -----

/// A command's keys, as an allocation-free iterator the router can walk twice: the spec's
/// first/last/step positions (negative last counted from the end), except for MIGRATE, whose
/// keys follow its KEYS option when the key argument is empty (Redis's `migrateGetKeys`).
fn keys<'a>(spec: &CommandSpec, args: Args<'a>) -> impl Iterator<Item = &'a [u8]> + Clone {
    let argc = args.len() as i32;
    let (first, last) = match spec.last_key {
        _ if spec.first_key <= 0 || argc <= spec.first_key => (1, 0),
        _ if spec.name == "migrate" => migrate_keys(args),
        l if l < 0 => (spec.first_key, argc + l),
        l => (spec.first_key, l.min(argc - 1)),
    };
    (first..=last)
        .step_by(spec.step.max(1) as usize)
        .map(move |i| args.get(i as usize))
}

/// `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw] [AUTH2 user pw] [KEYS k..]`:
/// the key argument, or the keys after KEYS.
fn migrate_keys(args: Args<'_>) -> (i32, i32) {
    let mut i = 6;
    while i < args.len() {
        let a = args.get(i);
        if is(a, "keys") {
            return match args.get(3).is_empty() {
                true => (i as i32 + 1, args.len() as i32 - 1),
                false => (1, 0), // refused by MIGRATE itself
            };
        }
        i += if is(a, "auth") {
            2
        } else if is(a, "auth2") {
            3
        } else {
            1
        };
    }
    (3, 3)
}

/// The spec that holds a command's key positions and flags (a container's subcommand).
fn spec_of(args: Args<'_>) -> Option<&'static CommandSpec> {
    let spec = lookup(args.get(0))?;
    match spec.subcommands.is_empty() || args.len() < 2 {
        true => Some(spec),
        false => lookup_sub(spec, args.get(1)),
    }
}

fn exists(node: &Node, key: &[u8]) -> bool {
    node.keyspace.lock_key(key).key(key).exists()
}

/// Routes a command before it is queued or run (dispatch step 3b): `true` to go on, `false`
/// when it was answered with a redirect or a cluster error (which, inside MULTI, dooms the
/// transaction). `keyed` is the spec holding the key positions (a container's subcommand).
/// EXEC is routed with every queued command at once, as Redis does: one slot for the whole
/// transaction, else the transaction is discarded with the error.
pub(super) fn admit<'n>(
    ctx: &mut Ctx<'_, 'n>,
    cluster: &'n Cluster,
    keyed: &'static CommandSpec,
    args: Args<'_>,
) -> Admit<'n> {
    let node = ctx.node;
    if keyed.first_key <= 0 {
        return match keyed.name {
            "exec" => admit_exec(ctx, cluster),
            _ => Admit::Go(None),
        };
    }
    let t = cluster.topology();
    let flags = Flags {
        // RESTORE-ASKING (a migration's import) counts as asked.
        asking: ctx.client.asking || keyed.has_flag("asking"),
        replica_read: ctx.client.readonly && !keyed.has_flag("write"),
        migrate: keyed.name == "migrate",
    };
    let ks = keys(keyed, args);
    // The gate before the key-existence checks, so what they saw still holds when the command
    // runs. MIGRATE takes the gate itself, exclusively.
    let gate = match keyed.name {
        "migrate" => None,
        _ => gate(cluster, &t, ks.clone()),
    };
    let routed = route(&t, state_ok(&t), ks, flags, |k| exists(node, k));
    match routed.error() {
        None => Admit::Go(gate),
        Some(e) => {
            super::reject(ctx, CmdError::Msg(e));
            Admit::Rejected
        }
    }
}

/// Whether a routed command goes on, holding its slot's migration gate if the slot is
/// migrating (see [`Cluster::gate`]).
pub(super) enum Admit<'n> {
    Rejected,
    Go(Option<parking_lot::RwLockReadGuard<'n, ()>>),
}

fn gate<'n, 'k>(
    cluster: &'n Cluster,
    t: &crate::cluster::Topology,
    mut keys: impl Iterator<Item = &'k [u8]>,
) -> Option<parking_lot::RwLockReadGuard<'n, ()>> {
    let slot = key_slot(keys.next()?);
    t.migrating
        .contains_key(&slot)
        .then(|| cluster.gate(slot).read())
}

fn admit_exec<'n>(ctx: &mut Ctx<'_, 'n>, cluster: &'n Cluster) -> Admit<'n> {
    let node = ctx.node;
    let Some(queue) = ctx.client.multi.as_ref() else {
        return Admit::Go(None); // EXEC without MULTI: its own error
    };
    let t = cluster.topology();
    let write = queue
        .iter()
        .any(|c| spec_of(c.args()).is_some_and(|s| s.has_flag("write")));
    let all_keys = queue.iter().flat_map(|c| {
        let a = c.args();
        spec_of(a).map(|s| keys(s, a)).into_iter().flatten()
    });
    let flags = Flags {
        asking: ctx.client.asking,
        replica_read: ctx.client.readonly && !write,
        migrate: false,
    };
    let gated = gate(cluster, &t, all_keys.clone());
    let routed = route(&t, state_ok(&t), all_keys, flags, |k| exists(node, k));
    match routed.error() {
        None => {
            ctx.client.in_exec = true;
            Admit::Go(gated)
        }
        Some(e) => {
            ctx.client.multi = None;
            ctx.client.multi_failed = false;
            super::txn::unwatch_all(ctx);
            ctx.out.error(&e);
            Admit::Rejected
        }
    }
}

/// After a top-level command (EXEC's queued commands excluded): EXEC is over, and ASKING is
/// spent unless this was ASKING itself or a transaction is open (Redis's `resetClient`).
pub(super) fn command_done(client: &mut super::ClientState, args: Args<'_>) {
    client.in_exec = false;
    let was_asking = !args.is_empty() && is(args.get(0), "asking");
    if client.multi.is_none() && !was_asking {
        client.asking = false;
    }
}

// ----- ASKING, READONLY, READWRITE -----

fn disabled() -> CmdError {
    CmdError::Msg("ERR This instance has cluster support disabled".into())
}

/// The node's cluster, or Redis's error when it runs without one.
fn cluster_of<'n>(ctx: &Ctx<'_, 'n>) -> Result<&'n Cluster, CmdError> {
    ctx.node.cluster.as_deref().ok_or_else(disabled)
}

fn asking(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    cluster_of(ctx)?;
    ctx.client.asking = true;
    ctx.out.ok();
    Ok(())
}

fn readonly(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    cluster_of(ctx)?;
    ctx.client.readonly = true;
    ctx.out.ok();
    Ok(())
}

fn readwrite(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    cluster_of(ctx)?;
    ctx.client.readonly = false;
    ctx.out.ok();
    Ok(())
}

// ----- CLUSTER: reading the map -----

/// Like Redis 7, every subcommand (HELP and KEYSLOT included) needs cluster mode.
fn cluster(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    cluster_of(ctx)?;
    dispatch_sub(ctx, args)
}

fn info(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let c = cluster_of(ctx)?;
    let t = c.topology();
    let bus = BusStats {
        messages_sent: c.messages_sent.load(std::sync::atomic::Ordering::Relaxed),
        messages_received: c
            .messages_received
            .load(std::sync::atomic::Ordering::Relaxed),
        links_buffer_limit_exceeded: 0,
    };
    ctx.out.verbatim(&format::info_text(&t, &bus));
    Ok(())
}

fn myid(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let me = cluster_of(ctx)?.my_id();
    ctx.out.bulk(node_name(me).as_bytes());
    Ok(())
}

/// A shard is named after its primary.
fn myshardid(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let t = cluster_of(ctx)?.topology();
    ctx.out
        .bulk(node_name(t.shard_primary(t.myself)).as_bytes());
    Ok(())
}

fn slots(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    format::slots(ctx.out, &cluster_of(ctx)?.topology());
    Ok(())
}

fn shards(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    format::shards(ctx.out, &cluster_of(ctx)?.topology());
    Ok(())
}

fn nodes(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let text = format::nodes_text(&cluster_of(ctx)?.topology());
    ctx.out.verbatim(&text);
    Ok(())
}

fn links(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    format::links(ctx.out, &cluster_of(ctx)?.links());
    Ok(())
}

fn keyslot(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ctx.out.int(key_slot(args.get(2)) as i64);
    Ok(())
}

/// The live keys held here in `slot`.
fn slot_keys(node: &Node, slot: u16) -> Vec<Box<[u8]>> {
    let now = crate::clock::unix_ms();
    node.keyspace
        .slot_entries(slot)
        .into_iter()
        .filter(|(_, e)| e.is_live(now))
        .map(|(k, _)| k)
        .collect()
}

fn countkeysinslot(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let slot = arg_i64(args.get(2))?;
    if !(0..SLOTS as i64).contains(&slot) {
        return Err(CmdError::Msg("ERR Invalid slot".into()));
    }
    ctx.out.int(slot_keys(ctx.node, slot as u16).len() as i64);
    Ok(())
}

fn getkeysinslot(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let slot = arg_i64(args.get(2))?;
    let max = arg_i64(args.get(3))?;
    if !(0..SLOTS as i64).contains(&slot) || max < 0 {
        return Err(CmdError::Msg("ERR Invalid slot or number of keys".into()));
    }
    let mut found = slot_keys(ctx.node, slot as u16);
    found.truncate(max.min(found.len() as i64) as usize);
    ctx.out.bulk_array(found.iter().map(|k| &k[..]));
    Ok(())
}

fn help(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    ctx.out.help(&[
        "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "ADDSLOTS <slot> [<slot> ...]",
        "    Assign slots to current node.",
        "ADDSLOTSRANGE <start slot> <end slot> [<start slot> <end slot> ...]",
        "    Assign slots which are between <start-slot> and <end-slot> to current node.",
        "COUNTKEYSINSLOT <slot>",
        "    Return the number of keys in <slot>.",
        "FAILOVER [FORCE|TAKEOVER]",
        "    Promote current replica node to being a master.",
        "GETKEYSINSLOT <slot> <count>",
        "    Return key names stored by current node in a slot.",
        "INFO",
        "    Return information about the cluster.",
        "KEYSLOT <key>",
        "    Return the hash slot for <key>.",
        "LINKS",
        "    Return information about all network links between this node and its peers.",
        "    Output format is an array where each array element is a map containing attributes of a link",
        "MEET <ip> <port> [<bus-port>]",
        "    Connect nodes into a working cluster.",
        "MYID",
        "    Return the node id.",
        "MYSHARDID",
        "    Return the node's shard id.",
        "NODES",
        "    Return cluster configuration seen by node. Output format:",
        "    <id> <ip:port@bus-port[,hostname]> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
        "REPLICATE <node-id>",
        "    Configure current node as replica to <node-id>.",
        "SETSLOT <slot> (IMPORTING <node-id>|MIGRATING <node-id>|STABLE|NODE <node-id>)",
        "    Set slot state.",
        "SHARDS",
        "    Return information about slot range mappings and the nodes associated with them.",
        "SLOTS",
        "    Return information about slots range mappings. Each range is made of:",
        "    start, end, master and replicas IP addresses, ports and ids",
        "HELP",
        "    Print this help.",
    ]);
    Ok(())
}
