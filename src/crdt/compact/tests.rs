use super::*;
use crate::crdt::msgpack::any_delta;
use proptest::prelude::*;

/// Arbitrary deltas, half of them with the expiry stamped like the register (as SET writes
/// them), so both ways of writing the expiry stamp are covered.
fn delta() -> impl Strategy<Value = EntryDelta> {
    (any_delta(), any::<bool>()).prop_map(|(mut d, same)| {
        if let (true, Some(r), Some(e)) = (same, &d.register, &mut d.expiry) {
            e.stamp = r.stamp;
        }
        d
    })
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(any::<u8>(), 120..140),
    ]
}

fn write(entries: &[(Vec<u8>, EntryDelta)]) -> Vec<u8> {
    let (mut w, mut out) = (Writer::default(), Vec::new());
    head(entries.len(), &mut out);
    for (k, d) in entries {
        w.entry(k, d, &mut out);
    }
    out
}

fn read(array: &[u8]) -> Option<Vec<(Vec<u8>, EntryDelta)>> {
    read_entries(array, |k, d| (k.to_vec(), d))
}

proptest! {
    /// Every entry reads back exactly as written, whatever its parts.
    #[test]
    fn entries_read_back_as_written(entries in proptest::collection::vec((key(), delta()), 0..20)) {
        let bytes = write(&entries);
        prop_assert!(is_compact(&bytes));
        prop_assert_eq!(read(&bytes), Some(entries));
    }

    /// Damaged bytes (one byte changed, or cut anywhere) never panic: the reader refuses them
    /// or reads some entries.
    #[test]
    fn damaged_bytes_are_refused_or_read_never_panic(
        entries in proptest::collection::vec((key(), delta()), 1..6),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let mut bytes = write(&entries);
        let i = at.index(bytes.len());
        if cut {
            bytes.truncate(i);
            prop_assert_eq!(read(&bytes), None);
        } else {
            bytes[i] = byte;
            let _ = read(&bytes);
        }
    }
}

/// The point of the encoding: a SET of a 16-byte key to a 32-byte value takes under two thirds
/// of its msgpack bytes, and a run of them from one node repeats no node id, and writes each
/// stamp as its difference from the one before.
#[test]
fn a_set_is_written_in_far_fewer_bytes_than_msgpack() {
    let mut e = crate::crdt::Entry::default();
    let stamp = |t: u64| Stamp::new(0x6a1b_2c3d_4e5f_6071 + t, 0x1234_5678_9abc_def0);
    // As the store writes a SET: the register, and the expiry cleared with the same stamp.
    let set = |e: &mut crate::crdt::Entry, t: u64| {
        let mut d = e.write_register(Some(&[b'x'; 32]), stamp(t));
        d.expiry = Some(e.set_expiry(None, stamp(t)));
        d
    };
    let key = b"key:000000012345";
    let mut msgpack = Vec::new();
    crate::crdt::msgpack::write_delta(&set(&mut crate::crdt::Entry::default(), 0), &mut msgpack);
    // Ten SETs 1 µs apart (4295 in NTP64 units).
    let entries: Vec<_> = (0..10)
        .map(|i| (key.to_vec(), set(&mut e, i * 4295)))
        .collect();
    let compact = write(&entries);
    // Key, flags, value; a 10-byte first time and the node; then 2-byte times, no node.
    let (first, rest) = (
        1 + key.len() + 1 + 1 + 32 + 10 + 1 + 8,
        1 + key.len() + 1 + 1 + 32 + 2 + 1,
    );
    assert_eq!(compact.len(), 2 + first + 9 * rest);
    assert!(rest * 3 < (key.len() + 2 + msgpack.len()) * 2);
    assert_eq!(read(&compact), Some(entries));
}

/// A count claiming more entries than the bytes could hold is refused without reserving them.
#[test]
fn a_count_beyond_the_bytes_is_refused() {
    let mut bytes = vec![MARK];
    varint(&mut bytes, u64::MAX);
    assert_eq!(read(&bytes), None);
    // A stamp saying "the previous node" with no previous stamp.
    let (mut w, mut out) = (Writer::default(), Vec::new());
    head(1, &mut out);
    let d = crate::crdt::Entry::default().write_register(Some(b"v"), Stamp::new(5, 7));
    w.entry(b"k", &d, &mut out);
    // The entry ends with the register's stamp: time, then the node's marker and the node.
    let node_at = out.len() - 8 - 1;
    assert_eq!(out[node_at], 1);
    out[node_at] = 0;
    out.truncate(node_at + 1);
    assert_eq!(read(&out), None);
}
