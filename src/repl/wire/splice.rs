//! Batch frames: the shared frame every batch goes out in (a msgpack head per link, then the
//! entries packed once by a [`Packer`] in the compact encoding of `crdt::compact`), and, for
//! tests, the msgpack batch frames nodes built before the compact encoding sent.
//!
//! Why: serializing every entry through serde, once per link, was the largest cost of
//! replication left on a writer replicating to two regions; the compact encoding then cut
//! what is encoded, compressed and encrypted (`docs/benchmarks.md`, runs J and M).
//!
//! The head relies on one fact of the encoding: structs are msgpack arrays of their fields in
//! order, and `entries` is the last field of a [`ReplMsg::Batch`], so in the frame of a batch
//! with no entries, the empty array (`0x90`) is followed only by the fields after the message
//! (the promise, then any invalidations). [`encode_batch`] (tests) puts a msgpack entries array
//! there, byte for byte what [`encode_with`](super::encode_with) makes of the whole batch.

use super::{
    compress, frame, Invalidation, KeyEntry, ReplMsg, WireError, CLASS_REPL, CLASS_REPL_SHARED,
    DEFLATE_UPTO_COMPACT,
};
#[cfg(test)]
use super::{pack, EntryDelta};
use crate::crdt::compact;
#[cfg(test)]
use crate::crdt::msgpack;

/// Appends the msgpack of one batch entry (a [`KeyEntry`](super::KeyEntry): `[key, entry]`),
/// written by hand as serde would write it (`crdt::msgpack`; a test below checks the bytes):
/// the entries of nodes built before the compact encoding (tests).
#[cfg(test)]
pub fn entry_bytes(key: &[u8], entry: &EntryDelta, out: &mut Vec<u8>) {
    out.push(0x92);
    msgpack::bin(out, key);
    msgpack::write_delta(entry, out);
}

/// Encodes `head` (a [`ReplMsg::Batch`] with no entries) carrying `count` entries whose
/// encodings (see [`entry_bytes`]) are concatenated in `body`; compressed as `encode_with`:
/// the batch frame of nodes built before the compact encoding (tests).
#[cfg(test)]
pub fn encode_batch(
    head: ReplMsg,
    count: usize,
    body: &[u8],
    delivered_below: u64,
    invalidations: Vec<Invalidation>,
) -> Result<bytes::Bytes, WireError> {
    let (empty, split) = empty_frame(head, delivered_below, invalidations)?;
    // Head, the array of `count` entries, tail.
    let mut buf = Vec::with_capacity(empty.len() + 6 + body.len());
    buf.push(CLASS_REPL);
    buf.extend_from_slice(&empty[..split]);
    msgpack::array(&mut buf, count);
    buf.extend_from_slice(body);
    buf.extend_from_slice(&empty[split + 1..]);
    Ok(pack(buf))
}

/// The msgpack frame of `head` (a [`ReplMsg::Batch`] with no entries) and the position of its
/// empty entries array (`0x90`), which only the fields after the message follow.
pub(super) fn empty_frame(
    head: ReplMsg,
    delivered_below: u64,
    invalidations: Vec<Invalidation>,
) -> Result<(Vec<u8>, usize), WireError> {
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
    let mut empty = Vec::with_capacity(64);
    rmp_serde::encode::write(&mut empty, &frame(head, delivered_below, invalidations))?;
    let split = empty.len() - tail.len() - 1;
    if empty[split] != 0x90 || empty[split + 1..] != tail[..] {
        return Err(WireError::Splice);
    }
    Ok((empty, split))
}

/// The entries of a batch packed once for several links (`repl::fanout`), as nodes built
/// before the compact encoding packed them: the msgpack array of the `count` entries encoded
/// in `body` ([`entry_bytes`]), compressed as a frame body would be, behind its class byte.
/// Receivers still read it (tests).
#[cfg(test)]
pub fn pack_entries(count: usize, body: &[u8]) -> bytes::Bytes {
    let mut frame = vec![CLASS_REPL];
    msgpack::array(&mut frame, count);
    frame.extend_from_slice(body);
    pack(frame)
}

/// Packs the entries of a batch (once for all the links of a fan-out group, `repl::fanout`):
/// the array of the `count` entries a `crdt::compact::Writer` wrote into `body`, compressed as
/// a frame body would be, behind its class byte. [`encode_shared`] frames it for each link.
///
/// A group keeps its packer, so the buffers last from one batch to the next: a batch's are
/// tens of kilobytes, and allocated afresh each time they came as new pages from the kernel
/// (page faults, and jemalloc returning them), about 2% of a writer's CPU.
#[derive(Default)]
pub struct Packer {
    /// The uncompressed array behind its class byte.
    frame: Vec<u8>,
    /// Compressed output on its way to the batch's own allocation.
    compressed: Vec<u8>,
}

impl Packer {
    pub fn pack_entries(&mut self, count: usize, body: &[u8]) -> bytes::Bytes {
        self.frame.clear();
        self.frame.push(CLASS_REPL);
        compact::head(count, &mut self.frame);
        self.frame.extend_from_slice(body);
        compress(&self.frame, &mut self.compressed, DEFLATE_UPTO_COMPACT)
            .unwrap_or_else(|| bytes::Bytes::copy_from_slice(&self.frame))
    }
}

/// The entries packed by a [`Packer`], decoded again: what a member of a fan-out group
/// re-queues when it loses the batch. Read by hand (`wire::fast`); a msgpack array (from a
/// node built before the compact encoding) by serde if that gives up.
pub fn unpack_entries(packed: &[u8]) -> Result<Vec<KeyEntry>, WireError> {
    let array = super::body(packed)?;
    if let Some(entries) = super::fast::entry_array(&array) {
        return Ok(entries);
    }
    if compact::is_compact(&array) {
        return Err(WireError::Shared("malformed compact entries"));
    }
    Ok(rmp_serde::from_slice(&array)?)
}

/// A [`CLASS_REPL_SHARED`] frame: `head` (a [`ReplMsg::Batch`] with no entries) and its
/// promise and invalidations as plain msgpack, then `entries` from [`Packer`]. Layout:
/// class byte, the position of the head's empty array (u32 LE), the head's length (u32 LE),
/// the head, the packed entries. When the entries are msgpack (as nodes built before the
/// compact encoding packed them), putting the unpacked array in place of the empty one gives
/// exactly the body [`encode_batch`] would have sent ([`Unshared::join`]).
pub fn encode_shared(
    head: ReplMsg,
    entries: &[u8],
    delivered_below: u64,
    invalidations: Vec<Invalidation>,
) -> Result<bytes::Bytes, WireError> {
    let (empty, split) = empty_frame(head, delivered_below, invalidations)?;
    let mut out = Vec::with_capacity(9 + empty.len() + entries.len());
    out.push(CLASS_REPL_SHARED);
    out.extend_from_slice(&(split as u32).to_le_bytes());
    out.extend_from_slice(&(empty.len() as u32).to_le_bytes());
    out.extend_from_slice(&empty);
    out.extend_from_slice(entries);
    Ok(out.into())
}

/// A [`CLASS_REPL_SHARED`] frame (class byte included in `frame`) taken apart: the head, the
/// position of its empty entries array, and the entries array unpacked. Every length is
/// checked before it is used.
pub(super) struct Unshared<'a> {
    pub head: &'a [u8],
    pub split: usize,
    pub entries: std::borrow::Cow<'a, [u8]>,
}

pub(super) fn unshare(frame: &[u8]) -> Result<Unshared<'_>, WireError> {
    let word = |at: usize| {
        frame
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or(WireError::Truncated)
    };
    let (split, len) = (word(1)?, word(5)?);
    let head = frame
        .get(9..9usize.saturating_add(len))
        .ok_or(WireError::Truncated)?;
    if head.get(split) != Some(&0x90) {
        return Err(WireError::Shared("no empty entries array in the head"));
    }
    let packed = &frame[9 + len..];
    if packed.first() == Some(&CLASS_REPL_SHARED) {
        return Err(WireError::Shared("nested"));
    }
    let entries = super::body(packed)?;
    if entries.len() + len > crate::mesh::DEFAULT_MAX_FRAME_LEN {
        return Err(WireError::TooLarge(entries.len() + len));
    }
    Ok(Unshared {
        head,
        split,
        entries,
    })
}

impl Unshared<'_> {
    /// The head before the entries array, and the rest after it.
    pub fn around(&self) -> (&[u8], &[u8]) {
        (&self.head[..self.split], &self.head[self.split + 1..])
    }

    /// The body [`encode_batch`] would have sent: the entries array (msgpack) in place of the
    /// empty one.
    pub fn join(&self) -> Vec<u8> {
        let (before, after) = self.around();
        let mut body = Vec::with_capacity(self.head.len() + self.entries.len());
        body.extend_from_slice(before);
        body.extend_from_slice(&self.entries);
        body.extend_from_slice(after);
        body
    }
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

    /// A batch packed once and framed per link decodes as the spliced frame of the same batch,
    /// whatever the size (plain, deflated, LZ4 entries) and with invalidations (V3).
    #[test]
    fn shared_frames_decode_as_the_spliced_frame() {
        let inv = vec![Invalidation {
            key: b"cold"[..].into(),
            stamp: Stamp::new(5, 6),
        }];
        for n in [0, 1, 16, 200, 2000, 70_000] {
            for invalidations in [Vec::new(), inv.clone()] {
                let es = entries(n);
                let mut body = Vec::new();
                for e in &es {
                    entry_bytes(&e.key, &e.entry, &mut body);
                }
                let packed = pack_entries(n, &body);
                let shared =
                    encode_shared(batch(Vec::new()), &packed, 1 << 50, invalidations.clone())
                        .unwrap();
                assert_eq!(shared[0], CLASS_REPL_SHARED);
                // Read in place by hand, not joined and left to serde.
                let parts = unshare(&shared).unwrap();
                let (before, after) = parts.around();
                assert_eq!(
                    super::super::fast::shared_batch(before, &parts.entries, after),
                    Some((batch(es.clone()), 1 << 50, invalidations.clone()))
                );
                assert_eq!(
                    decode_with(&shared).unwrap(),
                    (batch(es), 1 << 50, invalidations),
                    "{n} entries"
                );
            }
        }
    }

    /// The entries of a writer's group batch, packed compact (`crdt::compact`): fewer bytes
    /// than msgpack, and the frame decodes to the same batch, whatever its size (plain,
    /// deflated, LZ4) and with invalidations (V3). A member that loses it unpacks the same
    /// entries.
    #[test]
    fn compact_shared_frames_decode_as_the_batch() {
        let inv = vec![Invalidation {
            key: b"cold"[..].into(),
            stamp: Stamp::new(5, 6),
        }];
        let mut packer = Packer::default();
        for n in [0, 1, 16, 200, 2000, 70_000] {
            for invalidations in [Vec::new(), inv.clone()] {
                let es = entries(n);
                let (mut body, mut msgpack) = (Vec::new(), Vec::new());
                let mut writer = compact::Writer::default();
                for e in &es {
                    writer.entry(&e.key, &e.entry, &mut body);
                    entry_bytes(&e.key, &e.entry, &mut msgpack);
                }
                if n > 0 {
                    assert!(body.len() < msgpack.len(), "{n} entries");
                }
                let packed = packer.pack_entries(n, &body);
                assert_eq!(unpack_entries(&packed).unwrap(), es);
                let shared =
                    encode_shared(batch(Vec::new()), &packed, 1 << 50, invalidations.clone())
                        .unwrap();
                assert_eq!(
                    decode_with(&shared).unwrap(),
                    (batch(es), 1 << 50, invalidations),
                    "{n} entries"
                );
            }
        }
    }

    /// Every cut and every changed byte of a shared frame, its entries in msgpack or compact,
    /// is an error or a frame decoded as serde (msgpack) or the compact reader would; never a
    /// panic or an allocation the frame's size does not bound.
    #[test]
    fn damaged_shared_frames_are_refused_or_decoded() {
        let es = entries(40);
        let (mut body, mut compact_body) = (Vec::new(), Vec::new());
        let mut writer = compact::Writer::default();
        for e in &es {
            entry_bytes(&e.key, &e.entry, &mut body);
            writer.entry(&e.key, &e.entry, &mut compact_body);
        }
        let compact_frame = encode_shared(
            batch(Vec::new()),
            &Packer::default().pack_entries(40, &compact_body),
            3,
            Vec::new(),
        )
        .unwrap();
        for i in 0..compact_frame.len() {
            assert!(decode_with(&compact_frame[..i]).is_err(), "cut at {i}");
            for byte in [0x00, 0x01, 0x05, 0x90, 0xc1, 0xff] {
                let mut f = compact_frame.to_vec();
                f[i] = byte;
                let _ = decode_with(&f);
            }
        }
        let frame =
            encode_shared(batch(Vec::new()), &pack_entries(40, &body), 3, Vec::new()).unwrap();
        for i in 0..frame.len() {
            let _ = decode_with(&frame[..i]);
            for byte in [0x00, 0x05, 0x90, 0xff] {
                let mut f = frame.to_vec();
                f[i] = byte;
                let _ = decode_with(&f);
            }
        }
        let mut nested = frame.to_vec();
        nested.extend_from_slice(&frame);
        let head_end = 9 + u32::from_le_bytes([frame[5], frame[6], frame[7], frame[8]]) as usize;
        nested.truncate(head_end);
        nested.extend_from_slice(&frame);
        assert!(matches!(
            decode_with(&nested),
            Err(WireError::Shared("nested"))
        ));
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
