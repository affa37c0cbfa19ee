//! TLS configuration (rustls, ring provider) and peer identity.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use x509_cert::der::Decode;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::error::TlsError;

/// The provider is chosen explicitly: the process may link both ring and
/// aws-lc-rs, and then rustls refuses to guess a process default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server-side TLS settings for [`crate::MllpListener`].
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// Uses a ready-made rustls configuration as is. If it requests
    /// client certificates, verified ones become [`PeerIdentity`].
    pub fn from_server_config(config: Arc<rustls::ServerConfig>) -> Self {
        Self { config }
    }

    /// Builds a configuration from PEM text: the server's certificate
    /// chain (leaf first) and private key, and optionally a CA bundle.
    /// With a CA bundle, clients must present a certificate that chains
    /// to it, or the handshake fails.
    pub fn from_pem(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: Option<&[u8]>,
    ) -> Result<Self, TlsError> {
        let chain = parse_certs(cert_chain_pem, "certificate chain")?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificates);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Pem {
            what: "private key",
            source,
        })?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let config = match client_ca_pem {
            Some(ca_pem) => {
                let roots = root_store(ca_pem)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()?;
                builder
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain, key)?
            }
            None => builder.with_no_client_auth().with_single_cert(chain, key)?,
        };
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// As [`ServerTls::from_pem`], reading the PEM text from files.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
        client_ca: Option<&Path>,
    ) -> Result<Self, TlsError> {
        let chain = read_file(cert_chain.as_ref())?;
        let key = read_file(key.as_ref())?;
        let ca = client_ca.map(read_file).transpose()?;
        Self::from_pem(&chain, &key, ca.as_deref())
    }

    /// The rustls configuration in use.
    pub fn server_config(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }
}

/// Client-side TLS settings for [`crate::MllpClient`].
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    /// Uses a ready-made rustls configuration as is.
    pub fn from_client_config(config: Arc<rustls::ClientConfig>) -> Self {
        Self { config }
    }

    /// Trusts the CAs in `ca_pem`; with `identity` (certificate chain
    /// PEM, private key PEM) presents a client certificate.
    pub fn from_pem(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<Self, TlsError> {
        let roots = root_store(ca_pem)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match identity {
            Some((chain_pem, key_pem)) => {
                let chain = parse_certs(chain_pem, "certificate chain")?;
                if chain.is_empty() {
                    return Err(TlsError::NoCertificates);
                }
                let key =
                    PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Pem {
                        what: "private key",
                        source,
                    })?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// The rustls configuration in use.
    pub fn client_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }
}

pub(crate) fn parse_server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::InvalidServerName(name.to_owned()))
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

fn parse_certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what, source })
}

fn root_store(ca_pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem, "CA bundle")? {
        roots.add(cert).map_err(TlsError::InvalidCa)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCaCertificates);
    }
    Ok(roots)
}

/// Who is on the other end of a TLS connection, from the client
/// certificate the handshake verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Subject distinguished name, RFC 4514 style (e.g. `CN=lab-1,O=Acme`).
    pub subject: String,
    /// DNS names from the subjectAltName extension.
    pub dns_names: Vec<String>,
    /// SHA-256 of the certificate's DER encoding.
    pub sha256: [u8; 32],
    /// The certificate itself, for checks this type does not cover.
    pub certificate: CertificateDer<'static>,
}

impl PeerIdentity {
    /// Reads subject, DNS names and fingerprint from a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, TlsError> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let tbs = &cert.tbs_certificate;
        let subject = tbs.subject.to_string();
        let dns_names = match tbs
            .get::<SubjectAltName>()
            .map_err(|e| TlsError::Certificate(e.to_string()))?
        {
            Some((_critical, san)) => san
                .0
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DnsName(dns) => Some(dns.as_str().to_owned()),
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(Self {
            subject,
            dns_names,
            sha256: Sha256::digest(der).into(),
            certificate: CertificateDer::from(der.to_vec()),
        })
    }

    /// The SHA-256 fingerprint as lowercase hex without separators.
    pub fn sha256_hex(&self) -> String {
        self.sha256
            .iter()
            .fold(String::with_capacity(64), |mut out, byte| {
                // Writing to a String cannot fail.
                let _ = write!(out, "{byte:02x}");
                out
            })
    }
}
