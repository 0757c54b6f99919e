//! Batch frames assembled from entries encoded once: a change replicated to several regions
//! is serialized by the first link that ships it and copied as bytes by the others.
//!
//! Why: serializing every entry of every batch once per link was the largest cost of
//! replication left on a writer replicating to two regions (`docs/benchmarks.md`).
//!
//! The frame is byte for byte what [`encode_with`](super::encode_with) makes of the same batch
//! (a unit test checks it), so receivers cannot tell. It relies on one fact of the encoding:
//! structs are msgpack arrays of their fields in order, and `entries` is the last field of a
//! [`ReplMsg::Batch`], so in the frame of a batch with no entries, the empty array (`0x90`) is
//! followed only by the fields after the message (the promise, then any invalidations).

use super::{frame, pack, EntryDelta, Invalidation, ReplMsg, WireError, CLASS_REPL};
use crate::crdt::msgpack;

/// Appends the encoding of one batch entry (a [`KeyEntry`](super::KeyEntry): `[key, entry]`),
/// written by hand as serde would write it (`crdt::msgpack`; a test below checks the bytes).
pub fn entry_bytes(key: &[u8], entry: &EntryDelta, out: &mut Vec<u8>) {
    out.push(0x92);
    msgpack::bin(out, key);
    msgpack::write_delta(entry, out);
}

/// Encodes `head` (a [`ReplMsg::Batch`] with no entries) carrying `count` entries whose
/// encodings (see [`entry_bytes`]) are concatenated in `body`; compressed as `encode_with`.
pub fn encode_batch(
    head: ReplMsg,
    count: usize,
    body: &[u8],
    delivered_below: u64,
    invalidations: Vec<Invalidation>,
) -> Result<bytes::Bytes, WireError> {
    if !matches!(&head, ReplMsg::Batch { entries, .. } if entries.is_empty()) {
        return Err(WireError::Splice);
    }
    // 1. What follows the message in the frame.
    let mut tail = Vec::with_capacity(16);
    rmp_serde::encode::write(&mut tail, &delivered_below)?;
    if !invalidations.is_empty() {
        rmp_serde::encode::write(&mut tail, &invalidations)?;
    }
    // 2. The frame of the batch with no entries; its empty array sits right before the tail.
    let mut empty = vec![CLASS_REPL];
    rmp_serde::encode::write(&mut empty, &frame(head, delivered_below, invalidations))?;
    let split = empty.len() - tail.len() - 1;
    if empty[split] != 0x90 || empty[split + 1..] != tail[..] {
        return Err(WireError::Splice);
    }
    // 3. Head, the array of `count` entries, tail.
    let mut buf = Vec::with_capacity(empty.len() + 5 + body.len());
    buf.extend_from_slice(&empty[..split]);
    msgpack::array(&mut buf, count);
    buf.extend_from_slice(body);
    buf.extend_from_slice(&empty[split + 1..]);
    Ok(pack(buf))
}

#[cfg(test)]
mod tests {
    use super::super::{decode_with, encode_with, KeyEntry};
    use super::*;
    use crate::crdt::{Entry, Stamp};

    fn entries(n: usize) -> Vec<KeyEntry> {
        (0..n)
            .map(|i| {
                let mut e = Entry::default();
                e.apply_register(
                    Some(format!("value-{i}").as_bytes()),
                    Stamp::new(1 << 40 | i as u64, 7),
                );
                if i % 3 == 0 {
                    e.add_int(9, i as i64 + 1, Stamp::new(1 << 41 | i as u64, 9));
                }
                KeyEntry {
                    key: format!("key:{i}").into_bytes().into(),
                    entry: e.to_delta().into(),
                }
            })
            .collect()
    }

    fn batch(entries: Vec<KeyEntry>) -> ReplMsg {
        ReplMsg::Batch {
            from: 0xfeed,
            session: 77,
            fresh: true,
            batch: 300,
            upto: 1 << 33,
            entries,
        }
    }

    #[test]
    fn spliced_frames_are_the_serde_frames_byte_for_byte() {
        let inv = vec![Invalidation {
            key: b"cold"[..].into(),
            stamp: Stamp::new(5, 6),
        }];
        // Array headers of every width, small (plain), deflated and LZ4 frames, with and
        // without invalidations (V2 and V3).
        for n in [0, 1, 15, 16, 200, 2000, 70_000] {
            for invalidations in [Vec::new(), inv.clone()] {
                let es = entries(n);
                let mut body = Vec::new();
                for e in &es {
                    entry_bytes(&e.key, &e.entry, &mut body);
                }
                let spliced =
                    encode_batch(batch(Vec::new()), n, &body, 1 << 50, invalidations.clone())
                        .unwrap();
                let whole = encode_with(batch(es.clone()), 1 << 50, invalidations.clone()).unwrap();
                assert_eq!(spliced, whole, "{n} entries");
                assert_eq!(
                    decode_with(&spliced).unwrap(),
                    (batch(es), 1 << 50, invalidations)
                );
            }
        }
    }

    #[test]
    fn only_a_batch_without_entries_is_a_head() {
        assert!(matches!(
            encode_batch(batch(entries(1)), 0, &[], 0, Vec::new()),
            Err(WireError::Splice)
        ));
        let ack = ReplMsg::Ack {
            from: 1,
            session: 2,
            batch: 3,
            upto: 4,
            need_resync: false,
        };
        assert!(matches!(
            encode_batch(ack, 0, &[], 0, Vec::new()),
            Err(WireError::Splice)
        ));
    }
}
