//! Persistence, per node: the append-only log of every delta the keyspace applies (`log`),
//! snapshots that compact it (`snapshot`), both made of checksummed records (`record`), and the
//! `persist` task that runs the fsync policy and the automatic saves.
//!
//! Lifecycle (see docs/persistence.md):
//! 1. Start ([`Persist::open`], before any listener or replication link exists): load the
//!    snapshot `<dir>/<dbfilename>` if present, then replay the log segments numbered from the
//!    snapshot's base on, in order, through `Keyspace::merge`. No sink is installed yet, so
//!    replay is not logged again.
//! 2. Install this sink (first, before replication's) when `appendonly yes` or save points are
//!    configured, and open a fresh log segment when `appendonly yes`. With neither, no sink is
//!    installed and the write path records no deltas at all.
//! 3. Serve: every published delta (local commands and merges from peers alike) is appended;
//!    SAVE/BGSAVE, save points and log growth take snapshots, after which older segments are
//!    deleted.
//! 4. Shutdown: the task waits for a running BGSAVE, saves when save points are configured
//!    (as Redis does), and fsyncs the log.
//!
//! What the node missed while down comes back through replication's full sync, not from here.

mod commit;
mod forget;
mod log;
mod record;
mod snapshot;

use crate::config::{Fsync, PersistSettings};
use crate::store::{Delta, DeltaSink, Keyspace, Origin};
use arc_swap::ArcSwapOption;
use log::{Log, ReplayPolicy};
use parking_lot::Mutex;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Everything that can go wrong at the persistence boundary.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupted record in {path} at offset {offset}: {reason}; refusing to start (set aof-load-corrupted yes to drop the log from that record on, see docs/persistence.md)")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: &'static str,
    },
    #[error("{path} ends with an incomplete record at offset {offset} and aof-load-truncated is no; refusing to start")]
    Truncated { path: PathBuf, offset: u64 },
    #[error("snapshot {path} is damaged at offset {offset}: {reason}; refusing to start")]
    Snapshot {
        path: PathBuf,
        offset: u64,
        reason: &'static str,
    },
    #[error("Background save already in progress")]
    Busy,
    #[error("the keyspace is gone (node shutting down)")]
    Closed,
}

/// What the start-up load did (INFO reports it).
#[derive(Debug, Default, Clone, Copy)]
pub struct Loaded {
    pub snapshot_keys: u64,
    pub log_records: u64,
    pub millis: u64,
}

/// The node's persistence state; also the keyspace sink that feeds the log.
pub struct Persist {
    dir: PathBuf,
    dbfilename: String,
    appendfilename: String,
    keyspace: Weak<Keyspace>,
    settings: Mutex<PersistSettings>,
    log: ArcSwapOption<Log>,
    /// `Fsync` as u8, read on every publication.
    fsync: AtomicU8,
    sink_installed: AtomicBool,
    /// Sequence number of the next log segment to create.
    next_seq: AtomicU64,
    /// Deltas published since the last successful snapshot.
    dirty: AtomicU64,
    last_save: AtomicU64,
    last_try: AtomicU64,
    last_save_ok: AtomicBool,
    saves: AtomicU64,
    write_ok: AtomicBool,
    /// Log bytes written when the last snapshot started, and that snapshot's size: the
    /// automatic compaction compares the log's growth with them.
    log_at_save: AtomicU64,
    snapshot_bytes: AtomicU64,
    /// One snapshot at a time.
    saving: Mutex<()>,
    bgsave_running: AtomicBool,
    bgsave_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// A save asked for while another was running (BGSAVE SCHEDULE, enabling the log).
    pending_save: AtomicBool,
    pub loaded: Loaded,
}

fn unix_secs() -> u64 {
    crate::clock::unix_ms() / 1000
}

thread_local! {
    static ENCODE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Persist {
    /// Loads the data directory into `ks` (snapshot, then log segments) and starts logging as
    /// configured. Call before anything else publishes to or serves from `ks`.
    pub fn open(s: &PersistSettings, ks: &Arc<Keyspace>) -> Result<Arc<Persist>, PersistError> {
        let dir = PathBuf::from(&s.dir);
        std::fs::create_dir_all(&dir).map_err(log::io_err(&dir))?;
        let started = Instant::now();
        let snap = dir.join(&s.dbfilename);
        let (base, snapshot_keys) = if snap.exists() {
            snapshot::load(&snap, ks)?
        } else {
            (0, 0)
        };
        let policy = ReplayPolicy {
            truncated: s.aof_load_truncated,
            corrupted: s.aof_load_corrupted,
        };
        let mut next_seq = base;
        let mut log_records = 0;
        for (seq, path) in log::segments(&dir, &s.appendfilename)? {
            if seq < base {
                // Left by a crash between a snapshot's rename and the clean-up.
                remove_superseded(&path);
                continue;
            }
            log_records += log::replay(&path, ks, policy)?;
            next_seq = seq + 1;
        }
        let loaded = Loaded {
            snapshot_keys,
            log_records,
            millis: started.elapsed().as_millis() as u64,
        };
        if snapshot_keys + log_records > 0 {
            tracing::info!(dir = %dir.display(), snapshot_keys, log_records, ms = loaded.millis, "data loaded");
        }
        let p = Arc::new(Persist {
            dir,
            dbfilename: s.dbfilename.clone(),
            appendfilename: s.appendfilename.clone(),
            keyspace: Arc::downgrade(ks),
            settings: Mutex::new(s.clone()),
            log: ArcSwapOption::empty(),
            fsync: AtomicU8::new(s.appendfsync as u8),
            sink_installed: AtomicBool::new(false),
            next_seq: AtomicU64::new(next_seq),
            dirty: AtomicU64::new(0),
            last_save: AtomicU64::new(unix_secs()),
            last_try: AtomicU64::new(0),
            last_save_ok: AtomicBool::new(true),
            saves: AtomicU64::new(0),
            write_ok: AtomicBool::new(true),
            log_at_save: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(std::fs::metadata(&snap).map_or(0, |m| m.len())),
            saving: Mutex::new(()),
            bgsave_running: AtomicBool::new(false),
            bgsave_thread: Mutex::new(None),
            pending_save: AtomicBool::new(false),
            loaded,
        });
        p.apply(s, false)?;
        Ok(p)
    }

    /// Applies (possibly changed) settings: fsync policy, save points, and the log switched on
    /// or off. Switching it on at runtime schedules a snapshot, so the new log has a base
    /// holding everything written while it was off.
    pub fn apply(self: &Arc<Self>, s: &PersistSettings, runtime: bool) -> Result<(), PersistError> {
        self.fsync.store(s.appendfsync as u8, Relaxed);
        *self.settings.lock() = s.clone();
        if s.appendonly && self.log.load().is_none() {
            let seq = self.next_seq.fetch_add(1, Relaxed);
            self.log.store(Some(Arc::new(Log::open(
                &self.dir,
                &self.appendfilename,
                seq,
            )?)));
            if runtime && self.bgsave().is_err() {
                self.pending_save.store(true, Relaxed);
            }
        } else if !s.appendonly {
            if let Some(log) = self.log.swap(None) {
                let _ = log.sync();
                tracing::info!("append-only log closed");
            }
        }
        if (s.appendonly || !s.save.is_empty()) && !self.sink_installed.swap(true, Relaxed) {
            let ks = self.keyspace.upgrade().ok_or(PersistError::Closed)?;
            ks.add_sink(self.clone());
        }
        Ok(())
    }

    /// SAVE: a snapshot now, on the calling thread.
    pub fn save(&self) -> Result<(), PersistError> {
        let ks = self.keyspace.upgrade().ok_or(PersistError::Closed)?;
        let _one = self.saving.try_lock().ok_or(PersistError::Busy)?;
        self.last_try.store(unix_secs(), Relaxed);
        let started = Instant::now();
        let dirty = self.dirty.load(Relaxed);
        let log = self.log.load_full();
        let result = (|| {
            let base = match &log {
                Some(log) => {
                    let seq = log.rotate()?;
                    self.next_seq.store(seq + 1, Relaxed);
                    seq
                }
                None => self.next_seq.load(Relaxed),
            };
            let written = snapshot::write(&self.dir.join(&self.dbfilename), &ks, base)?;
            for (seq, path) in log::segments(&self.dir, &self.appendfilename)? {
                if seq < base {
                    remove_superseded(&path);
                }
            }
            Ok(written)
        })();
        self.last_save_ok.store(result.is_ok(), Relaxed);
        match result {
            Ok(w) => {
                self.dirty.fetch_sub(dirty, Relaxed);
                self.last_save.store(unix_secs(), Relaxed);
                self.saves.fetch_add(1, Relaxed);
                self.log_at_save
                    .store(log.as_ref().map_or(0, |l| l.written()), Relaxed);
                self.snapshot_bytes.store(w.bytes, Relaxed);
                tracing::info!(
                    keys = w.keys,
                    bytes = w.bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "snapshot saved"
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "snapshot failed");
                Err(e)
            }
        }
    }

    /// BGSAVE: a snapshot on the `meridian-bgsave` thread.
    pub fn bgsave(self: &Arc<Self>) -> Result<(), PersistError> {
        let mut thread = self.bgsave_thread.lock();
        if self.bgsave_running.swap(true, Relaxed) {
            return Err(PersistError::Busy);
        }
        if let Some(done) = thread.take() {
            let _ = done.join();
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("meridian-bgsave".into())
            .spawn(move || {
                let _ = me.save();
                me.bgsave_running.store(false, Relaxed);
            });
        match spawned {
            Ok(h) => {
                *thread = Some(h);
                Ok(())
            }
            Err(source) => {
                self.bgsave_running.store(false, Relaxed);
                Err(PersistError::Io {
                    path: self.dir.clone(),
                    source,
                })
            }
        }
    }

    /// Asks for a snapshot once the running one is done.
    pub fn schedule_save(&self) {
        self.pending_save.store(true, Relaxed);
    }

    pub fn bgsave_in_progress(&self) -> bool {
        self.bgsave_running.load(Relaxed)
    }

    /// UNIX time of the last successful snapshot (start time before the first).
    pub fn last_save(&self) -> u64 {
        self.last_save.load(Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Is a save point reached, a save scheduled, or the log grown enough to compact?
    fn save_due(&self) -> bool {
        let s = self.settings.lock().clone();
        let now = unix_secs();
        if !self.last_save_ok.load(Relaxed) && now < self.last_try.load(Relaxed) + 5 {
            return false; // as Redis: retry a failed save after 5 s
        }
        let dirty = self.dirty.load(Relaxed);
        let since = now.saturating_sub(self.last_save.load(Relaxed));
        let points = dirty > 0 && s.save.iter().any(|&(secs, n)| dirty >= n && since >= secs);
        let grown = self.log.load().as_ref().is_some_and(|l| {
            let g = l.written().saturating_sub(self.log_at_save.load(Relaxed));
            s.auto_aof_rewrite_percentage > 0
                && g >= s.auto_aof_rewrite_min_size
                && g * 100 >= self.snapshot_bytes.load(Relaxed) * s.auto_aof_rewrite_percentage
        });
        let pending = self.pending_save.swap(false, Relaxed);
        points || grown || pending
    }

    /// The `persist` task: fsyncs once a second under `everysec`, starts due snapshots, and on
    /// shutdown finishes the job (see the module doc, step 4).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => break,
            }
            if self.fsync.load(Relaxed) == Fsync::Everysec as u8 {
                if let Some(log) = self.log.load_full().filter(|l| l.unsynced() > 0) {
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || log.sync()).await {
                        tracing::error!(error = %e, "log fsync failed");
                    }
                }
            }
            if !self.bgsave_in_progress() && self.save_due() && self.bgsave().is_err() {
                self.pending_save.store(true, Relaxed);
            }
        }
        tracing::debug!(task = "persist", "stopping");
        let _ = tokio::task::spawn_blocking(move || self.close()).await;
    }

    fn close(&self) {
        if let Some(t) = self.bgsave_thread.lock().take() {
            let _ = t.join();
        }
        if !self.settings.lock().save.is_empty() && self.dirty.load(Relaxed) > 0 {
            let _ = self.save();
        }
        if let Some(log) = self.log.load_full() {
            if let Err(e) = log.sync() {
                tracing::error!(error = %e, "final log fsync failed");
            }
            log.stop();
        }
    }

    /// The `# Persistence` section of INFO.
    pub fn info(&self, t: &mut String) {
        use std::fmt::Write;
        let aof = self.log.load();
        let ok = |b: bool| if b { "ok" } else { "err" };
        let bg = self.bgsave_in_progress() as u8;
        let _ = write!(
            t,
            "# Persistence\r\nloading:0\r\nasync_loading:0\r\nrdb_changes_since_last_save:{}\r\nrdb_bgsave_in_progress:{bg}\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:{}\r\nrdb_saves:{}\r\nrdb_last_cow_size:0\r\naof_enabled:{}\r\naof_rewrite_in_progress:{}\r\naof_rewrite_scheduled:{}\r\naof_last_write_status:{}\r\naof_current_size:{}\r\naof_fsync_pending_bytes:{}\r\nmeridian_aof_fsyncs:{}\r\nmeridian_persist_dir:{}\r\nmeridian_loaded_snapshot_keys:{}\r\nmeridian_loaded_log_records:{}\r\nmeridian_load_time_ms:{}\r\n",
            self.dirty.load(Relaxed),
            self.last_save(),
            ok(self.last_save_ok.load(Relaxed)),
            self.saves.load(Relaxed),
            aof.is_some() as u8,
            if aof.is_some() { bg } else { 0 },
            self.pending_save.load(Relaxed) as u8,
            ok(self.write_ok.load(Relaxed)),
            aof.as_ref().map_or(0, |l| l.written().saturating_sub(self.log_at_save.load(Relaxed))),
            aof.as_ref().map_or(0, |l| l.unsynced()),
            aof.as_ref().map_or(0, |l| l.fsyncs()),
            self.dir.display(),
            self.loaded.snapshot_keys,
            self.loaded.log_records,
            self.loaded.millis,
        );
    }
}

fn remove_superseded(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(file = %path.display(), "removed log segment superseded by the snapshot")
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove superseded log segment")
        }
    }
}

impl Persist {
    /// Under `appendfsync always`: returns once every record written so far is on disk. A
    /// connection awaits it after running a batch and before writing the batch's replies, so
    /// nothing is acknowledged before it is durable. The fsync runs on the log's
    /// `meridian-fsync` thread and covers every connection waiting at the time (group commit,
    /// see `commit`); the awaiting task yields, so other connections keep running meanwhile.
    pub async fn sync_before_reply(&self) {
        if self.fsync.load(Relaxed) != Fsync::Always as u8 {
            return;
        }
        let ticket = match self.log.load().as_ref() {
            Some(log) => log.ticket(),
            None => return,
        };
        let Some(ticket) = ticket else { return };
        if !ticket.wait().await && self.write_ok.swap(false, Relaxed) {
            tracing::error!("log fsync failed: changes are not durable until it succeeds again");
        }
    }
}

impl DeltaSink for Persist {
    fn publish(&self, deltas: Vec<Delta>, _origin: Origin) {
        self.dirty.fetch_add(deltas.len() as u64, Relaxed);
        let guard = self.log.load();
        let Some(log) = guard.as_ref() else { return };
        // Under `always` the fsync happens once per connection batch, before its replies are
        // written ([`Persist::sync_before_reply`]), shared by every connection waiting then.
        let result = ENCODE_BUF.with_borrow_mut(|buf| {
            buf.clear();
            for d in &deltas {
                record::encode(buf, &d.key, &d.entry);
            }
            log.append(buf)
        });
        self.note_write(result);
    }
}

impl Persist {
    /// Tracks the outcome of a log write for INFO (`aof_last_write_status`), logging each
    /// change of state once.
    fn note_write(&self, result: std::io::Result<()>) {
        match result {
            Ok(()) => {
                if !self.write_ok.swap(true, Relaxed) {
                    tracing::info!("log writes succeed again");
                }
            }
            Err(e) => {
                if self.write_ok.swap(false, Relaxed) {
                    tracing::error!(error = %e, "log write failed: changes are not durable until it succeeds again");
                }
            }
        }
    }
}
