//! Batch frames decoded by hand: the receiving side of the hot path.
//!
//! A region receiving a peer's stream of writes decodes every entry of every batch; serde's
//! generic path was a sixth of its CPU per write (`crdt::msgpack`). [`batch`] reads the frames
//! this crate's encoder writes for a [`ReplMsg::Batch`] (V2, or V3 with invalidations) and
//! returns `None` for anything else, other messages and any byte it does not expect included;
//! [`decode_with`](super::decode_with) then decodes with serde, which decides. So the result is
//! always serde's (tested on arbitrary batches and on damaged frames).

use super::{Invalidation, KeyEntry, ReplMsg};
use crate::crdt::compact;
use crate::crdt::msgpack::{read_delta, Reader, RESERVE_MAX};
use std::sync::Arc;

/// `{"V2": [msg, delivered_below]}` or `{"V3": [msg, delivered_below, invalidations]}` with
/// msg `{"Batch": [from, session, fresh, batch, upto, entries]}`, as a whole frame body.
pub(super) fn batch(body: &[u8]) -> Option<(ReplMsg, u64, Vec<Invalidation>)> {
    let mut r = Reader::new(body);
    let head = head(&mut r)?;
    let entries = entries(&mut r)?;
    tail(head, entries, &mut r)
}

/// The same batch in the three pieces of a shared frame (`wire::splice::unshare`): the body
/// before the entries array, the array, and the body after it. Whatever it decodes, [`batch`]
/// decodes the same from the three joined (each piece is read to its end, and the reader
/// never looks past what it consumes).
pub(super) fn shared_batch(
    before: &[u8],
    array: &[u8],
    after: &[u8],
) -> Option<(ReplMsg, u64, Vec<Invalidation>)> {
    let mut r = Reader::new(before);
    let head = head(&mut r)?;
    r.at_end().then_some(())?;
    let entries = entry_array(array)?;
    tail(head, entries, &mut Reader::new(after))
}

/// The frame's fields before the entries: (V3, from, session, fresh, batch, upto).
type Head = (bool, u64, u64, bool, u64, u64);

fn head(r: &mut Reader) -> Option<Head> {
    r.expect(&[0x81, 0xa2, b'V'])?;
    let v3 = r.expect(b"3").is_some();
    if !v3 {
        r.expect(b"2")?;
    }
    r.expect(&[if v3 { 0x93 } else { 0x92 }])?;
    r.expect(&[0x81, 0xa5, b'B', b'a', b't', b'c', b'h', 0x96])?;
    let (from, session, fresh) = (r.uint()?, r.uint()?, r.bool()?);
    let (batch, upto) = (r.uint()?, r.uint()?);
    Some((v3, from, session, fresh, batch, upto))
}

fn entries(r: &mut Reader) -> Option<Vec<KeyEntry>> {
    let n = r.array()?;
    let mut entries = Vec::with_capacity(n.min(RESERVE_MAX));
    for _ in 0..n {
        r.tuple(2)?;
        let key = Arc::from(r.bin()?);
        let entry = Arc::new(read_delta(r)?);
        entries.push(KeyEntry { key, entry });
    }
    Some(entries)
}

/// A bare entries array (`wire::Packer`, unpacked), read to its end: compact
/// (`crdt::compact`), or msgpack as nodes built before it packed them.
pub(super) fn entry_array(array: &[u8]) -> Option<Vec<KeyEntry>> {
    if compact::is_compact(array) {
        return compact::read_entries(array, |key, delta| KeyEntry {
            key: Arc::from(key),
            entry: Arc::new(delta),
        });
    }
    let mut r = Reader::new(array);
    let entries = entries(&mut r)?;
    r.at_end().then_some(entries)
}

/// The fields after the entries, to the end of the body.
fn tail(
    (v3, from, session, fresh, batch, upto): Head,
    entries: Vec<KeyEntry>,
    r: &mut Reader,
) -> Option<(ReplMsg, u64, Vec<Invalidation>)> {
    let delivered_below = r.uint()?;
    let mut invalidations = Vec::new();
    if v3 {
        let n = r.array()?;
        invalidations.reserve(n.min(RESERVE_MAX));
        for _ in 0..n {
            r.tuple(2)?;
            let key = Box::from(r.bin()?);
            invalidations.push(Invalidation {
                key,
                stamp: r.stamp()?,
            });
        }
    }
    r.at_end().then_some(())?;
    let msg = ReplMsg::Batch {
        from,
        session,
        fresh,
        batch,
        upto,
        entries,
    };
    Some((msg, delivered_below, invalidations))
}

#[cfg(test)]
mod tests {
    use super::super::{encode_with, CLASS_REPL};
    use super::*;
    use crate::crdt::msgpack::any_delta;
    use crate::crdt::Stamp;
    use proptest::prelude::*;

    fn serde_decode(body: &[u8]) -> Option<(ReplMsg, u64, Vec<Invalidation>)> {
        Some(super::super::unframe(rmp_serde::from_slice(body).ok()?))
    }

    /// The uncompressed body of a frame (class byte dropped).
    fn body(msg: ReplMsg, promise: u64, inv: Vec<Invalidation>) -> Vec<u8> {
        let mut buf = vec![CLASS_REPL];
        rmp_serde::encode::write(&mut buf, &super::super::frame(msg, promise, inv)).unwrap();
        buf.remove(0);
        buf
    }

    fn any_batch() -> impl Strategy<Value = (ReplMsg, u64, Vec<Invalidation>)> {
        let entry =
            (proptest::collection::vec(any::<u8>(), 0..24), any_delta()).prop_map(|(key, d)| {
                KeyEntry {
                    key: key.into(),
                    entry: Arc::new(d),
                }
            });
        let inv = (
            proptest::collection::vec(any::<u8>(), 0..8),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(key, t, n)| Invalidation {
                key: key.into(),
                stamp: Stamp::new(t, n),
            });
        (
            (
                any::<u64>(),
                any::<u64>(),
                any::<bool>(),
                any::<u64>(),
                any::<u64>(),
            ),
            proptest::collection::vec(entry, 0..20),
            any::<u64>(),
            proptest::collection::vec(inv, 0..3),
        )
            .prop_map(
                |((from, session, fresh, batch, upto), entries, promise, inv)| {
                    let msg = ReplMsg::Batch {
                        from,
                        session,
                        fresh,
                        batch,
                        upto,
                        entries,
                    };
                    (msg, promise, inv)
                },
            )
    }

    proptest! {
        /// Every batch frame the encoder writes (V2, V3) decodes by hand exactly as by serde.
        #[test]
        fn batch_frames_decode_by_hand_as_by_serde((msg, promise, inv) in any_batch()) {
            let body = body(msg.clone(), promise, inv.clone());
            prop_assert_eq!(batch(&body), Some((msg, promise, inv)));
        }

        /// The pieces of a shared frame (the head around its empty array, and the entries
        /// array) decode by hand to the batch, whatever its entries.
        #[test]
        fn shared_pieces_decode_by_hand((msg, promise, inv) in any_batch()) {
            let ReplMsg::Batch { from, session, fresh, batch: n, upto, entries } = msg.clone() else {
                unreachable!("any_batch makes batches");
            };
            let head = ReplMsg::Batch { from, session, fresh, batch: n, upto, entries: Vec::new() };
            let (empty, split) = super::super::splice::empty_frame(head, promise, inv.clone()).unwrap();
            let mut array = Vec::new();
            crate::crdt::msgpack::array(&mut array, entries.len());
            for e in &entries {
                super::super::entry_bytes(&e.key, &e.entry, &mut array);
            }
            prop_assert_eq!(
                shared_batch(&empty[..split], &array, &empty[split + 1..]),
                Some((msg, promise, inv))
            );
        }

        /// Cut in three anywhere, a body decodes in pieces as it decodes whole, or not at all.
        #[test]
        fn pieces_decode_as_the_whole_or_not_at_all(
            (msg, promise, inv) in any_batch(),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
        ) {
            let body = body(msg, promise, inv);
            let (i, j) = (a.index(body.len() + 1), b.index(body.len() + 1));
            let (i, j) = (i.min(j), i.max(j));
            if let Some(got) = shared_batch(&body[..i], &body[i..j], &body[j..]) {
                prop_assert_eq!(Some(got), batch(&body));
            }
        }

        /// A damaged frame: given up (serde decides), or decoded as serde decodes it.
        #[test]
        fn damaged_frames_are_given_up_or_decoded_as_serde_does(
            (msg, promise, inv) in any_batch(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let mut body = body(msg, promise, inv);
            let i = at.index(body.len());
            if cut { body.truncate(i) } else { body[i] = byte }
            if let Some(got) = batch(&body) {
                prop_assert_eq!(Some(got), serde_decode(&body));
            }
        }
    }

    #[test]
    fn other_messages_are_left_to_serde_and_still_decode() {
        let ack = ReplMsg::Ack {
            from: 1,
            session: 2,
            batch: 3,
            upto: 4,
            need_resync: true,
        };
        let frame = encode_with(ack.clone(), 9, Vec::new()).unwrap();
        assert_eq!(batch(&frame[1..]), None);
        assert_eq!(super::super::decode(&frame).unwrap(), (ack, 9));
    }
}
