//! The simulation behind the laws: replicas with HLC-like clocks applying ops, exchanging deltas
//! and full states, and collecting dead entries the way the store does; and the checks the
//! properties share.

use meridian::crdt::{Entry, EntryDelta, Stamp};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

#[derive(Clone, Debug)]
pub(crate) enum Op {
    Write(Option<Vec<u8>>),
    /// A register write whose floor lies `back` ticks below its own stamp (arbitrary floors:
    /// the laws must hold whatever the floor claims).
    WriteFloored(Option<Vec<u8>>, u64),
    AddInt(i64),
    AddFloat(f64),
    Expire(Option<u64>),
}

#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// Replica `at` applies `op`, stamped `dt` ticks after everything it has seen.
    Local { at: usize, op: Op, dt: u64 },
    /// Replica `at` merges the `pick`-th delta produced so far (modulo their number).
    Recv { at: usize, pick: usize },
    /// Replica `at` merges replica `from`'s full state (anti-entropy).
    Sync { at: usize, from: usize },
    /// Every replica merges the join of every replica's full state (a full anti-entropy round).
    Gossip,
    /// Replica `at` collects its entry, if the store's collector would: see [`collectable`].
    Collect { at: usize },
}

pub(crate) struct Sim {
    pub(crate) states: Vec<Entry>,
    /// Every delta a mutator returned, in order, and the stamp of its op.
    pub(crate) log: Vec<EntryDelta>,
    pub(crate) stamps: Vec<Stamp>,
    /// Per replica, every delta it joined (its own, received ones and full states), in order,
    /// since it last collected.
    pub(crate) seen: Vec<Vec<EntryDelta>>,
    /// Per replica, the newest stamp time of an entry it collected (0: none): a delta no newer
    /// than it, reaching the replica while it holds nothing, is a late duplicate and dropped.
    pub(crate) collected_below: Vec<u64>,
    /// Indices of the steps that collected.
    pub(crate) collected_at: Vec<usize>,
    /// Per replica, its ghost (`store::expire`): the newest stamp time of a counter entry it
    /// collected (0: none), and whether a register write carried it as its floor already. Its
    /// increments open a new epoch over an own contribution no newer than the ghost.
    pub(crate) ghosts: Vec<(u64, bool)>,
}

/// Whether `Step::Collect` collects, or is skipped: the same history without collection.
#[derive(Clone, Copy)]
pub(crate) enum Mode {
    Collect,
    Keep,
}

pub(crate) fn bytes(e: &Entry) -> Option<Vec<u8>> {
    e.value().map(|v| v.into_owned())
}

pub(crate) fn same(a: &Entry, b: &Entry, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(a, b, "{}", what);
    prop_assert_eq!(a.to_delta(), b.to_delta(), "{}", what);
    prop_assert_eq!(bytes(a), bytes(b), "{}", what);
    Ok(())
}

pub(crate) fn joined(a: &Entry, b: &Entry) -> Entry {
    let mut x = a.clone();
    x.merge(&b.to_delta());
    x
}

/// Merges `d` into `e`, checking that a merge reporting "unchanged" changed nothing visible.
pub(crate) fn merge_checked(e: &mut Entry, d: &EntryDelta) -> Result<(), TestCaseError> {
    let before = (bytes(e), e.deadline());
    if !e.merge(d) {
        prop_assert_eq!(before, (bytes(e), e.deadline()), "merge said unchanged");
    }
    Ok(())
}

/// Applies `op`; a register write carries `floor` (the replica's ghost, or 0).
fn apply(e: &mut Entry, node: u64, op: &Op, stamp: Stamp, floor: u64) -> EntryDelta {
    match op {
        Op::Write(v) => e.write_register_floored(v.as_deref(), stamp, floor),
        Op::WriteFloored(v, back) => {
            let f = stamp.time.saturating_sub(*back).max(floor);
            e.write_register_floored(v.as_deref(), stamp, f)
        }
        Op::AddInt(x) => e.add_int(node, *x, stamp),
        Op::AddFloat(x) => e.add_float(node, *x, stamp),
        Op::Expire(d) => e.write_expiry(*d, stamp),
    }
}

/// What the store's collector requires before it removes replica `at`'s entry: the entry has no
/// value; the replica has merged every delta produced so far (the replication watermark passed
/// them all); every replica holds the entry (all acknowledged it) and every clock passed its
/// newest stamp, so every later op is stamped above it.
fn collectable(sim: &Sim, clocks: &[u64], at: usize) -> bool {
    let e = &sim.states[at];
    let covers = |x: &Entry, d: &EntryDelta| !x.clone().merge(d);
    *e != Entry::empty()
        && bytes(e).is_none()
        && sim.log.iter().all(|d| covers(e, d))
        && sim.states.iter().all(|q| covers(q, &e.to_delta()))
        && clocks.iter().all(|&c| c >= e.max_stamp().time)
}

/// Replica `at` receives `d`: dropped as a late duplicate if it holds nothing and `d` is no
/// newer than what it collected, merged otherwise.
fn deliver(sim: &mut Sim, at: usize, d: EntryDelta) -> Result<(), TestCaseError> {
    let below = sim.collected_below[at];
    if below > 0 && sim.states[at] == Entry::empty() && d.max_stamp().time <= below {
        return Ok(());
    }
    merge_checked(&mut sim.states[at], &d)?;
    sim.seen[at].push(d);
    Ok(())
}

/// Runs a history, checking the delta law at every op.
pub(crate) fn run(nodes: &[u64], steps: &[Step]) -> Result<Sim, TestCaseError> {
    run_as(nodes, steps, Mode::Collect)
}

pub(crate) fn run_as(nodes: &[u64], steps: &[Step], mode: Mode) -> Result<Sim, TestCaseError> {
    let n = nodes.len();
    let mut clocks = vec![0u64; n];
    let mut sim = Sim {
        states: vec![Entry::empty(); n],
        log: Vec::new(),
        stamps: Vec::new(),
        seen: vec![Vec::new(); n],
        collected_below: vec![0; n],
        collected_at: Vec::new(),
        ghosts: vec![(0, false); n],
    };
    for (i, step) in steps.iter().enumerate() {
        match *step {
            Step::Local { at, ref op, dt } => {
                clocks[at] += dt;
                let stamp = Stamp::new(clocks[at], nodes[at]);
                let before = sim.states[at].clone();
                let (collected, floored) = &mut sim.ghosts[at];
                let floor = match op {
                    Op::Write(_) | Op::WriteFloored(..) if !*floored => {
                        *floored = true;
                        *collected
                    }
                    Op::AddInt(x) if *x != 0 && *collected != 0 => {
                        sim.states[at].retire_epoch(nodes[at], *collected);
                        0
                    }
                    Op::AddFloat(x) if *x != 0.0 && *collected != 0 => {
                        sim.states[at].retire_epoch(nodes[at], *collected);
                        0
                    }
                    _ => 0,
                };
                let delta = apply(&mut sim.states[at], nodes[at], op, stamp, floor);
                let mut replay = before;
                replay.merge(&delta);
                same(&replay, &sim.states[at], &format!("delta of {op:?}"))?;
                sim.log.push(delta.clone());
                sim.stamps.push(stamp);
                sim.seen[at].push(delta);
            }
            Step::Recv { at, pick } => {
                if sim.log.is_empty() {
                    continue;
                }
                let d = sim.log[pick % sim.log.len()].clone();
                clocks[at] = clocks[at].max(d.max_stamp().time);
                deliver(&mut sim, at, d)?;
            }
            Step::Sync { at, from } => {
                let d = sim.states[from].to_delta();
                clocks[at] = clocks[at].max(d.max_stamp().time);
                deliver(&mut sim, at, d)?;
            }
            Step::Gossip => {
                let all = converged(&sim).to_delta();
                for (at, clock) in clocks.iter_mut().enumerate() {
                    *clock = (*clock).max(all.max_stamp().time);
                    deliver(&mut sim, at, all.clone())?;
                }
            }
            Step::Collect { at } => match mode {
                Mode::Keep => {}
                Mode::Collect if collectable(&sim, &clocks, at) => {
                    let newest = sim.states[at].max_stamp().time;
                    if sim.states[at].contributions().is_some() {
                        let g = &mut sim.ghosts[at];
                        *g = (g.0.max(newest), false);
                    }
                    sim.collected_below[at] = sim.collected_below[at].max(newest);
                    sim.states[at] = Entry::empty();
                    sim.seen[at].clear();
                    sim.collected_at.push(i);
                }
                Mode::Collect => {}
            },
        }
    }
    Ok(sim)
}

pub(crate) fn converged(sim: &Sim) -> Entry {
    sim.states
        .iter()
        .fold(Entry::empty(), |acc, s| joined(&acc, s))
}

/// Every replica's state is the join of the deltas it merged (since it last collected).
pub(crate) fn check_seen(sim: &Sim) -> Result<(), TestCaseError> {
    for (state, seen) in sim.states.iter().zip(&sim.seen) {
        let mut j = EntryDelta::default();
        for d in seen {
            j.join(d);
        }
        same(
            &Entry::from_delta(&j),
            state,
            "replica = join of its deltas",
        )?;
    }
    Ok(())
}

/// Commutative, associative, idempotent over final states and single-delta states: all are
/// elements of the lattice.
pub(crate) fn check_lattice(
    sim: &Sim,
    picks: [prop::sample::Index; 3],
) -> Result<(), TestCaseError> {
    let pool: Vec<Entry> = sim
        .states
        .iter()
        .cloned()
        .chain(sim.log.iter().map(Entry::from_delta))
        .collect();
    let [a, b, c] = picks.map(|i| i.get(&pool).clone());
    same(&joined(&a, &b), &joined(&b, &a), "commutative")?;
    same(
        &joined(&joined(&a, &b), &c),
        &joined(&a, &joined(&b, &c)),
        "associative",
    )?;
    same(&joined(&a, &a), &a, "idempotent")?;
    let mut ab = joined(&a, &b);
    prop_assert!(
        !ab.merge(&b.to_delta()),
        "re-merging a merged state reports no change"
    );
    prop_assert!(
        !ab.merge(&a.to_delta()),
        "re-merging a merged state reports no change"
    );
    same(&ab, &joined(&a, &b), "re-merge")?;
    Ok(())
}

/// Equal values; numbers with float parts may differ in their last bits (the same increments
/// summed in different groupings).
pub(crate) fn same_value(a: &Option<Vec<u8>>, b: &Option<Vec<u8>>) -> bool {
    let num = |v: &Option<Vec<u8>>| {
        v.as_deref()
            .and_then(|b| std::str::from_utf8(b).ok()?.parse::<f64>().ok())
    };
    a == b
        || matches!((num(a), num(b)), (Some(x), Some(y))
            if (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0))
}
