//! Snapshots: the full state of every key written to one file, the base the log compacts into.
//!
//! File layout:
//! 1. a header: the magic `MERIDIAN-SNAPSHOT-1` plus a newline (20 bytes), then the *base*:
//!    the first log segment not contained in the snapshot (u64 LE);
//! 2. one record (`record`) per key, tombstones included, holding the entry's full state as a
//!    delta;
//! 3. a footer: `END!`, the record count (u64 LE), CRC32C of those 12 bytes (u32 LE).
//!
//! Writing protocol ([`write`]):
//! 1. the caller rotates the log first, so every delta not yet in the keyspace when the walk
//!    starts lands in a segment numbered `base` or later;
//! 2. walk the slots one at a time (one slot lock held at a time, so clients are never blocked
//!    for longer than copying one slot), writing records to `<dbfilename>.tmp`;
//! 3. footer, fsync the file, rename it over `<dbfilename>`, fsync the directory.
//!
//! A delta both in the snapshot and in a segment ≥ base is merged twice on load: harmless,
//! merges are idempotent. A snapshot that fails any check refuses the start (the rename makes
//! a half-written snapshot impossible, so damage means the disk or an operator changed it).

use super::log::{io_err, sync_dir};
use super::record::{self, checksum, Next};
use super::PersistError;
use crate::store::{Keyspace, SLOTS};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

const MAGIC: &[u8; 20] = b"MERIDIAN-SNAPSHOT-1\n";
const FOOTER: usize = 16;

/// What a save wrote.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub keys: u64,
    pub bytes: u64,
}

/// Writes the keyspace to `path` (through a temporary file and an atomic rename).
pub fn write(path: &Path, ks: &Keyspace, base: u64) -> Result<Written, PersistError> {
    let tmp = std::path::PathBuf::from(format!("{}.tmp", path.display()));
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut buf = Vec::with_capacity(1 << 16);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&base.to_le_bytes());
    let mut keys = 0u64;
    let mut bytes = 0u64;
    for slot in 0..SLOTS as u16 {
        for (key, entry) in ks.slot_entries(slot) {
            record::encode(&mut buf, &key, &entry.to_delta());
            keys += 1;
        }
        if buf.len() >= 1 << 16 || slot as usize == SLOTS - 1 {
            out.write_all(&buf).map_err(io_err(&tmp))?;
            bytes += buf.len() as u64;
            buf.clear();
        }
    }
    let mut footer = Vec::with_capacity(FOOTER);
    footer.extend_from_slice(b"END!");
    footer.extend_from_slice(&keys.to_le_bytes());
    footer.extend_from_slice(&checksum(&footer).to_le_bytes());
    out.write_all(&footer).map_err(io_err(&tmp))?;
    let file = out.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(Written {
        keys,
        bytes: bytes + FOOTER as u64,
    })
}

/// Merges the snapshot at `path` into `ks`; returns (base segment, keys loaded).
pub fn load(path: &Path, ks: &Keyspace) -> Result<(u64, u64), PersistError> {
    let buf = std::fs::read(path).map_err(io_err(path))?;
    let bad = |offset: usize, reason: &'static str| PersistError::Snapshot {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    if buf.len() < MAGIC.len() + 8 + FOOTER || &buf[..MAGIC.len()] != MAGIC {
        return Err(bad(0, "not a Meridian snapshot"));
    }
    let base = u64::from_le_bytes(buf[20..28].try_into().expect("8 bytes"));
    let body_end = buf.len() - FOOTER;
    let footer = &buf[body_end..];
    if &footer[..4] != b"END!" || checksum(&footer[..12]).to_le_bytes() != footer[12..16] {
        return Err(bad(body_end, "missing or damaged footer"));
    }
    let count = u64::from_le_bytes(footer[4..12].try_into().expect("8 bytes"));
    let body = &buf[..body_end];
    let mut off = 28;
    let mut keys = 0u64;
    loop {
        match record::next(body, off) {
            Next::Record { key, delta, end } => {
                ks.merge(&key, &delta);
                keys += 1;
                off = end;
            }
            Next::End => break,
            // A snapshot holds what is here; removals belong to the log only.
            Next::Forget { .. } => return Err(bad(off, "unexpected removal record")),
            Next::Torn => return Err(bad(off, "truncated record")),
            Next::Corrupt(reason) => return Err(bad(off, reason)),
        }
    }
    if keys != count {
        return Err(bad(body_end, "record count does not match the footer"));
    }
    Ok((base, keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Hlc;
    use crate::store::Ttl;
    use std::sync::Arc;
    use std::time::Duration;

    fn keyspace() -> Keyspace {
        Keyspace::new(Arc::new(Hlc::new(7, Duration::from_millis(500))), None)
    }

    fn entries(ks: &Keyspace) -> Vec<(Box<[u8]>, crate::crdt::Entry)> {
        let mut all: Vec<_> = (0..SLOTS as u16).flat_map(|s| ks.slot_entries(s)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    #[test]
    fn round_trip_and_refusals() {
        let dir = std::env::temp_dir().join(format!("meridian-snap-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let ks = keyspace();
        let op = |k: &str, f: &dyn Fn(&mut crate::store::KeyMut<'_>)| {
            let mut txn = ks.lock_key(k.as_bytes());
            f(&mut txn.key(k.as_bytes()));
        };
        for i in 0..300i64 {
            let k = format!("k{i}");
            match i % 3 {
                0 => op(&k, &|key| {
                    key.set(b"v".to_vec().into(), Ttl::At(4_102_444_800_000))
                }),
                1 => op(&k, &|key| key.add_int(i)),
                _ => {
                    op(&k, &|key| key.set(b"x".to_vec().into(), Ttl::Clear));
                    op(&k, &|key| {
                        key.delete();
                    });
                }
            }
        }
        let w = write(&path, &ks, 42).unwrap();
        assert_eq!(w.keys, 300);
        assert_eq!(w.bytes, std::fs::metadata(&path).unwrap().len());
        let back = keyspace();
        assert_eq!(load(&path, &back).unwrap(), (42, 300));
        assert_eq!(
            entries(&back),
            entries(&ks),
            "tombstones, deadlines, counters"
        );

        // Any damage refuses: a flipped byte, a lost footer.
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        bad[good.len() / 2] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(
            load(&path, &keyspace()),
            Err(PersistError::Snapshot { .. })
        ));
        std::fs::write(&path, &good[..good.len() - 4]).unwrap();
        assert!(matches!(
            load(&path, &keyspace()),
            Err(PersistError::Snapshot { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
