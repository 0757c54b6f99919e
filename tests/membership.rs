//! Membership over real UDP sockets on 127.0.0.1: join through seeds, failure detection of a
//! killed node, rejoin after restart, graceful leave, garbage tolerance, late seeds.
//!
//! Every wait is bounded by a deadline; detection times are printed (`--nocapture`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian::cluster::membership::{
    Member, MemberEvent, Membership, MembershipConfig, MembershipError, Transport,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bound asserted for a killed node to be reported down by every survivor.
const DETECT_BOUND: Duration = Duration::from_secs(3);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// UDP transport; `dead` makes a killed node silent at once.
struct Udp {
    sock: Arc<UdpSocket>,
    dead: AtomicBool,
}

impl Transport for Udp {
    fn send(&self, to: SocketAddr, payload: Bytes) {
        if !self.dead.load(Ordering::Relaxed) {
            let _ = self.sock.try_send_to(&payload, to);
        }
    }
}

struct Node {
    id: u64,
    addr: SocketAddr,
    m: Membership,
    events: mpsc::Receiver<MemberEvent>,
    udp: Arc<Udp>,
    rx_task: JoinHandle<()>,
}

async fn start(id: u64, bind: SocketAddr, seeds: Vec<SocketAddr>) -> Node {
    let sock = Arc::new(UdpSocket::bind(bind).await.expect("bind"));
    let addr = sock.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(256);
    let rx_sock = sock.clone();
    let rx_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while !tx.is_closed() {
            match rx_sock.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    let _ = tx.try_send((from, Bytes::copy_from_slice(&buf[..n])));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    });
    let udp = Arc::new(Udp {
        sock,
        dead: AtomicBool::new(false),
    });
    let me = Member::new(id, addr);
    let (m, events) = Membership::spawn(me, MembershipConfig::lan_fast(), udp.clone(), rx, seeds);
    Node {
        id,
        addr,
        m,
        events,
        udp,
        rx_task,
    }
}

impl Node {
    /// Crash: no leave, socket silenced and closed. Returns (id, addr) for a restart.
    async fn kill(self) -> (u64, SocketAddr) {
        self.udp.dead.store(true, Ordering::Relaxed);
        self.rx_task.abort();
        let _ = self.rx_task.await;
        self.m.abort().await;
        assert!(!self.m.is_running());
        (self.id, self.addr)
    }

    /// Waits for the first event matching `want`; returns it with everything seen before.
    async fn expect(
        &mut self,
        deadline: Instant,
        want: impl Fn(&MemberEvent) -> bool,
    ) -> (MemberEvent, Vec<MemberEvent>) {
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(ev)) if want(&ev) => return (ev, before),
                Ok(Some(ev)) => before.push(ev),
                Ok(None) => panic!("node {}: event channel closed", self.id),
                Err(_) => panic!(
                    "node {}: no matching event in time; saw {before:?}",
                    self.id
                ),
            }
        }
    }

    /// Events already delivered, without waiting.
    fn drain(&mut self) -> Vec<MemberEvent> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }

    fn member_ids(&self) -> Vec<u64> {
        self.m.members().iter().map(|m| m.id).collect()
    }
}

fn is_down(id: u64) -> impl Fn(&MemberEvent) -> bool {
    move |ev| matches!(ev, MemberEvent::Down(m) if m.id == id)
}

fn is_up(id: u64) -> impl Fn(&MemberEvent) -> bool {
    move |ev| matches!(ev, MemberEvent::Up(m) if m.id == id)
}

/// Polls until every node sees exactly the other nodes of `nodes` as alive.
async fn converge(nodes: &[Node], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let ok = nodes.iter().all(|n| {
            let mut want: Vec<u64> = nodes
                .iter()
                .map(|o| o.id)
                .filter(|id| *id != n.id)
                .collect();
            want.sort_unstable();
            n.member_ids() == want
        });
        if ok {
            return;
        }
        let views: Vec<(u64, Vec<u64>)> = nodes.iter().map(|n| (n.id, n.member_ids())).collect();
        assert!(
            Instant::now() < deadline,
            "no convergence within {within:?}: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cluster(n: u64) -> Vec<Node> {
    let seed = start(1, any_port(), vec![]).await;
    let seed_addr = seed.addr;
    let mut nodes = vec![seed];
    for id in 2..=n {
        nodes.push(start(id, any_port(), vec![seed_addr]).await);
    }
    converge(&nodes, Duration::from_secs(5)).await;
    nodes
}

/// Kills `victim`, asserts every survivor reports exactly one Down within the bound.
async fn kill_and_measure(nodes: &mut Vec<Node>, victim: usize) -> (u64, SocketAddr, Member) {
    for n in nodes.iter_mut() {
        n.drain();
    }
    let node = nodes.remove(victim);
    let old = node.m.me();
    let t0 = Instant::now();
    let (id, addr) = node.kill().await;
    let mut times = Vec::new();
    for n in nodes.iter_mut() {
        let (ev, before) = n.expect(t0 + DETECT_BOUND, is_down(id)).await;
        assert_eq!(ev, MemberEvent::Down(old.clone()));
        assert!(
            before.is_empty(),
            "node {}: unexpected events {before:?}",
            n.id
        );
        times.push(t0.elapsed());
        assert!(!n.m.is_alive(id));
    }
    println!("node {id} killed: reported down after {times:?} (bound {DETECT_BOUND:?})");
    (id, addr, old)
}

#[tokio::test]
async fn five_nodes_see_each_other_detect_kill_and_rejoin_after_restart() {
    let mut nodes = cluster(5).await;
    // Exactly one Up per other member, nothing else.
    for n in nodes.iter_mut() {
        let mut ups: Vec<u64> = (n.drain().into_iter())
            .map(|ev| match ev {
                MemberEvent::Up(m) => m.id,
                other => panic!("node {}: unexpected {other:?}", n.id),
            })
            .collect();
        ups.sort_unstable();
        let want: Vec<u64> = (1..=5).filter(|id| *id != n.id).collect();
        assert_eq!(ups, want, "node {}", n.id);
    }

    let (id, addr, old) = kill_and_measure(&mut nodes, 3).await;

    // Same id, same address: a newer incarnation must be let back in everywhere.
    let seed_addr = nodes[0].addr;
    let t0 = Instant::now();
    let back = start(id, addr, vec![seed_addr]).await;
    let new = back.m.me();
    assert!(new.incarnation > old.incarnation);
    for n in nodes.iter_mut() {
        let (ev, before) = n.expect(t0 + Duration::from_secs(5), is_up(id)).await;
        assert_eq!(ev, MemberEvent::Up(new.clone()));
        assert!(
            before.is_empty(),
            "node {}: unexpected events {before:?}",
            n.id
        );
    }
    println!("node {id} restarted: reported up after {:?}", t0.elapsed());
    nodes.push(back);
    converge(&nodes, Duration::from_secs(5)).await;
    for n in &nodes {
        n.m.shutdown().await;
    }
}

#[tokio::test]
async fn fast_restart_replaces_the_old_incarnation() {
    let mut nodes = cluster(3).await;
    for n in nodes.iter_mut() {
        n.drain();
    }
    let node = nodes.remove(2);
    let old = node.m.me();
    let (id, addr) = node.kill().await;
    // Back before anyone could declare the old life down.
    let back = start(id, addr, vec![nodes[0].addr]).await;
    let new = back.m.me();
    let deadline = Instant::now() + Duration::from_secs(5);
    for n in nodes.iter_mut() {
        let (ev, before) = n.expect(deadline, is_up(id)).await;
        assert_eq!(ev, MemberEvent::Up(new.clone()));
        assert_eq!(
            before,
            vec![MemberEvent::Down(old.clone())],
            "node {}",
            n.id
        );
    }
    nodes.push(back);
    converge(&nodes, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn restarted_seed_without_seeds_is_found_again() {
    let mut nodes = cluster(3).await;
    let (id, addr, _old) = kill_and_measure(&mut nodes, 0).await;
    let t0 = Instant::now();
    // The seed knows nobody: the others' announces to down members must find it.
    nodes.push(start(id, addr, vec![]).await);
    converge(&nodes, Duration::from_secs(6)).await;
    println!(
        "seed restarted without seeds: cluster whole again after {:?}",
        t0.elapsed()
    );
}

/// A node told it is down (foca's `TurnUndead`, sent by whoever declared it down) renews its
/// identity. If the teller dies before it says anything else, the told node must still probe
/// it and report it down. foca leaves itself disconnected after such a renewal until the next
/// datagram arrives; before the driver nudged it, the told node never probed again, so a
/// primary that stopped right after a false suspicion was never reported down and its replica
/// was never promoted.
#[tokio::test]
async fn node_told_it_is_down_renews_and_still_detects_the_teller_dying() {
    use foca::Codec as _;
    let mut nodes = cluster(2).await;
    let mut told = nodes.pop().expect("two nodes");
    let teller = nodes.pop().expect("two nodes");
    told.drain();
    let before = told.m.me();
    // The teller's membership goes silent; then its socket says its last word.
    teller.udp.dead.store(true, Ordering::Relaxed);
    let header = foca::Header {
        src: teller.m.me(),
        src_incarnation: 0,
        dst: before.clone(),
        message: foca::Message::TurnUndead,
    };
    let mut datagram = Vec::new();
    foca::PostcardCodec
        .encode_header(&header, &mut datagram)
        .expect("encode");
    teller
        .udp
        .sock
        .send_to(&datagram, told.addr)
        .await
        .expect("send");
    let gone = teller.m.me();
    let t0 = Instant::now();
    let (id, _) = teller.kill().await;

    let renewed = async {
        while told.m.me() == before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(2), renewed)
        .await
        .expect("the told node renews its identity");
    let (ev, _) = told.expect(t0 + DETECT_BOUND, is_down(id)).await;
    assert_eq!(ev, MemberEvent::Down(gone));
    println!(
        "told it is down, then the teller died: reported after {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn graceful_shutdown_is_reported_down_quickly() {
    let mut nodes = cluster(4).await;
    for n in nodes.iter_mut() {
        n.drain();
    }
    let leaver = nodes.remove(1);
    let me = leaver.m.me();
    let t0 = Instant::now();
    leaver.m.shutdown().await;
    assert!(!leaver.m.is_running());
    for n in nodes.iter_mut() {
        let (ev, before) = n.expect(t0 + Duration::from_secs(1), is_down(me.id)).await;
        assert_eq!(ev, MemberEvent::Down(me.clone()));
        assert!(
            before.is_empty(),
            "node {}: unexpected events {before:?}",
            n.id
        );
    }
    println!("graceful leave: reported down after {:?}", t0.elapsed());
    converge(&nodes, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn garbage_datagrams_are_ignored() {
    let mut nodes = cluster(2).await;
    let raw = UdpSocket::bind(any_port()).await.unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut junk: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0xff; 64], vec![0; 5000]];
    for len in [1usize, 2, 3, 7, 16, 40, 100, 600, 1199, 1200, 1201, 1400] {
        junk.push(
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect(),
        );
    }
    for _round in 0..20 {
        for payload in &junk {
            for n in &nodes {
                let _ = raw.send_to(payload, n.addr).await;
            }
        }
    }
    // Still alive, still serving: a third node joins and nobody went down.
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes.push(start(3, any_port(), vec![nodes[0].addr]).await);
    converge(&nodes, Duration::from_secs(5)).await;
    for n in nodes.iter_mut() {
        assert!(n.m.is_running());
        let downs: Vec<_> = n
            .drain()
            .into_iter()
            .filter(|e| matches!(e, MemberEvent::Down(_)))
            .collect();
        assert!(downs.is_empty(), "node {}: {downs:?}", n.id);
    }
}

#[tokio::test]
async fn node_started_before_its_seed_joins_when_the_seed_appears() {
    let seed_addr = {
        let probe = std::net::UdpSocket::bind(any_port()).unwrap();
        probe.local_addr().unwrap()
    };
    let mut early = start(2, any_port(), vec![seed_addr]).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(early.m.members().is_empty());
    let t0 = Instant::now();
    let mut seed = start(1, seed_addr, vec![]).await;
    let deadline = t0 + Duration::from_secs(3);
    early.expect(deadline, is_up(1)).await;
    seed.expect(deadline, is_up(2)).await;
    println!("late seed: joined after {:?}", t0.elapsed());
    early.m.shutdown().await;
    seed.m.shutdown().await;
}

#[tokio::test]
async fn spawn_rejects_reserved_id_and_bad_config() {
    let udp = Arc::new(Udp {
        sock: Arc::new(UdpSocket::bind(any_port()).await.unwrap()),
        dead: AtomicBool::new(false),
    });
    let spawn = |id, cfg| {
        let (_tx, rx) = mpsc::channel(1);
        Membership::try_spawn(Member::new(id, any_port()), cfg, udp.clone(), rx, vec![]).err()
    };
    assert_eq!(
        spawn(0, MembershipConfig::lan_fast()),
        Some(MembershipError::ReservedId)
    );
    let bad = MembershipConfig {
        probe_rtt: Duration::from_secs(1),
        ..MembershipConfig::lan_fast()
    };
    assert!(matches!(
        spawn(7, bad),
        Some(MembershipError::InvalidConfig(_))
    ));
}

#[test]
fn identity_renewal_wins_and_placeholders_always_lose() {
    use foca::Identity;
    let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    let a = Member::new(9, addr);
    let renewed = a.renew().unwrap();
    assert!(renewed.incarnation > a.incarnation && renewed.id == a.id && renewed.addr == addr);
    assert!(renewed.win_addr_conflict(&a) && !a.win_addr_conflict(&renewed));
    let seed = Member::seed(addr);
    assert!(seed.is_placeholder() && a.win_addr_conflict(&seed) && !seed.win_addr_conflict(&a));
    assert_eq!(seed.addr(), a.addr());
}
