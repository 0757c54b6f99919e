//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! EXEC runs atomically: it locks the slots of every key the queued commands name (and of the
//! watched keys) before checking WATCH, then runs the queue under those locks, so no other
//! client's command can interleave. A queue containing a keyspace-wide command (KEYS, FLUSHALL,
//! INFO...) cannot be pre-locked without locking every slot; it runs command by command, each
//! atomic on its own — documented in docs/architecture.md.

use super::{dispatch, lookup, CmdError, CmdResult, Ctx, Db};
use crate::resp::Args;
use crate::spec;

#[rustfmt::skip]
pub const COMMANDS: &[super::CommandSpec] = &[
    spec!("multi", 1, ["fast", "txn_control", "allow_busy"], 0, 0, 0, "transactions", "1.2.0", "Starts a transaction.", multi),
    spec!("exec", 1, ["txn_control", "skip_slowlog"], 0, 0, 0, "transactions", "1.2.0", "Executes all commands in a transaction.", exec),
    spec!("discard", 1, ["fast", "txn_control", "allow_busy"], 0, 0, 0, "transactions", "2.0.0", "Discards a transaction.", discard),
    spec!("watch", -2, ["fast", "txn_control", "allow_busy"], 1, -1, 1, "transactions", "2.2.0", "Monitors changes to keys to determine the execution of a transaction.", watch),
    spec!("unwatch", 1, ["fast", "allow_busy"], 0, 0, 0, "transactions", "2.2.0", "Forgets about watched keys of a transaction.", unwatch),
];

fn multi(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    if ctx.client.multi.is_some() {
        return Err(CmdError::Msg("ERR MULTI calls can not be nested".into()));
    }
    ctx.client.multi = Some(Vec::new());
    ctx.client.multi_failed = false;
    ctx.out.ok();
    Ok(())
}

fn discard(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    if ctx.client.multi.take().is_none() {
        return Err(CmdError::Msg("ERR DISCARD without MULTI".into()));
    }
    unwatch_all(ctx);
    ctx.out.ok();
    Ok(())
}

fn watch(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if ctx.client.multi.is_some() {
        return Err(CmdError::Msg(
            "ERR WATCH inside MULTI is not allowed".into(),
        ));
    }
    for key in args.skip(1).iter() {
        if ctx.client.watched.iter().any(|(k, _, _)| &**k == key) {
            continue;
        }
        let version = ctx.keyspace().watch(key);
        let live = ctx.db.key(key, |k| k.exists());
        ctx.client.watched.push((key.into(), version, live));
    }
    ctx.out.ok();
    Ok(())
}

fn unwatch(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    unwatch_all(ctx);
    ctx.out.ok();
    Ok(())
}

/// Forgets every WATCH of the client (EXEC, DISCARD, UNWATCH, RESET, disconnect).
pub fn unwatch_all(ctx: &mut Ctx<'_, '_>) {
    for (key, _, _) in ctx.client.watched.drain(..) {
        ctx.node.keyspace.unwatch(&key);
    }
}

fn exec(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let Some(queue) = ctx.client.multi.take() else {
        return Err(CmdError::Msg("ERR EXEC without MULTI".into()));
    };
    if std::mem::take(&mut ctx.client.multi_failed) {
        unwatch_all(ctx);
        return Err(CmdError::Msg(
            "EXECABORT Transaction discarded because of previous errors.".into(),
        ));
    }
    // 1. Collect every key the transaction touches (queued commands and watched keys).
    let mut keys: Vec<&[u8]> = ctx.client.watched.iter().map(|(k, _, _)| &**k).collect();
    let mut prelock = true;
    for cmd in &queue {
        let args = cmd.args();
        let Some(spec) = lookup(args.get(0)) else {
            continue;
        };
        prelock &= !spec.has_flag("keyspace_wide");
        keys.extend(
            spec.key_positions(args.len())
                .into_iter()
                .map(|i| args.get(i)),
        );
    }
    let node = ctx.node;
    let mut txn = Some(node.keyspace.lock(keys.iter().copied()));
    // 2. WATCH: abort if a watched key changed or expired since it was watched.
    let dirty = ctx.client.watched.iter().any(|(k, version, was_live)| {
        let t = txn.as_mut().expect("locked");
        t.watch_version(k) != *version || (*was_live && !t.key(k).exists())
    });
    if dirty {
        drop(txn);
        unwatch_all(ctx);
        ctx.out.null_array();
        return Ok(());
    }
    if !prelock {
        txn = None;
    }
    // 3. Run the queue, inside the locks when we hold them.
    ctx.out.array(queue.len());
    {
        let mut inner = Ctx {
            node,
            client: &mut *ctx.client,
            out: &mut *ctx.out,
            db: Db {
                node,
                exec: txn.as_mut(),
            },
        };
        for cmd in &queue {
            dispatch(&mut inner, cmd.args());
        }
    }
    drop(txn);
    unwatch_all(ctx);
    Ok(())
}
