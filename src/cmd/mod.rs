//! Commands: one table (name, arity, flags, key positions) drives dispatch, arity errors and
//! `COMMAND`; one small file per command family implements them against the store.
//!
//! Dispatch of one command:
//! 1. look the name up (case-insensitively) in the table; unknown → `ERR unknown command`;
//! 2. check arity; wrong → `ERR wrong number of arguments for '<name>' command`;
//! 3. refuse it if the client must AUTH first (`NOAUTH`); on a cluster node, route it
//!    (`cluster::route`: MOVED / ASK / CROSSSLOT / ...; a node without a cluster skips this);
//! 4. inside MULTI, queue it (or flag the transaction on error) instead of running it;
//! 5. run the handler, which writes its reply into the client's output buffer.

mod bits;
pub mod clients;
mod cluster;
mod connection;
mod counters;
mod expire;
pub mod glob;
mod hotkeys;
mod info;
mod introspect;
mod keys;
mod lease;
mod migrate;
mod object;
mod regions;
mod server;
mod strings;
pub mod table;
pub mod tracking;
mod txn;

pub use clients::{ClientHandle, Clients};
pub use server::apply_settings as server_apply_settings;
pub use table::{lookup, CommandSpec};
// Read by the admin port (metrics, dashboard): the same figures INFO shows.
pub use info::rss_bytes;
pub use regions::{peer_regions, PeerRegion};

use crate::config::Config;
use crate::resp::{Args, Out, OwnedArgs};
use crate::store::{KeyMut, Keyspace, Txn};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// An error reply, with Redis's exact text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdError {
    #[error("ERR wrong number of arguments for '{0}' command")]
    Arity(String),
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    #[error("ERR value is not a valid float")]
    NotFloat,
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    #[error("ERR increment would produce NaN or Infinity")]
    NanOrInfinity,
    #[error("ERR no such key")]
    NoSuchKey,
    #[error("ERR invalid expire time in '{0}' command")]
    InvalidExpire(&'static str),
    #[error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")]
    TooBig,
    #[error("NOAUTH Authentication required.")]
    NoAuth,
    /// Any other error, already formatted with its code.
    #[error("{0}")]
    Msg(String),
}

pub type CmdResult = Result<(), CmdError>;

/// Server-wide counters for INFO stats.
#[derive(Default)]
pub struct ServerStats {
    pub connections_received: AtomicU64,
    pub commands_processed: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    pub unexpected_error_replies: AtomicU64,
}

/// Everything a node shares between its connections.
pub struct Node {
    pub keyspace: Arc<Keyspace>,
    pub config: Config,
    pub clients: Clients,
    pub stats: ServerStats,
    pub started: Instant,
    pub run_id: String,
    /// The RESP port actually bound (known once listening).
    pub port: AtomicU64,
    /// The region's slot map and cluster runtime; `None` for a standalone node.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Stampede-control leases and refresh metadata (node-local, `cmd::lease`).
    pub leases: Arc<crate::store::lease::Leases>,
    /// The snapshot and the append-only log (`persist`); set by `server::spawn_with`.
    pub persist: Option<Arc<crate::persist::Persist>>,
    /// Client-side caching: the tracking table and every connection's mailbox (`tracking`).
    pub tracking: Arc<crate::tracking::Tracker>,
    /// The hot-key sketch every keyed command feeds (`hot`, `cmd::hotkeys`).
    pub hot: Arc<crate::hot::HotKeys>,
    /// The admin HTTP port actually bound (0 = none); INFO server shows it as `admin_port`.
    pub admin_port: AtomicU64,
}

impl Node {
    pub fn new(keyspace: Arc<Keyspace>, config: Config) -> Self {
        let run_id = (0..40)
            .map(|_| format!("{:x}", rand::random::<u8>() % 16))
            .collect();
        Node {
            keyspace,
            config,
            clients: Clients::default(),
            stats: ServerStats::default(),
            started: Instant::now(),
            run_id,
            port: AtomicU64::new(0),
            cluster: None,
            leases: Arc::default(),
            persist: None,
            tracking: Arc::default(),
            hot: Arc::default(),
            admin_port: AtomicU64::new(0),
        }
    }
}

/// Per-connection state that commands read and change.
pub struct ClientState {
    pub handle: Arc<ClientHandle>,
    pub authenticated: bool,
    /// Commands queued by MULTI; `Some` while a transaction is open.
    pub multi: Option<Vec<OwnedArgs>>,
    /// A command failed to queue: EXEC must abort.
    pub multi_failed: bool,
    /// WATCHed keys and the version each had.
    pub watched: Vec<(Box<[u8]>, u64, bool)>,
    /// Set by QUIT or CLIENT KILL of self: close after the reply is written.
    pub close_after_reply: bool,
    /// Set by a command that must wait (WAIT, MIGRATE, DEBUG SLEEP): the connection awaits
    /// it, writes the reply it produces, then runs the rest of the pipeline.
    pub blocked: Option<Blocked>,
    /// ASKING was sent: the next command may touch an importing slot (one-shot).
    pub asking: bool,
    /// READONLY was sent: reads of the primary's slots are served on a replica.
    pub readonly: bool,
    /// EXEC is running its queue: the queued commands were routed together with EXEC, so
    /// they are not routed again, and they do not spend ASKING.
    pub in_exec: bool,
    /// The last command dispatched (the connection publishes it to `ClientHandle::last_cmd`
    /// once per batch, not per command).
    pub last_cmd: &'static str,
    /// CLIENT TRACKING / CACHING state, subscriptions and the push mailbox (`cmd::tracking`).
    pub track: tracking::ConnTracking,
}

impl ClientState {
    pub fn new(handle: Arc<ClientHandle>, authenticated: bool) -> Self {
        let track = tracking::ConnTracking::new(handle.track.clone());
        ClientState {
            handle,
            authenticated,
            multi: None,
            multi_failed: false,
            watched: Vec::new(),
            close_after_reply: false,
            blocked: None,
            asking: false,
            readonly: false,
            in_exec: false,
            last_cmd: "NULL",
            track,
        }
    }
}

/// A command's deferred reply: awaited by the connection, then written in order.
pub type Blocked =
    std::pin::Pin<Box<dyn std::future::Future<Output = Box<dyn FnOnce(&mut Out) + Send>> + Send>>;

/// What a handler works with.
pub struct Ctx<'a, 'n> {
    pub node: &'n Node,
    pub client: &'a mut ClientState,
    pub out: &'a mut Out,
    pub db: Db<'a, 'n>,
}

/// Key access for a command: locks the slots it needs, or works inside EXEC's locks.
/// A separate field of [`Ctx`] so a handler can write its reply while holding keys.
pub struct Db<'a, 'n> {
    pub node: &'n Node,
    /// Inside EXEC: the slots of every queued key, locked for the whole transaction.
    pub exec: Option<&'a mut Txn<'n>>,
}

impl<'a, 'n> Db<'a, 'n> {
    /// Runs `f` with the slots of `keys` locked (or within the transaction's locks).
    pub fn keys<R>(&mut self, keys: &[&[u8]], f: impl FnOnce(&mut Txn<'n>) -> R) -> R {
        match self.exec.as_deref_mut() {
            Some(txn) => f(txn),
            None => f(&mut self.node.keyspace.lock(keys.iter().copied())),
        }
    }

    /// Runs `f` on one key.
    #[inline]
    pub fn key<R>(&mut self, key: &[u8], f: impl FnOnce(&mut KeyMut<'_>) -> R) -> R {
        match self.exec.as_deref_mut() {
            Some(txn) => f(&mut txn.key(key)),
            None => f(&mut self.node.keyspace.lock_key(key).key(key)),
        }
    }
}

impl Ctx<'_, '_> {
    pub fn keyspace(&self) -> &Keyspace {
        &self.node.keyspace
    }
}

/// One parameter's current text (`""` if unknown), for the `apply_settings` of each family.
pub(crate) fn param(node: &Node, name: &str) -> String {
    node.config
        .get_matching(|n| n == name)
        .pop()
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// Parses an i64 argument (`ERR value is not an integer or out of range`).
pub fn arg_i64(a: &[u8]) -> Result<i64, CmdError> {
    crate::crdt::number::parse_i64(a).ok_or(CmdError::NotInteger)
}

/// Uppercase-insensitive option match.
pub fn is(a: &[u8], word: &str) -> bool {
    a.eq_ignore_ascii_case(word.as_bytes())
}

/// Runs one command (steps 1–5 of the module doc).
pub fn dispatch(ctx: &mut Ctx<'_, '_>, args: Args<'_>) {
    if ctx.client.in_exec {
        return run(ctx, args);
    }
    run(ctx, args);
    if ctx.client.in_exec || ctx.client.asking {
        cluster::command_done(ctx.client, args);
    }
}

fn run(ctx: &mut Ctx<'_, '_>, args: Args<'_>) {
    if args.is_empty() {
        return;
    }
    ctx.node.stats.commands_processed.fetch_add(1, Relaxed);
    let spec = match lookup(args.get(0)) {
        Some(s) => s,
        None => return reject(ctx, unknown_command(args)),
    };
    ctx.client.last_cmd = spec.name;
    if !spec.arity_ok(args.len()) {
        return reject(ctx, CmdError::Arity(spec.name.to_string()));
    }
    // Like Redis, an unknown subcommand or a subcommand's arity is an error before AUTH and
    // MULTI are considered (so inside MULTI it dooms the transaction instead of queueing).
    let mut keyed = spec;
    if !spec.subcommands.is_empty() && args.len() >= 2 {
        match table::check_sub(spec, args) {
            Ok(sub) => keyed = sub,
            Err(e) => return reject(ctx, e),
        }
    }
    if !ctx.client.authenticated && !spec.has_flag("no_auth") {
        return reject(ctx, CmdError::NoAuth);
    }
    // Held until the command has run: its slot's migration gate, if the slot is migrating.
    let mut _gate = None;
    if let Some(c) = ctx.node.cluster.as_deref() {
        if !ctx.client.in_exec {
            match cluster::admit(ctx, c, keyed, args) {
                cluster::Admit::Rejected => return,
                cluster::Admit::Go(g) => _gate = g,
            }
        }
    }
    // Like Redis's processCommand: a command that may grow memory first makes room under
    // maxmemory (or is refused); EXEC's queued commands were checked when queued.
    if keyed.has_flag("denyoom") && !ctx.client.in_exec {
        if let Err(oom) = ctx.node.keyspace.ensure_memory() {
            return reject(ctx, CmdError::Msg(oom.to_string()));
        }
    }
    if let Err(e) = tracking::admit(ctx, keyed) {
        return reject(ctx, e);
    }
    if let Some(queue) = ctx
        .client
        .multi
        .as_mut()
        .filter(|_| !spec.has_flag("txn_control"))
    {
        queue.push(args.to_owned());
        ctx.out.simple("QUEUED");
        return;
    }
    let writer = tracking::before_run(ctx, keyed, args);
    if let Err(e) = (spec.handler)(ctx, args) {
        ctx.out.error(&e.to_string());
    }
    drop(writer);
    tracking::after_run(ctx, keyed);
    lease::after_command(ctx.node, keyed, args);
    hotkeys::after_command(ctx.node, keyed, args);
}

/// An error before the command ran: inside MULTI it also dooms the transaction.
fn reject(ctx: &mut Ctx<'_, '_>, e: CmdError) {
    if ctx.client.multi.is_some() {
        ctx.client.multi_failed = true;
    }
    ctx.out.error(&e.to_string());
}

/// Redis's text: `ERR unknown command 'x', with args beginning with: 'a' 'b' `.
fn unknown_command(args: Args<'_>) -> CmdError {
    let name = String::from_utf8_lossy(&args.get(0)[..args.get(0).len().min(128)]).into_owned();
    let mut rest = String::new();
    for a in args.skip(1).iter() {
        if rest.len() >= 128 {
            break;
        }
        let a = String::from_utf8_lossy(&a[..a.len().min(128 - rest.len())]).into_owned();
        rest.push_str(&format!("'{a}' "));
    }
    CmdError::Msg(format!(
        "ERR unknown command '{name}', with args beginning with: {rest}"
    ))
}
