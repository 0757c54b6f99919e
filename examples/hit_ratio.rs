//! Hit-ratio benchmark client: replays a generated zipfian trace as a cache-aside workload
//! (GET; on a miss, SET the value) against any Redis-protocol server and prints the hit ratio.
//!
//! The trace is deterministic (seeded), so every server and policy sees the same requests. Key
//! `key:<rank>` is requested with probability ∝ 1/rank^skew. Requests go in pipelined batches
//! of 100 GETs followed by the SETs for that batch's misses; the first `warmup` requests fill the
//! cache and are not counted. benches/hit_ratio.sh runs it against each policy.
//!
//! Usage: hit_ratio ADDR [keys=100000] [requests=400000] [skew=0.99] [value_bytes=200]
//!        [warmup=100000]

use rand::{Rng, SeedableRng};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

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

fn main() -> redis::RedisResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:6379".into());
    let keys: usize = arg(&args, 2, 100_000);
    let requests: usize = arg(&args, 3, 400_000);
    let skew: f64 = arg(&args, 4, 0.99);
    let size: usize = arg(&args, 5, 200);
    let warmup: usize = arg(&args, 6, 100_000);
    let cdf = zipf_cdf(keys, skew);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let trace: Vec<usize> = (0..requests)
        .map(|_| {
            let u = rng.gen::<f64>();
            cdf.partition_point(|&p| p < u).min(keys - 1)
        })
        .collect();
    let mut con = redis::Client::open(format!("redis://{addr}"))?.get_connection()?;
    let value = vec![b'v'; size];
    let (mut hits, mut misses, mut oom) = (0u64, 0u64, 0u64);
    for (b, batch) in trace.chunks(100).enumerate() {
        let mut p = redis::pipe();
        for k in batch {
            p.cmd("GET").arg(format!("key:{k}"));
        }
        let got: Vec<Option<Vec<u8>>> = p.query(&mut con)?;
        let counted = b * 100 >= warmup;
        let mut fill = redis::pipe();
        for (k, v) in batch.iter().zip(&got) {
            match (v, counted) {
                (Some(_), true) => hits += 1,
                (None, true) => misses += 1,
                _ => {}
            }
            if v.is_none() {
                fill.cmd("SET").arg(format!("key:{k}")).arg(&value[..]);
            }
        }
        let replies: Vec<redis::RedisResult<()>> = fill
            .query::<Vec<redis::Value>>(&mut con)?
            .into_iter()
            .map(|v| match v {
                redis::Value::ServerError(_) => Err(redis::RedisError::from((
                    redis::ErrorKind::ResponseError,
                    "refused",
                ))),
                _ => Ok(()),
            })
            .collect();
        oom += replies.iter().filter(|r| r.is_err()).count() as u64;
    }
    let held: usize = redis::cmd("DBSIZE").query(&mut con)?;
    println!(
        "hit_ratio={:.4} hits={hits} misses={misses} refused_sets={oom} keys_held={held}",
        hits as f64 / (hits + misses).max(1) as f64
    );
    Ok(())
}
