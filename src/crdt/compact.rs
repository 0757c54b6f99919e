//! A compact encoding of a batch's entries (key and delta), for the batches a writer builds
//! once for a fan-out group of region links (`repl::wire::pack_entries`).
//!
//! Why: a replicated SET's entry was about 100 bytes of msgpack for 48 bytes of key and value.
//! Its expiry repeated the register's stamp, every stamp repeated the writer's node id, and
//! every field carried a marker. Each byte is then compressed and encrypted on the writer; LZ4,
//! the entry encoding and QUIC together were a quarter of what replication costs it
//! (`docs/benchmarks.md`). This encoding writes a SET in about 55 bytes.
//!
//! Layout (integers LEB128 unless said otherwise):
//! - the array: [`MARK`] (a byte msgpack never uses, so an array in this encoding is never
//!   mistaken for a msgpack one), the number of entries, then the entries;
//! - an entry: the key (length, bytes), a flags byte ([`REG`] .. [`MORE`]), a second flags
//!   byte if [`MORE`] is set, then in order the parts the flags name:
//!   1. register: its value if [`VAL`] (length, bytes; absent: a tombstone), its stamp, its
//!      observed contributions if [`OBSERVED`], its floor if [`FLOOR`];
//!   2. if [`CONTRIB`]: the contributions and their stamp;
//!   3. if [`EXP`]: the deadline if [`DEADLINE`], then the expiry stamp unless [`EXP_SAME`]
//!      (the same stamp as the register's, as a SET or SET EX writes it);
//!   4. if [`SETTLED`]: the number of settled points, then each one's contribution and stamp.
//! - contributions: their number, then each one: a flags byte (which of the integer decrement
//!   and the two float totals are not zero), the actor (a node, below), the integer increment,
//!   the decrement if flagged, each flagged float (its bits, 8 bytes little-endian), and the
//!   epoch (a time, below);
//! - a stamp: its time, then its node;
//! - a time (a stamp's, or an epoch): its difference from the time of the stamp written last in
//!   this array (0 before the first), zigzag-encoded (0, -1, 1, -2, ... as 0, 1, 2, 3, ...).
//!   A batch's stamps are microseconds apart: three bytes, not eight, and the bytes LZ4
//!   could not compress anyway;
//! - a node (a stamp's, or a contribution's actor): 0 for "the node written last in this
//!   array", or 1 and the node (8 bytes, little-endian). A run of one writer's changes names
//!   it once.
//!
//! Invariant: [`read_entries`] returns exactly what [`Writer::entry`] was given, for every
//! delta (property-tested), and on any other bytes either `None` or some entries, never a
//! panic or an allocation beyond what the bytes can hold.

use super::counter::{Contribution, Contributions, Totals};
use super::entry::{EntryDelta, Expiry, Register};
use super::msgpack::{Reader, RESERVE_MAX};
use super::settled::{Point, Settled};
use super::stamp::Stamp;

/// First byte of an array in this encoding (msgpack's one unused byte).
pub const MARK: u8 = 0xc1;

/// The entry has a register.
pub const REG: u8 = 1;
/// The register holds a value (else it is a tombstone).
pub const VAL: u8 = 1 << 1;
/// The entry has an expiry.
pub const EXP: u8 = 1 << 2;
/// The expiry's stamp is the register's.
pub const EXP_SAME: u8 = 1 << 3;
/// The expiry has a deadline.
pub const DEADLINE: u8 = 1 << 4;
/// The entry has counter contributions or a contribution stamp.
pub const CONTRIB: u8 = 1 << 5;
/// A second flags byte follows.
pub const MORE: u8 = 1 << 6;
/// (Second byte.) The register observed contributions.
pub const OBSERVED: u8 = 1;
/// (Second byte.) The register has a floor.
pub const FLOOR: u8 = 1 << 1;
/// (Second byte.) The entry has settled points.
pub const SETTLED: u8 = 1 << 2;
/// (A contribution's flags byte.) Its totals hold a decrement, a float increment, a float
/// decrement (otherwise zero, and left out).
const INT_DEC: u8 = 1;
const FLOAT_INC: u8 = 1 << 1;
const FLOAT_DEC: u8 = 1 << 2;

/// Writes the entries of one array, remembering the last node and stamp time written.
#[derive(Default)]
pub struct Writer {
    last: Last,
}

/// What a stamp or node is written against: the last ones written in the array.
#[derive(Default)]
struct Last {
    node: Option<u64>,
    time: u64,
}

/// Writes the head of an array of `count` entries, which a [`Writer`]'s entries then follow.
pub fn head(count: usize, out: &mut Vec<u8>) {
    out.push(MARK);
    varint(out, count as u64);
}

impl Writer {
    /// Appends one entry (a new writer for each array: it remembers the last node and time
    /// written).
    pub fn entry(&mut self, key: &[u8], d: &EntryDelta, out: &mut Vec<u8>) {
        bytes(out, key);
        let reg = d.register.as_ref();
        let mut flags = 0;
        let mut more = 0;
        if let Some(r) = reg {
            flags |= REG;
            flags |= if r.value.is_some() { VAL } else { 0 };
            more |= if r.observed.is_empty() { 0 } else { OBSERVED };
            more |= if r.floor == 0 { 0 } else { FLOOR };
        }
        if let Some(e) = &d.expiry {
            flags |= EXP;
            flags |= if reg.is_some_and(|r| r.stamp == e.stamp) {
                EXP_SAME
            } else {
                0
            };
            flags |= if e.deadline_ms.is_some() { DEADLINE } else { 0 };
        }
        if !d.contrib.is_empty() || d.contrib_stamp != Stamp::ZERO {
            flags |= CONTRIB;
        }
        more |= if d.settled.is_empty() { 0 } else { SETTLED };
        if more != 0 {
            out.extend_from_slice(&[flags | MORE, more]);
        } else {
            out.push(flags);
        }
        if let Some(r) = reg {
            if let Some(v) = &r.value {
                bytes(out, v);
            }
            self.stamp(out, r.stamp);
            if more & OBSERVED != 0 {
                self.contributions(out, &r.observed);
            }
            if more & FLOOR != 0 {
                varint(out, r.floor);
            }
        }
        if flags & CONTRIB != 0 {
            self.contributions(out, &d.contrib);
            self.stamp(out, d.contrib_stamp);
        }
        if let Some(e) = &d.expiry {
            if let Some(ms) = e.deadline_ms {
                varint(out, ms);
            }
            if flags & EXP_SAME == 0 {
                self.stamp(out, e.stamp);
            }
        }
        if more & SETTLED != 0 {
            varint(out, d.settled.iter().count() as u64);
            for p in d.settled.iter() {
                self.contribution(out, &p.seen);
                self.stamp(out, p.at);
            }
        }
    }

    fn stamp(&mut self, out: &mut Vec<u8>, s: Stamp) {
        varint(out, zigzag(s.time.wrapping_sub(self.last.time)));
        self.last.time = s.time;
        self.node(out, s.node);
    }

    fn node(&mut self, out: &mut Vec<u8>, node: u64) {
        if self.last.node == Some(node) {
            out.push(0);
        } else {
            out.push(1);
            out.extend_from_slice(&node.to_le_bytes());
            self.last.node = Some(node);
        }
    }

    fn contributions(&mut self, out: &mut Vec<u8>, cs: &Contributions) {
        varint(out, cs.len() as u64);
        for c in cs.iter() {
            self.contribution(out, c);
        }
    }

    fn contribution(&mut self, out: &mut Vec<u8>, c: &Contribution) {
        let t = &c.totals;
        let mut flags = 0;
        flags |= if t.int_dec != 0 { INT_DEC } else { 0 };
        flags |= if t.float_inc.to_bits() != 0 {
            FLOAT_INC
        } else {
            0
        };
        flags |= if t.float_dec.to_bits() != 0 {
            FLOAT_DEC
        } else {
            0
        };
        out.push(flags);
        self.node(out, c.actor);
        varint(out, t.int_inc);
        if flags & INT_DEC != 0 {
            varint(out, t.int_dec);
        }
        for (flag, f) in [(FLOAT_INC, t.float_inc), (FLOAT_DEC, t.float_dec)] {
            if flags & flag != 0 {
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
        }
        varint(out, zigzag(c.epoch.wrapping_sub(self.last.time)));
    }
}

/// Whether `array` is in this encoding (else it is msgpack).
pub fn is_compact(array: &[u8]) -> bool {
    array.first() == Some(&MARK)
}

/// Decodes a whole array written by [`Writer`] (see the module's invariant), calling `each`
/// with every key and delta; `None` if the bytes are not such an array, read to its end.
pub fn read_entries<T>(
    array: &[u8],
    mut each: impl FnMut(&[u8], EntryDelta) -> T,
) -> Option<Vec<T>> {
    let mut r = Reader::new(array);
    (r.byte()? == MARK).then_some(())?;
    let n = usize::try_from(read_varint(&mut r)?).ok()?;
    let mut out = Vec::with_capacity(n.min(RESERVE_MAX));
    let mut last = Last::default();
    for _ in 0..n {
        let key = read_bytes(&mut r)?;
        let delta = read_delta(&mut r, &mut last)?;
        out.push(each(key, delta));
    }
    r.at_end().then_some(out)
}

fn read_delta(r: &mut Reader, last: &mut Last) -> Option<EntryDelta> {
    let flags = r.byte()?;
    let more = if flags & MORE != 0 { r.byte()? } else { 0 };
    // Bits no writer sets: a newer encoding this reader cannot know, or damage.
    if flags & 0x80 != 0 || more & !(OBSERVED | FLOOR | SETTLED) != 0 {
        return None;
    }
    let register = if flags & REG != 0 {
        let value = if flags & VAL != 0 {
            Some(read_bytes(r)?.into())
        } else {
            None
        };
        let stamp = read_stamp(r, last)?;
        let observed = if more & OBSERVED != 0 {
            read_contributions(r, last)?
        } else {
            Contributions::new()
        };
        let floor = if more & FLOOR != 0 {
            read_varint(r)?
        } else {
            0
        };
        Some(Register {
            value,
            stamp,
            observed,
            floor,
        })
    } else {
        None
    };
    let (contrib, contrib_stamp) = if flags & CONTRIB != 0 {
        (read_contributions(r, last)?, read_stamp(r, last)?)
    } else {
        (Contributions::new(), Stamp::ZERO)
    };
    let expiry = if flags & EXP != 0 {
        let deadline_ms = if flags & DEADLINE != 0 {
            Some(read_varint(r)?)
        } else {
            None
        };
        let stamp = if flags & EXP_SAME != 0 {
            register.as_ref()?.stamp
        } else {
            read_stamp(r, last)?
        };
        Some(Expiry { deadline_ms, stamp })
    } else {
        None
    };
    let settled = if more & SETTLED != 0 {
        let n = usize::try_from(read_varint(r)?).ok()?;
        let mut points = Vec::with_capacity(n.min(RESERVE_MAX));
        for _ in 0..n {
            let seen = read_contribution(r, last)?;
            points.push(Point {
                seen,
                at: read_stamp(r, last)?,
            });
        }
        Settled::decoded(points)
    } else {
        Settled::default()
    };
    Some(EntryDelta {
        register,
        contrib,
        contrib_stamp,
        expiry,
        settled,
    })
}

fn read_stamp(r: &mut Reader, last: &mut Last) -> Option<Stamp> {
    last.time = read_time(r, last)?;
    Some(Stamp::new(last.time, read_node(r, last)?))
}

/// A time written against the last stamp's.
fn read_time(r: &mut Reader, last: &Last) -> Option<u64> {
    Some(last.time.wrapping_add(unzigzag(read_varint(r)?)))
}

fn read_node(r: &mut Reader, last: &mut Last) -> Option<u64> {
    let n = match r.byte()? {
        0 => last.node?,
        1 => read_u64(r)?,
        _ => return None,
    };
    last.node = Some(n);
    Some(n)
}

fn read_u64(r: &mut Reader) -> Option<u64> {
    Some(u64::from_le_bytes(r.take(8)?.try_into().ok()?))
}

fn read_contributions(r: &mut Reader, last: &mut Last) -> Option<Contributions> {
    let n = usize::try_from(read_varint(r)?).ok()?;
    let mut list = smallvec::SmallVec::with_capacity(n.min(RESERVE_MAX));
    for _ in 0..n {
        list.push(read_contribution(r, last)?);
    }
    Some(Contributions::decoded(list))
}

fn read_contribution(r: &mut Reader, last: &mut Last) -> Option<Contribution> {
    let flags = r.byte()?;
    if flags & !(INT_DEC | FLOAT_INC | FLOAT_DEC) != 0 {
        return None;
    }
    let actor = read_node(r, last)?;
    let int_inc = read_varint128(r)?;
    let int_dec = if flags & INT_DEC != 0 {
        read_varint128(r)?
    } else {
        0
    };
    let mut float = |flag| {
        Some(if flags & flag != 0 {
            f64::from_bits(read_u64(r)?)
        } else {
            0.0
        })
    };
    let (float_inc, float_dec) = (float(FLOAT_INC)?, float(FLOAT_DEC)?);
    Some(Contribution {
        actor,
        totals: Totals {
            int_inc,
            int_dec,
            float_inc,
            float_dec,
        },
        epoch: read_time(r, last)?,
    })
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn read_bytes<'a>(r: &mut Reader<'a>) -> Option<&'a [u8]> {
    let n = usize::try_from(read_varint(r)?).ok()?;
    r.take(n)
}

/// A difference of two times, as a small number whichever its sign: 0, -1, 1, -2, ... are
/// written 0, 1, 2, 3, ... (the difference wraps, so every pair of times has one).
fn zigzag(diff: u64) -> u64 {
    let d = diff as i64;
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(z: u64) -> u64 {
    ((z >> 1) as i64 ^ -((z & 1) as i64)) as u64
}

/// LEB128: seven bits a byte, low first, the high bit set on every byte but the last.
fn varint(out: &mut Vec<u8>, v: impl Into<u128>) {
    let mut v: u128 = v.into();
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(r: &mut Reader) -> Option<u64> {
    u64::try_from(read_varint128(r)?).ok()
}

/// At most 19 bytes; a 19th byte above 3 (beyond 128 bits) is refused.
fn read_varint128(r: &mut Reader) -> Option<u128> {
    let mut v = 0u128;
    for i in 0..19 {
        let b = r.byte()?;
        if i == 18 && b > 3 {
            return None;
        }
        v |= u128::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests;
