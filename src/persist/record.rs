//! The checksummed record shared by the log and the snapshot, and the scanner that reads a
//! file of them back and tells a torn tail from a corrupted record.
//!
//! On-disk layout of one record:
//! 1. a 12-byte header: payload length (u32 LE), CRC32C of the payload (u32 LE), CRC32C of
//!    those first 8 header bytes (u32 LE) — so a damaged length is caught before it is used;
//! 2. the payload: msgpack (rmp-serde) of `(key bytes, EntryDelta)` for a delta, or of
//!    `(1, key bytes)` for a *local removal* ("forget"): the key left this node without being
//!    deleted anywhere (MIGRATE moved it away), so replay must drop it rather than merge. The
//!    first element's type (bytes or integer) tells the two apart; a log with no removals is
//!    byte-identical to the format before removals existed. Counter contributions end with
//!    their epoch (`crdt::counter`); records written before epochs load with epoch 0.
//!
//! Reading classifies what follows a good record:
//! - nothing: the end;
//! - an incomplete header, a length reaching past the end of the file, a bad payload checksum
//!   on the very last record, or a zero-filled rest of file: a *torn tail* (a write that never
//!   completed, the normal result of a crash);
//! - anything else that fails a checksum or does not decode: a *corrupted record*, which a
//!   crash alone cannot produce.

use crate::crdt::EntryDelta;
use serde::{Deserialize, Serialize};

/// Bytes of a record header.
pub const HEADER: usize = 12;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// CRC32C of `bytes`.
pub fn checksum(bytes: &[u8]) -> u32 {
    CRC.checksum(bytes)
}

#[derive(Serialize)]
struct RecordRef<'a>(#[serde(with = "serde_bytes")] &'a [u8], &'a EntryDelta);

#[derive(Deserialize)]
struct RecordOwned(#[serde(with = "serde_bytes")] Vec<u8>, EntryDelta);

/// Tag of a local-removal payload.
const FORGET: u8 = 1;

#[derive(Serialize)]
struct ForgetRef<'a>(u8, #[serde(with = "serde_bytes")] &'a [u8]);

#[derive(Deserialize)]
struct ForgetOwned(u8, #[serde(with = "serde_bytes")] Vec<u8>);

/// Appends one record for `key` to `out`.
pub fn encode(out: &mut Vec<u8>, key: &[u8], delta: &EntryDelta) {
    frame(out, |out| {
        rmp_serde::encode::write(out, &RecordRef(key, delta))
            .expect("encoding into a Vec cannot fail")
    })
}

/// Appends a local-removal record for `key` to `out`: replay removes the key's entry.
pub fn encode_forget(out: &mut Vec<u8>, key: &[u8]) {
    frame(out, |out| {
        rmp_serde::encode::write(out, &ForgetRef(FORGET, key))
            .expect("encoding into a Vec cannot fail")
    })
}

/// Writes a header placeholder, the payload, then fills the header in.
fn frame(out: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    payload(out);
    let len = (out.len() - start - HEADER) as u32;
    let crc = checksum(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    let hcrc = checksum(&out[start..start + 8]);
    out[start + 8..start + HEADER].copy_from_slice(&hcrc.to_le_bytes());
}

/// What the scanner found at an offset. Returned once per record and consumed at once, so the
/// size difference between variants costs nothing (boxing would cost an allocation each).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Next {
    /// A good record; the next one starts at `end`.
    Record {
        key: Vec<u8>,
        delta: EntryDelta,
        end: usize,
    },
    /// A good local-removal record; the next one starts at `end`.
    Forget { key: Vec<u8>, end: usize },
    /// No bytes left.
    End,
    /// An incomplete final write starts here.
    Torn,
    /// A damaged record starts here.
    Corrupt(&'static str),
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads the record of `buf` starting at `off`.
pub fn next(buf: &[u8], off: usize) -> Next {
    let rest = &buf[off..];
    if rest.is_empty() {
        return Next::End;
    }
    if rest.len() < HEADER {
        return Next::Torn;
    }
    if checksum(&rest[..8]) != le32(&rest[8..12]) {
        // A file extended by the filesystem whose data never landed reads back as zeros.
        return if rest.iter().all(|&b| b == 0) {
            Next::Torn
        } else {
            Next::Corrupt("header checksum mismatch")
        };
    }
    let len = le32(&rest[..4]) as usize;
    let Some(payload) = rest.get(HEADER..HEADER + len) else {
        return Next::Torn;
    };
    if checksum(payload) != le32(&rest[4..8]) {
        return if HEADER + len == rest.len() {
            Next::Torn
        } else {
            Next::Corrupt("payload checksum mismatch")
        };
    }
    match rmp_serde::from_slice::<RecordOwned>(payload) {
        Ok(RecordOwned(key, delta)) => Next::Record {
            key,
            delta,
            end: off + HEADER + len,
        },
        Err(_) => match rmp_serde::from_slice::<ForgetOwned>(payload) {
            Ok(ForgetOwned(FORGET, key)) => Next::Forget {
                key,
                end: off + HEADER + len,
            },
            _ => Next::Corrupt("payload does not decode"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::Entry;

    fn sample() -> EntryDelta {
        Entry::empty().write_register(Some(&b"v"[..]), crate::crdt::Stamp::new(1, 1))
    }

    #[test]
    fn round_trip_and_damage() {
        let mut buf = Vec::new();
        encode(&mut buf, b"a", &sample());
        let first = buf.len();
        encode(&mut buf, b"b", &sample());
        let Next::Record { key, end, .. } = next(&buf, 0) else {
            panic!("first record")
        };
        assert_eq!((key.as_slice(), end), (&b"a"[..], first));
        assert!(matches!(next(&buf, first), Next::Record { .. }));
        assert!(matches!(next(&buf, buf.len()), Next::End));
        // A cut anywhere in the last record is a torn tail.
        for cut in first + 1..buf.len() {
            assert!(matches!(next(&buf[..cut], first), Next::Torn), "cut {cut}");
        }
        // A flipped payload byte in the first record is corruption, in the last one a tear.
        let mut bad = buf.clone();
        bad[HEADER + 2] ^= 0xff;
        assert!(matches!(next(&bad, 0), Next::Corrupt(_)));
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(next(&bad, first), Next::Torn));
        // A removal record reads back as one, between deltas.
        let mut mixed = buf[..first].to_vec();
        encode_forget(&mut mixed, b"gone");
        let mid = mixed.len();
        encode(&mut mixed, b"b", &sample());
        match next(&mixed, first) {
            Next::Forget { key, end } => assert_eq!((key.as_slice(), end), (&b"gone"[..], mid)),
            other => panic!("expected a removal, got {other:?}"),
        }
        assert!(matches!(next(&mixed, mid), Next::Record { .. }));
        // A damaged length is caught by the header checksum.
        let mut bad = buf.clone();
        bad[0] ^= 0x40;
        assert!(matches!(next(&bad, 0), Next::Corrupt(_)));
    }
}
