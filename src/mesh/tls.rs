//! TLS material and the rustls/quinn configuration built from it.
//!
//! Owns: loading a node's PEM files, the mutual-TLS policy (TLS 1.3 only, the `ring` provider,
//! client certificates required and verified against the deployment CA, servers verified against
//! the same CA under the name [`SERVER_NAME`](super::SERVER_NAME)), the QUIC transport tuning, and the endpoint's
//! stateless-reset key.
//!
//! Every config is built with an explicit `ring` [`CryptoProvider`], so the mesh never depends on
//! (nor installs) a process-wide default provider.

use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use super::{MeshConfig, MeshError};

/// Per-stream receive window: one large frame can stream without waiting for window updates on
/// a WAN path (≈ 150 ms × 1 Gb/s).
const STREAM_RECEIVE_WINDOW: u32 = 16 * 1024 * 1024;
/// Connection-wide receive window and send buffer.
const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;
/// Many small replication frames may be in flight at once, one uni stream each.
const MAX_CONCURRENT_UNI_STREAMS: u32 = 1024;
const MAX_CONCURRENT_BI_STREAMS: u32 = 256;
/// Bytes of received datagrams quinn buffers before dropping the oldest.
const DATAGRAM_BUFFER: usize = 1024 * 1024;

/// A node's certificate and key, plus the deployment CA that every peer must chain to.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca_cert_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    /// Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field(
                "ca_cert_pem",
                &format_args!("{} bytes", self.ca_cert_pem.len()),
            )
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// File names inside a node's certificate directory.
pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "node.pem";
pub const KEY_FILE: &str = "node.key";

impl TlsMaterial {
    /// Loads ca.pem, node.pem, node.key from a directory.
    pub fn load(dir: &Path) -> Result<Self, MeshError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|e| MeshError::io(format!("reading {}", path.display()), e))
        };
        let material = TlsMaterial {
            ca_cert_pem: read(CA_FILE)?,
            cert_pem: read(CERT_FILE)?,
            key_pem: read(KEY_FILE)?,
        };
        // Fail at load time, with the directory in the message, rather than at bind.
        material
            .parse()
            .map_err(|e| MeshError::Tls(format!("{}: {e}", dir.display())))?;
        Ok(material)
    }

    /// The CA roots, this node's chain and its key, parsed from PEM.
    fn parse(&self) -> Result<Parsed, MeshError> {
        let ca = parse_certs(&self.ca_cert_pem, "CA certificate")?;
        let chain = parse_certs(&self.cert_pem, "node certificate")?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| MeshError::Tls(format!("node key: {e}")))?;
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots
                .add(cert)
                .map_err(|e| MeshError::Tls(format!("CA certificate unusable: {e}")))?;
        }
        Ok(Parsed {
            roots: Arc::new(roots),
            chain,
            key,
        })
    }

    /// The rustls server side: our certificate, and client certificates required and verified
    /// against the deployment CA.
    pub fn rustls_server_config(&self) -> Result<rustls::ServerConfig, MeshError> {
        let Parsed { roots, chain, key } = self.parse()?;
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| MeshError::Tls(format!("client verifier: {e}")))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(tls_err)?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }

    /// The rustls client side: servers verified against the deployment CA, our certificate
    /// presented for client authentication.
    pub fn rustls_client_config(&self) -> Result<rustls::ClientConfig, MeshError> {
        let Parsed { roots, chain, key } = self.parse()?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(tls_err)?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }

    /// A quinn client config (mutual TLS + the mesh transport), e.g. for tools and tests that
    /// talk to a mesh with a bare quinn endpoint. Dial with server name [`SERVER_NAME`](super::SERVER_NAME).
    pub fn quic_client_config(&self, cfg: &MeshConfig) -> Result<quinn::ClientConfig, MeshError> {
        let crypto = QuicClientConfig::try_from(self.rustls_client_config()?).map_err(tls_err)?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(Arc::new(transport(cfg)?));
        Ok(client)
    }

    /// The quinn server config (mutual TLS + the mesh transport).
    pub fn quic_server_config(&self, cfg: &MeshConfig) -> Result<quinn::ServerConfig, MeshError> {
        let crypto = QuicServerConfig::try_from(self.rustls_server_config()?).map_err(tls_err)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(transport(cfg)?));
        Ok(server)
    }

    /// The endpoint config, with a stateless-reset key derived from this node's private key.
    ///
    /// Invariant: the key is stable across restarts of the same node, so when a node restarts on
    /// the same address it answers its peers' packets for the old connections with a stateless
    /// reset they accept, and they drop those connections at once instead of after the idle
    /// timeout. The key is a hash of secret material, so it discloses nothing.
    pub(crate) fn endpoint_config(&self) -> quinn::EndpointConfig {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"meridian mesh stateless reset v1\0");
        ctx.update(self.key_pem.as_bytes());
        let secret = ctx.finish();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_ref());
        quinn::EndpointConfig::new(Arc::new(key))
    }
}

/// ALPN protocol id of the mesh; a peer speaking something else fails the handshake.
const ALPN: &[u8] = b"meridian-mesh/1";

struct Parsed {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> MeshError {
    MeshError::Tls(e.to_string())
}

fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, MeshError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MeshError::Tls(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(MeshError::Tls(format!("{what}: no certificate in PEM")));
    }
    Ok(certs)
}

/// The QUIC transport shared by both directions (reference notes §5).
///
/// Invariant (checked by [`MeshConfig::validate`]): keep-alive is below the idle timeout, so a
/// healthy but quiet connection never idles out.
pub(crate) fn transport(cfg: &MeshConfig) -> Result<TransportConfig, MeshError> {
    cfg.validate()?;
    let idle = IdleTimeout::try_from(cfg.idle_timeout)
        .map_err(|_| MeshError::Config(format!("idle_timeout {:?} too large", cfg.idle_timeout)))?;
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(cfg.keep_alive))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_CONCURRENT_UNI_STREAMS))
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_CONCURRENT_BI_STREAMS))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(u64::from(CONNECTION_WINDOW))
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_BUFFER);
    Ok(t)
}
