//! Cross-region replication client for benches/regions.sh. Four modes, each prints one JSON
//! line on stdout (progress and errors go to stderr):
//!
//! - `lag`: visibility lag between two regions. Writer tasks drive `rate` SETs/s of 32-byte
//!   values on uniformly random keys into region A (pipelined, paced every millisecond;
//!   `rate=0` = as fast as `conns` connections with `pipeline`-deep pipelines go). A probe task
//!   writes `SET probe <seq>` into A every `probe_us` µs and records when it sent each seq; a
//!   reader polls `GET probe` on B in a tight loop and, for each newly seen seq, records
//!   now − send time. Send and receive times come from one monotonic clock (one process), so
//!   there is no clock skew in the number. Probes sent in the first `warmup` seconds are not
//!   counted. Resolution: one GET round trip on B (tens of µs) plus the probe period for
//!   probes that were overwritten before B saw them (those are not counted: only the newest
//!   seq a GET returns is).
//! - `zipf`: `writes` SETs with 32-byte values on keys `key:<rank>`, rank ~ zipf(`skew`) over
//!   `keys`, as fast as possible into A (or, with `rate` > 0, `rate`·`seconds` writes paced at
//!   `rate`/s); then `MERIDIAN.WAITREGIONS 1` on A (everything
//!   acknowledged by B). Reads `INFO regions` on A before and after: WAN bytes per write =
//!   Δ sum of `bytes_sent` over peer regions / writes, against the payload (key + value bytes).
//! - `fill`: the partition workload. A and B each write `keys` distinct keys at once over
//!   `seconds` (paced; 0 = unpaced): `a:<i>` on A, `b:<i>` on B, and, for the first
//!   `overlap`·keys indices, the same key `s:<i>` on both sides with different values
//!   (concurrent writes: the larger stamp wins on both sides after the heal).
//! - `converge`: run right after the heal. From `since_ns` (CLOCK_REALTIME ns of the heal,
//!   e.g. `date +%s%N`) until: `MERIDIAN.WAITREGIONS 1` returns 1 on A and on B (each side's
//!   writes acknowledged by the other), `DBSIZE` is equal on both sides (and equal to
//!   `expect` when given), and `sample` random keys from all three key families read the same
//!   on both sides. Reports when each condition first held.
//!
//! Usage: region_lag MODE name=value...   (defaults in `Opts::parse`)

use rand::{Rng, SeedableRng};
use redis::aio::MultiplexedConnection;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Res<Opts> {
        let mut m = HashMap::new();
        for a in args {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| format!("argument '{a}' is not name=value"))?;
            m.insert(k.to_string(), v.to_string());
        }
        Ok(Opts(m))
    }
    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Res<T> {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("bad value for {name}: '{v}'").into()),
        }
    }
    fn addr(&self, name: &str) -> Res<String> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| format!("missing {name}=host:port").into())
    }
}

async fn connect(addr: &str) -> Res<MultiplexedConnection> {
    let c = redis::Client::open(format!("redis://{addr}"))?;
    Ok(c.get_multiplexed_async_connection().await?)
}

/// Pool of 32-byte values (random hex: what LZ4 gets to work with is the key names, the
/// stamps and the framing, not a constant value).
fn value_pool(n: usize, size: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    const HEX: &[u8] = b"0123456789abcdef";
    (0..n)
        .map(|_| (0..size).map(|_| HEX[rng.gen_range(0..16)]).collect())
        .collect()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn json_f(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

/// Sum of a field of every `peer_region_*` line of `INFO regions`.
async fn regions_sum(con: &mut MultiplexedConnection, field: &str) -> Res<u64> {
    let info: String = redis::cmd("INFO").arg("regions").query_async(con).await?;
    let mut sum = 0;
    for line in info.lines().filter(|l| l.starts_with("peer_region_")) {
        for kv in line.split_once(':').map_or("", |x| x.1).split(',') {
            if let Some(v) = kv.strip_prefix(field).and_then(|r| r.strip_prefix('=')) {
                sum += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(sum)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

// ---------------------------------------------------------------- lag

async fn lag(o: &Opts) -> Res<()> {
    let a = o.addr("a")?;
    let b = o.addr("b")?;
    let rate: f64 = o.get("rate", 10_000.0)?;
    let seconds: f64 = o.get("seconds", 10.0)?;
    let warmup: f64 = o.get("warmup", 1.0)?;
    let conns: usize = o.get("conns", 2)?;
    let pipeline: usize = o.get("pipeline", 64)?;
    let keys: u64 = o.get("keys", 100_000)?;
    let size: usize = o.get("value", 32)?;
    let probe_us: u64 = o.get("probe_us", 1000)?;
    let settle: f64 = o.get("settle", 5.0)?;

    let start = Instant::now();
    let total = Duration::from_secs_f64(seconds);
    let nprobes = (seconds * 1e6 / probe_us as f64) as usize + 16;
    // sent[seq] = ns since `start` when probe seq was sent (0 = not sent).
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..nprobes).map(|_| AtomicU64::new(0)).collect());
    let last_seq = Arc::new(AtomicU64::new(0));
    let stop_reader = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let written_warm = Arc::new(AtomicU64::new(0));

    // Reader on B.
    let mut rcon = connect(&b).await?;
    let _: redis::RedisResult<()> = redis::cmd("DEL").arg("probe").query_async(&mut rcon).await;
    let reader = {
        let sent = sent.clone();
        let stop = stop_reader.clone();
        let last_seq = last_seq.clone();
        tokio::spawn(async move {
            let mut lags: Vec<f64> = Vec::new();
            let mut seen = 0u64;
            let mut polls = 0u64;
            let warm_ns = (warmup * 1e9) as u64;
            // Keep polling until told to stop and (bounded by the caller) the last probe arrived.
            loop {
                let v: Option<u64> = redis::cmd("GET")
                    .arg("probe")
                    .query_async(&mut rcon)
                    .await?;
                let now = start.elapsed().as_nanos() as u64;
                polls += 1;
                if let Some(seq) = v {
                    if seq > seen {
                        seen = seq;
                        let t = sent.get(seq as usize).map_or(0, |t| t.load(Relaxed));
                        if t >= warm_ns {
                            lags.push((now - t) as f64 / 1e6);
                        }
                    }
                }
                if stop.load(Relaxed) && seen >= last_seq.load(Relaxed) {
                    break;
                }
            }
            Ok::<_, redis::RedisError>((lags, seen, polls))
        })
    };

    // Probe writer on A.
    let probe = {
        let sent = sent.clone();
        let last_seq = last_seq.clone();
        let mut pcon = connect(&a).await?;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(probe_us));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut seq = 0u64;
            while start.elapsed() < total && (seq as usize) < nprobes - 1 {
                tick.tick().await;
                seq += 1;
                sent[seq as usize].store(start.elapsed().as_nanos() as u64, Relaxed);
                let _: () = redis::cmd("SET")
                    .arg("probe")
                    .arg(seq)
                    .query_async(&mut pcon)
                    .await?;
                last_seq.store(seq, Relaxed);
            }
            Ok::<_, redis::RedisError>(seq)
        })
    };

    // Load writers on A.
    let values = Arc::new(value_pool(1024, size, 7));
    let mut writers = Vec::new();
    for w in 0..conns {
        let mut con = connect(&a).await?;
        let values = values.clone();
        let written = written.clone();
        let written_warm = written_warm.clone();
        let per = rate / conns as f64;
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(100 + w as u64);
            let mut done = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut warm_marked = false;
            loop {
                let el = start.elapsed();
                if el >= total {
                    break;
                }
                if !warm_marked && el.as_secs_f64() >= warmup {
                    written_warm.fetch_add(done, Relaxed);
                    warm_marked = true;
                }
                let n = if per > 0.0 {
                    tick.tick().await;
                    let due = (per * start.elapsed().as_secs_f64()) as u64;
                    (due.saturating_sub(done) as usize).min(20_000)
                } else {
                    pipeline
                };
                if n == 0 {
                    continue;
                }
                let mut p = redis::pipe();
                for _ in 0..n {
                    let k = rng.gen_range(0..keys);
                    let v = &values[rng.gen_range(0..values.len())];
                    p.cmd("SET").arg(format!("key:{k}")).arg(&v[..]).ignore();
                }
                let _: () = p.query_async(&mut con).await?;
                done += n as u64;
                written.fetch_add(n as u64, Relaxed);
            }
            if !warm_marked {
                written_warm.fetch_add(done, Relaxed);
            }
            Ok::<_, redis::RedisError>(done)
        }));
    }
    let mut writes = 0;
    for w in writers {
        writes += w.await??;
    }
    let elapsed = start.elapsed().as_secs_f64().min(seconds);
    let probes_sent = probe.await??;
    stop_reader.store(true, Relaxed);
    let res = tokio::time::timeout(Duration::from_secs_f64(settle), reader).await;
    let (mut lags, seen, polls, last_arrived) = match res {
        Ok(r) => {
            let (l, s, p) = r??;
            (l, s, p, true)
        }
        Err(_) => (Vec::new(), 0, 0, false),
    };
    lags.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let warm_writes = writes - written_warm.load(Relaxed);
    let meas = (elapsed - warmup).max(1e-9);
    println!(
        "{{\"mode\":\"lag\",\"target_rate\":{rate},\"conns\":{conns},\"seconds\":{seconds},\"writes\":{writes},\"writes_per_s\":{:.0},\"probes_sent\":{probes_sent},\"probes_counted\":{},\"last_seen\":{seen},\"last_probe_arrived\":{last_arrived},\"reader_polls\":{polls},\"lag_ms\":{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{},\"mean\":{}}}}}",
        warm_writes as f64 / meas,
        lags.len(),
        json_f(pct(&lags, 50.0)),
        json_f(pct(&lags, 90.0)),
        json_f(pct(&lags, 99.0)),
        json_f(pct(&lags, 99.9)),
        json_f(lags.last().copied().unwrap_or(f64::NAN)),
        json_f(if lags.is_empty() { f64::NAN } else { lags.iter().sum::<f64>() / lags.len() as f64 }),
    );
    Ok(())
}

// ---------------------------------------------------------------- zipf

/// Cumulative probabilities of ranks 1..=keys under a zipf law with exponent `skew`.
fn zipf_cdf(keys: usize, skew: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (1..=keys)
        .map(|r| {
            acc += 1.0 / (r as f64).powf(skew);
            acc
        })
        .collect();
    for p in &mut cdf {
        *p /= acc;
    }
    cdf
}

async fn zipf(o: &Opts) -> Res<()> {
    let a = o.addr("a")?;
    let rate: f64 = o.get("rate", 0.0)?;
    let seconds: f64 = o.get("seconds", 10.0)?;
    // Paced (rate > 0): rate × seconds writes, each connection at rate / conns, every 1 ms.
    let writes: usize = if rate > 0.0 {
        (rate * seconds) as usize
    } else {
        o.get("writes", 1_000_000)?
    };
    let keys: usize = o.get("keys", 100_000)?;
    let skew: f64 = o.get("skew", 0.99)?;
    let size: usize = o.get("value", 32)?;
    let conns: usize = o.get("conns", 4)?;
    let pipeline: usize = o.get("pipeline", 64)?;
    let wait_s: u64 = o.get("wait", 120)?;

    let cdf = zipf_cdf(keys, skew);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let trace: Vec<u32> = (0..writes)
        .map(|_| {
            let u = rng.gen::<f64>();
            cdf.partition_point(|&p| p < u).min(keys - 1) as u32
        })
        .collect();
    let distinct = {
        let mut s = std::collections::HashSet::new();
        for &k in &trace {
            s.insert(k);
        }
        s.len()
    };
    let key_bytes: usize = trace.iter().map(|k| format!("key:{k}").len()).sum();
    let payload = key_bytes + writes * size;
    let trace = Arc::new(trace);
    let values = Arc::new(value_pool(4096, size, 11));

    let mut icon = connect(&a).await?;
    let sent0 = regions_sum(&mut icon, "bytes_sent").await?;
    let batches0 = regions_sum(&mut icon, "batches_sent").await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conns {
        let mut con = connect(&a).await?;
        let trace = trace.clone();
        let values = values.clone();
        tasks.push(tokio::spawn(async move {
            let mut j = w;
            if rate > 0.0 {
                // This connection's contiguous share of the trace, paced.
                let (lo, hi) = (w * trace.len() / conns, (w + 1) * trace.len() / conns);
                let per = rate / conns as f64;
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut i = lo;
                while i < hi {
                    tick.tick().await;
                    let due = lo + (per * start.elapsed().as_secs_f64()) as usize;
                    let end = due.min(hi);
                    if end <= i {
                        continue;
                    }
                    let mut p = redis::pipe();
                    for &k in &trace[i..end] {
                        j = (j + 7) % values.len();
                        p.cmd("SET")
                            .arg(format!("key:{k}"))
                            .arg(&values[j][..])
                            .ignore();
                    }
                    let _: () = p.query_async(&mut con).await?;
                    i = end;
                }
                return Ok::<_, redis::RedisError>(());
            }
            let mut i = w * pipeline;
            while i < trace.len() {
                let end = (i + pipeline).min(trace.len());
                let mut p = redis::pipe();
                for &k in &trace[i..end] {
                    j = (j + 7) % values.len();
                    p.cmd("SET")
                        .arg(format!("key:{k}"))
                        .arg(&values[j][..])
                        .ignore();
                }
                let _: () = p.query_async(&mut con).await?;
                i += conns * pipeline;
            }
            Ok::<_, redis::RedisError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let t_written = start.elapsed().as_secs_f64();
    let acked: i64 = redis::cmd("MERIDIAN.WAITREGIONS")
        .arg(1)
        .arg(wait_s * 1000)
        .query_async(&mut icon)
        .await?;
    let t_acked = start.elapsed().as_secs_f64();
    let sent1 = regions_sum(&mut icon, "bytes_sent").await?;
    let batches1 = regions_sum(&mut icon, "batches_sent").await?;
    let wan = sent1 - sent0;
    println!(
        "{{\"mode\":\"zipf\",\"rate\":{rate},\"writes\":{writes},\"keys\":{keys},\"skew\":{skew},\"value\":{size},\"distinct_keys_written\":{distinct},\"conns\":{conns},\"pipeline\":{pipeline},\"client_s\":{t_written:.3},\"acked_s\":{t_acked:.3},\"acked_regions\":{acked},\"writes_per_s_client\":{:.0},\"writes_per_s_replicated\":{:.0},\"payload_bytes\":{payload},\"payload_per_write\":{:.2},\"wan_bytes\":{wan},\"wan_per_write\":{:.2},\"wan_over_payload\":{:.3},\"batches\":{},\"payload_mb_per_s\":{:.2},\"wan_mb_per_s\":{:.2}}}",
        writes as f64 / t_written,
        writes as f64 / t_acked,
        payload as f64 / writes as f64,
        wan as f64 / writes as f64,
        wan as f64 / payload as f64,
        batches1 - batches0,
        payload as f64 / t_acked / 1e6,
        wan as f64 / t_acked / 1e6,
    );
    Ok(())
}

// ---------------------------------------------------------------- fill

fn fill_key(side: char, i: u64, shared: u64) -> String {
    if i < shared {
        format!("s:{i}")
    } else {
        format!("{side}:{i}")
    }
}

async fn fill(o: &Opts) -> Res<()> {
    let a = o.addr("a")?;
    let b = o.addr("b")?;
    let keys: u64 = o.get("keys", 100_000)?;
    let seconds: f64 = o.get("seconds", 10.0)?;
    let overlap: f64 = o.get("overlap", 0.1)?;
    let size: usize = o.get("value", 32)?;
    let pipeline: u64 = o.get("pipeline", 100)?;
    let shared = (keys as f64 * overlap) as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (side, addr, seed) in [('a', a.clone(), 1u64), ('b', b.clone(), 2)] {
        let mut con = connect(&addr).await?;
        let values = value_pool(256, size, seed);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut done = 0u64;
            while done < keys {
                let n = if seconds > 0.0 {
                    tick.tick().await;
                    let due = ((keys as f64 / seconds) * start.elapsed().as_secs_f64()) as u64;
                    due.min(keys).saturating_sub(done).min(pipeline * 20)
                } else {
                    pipeline.min(keys - done)
                };
                if n == 0 {
                    continue;
                }
                let mut p = redis::pipe();
                for i in done..done + n {
                    let v = &values[(i % 256) as usize];
                    p.cmd("SET")
                        .arg(fill_key(side, i, shared))
                        .arg(&v[..])
                        .ignore();
                }
                let _: () = p.query_async(&mut con).await?;
                done += n;
            }
            Ok::<_, redis::RedisError>(start.elapsed().as_secs_f64())
        }));
    }
    let mut took = Vec::new();
    for t in tasks {
        took.push(t.await??);
    }
    let mut ca = connect(&a).await?;
    let mut cb = connect(&b).await?;
    let da: u64 = redis::cmd("DBSIZE").query_async(&mut ca).await?;
    let db: u64 = redis::cmd("DBSIZE").query_async(&mut cb).await?;
    println!(
        "{{\"mode\":\"fill\",\"keys_per_side\":{keys},\"shared_keys\":{shared},\"expect_total\":{},\"seconds_a\":{:.3},\"seconds_b\":{:.3},\"dbsize_a\":{da},\"dbsize_b\":{db}}}",
        2 * keys - shared,
        took[0],
        took[1]
    );
    Ok(())
}

// ---------------------------------------------------------------- converge

async fn converge(o: &Opts) -> Res<()> {
    let a = o.addr("a")?;
    let b = o.addr("b")?;
    let since_ns: u128 = o.get("since_ns", now_ns())?;
    let timeout: f64 = o.get("timeout", 120.0)?;
    let expect: u64 = o.get("expect", 0)?;
    let keys: u64 = o.get("keys", 100_000)?;
    let overlap: f64 = o.get("overlap", 0.1)?;
    let sample: usize = o.get("sample", 1000)?;
    let shared = (keys as f64 * overlap) as u64;
    let since = |t: u128| (t.saturating_sub(since_ns)) as f64 / 1e9;

    // WAITREGIONS on each side in its own task (they block).
    let mut waits = Vec::new();
    for addr in [a.clone(), b.clone()] {
        let mut con = connect(&addr).await?;
        waits.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs_f64(timeout);
            while Instant::now() < deadline {
                let n: i64 = redis::cmd("MERIDIAN.WAITREGIONS")
                    .arg(1)
                    .arg(200)
                    .query_async(&mut con)
                    .await?;
                if n >= 1 {
                    return Ok::<_, redis::RedisError>(Some(now_ns()));
                }
            }
            Ok(None)
        }));
    }
    let mut ca = connect(&a).await?;
    let mut cb = connect(&b).await?;
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (mut t_dbsize, mut t_sample) = (None, None);
    let (mut da, mut db, mut mismatched) = (0u64, 0u64, 0usize);
    let mut trace = Vec::new();
    let t0 = Instant::now();
    while Instant::now() < deadline {
        da = redis::cmd("DBSIZE").query_async(&mut ca).await?;
        db = redis::cmd("DBSIZE").query_async(&mut cb).await?;
        let now = now_ns();
        if trace
            .last()
            .is_none_or(|&(t, _, _): &(f64, u64, u64)| since(now) - t >= 0.5)
        {
            trace.push((since(now), da, db));
        }
        let size_ok = da == db && (expect == 0 || da == expect);
        if size_ok && t_dbsize.is_none() {
            t_dbsize = Some(now);
        }
        if size_ok {
            // A sample of keys from every family must read the same on both sides.
            let ks: Vec<String> = (0..sample)
                .map(|j| {
                    let i = rng.gen_range(0..keys);
                    match j % 3 {
                        0 => fill_key('a', i, shared),
                        1 => fill_key('b', i, shared),
                        _ if shared > 0 => fill_key('s', i % shared, shared),
                        _ => fill_key('a', i, shared),
                    }
                })
                .collect();
            // A pipeline of GETs (cluster mode refuses a cross-slot MGET, even on one node).
            let mut p = redis::pipe();
            for k in &ks {
                p.cmd("GET").arg(k);
            }
            let va: Vec<Option<Vec<u8>>> = p.query_async(&mut ca).await?;
            let vb: Vec<Option<Vec<u8>>> = p.query_async(&mut cb).await?;
            mismatched = va
                .iter()
                .zip(&vb)
                .filter(|(x, y)| x != y || x.is_none())
                .count();
            if mismatched == 0 {
                t_sample = Some(now_ns());
                break;
            }
        } else {
            t_dbsize = None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut tw = Vec::new();
    for w in waits {
        let left =
            Duration::from_secs_f64(timeout).saturating_sub(t0.elapsed()) + Duration::from_secs(1);
        tw.push(match tokio::time::timeout(left, w).await {
            Ok(r) => r??,
            Err(_) => None,
        });
    }
    let f = |t: Option<u128>| t.map_or("null".to_string(), |t| format!("{:.3}", since(t)));
    let all = [tw[0], tw[1], t_dbsize, t_sample];
    let converged = all.iter().all(|t| t.is_some());
    let total = if converged {
        all.iter().map(|t| t.unwrap()).max()
    } else {
        None
    };
    let trace_json: Vec<String> = trace
        .iter()
        .map(|(t, x, y)| format!("[{t:.2},{x},{y}]"))
        .collect();
    println!(
        "{{\"mode\":\"converge\",\"converged\":{converged},\"converged_s\":{},\"waitregions_a_s\":{},\"waitregions_b_s\":{},\"dbsize_equal_s\":{},\"sample_equal_s\":{},\"dbsize_a\":{da},\"dbsize_b\":{db},\"expect\":{expect},\"sample_mismatched\":{mismatched},\"dbsize_trace\":[{}]}}",
        f(total),
        f(tw[0]),
        f(tw[1]),
        f(t_dbsize),
        f(t_sample),
        trace_json.join(","),
    );
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first().cloned() else {
        return Err("usage: region_lag lag|zipf|fill|converge name=value...".into());
    };
    let opts = Opts::parse(&args[1..])?;
    let threads: usize = opts.get("threads", 4)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async {
        match mode.as_str() {
            "lag" => lag(&opts).await,
            "zipf" => zipf(&opts).await,
            "fill" => fill(&opts).await,
            "converge" => converge(&opts).await,
            m => Err(format!("unknown mode {m}").into()),
        }
    })
}
