//! The CRDT laws of `Entry` / `EntryDelta` (DESIGN.md §2), proved over random histories.
//!
//! A history runs 2–4 replicas with distinct node IDs. Each replica stamps its ops like an HLC
//! (strictly increasing, and above every stamp it has merged), so stamps are unique and a write
//! that follows a received one is causally later; replicas that have not exchanged are
//! concurrent. Ops: register writes (integer-, float- and garbage-looking bytes, tombstones),
//! integer and float increments (zero included), and expiry writes (set and cleared); between
//! them replicas receive earlier deltas or full states. The properties:
//! - a mutator's delta merged into the state before the op gives exactly the state after it, and
//!   a replica's state equals the join (`EntryDelta::join`) of every delta it saw;
//! - merge is commutative, associative and idempotent, and reports every visible change;
//! - deltas delivered in any order, with duplicates, converge to one state; lost deltas are
//!   repaired by merging full states (`to_delta`), and a late delta changes nothing;
//! - the register agrees with `crdts::LWWReg` and integer increments with `crdts::PNCounter`.
//!
//! Histories with *collection* add what the store does to a dead entry once every peer holds it
//! (`store::expire`): the replica forgets the key, drops late duplicates of what it forgot (the
//! sender's delivery promise, `Keyspace::merge_from`), and its actor's next increment opens a new
//! epoch (`crdt::counter`). Over them the laws above still hold for every state and delta, and
//! collecting changes no converged value: the same history run without collection converges to
//! the same value. (Register writes by a replica after it collected are left out of those
//! histories: a write on a key the writer no longer holds observes none of the collected totals,
//! an open issue described in docs/operations.md.)
//!
//! "Same state" means equal `Entry`, equal `to_delta()` and equal `value()` bytes.

use crdts::{CmRDT, CvRDT, LWWReg, PNCounter};
use meridian::crdt::{Entry, EntryDelta, Stamp};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

#[derive(Clone, Debug)]
enum Op {
    Write(Option<Vec<u8>>),
    AddInt(i64),
    AddFloat(f64),
    Expire(Option<u64>),
}

#[derive(Clone, Debug)]
enum Step {
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

fn register_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (-1000i64..1000).prop_map(|i| i.to_string().into_bytes()),
        2 => (-100.0f64..100.0).prop_map(|f| format!("{f:.2}").into_bytes()),
        1 => prop::sample::select(vec![
            "", "abc", "007", "+1", " 1", "-0", "1e3", "10.5", "inf",
            "9223372036854775807", "-9223372036854775808",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..4),
    ]
}

fn any_op() -> BoxedStrategy<Op> {
    prop_oneof![
        3 => register_bytes().prop_map(|v| Op::Write(Some(v))),
        1 => Just(Op::Write(None)),
        3 => prop_oneof![-1000i64..1000, Just(0), Just(i64::MAX), Just(i64::MIN)].prop_map(Op::AddInt),
        2 => prop_oneof![-100.0f64..100.0, Just(0.1), Just(0.2), Just(0.0), Just(-0.0)]
            .prop_map(Op::AddFloat),
        2 => prop::option::of(0u64..10_000).prop_map(Op::Expire),
    ]
    .boxed()
}

fn history_of(ops: BoxedStrategy<Op>) -> impl Strategy<Value = (Vec<u64>, Vec<Step>)> {
    (2usize..=4).prop_flat_map(move |n| {
        // Distinct node IDs in random order, so actor order differs from replica order.
        let nodes = prop::collection::btree_set(1u64..1_000, n)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>())
            .prop_shuffle();
        let step = prop_oneof![
            6 => (0..n, ops.clone(), 1u64..4).prop_map(|(at, op, dt)| Step::Local { at, op, dt }),
            3 => (0..n, any::<usize>()).prop_map(|(at, pick)| Step::Recv { at, pick }),
            1 => (0..n, 0..n).prop_map(|(at, from)| Step::Sync { at, from }),
        ];
        (nodes, prop::collection::vec(step, 1..40))
    })
}

fn history() -> impl Strategy<Value = (Vec<u64>, Vec<Step>)> {
    history_of(any_op())
}

/// Histories that delete, collect and count again: mostly integer increments and DELs, with
/// anti-entropy rounds so that collection's preconditions are met often.
fn history_with_collection() -> impl Strategy<Value = (Vec<u64>, Vec<Step>)> {
    let ops = prop_oneof![
        5 => prop_oneof![-5i64..0, 1i64..5].prop_map(Op::AddInt),
        1 => prop_oneof![Just(0.5), Just(-0.25), Just(0.1)].prop_map(Op::AddFloat),
        3 => Just(Op::Write(None)),
        1 => register_bytes().prop_map(|v| Op::Write(Some(v))),
        1 => prop::option::of(0u64..10_000).prop_map(Op::Expire),
    ];
    (2usize..=4).prop_flat_map(move |n| {
        let nodes = prop::collection::btree_set(1u64..1_000, n)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>())
            .prop_shuffle();
        let step = prop_oneof![
            6 => (0..n, ops.clone(), 1u64..4).prop_map(|(at, op, dt)| Step::Local { at, op, dt }),
            2 => (0..n, any::<usize>()).prop_map(|(at, pick)| Step::Recv { at, pick }),
            1 => (0..n, 0..n).prop_map(|(at, from)| Step::Sync { at, from }),
            3 => Just(Step::Gossip),
            4 => (0..n).prop_map(|at| Step::Collect { at }),
        ];
        (nodes, prop::collection::vec(step, 1..48))
    })
}

/// A history plus a delivery plan for its deltas: a permutation, extra (duplicate) picks, and a
/// loss mask.
type Plan = (Vec<u64>, Vec<Step>, Vec<usize>, Vec<usize>, Vec<bool>);

fn history_with_delivery() -> impl Strategy<Value = Plan> {
    history().prop_flat_map(|(nodes, steps)| {
        let k = steps
            .iter()
            .filter(|s| matches!(s, Step::Local { .. }))
            .count();
        (
            Just(nodes),
            Just(steps),
            Just((0..k).collect::<Vec<_>>()).prop_shuffle(),
            prop::collection::vec(0..k.max(1), 0..=k),
            prop::collection::vec(any::<bool>(), k),
        )
    })
}

struct Sim {
    states: Vec<Entry>,
    /// Every delta a mutator returned, in order, and the stamp of its op.
    log: Vec<EntryDelta>,
    stamps: Vec<Stamp>,
    /// Per replica, every delta it joined (its own, received ones and full states), in order,
    /// since it last collected.
    seen: Vec<Vec<EntryDelta>>,
    /// Per replica, the newest stamp time of an entry it collected (0: none): a delta no newer
    /// than it, reaching the replica while it holds nothing, is a late duplicate and dropped.
    collected_below: Vec<u64>,
    /// Indices of the steps that collected.
    collected_at: Vec<usize>,
}

/// Whether `Step::Collect` collects, or is skipped: the same history without collection, given
/// the steps at which the run with collection collected.
#[derive(Clone, Copy)]
enum Mode<'a> {
    Collect,
    Keep(&'a [usize]),
}

fn bytes(e: &Entry) -> Option<Vec<u8>> {
    e.value().map(|v| v.into_owned())
}

fn same(a: &Entry, b: &Entry, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(a, b, "{}", what);
    prop_assert_eq!(a.to_delta(), b.to_delta(), "{}", what);
    prop_assert_eq!(bytes(a), bytes(b), "{}", what);
    Ok(())
}

fn joined(a: &Entry, b: &Entry) -> Entry {
    let mut x = a.clone();
    x.merge(&b.to_delta());
    x
}

/// Merges `d` into `e`, checking that a merge reporting "unchanged" changed nothing visible.
fn merge_checked(e: &mut Entry, d: &EntryDelta) -> Result<(), TestCaseError> {
    let before = (bytes(e), e.deadline());
    if !e.merge(d) {
        prop_assert_eq!(before, (bytes(e), e.deadline()), "merge said unchanged");
    }
    Ok(())
}

fn apply(e: &mut Entry, node: u64, op: &Op, stamp: Stamp) -> EntryDelta {
    match op {
        Op::Write(v) => e.write_register(v.clone().map(Into::into), stamp),
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
fn run(nodes: &[u64], steps: &[Step]) -> Result<Sim, TestCaseError> {
    run_as(nodes, steps, Mode::Collect)
}

fn run_as(nodes: &[u64], steps: &[Step], mode: Mode<'_>) -> Result<Sim, TestCaseError> {
    let n = nodes.len();
    let mut clocks = vec![0u64; n];
    let mut sim = Sim {
        states: vec![Entry::empty(); n],
        log: Vec::new(),
        stamps: Vec::new(),
        seen: vec![Vec::new(); n],
        collected_below: vec![0; n],
        collected_at: Vec::new(),
    };
    // Replicas that ever collected (in `Mode::Keep` too, so both runs skip the same writes).
    let mut collector = vec![false; n];
    for (i, step) in steps.iter().enumerate() {
        match *step {
            Step::Local {
                at,
                op: Op::Write(_),
                ..
            } if collector[at] => {}
            Step::Local { at, ref op, dt } => {
                clocks[at] += dt;
                let stamp = Stamp::new(clocks[at], nodes[at]);
                let before = sim.states[at].clone();
                let delta = apply(&mut sim.states[at], nodes[at], op, stamp);
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
                Mode::Keep(collected) => collector[at] |= collected.contains(&i),
                Mode::Collect if collectable(&sim, &clocks, at) => {
                    collector[at] = true;
                    let newest = sim.states[at].max_stamp().time;
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

fn converged(sim: &Sim) -> Entry {
    sim.states
        .iter()
        .fold(Entry::empty(), |acc, s| joined(&acc, s))
}

/// Every replica's state is the join of the deltas it merged (since it last collected).
fn check_seen(sim: &Sim) -> Result<(), TestCaseError> {
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
fn check_lattice(sim: &Sim, picks: [prop::sample::Index; 3]) -> Result<(), TestCaseError> {
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
fn same_value(a: &Option<Vec<u8>>, b: &Option<Vec<u8>>) -> bool {
    let num = |v: &Option<Vec<u8>>| {
        v.as_deref()
            .and_then(|b| std::str::from_utf8(b).ok()?.parse::<f64>().ok())
    };
    a == b
        || matches!((num(a), num(b)), (Some(x), Some(y))
            if (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_mutators_delta_replays_its_op((nodes, steps) in history()) {
        run(&nodes, &steps)?;
    }

    #[test]
    fn joining_the_deltas_gives_the_state((nodes, steps) in history()) {
        let sim = run(&nodes, &steps)?;
        check_seen(&sim)?;
        let mut all = EntryDelta::default();
        for d in &sim.log {
            all.join(d);
        }
        same(&Entry::from_delta(&all), &converged(&sim), "join of all deltas")?;
    }

    #[test]
    fn merge_is_commutative_associative_idempotent(
        (nodes, steps) in history(),
        picks in prop::array::uniform3(any::<prop::sample::Index>()),
    ) {
        let sim = run(&nodes, &steps)?;
        check_lattice(&sim, picks)?;
    }

    #[test]
    fn any_delivery_order_with_duplicates_converges(
        (nodes, steps, order, extra, _) in history_with_delivery(),
    ) {
        let sim = run(&nodes, &steps)?;
        let target = converged(&sim);
        let k = sim.log.len();
        let extra: Vec<usize> = extra.into_iter().filter(|&i| i < k).collect();
        let schedule: Vec<usize> = extra
            .iter()
            .chain(&order)
            .chain(extra.iter().rev())
            .copied()
            .collect();
        let mut fresh = Entry::empty();
        for &i in &schedule {
            merge_checked(&mut fresh, &sim.log[i])?;
        }
        same(&fresh, &target, "fresh replica, shuffled with duplicates")?;
        // Every replica, whatever it already holds, ends at the same state.
        for state in &sim.states {
            let mut s = state.clone();
            for &i in schedule.iter().rev() {
                merge_checked(&mut s, &sim.log[i])?;
            }
            same(&s, &target, "replica completing its deliveries")?;
        }
    }

    #[test]
    fn lost_deltas_are_repaired_by_full_state(
        (nodes, steps, order, _, lost) in history_with_delivery(),
    ) {
        let sim = run(&nodes, &steps)?;
        let target = converged(&sim);
        let mut partial = Entry::empty();
        for &i in order.iter().filter(|&&i| !lost[i]) {
            merge_checked(&mut partial, &sim.log[i])?;
        }
        for state in sim.states.iter().rev() {
            merge_checked(&mut partial, &state.to_delta())?;
        }
        same(&partial, &target, "repaired by anti-entropy")?;
        // A late (already covered) delta changes nothing.
        for d in &sim.log {
            let mut late = target.clone();
            prop_assert!(!late.merge(d), "a late delta reported a change");
            same(&late, &target, "late delta")?;
        }
    }

    #[test]
    fn register_agrees_with_crdts_lwwreg(
        (nodes, steps) in history_of(register_bytes().prop_map(|v| Op::Write(Some(v))).boxed()),
    ) {
        let sim = run(&nodes, &steps)?;
        let mut regs = vec![LWWReg::<Vec<u8>, (u64, u64)>::default(); nodes.len()];
        let mut ops: Vec<LWWReg<Vec<u8>, (u64, u64)>> = Vec::new();
        for step in &steps {
            match *step {
                Step::Local { at, op: Op::Write(Some(ref v)), .. } => {
                    let s = sim.stamps[ops.len()];
                    let op = LWWReg { val: v.clone(), marker: (s.time, s.node) };
                    regs[at].apply(op.clone());
                    ops.push(op);
                }
                Step::Local { .. } => unreachable!("register-only history"),
                Step::Recv { at, pick } if !ops.is_empty() => {
                    regs[at].apply(ops[pick % ops.len()].clone());
                }
                Step::Recv { .. } => {}
                Step::Sync { at, from } => {
                    let r = regs[from].clone();
                    regs[at].merge(r);
                }
                Step::Gossip | Step::Collect { .. } => unreachable!("not generated here"),
            }
        }
        let expect = |r: &LWWReg<Vec<u8>, (u64, u64)>| (r.marker != (0, 0)).then(|| r.val.clone());
        for (state, reg) in sim.states.iter().zip(&regs) {
            prop_assert_eq!(bytes(state), expect(reg));
        }
        let all = regs.iter().cloned().fold(LWWReg::default(), |mut acc, r| {
            acc.merge(r);
            acc
        });
        prop_assert_eq!(bytes(&converged(&sim)), expect(&all));
    }

    #[test]
    fn increments_agree_with_crdts_pncounter(
        (nodes, steps) in history_of(
            prop_oneof![-1000i64..0, 1i64..1000].prop_map(Op::AddInt).boxed()
        ),
    ) {
        let sim = run(&nodes, &steps)?;
        let n = nodes.len();
        let mut counters = vec![PNCounter::<u64>::new(); n];
        let mut seen_any = vec![false; n];
        let mut ops = Vec::new();
        for step in &steps {
            match *step {
                Step::Local { at, op: Op::AddInt(x), .. } => {
                    let c = &mut counters[at];
                    let op = if x > 0 {
                        c.inc_many(nodes[at], x as u64)
                    } else {
                        c.dec_many(nodes[at], x.unsigned_abs())
                    };
                    c.apply(op);
                    // Meridian's delta carries the actor's whole totals: ship the same projection
                    // (`*_many(actor, 0)` yields the actor's current P and N dots).
                    let mut delta = PNCounter::new();
                    delta.apply(c.inc_many(nodes[at], 0));
                    delta.apply(c.dec_many(nodes[at], 0));
                    ops.push(delta);
                    seen_any[at] = true;
                }
                Step::Local { .. } => unreachable!("increment-only history"),
                Step::Recv { at, pick } if !ops.is_empty() => {
                    counters[at].merge(ops[pick % ops.len()].clone());
                    seen_any[at] = true;
                }
                Step::Recv { .. } => {}
                Step::Sync { at, from } => {
                    let c = counters[from].clone();
                    counters[at].merge(c);
                    seen_any[at] |= seen_any[from];
                }
                Step::Gossip | Step::Collect { .. } => unreachable!("not generated here"),
            }
        }
        for r in 0..n {
            let expect = seen_any[r].then(|| counters[r].read().to_string().into_bytes());
            prop_assert_eq!(bytes(&sim.states[r]), expect, "replica {}", r);
        }
        let all = counters.iter().cloned().fold(PNCounter::new(), |mut acc, c| {
            acc.merge(c);
            acc
        });
        let expect = seen_any.iter().any(|&s| s).then(|| all.read().to_string().into_bytes());
        prop_assert_eq!(bytes(&converged(&sim)), expect);
    }

    /// Collection and the epochs it makes actors open keep the laws: every op's delta replays
    /// it (checked by `run`), a replica is the join of what it merged, merge is a semilattice.
    #[test]
    fn laws_hold_across_collection_and_new_epochs(
        (nodes, steps) in history_with_collection(),
        picks in prop::array::uniform3(any::<prop::sample::Index>()),
    ) {
        let sim = run(&nodes, &steps)?;
        check_seen(&sim)?;
        check_lattice(&sim, picks)?;
    }

    /// Collecting a dead entry is invisible: the regions converge to the value they converge to
    /// without it. Before epochs, an actor whose node collected counted again from 0, and a
    /// replica still holding the tombstone took the new totals for ones it had observed.
    #[test]
    fn collecting_changes_no_converged_value((nodes, steps) in history_with_collection()) {
        let with = run(&nodes, &steps)?;
        let without = run_as(&nodes, &steps, Mode::Keep(&with.collected_at))?;
        let (a, b) = (bytes(&converged(&with)), bytes(&converged(&without)));
        prop_assert!(
            same_value(&a, &b),
            "with collection {:?}, without {:?}",
            a.as_deref().map(String::from_utf8_lossy),
            b.as_deref().map(String::from_utf8_lossy)
        );
    }
}
