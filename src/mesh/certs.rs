//! Dev PKI: a deployment CA and node certificates signed by it (what `meridian certs` writes).
//!
//! Owns certificate generation and the on-disk layout:
//! - a CA directory holds `ca.pem` and `ca.key` ([`Ca::write`] / [`Ca::load`]), so more node
//!   certificates can be issued later from the same CA;
//! - a node directory holds `ca.pem`, `node.pem`, `node.key` ([`write_dir`], read back by
//!   [`TlsMaterial::load`]).
//!
//! Node certificates carry every requested name as a SAN (IP addresses become IP SANs, anything
//! else a DNS SAN) plus the DNS name [`SERVER_NAME`], and are valid for both server and client
//! authentication, since every node is both. Keys are ECDSA P-256.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::tls::{TlsMaterial, CA_FILE, CERT_FILE, KEY_FILE};
use super::{MeshError, SERVER_NAME};

/// File name of the CA's private key inside a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// A deployment certificate authority: its key and self-signed certificate.
pub struct Ca {
    key: KeyPair,
    cert_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("key", &"<redacted>").finish()
    }
}

/// The CA's certificate parameters.
///
/// Invariant: deterministic. Issuing from a loaded CA rebuilds the issuer from these parameters
/// and the stored key, so the subject written into every node certificate's issuer field matches
/// the subject of `ca.pem` byte for byte. [`Ca::load`] checks that with a trial issue.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Meridian");
    params
        .distinguished_name
        .push(DnType::CommonName, "Meridian deployment CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn gen_err(e: rcgen::Error) -> MeshError {
    MeshError::Tls(format!("certificate generation: {e}"))
}

impl Ca {
    /// A fresh CA with a new key.
    pub fn generate() -> Result<Ca, MeshError> {
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = ca_params().self_signed(&key).map_err(gen_err)?;
        Ok(Ca {
            key,
            cert_pem: cert.pem(),
        })
    }

    /// The CA certificate, PEM-encoded (what goes into every node's `ca.pem`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A node certificate and key signed by this CA, valid for `names` and [`SERVER_NAME`].
    pub fn issue(&self, names: &[String]) -> Result<TlsMaterial, MeshError> {
        let mut sans: Vec<String> = names.iter().map(|n| n.trim().to_string()).collect();
        sans.retain(|n| !n.is_empty());
        if !sans.iter().any(|n| n == SERVER_NAME) {
            sans.push(SERVER_NAME.to_string());
        }
        let mut params = CertificateParams::new(sans.clone()).map_err(gen_err)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Meridian");
        params
            .distinguished_name
            .push(DnType::CommonName, sans[0].as_str());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;

        let node_key = KeyPair::generate().map_err(gen_err)?;
        let ca_params = ca_params();
        let issuer = Issuer::from_params(&ca_params, &self.key);
        let cert = params.signed_by(&node_key, &issuer).map_err(gen_err)?;
        Ok(TlsMaterial {
            ca_cert_pem: self.cert_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: node_key.serialize_pem(),
        })
    }

    /// Writes `ca.pem` and `ca.key` (mode 0600) into `dir`, creating it.
    pub fn write(&self, dir: &Path) -> Result<(), MeshError> {
        create_dir(dir)?;
        write_file(&dir.join(CA_FILE), &self.cert_pem, false)?;
        write_file(&dir.join(CA_KEY_FILE), &self.key.serialize_pem(), true)
    }

    /// Loads a CA written by [`Ca::write`] and checks that it can still issue certificates that
    /// verify against its `ca.pem` (a CA made by another tool is refused).
    pub fn load(dir: &Path) -> Result<Ca, MeshError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|e| MeshError::io(format!("reading {}", path.display()), e))
        };
        let cert_pem = read(CA_FILE)?;
        let key = KeyPair::from_pem(&read(CA_KEY_FILE)?)
            .map_err(|e| MeshError::Tls(format!("{}: {e}", dir.join(CA_KEY_FILE).display())))?;
        let ca = Ca { key, cert_pem };
        ca.self_check()
            .map_err(|e| MeshError::Tls(format!("CA in {} is unusable: {e}", dir.display())))?;
        Ok(ca)
    }

    /// Issues a throwaway certificate and verifies it against `ca.pem` with rustls' own verifier.
    fn self_check(&self) -> Result<(), MeshError> {
        let trial = self.issue(&[])?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()) {
            let cert = cert.map_err(|e| MeshError::Tls(e.to_string()))?;
            roots.add(cert).map_err(|e| MeshError::Tls(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| MeshError::Tls(e.to_string()))?;
        let leaf = CertificateDer::pem_slice_iter(trial.cert_pem.as_bytes())
            .next()
            .ok_or_else(|| MeshError::Tls("trial certificate missing".into()))?
            .map_err(|e| MeshError::Tls(e.to_string()))?;
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| MeshError::Tls(e.to_string()))?;
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .map_err(|e| MeshError::Tls(format!("trial certificate rejected: {e}")))?;
        Ok(())
    }
}

/// Writes a node's `ca.pem`, `node.pem` and `node.key` (mode 0600) into `dir`, creating it.
pub fn write_dir(dir: &Path, material: &TlsMaterial) -> Result<(), MeshError> {
    create_dir(dir)?;
    write_file(&dir.join(CA_FILE), &material.ca_cert_pem, false)?;
    write_file(&dir.join(CERT_FILE), &material.cert_pem, false)?;
    write_file(&dir.join(KEY_FILE), &material.key_pem, true)
}

fn create_dir(dir: &Path) -> Result<(), MeshError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| MeshError::io(format!("creating {}", dir.display()), e))
}

/// Replaces `path` with `contents`; a private file is created readable by its owner only.
fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), MeshError> {
    let err = |e| MeshError::io(format!("writing {}", path.display()), e);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_material_parses_and_ca_round_trips() {
        let ca = Ca::generate().unwrap();
        let node = ca
            .issue(&["127.0.0.1".into(), "node-a.example".into()])
            .unwrap();
        node.rustls_server_config().unwrap();
        node.rustls_client_config().unwrap();

        let dir = std::env::temp_dir().join(format!("meridian-mesh-certs-{}", std::process::id()));
        ca.write(&dir).unwrap();
        let loaded = Ca::load(&dir).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        let later = loaded.issue(&["10.0.0.1".into()]).unwrap();
        write_dir(&dir.join("node"), &later).unwrap();
        let back = TlsMaterial::load(&dir.join("node")).unwrap();
        assert_eq!(back.cert_pem, later.cert_pem);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_foreign_ca_key_is_refused_on_load() {
        let a = Ca::generate().unwrap();
        let b = Ca::generate().unwrap();
        let dir = std::env::temp_dir().join(format!("meridian-mesh-mixed-{}", std::process::id()));
        a.write(&dir).unwrap();
        std::fs::write(dir.join(CA_KEY_FILE), b.key.serialize_pem()).unwrap();
        assert!(Ca::load(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
