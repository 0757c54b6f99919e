//! The table-driven runner. A [`Case`] is: setup steps (run while the network is whole, then
//! every region has seen them), phases of steps tagged with a region, each phase run after the
//! previous one (so its stamps are later), what each region sees of its own writes before the
//! heal, and the value and TTL every region must show once healed.
//!
//! Cases sharing a [`Window`] run together: all setups, one convergence, the network change
//! (partition, one-way block, impairments), every case's phase 0, then phase 1, ..., the
//! before-heal checks, the heal, one convergence over every key, and the expectations checked
//! in every region. Failures are collected per case, so one run reports every failing row.

use crate::regions::World;
use redis::Value;
use std::time::Duration;

pub type Args = &'static [&'static str];

/// One step of a case.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// A command in a region; an error reply is a failure.
    Do(usize, Args),
    /// A command in a region, `n` times.
    Times(usize, usize, Args),
    /// A command in a region and the reply it must give (nil, OK, integers and bulk as text).
    Reply(usize, Args, &'static str),
    /// Wait (bounded) until the region reads this value for the key (None = absent).
    Wait(usize, &'static str, Option<&'static [u8]>),
}

/// Expected TTL of a key, in every region.
#[derive(Debug, Clone, Copy)]
pub enum Ttl {
    /// PTTL -1 (no TTL) or -2 when the value is absent.
    Never,
    /// PTTL within 60 s below this many seconds.
    Secs(i64),
}

#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub key: &'static str,
    pub value: Option<&'static [u8]>,
    pub ttl: Ttl,
}

/// A region's own view of a key before the heal (proves the writes really were concurrent).
#[derive(Debug, Clone, Copy)]
pub struct Seen(pub usize, pub &'static str, pub Option<&'static [u8]>);

#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub setup: &'static [Step],
    pub phases: &'static [&'static [Step]],
    pub before_heal: &'static [Seen],
    pub expect: &'static [Expect],
}

/// What the network does while the phases run.
#[derive(Debug, Clone, Copy)]
pub enum Window {
    /// Every region cut from every other.
    Apart,
    /// The regions of the first list cut from those of the second; the rest connected.
    Cut(&'static [usize], &'static [usize]),
    /// Packets from the first regions to the second dropped, the other way delivered.
    OneWay(&'static [usize], &'static [usize]),
    /// No partition, but 30 % of the packets duplicated and 2 % lost.
    Duplicating,
    /// No partition, but every packet delayed by a random 0-30 ms, so packets overtake each
    /// other (and with them the delta batches, one QUIC stream each).
    Reordering,
}

/// Reply as text: nil, OK, integers and bulk strings (lossy UTF-8).
pub fn text(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Okay => "OK".into(),
        Value::Int(i) => i.to_string(),
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Double(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn show(v: Option<&[u8]>) -> String {
    match v {
        None => "(absent)".into(),
        Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
    }
}

async fn get(world: &World, r: usize, key: &str) -> Result<Option<Vec<u8>>, String> {
    match world.run(r, &["GET", key]).await {
        Ok(Value::Nil) => Ok(None),
        Ok(Value::BulkString(b)) => Ok(Some(b)),
        Ok(other) => Err(format!("GET {key}: {other:?}")),
        Err(e) => Err(format!("GET {key}: {e}")),
    }
}

/// Runs one step; returns a failure text.
async fn step(world: &World, case: &str, s: &Step) -> Result<(), String> {
    let region = |r: usize| world.name(r).to_string();
    match *s {
        Step::Do(r, args) => match world.run(r, args).await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{case}: {args:?} in {}: {e}", region(r))),
        },
        Step::Times(r, n, args) => {
            for _ in 0..n {
                if let Err(e) = world.run(r, args).await {
                    return Err(format!("{case}: {args:?} in {}: {e}", region(r)));
                }
            }
            Ok(())
        }
        Step::Reply(r, args, want) => match world.run(r, args).await {
            Ok(v) if text(&v) == want => Ok(()),
            Ok(v) => Err(format!(
                "{case}: {args:?} in {} answered {}, want {want}",
                region(r),
                text(&v)
            )),
            Err(e) => Err(format!("{case}: {args:?} in {}: {e}", region(r))),
        },
        Step::Wait(r, key, want) => {
            let ok = crate::common::eventually(Duration::from_secs(10), || async move {
                get(world, r, key).await.ok() == Some(want.map(|w| w.to_vec()))
            })
            .await;
            if ok {
                Ok(())
            } else {
                let now = get(world, r, key).await;
                Err(format!(
                    "{case}: {} never read {key} = {}; reads {now:?}",
                    region(r),
                    show(want)
                ))
            }
        }
    }
}

/// Every key a case expects something of.
pub fn keys(cases: &[Case]) -> Vec<String> {
    let mut k: Vec<String> = cases
        .iter()
        .flat_map(|c| c.expect.iter().map(|e| e.key.to_string()))
        .collect();
    let n = k.len();
    k.sort();
    k.dedup();
    assert_eq!(n, k.len(), "two cases (or expectations) share a key");
    k
}

/// Checks one expectation in one region; returns a failure text.
async fn check(world: &World, r: usize, e: &Expect) -> Option<String> {
    let got = match get(world, r, e.key).await {
        Ok(v) => v,
        Err(err) => return Some(err),
    };
    if got.as_deref() != e.value {
        return Some(format!(
            "{} reads {} = {}, want {}",
            world.name(r),
            e.key,
            show(got.as_deref()),
            show(e.value)
        ));
    }
    let pttl = match world.run(r, &["PTTL", e.key]).await {
        Ok(Value::Int(p)) => p,
        other => return Some(format!("PTTL {}: {other:?}", e.key)),
    };
    let ok = match e.ttl {
        Ttl::Never => pttl == if e.value.is_some() { -1 } else { -2 },
        Ttl::Secs(s) => pttl > s * 1000 - 60_000 && pttl <= s * 1000,
    };
    (!ok).then(|| {
        format!(
            "{} has PTTL {} = {pttl}, want {:?}",
            world.name(r),
            e.key,
            e.ttl
        )
    })
}

/// Runs `cases` together under `window` (see the module doc); returns every failure.
pub async fn run(world: &World, window: Window, cases: &[Case]) -> Vec<String> {
    let all = keys(cases);
    let mut failures = Vec::new();
    for c in cases {
        for s in c.setup {
            if let Err(e) = step(world, c.name, s).await {
                failures.push(format!("setup of {e}"));
            }
        }
    }
    if let Err(e) = world.try_converged(&all).await {
        failures.push(format!("setup did not converge: {e}"));
        return failures;
    }
    match window {
        Window::Apart => world.split_all(),
        Window::Cut(a, b) => world.partition(a, b),
        Window::OneWay(a, b) => world.block_one_way(a, b),
        Window::Duplicating => {
            world.net.set_duplicate(0.3);
            world.net.set_loss(0.02);
        }
        Window::Reordering => world.net.set_jitter(Duration::from_millis(30)),
    }
    let phases = cases.iter().map(|c| c.phases.len()).max().unwrap_or(0);
    let mut broken = std::collections::HashSet::new();
    for p in 0..phases {
        for c in cases.iter().filter(|c| c.phases.len() > p) {
            for s in c.phases[p] {
                if let Err(e) = step(world, c.name, s).await {
                    failures.push(e);
                    broken.insert(c.name);
                }
            }
        }
        // Not a synchronisation: the next phase's stamps must be later in physical time
        // than this phase's, on every node's clock.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A case whose own steps failed reports those and its final values, not its before-heal
    // views (they follow from the failed step).
    for c in cases.iter().filter(|c| !broken.contains(c.name)) {
        for Seen(r, key, want) in c.before_heal {
            match get(world, *r, key).await {
                Ok(v) if v.as_deref() == *want => {}
                other => failures.push(format!(
                    "{}: before the heal {} reads {key} = {other:?}, want {} (were the writes concurrent?)",
                    c.name,
                    world.name(*r),
                    show(*want)
                )),
            }
        }
    }
    world.heal();
    world.net.clear_impairments();
    if let Err(e) = world.try_converged(&all).await {
        failures.push(e);
    }
    for c in cases {
        for e in c.expect {
            let mut bad = Vec::new();
            for r in 0..world.regions.len() {
                if let Some(f) = check(world, r, e).await {
                    bad.push(f);
                }
            }
            if !bad.is_empty() {
                failures.push(format!(
                    "{}: {}\n{}",
                    c.name,
                    bad.join("; "),
                    world.explain(e.key).await
                ));
            }
        }
    }
    failures
}

/// Starts a world of three single-node regions (tombstone grace 200 ms), runs every window's
/// cases, shuts the world down and fails with every failing row.
pub async fn run_table(groups: &[(Window, &[Case])]) {
    use crate::regions::RegionSpec;
    let world = World::start(
        &[
            RegionSpec::single(),
            RegionSpec::single(),
            RegionSpec::single(),
        ],
        &[("tombstone-grace", "200")],
    )
    .await;
    let mut failures = Vec::new();
    for (window, cases) in groups {
        failures.extend(run(&world, *window, cases).await);
    }
    world.shutdown().await;
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// For a test whose nodes are known to abort the whole process: in the parent, runs the test
/// `name` again in a child process of this binary (holding the serial lock meanwhile, so no
/// other world shares the cores) and fails with the child's output unless it passed; returns
/// false. In the child, returns true: the caller runs the test body there.
pub async fn in_own_process(name: &str) -> bool {
    if std::env::var_os("CONFLICTS_CHILD").is_some() {
        return true;
    }
    let _serial = crate::common::cluster::serial().lock_owned().await;
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env("CONFLICTS_CHILD", "1")
        .env("RUST_BACKTRACE", "0")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish within 180 s in its own process"))
        .expect("the child test process runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = out.status.success() && text.contains("1 passed");
    let shown: Vec<&str> = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("at ")
                || t.split_once(':')
                    .is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
        })
        .collect();
    assert!(
        passed,
        "{name} failed in its own process ({}):\n{}",
        out.status,
        shown.join("\n")
    );
    false
}
