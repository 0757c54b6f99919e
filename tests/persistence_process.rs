//! Persistence as a crash exercises it: the `meridian` binary SIGKILLed under write load with
//! `appendfsync always` (no acknowledged write lost) and `everysec` (at most about a second
//! lost), then a log damaged in the middle (a clear refusal naming the file and offset, or the
//! documented `aof-load-corrupted yes` recovery) and a log with a torn tail (truncated with a
//! warning, everything before it loaded).

#[path = "common/ports.rs"]
mod ports;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "meridian-persist-{tag}-{}-{}",
        std::process::id(),
        ports::claim()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start(dir: &Path, port: u16, extra: &[&str]) -> Child {
    let mut args = vec![
        "--port".to_string(),
        port.to_string(),
        "--dir".to_string(),
        dir.display().to_string(),
        "--appendonly".into(),
        "yes".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start meridian")
}

/// A connection once the server answers (bounded wait).
fn connect(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.get_connection_with_timeout(Duration::from_secs(2)) {
            Ok(c) => {
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                return c;
            }
            Err(e) if Instant::now() > deadline => panic!("server on {port} never came up: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// SIGTERM, then wait for a clean exit; returns its output (logs and errors).
fn stop(mut child: Child) -> String {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    stderr_of(child)
}

/// Everything an exited child printed: the logs (stdout) and errors (stderr).
fn stderr_of(mut child: Child) -> String {
    let mut s = String::new();
    child.stdout.take().unwrap().read_to_string(&mut s).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

/// Writers SET `w<t>:<i>` = i as fast as they can; each acknowledged write is recorded with
/// the time of its acknowledgement. SIGKILL after `run`.
fn kill_under_load(
    dir: &Path,
    port: u16,
    fsync: &str,
    run: Duration,
) -> (Vec<(String, Instant)>, Instant) {
    let child = start(dir, port, &["--appendfsync", fsync]);
    drop(connect(port));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop_flag = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (acked, stop_flag) = (acked.clone(), stop_flag.clone());
            std::thread::spawn(move || {
                let mut con = connect(port);
                for i in 0.. {
                    if stop_flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("w{t}:{i}");
                    let r: redis::RedisResult<()> =
                        redis::cmd("SET").arg(&key).arg(i).query(&mut con);
                    match r {
                        Ok(()) => acked.lock().unwrap().push((key, Instant::now())),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(run);
    let mut child = child;
    let killed_at = Instant::now();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    stop_flag.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    (acked, killed_at)
}

fn missing(port: u16, keys: &[&String]) -> Vec<String> {
    let mut con = connect(port);
    let mut out = Vec::new();
    for chunk in keys.chunks(500) {
        let vals: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(&mut con).unwrap();
        out.extend(
            chunk
                .iter()
                .zip(vals)
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| k.to_string()),
        );
    }
    out
}

#[test]
fn sigkill_with_fsync_always_loses_no_acknowledged_write() {
    let dir = tempdir("always");
    let port = ports::claim();
    let (acked, _) = kill_under_load(&dir, port, "always", Duration::from_millis(1500));
    assert!(
        acked.len() > 100,
        "too few writes to mean anything: {}",
        acked.len()
    );
    let child = start(&dir, port, &[]);
    let keys: Vec<&String> = acked.iter().map(|(k, _)| k).collect();
    let lost = missing(port, &keys);
    stop(child);
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        keys.len(),
        &lost[..lost.len().min(5)]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigkill_with_fsync_everysec_loses_at_most_about_a_second() {
    let dir = tempdir("everysec");
    let port = ports::claim();
    let (acked, killed_at) = kill_under_load(&dir, port, "everysec", Duration::from_millis(2500));
    let old: Vec<&String> = acked
        .iter()
        .filter(|(_, at)| killed_at.duration_since(*at) > Duration::from_millis(1500))
        .map(|(k, _)| k)
        .collect();
    assert!(old.len() > 100, "too few early writes: {}", old.len());
    let child = start(&dir, port, &[]);
    let lost = missing(port, &old);
    stop(child);
    assert!(
        lost.is_empty(),
        "{} writes acknowledged >1.5 s before the kill were lost",
        lost.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `n` keys (one log record each) and stops cleanly; returns the segment holding them.
fn log_with_keys(dir: &Path, port: u16, n: usize) -> PathBuf {
    let child = start(dir, port, &[]);
    let mut con = connect(port);
    for i in 0..n {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    drop(con);
    stop(child);
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("meridian.aof.")
        })
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a log segment")
}

fn present(port: u16, n: usize) -> Vec<bool> {
    let mut con = connect(port);
    let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let vals: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
    vals.iter().map(Option::is_some).collect()
}

#[test]
fn corrupted_record_in_the_middle_refuses_to_start_or_is_dropped_when_allowed() {
    let dir = tempdir("corrupt");
    let port = ports::claim();
    let seg = log_with_keys(&dir, port, 100);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&seg, &bytes).unwrap();

    // Default: refuse, naming the file and the offset of the damaged record.
    let mut child = start(&dir, port, &[]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "a corrupted log must stop the start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = stderr_of(child);
    assert!(!status.success());
    assert!(
        err.contains("corrupted record")
            && err.contains(seg.to_str().unwrap())
            && err.contains("at offset"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "a refused start leaves the file alone"
    );

    // Documented recovery: drop the segment from the damaged record on, keep what came before.
    let child = start(&dir, port, &["--aof-load-corrupted", "yes"]);
    let got = present(port, 100);
    let err = stop(child);
    let kept = got.iter().take_while(|p| **p).count();
    assert!(kept > 10 && kept < 100, "kept {kept}");
    assert!(
        got[kept..].iter().all(|p| !p),
        "nothing after the damaged record is loaded"
    );
    assert!(err.contains("corrupted log record"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn torn_tail_is_truncated_with_a_warning() {
    let dir = tempdir("torn");
    let port = ports::claim();
    let seg = log_with_keys(&dir, port, 50);
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 3).unwrap(); // the last record loses its end
    drop(f);

    let child = start(&dir, port, &[]);
    let got = present(port, 50);
    let err = stop(child);
    assert!(
        got[..49].iter().all(|p| *p),
        "every complete record is loaded"
    );
    assert!(!got[49], "the torn record is not");
    assert!(err.contains("torn write") && err.contains("WARN"), "{err}");
    assert!(
        std::fs::metadata(&seg).unwrap().len() < len - 3,
        "the torn tail was cut off"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
