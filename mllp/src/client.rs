//! A small MLLP client: one request, one reply, in order.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_rustls::TlsConnector;
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{Inbound, MllpCodec};
use crate::error::ClientError;
use crate::listener::{Io, READ_CHUNK};
use crate::tls::{ClientTls, parse_server_name};

/// Default limit for connecting and for each exchange.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// An MLLP connection from the client side.
pub struct MllpClient {
    stream: Box<dyn Io>,
    codec: MllpCodec,
    buf: BytesMut,
    eof: bool,
    timeout: Duration,
}

impl std::fmt::Debug for MllpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MllpClient")
            .field("timeout", &self.timeout)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl MllpClient {
    /// Connects over plain TCP. `timeout` bounds the connect and, later,
    /// each [`send`](Self::send) / [`receive`](Self::receive).
    pub async fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> Result<Self, ClientError> {
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        // One frame per exchange: do not wait to coalesce.
        tcp.set_nodelay(true)?;
        Ok(Self::from_stream(Box::new(tcp), timeout))
    }

    /// Connects over TLS, checking the server certificate against
    /// `server_name` (a DNS name or IP address).
    pub async fn connect_tls(
        addr: impl ToSocketAddrs,
        server_name: &str,
        tls: &ClientTls,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let name = parse_server_name(server_name)?;
        let connector = TlsConnector::from(std::sync::Arc::clone(tls.client_config()));
        let connect = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            connector.connect(name, tcp).await
        };
        let stream = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        Ok(Self::from_stream(Box::new(stream), timeout))
    }

    fn from_stream(stream: Box<dyn Io>, timeout: Duration) -> Self {
        Self {
            stream,
            codec: MllpCodec::new(),
            buf: BytesMut::new(),
            eof: false,
            timeout,
        }
    }

    /// Changes the per-exchange timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Changes the payload cap applied to replies.
    pub fn set_max_reply(&mut self, max_payload: usize) {
        self.codec = MllpCodec::with_max_payload(max_payload);
    }

    /// Sends one frame and waits for one reply frame.
    pub async fn send(&mut self, payload: &[u8]) -> Result<Bytes, ClientError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, async {
            self.write(payload).await?;
            self.read_frame().await
        })
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Sends one frame without waiting for a reply.
    pub async fn send_no_reply(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.write(payload))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Waits for the next frame from the server.
    pub async fn receive(&mut self) -> Result<Bytes, ClientError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.read_frame())
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Closes the connection (TLS close_notify, then FIN).
    pub async fn close(mut self) -> Result<(), ClientError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.stream.shutdown())
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        Ok(())
    }

    async fn write(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let mut out = BytesMut::new();
        self.codec.encode(payload, &mut out)?;
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        Ok(())
    }

    async fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        loop {
            let item = if self.eof {
                self.codec.decode_eof(&mut self.buf)?
            } else {
                self.codec.decode(&mut self.buf)?
            };
            match item {
                Some(Inbound::Frame(payload)) => return Ok(payload),
                // Noise around a good reply does not spoil it.
                Some(Inbound::Noise { .. }) => continue,
                Some(other) => return Err(ClientError::MalformedReply(other)),
                None if self.eof => return Err(ClientError::Closed),
                None => {}
            }
            self.buf.reserve(READ_CHUNK);
            let n = (&mut self.stream)
                .take(READ_CHUNK as u64)
                .read_buf(&mut self.buf)
                .await?;
            if n == 0 {
                self.eof = true;
            }
        }
    }
}
