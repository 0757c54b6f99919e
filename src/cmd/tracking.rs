//! Client-side caching commands and hooks: CLIENT TRACKING / CACHING / GETREDIR /
//! TRACKINGINFO, SUBSCRIBE / UNSUBSCRIBE (enough Pub/Sub for RESP2 clients to receive
//! invalidations on `__redis__:invalidate` through REDIRECT), and the per-command steps that
//! remember what a tracking client read.
//!
//! The tracker itself (`crate::tracking`) owns the table, the modes and delivery; this module
//! parses and validates, and keeps per connection only what Redis keeps on the client: the
//! one-shot CLIENT CACHING flag and the subscribed channels.

use super::{is, CmdError, CmdResult, CommandSpec, Ctx, Node};
use crate::resp::Args;
use crate::spec;
use crate::tracking::{Mailbox, Options, WriterScope};
use std::sync::Arc;

/// The channel Redis delivers RESP2 invalidations on.
pub const INVALIDATE_CHANNEL: &[u8] = b"__redis__:invalidate";

#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    spec!("subscribe", -2, ["pubsub", "noscript", "loading", "stale"], 0, 0, 0, "pubsub", "2.0.0", "Listens for messages published to channels.", subscribe),
    spec!("unsubscribe", -1, ["pubsub", "noscript", "loading", "stale"], 0, 0, 0, "pubsub", "2.0.0", "Stops listening to messages posted to channels.", unsubscribe),
];

/// The CLIENT subcommands of this module (listed in `connection::CLIENT`).
#[rustfmt::skip]
pub const CLIENT_TRACKING: CommandSpec = spec!("client|tracking", -3, ["noscript", "loading", "stale"], 0, 0, 0, "connection", "6.0.0", "Controls server-assisted client-side caching for the connection.", client_tracking);
#[rustfmt::skip]
pub const CLIENT_CACHING: CommandSpec = spec!("client|caching", 3, ["noscript", "loading", "stale"], 0, 0, 0, "connection", "6.0.0", "Instructs the server whether to track the keys in the next request.", client_caching);
#[rustfmt::skip]
pub const CLIENT_GETREDIR: CommandSpec = spec!("client|getredir", 2, ["noscript", "loading", "stale"], 0, 0, 0, "connection", "6.0.0", "Returns the client ID to which the connection's tracking notifications are redirected.", client_getredir);
#[rustfmt::skip]
pub const CLIENT_TRACKINGINFO: CommandSpec = spec!("client|trackinginfo", 2, ["noscript", "loading", "stale"], 0, 0, 0, "connection", "6.2.0", "Returns information about server-assisted client-side caching for the connection.", client_trackinginfo);

/// What a connection keeps of tracking and Pub/Sub.
pub struct ConnTracking {
    pub mailbox: Arc<Mailbox>,
    /// Mirrors of the tracker's mode, so a read costs no lock when tracking is off.
    pub on: bool,
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    /// CLIENT CACHING was given: applies to the next command (or the next transaction).
    pub caching: bool,
    pub channels: Vec<Box<[u8]>>,
    /// Commands running on this connection (EXEC runs its queue nested inside itself).
    depth: u32,
}

impl ConnTracking {
    /// `mailbox` is the connection's [`super::ClientHandle::track`].
    pub fn new(mailbox: Arc<Mailbox>) -> Self {
        ConnTracking {
            mailbox,
            on: false,
            bcast: false,
            optin: false,
            optout: false,
            caching: false,
            channels: Vec::new(),
            depth: 0,
        }
    }

    fn off(&mut self) {
        self.on = false;
        self.bcast = false;
        self.optin = false;
        self.optout = false;
        self.caching = false;
    }
}

/// Applies `tracking-table-max-keys` (startup and CONFIG SET).
pub fn apply_settings(node: &Node) {
    let max = super::param(node, "tracking-table-max-keys")
        .parse::<u64>()
        .unwrap_or(1_000_000);
    node.tracking.set_max_keys(max);
}

/// Before MULTI queueing: a RESP2 connection in Pub/Sub mode may only run these (Redis).
pub fn admit(ctx: &Ctx<'_, '_>, spec: &CommandSpec) -> CmdResult {
    if ctx.client.track.channels.is_empty() || ctx.out.resp3() {
        return Ok(());
    }
    let allowed = matches!(
        spec.name,
        "subscribe"
            | "unsubscribe"
            | "psubscribe"
            | "punsubscribe"
            | "ssubscribe"
            | "sunsubscribe"
            | "ping"
            | "quit"
            | "reset"
    );
    if allowed {
        return Ok(());
    }
    Err(CmdError::Msg(format!(
        "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
        spec.name
    )))
}

/// Right before the handler: the connection becomes the author of what gets published (for
/// NOLOOP), and a tracking client's read keys are remembered. Remembering *before* the read
/// matters with concurrent writers: a write that lands after the key is remembered is always
/// announced, so no client can cache a value whose invalidation it missed.
pub fn before_run(ctx: &mut Ctx<'_, '_>, spec: &CommandSpec, args: Args<'_>) -> WriterScope {
    ctx.client.track.depth += 1;
    let t = &ctx.client.track;
    if t.on
        && !t.bcast
        && spec.has_flag("readonly")
        && !((t.optin && !t.caching) || (t.optout && t.caching))
    {
        let pos = spec.key_positions(args.len());
        if !pos.is_empty() {
            ctx.node
                .tracking
                .remember(ctx.client.handle.id, pos.into_iter().map(|i| args.get(i)));
        }
    }
    crate::tracking::writer_scope(ctx.client.handle.id)
}

/// Right after the handler: CLIENT CACHING lasts one command (a whole transaction inside
/// MULTI/EXEC, and CLIENT commands do not spend it); the mailbox learns the protocol.
pub fn after_run(ctx: &mut Ctx<'_, '_>, spec: &CommandSpec) {
    let t = &mut ctx.client.track;
    t.depth = t.depth.saturating_sub(1);
    if t.caching && t.depth == 0 && ctx.client.multi.is_none() && !spec.name.starts_with("client") {
        t.caching = false;
    }
    t.mailbox.set_resp3(ctx.out.resp3());
}

/// RESET: tracking off, every subscription dropped.
pub fn reset(ctx: &mut Ctx<'_, '_>) {
    ctx.node.tracking.disable(ctx.client.handle.id);
    ctx.client.track.off();
    ctx.client.track.channels.clear();
    ctx.client.track.mailbox.set_subscriptions(0);
}

/// FLUSHALL / FLUSHDB: one null invalidation to every tracking client instead of one per key.
pub fn flush(node: &Node) -> usize {
    let n = crate::tracking::flushing(|| node.keyspace.flush());
    node.tracking.flush_all();
    n
}

fn client_tracking(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut o = Options::default();
    let mut j = 3;
    while j < args.len() {
        let more = args.len() - 1 - j;
        let a = args.get(j);
        if is(a, "REDIRECT") && more > 0 {
            j += 1;
            if o.redirect != 0 {
                return Err(CmdError::Msg(
                    "ERR A client can only redirect to a single other client".into(),
                ));
            }
            let id = super::arg_i64(args.get(j))?;
            if id <= 0 || ctx.node.clients.get(id as u64).is_none() {
                return Err(CmdError::Msg(
                    "ERR The client ID you want redirect to does not exist".into(),
                ));
            }
            o.redirect = id as u64;
        } else if is(a, "BCAST") {
            o.bcast = true;
        } else if is(a, "OPTIN") {
            o.optin = true;
        } else if is(a, "OPTOUT") {
            o.optout = true;
        } else if is(a, "NOLOOP") {
            o.noloop = true;
        } else if is(a, "PREFIX") && more > 0 {
            j += 1;
            o.prefixes.push(args.get(j).into());
        } else {
            return Err(CmdError::Syntax);
        }
        j += 1;
    }
    let id = ctx.client.handle.id;
    if is(args.get(2), "ON") {
        let (bcast, optin, optout) = (o.bcast, o.optin, o.optout);
        ctx.node
            .tracking
            .enable(id, o)
            .map_err(|e| CmdError::Msg(e.to_string()))?;
        if ctx.node.tracking.claim_install() {
            ctx.node.keyspace.add_sink(ctx.node.tracking.clone());
        }
        let t = &mut ctx.client.track;
        t.on = true;
        t.bcast = bcast;
        t.optin = optin;
        t.optout = optout;
        t.mailbox.set_resp3(ctx.out.resp3());
    } else if is(args.get(2), "OFF") {
        ctx.node.tracking.disable(id);
        ctx.client.track.off();
    } else {
        return Err(CmdError::Syntax);
    }
    ctx.out.ok();
    Ok(())
}

fn client_caching(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let t = &mut ctx.client.track;
    if !t.on {
        return Err(CmdError::Msg("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled".into()));
    }
    let opt = args.get(2);
    if is(opt, "YES") {
        if !t.optin {
            return Err(CmdError::Msg(
                "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."
                    .into(),
            ));
        }
    } else if is(opt, "NO") {
        if !t.optout {
            return Err(CmdError::Msg(
                "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode."
                    .into(),
            ));
        }
    } else {
        return Err(CmdError::Syntax);
    }
    t.caching = true;
    ctx.out.ok();
    Ok(())
}

fn client_getredir(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let info = ctx.node.tracking.info(ctx.client.handle.id);
    ctx.out.int(if info.on { info.redirect as i64 } else { -1 });
    Ok(())
}

fn client_trackinginfo(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let info = ctx.node.tracking.info(ctx.client.handle.id);
    let caching = ctx.client.track.caching;
    let mut flags: Vec<&[u8]> = vec![if info.on { b"on" } else { b"off" }];
    if info.bcast {
        flags.push(b"bcast");
    }
    if info.optin {
        flags.push(b"optin");
        if caching {
            flags.push(b"caching-yes");
        }
    }
    if info.optout {
        flags.push(b"optout");
        if caching {
            flags.push(b"caching-no");
        }
    }
    if info.noloop {
        flags.push(b"noloop");
    }
    if info.broken_redirect {
        flags.push(b"broken_redirect");
    }
    let out = &mut *ctx.out;
    out.map(3);
    out.bulk(b"flags");
    out.set(flags.len());
    for f in flags {
        out.bulk(f);
    }
    out.bulk(b"redirect");
    out.int(if info.on { info.redirect as i64 } else { -1 });
    out.bulk(b"prefixes");
    out.bulk_array(info.prefixes.iter().map(|p| &p[..]));
    Ok(())
}

fn subscribe(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let t = &mut ctx.client.track;
    for ch in args.skip(1).iter() {
        if !t.channels.iter().any(|c| &c[..] == ch) {
            t.channels.push(ch.into());
        }
        ctx.out.push(3);
        ctx.out.bulk(b"subscribe");
        ctx.out.bulk(ch);
        ctx.out.int(t.channels.len() as i64);
    }
    t.mailbox.set_subscriptions(t.channels.len());
    t.mailbox.set_resp3(ctx.out.resp3());
    Ok(())
}

fn unsubscribe(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let t = &mut ctx.client.track;
    let names: Vec<Box<[u8]>> = if args.len() > 1 {
        args.skip(1).iter().map(Box::from).collect()
    } else {
        t.channels.clone()
    };
    if names.is_empty() {
        ctx.out.push(3);
        ctx.out.bulk(b"unsubscribe");
        ctx.out.null();
        ctx.out.int(0);
    }
    for ch in names {
        t.channels.retain(|c| *c != ch);
        ctx.out.push(3);
        ctx.out.bulk(b"unsubscribe");
        ctx.out.bulk(&ch);
        ctx.out.int(t.channels.len() as i64);
    }
    t.mailbox.set_subscriptions(t.channels.len());
    Ok(())
}
