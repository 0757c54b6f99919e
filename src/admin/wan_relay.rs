//! `meridian wan-relay`: a UDP relay that stands for the WAN in front of a region, for hosts
//! where `tc qdisc ... netem` is not available (the multi-region compose demo, `regions/`).
//!
//! Each route is `LISTEN_PORT=TARGET`: datagrams arriving on `bind:LISTEN_PORT` are forwarded
//! to `TARGET` (one node's QUIC mesh endpoint) after a fixed one-way delay, and the node's
//! answers go back to the sender, from the listening socket, after the same delay. A node in
//! another region therefore sees one address per remote node (the one published as
//! `region-announce-addr`) and a round trip `2 × delay` longer than the wire's.
//!
//! Shape, after `tests/common/relay.rs`: per (route, sender address) one upstream socket
//! connected to the node, so the node tells senders apart by the relay's source port; QUIC
//! keeps working because the sender only ever sees the listening address.
//!
//! Order: a delay line is a FIFO queue with one sending task, and every packet waits the same
//! delay, so packets leave in the order they arrived (no accidental reordering). Each queue is
//! bounded ([`QUEUE`]); a packet arriving at a full queue is dropped, as a router would.
//!
//! Every task has a tracing span name (`wan_relay.*`) and stops when `stop` resolves.

use super::AdminError;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

/// Packets a delay line holds before it drops (about 6 MB of full-size datagrams).
const QUEUE: usize = 4096;

/// One forwarded port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub listen_port: u16,
    pub target: SocketAddr,
}

impl std::str::FromStr for Route {
    type Err = AdminError;

    /// `17001=10.81.1.11:16379`.
    fn from_str(s: &str) -> Result<Route, AdminError> {
        let bad = || AdminError::Demo(format!("route '{s}' is not LISTEN_PORT=IP:PORT"));
        let (port, target) = s.split_once('=').ok_or_else(bad)?;
        Ok(Route {
            listen_port: port.trim().parse().map_err(|_| bad())?,
            target: target.trim().parse().map_err(|_| bad())?,
        })
    }
}

pub struct RelayOptions {
    pub bind: IpAddr,
    pub routes: Vec<Route>,
    /// One-way delay added to every packet, each direction.
    pub delay: Duration,
}

/// Packet counts over every route, logged every 30 s and at the end.
#[derive(Default)]
struct Stats {
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// Runs every route until `stop` resolves; fails at once if a listening port cannot be bound.
pub async fn run(
    opts: RelayOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), AdminError> {
    if opts.routes.is_empty() {
        return Err(AdminError::Demo(
            "wan-relay needs at least one --route".into(),
        ));
    }
    let cancel = CancellationToken::new();
    let stats = Arc::new(Stats::default());
    let mut tasks = tokio::task::JoinSet::new();
    for r in &opts.routes {
        let addr = SocketAddr::new(opts.bind, r.listen_port);
        let sock = UdpSocket::bind(addr)
            .await
            .map_err(|source| AdminError::Io {
                what: format!("binding {addr}"),
                source,
            })?;
        info!(listen = %addr, target = %r.target, delay_ms = opts.delay.as_millis() as u64, "wan-relay route");
        tasks.spawn(
            serve(
                Arc::new(sock),
                r.target,
                opts.delay,
                stats.clone(),
                cancel.clone(),
            )
            .instrument(tracing::info_span!("wan_relay.route", port = r.listen_port)),
        );
    }
    let report = {
        let (stats, cancel) = (stats.clone(), cancel.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => info!(
                        forwarded = stats.forwarded.load(Ordering::Relaxed),
                        dropped = stats.dropped.load(Ordering::Relaxed),
                        "wan-relay packets"
                    ),
                }
            }
        }
    };
    tasks.spawn(report.instrument(tracing::info_span!("wan_relay.stats")));
    stop.await;
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    info!(
        forwarded = stats.forwarded.load(Ordering::Relaxed),
        dropped = stats.dropped.load(Ordering::Relaxed),
        "wan-relay stopped"
    );
    Ok(())
}

/// Where a delayed packet leaves: the upstream socket (towards the node) or the listening
/// socket (towards a sender).
enum Out {
    Upstream(Arc<UdpSocket>),
    Sender(Arc<UdpSocket>, SocketAddr),
}

/// A FIFO delay line: `push` stamps the packet, the task sends it once its time has come.
#[derive(Clone)]
struct DelayLine {
    tx: mpsc::Sender<(Instant, Vec<u8>)>,
    delay: Duration,
    stats: Arc<Stats>,
}

impl DelayLine {
    fn start(out: Out, delay: Duration, stats: Arc<Stats>, cancel: CancellationToken) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
        let task = async move {
            loop {
                let (due, data) = tokio::select! {
                    _ = cancel.cancelled() => return,
                    p = rx.recv() => match p { Some(p) => p, None => return },
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(due) => {}
                }
                // Send errors (the node restarting: ICMP port unreachable; full buffers) lose
                // the packet, as a network would.
                let _ = match &out {
                    Out::Upstream(s) => s.send(&data).await,
                    Out::Sender(s, to) => s.send_to(&data, to).await,
                };
            }
        };
        tokio::spawn(task.instrument(tracing::debug_span!("wan_relay.delay")));
        DelayLine { tx, delay, stats }
    }

    fn push(&self, data: &[u8]) {
        let due = Instant::now() + self.delay;
        match self.tx.try_send((due, data.to_vec())) {
            Ok(()) => self.stats.forwarded.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.stats.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// One route's listening loop: sender → node.
async fn serve(
    listen: Arc<UdpSocket>,
    target: SocketAddr,
    delay: Duration,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) {
    let mut upstreams: HashMap<SocketAddr, DelayLine> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
    };
    loop {
        let (n, sender) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listen.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors reported on the listening socket: keep serving.
                Err(_) => continue,
            },
        };
        if let Some(line) = upstreams.get(&sender) {
            line.push(&buf[..n]);
            continue;
        }
        let up = match UdpSocket::bind(any).await {
            Ok(u) => u,
            Err(error) => {
                warn!(%error, "wan-relay: no upstream socket");
                continue;
            }
        };
        if let Err(error) = up.connect(target).await {
            warn!(%error, %target, "wan-relay: cannot reach the node");
            continue;
        }
        info!(%sender, %target, "wan-relay: new sender");
        let up = Arc::new(up);
        let to_node = DelayLine::start(
            Out::Upstream(up.clone()),
            delay,
            stats.clone(),
            cancel.clone(),
        );
        let to_sender = DelayLine::start(
            Out::Sender(listen.clone(), sender),
            delay,
            stats.clone(),
            cancel.clone(),
        );
        tokio::spawn(
            answers(up, to_sender, cancel.clone())
                .instrument(tracing::debug_span!("wan_relay.answers", %sender)),
        );
        to_node.push(&buf[..n]);
        upstreams.insert(sender, to_node);
    }
}

/// The answer loop of one sender: node → sender.
async fn answers(up: Arc<UdpSocket>, line: DelayLine, cancel: CancellationToken) {
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = up.recv(&mut buf) => match r {
                Ok(n) => line.push(&buf[..n]),
                // The node is down (connection refused): keep the mapping, try again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_bad_ones_say_why() {
        let r: Route = "17001=10.81.1.11:16379".parse().unwrap();
        assert_eq!(r.listen_port, 17001);
        assert_eq!(r.target, "10.81.1.11:16379".parse().unwrap());
        for bad in ["17001", "x=10.0.0.1:1", "1=host:1", "70000=10.0.0.1:1"] {
            let e = bad.parse::<Route>().unwrap_err().to_string();
            assert!(e.contains("LISTEN_PORT=IP:PORT"), "{bad}: {e}");
        }
    }

    /// A datagram and its answer each wait the delay: the round trip through the relay is at
    /// least twice the one-way delay, and the answer comes from the listening address.
    #[tokio::test]
    async fn forwards_both_ways_after_the_delay() {
        let node = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = node.local_addr().unwrap();
        let port = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(run(
            RelayOptions {
                bind: "127.0.0.1".parse().unwrap(),
                routes: vec![Route {
                    listen_port: port,
                    target,
                }],
                delay: Duration::from_millis(60),
            },
            async {
                let _ = stop_rx.await;
            },
        ));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // The relay may still be binding: resend until the node hears it (bounded).
        let start = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let from = loop {
            client.send_to(b"ping", relay_addr).await.unwrap();
            match tokio::time::timeout(Duration::from_millis(500), node.recv_from(&mut buf)).await {
                Ok(r) => break r.unwrap().1,
                Err(_) => assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "relay never forwarded"
                ),
            }
        };
        assert_eq!(&buf[..4], b"ping");
        let sent = std::time::Instant::now();
        node.send_to(b"pong", from).await.unwrap();
        let (n, answer_from) =
            tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
                .await
                .expect("answer within 5 s")
                .unwrap();
        assert_eq!(&buf[..n], b"pong");
        assert_eq!(
            answer_from, relay_addr,
            "answers come from the listening address"
        );
        assert!(
            sent.elapsed() >= Duration::from_millis(60),
            "answer was not delayed"
        );
        let rtt_start = std::time::Instant::now();
        client.send_to(b"ping2", relay_addr).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), node.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"ping2");
        assert!(
            rtt_start.elapsed() >= Duration::from_millis(60),
            "forward was not delayed"
        );
        let _ = stop_tx.send(());
        relay.await.unwrap().unwrap();
    }
}
