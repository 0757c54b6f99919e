//! The `meridian` binary as an operator runs it: flags, `MERIDIAN_*` environment variables and
//! a TOML file layered in order, `--help` documenting every parameter, and a clean exit on
//! SIGTERM and SIGINT with clients connected.

#[path = "common/ports.rs"]
mod ports;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start meridian")
}

/// Sends one inline command and returns the first reply line (bounded wait).
fn send(port: u16, line: &str) -> String {
    send_lines(port, line, 1).remove(0)
}

/// `CONFIG GET name` → the value.
fn config_get(port: u16, name: &str) -> String {
    send_lines(port, &format!("CONFIG GET {name}"), 5)
        .pop()
        .unwrap()
}

/// Sends one inline command and returns `n` reply lines (bounded wait).
fn send_lines(port: u16, line: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("server on {port} never came up: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    (0..n)
        .map(|_| {
            let mut out = String::new();
            r.read_line(&mut out).unwrap();
            out.trim_end().to_string()
        })
        .collect()
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "did not exit within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn sigterm_and_sigint_shut_down_cleanly_with_clients_connected() {
    for sig in ["TERM", "INT"] {
        let port = ports::claim();
        let mut child = start(&["--port", &port.to_string()], &[]);
        assert_eq!(send(port, "SET k v"), "+OK");
        // A client that stays connected must not keep the server alive.
        let idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
        signal(&child, sig);
        let st = wait_exit(&mut child);
        assert!(st.success(), "SIG{sig}: exit status {st:?}");
        let mut log = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        assert!(log.contains("shutdown complete"), "SIG{sig} log: {log}");
        drop(idle);
    }
}

#[test]
fn flags_beat_environment_which_beats_the_file() {
    let dir = std::env::temp_dir().join(format!("meridian-proc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.toml");
    let (p_file, p_env, p_flag) = (ports::claim(), ports::claim(), ports::claim());
    std::fs::write(&file, format!("port = {p_file}\nmaxclients = 7\nhz = 20\n")).unwrap();

    // File only.
    let mut c = start(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(
        config_get(p_file, "maxclients"),
        "7",
        "the file's port and maxclients were used"
    );
    signal(&c, "TERM");
    wait_exit(&mut c);

    // Env beats file; flag beats env.
    let penv = p_env.to_string();
    let mut c = start(
        &["--config", file.to_str().unwrap()],
        // MERIDIAN_BIN names no parameter: not ours, ignored rather than refused.
        &[
            ("MERIDIAN_PORT", &penv),
            ("MERIDIAN_MAXCLIENTS", "9"),
            ("MERIDIAN_BIN", "/x"),
        ],
    );
    assert_eq!(
        config_get(p_env, "maxclients"),
        "9",
        "MERIDIAN_* beat the file"
    );
    assert_eq!(
        config_get(p_env, "hz"),
        "20",
        "the file still supplies what env does not"
    );
    signal(&c, "TERM");
    wait_exit(&mut c);

    let pflag = p_flag.to_string();
    let mut c = start(
        &["--config", file.to_str().unwrap(), "--port", &pflag],
        &[("MERIDIAN_PORT", &penv)],
    );
    assert_eq!(
        config_get(p_flag, "port"),
        pflag,
        "--port beat MERIDIAN_PORT"
    );
    signal(&c, "TERM");
    wait_exit(&mut c);
}

#[test]
fn help_documents_every_parameter() {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for p in meridian::config::params::PARAMS {
        assert!(
            text.contains(&format!("--{}", p.name)),
            "--help lacks --{}",
            p.name
        );
    }
    assert!(
        text.contains("MERIDIAN_"),
        "--help explains the environment variables"
    );
}

#[test]
fn invalid_configuration_is_refused_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["--maxclients", "lots"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("maxclients") && err.contains("integer"),
        "stderr: {err}"
    );
}
