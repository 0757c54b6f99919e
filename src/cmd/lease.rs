//! Stampede control commands (DESIGN.md §7): MERIDIAN.FETCH, MERIDIAN.FILL, MERIDIAN.RELEASE,
//! and the hook that lets every other write command void outstanding leases.
//!
//! The state machine and its tables live in `store::lease`; this file parses arguments, reads
//! the key under its slot lock, turns the machine's answer into a reply, and — for a caller
//! that must wait for someone else's fill — parks the connection on a future
//! (`ClientState::blocked`) that wakes when the lease ends, so 199 callers of a missing key cost
//! the database one query and the network no polling. See `docs/stampede.md`.

use super::strings::{deadline_arg, Unit};
use super::{is, CmdError, CmdResult, CommandSpec, Ctx, Node};
use crate::resp::{Args, Out};
use crate::spec;
use crate::store::lease::{FetchOpts, Leases, Meta, Snapshot, Step};
use crate::store::{KeyMut, Keyspace, Ttl};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::sleep_until;

/// FETCH is flagged `write` although it writes nothing: a lease must be taken where the fill
/// will land, so a cluster routes it to the primary even for a READONLY client.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    spec!("meridian.fetch", -2, ["write", "blocking"], 1, 1, 1, "string", "0.1.0", "Returns a key's value, or a lease to recompute it; waits for another caller's fill or serves a stale value while one is under way.", fetch),
    spec!("meridian.fill", -4, ["write", "denyoom"], 1, 1, 1, "string", "0.1.0", "Writes the value recomputed under a lease, if the lease is still valid.", fill),
    spec!("meridian.release", 3, ["write", "fast"], 1, 1, 1, "string", "0.1.0", "Gives a lease back without filling, so the next caller gets it.", release),
];

/// Lease lifetime when FETCH does not say (Facebook's leases: one token per key per 10 s).
const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// What one FETCH answers: `[status, value, token]`.
enum Reply {
    Hit(Vec<u8>),
    Stale(Vec<u8>),
    Lease(Option<Vec<u8>>, u64),
    Miss,
}

impl Reply {
    fn write(&self, out: &mut Out) {
        out.array(3);
        let (status, value, token) = match self {
            Reply::Hit(v) => ("HIT", Some(v), None),
            Reply::Stale(v) => ("STALE", Some(v), None),
            Reply::Lease(v, t) => ("LEASE", v.as_ref(), Some(*t)),
            Reply::Miss => ("MISS", None, None),
        };
        out.bulk(status.as_bytes());
        out.bulk_opt(value.map(|v| &v[..]));
        match token {
            Some(t) => out.bulk(itoa::Buffer::new().format(t).as_bytes()),
            None => out.null(),
        }
    }
}

/// The state machine's answer, with the value read under the same lock.
enum Outcome {
    Done(Reply),
    Wait(tokio::sync::watch::Receiver<()>, Instant),
}

/// Parsed FETCH options.
struct FetchArgs {
    wait: Duration,
    opts: FetchOpts,
}

/// A non-negative millisecond count, with Redis's errors.
fn millis(a: &[u8]) -> Result<u64, CmdError> {
    let v = super::arg_i64(a)?;
    u64::try_from(v).map_err(|_| CmdError::Msg("ERR timeout is negative".into()))
}

/// `[WAIT ms] [GRACE ms] [BETA b] [LEASE ms]`, in any order; each needs its value.
fn parse_fetch(args: Args<'_>) -> Result<FetchArgs, CmdError> {
    let mut f = FetchArgs {
        wait: Duration::ZERO,
        opts: FetchOpts {
            grace_ms: None,
            beta: 1.0,
            lease: DEFAULT_LEASE,
        },
    };
    let mut i = 2;
    while i < args.len() {
        let (opt, Some(v)) = (args.get(i), (i + 1 < args.len()).then(|| args.get(i + 1))) else {
            return Err(CmdError::Syntax);
        };
        if is(opt, "WAIT") {
            f.wait = Duration::from_millis(millis(v)?);
        } else if is(opt, "GRACE") {
            f.opts.grace_ms = Some(millis(v)?);
        } else if is(opt, "BETA") {
            let b = crate::crdt::number::parse_f64(v).ok_or(CmdError::NotFloat)?;
            if !(b.is_finite() && b >= 0.0) {
                return Err(CmdError::Msg(
                    "ERR BETA must be a non-negative number".into(),
                ));
            }
            f.opts.beta = b;
        } else if is(opt, "LEASE") {
            match millis(v)? {
                0 => return Err(CmdError::Msg("ERR LEASE must be positive".into())),
                ms => f.opts.lease = Duration::from_millis(ms),
            }
        } else {
            return Err(CmdError::Syntax);
        }
        i += 2;
    }
    Ok(f)
}

/// What the key holds now, as the lease machine needs it.
fn snapshot(k: &mut KeyMut<'_>) -> Snapshot {
    k.live().map_or_else(Snapshot::default, |e| Snapshot {
        live: true,
        version: Some(e.max_stamp()),
        register: e.register_stamp(),
        deadline: e.deadline(),
    })
}

/// One look at the key: read it and run the state machine, under the key's slot lock.
fn step(k: &mut KeyMut<'_>, leases: &Leases, opts: &FetchOpts, client: u64) -> Outcome {
    let snap = snapshot(k);
    let value = k.read().map(|v| v.into_owned());
    match (
        leases.fetch(k.key(), &snap, opts, client, k.now_ms()),
        value,
    ) {
        (Step::Fresh, Some(v)) => Outcome::Done(Reply::Hit(v)),
        (Step::Stale, Some(v)) => Outcome::Done(Reply::Stale(v)),
        (Step::Granted { token }, v) => Outcome::Done(Reply::Lease(v, token)),
        (
            Step::Wait {
                changed,
                lease_expires,
            },
            _,
        ) => Outcome::Wait(changed, lease_expires),
        // Fresh or stale always come with a live value, read under the same lock.
        (Step::Fresh | Step::Stale, None) => Outcome::Done(Reply::Miss),
    }
}

/// `MERIDIAN.FETCH key [WAIT ms] [GRACE ms] [BETA b] [LEASE ms]`.
fn fetch(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let f = parse_fetch(args)?;
    let key = args.get(1);
    let (leases, client) = (&ctx.node.leases, ctx.client.handle.id);
    let (changed, lease_expires) = match ctx.db.key(key, |k| step(k, leases, &f.opts, client)) {
        Outcome::Done(r) => {
            r.write(ctx.out);
            return Ok(());
        }
        Outcome::Wait(changed, lease_expires) => (changed, lease_expires),
    };
    // Like Redis's blocking commands, inside MULTI a FETCH never blocks.
    if f.wait.is_zero() || ctx.db.exec.is_some() {
        Reply::Miss.write(ctx.out);
        return Ok(());
    }
    let deadline = Instant::now() + f.wait;
    let waiter = Waiter {
        keyspace: ctx.node.keyspace.clone(),
        leases: ctx.node.leases.clone(),
        key: key.into(),
        opts: f.opts,
        client,
    };
    ctx.client.blocked = Some(Box::pin(async move {
        let reply = waiter.run(changed, lease_expires, deadline).await;
        Box::new(move |out: &mut Out| reply.write(out)) as Box<dyn FnOnce(&mut Out) + Send>
    }));
    Ok(())
}

/// A FETCH parked until the lease it waits on ends (filled, released, voided, expired, or its
/// holder gone) or its own WAIT runs out.
struct Waiter {
    keyspace: Arc<Keyspace>,
    leases: Arc<Leases>,
    key: Box<[u8]>,
    opts: FetchOpts,
    client: u64,
}

impl Waiter {
    async fn run(
        self,
        mut changed: tokio::sync::watch::Receiver<()>,
        mut lease_expires: Instant,
        deadline: Instant,
    ) -> Reply {
        loop {
            // The sender is dropped with the lease, so `changed` resolves when the lease ends;
            // an expired lease is noticed by the timer (nobody else may be looking).
            tokio::select! {
                _ = changed.changed() => {}
                _ = sleep_until(deadline.min(lease_expires).into()) => {}
            }
            let mut txn = self.keyspace.lock_key(&self.key);
            let outcome = step(
                &mut txn.key(&self.key),
                &self.leases,
                &self.opts,
                self.client,
            );
            drop(txn);
            match outcome {
                Outcome::Done(r) => return r,
                Outcome::Wait(..) if Instant::now() >= deadline => return Reply::Miss,
                Outcome::Wait(c, e) => (changed, lease_expires) = (c, e),
            }
        }
    }
}

/// `MERIDIAN.FILL key token value [EX s | PX ms] [SOFT ms]`.
fn fill(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let now_ms = crate::clock::unix_ms();
    let (key, token, value) = (args.get(1), token_arg(args.get(2))?, args.get(3));
    let (mut ttl, mut soft) = (Ttl::Clear, None);
    let mut i = 4;
    while i < args.len() {
        let (opt, Some(v)) = (args.get(i), (i + 1 < args.len()).then(|| args.get(i + 1))) else {
            return Err(CmdError::Syntax);
        };
        let unit = if is(opt, "EX") {
            Some(Unit::Seconds)
        } else if is(opt, "PX") {
            Some(Unit::Millis)
        } else {
            None
        };
        match unit {
            Some(_) if ttl != Ttl::Clear => return Err(CmdError::Syntax),
            Some(u) => ttl = Ttl::At(deadline_arg(v, u, false, now_ms, "meridian.fill")?),
            None if is(opt, "SOFT") => {
                soft = Some(deadline_arg(
                    v,
                    Unit::Millis,
                    false,
                    now_ms,
                    "meridian.fill",
                )?)
            }
            None => return Err(CmdError::Syntax),
        }
        i += 2;
    }
    let leases = &ctx.node.leases;
    ctx.db
        .key(key, |k| {
            let granted = leases.take_for_fill(key, token, &snapshot(k))?;
            k.set_bytes(value, ttl);
            let register = snapshot(k).register;
            let hard = match ttl {
                Ttl::At(ms) => Some(ms),
                Ttl::Keep | Ttl::Clear => None,
            };
            let recompute = granted.elapsed();
            leases.remember(
                key,
                Meta {
                    register,
                    soft,
                    hard,
                    recompute,
                },
                now_ms,
            );
            Ok::<_, crate::store::lease::LeaseError>(())
        })
        .map_err(|e| CmdError::Msg(e.to_string()))?;
    ctx.out.ok();
    Ok(())
}

/// `MERIDIAN.RELEASE key token`: 1 if the lease was given back, 0 if it was no longer held.
fn release(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let token = token_arg(args.get(2))?;
    let released = ctx.node.leases.release(args.get(1), token);
    ctx.out.int(released as i64);
    Ok(())
}

/// A lease token as FETCH printed it (a decimal u64).
fn token_arg(a: &[u8]) -> Result<u64, CmdError> {
    std::str::from_utf8(a)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CmdError::Msg("ERR invalid lease token".into()))
}

/// Called after every command ran: a write to a key voids its lease and refresh metadata, so a
/// fill computed before the write cannot overwrite it (a DEL of a missing key included, which
/// the keyspace never sees). FLUSHALL voids everything. The lease commands manage their own.
pub fn after_command(node: &Node, spec: &CommandSpec, args: Args<'_>) {
    if node.leases.is_idle() || !spec.has_flag("write") || spec.name.starts_with("meridian.") {
        return;
    }
    if spec.has_flag("keyspace_wide") {
        return node.leases.clear();
    }
    for i in spec.key_positions(args.len()) {
        node.leases.on_write(args.get(i));
    }
}
