//! The CRDT laws of `Entry` / `EntryDelta` (DESIGN.md §2), proved over random histories.
//!
//! A history runs 2–4 replicas with distinct node IDs. Each replica stamps its ops like an HLC
//! (strictly increasing, and above every stamp it has merged), so stamps are unique and a write
//! that follows a received one is causally later; replicas that have not exchanged are
//! concurrent. Ops: register writes (integer-, float- and garbage-looking bytes, tombstones; some
//! with an arbitrary *floor*, see `crdt::entry`), integer and float increments (zero included),
//! and expiry writes (set and cleared); between
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
//! epoch (`crdt::counter`), and its next register write carries the collected entry's newest
//! stamp as its floor, observing what the collected tombstone observed (`store::expire` ghosts).
//! Over them the laws above still hold for every state and delta, and collecting changes no
//! converged value: the same history run without collection converges to the same value.
//!
//! "Same state" means equal `Entry`, equal `to_delta()` and equal `value()` bytes.

mod sim;

use crdts::{CmRDT, CvRDT, LWWReg, PNCounter};
use meridian::crdt::{Entry, EntryDelta};
use proptest::prelude::*;
use sim::*;

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
        1 => (prop::option::of(register_bytes()), 1u64..6)
            .prop_map(|(v, back)| Op::WriteFloored(v, back)),
    ]
    .boxed()
}

/// `n` distinct node IDs in random order, so actor order differs from replica order.
fn node_ids(n: usize) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::btree_set(1u64..1_000, n)
        .prop_map(|s| s.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

fn history_of(ops: BoxedStrategy<Op>) -> impl Strategy<Value = (Vec<u64>, Vec<Step>)> {
    (2usize..=4).prop_flat_map(move |n| {
        let step = prop_oneof![
            6 => (0..n, ops.clone(), 1u64..4).prop_map(|(at, op, dt)| Step::Local { at, op, dt }),
            3 => (0..n, any::<usize>()).prop_map(|(at, pick)| Step::Recv { at, pick }),
            1 => (0..n, 0..n).prop_map(|(at, from)| Step::Sync { at, from }),
        ];
        (node_ids(n), prop::collection::vec(step, 1..40))
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
        let step = prop_oneof![
            6 => (0..n, ops.clone(), 1u64..4).prop_map(|(at, op, dt)| Step::Local { at, op, dt }),
            2 => (0..n, any::<usize>()).prop_map(|(at, pick)| Step::Recv { at, pick }),
            1 => (0..n, 0..n).prop_map(|(at, from)| Step::Sync { at, from }),
            3 => Just(Step::Gossip),
            4 => (0..n).prop_map(|at| Step::Collect { at }),
        ];
        (node_ids(n), prop::collection::vec(step, 1..48))
    })
}

/// The race docs/semantics.md ("Floors") leaves open: the converged register has a floor, and a
/// tombstone stamped between its floor and it (concurrent with it) observed more of an actor
/// than the tombstones at or below the floor did. The settled levels keep only the higher level
/// of that actor, at the later stamp, so the floor reads none of it.
fn floor_race(sim: &Sim) -> bool {
    let end = converged(sim);
    let (floor, top) = (end.floor(), end.register_stamp());
    let tombstones = || {
        sim.log
            .iter()
            .filter_map(|d| d.register.as_ref())
            .filter(|r| r.value.is_none())
    };
    let mut below = meridian::crdt::Contributions::new();
    for r in tombstones().filter(|r| r.stamp.time <= floor) {
        below.join(&r.observed);
    }
    floor != 0
        && tombstones()
            .filter(|r| r.stamp.time > floor && r.stamp < top)
            .any(|r| {
                r.observed
                    .iter()
                    .any(|c| below.get(c.actor).is_some_and(|b| !b.covers(c)))
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
    /// replica still holding the tombstone took the new totals for ones it had observed. Before
    /// floors, a register write by a replica that had collected observed none of what the
    /// collected tombstone observed, and replicas still holding it added those totals back.
    #[test]
    fn collecting_changes_no_converged_value((nodes, steps) in history_with_collection()) {
        let with = run(&nodes, &steps)?;
        prop_assume!(!floor_race(&with));
        let without = run_as(&nodes, &steps, Mode::Keep)?;
        let (a, b) = (bytes(&converged(&with)), bytes(&converged(&without)));
        prop_assert!(
            same_value(&a, &b),
            "with collection {:?}, without {:?}",
            a.as_deref().map(String::from_utf8_lossy),
            b.as_deref().map(String::from_utf8_lossy)
        );
    }
}
