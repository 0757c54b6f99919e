//! The UDP relay on its own, with plain sockets standing for nodes: forwarding and answers,
//! partitions (both ways and one way), isolation, healing, duplication, delay, reordering by
//! jitter, and that dropping a relay stops it.

use crate::relay::{Net, Relay};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// How long a test waits to conclude that a packet was dropped.
const QUIET: Duration = Duration::from_millis(300);

async fn sock() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("bind")
}

fn port(s: &UdpSocket) -> u16 {
    s.local_addr().unwrap().port()
}

/// Receives one datagram within `limit` (None if nothing came).
async fn recv(s: &UdpSocket, limit: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(limit, s.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
        _ => None,
    }
}

/// A "node" socket, a "client" socket and a relay in front of the node; the client is in
/// group `x`, the node in group `y`.
async fn setup() -> (Arc<Net>, Relay, UdpSocket, UdpSocket) {
    let net = Net::new();
    let node = sock().await;
    let client = sock().await;
    net.register(port(&client), "x");
    net.register(port(&node), "y");
    let relay = Relay::start(net.clone(), node.local_addr().unwrap()).await;
    (net, relay, node, client)
}

/// Sends `msg` from the client through the relay; returns what the node got and from where.
async fn client_to_node(
    relay: &Relay,
    node: &UdpSocket,
    client: &UdpSocket,
    msg: &[u8],
) -> Option<(Vec<u8>, SocketAddr)> {
    client.send_to(msg, relay.addr()).await.unwrap();
    recv(node, QUIET).await
}

#[tokio::test]
async fn forwards_and_answers_through_the_listening_port() {
    let (_net, relay, node, client) = setup().await;
    let (got, upstream) = client_to_node(&relay, &node, &client, b"ping")
        .await
        .expect("forwarded");
    assert_eq!(got, b"ping");
    assert_ne!(
        upstream,
        client.local_addr().unwrap(),
        "the node sees the relay's upstream socket"
    );
    node.send_to(b"pong", upstream).await.unwrap();
    let (got, from) = recv(&client, Duration::from_secs(2))
        .await
        .expect("answer relayed");
    assert_eq!(got, b"pong");
    assert_eq!(from, relay.addr(), "answers come from the announced port");
    // A second client gets its own upstream socket, and answers go to the right client.
    let other = sock().await;
    let (_, up2) = client_to_node(&relay, &node, &other, b"two")
        .await
        .expect("forwarded");
    assert_ne!(up2, upstream);
    node.send_to(b"for-two", up2).await.unwrap();
    assert_eq!(
        recv(&other, Duration::from_secs(2)).await.unwrap().0,
        b"for-two"
    );
    assert!(
        recv(&client, QUIET).await.is_none(),
        "the first client got another's answer"
    );
}

#[tokio::test]
async fn partition_drops_both_ways_until_healed() {
    let (net, relay, node, client) = setup().await;
    let (_, upstream) = client_to_node(&relay, &node, &client, b"before")
        .await
        .expect("forwarded");
    net.partition(&["x"], &["y"]);
    assert!(client_to_node(&relay, &node, &client, b"cut")
        .await
        .is_none());
    node.send_to(b"cut-back", upstream).await.unwrap();
    assert!(recv(&client, QUIET).await.is_none());
    assert!(net.counts().1 >= 2, "drops are counted: {:?}", net.counts());
    net.heal();
    assert_eq!(
        client_to_node(&relay, &node, &client, b"after")
            .await
            .unwrap()
            .0,
        b"after"
    );
    node.send_to(b"back", upstream).await.unwrap();
    assert_eq!(
        recv(&client, Duration::from_secs(2)).await.unwrap().0,
        b"back"
    );
}

#[tokio::test]
async fn one_way_block_and_isolation() {
    let (net, relay, node, client) = setup().await;
    let (_, upstream) = client_to_node(&relay, &node, &client, b"hello")
        .await
        .expect("forwarded");
    net.block_one_way(&["y"], &["x"]);
    assert_eq!(
        client_to_node(&relay, &node, &client, b"x->y")
            .await
            .unwrap()
            .0,
        b"x->y"
    );
    node.send_to(b"y->x", upstream).await.unwrap();
    assert!(recv(&client, QUIET).await.is_none(), "y -> x is blocked");
    net.heal();
    net.isolate(port(&node));
    assert!(client_to_node(&relay, &node, &client, b"iso")
        .await
        .is_none());
    net.heal();
    // Groups not involved in a partition are unaffected.
    net.partition(&["z"], &["y"]);
    assert_eq!(
        client_to_node(&relay, &node, &client, b"ok")
            .await
            .unwrap()
            .0,
        b"ok"
    );
}

#[tokio::test]
async fn duplicates_delays_and_reorders() {
    let (net, relay, node, client) = setup().await;
    net.set_duplicate(1.0);
    assert!(client_to_node(&relay, &node, &client, b"dup")
        .await
        .is_some());
    assert_eq!(
        recv(&node, Duration::from_secs(2))
            .await
            .expect("second copy")
            .0,
        b"dup"
    );
    net.clear_impairments();

    net.set_delay(Duration::from_millis(150));
    let t = Instant::now();
    let (_, upstream) = client_to_node(&relay, &node, &client, b"slow")
        .await
        .expect("forwarded");
    node.send_to(b"slow-back", upstream).await.unwrap();
    recv(&client, Duration::from_secs(2)).await.expect("answer");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "two delayed hops took {:?}",
        t.elapsed()
    );
    net.clear_impairments();

    net.set_jitter(Duration::from_millis(40));
    for i in 0..40u8 {
        client.send_to(&[i], relay.addr()).await.unwrap();
    }
    let mut order = Vec::new();
    while order.len() < 40 {
        let (b, _) = recv(&node, Duration::from_secs(2))
            .await
            .expect("every packet arrives");
        order.push(b[0]);
    }
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, (0..40).collect::<Vec<u8>>());
    assert_ne!(order, sorted, "jitter reordered nothing");
}

#[tokio::test]
async fn dropping_the_relay_stops_it() {
    let (_net, relay, node, client) = setup().await;
    client_to_node(&relay, &node, &client, b"x")
        .await
        .expect("forwarded");
    let addr = relay.addr();
    drop(relay);
    // Its tasks end and release the listening port; nothing is forwarded any more.
    let released = crate::common::eventually(Duration::from_secs(5), || async move {
        std::net::UdpSocket::bind(addr).is_ok()
    })
    .await;
    assert!(released, "the relay's port is still bound after drop");
    client.send_to(b"late", addr).await.unwrap();
    assert!(recv(&node, QUIET).await.is_none());
}
