//! The append-only log: numbered segment files of records (`record`), the fsync policy with
//! group commit, and the replay of segments at start.
//!
//! Protocol:
//! 1. Segments are `<dir>/<appendfilename>.<seq>`; a new one is created (and the directory
//!    fsynced) at every start with the log on and at every snapshot ([`Log::rotate`]).
//! 2. Every delta the keyspace publishes is encoded and written (one `write` per publication,
//!    under the segment lock) before the command that produced it is acknowledged.
//! 3. `always`: the connection, before writing a batch's replies, awaits a ticket for the
//!    log's end offset; the `meridian-fsync` thread fsyncs for every waiter at once (group
//!    commit, `commit`). `everysec`: the persist task fsyncs once a second. `no`: the OS
//!    decides (segments are still fsynced when rotated).
//! 4. Replay reads each segment whole, merges its records in order, truncates a torn tail
//!    (with a WARN) and stops at a corrupted record with an error, unless configured to drop
//!    the rest of that segment (`aof-load-corrupted yes`).

use super::commit::{Committer, Ticket};
use super::record::{self, Next};
use super::PersistError;
use crate::store::Keyspace;
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

/// The segment being appended to.
struct Segment {
    seq: u64,
    file: Arc<File>,
}

/// The open log: its segments and byte counters ([`Core`]) and, for `appendfsync always`,
/// the group-commit thread (`commit`).
pub struct Log {
    core: Arc<Core>,
    commit: Committer,
}

/// What the log writer and the fsync thread share.
pub struct Core {
    dir: PathBuf,
    name: String,
    current: Mutex<Segment>,
    /// Bytes written since the log was opened (over every segment), and how many of them are
    /// known to be on disk.
    written: AtomicU64,
    synced: AtomicU64,
    /// One fsync at a time; waiting publishers are covered by the one in flight or the next.
    sync_lock: Mutex<()>,
    /// fsyncs done (INFO `meridian_aof_fsyncs`: with group commit, fewer than acknowledged
    /// batches under concurrent load).
    fsyncs: AtomicU64,
}

pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// fsyncs a directory so a created, renamed or removed name survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// The log segments present in `dir`, by ascending sequence number.
pub fn segments(dir: &Path, name: &str) -> Result<Vec<(u64, PathBuf)>, PersistError> {
    let prefix = format!("{name}.");
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let file = e.file_name();
        let seq = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(seq) = seq {
            found.push((seq, e.path()));
        }
    }
    found.sort_unstable();
    Ok(found)
}

fn create_segment(dir: &Path, name: &str, seq: u64) -> Result<File, PersistError> {
    let path = dir.join(format!("{name}.{seq}"));
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(file)
}

impl Log {
    /// Starts a new segment numbered `seq` and the log's fsync thread.
    pub fn open(dir: &Path, name: &str, seq: u64) -> Result<Log, PersistError> {
        let file = create_segment(dir, name, seq)?;
        let core = Arc::new(Core {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            current: Mutex::new(Segment {
                seq,
                file: Arc::new(file),
            }),
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            sync_lock: Mutex::new(()),
            fsyncs: AtomicU64::new(0),
        });
        let commit = Committer::start(core.clone()).map_err(io_err(dir))?;
        tracing::info!(segment = seq, dir = %dir.display(), "append-only log open");
        Ok(Log { core, commit })
    }

    /// Writes encoded records (one `write`, under the segment lock).
    pub fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        let seg = self.core.current.lock();
        (&*seg.file).write_all(bytes)?;
        self.core.written.fetch_add(bytes.len() as u64, SeqCst);
        Ok(())
    }

    /// fsyncs everything written so far, on the calling thread.
    pub fn sync(&self) -> std::io::Result<()> {
        self.core.sync().map(drop)
    }

    /// A ticket that resolves once everything written so far is on disk (group commit), or
    /// None if it already is.
    pub fn ticket(&self) -> Option<Ticket> {
        self.commit.ticket(&self.core)
    }

    /// Stops the fsync thread after a last fsync (shutdown).
    pub fn stop(&self) {
        self.commit.stop()
    }

    /// Bytes written but not yet known to be on disk.
    pub fn unsynced(&self) -> u64 {
        self.core.written() - self.core.synced()
    }

    /// Bytes written since the log was opened.
    pub fn written(&self) -> u64 {
        self.core.written()
    }

    /// fsyncs of written records since the log was opened (rotations not counted).
    pub fn fsyncs(&self) -> u64 {
        self.core.fsyncs.load(SeqCst)
    }

    /// Closes the current segment (fsynced) and starts the next; returns the new sequence
    /// number. Every delta published after this call lands in the new segment.
    pub fn rotate(&self) -> Result<u64, PersistError> {
        let core = &self.core;
        let mut seg = core.current.lock();
        seg.file
            .sync_data()
            .map_err(io_err(&core.dir.join(format!("{}.{}", core.name, seg.seq))))?;
        core.synced.fetch_max(core.written.load(SeqCst), SeqCst);
        let seq = seg.seq + 1;
        let file = create_segment(&core.dir, &core.name, seq)?;
        *seg = Segment {
            seq,
            file: Arc::new(file),
        };
        Ok(seq)
    }
}

impl Core {
    pub fn written(&self) -> u64 {
        self.written.load(SeqCst)
    }

    pub fn synced(&self) -> u64 {
        self.synced.load(SeqCst)
    }

    /// fsyncs everything written so far; returns the offset now known to be on disk. A caller
    /// whose bytes an earlier fsync covered returns at once.
    pub fn sync(&self) -> std::io::Result<u64> {
        let end = self.written();
        let _one = self.sync_lock.lock();
        let done = self.synced();
        if done >= end {
            return Ok(done);
        }
        let (file, upto) = {
            let seg = self.current.lock();
            (seg.file.clone(), self.written())
        };
        file.sync_data()?;
        self.fsyncs.fetch_add(1, SeqCst);
        self.synced.fetch_max(upto, SeqCst);
        Ok(upto)
    }
}

/// How replay treats damage.
#[derive(Debug, Clone, Copy)]
pub struct ReplayPolicy {
    /// Truncate a torn tail (else refuse to start).
    pub truncated: bool,
    /// Truncate a segment at a corrupted record (else refuse to start).
    pub corrupted: bool,
}

/// Merges every record of one segment into `ks`; returns the records applied.
pub fn replay(path: &Path, ks: &Keyspace, policy: ReplayPolicy) -> Result<u64, PersistError> {
    let buf = std::fs::read(path).map_err(io_err(path))?;
    let mut off = 0;
    let mut applied = 0;
    loop {
        match record::next(&buf, off) {
            Next::Record { key, delta, end } => {
                ks.merge(&key, &delta);
                applied += 1;
                off = end;
            }
            Next::Forget { key, end } => {
                // The key moved away (MIGRATE) after the records above: drop it, as the
                // running node did. Its later records, if it came back, follow.
                ks.lock_key(&key).key(&key).take();
                applied += 1;
                off = end;
            }
            Next::End => return Ok(applied),
            Next::Torn if policy.truncated => {
                tracing::warn!(file = %path.display(), offset = off, dropped_bytes = buf.len() - off,
                    "log ends with an incomplete record (torn write): truncating it");
                truncate(path, off)?;
                return Ok(applied);
            }
            Next::Torn => {
                return Err(PersistError::Truncated {
                    path: path.to_path_buf(),
                    offset: off as u64,
                })
            }
            Next::Corrupt(reason) if policy.corrupted => {
                tracing::error!(file = %path.display(), offset = off, reason, dropped_bytes = buf.len() - off,
                    "corrupted log record: aof-load-corrupted is yes, dropping the rest of this segment");
                truncate(path, off)?;
                return Ok(applied);
            }
            Next::Corrupt(reason) => {
                return Err(PersistError::Corrupt {
                    path: path.to_path_buf(),
                    offset: off as u64,
                    reason,
                })
            }
        }
    }
}

fn truncate(path: &Path, len: usize) -> Result<(), PersistError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    f.set_len(len as u64).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}
