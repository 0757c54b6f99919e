//! The rows of the conflict table (DESIGN.md §2, docs/semantics.md) as data, run by
//! `table.rs` in a world of three single-node regions a, b, c. Concurrency is real: the
//! conflicting writes happen while the regions are cut from each other, so neither side has
//! seen the other's write; a later phase means a later stamp. Each test function is one world.

use crate::table::{run_table, Case, Expect, Seen, Step, Ttl, Window};
use Step::{Do, Reply, Times, Wait};

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

const fn v(b: &'static [u8]) -> Option<&'static [u8]> {
    Some(b)
}
const fn is(key: &'static str, value: &'static [u8]) -> Expect {
    Expect {
        key,
        value: Some(value),
        ttl: Ttl::Never,
    }
}
const fn gone(key: &'static str) -> Expect {
    Expect {
        key,
        value: None,
        ttl: Ttl::Never,
    }
}
const fn ttl(key: &'static str, value: &'static [u8], secs: i64) -> Expect {
    Expect {
        key,
        value: Some(value),
        ttl: Ttl::Secs(secs),
    }
}
const fn seen(r: usize, key: &'static str, value: &'static [u8]) -> Seen {
    Seen(r, key, Some(value))
}
const fn unseen(r: usize, key: &'static str) -> Seen {
    Seen(r, key, None)
}
#[rustfmt::skip]
const fn case(name: &'static str, setup: &'static [Step], phases: &'static [&'static [Step]], before_heal: &'static [Seen], expect: &'static [Expect]) -> Case {
    Case { name, setup, phases, before_heal, expect }
}

/// SET ∥ SET, SET ∥ DEL, the TTL rows, three-way writes and no resurrection.
#[rustfmt::skip]
const REGISTERS: &[Case] = &[
    case("SET x ∥ later SET y -> y", &[], &[&[Do(A, &["SET", "ss1", "x"])], &[Do(B, &["SET", "ss1", "y"])]],
        &[seen(A, "ss1", b"x"), seen(B, "ss1", b"y"), unseen(C, "ss1")], &[is("ss1", b"y")]),
    case("SET y ∥ later SET x -> x (the stamp decides, not the region)", &[], &[&[Do(B, &["SET", "ss2", "y"])], &[Do(A, &["SET", "ss2", "x"])]],
        &[seen(A, "ss2", b"x"), seen(B, "ss2", b"y")], &[is("ss2", b"x")]),
    case("DEL ∥ later SET -> the SET", &[Do(A, &["SET", "sd1", "v0"])], &[&[Reply(B, &["DEL", "sd1"], "1")], &[Do(A, &["SET", "sd1", "v"])]],
        &[seen(A, "sd1", b"v"), unseen(B, "sd1")], &[is("sd1", b"v")]),
    case("SET ∥ later DEL -> absent", &[Do(A, &["SET", "sd2", "v0"])], &[&[Do(A, &["SET", "sd2", "v"])], &[Reply(B, &["DEL", "sd2"], "1")]],
        &[seen(A, "sd2", b"v"), unseen(B, "sd2")], &[gone("sd2")]),
    case("EXPIRE 5000 ∥ later EXPIRE 1000 -> 1000 s (not the longer)", &[Do(A, &["SET", "ee1", "v"])],
        &[&[Reply(B, &["EXPIRE", "ee1", "5000"], "1")], &[Reply(A, &["EXPIRE", "ee1", "1000"], "1")]], &[], &[ttl("ee1", b"v", 1000)]),
    case("EXPIRE 1000 ∥ later EXPIRE 5000 -> 5000 s", &[Do(A, &["SET", "ee2", "v"])],
        &[&[Reply(A, &["EXPIRE", "ee2", "1000"], "1")], &[Reply(B, &["EXPIRE", "ee2", "5000"], "1")]], &[], &[ttl("ee2", b"v", 5000)]),
    case("EXPIRE ∥ later PERSIST -> no TTL", &[Do(A, &["SET", "ep1", "v", "EX", "3000"])],
        &[&[Reply(B, &["EXPIRE", "ep1", "500"], "1")], &[Reply(A, &["PERSIST", "ep1"], "1")]], &[], &[is("ep1", b"v")]),
    case("PERSIST ∥ later EXPIRE -> the EXPIRE's TTL", &[Do(A, &["SET", "ep2", "v", "EX", "3000"])],
        &[&[Reply(A, &["PERSIST", "ep2"], "1")], &[Reply(B, &["EXPIRE", "ep2", "500"], "1")]], &[], &[ttl("ep2", b"v", 500)]),
    case("EXPIRE ∥ later SET (clears the TTL) -> the SET, no TTL", &[Do(A, &["SET", "se1", "old"])],
        &[&[Reply(B, &["EXPIRE", "se1", "500"], "1")], &[Do(A, &["SET", "se1", "v"])]], &[], &[is("se1", b"v")]),
    case("SET ∥ later EXPIRE -> the SET's value with the EXPIRE's TTL", &[Do(A, &["SET", "se2", "old"])],
        &[&[Do(A, &["SET", "se2", "v"])], &[Reply(B, &["EXPIRE", "se2", "500"], "1")]],
        &[seen(A, "se2", b"v"), seen(B, "se2", b"old")], &[ttl("se2", b"v", 500)]),
    case("three regions SET x, y, z in turn -> z", &[], &[&[Do(A, &["SET", "t3", "x"])], &[Do(B, &["SET", "t3", "y"])], &[Do(C, &["SET", "t3", "z"])]],
        &[seen(A, "t3", b"x"), seen(B, "t3", b"y"), seen(C, "t3", b"z")], &[is("t3", b"z")]),
    case("three regions INCRBY 5 ∥ SET 100 ∥ INCRBY 7 -> 112", &[Do(A, &["SET", "t3m", "10"])],
        &[&[Reply(A, &["INCRBY", "t3m", "5"], "15")], &[Do(C, &["SET", "t3m", "100"])], &[Reply(B, &["INCRBY", "t3m", "7"], "17")]],
        &[seen(C, "t3m", b"100")], &[is("t3m", b"112")]),
    case("older SET arriving after the key expired elsewhere stays dead", &[],
        &[&[Do(A, &["SET", "nr1", "old"])], &[Do(B, &["SET", "nr1", "new", "PX", "300"])], &[Wait(B, "nr1", None)]],
        &[seen(A, "nr1", b"old")], &[gone("nr1")]),
    case("older SET arriving after a later DEL (tombstone past its grace) stays dead", &[],
        &[&[Do(A, &["SET", "nr2", "v"])], &[Do(B, &["SET", "nr2", "w"]), Reply(B, &["DEL", "nr2"], "1")], &[Wait(B, "nr2", None)]],
        &[seen(A, "nr2", b"v")], &[gone("nr2")]),
];

/// INCRBY ∥ INCRBY, SET ∥ INCRBY, DEL ∥ INCRBY, INCRBYFLOAT ∥ INCRBYFLOAT.
#[rustfmt::skip]
const COUNTERS: &[Case] = &[
    case("INCRBY 5 ∥ INCRBY 7 on 10 -> 22", &[Do(A, &["SET", "ci1", "10"])],
        &[&[Reply(A, &["INCRBY", "ci1", "5"], "15"), Reply(B, &["INCRBY", "ci1", "7"], "17")]],
        &[seen(A, "ci1", b"15"), seen(B, "ci1", b"17"), seen(C, "ci1", b"10")], &[is("ci1", b"22")]),
    case("three regions INCRBY 5 ∥ DECRBY 2 ∥ INCRBY 100 -> 103", &[],
        &[&[Reply(A, &["INCRBY", "ci3", "5"], "5"), Reply(B, &["DECRBY", "ci3", "2"], "-2"), Reply(C, &["INCRBY", "ci3", "100"], "100")]],
        &[], &[is("ci3", b"103")]),
    case("INCR ∥ INCR on a missing key -> 2", &[], &[&[Reply(A, &["INCR", "ci2"], "1"), Reply(B, &["INCR", "ci2"], "1")]], &[], &[is("ci2", b"2")]),
    case("SET 100 ∥ later INCRBY 5 on 10 -> 105", &[Do(A, &["SET", "si1", "10"])],
        &[&[Do(A, &["SET", "si1", "100"])], &[Reply(B, &["INCRBY", "si1", "5"], "15")]], &[seen(A, "si1", b"100")], &[is("si1", b"105")]),
    case("INCRBY 5 ∥ later SET 100 on 10 -> 105 (the SET did not observe it)", &[Do(A, &["SET", "si3", "10"])],
        &[&[Reply(B, &["INCRBY", "si3", "5"], "15")], &[Do(A, &["SET", "si3", "100"])]], &[], &[is("si3", b"105")]),
    case("SET abc ∥ INCRBY 5 on 10 -> abc", &[Do(A, &["SET", "si2", "10"])],
        &[&[Reply(B, &["INCRBY", "si2", "5"], "15")], &[Do(A, &["SET", "si2", "abc"])]], &[], &[is("si2", b"abc")]),
    case("DEL ∥ INCRBY 3 on 10 -> 3 (observed-remove)", &[Do(A, &["SET", "di1", "10"])],
        &[&[Reply(A, &["DEL", "di1"], "1")], &[Reply(B, &["INCRBY", "di1", "3"], "13")]], &[unseen(A, "di1")], &[is("di1", b"3")]),
    case("INCRBY 3 ∥ later DEL on 10 -> 3", &[Do(A, &["SET", "di2", "10"])],
        &[&[Reply(B, &["INCRBY", "di2", "3"], "13")], &[Reply(A, &["DEL", "di2"], "1")]], &[], &[is("di2", b"3")]),
    case("DEL after increments it observed ∥ INCRBY 4 -> 4", &[Do(A, &["SET", "di3", "1"]), Do(B, &["INCRBY", "di3", "10"]), Do(C, &["INCRBY", "di3", "20"])],
        &[&[Reply(C, &["DEL", "di3"], "1"), Reply(A, &["INCRBY", "di3", "4"], "35")]], &[], &[is("di3", b"4")]),
    case("INCRBYFLOAT 0.1 ∥ INCRBYFLOAT 0.2 on 10.5 -> 10.8", &[Do(A, &["SET", "fl1", "10.5"])],
        &[&[Reply(A, &["INCRBYFLOAT", "fl1", "0.1"], "10.6"), Reply(B, &["INCRBYFLOAT", "fl1", "0.2"], "10.7")]], &[], &[is("fl1", b"10.8")]),
    case("three regions INCRBYFLOAT 0.1 ∥ 0.2 ∥ 0.3 -> 0.6", &[],
        &[&[Do(A, &["INCRBYFLOAT", "fl3", "0.1"]), Do(B, &["INCRBYFLOAT", "fl3", "0.2"]), Do(C, &["INCRBYFLOAT", "fl3", "0.3"])]], &[], &[is("fl3", b"0.6")]),
    case("INCRBY 5 ∥ INCRBYFLOAT 0.5 on 10 -> 15.5", &[Do(A, &["SET", "fl2", "10"])],
        &[&[Reply(A, &["INCRBY", "fl2", "5"], "15"), Reply(B, &["INCRBYFLOAT", "fl2", "0.5"], "10.5")]], &[], &[is("fl2", b"15.5")]),
];

/// APPEND / SETRANGE / SETBIT ∥ anything: whole-value last-writer-wins.
#[rustfmt::skip]
const STRINGS: &[Case] = &[
    case("APPEND X ∥ later APPEND Y on ab -> abY (not abXY)", &[Do(A, &["SET", "ap1", "ab"])],
        &[&[Reply(A, &["APPEND", "ap1", "X"], "3")], &[Reply(B, &["APPEND", "ap1", "Y"], "3")]],
        &[seen(A, "ap1", b"abX"), seen(B, "ap1", b"abY")], &[is("ap1", b"abY")]),
    case("APPEND race in three regions -> the last one's whole value", &[Do(A, &["SET", "ap3", "-"])],
        &[&[Do(A, &["APPEND", "ap3", "X"])], &[Do(C, &["APPEND", "ap3", "Z"])], &[Do(B, &["APPEND", "ap3", "Y"])]], &[], &[is("ap3", b"-Y")]),
    case("SET ∥ later APPEND -> the APPEND's whole value", &[Do(A, &["SET", "ap2", "ab"])],
        &[&[Do(A, &["SET", "ap2", "new"])], &[Reply(B, &["APPEND", "ap2", "Z"], "3")]], &[], &[is("ap2", b"abZ")]),
    case("APPEND ∥ later SET -> the SET", &[Do(A, &["SET", "ap4", "ab"])],
        &[&[Do(B, &["APPEND", "ap4", "Z"])], &[Do(A, &["SET", "ap4", "new"])]], &[], &[is("ap4", b"new")]),
    case("SETRANGE 0 J ∥ later SETRANGE 4 ! on hello -> hell!", &[Do(A, &["SET", "sr1", "hello"])],
        &[&[Reply(A, &["SETRANGE", "sr1", "0", "J"], "5")], &[Reply(B, &["SETRANGE", "sr1", "4", "!"], "5")]], &[], &[is("sr1", b"hell!")]),
    case("SETRANGE ∥ later DEL -> absent", &[Do(A, &["SET", "sr2", "hello"])],
        &[&[Do(A, &["SETRANGE", "sr2", "0", "J"])], &[Reply(B, &["DEL", "sr2"], "1")]], &[], &[gone("sr2")]),
    case("SETBIT 6 1 ∥ later SETBIT 7 0 on 'a' -> '`' (not 'b')", &[Do(A, &["SET", "sb1", "a"])],
        &[&[Reply(A, &["SETBIT", "sb1", "6", "1"], "0")], &[Reply(B, &["SETBIT", "sb1", "7", "0"], "1")]],
        &[seen(A, "sb1", b"c"), seen(B, "sb1", b"`")], &[is("sb1", b"`")]),
    case("APPEND ∥ later SETBIT -> the SETBIT's whole value", &[Do(A, &["SET", "sb2", "a"])],
        &[&[Reply(B, &["APPEND", "sb2", "z"], "2")], &[Reply(A, &["SETBIT", "sb2", "6", "1"], "0")]], &[], &[is("sb2", b"c")]),
];

/// A causally later write wins: a and b never talk, c saw a's write and overwrote it.
#[rustfmt::skip]
const CAUSAL: &[Case] = &[case(
    "c overwrites a's SET after seeing it; b gets it only through c -> c's value, everywhere",
    &[],
    &[&[Do(A, &["SET", "cw", "from-a"])], &[Wait(C, "cw", v(b"from-a")), Do(C, &["SET", "cw", "from-c"])], &[Wait(B, "cw", v(b"from-c"))]],
    &[seen(A, "cw", b"from-c")],
    &[is("cw", b"from-c")],
)];

/// Duplicated deltas: the relays duplicate 30 % of the packets and lose 2 %.
#[rustfmt::skip]
const DUPLICATED: &[Case] = &[
    case("counters under duplication stay exact", &[],
        &[&[Times(A, 20, &["INCRBY", "fc", "1"]), Times(B, 20, &["INCRBY", "fc", "10"]), Times(C, 10, &["DECRBY", "fc", "3"])]],
        &[], &[is("fc", b"190")]),
    case("the last of a run of SETs wins under duplication", &[],
        &[&[Do(A, &["SET", "fs", "1"]), Do(A, &["SET", "fs", "2"]), Do(B, &["SET", "fs", "3"]), Do(C, &["SET", "fs", "4"])], &[Do(A, &["SET", "fs", "5"])]],
        &[], &[is("fs", b"5")]),
    case("a DEL is not undone by a duplicated older SET", &[],
        &[&[Do(A, &["SET", "fd", "1"]), Do(B, &["SET", "fd", "2"])], &[Wait(C, "fd", v(b"2")), Reply(C, &["DEL", "fd"], "1")]],
        &[], &[gone("fd")]),
];

/// Reordered deltas: the relays delay every packet by a random 0-30 ms.
#[rustfmt::skip]
const REORDERED: &[Case] = &[
    case("counters under reordering stay exact", &[],
        &[&[Times(A, 20, &["INCRBY", "jc", "1"]), Times(B, 20, &["INCRBY", "jc", "10"]), Times(C, 10, &["DECRBY", "jc", "3"])]],
        &[], &[is("jc", b"190")]),
    case("the last of a run of SETs wins under reordering", &[],
        &[&[Do(A, &["SET", "js", "1"]), Do(A, &["SET", "js", "2"]), Do(B, &["SET", "js", "3"]), Do(C, &["SET", "js", "4"])], &[Do(A, &["SET", "js", "5"])]],
        &[], &[is("js", b"5")]),
    case("a DEL is not undone by a reordered older SET", &[],
        &[&[Do(A, &["SET", "jd", "1"]), Do(B, &["SET", "jd", "2"])], &[Wait(C, "jd", v(b"2")), Reply(C, &["DEL", "jd"], "1")]],
        &[], &[gone("jd")]),
];

/// Duplicated deltas after a one-way outage: b receives a's batches but a never hears b's
/// acknowledgements, so a ships them again once healed.
#[rustfmt::skip]
const ONE_WAY: &[Case] = &[
    case("increments shipped twice are counted once", &[Do(A, &["SET", "ow1", "0"])],
        &[&[Times(A, 5, &["INCRBY", "ow1", "7"])], &[Wait(B, "ow1", v(b"35")), Reply(B, &["INCRBY", "ow1", "1"], "36")]],
        &[], &[is("ow1", b"36")]),
    case("an older SET shipped again after a later DEL does not resurrect", &[],
        &[&[Do(A, &["SET", "ow2", "v"])], &[Wait(B, "ow2", v(b"v")), Reply(B, &["DEL", "ow2"], "1")]], &[], &[gone("ow2")]),
];

#[tokio::test]
async fn register_and_ttl_rows() {
    run_table(&[(Window::Apart, REGISTERS)]).await;
}

#[tokio::test]
async fn counter_rows() {
    run_table(&[(Window::Apart, COUNTERS)]).await;
}

#[tokio::test]
async fn whole_value_string_rows_and_causality() {
    run_table(&[(Window::Apart, STRINGS), (Window::Cut(&[A], &[B]), CAUSAL)]).await;
}

#[tokio::test]
async fn duplicated_deltas() {
    run_table(&[
        (Window::Duplicating, DUPLICATED),
        (Window::OneWay(&[B], &[A]), ONE_WAY),
    ])
    .await;
}

/// Reordered packets (and so reordered delta batches) must change nothing either. Runs in a
/// process of its own: a node aborting the process here must fail this test only.
#[tokio::test]
async fn reordered_deltas() {
    if crate::table::in_own_process("rows::reordered_deltas").await {
        run_table(&[(Window::Reordering, REORDERED)]).await;
    }
}
