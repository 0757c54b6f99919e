//! Moving keys between nodes: DUMP, RESTORE, RESTORE-ASKING and MIGRATE (the commands
//! `redis-cli --cluster reshard / rebalance` drive), and WAIT.
//!
//! A DUMP payload is a key's whole CRDT entry (register with its stamp, counter contributions,
//! expiry), so a key moves with its history: RESTORE *merges* it (a newer write on the target
//! survives, no counter increment is lost) instead of overwriting. The payload ends like Redis's
//! (2-byte format version, CRC-64), with a version no Redis knows, so a Redis server refuses it
//! cleanly and Meridian refuses a Redis payload with Redis's error text.
//!
//! MIGRATE takes the entries out of this node under the slot lock, sends them to the target
//! with RESTORE-ASKING, and puts them back (a merge) if the target does not confirm: the entry
//! is always here, in flight, or there, never lost. While it is in flight, a client redirected
//! by ASK may briefly read the key as missing on the target; writes are never lost, because the
//! arriving entry merges with them.
//!
//! Once the target confirmed, the source's log records the departure (`Persist::forget_moved`),
//! so a restart of the source does not bring the moved keys back.

use super::{arg_i64, is, CmdError, CmdResult, Ctx};
use crate::crdt::{Entry, EntryDelta};
use crate::resp::{Args, Out};
use crate::spec;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[rustfmt::skip]
pub const COMMANDS: &[super::CommandSpec] = &[
    spec!("dump", 2, ["readonly"], 1, 1, 1, "generic", "2.6.0", "Returns a serialized representation of the value stored at a key.", dump),
    spec!("restore", -4, ["write", "denyoom"], 1, 1, 1, "generic", "2.6.0", "Creates a key from the serialized representation of a value.", restore),
    spec!("restore-asking", -4, ["write", "denyoom", "asking"], 1, 1, 1, "server", "3.0.0", "An internal command for migrating keys in a cluster.", restore),
    spec!("migrate", -6, ["write", "movablekeys"], 3, 3, 1, "generic", "2.6.0", "Atomically transfers a key from one Redis instance to another.", migrate),
    spec!("wait", 3, [], 0, 0, 0, "generic", "3.0.0", "Blocks until the asynchronous replication of all preceding write commands sent by the connection is completed.", wait),
];

const FORMAT: u16 = 0xFF4D;
const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);
const BAD_PAYLOAD: &str = "ERR DUMP payload version or checksum are wrong";

/// Serialises a key's entry: msgpack, format version, CRC-64 (Redis's trailer layout).
pub fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut buf = rmp_serde::to_vec(&e.to_delta()).unwrap_or_default();
    buf.extend_from_slice(&FORMAT.to_le_bytes());
    let crc = CRC64.checksum(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

fn decode_entry(p: &[u8]) -> Option<EntryDelta> {
    let body = p.len().checked_sub(10)?;
    let crc = u64::from_le_bytes(p[body + 2..].try_into().ok()?);
    let version = u16::from_le_bytes(p[body..body + 2].try_into().ok()?);
    if version != FORMAT || CRC64.checksum(&p[..body + 2]) != crc {
        return None;
    }
    rmp_serde::from_slice(&p[..body]).ok()
}

fn dump(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    match ctx.db.key(args.get(1), |k| k.snapshot()) {
        Some(e) => ctx.out.bulk(&encode_entry(&e)),
        None => ctx.out.null(),
    }
    Ok(())
}

/// `RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]`.
fn restore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (mut replace, mut absttl) = (false, false);
    let mut i = 4;
    while i < args.len() {
        let a = args.get(i);
        if is(a, "REPLACE") {
            replace = true;
        } else if is(a, "ABSTTL") {
            absttl = true;
        } else if (is(a, "IDLETIME") || is(a, "FREQ")) && i + 1 < args.len() {
            // Eviction hints: accepted; eviction state is local and not carried.
            let v = arg_i64(args.get(i + 1))?;
            if v < 0 {
                return Err(CmdError::Msg(format!(
                    "ERR Invalid {} value, must be >= 0",
                    if is(a, "FREQ") { "FREQ" } else { "IDLETIME" }
                )));
            }
            i += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    let ttl = arg_i64(args.get(2))?;
    if ttl < 0 {
        return Err(CmdError::Msg("ERR Invalid TTL value, must be >= 0".into()));
    }
    let delta = decode_entry(args.get(3)).ok_or(CmdError::Msg(BAD_PAYLOAD.into()))?;
    // A migration import merges whatever is there; a user RESTORE keeps Redis's BUSYKEY.
    let importing = is(args.get(0), "restore-asking");
    ctx.db.key(args.get(1), |k| {
        if !replace && !importing && k.exists() {
            return Err(CmdError::Msg(
                "BUSYKEY Target key name already exists.".into(),
            ));
        }
        k.merge(&delta);
        if ttl > 0 {
            let at = if absttl {
                ttl as u64
            } else {
                k.now_ms().saturating_add(ttl as u64)
            };
            k.set_deadline(Some(at));
        }
        Ok(())
    })?;
    ctx.out.ok();
    Ok(())
}

/// `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw] [AUTH2 user pw] [KEYS k..]`.
fn migrate(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let host = String::from_utf8_lossy(args.get(1)).into_owned();
    let port = arg_i64(args.get(2))?;
    let timeout = arg_i64(args.get(5))?;
    let db = arg_i64(args.get(4))?;
    let (mut copy, mut auth): (bool, Vec<Vec<u8>>) = (false, Vec::new());
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut i = 6;
    while i < args.len() {
        let a = args.get(i);
        if is(a, "COPY") {
            copy = true;
        } else if is(a, "REPLACE") {
            // The target always merges; REPLACE changes nothing.
        } else if is(a, "AUTH") && i + 1 < args.len() {
            auth = vec![b"AUTH".to_vec(), args.get(i + 1).to_vec()];
            i += 1;
        } else if is(a, "AUTH2") && i + 2 < args.len() {
            auth = vec![
                b"AUTH".to_vec(),
                args.get(i + 1).to_vec(),
                args.get(i + 2).to_vec(),
            ];
            i += 2;
        } else if is(a, "KEYS") {
            if !args.get(3).is_empty() {
                return Err(CmdError::Msg(
                    "ERR When using MIGRATE KEYS option, the key argument must be set to the empty string".into(),
                ));
            }
            keys = args.skip(i + 1).iter().map(|k| k.to_vec()).collect();
            break;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    if keys.is_empty() && !args.get(3).is_empty() {
        keys.push(args.get(3).to_vec());
    }
    if db != 0 {
        return Err(CmdError::Msg("ERR DB index is out of range".into()));
    }
    if !(1..=65535).contains(&port) {
        return Err(CmdError::Msg("ERR Invalid port".into()));
    }
    // 1. Take the live entries out (or copy them) under the slot locks, with the slots'
    //    migration gates closed so no command routed here can be running on them.
    let mut slots: Vec<u16> = keys.iter().map(|k| crate::store::key_slot(k)).collect();
    slots.sort_unstable();
    slots.dedup();
    let _gates: Vec<_> = match (&ctx.node.cluster, ctx.db.exec.is_some()) {
        (Some(c), false) => slots.iter().map(|&s| c.gate(s).write()).collect(),
        _ => Vec::new(),
    };
    let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let moving: Vec<(Vec<u8>, Entry)> = ctx.db.keys(&refs, |txn| {
        keys.iter()
            .filter_map(|k| {
                let mut km = txn.key(k);
                km.exists().then_some(())?;
                let e = if copy { km.snapshot() } else { km.take() }?;
                Some((k.clone(), e))
            })
            .collect()
    });
    drop(_gates);
    if moving.is_empty() {
        ctx.out.simple("NOKEY");
        return Ok(());
    }
    let keyspace = ctx.node.keyspace.clone();
    let persist = ctx.node.persist.clone().filter(|_| !copy);
    let timeout = Duration::from_millis(if timeout <= 0 { 1000 } else { timeout as u64 });
    // 2. Ship them; 3. on failure, merge them back.
    ctx.client.blocked = Some(Box::pin(async move {
        let sent = tokio::time::timeout(timeout, send(&host, port as u16, &auth, &moving)).await;
        let err = match sent {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("IOERR error or timeout reading to target instance".to_string()),
        };
        if err.is_some() && !copy {
            for (k, e) in &moving {
                keyspace.merge(k, &e.to_delta());
            }
        }
        // The keys left this node: the log must say so, or a restart brings them back.
        if let (None, Some(p)) = (&err, &persist) {
            let moved: Vec<Vec<u8>> = moving.iter().map(|(k, _)| k.clone()).collect();
            p.forget_moved(&moved);
        }
        Box::new(move |out: &mut Out| match err {
            None => out.ok(),
            Some(e) => out.error(&e),
        }) as Box<dyn FnOnce(&mut Out) + Send>
    }));
    Ok(())
}

/// Sends `RESTORE-ASKING key 0 payload REPLACE` per key (pipelined) and checks every reply.
async fn send(
    host: &str,
    port: u16,
    auth: &[Vec<u8>],
    entries: &[(Vec<u8>, Entry)],
) -> Result<(), String> {
    let ioerr = |_| "IOERR error or timeout connecting to the client".to_string();
    let mut s = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(ioerr)?;
    let mut buf = Vec::new();
    let mut expect = entries.len();
    if !auth.is_empty() {
        encode_command(&mut buf, auth);
        expect += 1;
    }
    for (k, e) in entries {
        let payload = encode_entry(e);
        encode_command(
            &mut buf,
            &[
                b"RESTORE-ASKING".to_vec(),
                k.clone(),
                b"0".to_vec(),
                payload,
                b"REPLACE".to_vec(),
            ],
        );
    }
    s.write_all(&buf).await.map_err(ioerr)?;
    let mut reply = Vec::new();
    let mut lines = 0;
    let mut chunk = [0u8; 4096];
    while lines < expect {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|_| "IOERR error or timeout reading to target instance".to_string())?;
        if n == 0 {
            return Err("IOERR error or timeout reading to target instance".into());
        }
        reply.extend_from_slice(&chunk[..n]);
        lines = reply.windows(2).filter(|w| w == b"\r\n").count();
    }
    for line in reply.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if line.first() == Some(&b'-') {
            let text = String::from_utf8_lossy(&line[1..]).trim_end().to_string();
            return Err(format!("ERR Target instance replied with error: {text}"));
        }
    }
    Ok(())
}

fn encode_command(buf: &mut Vec<u8>, parts: &[Vec<u8>]) {
    buf.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for p in parts {
        buf.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        buf.extend_from_slice(p);
        buf.extend_from_slice(b"\r\n");
    }
}

/// `WAIT numreplicas timeout`: how many replicas acknowledged every write so far.
fn wait(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let n = arg_i64(args.get(1))?.max(0) as usize;
    let timeout = arg_i64(args.get(2))?;
    if timeout < 0 {
        return Err(CmdError::Msg("ERR timeout is negative".into()));
    }
    let timeout = Duration::from_millis(timeout as u64);
    let repl = match &ctx.node.cluster {
        Some(c) if c.has_repl() => {
            if c.topology().me().role != crate::cluster::Role::Primary {
                return Err(CmdError::Msg("ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.".into()));
            }
            Some(c.repl().clone())
        }
        _ => None,
    };
    // Inside EXEC (or with nothing to wait for) WAIT answers at once, as in Redis.
    if ctx.db.exec.is_some() || n == 0 {
        let now = repl.map_or(0, |r| r.acked_replicas());
        ctx.out.int(now as i64);
        return Ok(());
    }
    ctx.client.blocked = Some(Box::pin(async move {
        let got = match repl {
            Some(r) => r.wait_replicas(n, timeout).await,
            None => {
                // No replicas at all: block for the timeout like Redis (0 = forever).
                if timeout.is_zero() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(timeout).await;
                0
            }
        };
        Box::new(move |out: &mut Out| out.int(got as i64)) as Box<dyn FnOnce(&mut Out) + Send>
    }));
    Ok(())
}
