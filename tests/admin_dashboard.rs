//! The dashboard as a person sees it: `meridian demo --regions 2 --nodes 1` (one OS process per
//! node), then Debian's headless Chromium loads a node's admin port, runs the page's script
//! (which polls `/api/state`), and we check the rendered DOM shows both regions and both nodes,
//! and that a real PNG screenshot comes out.
//!
//! Chromium comes from Debian's `chromium` package (`.ci/run` installs it); `MERIDIAN_CHROMIUM`
//! names another binary. Every process started here is killed when the test ends, also on
//! panic, and every wait is bounded.

#[path = "common/demo.rs"]
mod demo;

use demo::{Demo, PortRange, Spec};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the process (Chromium) when dropped: SIGTERM first, so it can exit cleanly.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Base ports of this binary's demo: RESP `b` and `b + 100`, `b` from 24000 in steps of 10
/// (190 of them); [`demo::free_base`] also checks the admin (+1000) and mesh (+10000) ports.
const PORTS: PortRange = PortRange {
    first: 24000,
    slots: 190,
};

fn chromium() -> String {
    let bin = std::env::var("MERIDIAN_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{bin}` not found: install Debian's chromium (bash .ci/run does) or set MERIDIAN_CHROMIUM"
    );
    bin
}

/// Runs headless Chromium on `url` with `extra` flags; returns its stdout (bounded: 90 s).
fn run_chromium(bin: &str, profile: &Path, url: &str, extra: &[String]) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(["--no-first-run", "--disable-extensions", "--mute-audio"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--window-size=1400,1100")
        // Virtual time: the page's first polls of /api/state complete before the capture.
        .arg("--virtual-time-budget=4000")
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match guard.0.try_wait() {
            Ok(Some(status)) => {
                assert!(status.success(), "chromium failed: {status}");
                break;
            }
            _ if Instant::now() > deadline => panic!("chromium did not finish within 90 s"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    drop(guard);
    reader.join().unwrap()
}

/// Starts the demo; returns it with its `node` lines' (region, id) and the first admin URL.
fn start_demo() -> (Demo, Vec<(String, String)>, String) {
    let demo = Demo::start(&Spec::regions(2, PORTS));
    let nodes: Vec<(String, String)> = demo
        .nodes
        .iter()
        .map(|n| (n.region.clone(), n.id.clone()))
        .collect();
    let admins = &demo.admins;
    assert_eq!(nodes.len(), 2, "one node per region");
    assert_eq!(
        admins.len(),
        2,
        "every node printed its admin URL: {admins:?}"
    );
    assert_eq!(
        admins[0].1,
        format!("http://127.0.0.1:{}/", demo.base + 1000)
    );
    let url = admins[0].1.clone();
    (demo, nodes, url)
}

#[test]
fn dashboard_renders_both_regions_in_headless_chromium() {
    let bin = chromium();
    let (_demo, nodes, url) = start_demo();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // The DOM after the script ran: both regions' cards and both nodes' rows are there, and
    // the region the page's node belongs to is healthy. Regions learn each other by gossip,
    // which the demo's `ready` already waited for.
    let dom = run_chromium(&bin, &dir.join("profile-dom"), &url, &["--dump-dom".into()]);
    for region in ["region-1", "region-2"] {
        assert!(
            dom.contains(&format!("data-region=\"{region}\"")),
            "no card for {region} in the rendered page:\n{dom}"
        );
    }
    for (region, id) in &nodes {
        assert!(
            dom.contains(&id[..8]),
            "node {id} of {region} not shown:\n{dom}"
        );
    }
    assert!(dom.contains(">healthy<"), "health badge:\n{dom}");
    assert!(
        dom.contains("<span id=\"error\"></span>"),
        "the page's polls failed:\n{dom}"
    );

    // The screenshot: a real PNG of the window's size.
    let png = dir.join("dashboard.png");
    run_chromium(
        &bin,
        &dir.join("profile-shot"),
        &url,
        &[format!("--screenshot={}", png.display())],
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1400, 1100), "screenshot size");
    assert!(
        bytes.len() > 20_000,
        "a rendered page, not a blank image ({} bytes)",
        bytes.len()
    );
    eprintln!("dashboard screenshot: {}", png.display());
}
