//! The replication wire format: versioned msgpack frames (`rmp-serde`) carried by the mesh.
//!
//! The first byte of every mesh frame names its traffic class ([`CLASS_REPL`] here); the rest
//! is one [`ReplFrame`]. New fields go into a new variant (`V2`), never into `V1`, so nodes of
//! different versions can tell what they cannot read instead of misreading it.
//!
//! The format is serde's; the hot paths read and write it by hand without changing a byte:
//! batch entries are encoded by `crdt::msgpack` (`splice`) and batch frames decoded by `fast`,
//! which leaves anything it does not expect to serde.
//!
//! `ReplMsg::Digests` and `ReplMsg::DigestDiff` (repair) were added as new message variants,
//! and the deflate class [`CLASS_REPL_DEFLATE`] as a new class byte: a node built before them
//! drops such a frame as undecodable (logged), and the asking link falls back to sending the
//! slots in full after three unanswered questions. Deflated batches cannot be read by such a
//! node at all: upgrade every node of a deployment before relying on mixed versions.
//!
//! The shared class [`CLASS_REPL_SHARED`] came the same way: a batch built once for the region
//! links of a fan-out group (`repl::link::fanout`) carries its packed entries array behind a
//! plain head per link ([`encode_shared`]). The receiver reads the head and the unpacked array
//! in place (`fast::shared_batch`); what the hand reader gives up on is joined into exactly the
//! body [`encode_batch`] would have sent and left to serde, so the result is the same as for
//! that body. A node built before it drops such frames (unknown class, logged).
//!
//! The packed entries of a shared frame then took their own encoding (`crdt::compact`), about
//! 55% of msgpack's bytes for a SET and 30% for an INCR, so a writer compresses, encrypts and
//! sends fewer; and every batch, a group's or a link's own, now goes out in a shared frame.
//! The compact array starts with a byte msgpack never uses, so a receiver tells the two apart
//! and still reads msgpack arrays from nodes built before it; only the hand reader reads it,
//! and a compact array it refuses is an error, never serde's to guess at. A node built
//! before it cannot decode such frames (logged as undecodable): upgrade every node of a
//! deployment together, as for the fields below.
//!
//! One field went inside the entries instead: each actor's counter contribution carries its
//! epoch (`crdt::counter`) as a trailing element, `[actor, totals, epoch]`, defaulting to 0. Every
//! variant decodes frames from nodes built before it (their totals count in epoch 0); a node
//! built before it cannot decode a frame carrying epochs (an array-length error, never a
//! misread) and drops it with a warning. Upgrade every node of a deployment together.
//!
//! Two more went inside the entries the same way, trailing and left out at their default, so an
//! ordinary write encodes byte for byte as before: a register's `floor` and an entry delta's
//! `settled` (`crdt::entry` floors, docs/semantics.md). A floor rides only register writes of
//! a key whose counter entry some node collected (the first write after it, and those after
//! that within the hour), `settled` only full states of keys whose tombstone a later write
//! replaced. A node built before them cannot decode a frame carrying
//! either (an array-length error, never a misread: tested below) and drops it with a warning.

use crate::crdt::EntryDelta;
use serde::{Deserialize, Serialize};

/// Mesh frame class byte of replication traffic.
pub const CLASS_REPL: u8 = 2;
/// The same, with the msgpack body compressed (LZ4 block, size prepended).
pub const CLASS_REPL_LZ4: u8 = 3;
/// The same, with the msgpack body compressed by raw deflate (size prepended, 4 bytes LE).
pub const CLASS_REPL_DEFLATE: u8 = 4;
/// A batch whose entries were packed once for several links (`repl::link::fanout`), with a
/// plain head per link: see [`encode_shared`].
pub const CLASS_REPL_SHARED: u8 = 5;
/// Bodies shorter than this are sent as they are: compression would not pay.
const COMPRESS_FROM: usize = 96;
/// Bodies up to this size are deflated (level 1), larger ones go through LZ4. A small batch (a
/// few writes at a moderate rate) has too few repeats for LZ4, but its values and stamps still
/// have far less entropy than 8 bits a byte, which deflate's Huffman stage takes; large
/// batches (a saturated link) compress well with LZ4 at a fraction of deflate's CPU.
const DEFLATE_UPTO: usize = 16 << 10;
/// [`DEFLATE_UPTO`] for compact entries (`crdt::compact`, every batch's): they take
/// a third to a half of msgpack's bytes, so as many entries (as many repeats for LZ4) fit in
/// that much less. With 16 KiB, a writer saturated with INCRs deflated most of its batches
/// (deflate was 1% of its CPU).
const DEFLATE_UPTO_COMPACT: usize = 6 << 10;

mod fast;
mod splice;
#[cfg(test)]
pub use splice::{encode_batch, entry_bytes, pack_entries};
pub use splice::{encode_shared, unpack_entries, Packer};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplFrame {
    V1(ReplMsg),
    /// V1 plus the sender's delivery promise: every delta the sender would send on this link
    /// stamped at or below `delivered_below` (NTP64 time) has already been acknowledged by the
    /// receiver. It rides every frame so it keeps pace with acks; V1 frames promise nothing (0).
    V2 {
        msg: ReplMsg,
        delivered_below: u64,
    },
    /// V2 plus invalidations (`repl-scope hot`, see `repl::scope`): keys whose changes this
    /// batch reports by key and stamp only. Sent only when a batch carries some, so nodes that
    /// never scope keep speaking V2.
    V3 {
        msg: ReplMsg,
        delivered_below: u64,
        invalidations: Vec<Invalidation>,
    },
}

/// A cold key changed: the receiver drops its copy if every stamp of it is older than `stamp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invalidation {
    #[serde(with = "serde_bytes")]
    pub key: Box<[u8]>,
    pub stamp: crate::crdt::Stamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplMsg {
    /// Full entries of changed keys, sent by `from` on one link session.
    Batch {
        from: u64,
        session: u64,
        /// The first batch of a session: the receiver records the session as known.
        fresh: bool,
        /// Batch number within the session (acks name it).
        batch: u64,
        /// Every change the sender published up to this offset is in this batch or an earlier
        /// one of the session (0 when the batch does not complete anything).
        upto: u64,
        entries: Vec<KeyEntry>,
    },
    /// The receiver merged `batch`. `need_resync`: it does not know `session` (it restarted
    /// since the session began), so the sender must start over with a new session, repaired by
    /// digests.
    Ack {
        from: u64,
        session: u64,
        batch: u64,
        upto: u64,
        need_resync: bool,
    },
    /// Repair (see `repl::repair`): the sender's digests of ranges of its link's slots, as
    /// (first slot, number of slots, XOR of their digests). The receiver compares each with its
    /// own and answers [`ReplMsg::DigestDiff`]. Stateless on the receiver.
    Digests {
        from: u64,
        session: u64,
        /// Names the question, so a late answer to an earlier one is ignored.
        ask: u64,
        ranges: Vec<(u16, u16, u64)>,
    },
    /// The ranges of [`ReplMsg::Digests`] `ask` whose digest differs from the receiver's.
    DigestDiff {
        from: u64,
        session: u64,
        ask: u64,
        differ: Vec<(u16, u16)>,
    },
}

/// One key's delta in a batch. Shared (`Arc`) with the outboxes of every link that sends it,
/// so a change replicated to several regions is never copied per link; the encoding is that of
/// a plain byte string and entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyEntry {
    #[serde(with = "arc_bytes")]
    pub key: std::sync::Arc<[u8]>,
    pub entry: std::sync::Arc<EntryDelta>,
}

/// `Arc<[u8]>` as a msgpack byte string (what `serde_bytes` does for `Box<[u8]>`).
mod arc_bytes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(key: &Arc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(&key[..], s)
    }

    /// Straight from the frame's bytes into the `Arc`: going through a `ByteBuf` cost every
    /// received key a second allocation and copy.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[u8]>, D::Error> {
        d.deserialize_bytes(ArcBytes)
    }

    struct ArcBytes;

    impl<'de> Visitor<'de> for ArcBytes {
        type Value = Arc<[u8]>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            Ok(Arc::from(v))
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Arc::from(v.as_bytes()))
        }

        /// An array of small integers, as a plain `Vec<u8>` field would have been encoded.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<u8>()? {
                v.push(b);
            }
            Ok(v.into())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not a replication frame (class byte {0})")]
    Class(u8),
    #[error("empty frame")]
    Empty,
    #[error("replication frame cut short")]
    Truncated,
    #[error("undecompressable replication frame: {0}")]
    Decompress(#[from] lz4_flex::block::DecompressError),
    #[error("undeflatable replication frame: {0}")]
    Inflate(String),
    #[error("compressed replication frame claims {0} bytes (more than a frame may hold)")]
    TooLarge(usize),
    #[error("undecodable replication frame: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("unencodable replication frame: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("a batch frame cannot be assembled from encoded entries")]
    Splice,
    #[error("malformed shared-entries replication frame: {0}")]
    Shared(&'static str),
}

/// Encodes a message; bodies of [`COMPRESS_FROM`] bytes or more are compressed (deflate up to
/// [`DEFLATE_UPTO`], LZ4 beyond) when that saves at least an eighth.
pub fn encode(msg: ReplMsg, delivered_below: u64) -> Result<bytes::Bytes, WireError> {
    encode_with(msg, delivered_below, Vec::new())
}

/// [`encode`] with invalidations (a V3 frame when there are any).
pub fn encode_with(
    msg: ReplMsg,
    delivered_below: u64,
    invalidations: Vec<Invalidation>,
) -> Result<bytes::Bytes, WireError> {
    let mut buf = vec![CLASS_REPL];
    rmp_serde::encode::write(&mut buf, &frame(msg, delivered_below, invalidations))?;
    Ok(pack(buf))
}

/// The frame of a message: V2, or V3 when there are invalidations.
fn frame(msg: ReplMsg, delivered_below: u64, invalidations: Vec<Invalidation>) -> ReplFrame {
    if invalidations.is_empty() {
        ReplFrame::V2 {
            msg,
            delivered_below,
        }
    } else {
        ReplFrame::V3 {
            msg,
            delivered_below,
            invalidations,
        }
    }
}

/// Compresses an encoded frame (class byte and msgpack body) when that pays: deflate up to
/// [`DEFLATE_UPTO`], LZ4 beyond, when it saves at least an eighth.
fn pack(buf: Vec<u8>) -> bytes::Bytes {
    compress(&buf, &mut Vec::new(), DEFLATE_UPTO).unwrap_or_else(|| buf.into())
}

/// The compressed frame of `frame` (class byte and body), in one allocation of its exact size,
/// or `None` when compression does not pay (see [`pack`]; deflated up to `deflate_upto`
/// bytes). `scratch` takes LZ4's output on the way, so a caller that keeps it allocates it
/// once.
fn compress(frame: &[u8], scratch: &mut Vec<u8>, deflate_upto: usize) -> Option<bytes::Bytes> {
    let body = frame.get(1..)?;
    let pays = |packed: usize| packed < frame.len() - frame.len() / 8;
    if frame.len() > COMPRESS_FROM && frame.len() <= deflate_upto {
        let packed = miniz_oxide::deflate::compress_to_vec(body, 1);
        if !pays(packed.len() + 5) {
            return None;
        }
        let mut out = Vec::with_capacity(packed.len() + 5);
        out.push(CLASS_REPL_DEFLATE);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&packed);
        Some(out.into())
    } else if frame.len() > deflate_upto {
        // Class byte and size (as `compress_prepend_size` writes it), then the block.
        let room = 5 + lz4_flex::block::get_maximum_output_size(body.len());
        if scratch.len() < room {
            scratch.resize(room, 0);
        }
        let n = lz4_flex::block::compress_into(body, &mut scratch[5..]).ok()?;
        if !pays(n + 5) {
            return None;
        }
        scratch[0] = CLASS_REPL_LZ4;
        scratch[1..5].copy_from_slice(&(body.len() as u32).to_le_bytes());
        Some(bytes::Bytes::copy_from_slice(&scratch[..n + 5]))
    } else {
        None
    }
}

/// Decodes a frame into its message and delivery promise; checks the claimed size of a
/// compressed body before allocating it.
pub fn decode(frame: &[u8]) -> Result<(ReplMsg, u64), WireError> {
    decode_with(frame).map(|(m, p, _)| (m, p))
}

/// [`decode`], also returning the frame's invalidations (empty before V3).
pub fn decode_with(frame: &[u8]) -> Result<(ReplMsg, u64, Vec<Invalidation>), WireError> {
    let body = match frame.first() {
        Some(&CLASS_REPL_SHARED) => {
            // Read in place; joined into one body only for what the hand reader gives up on.
            let parts = splice::unshare(frame)?;
            let (before, after) = parts.around();
            if let Some(decoded) = fast::shared_batch(before, &parts.entries, after) {
                return Ok(decoded);
            }
            // Only the hand reader reads compact entries: there is nothing to fall back to.
            if crate::crdt::compact::is_compact(&parts.entries) {
                return Err(WireError::Shared("malformed compact entries or head"));
            }
            parts.join().into()
        }
        _ => body(frame)?,
    };
    if let Some(decoded) = fast::batch(&body) {
        return Ok(decoded);
    }
    Ok(unframe(rmp_serde::from_slice(&body)?))
}

/// The msgpack body of a plain or compressed frame; checks the claimed size of a compressed
/// body before allocating it.
fn body(frame: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, WireError> {
    Ok(match frame.first() {
        None => return Err(WireError::Empty),
        Some(&CLASS_REPL) => frame[1..].into(),
        Some(&CLASS_REPL_LZ4) => {
            let claimed = frame
                .get(1..5)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
            if claimed > crate::mesh::DEFAULT_MAX_FRAME_LEN {
                return Err(WireError::TooLarge(claimed));
            }
            lz4_flex::block::decompress_size_prepended(&frame[1..])?.into()
        }
        Some(&CLASS_REPL_DEFLATE) => {
            let claimed = frame
                .get(1..5)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
            if claimed > crate::mesh::DEFAULT_MAX_FRAME_LEN {
                return Err(WireError::TooLarge(claimed));
            }
            // A frame cut inside its size: slicing past its end panicked the peer's handler.
            let packed = frame.get(5..).ok_or(WireError::Truncated)?;
            miniz_oxide::inflate::decompress_to_vec_with_limit(packed, claimed)
                .map_err(|e| WireError::Inflate(format!("{:?}", e.status)))?
                .into()
        }
        Some(&c) => return Err(WireError::Class(c)),
    })
}

/// A frame's message, delivery promise and invalidations, whatever its version.
fn unframe(frame: ReplFrame) -> (ReplMsg, u64, Vec<Invalidation>) {
    match frame {
        ReplFrame::V1(m) => (m, 0, Vec::new()),
        ReplFrame::V2 {
            msg,
            delivered_below,
        } => (msg, delivered_below, Vec::new()),
        ReplFrame::V3 {
            msg,
            delivered_below,
            invalidations,
        } => (msg, delivered_below, invalidations),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ordinary register write encodes exactly as before floors existed; one with a floor
    /// (or settled levels) is refused by a reader built before them, never misread.
    #[test]
    fn floors_cost_an_ordinary_write_no_byte_and_old_readers_refuse_them() {
        use crate::crdt::{Contributions, Entry, Expiry, Stamp};
        #[derive(Serialize, Deserialize)]
        struct OldRegister {
            #[serde(with = "serde_bytes")]
            value: Option<Box<[u8]>>,
            stamp: Stamp,
            observed: Contributions,
        }
        #[derive(Serialize, Deserialize)]
        struct OldDelta {
            register: Option<OldRegister>,
            contrib: Contributions,
            contrib_stamp: Stamp,
            expiry: Option<Expiry>,
        }
        let old = |d: &EntryDelta| OldDelta {
            register: d.register.as_ref().map(|r| OldRegister {
                value: r.value.clone(),
                stamp: r.stamp,
                observed: r.observed.clone(),
            }),
            contrib: d.contrib.clone(),
            contrib_stamp: d.contrib_stamp,
            expiry: d.expiry,
        };
        let mut e = Entry::empty();
        e.add_int(7, 3, Stamp::new(1 << 40, 7));
        let set = e.write_register(Some(&b"5"[..]), Stamp::new(2 << 40, 1));
        let bytes = rmp_serde::to_vec(&set).unwrap();
        assert_eq!(bytes, rmp_serde::to_vec(&old(&set)).unwrap());
        let del = e.write_register(None, Stamp::new(3 << 40, 1));
        assert_eq!(
            rmp_serde::to_vec(&del).unwrap(),
            rmp_serde::to_vec(&old(&del)).unwrap()
        );
        let floored =
            Entry::empty().write_register_floored(Some(b"5"), Stamp::new(4 << 40, 2), 3 << 40);
        let bytes = rmp_serde::to_vec(&floored).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<EntryDelta>(&bytes).unwrap(),
            floored
        );
        assert!(rmp_serde::from_slice::<OldDelta>(&bytes).is_err());
        e.write_register(Some(&b"6"[..]), Stamp::new(5 << 40, 1));
        let full = e.to_delta();
        assert!(!full.settled.is_empty(), "the DEL settled under the SET");
        let bytes = rmp_serde::to_vec(&full).unwrap();
        assert_eq!(rmp_serde::from_slice::<EntryDelta>(&bytes).unwrap(), full);
        assert!(rmp_serde::from_slice::<OldDelta>(&bytes).is_err());
    }

    #[test]
    fn a_key_decodes_from_a_byte_string_a_string_or_an_array_of_bytes() {
        let entry = std::sync::Arc::new(EntryDelta::default());
        let want = KeyEntry {
            key: std::sync::Arc::from(&b"k\xff"[..]),
            entry: entry.clone(),
        };
        let bin = rmp_serde::to_vec(&want).unwrap();
        assert_eq!(rmp_serde::from_slice::<KeyEntry>(&bin).unwrap(), want);
        #[derive(Serialize)]
        struct AsArray(Vec<u8>, std::sync::Arc<EntryDelta>);
        let arr = rmp_serde::to_vec(&AsArray(b"k\xff".to_vec(), entry.clone())).unwrap();
        assert_ne!(arr, bin);
        assert_eq!(rmp_serde::from_slice::<KeyEntry>(&arr).unwrap(), want);
        #[derive(Serialize)]
        struct AsStr(&'static str, std::sync::Arc<EntryDelta>);
        let s = rmp_serde::to_vec(&AsStr("key", entry.clone())).unwrap();
        assert_eq!(
            &rmp_serde::from_slice::<KeyEntry>(&s).unwrap().key[..],
            b"key"
        );
        // Anything else is an error, not a panic.
        #[derive(Serialize)]
        struct AsInt(u64, std::sync::Arc<EntryDelta>);
        let i = rmp_serde::to_vec(&AsInt(7, entry)).unwrap();
        assert!(rmp_serde::from_slice::<KeyEntry>(&i).is_err());
    }

    #[test]
    fn frames_round_trip_and_garbage_is_an_error() {
        let m = ReplMsg::Ack {
            from: 7,
            session: 1,
            batch: 2,
            upto: 3,
            need_resync: false,
        };
        assert_eq!(
            decode(&encode(m.clone(), 5).unwrap()).unwrap(),
            (m.clone(), 5)
        );
        // A V1 frame (an older node) still decodes, with no delivery promise.
        let mut v1 = vec![CLASS_REPL];
        rmp_serde::encode::write(&mut v1, &ReplFrame::V1(m.clone())).unwrap();
        assert_eq!(decode(&v1).unwrap(), (m, 0));
        assert!(decode(&[CLASS_REPL, 0xff, 0x00]).is_err());
        assert!(decode(&[9, 1, 2]).is_err());
        assert!(decode(&[]).is_err());
        // A compressed frame claiming 4 GiB is refused before any allocation.
        assert!(matches!(
            decode(&[CLASS_REPL_LZ4, 0xff, 0xff, 0xff, 0xff, 0]),
            Err(WireError::TooLarge(_))
        ));
        assert!(decode(&[CLASS_REPL_LZ4, 4, 0, 0, 0, 0xff]).is_err());
    }

    #[test]
    fn small_batches_are_deflated_and_garbage_is_refused() {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        let entries: Vec<KeyEntry> = (0..20)
            .map(|i| {
                let hex: String = (0..32)
                    .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap())
                    .collect();
                let mut e = crate::crdt::Entry::default();
                e.apply_register(
                    Some(hex.as_bytes()),
                    crate::crdt::Stamp::new(1 << 40 | i, 7),
                );
                KeyEntry {
                    key: format!("key:{}", rng.gen_range(0..100_000))
                        .into_bytes()
                        .into(),
                    entry: e.to_delta().into(),
                }
            })
            .collect();
        let m = ReplMsg::Batch {
            from: 1,
            session: 2,
            fresh: false,
            batch: 3,
            upto: 4,
            entries,
        };
        let frame = encode(m.clone(), 9).unwrap();
        assert_eq!(frame[0], CLASS_REPL_DEFLATE);
        assert_eq!(decode(&frame).unwrap(), (m, 9));
        assert!(matches!(
            decode(&[CLASS_REPL_DEFLATE, 0xff, 0xff, 0xff, 0xff, 0]),
            Err(WireError::TooLarge(_))
        ));
        let mut short = frame.to_vec();
        short[1] = 3; // claims fewer bytes than it inflates to
        short[2] = 0;
        assert!(decode(&short).is_err());
        // Cut inside the size: refused (it used to panic the handler).
        for cut in 0..5 {
            assert!(decode(&frame[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn repetitive_batches_are_compressed_and_decode_the_same() {
        let entry = crate::crdt::Entry::default().to_delta();
        let entries: Vec<KeyEntry> = (0..1000)
            .map(|i| KeyEntry {
                key: format!("user:session:{i:06}").into_bytes().into(),
                entry: entry.clone().into(),
            })
            .collect();
        let m = ReplMsg::Batch {
            from: 1,
            session: 2,
            fresh: false,
            batch: 3,
            upto: 4,
            entries,
        };
        let frame = encode(m.clone(), 9).unwrap();
        assert_eq!(frame[0], CLASS_REPL_LZ4);
        let mut plain = vec![CLASS_REPL];
        let v2 = ReplFrame::V2 {
            msg: m.clone(),
            delivered_below: 9,
        };
        rmp_serde::encode::write(&mut plain, &v2).unwrap();
        assert!(
            frame.len() < plain.len() / 2,
            "{} vs {}",
            frame.len(),
            plain.len()
        );
        assert_eq!(decode(&frame).unwrap(), (m, 9));
    }

    #[test]
    fn invalidations_ride_a_v3_frame_and_plain_batches_stay_v2() {
        let m = ReplMsg::Ack {
            from: 1,
            session: 2,
            batch: 3,
            upto: 4,
            need_resync: false,
        };
        let inv = vec![Invalidation {
            key: b"session:1"[..].into(),
            stamp: crate::crdt::Stamp::new(77, 5),
        }];
        let frame = encode_with(m.clone(), 9, inv.clone()).unwrap();
        assert_eq!(decode_with(&frame).unwrap(), (m.clone(), 9, inv));
        // Readers of V2 get the message and promise; without invalidations it is a V2 frame.
        assert_eq!(decode(&frame).unwrap(), (m.clone(), 9));
        let plain = encode_with(m.clone(), 9, Vec::new()).unwrap();
        assert_eq!(plain, encode(m, 9).unwrap());
    }
}
