//! A cache-aside service over SQLite, read through Meridian, run twice under the same load:
//! once with plain GET/SET cache-aside and once with stampede control (MERIDIAN.FETCH/FILL),
//! printing the database queries per second each time the hot key expires.
//!
//! ```text
//! cargo run --release --example cache_aside                          # starts its own node
//! cargo run --release --example cache_aside -- --addr 127.0.0.1:6379 # or uses yours
//! ```
//!
//! The "database" is a real SQLite file (rusqlite, bundled); each product lookup also sleeps
//! `--query-ms` inside the blocking call, standing in for a slow query, so that a stampede —
//! every worker missing at once when the hot key expires — shows up as a burst of queries.
//! Each worker has its own connection: a FETCH that waits for another caller's fill blocks its
//! connection, exactly like BLPOP.

use clap::Parser;
use redis::aio::MultiplexedConnection;
use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Clone)]
struct Args {
    /// A running Meridian (or Redis, for the plain mode) node; without it, one starts in-process.
    #[arg(long)]
    addr: Option<String>,
    /// Concurrent request loops reading the hot key.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Seconds each mode runs.
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// Time to live of the cached value (it expires under load every this many ms).
    #[arg(long, default_value_t = 1000)]
    ttl_ms: u64,
    /// How long one database query takes.
    #[arg(long, default_value_t = 50)]
    query_ms: u64,
    /// Pause between a worker's requests.
    #[arg(long, default_value_t = 2)]
    think_ms: u64,
}

/// How a worker reads through the cache.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// GET; on a miss query the database and SET with a TTL: every concurrent miss queries.
    Plain,
    /// FETCH with WAIT; only the lease holder queries and FILLs, the others wait for its fill.
    Leases,
    /// Leases plus a soft TTL: after it, callers get the stale value and one refreshes.
    SoftTtl,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain GET/SET",
            Mode::Leases => "FETCH/FILL (leases)",
            Mode::SoftTtl => "FETCH/FILL + SOFT",
        }
    }
}

/// The slow database: a SQLite file, one connection per blocking thread.
struct Db {
    path: PathBuf,
    query: Duration,
    queries: AtomicU64,
}

thread_local! {
    static CONN: RefCell<Option<rusqlite::Connection>> = const { RefCell::new(None) };
}

impl Db {
    fn create(path: PathBuf, query: Duration) -> rusqlite::Result<Db> {
        let c = rusqlite::Connection::open(&path)?;
        c.execute_batch(
            "DROP TABLE IF EXISTS products;
             CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price_cents INTEGER NOT NULL);",
        )?;
        let mut insert = c.prepare("INSERT INTO products VALUES (?1, ?2, ?3)")?;
        for id in 1..=1000 {
            insert.execute((id, format!("product-{id}"), 100 + id * 7))?;
        }
        Ok(Db {
            path,
            query,
            queries: AtomicU64::new(0),
        })
    }

    /// One product as JSON: the slow query the cache protects.
    async fn product(self: &Arc<Self>, id: i64) -> String {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            db.queries.fetch_add(1, Relaxed);
            std::thread::sleep(db.query);
            CONN.with(|c| {
                let mut c = c.borrow_mut();
                let c = c.get_or_insert_with(|| {
                    rusqlite::Connection::open(&db.path).expect("open the database")
                });
                c.query_row(
                    "SELECT name, price_cents FROM products WHERE id = ?1",
                    [id],
                    |r| {
                        let (name, price): (String, i64) = (r.get(0)?, r.get(1)?);
                        Ok(format!(
                            r#"{{"id":{id},"name":"{name}","price_cents":{price}}}"#
                        ))
                    },
                )
                .expect("query the database")
            })
        })
        .await
        .expect("database task")
    }
}

/// One read of the hot key through the cache, in `mode`.
async fn read(
    c: &mut MultiplexedConnection,
    db: &Arc<Db>,
    mode: Mode,
    a: &Args,
) -> redis::RedisResult<String> {
    let key = "product:1";
    if mode == Mode::Plain {
        if let Some(v) = redis::cmd("GET")
            .arg(key)
            .query_async::<Option<String>>(c)
            .await?
        {
            return Ok(v);
        }
        let v = db.product(1).await;
        redis::cmd("SET")
            .arg(key)
            .arg(&v)
            .arg("PX")
            .arg(a.ttl_ms)
            .query_async::<()>(c)
            .await?;
        return Ok(v);
    }
    // A waiter gives up after a few recompute times and falls back to the database.
    let wait = (a.query_ms * 10).max(100);
    let (status, value, token): (String, Option<String>, Option<String>) =
        redis::cmd("MERIDIAN.FETCH")
            .arg(key)
            .arg("WAIT")
            .arg(wait)
            .query_async(c)
            .await?;
    match (status.as_str(), value, token) {
        ("HIT" | "STALE", Some(v), _) => Ok(v),
        ("LEASE", _, Some(token)) => {
            let v = db.product(1).await;
            let mut fill = redis::cmd("MERIDIAN.FILL");
            fill.arg(key).arg(&token).arg(&v);
            match mode {
                Mode::SoftTtl => fill.arg("PX").arg(a.ttl_ms * 3).arg("SOFT").arg(a.ttl_ms),
                _ => fill.arg("PX").arg(a.ttl_ms),
            };
            // A refused fill (the key was written meanwhile) is fine: the value is still good.
            let _: redis::RedisResult<()> = fill.query_async(c).await;
            Ok(v)
        }
        _ => Ok(db.product(1).await),
    }
}

/// Runs `mode` for `a.seconds`, printing database queries and requests per second.
async fn run(addr: &str, db: &Arc<Db>, mode: Mode, a: &Args) -> (u64, u64) {
    let client = redis::Client::open(format!("redis://{addr}")).expect("redis url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("DEL")
        .arg("product:1")
        .query_async(&mut c)
        .await
        .expect("DEL");
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..a.workers {
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let (db, a, stop, requests) = (db.clone(), a.clone(), stop.clone(), requests.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                read(&mut c, &db, mode, &a).await.expect("cache read");
                requests.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(a.think_ms)).await;
            }
        }));
    }
    println!(
        "\n== {} ({} workers, TTL {} ms, query {} ms)",
        mode.name(),
        a.workers,
        a.ttl_ms,
        a.query_ms
    );
    let (q0, t0) = (db.queries.load(Relaxed), Instant::now());
    let (mut last_q, mut last_r, mut peak) = (q0, 0, 0);
    for s in 1..=a.seconds {
        tokio::time::sleep_until((t0 + Duration::from_secs(s)).into()).await;
        let (q, r) = (db.queries.load(Relaxed), requests.load(Relaxed));
        println!(
            "  t={s:>2}s  db queries/s {:>5}  requests/s {:>6}",
            q - last_q,
            r - last_r
        );
        peak = peak.max(q - last_q);
        (last_q, last_r) = (q, r);
    }
    stop.store(true, Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    (db.queries.load(Relaxed) - q0, peak)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let dir = std::env::temp_dir().join(format!("meridian-cache-aside-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = Arc::new(Db::create(
        dir.join("shop.db"),
        Duration::from_millis(a.query_ms),
    )?);
    let mut server = None;
    let addr = match &a.addr {
        Some(addr) => addr.clone(),
        None => {
            let config =
                meridian::config::Config::layered(None, false, &[("port".into(), "0".into())])?;
            let running = meridian::server::spawn(config).await?;
            let addr = running.addr().to_string();
            println!("started an in-process Meridian node on {addr}");
            server = Some(running);
            addr
        }
    };
    let mut summary = Vec::new();
    for mode in [Mode::Plain, Mode::Leases, Mode::SoftTtl] {
        let (total, peak) = run(&addr, &db, mode, &a).await;
        summary.push((mode, total, peak));
    }
    println!("\n== summary over {} s each", a.seconds);
    for (mode, total, peak) in summary {
        println!(
            "  {:<22} db queries {:>5} ({:>5.1}/s), peak {:>4}/s",
            mode.name(),
            total,
            total as f64 / a.seconds as f64,
            peak
        );
    }
    if let Some(s) = server {
        s.shutdown().await;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
