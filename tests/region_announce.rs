//! `region-announce-addr`: a region behind a WAN gateway (the compose demo in `regions/`).
//!
//! Region `a` (two primaries) and region `b` (one node). Every node publishes two mesh
//! addresses: its own (`cluster-port`, used inside its region) and a relay in front of it
//! (`region-announce-addr`, used by the other regions). The relays stand for the WAN gateway:
//! cutting a's nodes off at the relays must stop replication between the regions while region
//! `a` itself keeps working, and healing the relays must bring the writes over.
//! If the other region dialled the direct address, the cut would change nothing; if region `a`
//! used the relay addresses inside itself, it would lose its cluster state.

mod common;
#[path = "common/relay.rs"]
mod relay;

use common::cluster::{free_ports, key_slot, serial, shared_pki, ClusterNode, NodeSpec};
use common::{eventually, info_field};
use relay::{Net, Relay};
use std::time::Duration;

type Con = redis::aio::MultiplexedConnection;

async fn get(con: &mut Con, key: &str) -> Option<String> {
    q!(*con, "GET", key).expect("GET")
}

async fn cluster_ok(con: &mut Con) -> bool {
    let info: String = q!(*con, "CLUSTER", "INFO").expect("CLUSTER INFO");
    info_field(&info, "cluster_state").as_deref() == Some("ok")
}

/// A key whose slot node 0 of region `a` owns (even split: slots 0-8191).
fn key_in_a1(prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .find(|k| key_slot(k.as_bytes()) < 8192)
        .expect("some key hashes low")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_regions_dial_the_region_address_and_the_region_its_own() {
    let _serial = serial().lock_owned().await;
    let net = Net::new();
    let tls = shared_pki();
    let ports = free_ports(3);
    let mut relays = Vec::new();
    for (i, (_, mesh)) in ports.iter().enumerate() {
        let target = format!("127.0.0.1:{mesh}").parse().unwrap();
        relays.push(Relay::start(net.clone(), target).await);
        net.register(*mesh, if i < 2 { "a" } else { "b" });
    }
    let a_nodes = format!(
        "127.0.0.1:{}@{} 127.0.0.1:{}@{}",
        ports[0].0, ports[0].1, ports[1].0, ports[1].1
    );
    let b_nodes = format!("127.0.0.1:{}@{}", ports[2].0, ports[2].1);
    let spec = |i: usize, region: &str, nodes: &str, peer: u16| NodeSpec {
        resp_port: ports[i].0,
        mesh_port: ports[i].1,
        region: region.to_string(),
        cluster_nodes: nodes.to_string(),
        replicas: 0,
        tls_dir: tls.clone(),
        extra: vec![
            (
                "region-announce-addr".into(),
                format!("127.0.0.1:{}", relays[i].port()),
            ),
            ("region-peers".into(), format!("127.0.0.1:{peer}")),
        ],
    };
    let a1 = ClusterNode::start(&spec(0, "a", &a_nodes, relays[2].port())).await;
    let a2 = ClusterNode::start(&spec(1, "a", &a_nodes, relays[2].port())).await;
    let b = ClusterNode::start(&spec(2, "b", &b_nodes, relays[0].port())).await;
    for n in [&a1, &a2, &b] {
        assert!(
            n.wait_serving(common::cluster::FORM_TIMEOUT).await,
            "a node never served"
        );
    }
    let (mut ca, mut cb) = (a1.con().await, b.con().await);

    // Connected through the relays: a write in a reaches b.
    let k1 = key_in_a1("before");
    let _: () = q!(ca, "SET", &k1, "from-a").unwrap();
    assert!(
        eventually(Duration::from_secs(30), || {
            let mut cb = cb.clone();
            let k1 = k1.clone();
            async move { get(&mut cb, &k1).await.as_deref() == Some("from-a") }
        })
        .await,
        "the write never reached region b through the relays"
    );
    let (fwd_before, _) = net.counts();
    assert!(fwd_before > 0, "cross-region traffic bypassed the relays");

    // The gateway goes dark for region a's nodes.
    net.isolate(ports[0].1);
    net.isolate(ports[1].1);
    let k2 = key_in_a1("during");
    let _: () = q!(ca, "SET", &k2, "cut-off").unwrap();
    // Three node timeouts: long enough for a's nodes to judge each other down if their own
    // traffic went through the relays.
    tokio::time::sleep(Duration::from_millis(3 * common::cluster::NODE_TIMEOUT_MS)).await;
    assert_eq!(
        get(&mut cb, &k2).await,
        None,
        "region b got a write while the gateway was cut: it dialled a's direct address"
    );
    let mut ca2 = a2.con().await;
    assert!(
        cluster_ok(&mut ca).await && cluster_ok(&mut ca2).await,
        "region a lost its cluster state: its nodes talked through the region gateway"
    );

    // Healed: the write made during the cut arrives.
    net.heal();
    assert!(
        eventually(Duration::from_secs(30), || {
            let mut cb = cb.clone();
            let k2 = k2.clone();
            async move { get(&mut cb, &k2).await.as_deref() == Some("cut-off") }
        })
        .await,
        "the write made during the cut never reached region b after the heal"
    );
    b.shutdown().await;
    a2.shutdown().await;
    a1.shutdown().await;
}

#[tokio::test]
async fn a_bad_region_announce_addr_is_refused_at_start() {
    let ports = free_ports(1);
    let overrides = vec![
        ("port".to_string(), ports[0].0.to_string()),
        ("cluster-enabled".into(), "yes".into()),
        (
            "cluster-tls-dir".into(),
            shared_pki().to_string_lossy().into(),
        ),
        ("region-announce-addr".into(), "not an address".into()),
    ];
    let config = meridian::config::Config::layered(None, false, &overrides).unwrap();
    let err = match meridian::server::spawn(config).await {
        Ok(_) => panic!("a node started with region-announce-addr 'not an address'"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("region-announce-addr 'not an address' is not host:port"),
        "{err}"
    );
}
