//! Group commit for `appendfsync always`: one `meridian-fsync` thread per open log fsyncs
//! whatever has been written when someone waits, and wakes every waiter its fsync covered.
//!
//! Why: Redis fsyncs once per event-loop iteration, before replying to every client served in
//! it. Meridian's connections are tasks; if each task fsynced on its own thread before
//! replying, the tasks of one worker would run their fsyncs one after another. Here a task that
//! needs durability takes a [`Ticket`] ("durable up to offset N") and *awaits* it, so the other
//! tasks keep running and writing while an fsync is in flight, and the next fsync covers all of
//! them: concurrent connections share fsyncs, as Redis's clients share its per-iteration one.
//!
//! Protocol:
//! 1. a writer appends its records (log::Log::append), then takes a ticket for the log's
//!    current end offset; none is needed if that offset is already synced;
//! 2. taking a ticket raises `want` to its offset and wakes the thread;
//! 3. the thread fsyncs the current segment, covering everything written before the fsync
//!    started (≥ every registered `want`), then publishes the covered offset (`settled`);
//! 4. each waiter whose offset is ≤ `settled` resumes and writes its replies.
//!
//! An fsync that fails still settles its offset (waiters must not hang) but marks the ticket
//! failed; the caller reports it (INFO `aof_last_write_status:err`), as the synchronous path
//! did. Stopping the thread (log closed, node shutting down) fsyncs one last time and settles
//! everything; later tickets are served synchronously.

use super::log::Core;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use tokio::sync::watch;

struct Shared {
    /// The largest offset a waiter asked for.
    want: Mutex<u64>,
    wake: Condvar,
    stop: AtomicBool,
    /// The largest offset an fsync attempt covered (u64::MAX once stopped).
    settled: watch::Sender<u64>,
    /// Whether the last fsync attempt failed.
    failed: AtomicBool,
}

/// The `meridian-fsync` thread of one log.
pub struct Committer {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// "Durable up to `target`": await it with [`Ticket::wait`].
pub struct Ticket {
    target: u64,
    rx: watch::Receiver<u64>,
    shared: Arc<Shared>,
}

impl Ticket {
    /// Resolves once an fsync covered the ticket's offset; false if that fsync failed.
    pub async fn wait(mut self) -> bool {
        let target = self.target;
        let _ = self.rx.wait_for(|&s| s >= target).await;
        !self.shared.failed.load(SeqCst)
    }
}

impl Committer {
    /// Starts the fsync thread for `core`.
    pub fn start(core: Arc<Core>) -> std::io::Result<Committer> {
        let shared = Arc::new(Shared {
            want: Mutex::new(0),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            settled: watch::Sender::new(0),
            failed: AtomicBool::new(false),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("meridian-fsync".into())
            .spawn(move || run(&core, &sh))?;
        Ok(Committer {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A ticket for everything `core` has written so far, or None when it is already durable
    /// (or was just made durable here because the thread is stopped).
    pub fn ticket(&self, core: &Core) -> Option<Ticket> {
        let target = core.written();
        if core.synced() >= target {
            return None;
        }
        if self.shared.stop.load(SeqCst) {
            let failed = core.sync().is_err();
            self.shared.failed.store(failed, SeqCst);
            return failed.then(|| Ticket {
                target: 0,
                rx: self.shared.settled.subscribe(),
                shared: self.shared.clone(),
            });
        }
        let rx = self.shared.settled.subscribe();
        let mut want = self.shared.want.lock();
        if *want < target {
            *want = target;
            self.shared.wake.notify_one();
        }
        drop(want);
        Some(Ticket {
            target,
            rx,
            shared: self.shared.clone(),
        })
    }

    /// Stops the thread after a last fsync; every waiter is released.
    pub fn stop(&self) {
        {
            let _want = self.shared.want.lock();
            self.shared.stop.store(true, SeqCst);
            self.shared.wake.notify_all();
        }
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(core: &Core, sh: &Shared) {
    tracing::debug!(task = "meridian-fsync", "started");
    loop {
        {
            let mut want = sh.want.lock();
            while *want <= *sh.settled.borrow() && !sh.stop.load(SeqCst) {
                sh.wake.wait(&mut want);
            }
        }
        if sh.stop.load(SeqCst) {
            break;
        }
        let (upto, failed) = match core.sync() {
            Ok(upto) => (upto, false),
            Err(e) => {
                tracing::error!(error = %e, "log fsync failed");
                (core.written(), true)
            }
        };
        sh.failed.store(failed, SeqCst);
        sh.settled.send_modify(|s| *s = (*s).max(upto));
    }
    if let Err(e) = core.sync() {
        tracing::error!(error = %e, "final log fsync failed");
        sh.failed.store(true, SeqCst);
    }
    sh.settled.send_replace(u64::MAX);
    tracing::debug!(task = "meridian-fsync", "stopping");
}
