//! The mesh over real QUIC on 127.0.0.1: delivery of datagrams, frames and requests, reconnects,
//! framing limits, hostile input, certificate checks in both directions, and shutdown.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meridian::mesh::certs::Ca;
use meridian::mesh::tls::ALPN;
use meridian::mesh::{Inbound, Mesh, MeshConfig, MeshError, PeerState, TlsMaterial, SERVER_NAME};
use rustls::pki_types::pem::PemObject;
use tokio::sync::mpsc::Receiver;

const WAIT: Duration = Duration::from_secs(5);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn config(ca: &Ca) -> MeshConfig {
    MeshConfig::new(local(), ca.issue(&["127.0.0.1".into()]).unwrap())
}

async fn node(ca: &Ca) -> (Mesh, Receiver<Inbound>) {
    Mesh::bind(config(ca)).await.unwrap()
}

async fn next(rx: &mut Receiver<Inbound>) -> Inbound {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("nothing arrived in time")
        .expect("inbound closed")
}

/// Asserts that nothing arrives for a while.
async fn nothing_arrives(rx: &mut Receiver<Inbound>, within: Duration) {
    if let Ok(Some(msg)) = tokio::time::timeout(within, rx.recv()).await {
        panic!("unexpected delivery: {msg:?}");
    }
}

async fn frame_from(rx: &mut Receiver<Inbound>) -> (SocketAddr, Bytes) {
    match next(rx).await {
        Inbound::Frame { from, bytes } => (from, bytes),
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// A bare quinn client endpoint presenting `tls` (for hostile or malformed traffic).
fn raw_client(tls: &TlsMaterial) -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::client(local()).unwrap();
    let cfg = MeshConfig::new(local(), tls.clone());
    endpoint.set_default_client_config(tls.quic_client_config(&cfg).unwrap());
    endpoint
}

/// Answers every request with its bytes reversed, and drops the reply for "drop".
fn spawn_responder(mut rx: Receiver<Inbound>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if let Inbound::Request { bytes, reply, .. } = msg {
                if &bytes[..] == b"drop" {
                    drop(reply);
                } else if &bytes[..] == b"hang" {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    drop(reply);
                } else {
                    let mut v = bytes.to_vec();
                    v.reverse();
                    let _ = reply.send(Bytes::from(v));
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagram_round_trip() {
    init_tracing();
    let ca = Ca::generate().unwrap();
    let (a, mut rx_a) = node(&ca).await;
    let (b, mut rx_b) = node(&ca).await;
    // The first datagram rides on the background dial; later ones may be dropped while it runs,
    // so keep sending until one arrives.
    let got = tokio::time::timeout(WAIT, async {
        loop {
            a.send_datagram(b.local_addr(), Bytes::from_static(b"\x01ping"))
                .unwrap();
            if let Ok(Some(msg)) =
                tokio::time::timeout(Duration::from_millis(100), rx_b.recv()).await
            {
                break msg;
            }
        }
    })
    .await
    .expect("no datagram arrived");
    let Inbound::Datagram { from, bytes } = got else {
        panic!("expected a datagram, got {got:?}")
    };
    assert_eq!(from, a.local_addr());
    assert_eq!(&bytes[..], b"\x01ping");
    assert!(a.is_connected(b.local_addr()));

    b.send_datagram(from, Bytes::from_static(b"\x01pong"))
        .unwrap();
    match next(&mut rx_a).await {
        Inbound::Datagram { from, bytes } => {
            assert_eq!(from, b.local_addr());
            assert_eq!(&bytes[..], b"\x01pong");
        }
        other => panic!("expected a datagram, got {other:?}"),
    }
    let too_big = Bytes::from(vec![0u8; 64 * 1024]);
    assert!(matches!(
        a.send_datagram(b.local_addr(), too_big),
        Err(MeshError::DatagramTooLarge { .. })
    ));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_frames_all_arrive_over_one_dial() {
    init_tracing();
    let ca = Ca::generate().unwrap();
    let (a, _rx_a) = node(&ca).await;
    let (b, mut rx_b) = node(&ca).await;
    let to = b.local_addr();
    // All sends start before any connection exists: they must share one dial.
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let a = a.clone();
        sends.spawn(async move {
            let mut payload = vec![1u8];
            payload.extend_from_slice(&i.to_be_bytes());
            payload.resize(5 + (i as usize % 300), 0xAB);
            a.send_frame(to, Bytes::from(payload)).await
        });
    }
    let mut seen = HashSet::new();
    for _ in 0..1000 {
        let (from, bytes) = frame_from(&mut rx_b).await;
        assert_eq!(from, a.local_addr());
        assert_eq!(bytes[0], 1);
        assert_eq!(
            bytes.len(),
            5 + (u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize % 300)
        );
        assert!(seen.insert(u32::from_be_bytes(bytes[1..5].try_into().unwrap())));
    }
    while let Some(sent) = sends.join_next().await {
        sent.unwrap().unwrap();
    }
    assert_eq!(seen.len(), 1000);

    let stats = a.stats();
    let peer = stats.peers.iter().find(|p| p.addr == to).unwrap();
    assert_eq!(peer.frames_sent, 1000);
    assert_eq!(peer.dials, 1, "concurrent senders must share one dial");
    assert_eq!(peer.connections, 1);
    assert_eq!(peer.state, PeerState::Connected);
    let stats = b.stats();
    let peer = stats
        .peers
        .iter()
        .find(|p| p.addr == a.local_addr())
        .unwrap();
    assert_eq!(peer.frames_received, 1000);
    assert_eq!(peer.accepts, 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response() {
    init_tracing();
    let ca = Ca::generate().unwrap();
    let (a, _rx_a) = node(&ca).await;
    let (b, rx_b) = node(&ca).await;
    let responder = spawn_responder(rx_b);
    let to = b.local_addr();

    let answer = a
        .request(to, Bytes::from_static(b"\x01abc"), WAIT)
        .await
        .unwrap();
    assert_eq!(&answer[..], b"cba\x01");
    // Many in flight at once, each gets its own answer.
    let mut asks = tokio::task::JoinSet::new();
    for i in 0..50u8 {
        let a = a.clone();
        asks.spawn(async move { (i, a.request(to, Bytes::from(vec![1, i, 2]), WAIT).await) });
    }
    while let Some(done) = asks.join_next().await {
        let (i, answer) = done.unwrap();
        assert_eq!(&answer.unwrap()[..], &[2, i, 1]);
    }
    // A dropped reply sender resets the stream: an error, not a hang.
    let dropped = a.request(to, Bytes::from_static(b"drop"), WAIT).await;
    assert!(
        matches!(dropped, Err(MeshError::Request { .. })),
        "{dropped:?}"
    );
    // No answer within the timeout.
    let slow = a
        .request(to, Bytes::from_static(b"hang"), Duration::from_millis(300))
        .await;
    assert!(
        matches!(slow, Err(MeshError::Timeout(addr)) if addr == to),
        "{slow:?}"
    );
    // The connection is still fine afterwards.
    assert_eq!(
        &a.request(to, Bytes::from_static(b"xy"), WAIT)
            .await
            .unwrap()[..],
        b"yx"
    );

    a.shutdown().await;
    b.shutdown().await;
    responder.await.unwrap(); // the inbound channel ended with b's shutdown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_restart_on_the_same_port_reconnects() {
    init_tracing();
    let ca = Ca::generate().unwrap();
    let (a, _rx_a) = node(&ca).await;
    let b_cfg = config(&ca);
    let (b, mut rx_b) = Mesh::bind(b_cfg.clone()).await.unwrap();
    let addr = b.local_addr();
    a.send_frame(addr, Bytes::from_static(b"\x01before"))
        .await
        .unwrap();
    assert_eq!(&frame_from(&mut rx_b).await.1[..], b"\x01before");

    // Drop without shutdown (a node going away); the port frees up shortly after.
    drop(b);
    drop(rx_b);
    let mut cfg = b_cfg;
    cfg.bind = addr;
    let started = tokio::time::Instant::now();
    let (b2, mut rx_b2) = loop {
        match Mesh::bind(cfg.clone()).await {
            Ok(bound) => break bound,
            Err(e) if started.elapsed() < WAIT => {
                tracing::debug!(error = %e, "port not free yet");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("could not rebind {addr}: {e}"),
        }
    };
    assert_eq!(b2.local_addr(), addr);

    // The old connection is dead (closed by the old node or reset by the new one): sends
    // reconnect, by themselves, to the new incarnation.
    let delivered = tokio::time::timeout(WAIT, async {
        loop {
            let _ = a.send_frame(addr, Bytes::from_static(b"\x01after")).await;
            if let Ok(Some(Inbound::Frame { bytes, .. })) =
                tokio::time::timeout(Duration::from_millis(200), rx_b2.recv()).await
            {
                break bytes;
            }
        }
    })
    .await
    .expect("no frame reached the restarted peer");
    assert_eq!(&delivered[..], b"\x01after");
    a.send_frame(addr, Bytes::from_static(b"\x01again"))
        .await
        .unwrap();
    assert_eq!(&frame_from(&mut rx_b2).await.1[..], b"\x01again");
    a.shutdown().await;
    b2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_are_refused_on_both_sides() {
    init_tracing();
    let ca = Ca::generate().unwrap();
    let mut cfg = config(&ca);
    cfg.max_frame_len = 1024 * 1024;
    let (a, _rx_a) = Mesh::bind(cfg.clone()).await.unwrap();
    let mut cfg_b = config(&ca);
    cfg_b.max_frame_len = 1024 * 1024;
    let (b, mut rx_b) = Mesh::bind(cfg_b).await.unwrap();
    let to = b.local_addr();

    let big = Bytes::from(vec![7u8; 1024 * 1024 + 1]);
    assert!(matches!(
        a.send_frame(to, big.clone()).await,
        Err(MeshError::FrameTooLarge { .. })
    ));
    assert!(matches!(
        a.request(to, big, WAIT).await,
        Err(MeshError::FrameTooLarge { .. })
    ));
    let exactly = Bytes::from(vec![7u8; 1024 * 1024]);
    a.send_frame(to, exactly.clone()).await.unwrap();
    assert_eq!(frame_from(&mut rx_b).await.1, exactly);

    // A peer (with a valid certificate) declaring a huge length: refused, never allocated.
    let raw = raw_client(&ca.issue(&["127.0.0.1".into()]).unwrap());
    let conn = raw.connect(to, SERVER_NAME).unwrap().await.unwrap();
    let mut send = conn.open_uni().await.unwrap();
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let _ = send.write_all(&[0u8; 1000]).await;
    let stopped = tokio::time::timeout(WAIT, send.stopped())
        .await
        .expect("stream never stopped");
    assert_eq!(
        stopped.unwrap(),
        Some(meridian::mesh::frame::code::FRAME_TOO_LARGE)
    );
    nothing_arrives(&mut rx_b, Duration::from_millis(300)).await;
    assert!(b.stats().malformed_streams >= 1);

    a.send_frame(to, Bytes::from_static(b"\x01still fine"))
        .await
        .unwrap();
    assert_eq!(&frame_from(&mut rx_b).await.1[..], b"\x01still fine");
    raw.close(0u32.into(), b"done");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_streams_are_dropped() {
    init_tracing();
    let ca = Ca::generate().unwrap();
    let (b, mut rx_b) = node(&ca).await;
    let to = b.local_addr();
    let raw = raw_client(&ca.issue(&["127.0.0.1".into()]).unwrap());
    let conn = raw.connect(to, SERVER_NAME).unwrap().await.unwrap();

    let garbage: [&[u8]; 4] = [
        b"\x00\x01",                     // header cut short
        b"\x00\x00\x00\x64only ten b",   // declares 100 bytes, sends 10
        b"\x00\x00\x00\x03abcdefgh",     // bytes past the declared length
        b"\xde\xad\xbe\xef\x00\x11\x22", // nonsense
    ];
    for bytes in garbage {
        let mut send = conn.open_uni().await.unwrap();
        let _ = send.write_all(bytes).await;
        let _ = send.finish();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let _ = send.write_all(bytes).await;
        let _ = send.finish();
    }
    // A stream reset halfway, and a bare datagram of junk.
    let mut send = conn.open_uni().await.unwrap();
    send.write_all(b"\x00\x00\x01\x00half").await.unwrap();
    send.reset(9u32.into()).unwrap();
    conn.send_datagram(Bytes::from_static(b"\xff\xfe junk"))
        .unwrap();

    // The junk datagram is delivered as opaque bytes (the mesh never parses them); nothing else.
    match next(&mut rx_b).await {
        Inbound::Datagram { bytes, .. } => assert_eq!(&bytes[..], b"\xff\xfe junk"),
        other => panic!("expected the datagram, got {other:?}"),
    }
    // A well-formed frame on the same connection still gets through.
    let mut send = conn.open_uni().await.unwrap();
    send.write_all(b"\x00\x00\x00\x03\x01ok").await.unwrap();
    send.finish().unwrap();
    let (_, bytes) = frame_from(&mut rx_b).await;
    assert_eq!(&bytes[..], b"\x01ok");
    nothing_arrives(&mut rx_b, Duration::from_millis(300)).await;
    assert!(b.stats().malformed_streams >= 6, "{:?}", b.stats());
    raw.close(0u32.into(), b"done");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_deployment_certificate_cannot_deliver() {
    init_tracing();
    let ca = Ca::generate().unwrap();
    let (b, mut rx_b) = node(&ca).await;
    let to = b.local_addr();

    // 1. A mesh node whose certificate comes from another CA (it trusts our CA, so only the
    //    server's client check stands in its way).
    let rogue_ca = Ca::generate().unwrap();
    let mut rogue_tls = rogue_ca.issue(&["127.0.0.1".into()]).unwrap();
    rogue_tls.ca_cert_pem = ca.cert_pem().to_string();
    let (rogue, _rx_rogue) = Mesh::bind(MeshConfig::new(local(), rogue_tls))
        .await
        .unwrap();
    // The rogue learns it was refused: its dial never counts as connected.
    let sent = rogue.send_frame(to, Bytes::from_static(b"\x01evil")).await;
    assert!(matches!(sent, Err(MeshError::Connect { .. })), "{sent:?}");
    let asked = rogue
        .request(to, Bytes::from_static(b"\x01evil"), WAIT)
        .await;
    assert!(matches!(asked, Err(MeshError::Connect { .. })), "{asked:?}");
    assert!(!rogue.is_connected(to));

    // 2. A self-signed certificate.
    let self_signed = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()]).unwrap();
    let tls = TlsMaterial {
        ca_cert_pem: ca.cert_pem().to_string(),
        cert_pem: self_signed.cert.pem(),
        key_pem: self_signed.signing_key.serialize_pem(),
    };
    try_to_deliver(&raw_client(&tls), to).await;

    // 3. No client certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    let ca_der =
        rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
    roots.add(ca_der).unwrap();
    let mut crypto = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut anonymous = quinn::Endpoint::client(local()).unwrap();
    anonymous.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    try_to_deliver(&anonymous, to).await;

    nothing_arrives(&mut rx_b, Duration::from_secs(1)).await;
    let stats = b.stats();
    assert!(stats.handshakes_failed >= 3, "{stats:?}");
    assert!(!b.is_connected(rogue.local_addr()));
    assert!(stats
        .peers
        .iter()
        .all(|p| p.frames_received == 0 && p.requests_received == 0));

    // The node is unharmed: a genuine peer still gets through.
    let (a, _rx_a) = node(&ca).await;
    a.send_frame(to, Bytes::from_static(b"\x01good"))
        .await
        .unwrap();
    assert_eq!(&frame_from(&mut rx_b).await.1[..], b"\x01good");
    rogue.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Tries every way to push bytes through a client endpoint; all of it may fail, none may land.
async fn try_to_deliver(endpoint: &quinn::Endpoint, to: SocketAddr) {
    let Ok(connecting) = endpoint.connect(to, SERVER_NAME) else {
        return;
    };
    let Ok(Ok(conn)) = tokio::time::timeout(WAIT, connecting).await else {
        return;
    };
    let _ = conn.send_datagram(Bytes::from_static(b"\x01evil"));
    if let Ok(mut send) = conn.open_uni().await {
        let _ = send.write_all(b"\x00\x00\x00\x05\x01evil").await;
        let _ = send.finish();
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_deployment_certificate_is_refused() {
    init_tracing();
    let ca = Ca::generate().unwrap();
    let (a, _rx_a) = node(&ca).await;

    // A server with another CA's certificate that would happily accept our client certificate:
    // only the client's check of the server stands in the way.
    let rogue_ca = Ca::generate().unwrap();
    let mut rogue_tls = rogue_ca.issue(&["127.0.0.1".into()]).unwrap();
    rogue_tls.ca_cert_pem = ca.cert_pem().to_string();
    let (rogue, mut rx_rogue) = Mesh::bind(MeshConfig::new(local(), rogue_tls))
        .await
        .unwrap();
    let to = rogue.local_addr();

    let sent = a.send_frame(to, Bytes::from_static(b"\x01secret")).await;
    assert!(matches!(sent, Err(MeshError::Connect { .. })), "{sent:?}");
    let asked = a.request(to, Bytes::from_static(b"\x01secret"), WAIT).await;
    assert!(matches!(asked, Err(MeshError::Connect { .. })), "{asked:?}");
    a.send_datagram(to, Bytes::from_static(b"\x01secret"))
        .unwrap();
    nothing_arrives(&mut rx_rogue, Duration::from_secs(1)).await;
    assert!(!a.is_connected(to));
    let stats = a.stats();
    let peer = stats.peers.iter().find(|p| p.addr == to).unwrap();
    assert_eq!(peer.state, PeerState::Disconnected);
    assert_eq!(peer.dials, 0);
    rogue.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_everything_and_frees_the_port() {
    init_tracing();
    let ca = Ca::generate().unwrap();
    let (a, _rx_a) = node(&ca).await;
    let b_cfg = config(&ca);
    let (b, mut rx_b) = Mesh::bind(b_cfg.clone()).await.unwrap();
    let addr = b.local_addr();
    a.send_frame(addr, Bytes::from_static(b"\x01hello"))
        .await
        .unwrap();
    frame_from(&mut rx_b).await;
    let b_clone = b.clone();

    b.shutdown().await;
    // The inbound channel ends even though a clone of the handle is still alive...
    let end = tokio::time::timeout(WAIT, rx_b.recv())
        .await
        .expect("inbound never ended");
    assert!(end.is_none());
    // ...every send fails cleanly...
    assert!(matches!(
        b_clone.send_frame(a.local_addr(), Bytes::new()).await,
        Err(MeshError::ShutDown)
    ));
    assert!(matches!(
        b_clone.send_datagram(a.local_addr(), Bytes::new()),
        Err(MeshError::ShutDown)
    ));
    b_clone.shutdown().await; // idempotent
                              // ...the peer learns of it without waiting for its idle timeout...
    tokio::time::timeout(Duration::from_secs(2), async {
        while a.is_connected(addr) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("peer still thinks it is connected");
    // ...and the port can be bound again at once.
    let mut cfg = b_cfg;
    cfg.bind = addr;
    let (b2, mut rx_b2) = Mesh::bind(cfg)
        .await
        .expect("port not released by shutdown");
    a.send_frame(addr, Bytes::from_static(b"\x01back"))
        .await
        .unwrap();
    assert_eq!(&frame_from(&mut rx_b2).await.1[..], b"\x01back");
    drop(b_clone);
    a.shutdown().await;
    b2.shutdown().await;
}

#[tokio::test]
async fn config_and_material_are_validated() {
    let ca = Ca::generate().unwrap();
    let mut cfg = config(&ca);
    cfg.keep_alive = cfg.idle_timeout;
    assert!(matches!(Mesh::bind(cfg).await, Err(MeshError::Config(_))));
    let mut cfg = config(&ca);
    cfg.tls.key_pem = "not a key".into();
    assert!(matches!(Mesh::bind(cfg).await, Err(MeshError::Tls(_))));
    let missing = std::env::temp_dir().join("meridian-mesh-no-such-dir");
    assert!(matches!(
        TlsMaterial::load(&missing),
        Err(MeshError::Io { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_peer_that_restarts_is_detected_before_the_idle_timeout() {
    init_tracing();
    let ca = Ca::generate().unwrap();
    let (a, _rx_a) = node(&ca).await;
    let b_cfg = config(&ca);

    // Run b on a runtime of its own, so it can "crash": dropping that runtime kills its tasks
    // without any CONNECTION_CLOSE going out.
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    let (crash_tx, crash_rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = b_cfg.clone();
    let b_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (b, mut rx_b) = rt.block_on(Mesh::bind(cfg)).unwrap();
        bound_tx.send(b.local_addr()).unwrap();
        let first = rt.block_on(rx_b.recv());
        got_tx.send(first.is_some()).unwrap();
        crash_rx.blocking_recv().unwrap();
        drop(rt); // waits until its workers stopped: nothing of b runs any more
        drop(b);
        drop(rx_b);
    });
    let addr = bound_rx.await.unwrap();
    a.send_frame(addr, Bytes::from_static(b"\x01before"))
        .await
        .unwrap();
    assert!(got_rx.await.unwrap());
    crash_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || b_thread.join().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        a.is_connected(addr),
        "a crash sends no close: the old connection still looks alive"
    );

    let mut cfg = b_cfg;
    cfg.bind = addr;
    let (b2, mut rx_b2) = Mesh::bind(cfg)
        .await
        .expect("the crashed node's port is free");
    // b2 answers packets of the old connection with a stateless reset a accepts (same node key,
    // same reset key), so a reconnects well within its 10 s idle timeout.
    let started = tokio::time::Instant::now();
    let delivered = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            let _ = a.send_frame(addr, Bytes::from_static(b"\x01after")).await;
            if let Ok(Some(Inbound::Frame { bytes, .. })) =
                tokio::time::timeout(Duration::from_millis(100), rx_b2.recv()).await
            {
                break bytes;
            }
        }
    })
    .await
    .expect("the restarted peer was not reached before the idle timeout");
    assert_eq!(&delivered[..], b"\x01after");
    tracing::info!(elapsed = ?started.elapsed(), "reconnected after crash");
    a.shutdown().await;
    b2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_to_a_dead_peer_share_one_failed_dial() {
    init_tracing();
    let ca = Ca::generate().unwrap();
    let mut cfg = config(&ca);
    cfg.idle_timeout = Duration::from_secs(1); // also the handshake bound
    cfg.keep_alive = Duration::from_millis(300);
    let (a, _rx_a) = Mesh::bind(cfg).await.unwrap();
    let dead = std::net::UdpSocket::bind(local())
        .unwrap()
        .local_addr()
        .unwrap(); // now unbound

    let started = tokio::time::Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let a = a.clone();
        sends.spawn(async move { a.send_frame(dead, Bytes::from_static(b"\x01x")).await });
    }
    while let Some(sent) = sends.join_next().await {
        assert!(matches!(sent.unwrap(), Err(MeshError::Connect { .. })));
    }
    // One handshake timeout for all of them, not twenty in a row.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(!a.is_connected(dead));
    // The abandoned handshake drains inside quinn for 3 × PTO (~3 s without an RTT sample);
    // shutdown waits for that, and then the port is free.
    let addr = a.local_addr();
    let started = tokio::time::Instant::now();
    a.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let mut cfg = config(&ca);
    cfg.bind = addr;
    let (again, _rx) = Mesh::bind(cfg).await.expect("port released");
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_inbound_channel_holds_frames_and_drops_datagrams() {
    init_tracing();
    let ca = Ca::generate().unwrap();
    let (a, _rx_a) = node(&ca).await;
    let mut cfg = config(&ca);
    cfg.inbound_capacity = 4;
    let (b, mut rx_b) = Mesh::bind(cfg).await.unwrap();
    let to = b.local_addr();

    // Nobody reads rx_b: 4 frames fill the channel, the rest wait in their stream readers.
    for i in 0..50u8 {
        a.send_frame(to, Bytes::from(vec![1, i])).await.unwrap();
    }
    for _ in 0..20 {
        a.send_datagram(to, Bytes::from_static(b"\x01dgram"))
            .unwrap();
    }
    tokio::time::timeout(WAIT, async {
        while b.stats().inbound_datagrams_dropped == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("datagrams were not dropped while the channel was full");

    // Frames were held, not dropped: all 50 arrive once the consumer reads.
    let mut frames = HashSet::new();
    while frames.len() < 50 {
        if let Inbound::Frame { bytes, .. } = next(&mut rx_b).await {
            assert!(frames.insert(bytes[1]));
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}
