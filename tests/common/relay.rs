//! A UDP relay that puts the network between in-process nodes under the test's control, so
//! partitions happen at the packet level and never by calling into a node.
//!
//! One [`Relay`] per node: it listens on the node's *announced* mesh port and forwards to the
//! node's real mesh port. For each distinct client source address it opens an upstream socket
//! (127.0.0.1:0) connected to the node, forwards client → node through it and sends the node's
//! answers back to the client from the listening socket, so the client only ever sees the
//! announced port. A QUIC node dials and serves from one socket, so its packets always come
//! from its real mesh port: that port is how [`Net`] tells nodes apart.
//!
//! [`Net`] is shared by all relays of a test: it maps real mesh ports to a group (a region
//! name), holds blocked (from, to) group pairs and isolated nodes, and optional impairments
//! (added one-way delay, random jitter that reorders packets, duplication, loss). A packet
//! between blocked parties is dropped. Every task a relay spawns stops when it is dropped.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct NetState {
    /// Real mesh port (a node's source address) → group.
    groups: HashMap<u16, String>,
    /// Directed (from group, to group) pairs whose packets are dropped.
    blocked: HashSet<(String, String)>,
    /// Real mesh ports cut off from everyone.
    isolated: HashSet<u16>,
    delay: Duration,
    jitter: Duration,
    duplicate: f64,
    loss: f64,
}

/// What happens to one packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Drop,
    /// Send each copy after its delay (one entry per copy).
    Send(Vec<Duration>),
}

/// The shared control of every relay of a test (see the module doc).
pub struct Net {
    state: Mutex<NetState>,
    rng: Mutex<StdRng>,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

impl Net {
    pub fn new() -> Arc<Net> {
        Arc::new(Net {
            state: Mutex::new(NetState::default()),
            rng: Mutex::new(StdRng::seed_from_u64(0x5eed)),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// Declares that packets from real port `port` belong to `group`.
    pub fn register(&self, port: u16, group: &str) {
        self.state
            .lock()
            .unwrap()
            .groups
            .insert(port, group.to_string());
    }

    /// Cuts every group of `a` from every group of `b`, both directions.
    pub fn partition(&self, a: &[&str], b: &[&str]) {
        let mut s = self.state.lock().unwrap();
        for x in a {
            for y in b {
                s.blocked.insert((x.to_string(), y.to_string()));
                s.blocked.insert((y.to_string(), x.to_string()));
            }
        }
    }

    /// Drops packets from the groups `from` to the groups `to` only (the other way still works).
    pub fn block_one_way(&self, from: &[&str], to: &[&str]) {
        let mut s = self.state.lock().unwrap();
        for x in from {
            for y in to {
                s.blocked.insert((x.to_string(), y.to_string()));
            }
        }
    }

    /// Cuts the node whose real mesh port is `port` from everyone.
    pub fn isolate(&self, port: u16) {
        self.state.lock().unwrap().isolated.insert(port);
    }

    /// Removes every partition, one-way block and isolation (impairments stay).
    pub fn heal(&self) {
        let mut s = self.state.lock().unwrap();
        s.blocked.clear();
        s.isolated.clear();
    }

    /// Delay added to every packet, each direction.
    pub fn set_delay(&self, d: Duration) {
        self.state.lock().unwrap().delay = d;
    }

    /// A uniformly random extra delay in `[0, j)` per packet: packets overtake each other.
    pub fn set_jitter(&self, j: Duration) {
        self.state.lock().unwrap().jitter = j;
    }

    /// Probability that a forwarded packet is sent twice.
    pub fn set_duplicate(&self, p: f64) {
        self.state.lock().unwrap().duplicate = p;
    }

    /// Probability that a packet is dropped at random.
    pub fn set_loss(&self, p: f64) {
        self.state.lock().unwrap().loss = p;
    }

    /// Turns every impairment (delay, jitter, duplication, loss) off.
    pub fn clear_impairments(&self) {
        let mut s = self.state.lock().unwrap();
        s.delay = Duration::ZERO;
        s.jitter = Duration::ZERO;
        s.duplicate = 0.0;
        s.loss = 0.0;
    }

    /// Packets forwarded (copies counted once) and dropped so far, over all relays.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.forwarded.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }

    /// Decides the fate of one packet from real port `from` to real port `to`.
    pub fn verdict(&self, from: u16, to: u16) -> Verdict {
        let s = self.state.lock().unwrap();
        let cut = s.isolated.contains(&from)
            || s.isolated.contains(&to)
            || match (s.groups.get(&from), s.groups.get(&to)) {
                (Some(a), Some(b)) => s.blocked.contains(&(a.clone(), b.clone())),
                _ => false,
            };
        let mut rng = self.rng.lock().unwrap();
        if cut || (s.loss > 0.0 && rng.gen_bool(s.loss.min(1.0))) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Verdict::Drop;
        }
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        let copies = if s.duplicate > 0.0 && rng.gen_bool(s.duplicate.min(1.0)) {
            2
        } else {
            1
        };
        let delays = (0..copies)
            .map(|_| {
                let j = if s.jitter.is_zero() {
                    Duration::ZERO
                } else {
                    Duration::from_micros(rng.gen_range(0..s.jitter.as_micros() as u64))
                };
                s.delay + j
            })
            .collect();
        Verdict::Send(delays)
    }
}

/// Where a relayed packet goes: the upstream socket (connected to the node) or the listening
/// socket (towards a client address).
#[derive(Clone)]
enum Out {
    Upstream(Arc<UdpSocket>),
    Client(Arc<UdpSocket>, SocketAddr),
}

impl Out {
    async fn send(&self, data: &[u8]) {
        // Errors (ICMP port unreachable while the node restarts, full buffers) lose the
        // packet, as a network would.
        let _ = match self {
            Out::Upstream(s) => s.send(data).await,
            Out::Client(s, to) => s.send_to(data, to).await,
        };
    }
}

async fn deliver(
    net: &Net,
    cancel: &CancellationToken,
    from: u16,
    to: u16,
    out: &Out,
    data: &[u8],
) {
    let Verdict::Send(delays) = net.verdict(from, to) else {
        return;
    };
    for d in delays {
        if d.is_zero() {
            // Undelayed packets keep their order: sent from the relay loop itself.
            out.send(data).await;
            continue;
        }
        let (out, data, cancel) = (out.clone(), data.to_vec(), cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(d) => out.send(&data).await,
            }
        });
    }
}

/// A relay in front of one node (see the module doc). Dropping it stops all its tasks.
pub struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    cancel: CancellationToken,
}

impl Relay {
    /// Starts a relay on 127.0.0.1:0 forwarding to `target` on the current runtime.
    pub async fn start(net: Arc<Net>, target: SocketAddr) -> Relay {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("relay bind");
        Self::start_on(&tokio::runtime::Handle::current(), net, sock, target)
    }

    /// Starts a relay listening on the already bound `sock`, its tasks on `rt`.
    pub fn start_on(
        rt: &tokio::runtime::Handle,
        net: Arc<Net>,
        sock: std::net::UdpSocket,
        target: SocketAddr,
    ) -> Relay {
        let _enter = rt.enter();
        sock.set_nonblocking(true)
            .expect("nonblocking relay socket");
        let addr = sock.local_addr().expect("relay address");
        let listen = Arc::new(UdpSocket::from_std(sock).expect("relay socket"));
        let cancel = CancellationToken::new();
        rt.spawn(serve(net, listen, target, cancel.clone()));
        Relay {
            addr,
            target,
            cancel,
        }
    }

    /// The address clients send to (the node's announced mesh address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The node's real mesh address.
    pub fn target(&self) -> SocketAddr {
        self.target
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The listening loop: client → node.
async fn serve(
    net: Arc<Net>,
    listen: Arc<UdpSocket>,
    target: SocketAddr,
    cancel: CancellationToken,
) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listen.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors reported on the listening socket: keep serving.
                Err(_) => continue,
            },
        };
        let up = match upstreams.get(&client) {
            Some(u) => u.clone(),
            None => {
                let Ok(u) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if u.connect(target).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                upstreams.insert(client, u.clone());
                tokio::spawn(answers(
                    net.clone(),
                    u.clone(),
                    listen.clone(),
                    client,
                    target.port(),
                    cancel.clone(),
                ));
                u
            }
        };
        deliver(
            &net,
            &cancel,
            client.port(),
            target.port(),
            &Out::Upstream(up),
            &buf[..n],
        )
        .await;
    }
}

/// The answer loop of one client: node → client, from the listening socket.
async fn answers(
    net: Arc<Net>,
    up: Arc<UdpSocket>,
    listen: Arc<UdpSocket>,
    client: SocketAddr,
    node_port: u16,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; 65536];
    let out = Out::Client(listen, client);
    loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => return,
            r = up.recv(&mut buf) => match r {
                Ok(n) => n,
                Err(_) => {
                    // The node is down (connection refused): wait a little, keep the mapping.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        deliver(&net, &cancel, node_port, client.port(), &out, &buf[..n]).await;
    }
}
