//! Error types. Malformed inbound bytes are not errors (see
//! [`crate::Inbound`]); these cover I/O, configuration and payloads that
//! cannot be framed.

use std::io;
use std::path::PathBuf;

/// Errors from [`crate::MllpCodec`].
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The underlying transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The payload holds a start-block byte, which would start a new
    /// frame at the receiver.
    #[error("payload contains a start-block byte (0x0B) at offset {offset}")]
    StartBlockInPayload {
        /// Offset of the byte in the payload.
        offset: usize,
    },
    /// The payload holds the end-block sequence, which would end the
    /// frame early at the receiver.
    #[error("payload contains the end-block sequence (0x1C 0x0D) at offset {offset}")]
    EndBlockInPayload {
        /// Offset of the 0x1C in the payload.
        offset: usize,
    },
}

/// Errors building TLS configuration or reading a peer certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// PEM text could not be parsed.
    #[error("invalid PEM in {what}: {source}")]
    Pem {
        /// Which input ("certificate chain", "private key", "CA bundle").
        what: &'static str,
        /// The cause.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate chain PEM held no certificate.
    #[error("no certificate found in the certificate chain")]
    NoCertificates,
    /// The CA bundle PEM held no usable certificate.
    #[error("no CA certificate found in the CA bundle")]
    NoCaCertificates,
    /// A CA certificate was rejected as a trust anchor.
    #[error("invalid CA certificate: {0}")]
    InvalidCa(#[source] rustls::Error),
    /// rustls rejected the configuration (e.g. key does not match).
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// A peer certificate could not be parsed.
    #[error("cannot parse peer certificate: {0}")]
    Certificate(String),
    /// A server name for TLS client connections is not a valid DNS name
    /// or IP address.
    #[error("invalid TLS server name {0:?}")]
    InvalidServerName(String),
}

/// Errors from [`crate::MllpListener`].
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// Binding the listening socket failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A configuration value is unusable.
    #[error("invalid listener configuration: {0}")]
    Config(&'static str),
}

/// Errors from [`crate::MllpClient`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The payload cannot be framed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The operation did not finish within the client's timeout.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The server closed the connection before a reply frame arrived.
    #[error("connection closed by peer before a reply")]
    Closed,
    /// The server sent a frame the client could not accept.
    #[error("malformed reply: {0:?}")]
    MalformedReply(crate::Inbound),
}
