//! Eviction against merges, with real processes: two regions from `meridian demo --regions 2
//! --nodes 1`, the receiving region's node capped by a small `maxmemory`, a write flood on the
//! other region. In-process nodes share one allocator, so only separate processes can show that
//! what a node merges from a peer counts against its own limit.
//!
//! Asserted (what an operator would notice):
//! - the receiver's `used_memory` never goes more than 5% above `maxmemory` while it merges a
//!   flood several times larger than the limit, and it evicts (`evicted_keys` > 0);
//! - no acknowledged counter increment is lost: both regions increment the same counters during
//!   the flood (the receiver evicting its own counters meanwhile), and the sending region, which
//!   does not evict, converges to the sum of every acknowledged increment.
//!
//! Every process the test starts is SIGKILLed when it ends, also on panic.

#[path = "common/demo.rs"]
mod demo;

use demo::{Demo, PortRange, Spec};
use redis::Commands;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Base ports of this binary's demo: region 1 on `b` and region 2 on `b + 100`, with `b` in
/// 23000..25500, away from the other process tests' ranges.
const PORTS: PortRange = PortRange {
    first: 23000,
    slots: 250,
};

fn connect(port: u16) -> redis::Connection {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let con = c
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect");
    con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    con
}

fn info_u64(con: &mut redis::Connection, section: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg(section).query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
        .trim()
        .parse()
        .unwrap()
}

const COUNTERS: usize = 50;
const VALUE: usize = 512;
/// Bytes the receiver may hold beyond what it uses idle.
const ROOM: u64 = 8 << 20;
/// Pause between the flood's pipelines of 100 values (about 2 MB/s).
const PACE: Duration = Duration::from_millis(25);
/// How far behind "now" the acks let eviction reach: the 1 s watermark margin, the 100 ms
/// heartbeat and the runtime's tick, rounded up.
const ACK_WINDOW: Duration = Duration::from_millis(1500);

#[test]
fn merges_from_a_peer_flood_stay_within_maxmemory_and_keep_every_increment() {
    // The default tombstone grace: before the delivery-promise fix, eviction and the expiry
    // cycle made the receiver drop flood deltas as "stale" and this test lost writes.
    let demo = Demo::start(&Spec::regions(2, PORTS));
    let ports = demo.ports();
    assert_eq!(ports.len(), 2, "one node per region");
    let (sender, receiver) = (ports[0], ports[1]);
    let mut rcon = connect(receiver);
    let idle = info_u64(&mut rcon, "memory", "used_memory");
    let limit = idle + ROOM;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(limit)
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut rcon)
        .unwrap();

    // The receiver's peak used_memory, sampled every 10 ms until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            let mut con = connect(receiver);
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(
                    info_u64(&mut con, "memory", "used_memory"),
                    Ordering::Relaxed,
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    // The receiver's own increments, acknowledged while it evicts.
    let r_acked = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut con = connect(receiver);
            let mut acked = vec![0i64; COUNTERS];
            for i in 0..100_000usize {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let c = i % COUNTERS;
                let r: redis::RedisResult<i64> = con.incr(format!("ctr:{c}"), 1);
                if r.is_ok() {
                    acked[c] += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            acked
        })
    };

    // The flood on the sender: 3x the receiver's room in 512-byte values, in pipelines of 100
    // SETs plus one INCR per pipeline, paced at about 2 MB/s (a sustained flood, not a burst:
    // see the bound below).
    let mut scon = connect(sender);
    let value = vec![b'v'; VALUE];
    let keys = (3 * ROOM as usize) / VALUE;
    let mut s_acked = vec![0i64; COUNTERS];
    for chunk in 0..keys / 100 {
        let mut p = redis::pipe();
        for i in chunk * 100..(chunk + 1) * 100 {
            p.set(format!("flood:{i}"), &value).ignore();
        }
        let c = chunk % COUNTERS;
        p.incr(format!("ctr:{c}"), 1).ignore();
        let () = p.query(&mut scon).expect("the sender never evicts");
        s_acked[c] += 1;
        std::thread::sleep(PACE);
    }
    // A marker written last: once the receiver has it, it has merged the whole flood.
    let _: () = scon.set("flood:done", 1).unwrap();
    let start = Instant::now();
    loop {
        let got: Option<i64> = rcon.get("flood:done").unwrap();
        if got == Some(1) {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let info: String = redis::cmd("INFO").arg("crdt").query(&mut rcon).unwrap();
            panic!("the receiver did not merge the flood's last write within 120 s:\n{info}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let r_acked = r_acked.join().unwrap();

    let peak = peak.load(Ordering::Relaxed);
    let evicted = info_u64(&mut rcon, "stats", "evicted_keys");
    eprintln!(
        "receiver: peak used_memory {peak}, maxmemory {limit} ({:.3}), evicted {evicted}",
        peak as f64 / limit as f64
    );
    assert!(evicted > 0, "a flood 3x the room must evict");
    // Eviction may only remove what every peer has acknowledged, and acks cover changes up to
    // about a second old (docs/eviction.md, rule 2): the receiver may hold up to that window of
    // the flood above maxmemory + 5%. Without eviction for merges it would hold 3x its room.
    let window = (100 * VALUE) as f64 / PACE.as_secs_f64() * ACK_WINDOW.as_secs_f64();
    let bound = limit as f64 * 1.05 + window;
    assert!(
        peak as f64 <= bound,
        "receiver peak used_memory {peak} > maxmemory {limit} + 5% + {window} bytes of ack window (evicted {evicted})"
    );

    // Every acknowledged increment, from both regions, reaches both regions (bounded wait).
    // The sender never evicts, so it must hold every counter; the receiver may have evicted
    // one (a cache miss reads nil), but a counter it holds must not miss an increment.
    let total: Vec<i64> = (0..COUNTERS).map(|c| s_acked[c] + r_acked[c]).collect();
    assert!(r_acked.iter().sum::<i64>() > 0, "the receiver incremented");
    let start = Instant::now();
    loop {
        let read = |con: &mut redis::Connection| -> Vec<Option<i64>> {
            (0..COUNTERS)
                .map(|c| con.get(format!("ctr:{c}")).unwrap())
                .collect()
        };
        let (on_sender, on_receiver) = (read(&mut scon), read(&mut rcon));
        let sender_ok = on_sender.iter().zip(&total).all(|(g, t)| *g == Some(*t));
        let receiver_ok = on_receiver
            .iter()
            .zip(&total)
            .all(|(g, t)| g.is_none() || *g == Some(*t));
        if sender_ok && receiver_ok {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "acknowledged increments lost or late: acknowledged {total:?}, sender has \
             {on_sender:?}, receiver has {on_receiver:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(demo);
}
