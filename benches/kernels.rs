//! Micro-benchmarks of the hot-path kernels (criterion 0.5).
//!
//! Quick run (about a minute):
//!
//! ```text
//! cargo bench --bench kernels -- --warm-up-time 1 --measurement-time 2
//! ```
//!
//! A subset: append a filter, e.g. `cargo bench --bench kernels -- parse --warm-up-time 1 --measurement-time 2`.
//!
//! Groups:
//! - `parse`: Meridian's RESP request parser against the `redis-protocol` crate (v6) on the same
//!   pipeline of 16 `SET key:NNNN <32 bytes>` commands, to decide whether that crate could sit on
//!   the hot path. Meridian fills a reused span list per command; `redis_protocol` is measured in
//!   its zero-copy range form (`decode_range`), its `Bytes` form (`decode_bytes`, what a codec
//!   would use) and its owned form (`decode`).
//! - `crdt`: `Entry::merge` (newer delta, duplicate delta, counter delta), `write_register`,
//!   `add_int`.
//! - `slot`: `key_slot` (CRC16 of the key or its hash tag).
//! - `keyspace`: a SET then a GET through `Keyspace::lock` / `Txn::key` / `KeyMut::set` / `read`.
//! - `hot`: the hot-key sketch's `record`, sampled (what a command pays) and on every access.
//! - `merge`: a peer's batch of 256 deltas for random keys of a 1M-key keyspace (registers, and
//!   counters), merged with `Keyspace::merge_batch` (groups of keys warmed in the caches
//!   together, `store::prefetch`) and with `merge_from` one key after the other. The deltas are
//!   duplicates of what is stored, so every iteration finds the same state: what is measured is
//!   reaching the keys, which is what a receiving region mostly waits on.
//! - `wire`: one 256-entry batch frame (SET-like registers with 32-byte values, INCR-like
//!   counters), decoded by hand (`repl::wire::decode`, the receiver's path) against serde
//!   (`rmp_serde::from_slice`, the fallback), and its entries encoded compact
//!   (`crdt::compact::Writer`, the writer's path) against serde (`rmp_serde::encode::write`).

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use meridian::clock::Hlc;
use meridian::crdt::EntryDelta;
use meridian::crdt::{Entry, Stamp};
use meridian::resp::{parse_command, Limits};
use meridian::store::{key_slot, Keyspace, Origin, Ttl};
use std::sync::Arc;
use std::time::Duration;

const PIPELINE: usize = 16;

/// `*3 $3 SET $9 key:NNNN $32 <32 bytes>` sixteen times, as one read would deliver them.
fn set_pipeline() -> Vec<u8> {
    let mut buf = Vec::new();
    for i in 0..PIPELINE {
        let key = format!("key:{i:05}");
        let val = format!("{:032}", i * 7919);
        buf.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{val}\r\n",
                key.len(),
                val.len()
            )
            .as_bytes(),
        );
    }
    buf
}

fn parse(c: &mut Criterion) {
    let buf = set_pipeline();
    let bytes = Bytes::from(buf.clone());
    let limits = Limits::default();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(PIPELINE as u64));

    g.bench_function("meridian_parse_command", |b| {
        let mut spans: Vec<(u32, u32)> = Vec::with_capacity(16);
        b.iter(|| {
            let buf = black_box(&buf[..]);
            let mut pos = 0;
            let mut args = 0;
            while pos < buf.len() {
                let p = parse_command(&buf[pos..], &limits, &mut spans)
                    .unwrap()
                    .unwrap();
                args += spans.len();
                black_box(&spans);
                pos += p.consumed;
            }
            args
        })
    });

    g.bench_function("redis_protocol_decode_range", |b| {
        b.iter(|| {
            let buf = black_box(&buf[..]);
            let mut pos = 0;
            let mut args = 0;
            while pos < buf.len() {
                let (frame, used) = redis_protocol::resp2::decode::decode_range(&buf[pos..])
                    .unwrap()
                    .unwrap();
                if let redis_protocol::resp2::types::RangeFrame::Array(a) = &frame {
                    args += a.len();
                }
                black_box(&frame);
                pos += used;
            }
            args
        })
    });

    g.bench_function("redis_protocol_decode_bytes", |b| {
        b.iter(|| {
            let mut rest = black_box(&bytes).clone();
            let mut args = 0;
            while !rest.is_empty() {
                let (frame, used) = redis_protocol::resp2::decode::decode_bytes(&rest)
                    .unwrap()
                    .unwrap();
                if let redis_protocol::resp2::types::BytesFrame::Array(a) = &frame {
                    args += a.len();
                }
                black_box(&frame);
                let _ = rest.split_to(used);
            }
            args
        })
    });

    g.bench_function("redis_protocol_decode_owned", |b| {
        b.iter(|| {
            let buf = black_box(&buf[..]);
            let mut pos = 0;
            let mut args = 0;
            while pos < buf.len() {
                let (frame, used) = redis_protocol::resp2::decode::decode(&buf[pos..])
                    .unwrap()
                    .unwrap();
                if let redis_protocol::resp2::types::OwnedFrame::Array(a) = &frame {
                    args += a.len();
                }
                black_box(&frame);
                pos += used;
            }
            args
        })
    });
    g.finish();
}

fn crdt(c: &mut Criterion) {
    let value: Box<[u8]> = vec![b'v'; 32].into_boxed_slice();
    let mut g = c.benchmark_group("crdt");

    // A remote register write newer than the local state: the common replication case.
    let mut base = Entry::empty();
    base.write_register(Some(&value[..]), Stamp::new(100, 1));
    let mut newer = Entry::empty();
    let newer_delta = newer.write_register(Some(&value[..]), Stamp::new(200, 2));
    g.bench_function("merge_register_newer", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |e| e.merge(black_box(&newer_delta)),
            BatchSize::SmallInput,
        )
    });

    // The same delta again (a duplicate delivery): must be a cheap no-op.
    let mut applied = base.clone();
    applied.merge(&newer_delta);
    g.bench_function("merge_register_duplicate", |b| {
        b.iter(|| black_box(&mut applied).merge(black_box(&newer_delta)))
    });

    // A counter contribution from another actor into an entry with a register.
    let mut other = Entry::empty();
    let counter_delta = other.add_int(7, 5, Stamp::new(300, 7));
    g.bench_function("merge_counter", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |e| e.merge(black_box(&counter_delta)),
            BatchSize::SmallInput,
        )
    });

    // Local writes (stamps strictly increase, as the HLC guarantees). Includes copying the
    // 32-byte value into the entry and its delta, from borrowed bytes as SET does (before
    // 2026-12-07 it also cloned a boxed value first, which SET never paid).
    let mut e = Entry::empty();
    let mut t = 1_000u64;
    g.bench_function("write_register", |b| {
        b.iter(|| {
            t += 1;
            black_box(e.write_register(Some(black_box(&value[..])), Stamp::new(t, 1)))
        })
    });

    let mut e = Entry::empty();
    let mut t = 1_000u64;
    g.bench_function("add_int", |b| {
        b.iter(|| {
            t += 1;
            black_box(e.add_int(1, black_box(1), Stamp::new(t, 1)))
        })
    });
    g.finish();
}

fn slot(c: &mut Criterion) {
    let mut g = c.benchmark_group("slot");
    g.bench_function("key_slot_16B", |b| {
        b.iter(|| key_slot(black_box(b"key:000000001234")))
    });
    g.bench_function("key_slot_hash_tag", |b| {
        b.iter(|| key_slot(black_box(b"{user1000}.following")))
    });
    g.finish();
}

fn keyspace(c: &mut Criterion) {
    const KEYS: usize = 10_000;
    let ks = Keyspace::new(Arc::new(Hlc::new(1, Duration::from_millis(500))), None);
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("key:{i:012}").into_bytes())
        .collect();
    let value = vec![b'v'; 32];
    for k in &keys {
        ks.lock([k])
            .key(k)
            .set(value.clone().into_boxed_slice(), Ttl::Clear);
    }
    let mut g = c.benchmark_group("keyspace");
    g.throughput(Throughput::Elements(2));
    let mut i = 0usize;
    g.bench_function("set_then_get", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let k = &keys[i][..];
            {
                let mut txn = ks.lock([k]);
                txn.key(k).set(
                    black_box(&value[..]).to_vec().into_boxed_slice(),
                    Ttl::Clear,
                );
            }
            let mut txn = ks.lock([k]);
            let mut km = txn.key(k);
            km.read().map(|v| v.len())
        })
    });
    g.finish();
}

/// `hot`: the per-command hot-key hook. `record_sampled` is what every keyed command pays (one
/// access in `hot::SAMPLE` reaches the sketch); `record_every_access` is a sketch update on
/// each call (hash, one shard lock, two buckets, the candidate list), over 10k keys where a
/// few are hot; `loop_only` is the same loop picking the same keys without recording (subtract
/// it).
fn hot(c: &mut Criterion) {
    const KEYS: usize = 10_000;
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("key:{i:012}").into_bytes())
        .collect();
    // Every 4th access goes to one of 8 hot keys, the rest spread over all keys.
    let order: Vec<usize> = (0..KEYS)
        .map(|i| if i % 4 == 0 { i % 8 } else { (i * 7919) % KEYS })
        .collect();
    let mut g = c.benchmark_group("hot");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("loop_only", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(&keys[order[i]][..]);
        })
    });
    for (name, sample) in [
        ("record_sampled", meridian::hot::SAMPLE),
        ("record_every_access", 1),
    ] {
        let hk = meridian::hot::HotKeys::new(meridian::hot::DEFAULT_K, 100, sample);
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % KEYS;
                hk.record(black_box(&keys[order[i]][..]))
            })
        });
    }
    g.finish();
}

fn merge(c: &mut Criterion) {
    const KEYS: usize = 1_000_000;
    const BATCH: usize = 256;
    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Elements(BATCH as u64));
    for counters in [false, true] {
        let ks = Keyspace::new(Arc::new(Hlc::new(1, Duration::from_millis(500))), None);
        let deltas: Vec<(Arc<[u8]>, Arc<EntryDelta>)> = (0..KEYS)
            .map(|i| {
                let key: Arc<[u8]> = format!("key:{i:012}").into_bytes().into();
                let stamp = Stamp::new(1_000 + i as u64, 2);
                let mut e = Entry::empty();
                let d = if counters {
                    e.add_int(2, 1, stamp)
                } else {
                    e.write_register(Some(&[b'v'; 32][..]), stamp)
                };
                ks.merge(&key, &d);
                (key, Arc::new(d))
            })
            .collect();
        // A batch's keys: random, as a peer's outbox drains them (a fixed LCG, no dependency);
        // 4096 batches reach about 2/3 of the keyspace, far more than the CPU caches hold.
        let mut x = 12345u64;
        let batches: Vec<Vec<usize>> = (0..4096)
            .map(|_| {
                (0..BATCH)
                    .map(|_| {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (x >> 33) as usize % KEYS
                    })
                    .collect()
            })
            .collect();
        let kind = if counters { "counter" } else { "register" };
        let mut n = 0usize;
        g.bench_function(format!("batch_{kind}"), |b| {
            b.iter(|| {
                n = (n + 1) % batches.len();
                let entries: Vec<_> = batches[n]
                    .iter()
                    .map(|&i| (&deltas[i].0, &deltas[i].1))
                    .collect();
                ks.merge_batch(Origin::Peer(2), &entries, 0)
            })
        });
        g.bench_function(format!("one_by_one_{kind}"), |b| {
            b.iter(|| {
                n = (n + 1) % batches.len();
                for &i in &batches[n] {
                    black_box(ks.merge_from(Origin::Peer(2), &deltas[i].0, &deltas[i].1, 0));
                }
            })
        });
    }
    g.finish();
}

fn wire(c: &mut Criterion) {
    use meridian::repl::wire::{self, KeyEntry, ReplFrame, ReplMsg};
    const BATCH: usize = 256;
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(BATCH as u64));
    for counters in [false, true] {
        let entries: Vec<KeyEntry> = (0..BATCH)
            .map(|i| {
                let stamp = Stamp::new(7_000_000_000_000_000_000 + i as u64, 0x8a9d_555c_1396_e708);
                let mut e = Entry::empty();
                let d = if counters {
                    e.add_int(0x8a9d_555c_1396_e708, 1 + i as i64, stamp)
                } else {
                    e.write_register(Some(&[b'v'; 32][..]), stamp)
                };
                KeyEntry {
                    key: format!("key:{i:012}").into_bytes().into(),
                    entry: Arc::new(d),
                }
            })
            .collect();
        let msg = ReplMsg::Batch {
            from: 1,
            session: 2,
            fresh: false,
            batch: 3,
            upto: 4,
            entries: entries.clone(),
        };
        let frame = wire::encode(msg, 5).unwrap();
        // Uncompressed, so only decoding is measured.
        let body = {
            let mut body = Vec::new();
            rmp_serde::encode::write(
                &mut body,
                &ReplFrame::V2 {
                    msg: wire::decode(&frame).unwrap().0,
                    delivered_below: 5,
                },
            )
            .unwrap();
            body
        };
        let plain: Vec<u8> = [&[wire::CLASS_REPL][..], &body].concat();
        let kind = if counters { "counter" } else { "register" };
        g.bench_function(format!("decode_hand_{kind}"), |b| {
            b.iter(|| black_box(wire::decode(&plain).unwrap()))
        });
        g.bench_function(format!("decode_serde_{kind}"), |b| {
            b.iter(|| black_box(rmp_serde::from_slice::<ReplFrame>(&body).unwrap()))
        });
        let mut out = Vec::with_capacity(body.len());
        g.bench_function(format!("encode_compact_{kind}"), |b| {
            b.iter(|| {
                out.clear();
                let mut w = meridian::crdt::compact::Writer::default();
                for e in &entries {
                    w.entry(&e.key, &e.entry, &mut out);
                }
                black_box(out.len())
            })
        });
        g.bench_function(format!("encode_serde_{kind}"), |b| {
            b.iter(|| {
                out.clear();
                for e in &entries {
                    rmp_serde::encode::write(&mut out, e).unwrap();
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, parse, crdt, slot, keyspace, hot, merge, wire);
criterion_main!(benches);
