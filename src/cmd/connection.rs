//! Connection commands: PING, ECHO, QUIT, RESET, SELECT, AUTH, HELLO and CLIENT.

use super::table::dispatch_sub;
use super::txn::unwatch_all;
use super::{arg_i64, is, CmdError, CmdResult, Ctx};
use crate::resp::{Args, Protocol};
use crate::spec;
use std::sync::atomic::Ordering::Relaxed;

/// The Redis version Meridian reports, so clients enable Redis 7 features. 7.4.0 because
/// redis-py (>= 5.1) refuses its client-side cache against a server reporting less
/// (docs/tracking.md).
pub const REDIS_VERSION: &str = "7.4.0";

#[rustfmt::skip]
pub const COMMANDS: &[super::CommandSpec] = &[
    spec!("ping", -1, ["fast"], 0, 0, 0, "connection", "1.0.0", "Returns the server's liveliness response.", ping),
    spec!("echo", 2, ["fast"], 0, 0, 0, "connection", "1.0.0", "Returns the given string.", echo),
    spec!("quit", -1, ["no_auth", "fast", "allow_busy", "txn_control"], 0, 0, 0, "connection", "1.0.0", "Closes the connection.", quit),
    spec!("reset", 1, ["no_auth", "fast", "txn_control", "allow_busy"], 0, 0, 0, "connection", "6.2.0", "Resets the connection.", reset),
    spec!("select", 2, ["loading", "stale", "fast"], 0, 0, 0, "connection", "1.0.0", "Changes the selected database.", select),
    spec!("auth", -2, ["no_auth", "fast", "allow_busy"], 0, 0, 0, "connection", "1.0.0", "Authenticates the connection.", auth),
    spec!("hello", -1, ["no_auth", "fast", "allow_busy"], 0, 0, 0, "connection", "6.0.0", "Handshakes with the Redis server.", hello),
    spec!("client", -2, [], 0, 0, 0, "connection", "2.4.0", "A container for client connection commands.", dispatch_sub, CLIENT),
];

#[rustfmt::skip]
const CLIENT: &[super::CommandSpec] = &[
    spec!("client|id", 2, ["fast"], 0, 0, 0, "connection", "5.0.0", "Returns the unique client ID of the connection.", client_id),
    spec!("client|setname", 3, ["fast"], 0, 0, 0, "connection", "2.6.9", "Sets the connection name.", client_setname),
    spec!("client|getname", 2, ["fast"], 0, 0, 0, "connection", "2.6.9", "Returns the name of the connection.", client_getname),
    spec!("client|setinfo", 4, ["fast"], 0, 0, 0, "connection", "7.2.0", "Sets information specific to the client or connection.", client_setinfo),
    spec!("client|list", -2, [], 0, 0, 0, "connection", "2.4.0", "Lists open connections.", client_list),
    spec!("client|info", 2, ["fast"], 0, 0, 0, "connection", "6.2.0", "Returns information about the connection.", client_info),
    spec!("client|kill", -3, [], 0, 0, 0, "connection", "2.4.0", "Terminates open connections.", client_kill),
    spec!("client|no-evict", 3, [], 0, 0, 0, "connection", "7.0.0", "Sets the client eviction mode of the connection.", client_no_evict),
    spec!("client|no-touch", 3, ["fast"], 0, 0, 0, "connection", "7.2.0", "Controls whether commands sent by the client affect the LRU/LFU of accessed keys.", client_no_touch),
    super::tracking::CLIENT_TRACKING,
    super::tracking::CLIENT_CACHING,
    super::tracking::CLIENT_GETREDIR,
    super::tracking::CLIENT_TRACKINGINFO,
    spec!("client|help", 2, ["loading", "stale"], 0, 0, 0, "connection", "5.0.0", "Returns helpful text about the different subcommands.", client_help),
];

fn ping(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    // A RESP2 connection in Pub/Sub mode answers like a message (Redis).
    if !ctx.client.track.channels.is_empty() && !ctx.out.resp3() && args.len() <= 2 {
        ctx.out.array(2);
        ctx.out.bulk(b"pong");
        ctx.out
            .bulk(if args.len() == 2 { args.get(1) } else { b"" });
        return Ok(());
    }
    match args.len() {
        1 => ctx.out.simple("PONG"),
        2 => ctx.out.bulk(args.get(1)),
        _ => return Err(CmdError::Arity("ping".into())),
    }
    Ok(())
}

fn echo(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ctx.out.bulk(args.get(1));
    Ok(())
}

fn quit(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    ctx.client.close_after_reply = true;
    ctx.out.ok();
    Ok(())
}

fn reset(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    ctx.client.multi = None;
    ctx.client.multi_failed = false;
    unwatch_all(ctx);
    super::tracking::reset(ctx);
    ctx.out.proto = Protocol::Resp2;
    let h = &ctx.client.handle;
    h.resp.store(2, Relaxed);
    h.name.lock().clear();
    h.no_evict.store(false, Relaxed);
    h.no_touch.store(false, Relaxed);
    ctx.client.authenticated = ctx.node.config.settings().requirepass.is_none();
    ctx.out.simple("RESET");
    Ok(())
}

fn select(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if arg_i64(args.get(1))? != 0 {
        return Err(CmdError::Msg(
            "ERR SELECT is not allowed in cluster mode".into(),
        ));
    }
    ctx.out.ok();
    Ok(())
}

/// Checks a (user, password) pair against `requirepass` (the only user is `default`).
fn check_password(ctx: &mut Ctx<'_, '_>, user: &[u8], pass: &[u8]) -> CmdResult {
    let Some(expected) = ctx.node.config.settings().requirepass.clone() else {
        if user == b"default" {
            ctx.client.authenticated = true;
            return Ok(());
        }
        return Err(CmdError::Msg(
            "WRONGPASS invalid username-password pair or user is disabled.".into(),
        ));
    };
    if user == b"default" && pass == expected.as_bytes() {
        ctx.client.authenticated = true;
        Ok(())
    } else {
        Err(CmdError::Msg(
            "WRONGPASS invalid username-password pair or user is disabled.".into(),
        ))
    }
}

fn auth(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    match args.len() {
        2 => {
            if ctx.node.config.settings().requirepass.is_none() {
                return Err(CmdError::Msg(
                    "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into(),
                ));
            }
            check_password(ctx, b"default", args.get(1))?
        }
        3 => check_password(ctx, args.get(1), args.get(2))?,
        _ => return Err(CmdError::Syntax),
    }
    ctx.out.ok();
    Ok(())
}

fn hello(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut proto = None;
    let mut i = 1;
    if args.len() >= 2 {
        let v = crate::crdt::number::parse_i64(args.get(1)).ok_or_else(|| {
            CmdError::Msg("ERR Protocol version is not an integer or out of range".into())
        })?;
        if v != 2 && v != 3 {
            return Err(CmdError::Msg("NOPROTO unsupported protocol version".into()));
        }
        proto = Some(if v == 3 {
            Protocol::Resp3
        } else {
            Protocol::Resp2
        });
        i = 2;
    }
    let mut setname = None;
    while i < args.len() {
        let rest = args.len() - i - 1;
        if is(args.get(i), "AUTH") && rest >= 2 {
            check_password(ctx, args.get(i + 1), args.get(i + 2))?;
            i += 3;
        } else if is(args.get(i), "SETNAME") && rest >= 1 {
            setname = Some(valid_name(args.get(i + 1))?);
            i += 2;
        } else {
            return Err(CmdError::Msg(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(args.get(i))
            )));
        }
    }
    if !ctx.client.authenticated {
        return Err(CmdError::Msg("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into()));
    }
    if let Some(p) = proto {
        ctx.out.proto = p;
        ctx.client
            .handle
            .resp
            .store(if p == Protocol::Resp3 { 3 } else { 2 }, Relaxed);
    }
    if let Some(n) = setname {
        *ctx.client.handle.name.lock() = n;
    }
    let out = &mut *ctx.out;
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(REDIS_VERSION.as_bytes());
    out.bulk(b"proto");
    out.int(if out.resp3() { 3 } else { 2 });
    out.bulk(b"id");
    out.int(ctx.client.handle.id as i64);
    let (mode, role): (&[u8], &[u8]) = match ctx.node.cluster.as_deref() {
        None => (b"standalone", b"master"),
        Some(c) => (
            b"cluster",
            match c.topology().me().role {
                crate::cluster::Role::Primary => b"master",
                crate::cluster::Role::Replica { .. } => b"replica",
            },
        ),
    };
    out.bulk(b"mode");
    out.bulk(mode);
    out.bulk(b"role");
    out.bulk(role);
    out.bulk(b"modules");
    out.array(0);
    Ok(())
}

fn valid_name(name: &[u8]) -> Result<String, CmdError> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(CmdError::Msg(
            "ERR Client names cannot contain spaces, newlines or special characters.".into(),
        ));
    }
    Ok(String::from_utf8_lossy(name).into_owned())
}

fn client_id(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    ctx.out.int(ctx.client.handle.id as i64);
    Ok(())
}

fn client_setname(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    *ctx.client.handle.name.lock() = valid_name(args.get(2))?;
    ctx.out.ok();
    Ok(())
}

fn client_getname(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let name = ctx.client.handle.name.lock().clone();
    ctx.out
        .bulk_opt((!name.is_empty()).then_some(name.as_bytes()));
    Ok(())
}

fn client_setinfo(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    // Redis checks the attribute name first, then the value.
    let attr = String::from_utf8_lossy(args.get(2)).into_owned();
    let h = &ctx.client.handle;
    let dest = match attr.to_ascii_uppercase().as_str() {
        "LIB-NAME" => &h.lib_name,
        "LIB-VER" => &h.lib_ver,
        _ => return Err(CmdError::Msg(format!("ERR Unrecognized option '{attr}'"))),
    };
    let value = String::from_utf8_lossy(args.get(3)).into_owned();
    if value.contains(|c: char| c == ' ' || c == '\n' || !c.is_ascii_graphic()) {
        return Err(CmdError::Msg(format!(
            "ERR {attr} cannot contain spaces, newlines or special characters."
        )));
    }
    *dest.lock() = value;
    ctx.out.ok();
    Ok(())
}

fn client_list(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut ids: Option<Vec<u64>> = None;
    let mut i = 2;
    while i < args.len() {
        if is(args.get(i), "TYPE") && i + 1 < args.len() {
            let t = args.get(i + 1).to_ascii_lowercase();
            if !matches!(t.as_slice(), b"normal" | b"master" | b"replica" | b"pubsub") {
                return Err(CmdError::Msg(format!(
                    "ERR Unknown client type '{}'",
                    String::from_utf8_lossy(&t)
                )));
            }
            if t != b"normal" {
                ids = Some(Vec::new());
            }
            i += 2;
        } else if is(args.get(i), "ID") && i + 1 < args.len() {
            let mut v = Vec::new();
            for a in args.skip(i + 1).iter() {
                let id = arg_i64(a)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| CmdError::Msg("ERR Invalid client ID".into()))?;
                v.push(id as u64);
            }
            ids = Some(v);
            i = args.len();
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let mut text = String::new();
    for c in ctx.node.clients.all() {
        if ids.as_ref().is_none_or(|ids| ids.contains(&c.id)) {
            text.push_str(&c.info_line());
            text.push('\n');
        }
    }
    ctx.out.verbatim(&text);
    Ok(())
}

fn client_info(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let line = ctx.client.handle.info_line() + "\n";
    ctx.out.verbatim(&line);
    Ok(())
}

fn client_kill(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    // Old form: CLIENT KILL addr:port → +OK or an error.
    if args.len() == 3 {
        let addr = String::from_utf8_lossy(args.get(2)).into_owned();
        let target = ctx
            .node
            .clients
            .all()
            .into_iter()
            .find(|c| c.addr.to_string() == addr);
        let Some(c) = target else {
            return Err(CmdError::Msg("ERR No such client".into()));
        };
        kill(ctx, &c);
        ctx.out.ok();
        return Ok(());
    }
    // New form: filters, all must match; replies with the number killed.
    if !args.len().is_multiple_of(2) {
        return Err(CmdError::Syntax);
    }
    let (mut id, mut addr, mut laddr, mut skipme) = (None, None, None, true);
    for i in (2..args.len()).step_by(2) {
        let v = String::from_utf8_lossy(args.get(i + 1)).into_owned();
        match args.get(i).to_ascii_uppercase().as_slice() {
            b"ID" => {
                id = Some(v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    CmdError::Msg("ERR client-id should be greater than 0".into())
                })?)
            }
            b"ADDR" => addr = Some(v),
            b"LADDR" => laddr = Some(v),
            b"SKIPME" => {
                skipme = match v.to_ascii_lowercase().as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(CmdError::Syntax),
                }
            }
            b"TYPE" | b"USER" | b"MAXAGE" => {}
            _ => return Err(CmdError::Syntax),
        }
    }
    let me = ctx.client.handle.id;
    let victims: Vec<_> = ctx
        .node
        .clients
        .all()
        .into_iter()
        .filter(|c| id.is_none_or(|i| c.id == i))
        .filter(|c| addr.as_ref().is_none_or(|a| &c.addr.to_string() == a))
        .filter(|c| laddr.as_ref().is_none_or(|a| &c.laddr.to_string() == a))
        .filter(|c| !(skipme && c.id == me))
        .collect();
    for c in &victims {
        kill(ctx, c);
    }
    ctx.out.int(victims.len() as i64);
    Ok(())
}

fn kill(ctx: &mut Ctx<'_, '_>, c: &super::ClientHandle) {
    if c.id == ctx.client.handle.id {
        ctx.client.close_after_reply = true;
    } else {
        c.kill();
    }
}

fn on_off(a: &[u8]) -> Result<bool, CmdError> {
    if is(a, "ON") {
        Ok(true)
    } else if is(a, "OFF") {
        Ok(false)
    } else {
        Err(CmdError::Syntax)
    }
}

fn client_no_evict(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ctx.client
        .handle
        .no_evict
        .store(on_off(args.get(2))?, Relaxed);
    ctx.out.ok();
    Ok(())
}

fn client_no_touch(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ctx.client
        .handle
        .no_touch
        .store(on_off(args.get(2))?, Relaxed);
    ctx.out.ok();
    Ok(())
}

fn client_help(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let lines = [
        "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CACHING (YES|NO)",
        "    Enable/disable tracking of the keys for next command in OPTIN/OPTOUT modes.",
        "GETREDIR",
        "    Return the client ID we are redirecting to when tracking is enabled.",
        "ID",
        "    Return the ID of the current connection.",
        "INFO",
        "    Return information about the current client connection.",
        "GETNAME",
        "    Return the name of the current connection.",
        "SETNAME <name>",
        "    Assign the name <name> to the current connection.",
        "SETINFO <option> <value>",
        "    Set client meta attr. Options are: LIB-NAME, LIB-VER.",
        "LIST [TYPE <type>] [ID <id> [<id> ...]]",
        "    Return information about client connections.",
        "KILL <ip:port> | <option> <value> [<option> <value> ...]",
        "    Kill connections. Options: ID, ADDR, LADDR, SKIPME.",
        "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]]",
        "         [OPTIN] [OPTOUT] [NOLOOP]",
        "    Control server assisted client side caching.",
        "TRACKINGINFO",
        "    Report tracking status for the current connection.",
        "NO-EVICT (ON|OFF)",
        "    Protect the current client connection from eviction.",
        "NO-TOUCH (ON|OFF)",
        "    Commands of this connection do not change keys' last access time.",
        "HELP",
        "    Print this help.",
    ];
    ctx.out.help(&lines);
    Ok(())
}
