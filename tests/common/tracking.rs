//! Helpers shared by `tests/tracking.rs` and `tests/tracking_scale.rs`: the exact
//! invalidation frames redis-server 7 sends, and a RESP3 raw connection.
#![allow(dead_code)]

use crate::common::Raw;

/// The RESP3 invalidation push for one key, as redis-server sends it.
pub fn push(keys: &[&str]) -> String {
    let mut s = format!(">2\r\n$10\r\ninvalidate\r\n*{}\r\n", keys.len());
    for k in keys {
        s.push_str(&format!("${}\r\n{k}\r\n", k.len()));
    }
    s
}

/// The RESP2 Pub/Sub form delivered through REDIRECT.
pub fn message(keys: &[&str]) -> String {
    let mut s = format!(
        "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*{}\r\n",
        keys.len()
    );
    for k in keys {
        s.push_str(&format!("${}\r\n{k}\r\n", k.len()));
    }
    s
}

pub async fn resp3(addr: std::net::SocketAddr) -> Raw {
    let mut r = Raw::connect(addr).await;
    r.cmd(&[b"HELLO", b"3"]).await;
    let hello = r.read_reply().await;
    assert!(hello.starts_with(b"%7\r\n"), "HELLO 3 reply");
    r
}

pub async fn expect_str(r: &mut Raw, want: &str) {
    r.expect(want.as_bytes()).await;
}
