//! Server commands: CONFIG, COMMAND, TIME, DEBUG, and the persistence commands SAVE, BGSAVE,
//! BGREWRITEAOF, LASTSAVE (INFO lives in `info`).

use super::table::{all, dispatch_sub, lookup, CommandSpec};
use super::{glob, CmdError, CmdResult, Ctx};
use crate::config::{ConfigError, Settings};
use crate::resp::Args;
use crate::spec;
use std::sync::atomic::Ordering::Relaxed;

#[rustfmt::skip]
pub const COMMANDS: &[super::CommandSpec] = &[
    spec!("config", -2, [], 0, 0, 0, "server", "2.0.0", "A container for server configuration commands.", dispatch_sub, CONFIG),
    spec!("command", -1, ["loading", "stale"], 0, 0, 0, "server", "2.8.13", "Returns detailed information about all commands.", command, COMMAND),
    spec!("time", 1, ["loading", "stale", "fast"], 0, 0, 0, "server", "2.6.0", "Returns the server time.", time),
    spec!("debug", -2, ["admin", "noscript", "loading", "stale"], 0, 0, 0, "server", "1.0.0", "A container for debugging commands.", dispatch_sub, DEBUG),
    spec!("save", 1, ["admin", "noscript", "no_async_loading", "no_multi"], 0, 0, 0, "server", "1.0.0", "Synchronously saves the database(s) to disk.", save),
    spec!("bgsave", -1, ["admin", "noscript", "no_async_loading"], 0, 0, 0, "server", "1.0.0", "Asynchronously saves the database(s) to disk.", bgsave),
    spec!("bgrewriteaof", 1, ["admin", "noscript", "no_async_loading"], 0, 0, 0, "server", "1.0.0", "Asynchronously rewrites the append-only file to disk.", bgrewriteaof),
    spec!("lastsave", 1, ["loading", "stale", "fast"], 0, 0, 0, "server", "1.0.0", "Returns the Unix timestamp of the last successful save to disk.", lastsave),
    spec!("info", -1, ["loading", "stale", "keyspace_wide"], 0, 0, 0, "server", "1.0.0", "Returns information and statistics about the server.", super::info::info),
];

#[rustfmt::skip]
const CONFIG: &[super::CommandSpec] = &[
    spec!("config|get", -3, ["admin", "noscript", "loading", "stale"], 0, 0, 0, "server", "2.0.0", "Returns the effective values of configuration parameters.", config_get),
    spec!("config|set", -4, ["admin", "noscript", "loading", "stale"], 0, 0, 0, "server", "2.0.0", "Sets configuration parameters in-flight.", config_set),
    spec!("config|resetstat", 2, ["admin", "noscript", "loading", "stale"], 0, 0, 0, "server", "2.0.0", "Resets the server's statistics.", config_resetstat),
    spec!("config|rewrite", 2, ["admin", "noscript", "loading", "stale"], 0, 0, 0, "server", "2.8.0", "Persists the effective configuration to file.", config_rewrite),
    spec!("config|help", 2, ["loading", "stale"], 0, 0, 0, "server", "5.0.0", "Returns helpful text about the different subcommands.", config_help),
];

#[rustfmt::skip]
const COMMAND: &[super::CommandSpec] = &[
    spec!("command|count", 2, ["loading", "stale"], 0, 0, 0, "server", "2.8.13", "Returns a count of commands.", command_count),
    spec!("command|info", -2, ["loading", "stale"], 0, 0, 0, "server", "2.8.13", "Returns information about one, multiple or all commands.", command_info),
    spec!("command|docs", -2, ["loading", "stale"], 0, 0, 0, "server", "7.0.0", "Returns documentary information about one, multiple or all commands.", command_docs),
    spec!("command|getkeys", -4, ["loading", "stale"], 0, 0, 0, "server", "2.8.13", "Extracts the key names from an arbitrary command.", command_getkeys),
    spec!("command|list", -2, ["loading", "stale"], 0, 0, 0, "server", "7.0.0", "Returns a list of command names.", command_list),
];

#[rustfmt::skip]
const DEBUG: &[super::CommandSpec] = &[spec!("debug|sleep", 3, ["admin"], 0, 0, 0, "server", "1.0.0", "Blocks the connection for the given number of seconds.", debug_sleep)];

// ----- CONFIG -----

fn config_get(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let pats: Vec<&[u8]> = args.skip(2).iter().collect();
    let found = ctx
        .node
        .config
        .get_matching(|name| pats.iter().any(|p| glob::matches(p, name.as_bytes(), true)));
    ctx.out.map(found.len());
    for (k, v) in found {
        ctx.out.bulk(k.as_bytes());
        ctx.out.bulk(v.as_bytes());
    }
    Ok(())
}

fn config_set(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if !args.len().is_multiple_of(2) {
        return Err(CmdError::Arity("config|set".into()));
    }
    let pairs: Vec<(String, String)> = (2..args.len())
        .step_by(2)
        .map(|i| {
            (
                String::from_utf8_lossy(args.get(i)).into_owned(),
                String::from_utf8_lossy(args.get(i + 1)).into_owned(),
            )
        })
        .collect();
    let settings = ctx.node.config.set(&pairs).map_err(|e| match e {
        ConfigError::Unknown(k) => CmdError::Msg(format!("ERR Unknown option or number of arguments for CONFIG SET - '{k}'")),
        ConfigError::Immutable(k) => CmdError::Msg(format!("ERR CONFIG SET failed (possibly related to argument '{k}') - can't set immutable config")),
        ConfigError::Invalid { name, reason } => CmdError::Msg(format!("ERR CONFIG SET failed (possibly related to argument '{name}') - {reason}")),
        other => CmdError::Msg(format!("ERR {other}")),
    })?;
    apply_settings(ctx.node, &settings);
    if let Some(p) = &ctx.node.persist {
        p.apply(&settings.persist, true)
            .map_err(|e| CmdError::Msg(format!("ERR CONFIG SET failed: {e}")))?;
    }
    ctx.out.ok();
    Ok(())
}

/// Pushes settings that other layers cache into them.
pub fn apply_settings(node: &super::Node, s: &Settings) {
    node.keyspace.clock().set_max_drift_ms(s.max_clock_drift_ms);
    node.keyspace.set_tombstone_grace_ms(s.tombstone_grace_ms);
    node.keyspace
        .evict
        .configure(crate::store::EvictionSettings {
            maxmemory: s.maxmemory,
            policy: crate::store::Policy::from_name(&s.maxmemory_policy)
                .unwrap_or(crate::store::Policy::NoEviction),
            samples: s.maxmemory_samples,
            lfu_log_factor: s.lfu_log_factor,
            lfu_decay_time: s.lfu_decay_time,
        });
    super::tracking::apply_settings(node);
    super::hotkeys::apply_settings(node);
    super::regions::apply_settings(node);
}

fn config_resetstat(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let st = &ctx.node.stats;
    for c in [
        &st.commands_processed,
        &st.connections_received,
        &st.rejected_connections,
        &st.net_input_bytes,
        &st.net_output_bytes,
    ] {
        c.store(0, Relaxed);
    }
    let ks = &ctx.node.keyspace.stats;
    for c in [
        &ks.hits,
        &ks.misses,
        &ks.expired_keys,
        &ks.tombstones_collected,
        &ks.merges_applied,
        &ks.merges_noop,
        &ks.merges_dropped_stale,
        &ks.conflicts_register,
        &ks.conflicts_counter,
        &ks.conflicts_expiry,
        &ctx.node.keyspace.evict.evicted,
    ] {
        c.store(0, Relaxed);
    }
    ctx.out.ok();
    Ok(())
}

fn config_rewrite(_ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    Err(CmdError::Msg(
        "ERR The server is running without a config file".into(),
    ))
}

fn config_help(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let lines = [
        "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GET <pattern>",
        "    Return parameters matching the glob-like <pattern> and their values.",
        "SET <directive> <value>",
        "    Set the configuration <directive> to <value>.",
        "RESETSTAT",
        "    Reset statistics reported by the INFO command.",
        "HELP",
        "    Print this help.",
    ];
    ctx.out.help(&lines);
    Ok(())
}

// ----- SAVE, BGSAVE, BGREWRITEAOF, LASTSAVE -----

fn persist<'a>(ctx: &Ctx<'a, '_>) -> Result<&'a std::sync::Arc<crate::persist::Persist>, CmdError> {
    ctx.node
        .persist
        .as_ref()
        .ok_or_else(|| CmdError::Msg("ERR persistence is not available on this node".into()))
}

fn save(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    persist(ctx)?
        .save()
        .map_err(|e| CmdError::Msg(format!("ERR {e}")))?;
    ctx.out.ok();
    Ok(())
}

fn bgsave(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let schedule = match args.len() {
        1 => false,
        2 if super::is(args.get(1), "SCHEDULE") => true,
        _ => return Err(CmdError::Syntax),
    };
    let p = persist(ctx)?;
    match p.bgsave() {
        Ok(()) => ctx.out.simple("Background saving started"),
        Err(crate::persist::PersistError::Busy) if schedule => {
            p.schedule_save();
            ctx.out.simple("Background saving scheduled")
        }
        Err(e) => return Err(CmdError::Msg(format!("ERR {e}"))),
    }
    Ok(())
}

/// The snapshot is the log's compaction, so a rewrite is a background save.
fn bgrewriteaof(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let p = persist(ctx)?;
    match p.bgsave() {
        Ok(()) => ctx
            .out
            .simple("Background append only file rewriting started"),
        Err(crate::persist::PersistError::Busy) => {
            p.schedule_save();
            ctx.out
                .simple("Background append only file rewriting scheduled")
        }
        Err(e) => return Err(CmdError::Msg(format!("ERR {e}"))),
    }
    Ok(())
}

fn lastsave(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    ctx.out.int(persist(ctx)?.last_save() as i64);
    Ok(())
}

// ----- COMMAND -----

fn acl_categories(c: &CommandSpec) -> Vec<&'static str> {
    let mut v = Vec::new();
    if c.has_flag("write") {
        v.push("@write");
    }
    if c.has_flag("readonly") {
        v.push("@read");
    }
    v.push(match c.group {
        "string" => "@string",
        "generic" => "@keyspace",
        "connection" => "@connection",
        "transactions" => "@transaction",
        "pubsub" => "@pubsub",
        _ => "@admin",
    });
    v.push(if c.has_flag("fast") { "@fast" } else { "@slow" });
    v
}

fn write_info(ctx: &mut Ctx<'_, '_>, c: &CommandSpec) {
    let out = &mut *ctx.out;
    out.array(10);
    out.bulk(c.name.as_bytes());
    out.int(c.arity as i64);
    let flags: Vec<&str> = c.public_flags().collect();
    out.set(flags.len());
    for f in flags {
        out.simple(f);
    }
    out.int(c.first_key as i64);
    out.int(c.last_key as i64);
    out.int(c.step as i64);
    let cats = acl_categories(c);
    out.set(cats.len());
    for cat in cats {
        out.simple(cat);
    }
    out.array(0); // tips
    if c.first_key > 0 {
        out.array(1);
        out.map(3);
        out.bulk(b"flags");
        let kflags: &[&str] = if c.has_flag("write") {
            &["RW", "update"]
        } else {
            &["RO", "access"]
        };
        out.set(kflags.len());
        for f in kflags {
            out.simple(f);
        }
        out.bulk(b"begin_search");
        out.map(2);
        out.bulk(b"type");
        out.bulk(b"index");
        out.bulk(b"spec");
        out.map(1);
        out.bulk(b"index");
        out.int(c.first_key as i64);
        out.bulk(b"find_keys");
        out.map(2);
        out.bulk(b"type");
        out.bulk(b"range");
        out.bulk(b"spec");
        out.map(3);
        out.bulk(b"lastkey");
        out.int(if c.last_key < 0 {
            c.last_key as i64
        } else {
            (c.last_key - c.first_key) as i64
        });
        out.bulk(b"keystep");
        out.int(c.step as i64);
        out.bulk(b"limit");
        out.int(0);
    } else {
        out.array(0);
    }
    out.array(c.subcommands.len());
    for s in c.subcommands {
        write_info(ctx, s);
    }
}

/// COMMAND and COMMAND INFO without names: every command.
fn write_all_info(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let cmds = all();
    ctx.out.array(cmds.len());
    for c in cmds {
        write_info(ctx, c);
    }
    Ok(())
}

fn command(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if args.len() == 1 {
        return write_all_info(ctx);
    }
    dispatch_sub(ctx, args)
}

fn command_count(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    ctx.out.int(all().len() as i64);
    Ok(())
}

fn command_info(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if args.len() == 2 {
        return write_all_info(ctx);
    }
    ctx.out.array(args.len() - 2);
    for name in args.skip(2).iter() {
        match lookup(name) {
            Some(c) => write_info(ctx, c),
            // Redis answers a null (`$-1` in RESP2) for an unknown name.
            None => ctx.out.null(),
        }
    }
    Ok(())
}

fn write_docs(ctx: &mut Ctx<'_, '_>, c: &CommandSpec) {
    let out = &mut *ctx.out;
    out.bulk(c.name.as_bytes());
    let has_subs = !c.subcommands.is_empty();
    out.map(3 + has_subs as usize);
    out.bulk(b"summary");
    out.bulk(c.summary.as_bytes());
    out.bulk(b"since");
    out.bulk(c.since.as_bytes());
    out.bulk(b"group");
    out.bulk(c.group.as_bytes());
    if has_subs {
        out.bulk(b"subcommands");
        out.map(c.subcommands.len());
        for s in c.subcommands {
            write_docs(ctx, s);
        }
    }
}

fn command_docs(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let cmds: Vec<&CommandSpec> = if args.len() == 2 {
        all()
    } else {
        args.skip(2).iter().filter_map(lookup).collect()
    };
    ctx.out.map(cmds.len());
    for c in cmds {
        write_docs(ctx, c);
    }
    Ok(())
}

fn command_getkeys(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let target = args.skip(2);
    let Some(c) = lookup(target.get(0)) else {
        return Err(CmdError::Msg("ERR Invalid command specified".into()));
    };
    // Redis's order: a command without keys is reported before a wrong argument count.
    if c.first_key <= 0 {
        return Err(CmdError::Msg("ERR The command has no key arguments".into()));
    }
    if !c.arity_ok(target.len()) {
        return Err(CmdError::Msg(
            "ERR Invalid number of arguments specified for command".into(),
        ));
    }
    let pos = c.key_positions(target.len());
    ctx.out.bulk_array(
        pos.into_iter()
            .map(|i| target.get(i))
            .collect::<Vec<_>>()
            .into_iter(),
    );
    Ok(())
}

fn command_list(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut names: Vec<&str> = all().into_iter().map(|c| c.name).collect();
    if args.len() == 5 && super::is(args.get(2), "FILTERBY") {
        let v = args.get(4);
        match args.get(3).to_ascii_uppercase().as_slice() {
            b"PATTERN" => names.retain(|n| glob::matches(v, n.as_bytes(), true)),
            b"ACLCAT" => {
                let cat = format!("@{}", String::from_utf8_lossy(v).to_ascii_lowercase());
                names.retain(|n| {
                    lookup(n.as_bytes()).is_some_and(|c| acl_categories(c).contains(&cat.as_str()))
                });
            }
            b"MODULE" => names.clear(),
            _ => return Err(CmdError::Syntax),
        }
    } else if args.len() != 2 {
        return Err(CmdError::Syntax);
    }
    ctx.out.bulk_array(names.iter().map(|n| n.as_bytes()));
    Ok(())
}

// ----- TIME, DEBUG -----

fn time(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ctx.out.array(2);
    ctx.out.bulk(now.as_secs().to_string().as_bytes());
    ctx.out.bulk(now.subsec_micros().to_string().as_bytes());
    Ok(())
}

fn debug_sleep(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let secs = crate::crdt::number::parse_f64(args.get(2))
        .filter(|s| *s >= 0.0 && s.is_finite())
        .ok_or(CmdError::NotFloat)?;
    let d = std::time::Duration::from_secs_f64(secs.min(3600.0));
    ctx.client.blocked = Some(Box::pin(async move {
        tokio::time::sleep(d).await;
        // The +OK is already written, so the reply stays in place even inside EXEC.
        Box::new(|_: &mut crate::resp::Out| {}) as Box<dyn FnOnce(&mut crate::resp::Out) + Send>
    }));
    ctx.out.ok();
    Ok(())
}
