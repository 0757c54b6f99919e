//! A hand-written reader and writer of the msgpack that the serde derives of this module's types
//! produce (`rmp-serde`, compact: a struct is an array of its fields in order), for the two
//! places where it is hot: a region receiving a peer's batches, and a writer encoding each
//! change once for its links.
//!
//! Why: serde's generic path (a visitor and a seed per field, any integer width accepted
//! everywhere) was a sixth of a receiving region's CPU per write.
//!
//! Invariant: [`write_delta`] writes byte for byte what `rmp_serde` writes (tested on arbitrary
//! deltas), so a frame does not depend on which of the two made it.
//!
//! Invariant: [`read_delta`] either returns exactly what `rmp_serde` decodes from the same bytes,
//! or `None`. It reads only the canonical encoding the serializer writes (smallest integer
//! width, `bin` for bytes, `u128` as 16 big-endian bytes, optional trailing fields present or
//! absent); anything else, well-formed or not, is `None`, and the caller falls back to serde,
//! which decides. Property tests check the agreement on arbitrary deltas and on damaged bytes.
//! Every length is checked against the bytes left, and what is reserved for it is capped at
//! [`RESERVE_MAX`] elements (a claim of a million one-byte elements in a large frame of garbage
//! must not reserve a million structs); no input panics.

use super::counter::{Contribution, Contributions, Totals};
use super::entry::{EntryDelta, Expiry, Register};
use super::settled::{Point, Settled};
use super::stamp::Stamp;

/// Elements reserved ahead for an array, whatever its header claims (more grow as they decode).
pub const RESERVE_MAX: usize = 4096;

/// A cursor over msgpack bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Whether every byte was read.
    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len())?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Some(out)
    }

    pub(crate) fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn be<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// Consumes `bytes` if they come next (and nothing otherwise).
    pub fn expect(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(bytes.len())?;
        (self.buf.get(self.pos..end)? == bytes).then(|| self.pos = end)
    }

    /// `nil`: consumed and true; anything else: left and false.
    pub fn nil(&mut self) -> bool {
        let nil = self.peek() == Some(0xc0);
        self.pos += usize::from(nil);
        nil
    }

    /// An array header; its length is at most the bytes left (every element takes one).
    pub fn array(&mut self) -> Option<usize> {
        let n = match self.byte()? {
            b @ 0x90..=0x9f => usize::from(b & 0x0f),
            0xdc => usize::from(u16::from_be_bytes(self.be()?)),
            0xdd => u32::from_be_bytes(self.be()?) as usize,
            _ => return None,
        };
        (n <= self.left()).then_some(n)
    }

    /// An array of exactly `n` elements (a struct of `n` fields, a tuple).
    pub fn tuple(&mut self, n: usize) -> Option<()> {
        (self.array()? == n).then_some(())
    }

    /// An unsigned integer in the width the serializer picks for it.
    pub fn uint(&mut self) -> Option<u64> {
        let v = match self.byte()? {
            b @ 0x00..=0x7f => u64::from(b),
            0xcc => u64::from(self.byte()?),
            0xcd => u64::from(u16::from_be_bytes(self.be()?)),
            0xce => u64::from(u32::from_be_bytes(self.be()?)),
            0xcf => u64::from_be_bytes(self.be()?),
            _ => return None,
        };
        Some(v)
    }

    pub fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0xc2 => Some(false),
            0xc3 => Some(true),
            _ => None,
        }
    }

    /// A `bin` byte string.
    pub fn bin(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            0xc4 => usize::from(self.byte()?),
            0xc5 => usize::from(u16::from_be_bytes(self.be()?)),
            0xc6 => u32::from_be_bytes(self.be()?) as usize,
            _ => return None,
        };
        self.take(n)
    }

    fn f64(&mut self) -> Option<f64> {
        match self.byte()? {
            0xcb => Some(f64::from_be_bytes(self.be()?)),
            _ => None,
        }
    }

    /// `u128`, as the serializer writes it: 16 big-endian bytes.
    fn u128(&mut self) -> Option<u128> {
        Some(u128::from_be_bytes(self.bin()?.try_into().ok()?))
    }

    pub fn stamp(&mut self) -> Option<Stamp> {
        self.tuple(2)?;
        Some(Stamp::new(self.uint()?, self.uint()?))
    }
}

/// An [`EntryDelta`] (see the module's invariant).
pub fn read_delta(r: &mut Reader) -> Option<EntryDelta> {
    let fields = r.array()?;
    if !(4..=5).contains(&fields) {
        return None;
    }
    let register = if r.nil() { None } else { Some(register(r)?) };
    let contrib = contributions(r)?;
    let contrib_stamp = r.stamp()?;
    let expiry = if r.nil() { None } else { Some(expiry(r)?) };
    let settled = if fields == 5 {
        settled(r)?
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

fn register(r: &mut Reader) -> Option<Register> {
    let fields = r.array()?;
    if !(3..=4).contains(&fields) {
        return None;
    }
    let value = if r.nil() { None } else { Some(r.bin()?.into()) };
    let stamp = r.stamp()?;
    let observed = contributions(r)?;
    let floor = if fields == 4 { r.uint()? } else { 0 };
    Some(Register {
        value,
        stamp,
        observed,
        floor,
    })
}

fn contributions(r: &mut Reader) -> Option<Contributions> {
    let n = r.array()?;
    let mut list = smallvec::SmallVec::with_capacity(n.min(RESERVE_MAX));
    for _ in 0..n {
        list.push(contribution(r)?);
    }
    Some(Contributions::decoded(list))
}

fn contribution(r: &mut Reader) -> Option<Contribution> {
    let fields = r.array()?;
    if !(2..=3).contains(&fields) {
        return None;
    }
    let actor = r.uint()?;
    r.tuple(4)?;
    let totals = Totals {
        int_inc: r.u128()?,
        int_dec: r.u128()?,
        float_inc: r.f64()?,
        float_dec: r.f64()?,
    };
    let epoch = if fields == 3 { r.uint()? } else { 0 };
    Some(Contribution {
        actor,
        totals,
        epoch,
    })
}

fn expiry(r: &mut Reader) -> Option<Expiry> {
    r.tuple(2)?;
    let deadline_ms = if r.nil() { None } else { Some(r.uint()?) };
    Some(Expiry {
        deadline_ms,
        stamp: r.stamp()?,
    })
}

fn settled(r: &mut Reader) -> Option<Settled> {
    let n = r.array()?;
    let mut points = Vec::with_capacity(n.min(RESERVE_MAX));
    for _ in 0..n {
        r.tuple(2)?;
        points.push(Point {
            seen: contribution(r)?,
            at: r.stamp()?,
        });
    }
    Some(Settled::decoded(points))
}

/// Appends `d` as `rmp_serde` encodes it (see the module's invariant).
pub fn write_delta(d: &EntryDelta, out: &mut Vec<u8>) {
    array(out, if d.settled.is_empty() { 4 } else { 5 });
    match &d.register {
        None => out.push(0xc0),
        Some(r) => {
            array(out, if r.floor == 0 { 3 } else { 4 });
            match &r.value {
                None => out.push(0xc0),
                Some(v) => bin(out, v),
            }
            stamp(out, r.stamp);
            write_contributions(out, &r.observed);
            if r.floor != 0 {
                uint(out, r.floor);
            }
        }
    }
    write_contributions(out, &d.contrib);
    stamp(out, d.contrib_stamp);
    match &d.expiry {
        None => out.push(0xc0),
        Some(e) => {
            array(out, 2);
            match e.deadline_ms {
                None => out.push(0xc0),
                Some(ms) => uint(out, ms),
            }
            stamp(out, e.stamp);
        }
    }
    if !d.settled.is_empty() {
        array(out, d.settled.iter().count());
        for p in d.settled.iter() {
            array(out, 2);
            write_contribution(out, &p.seen);
            stamp(out, p.at);
        }
    }
}

fn write_contributions(out: &mut Vec<u8>, cs: &Contributions) {
    array(out, cs.len());
    for c in cs.iter() {
        write_contribution(out, c);
    }
}

#[inline]
fn write_contribution(out: &mut Vec<u8>, c: &Contribution) {
    array(out, 3);
    uint(out, c.actor);
    array(out, 4);
    bin(out, &c.totals.int_inc.to_be_bytes());
    bin(out, &c.totals.int_dec.to_be_bytes());
    for f in [c.totals.float_inc, c.totals.float_dec] {
        out.push(0xcb);
        out.extend_from_slice(&f.to_be_bytes());
    }
    uint(out, c.epoch);
}

#[inline]
pub fn stamp(out: &mut Vec<u8>, s: Stamp) {
    array(out, 2);
    uint(out, s.time);
    uint(out, s.node);
}

/// An array header in the smallest form.
#[inline]
pub fn array(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// An unsigned integer in the smallest form.
#[inline]
pub fn uint(out: &mut Vec<u8>, v: u64) {
    if v < 128 {
        out.push(v as u8);
    } else if v < 1 << 8 {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v < 1 << 16 {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v < 1 << 32 {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// A `bin` byte string in the smallest form.
#[inline]
pub fn bin(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n < 1 << 8 {
        out.extend_from_slice(&[0xc4, n as u8]);
    } else if n < 1 << 16 {
        out.push(0xc5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

/// Arbitrary deltas, invariants aside (the reader checks none, as serde's derive checks none):
/// every integer width, byte strings around the `bin` size limits, every optional part.
#[cfg(test)]
pub(crate) fn any_delta() -> impl proptest::strategy::Strategy<Value = EntryDelta> {
    use proptest::prelude::*;
    let int = || {
        prop_oneof![
            0u64..200,
            Just(255u64),
            Just(256),
            Just(65_535),
            Just(65_536),
            Just(u32::MAX as u64),
            Just(u32::MAX as u64 + 1),
            any::<u64>(),
        ]
    };
    let stamp = move || (int(), int()).prop_map(|(t, n)| Stamp::new(t, n));
    let totals =
        (any::<u128>(), 0u128..10, -1e9f64..1e9, 0.0f64..1.0).prop_map(|(a, b, c, d)| Totals {
            int_inc: a,
            int_dec: b,
            float_inc: c,
            float_dec: d,
        });
    let contribution = (int(), totals, int()).prop_map(|(actor, totals, epoch)| Contribution {
        actor,
        totals,
        epoch,
    });
    let contributions = proptest::collection::vec(contribution.clone(), 0..3)
        .prop_map(|v| Contributions::decoded(v.into()));
    let value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(any::<u8>(), 250..300),
    ];
    let register = (
        proptest::option::of(value),
        stamp(),
        contributions.clone(),
        prop_oneof![Just(0u64), int()],
    )
        .prop_map(|(value, stamp, observed, floor)| Register {
            value: value.map(Into::into),
            stamp,
            observed,
            floor,
        });
    let expiry = (proptest::option::of(int()), stamp())
        .prop_map(|(deadline_ms, stamp)| Expiry { deadline_ms, stamp });
    let settled = proptest::collection::vec((contribution, stamp()), 0..3).prop_map(|v| {
        Settled::decoded(v.into_iter().map(|(seen, at)| Point { seen, at }).collect())
    });
    (
        proptest::option::of(register),
        contributions,
        stamp(),
        proptest::option::of(expiry),
        settled,
    )
        .prop_map(
            |(register, contrib, contrib_stamp, expiry, settled)| EntryDelta {
                register,
                contrib,
                contrib_stamp,
                expiry,
                settled,
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The reader decodes what the serializer writes, as serde does.
        #[test]
        fn the_reader_decodes_what_serde_writes(d in any_delta()) {
            let bytes = rmp_serde::to_vec(&d).unwrap();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(read_delta(&mut r), Some(d));
            prop_assert!(r.at_end());
        }

        /// The writer writes what serde writes, byte for byte.
        #[test]
        fn the_writer_writes_what_serde_writes(d in any_delta()) {
            let mut out = Vec::new();
            write_delta(&d, &mut out);
            prop_assert_eq!(out, rmp_serde::to_vec(&d).unwrap());
        }

        /// Damaged bytes (one byte changed, or cut short): the reader gives up, or agrees with
        /// serde; it never panics.
        #[test]
        fn on_damaged_bytes_the_reader_gives_up_or_agrees_with_serde(
            d in any_delta(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let mut bytes = rmp_serde::to_vec(&d).unwrap();
            let i = at.index(bytes.len());
            if cut { bytes.truncate(i) } else { bytes[i] = byte }
            let mut r = Reader::new(&bytes);
            if let Some(got) = read_delta(&mut r) {
                let consumed = r.pos;
                let mut de = rmp_serde::Deserializer::from_read_ref(&bytes[..consumed]);
                let want: EntryDelta = serde::Deserialize::deserialize(&mut de).unwrap();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn a_length_beyond_the_bytes_left_is_refused_before_allocating() {
        // An array of 2^32-1 entries in five bytes.
        let mut r = Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.array(), None);
        let mut r = Reader::new(&[0xc6, 0xff, 0xff, 0xff, 0xff, 1]);
        assert_eq!(r.bin(), None);
    }
}
