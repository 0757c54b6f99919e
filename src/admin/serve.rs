//! The admin HTTP port: which port (`admin-port`, `admin-bind`), the listener task, and the
//! routes (`/`, `/metrics`, `/health`, `/api/state`).
//!
//! Port rule (docs/observability.md):
//! - `auto` (default): the RESP port + 1000 when the RESP port is fixed and below 31768, so
//!   `cargo run --release` serves the dashboard on 7379 and `meridian demo` on 8000, 8100...
//!   Ports at or above 31768 would put the admin port inside Linux's ephemeral range
//!   (32768-60999), where it could take a port the OS just handed to someone else (tests pick
//!   free ports there); RESP port 0 (tests again) has no fixed partner. In both cases `auto`
//!   opens no admin port. A busy `auto` port is a warning, not a failure: the cache serves.
//! - a number: that port (0 = any free port); failing to bind it stops the node, like `port`.
//! - `no` or `-1`: no admin port.

use super::http::{self, Request, Response};
use super::AdminError;
use crate::cmd::Node;
use crate::config::Config;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// The dashboard served at `/`: one self-contained HTML file (inline CSS and JS, no external
/// assets, so it works on an air-gapped host) that polls `/api/state` and `/health` every
/// second. It lives in `dashboard.html` beside this file so it can be edited as HTML.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// Concurrent admin connections; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 32;
/// Offset of the `auto` admin port from the RESP port.
pub const AUTO_OFFSET: u16 = 1000;
/// `auto` only below this RESP port (see the module comment).
pub const AUTO_BELOW: u16 = 31768;

/// The `admin-port` parameter, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminPort {
    Auto,
    Off,
    /// A fixed port (0 = any free port).
    Fixed(u16),
}

impl AdminPort {
    pub fn parse(v: &str) -> Result<AdminPort, AdminError> {
        match v.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(AdminPort::Auto),
            "no" | "-1" | "off" => Ok(AdminPort::Off),
            n => n.parse::<u16>().map(AdminPort::Fixed).map_err(|_| {
                AdminError::Config(format!(
                    "admin-port '{v}': expected auto, no, -1 or a port 0-65535"
                ))
            }),
        }
    }

    /// The port to bind for a node whose RESP port is `resp`, and whether failing to bind it
    /// must stop the node. `None`: no admin port.
    pub fn resolve(self, resp: u16) -> Option<(u16, bool)> {
        match self {
            AdminPort::Off => None,
            AdminPort::Fixed(p) => Some((p, true)),
            AdminPort::Auto if resp != 0 && resp < AUTO_BELOW => Some((resp + AUTO_OFFSET, false)),
            AdminPort::Auto => None,
        }
    }
}

fn value(config: &Config, name: &str) -> String {
    config
        .get_matching(|n| n == name)
        .into_iter()
        .next()
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// Binds the admin listener the configuration asks for (`resp` is the RESP port bound).
pub async fn bind(config: &Config, resp: u16) -> Result<Option<TcpListener>, AdminError> {
    let Some((port, required)) = AdminPort::parse(&value(config, "admin-port"))?.resolve(resp)
    else {
        return Ok(None);
    };
    let host = match value(config, "admin-bind").trim() {
        "" => config
            .settings()
            .bind
            .first()
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".into()),
        h => h.to_string(),
    };
    let addr = format!("{host}:{port}");
    match TcpListener::bind(&addr).await {
        Ok(l) => Ok(Some(l)),
        Err(source) if required => Err(AdminError::Io {
            what: format!("admin port: cannot listen on {addr}"),
            source,
        }),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "admin-port auto: port busy, serving without the admin port (set admin-port to choose one)");
            Ok(None)
        }
    }
}

/// Starts the admin task on `listener`: it serves until `shutdown` changes.
pub fn spawn(
    tasks: &mut JoinSet<()>,
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> Option<SocketAddr> {
    let addr = listener.local_addr().ok()?;
    node.admin_port.store(addr.port() as u64, Relaxed);
    tracing::info!(%addr, "admin port: dashboard, /metrics, /health");
    tasks.spawn(accept_loop(node, listener, shutdown));
    Some(addr)
}

/// The `admin` task: accepts until shutdown; each connection answers one request.
async fn accept_loop(node: Arc<Node>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let node = node.clone();
                    conns.spawn(async move {
                        serve_one(&node, stream).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(task = "admin", error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    tracing::debug!(task = "admin", "stopping");
    // In-flight requests are bounded by the per-request deadline; do not wait for slow ones.
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

async fn serve_one(node: &Node, mut stream: tokio::net::TcpStream) {
    let (resp, head_only) = match http::read_request(&mut stream).await {
        Ok(req) => (route(node, &req), req.method == "HEAD"),
        Err(http::HttpError::Closed | http::HttpError::Io(_)) => return,
        Err(e) => {
            tracing::debug!(task = "admin", error = %e, "bad admin request");
            (Response::for_error(&e), false)
        }
    };
    if let Err(e) = http::write_response(&mut stream, &resp, head_only).await {
        tracing::debug!(task = "admin", error = %e, "admin response not written");
    }
}

/// Maps a parsed request to its response.
pub fn route(node: &Node, req: &Request) -> Response {
    let page = matches!(
        req.path.as_str(),
        "/" | "/index.html" | "/metrics" | "/health" | "/api/state"
    );
    if !page {
        return Response::text(404, format!("404 Not Found: {}", req.path));
    }
    if req.method != "GET" && req.method != "HEAD" {
        let mut r = Response::text(405, format!("405 Method Not Allowed: {}", req.method));
        r.headers.push("Allow: GET, HEAD".into());
        return r;
    }
    match req.path.as_str() {
        "/metrics" => Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            super::metrics::render(node),
        ),
        "/health" => {
            let (ok, body) = super::state::health(node);
            Response::json(if ok { 200 } else { 503 }, &body)
        }
        "/api/state" => Response::json(200, &super::state::state(node)),
        _ => Response::new(200, "text/html; charset=utf-8", DASHBOARD.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_is_self_contained() {
        assert!(DASHBOARD.contains("/api/state"));
        for external in ["src=\"http", "href=\"http", "@import", "//cdn"] {
            assert!(!DASHBOARD.contains(external), "external asset: {external}");
        }
    }

    #[test]
    fn port_rule() {
        assert_eq!(
            AdminPort::parse("auto").unwrap().resolve(6379),
            Some((7379, false))
        );
        assert_eq!(AdminPort::Auto.resolve(0), None, "ephemeral RESP port");
        assert_eq!(AdminPort::Auto.resolve(40000), None, "ephemeral range");
        assert_eq!(AdminPort::parse("no").unwrap(), AdminPort::Off);
        assert_eq!(AdminPort::parse("-1").unwrap().resolve(6379), None);
        assert_eq!(AdminPort::parse("0").unwrap().resolve(0), Some((0, true)));
        assert_eq!(
            AdminPort::parse("9100").unwrap().resolve(6379),
            Some((9100, true))
        );
        assert!(AdminPort::parse("70000").is_err());
        assert!(AdminPort::parse("yes").is_err());
    }
}
