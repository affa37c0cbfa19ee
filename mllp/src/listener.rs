//! MLLP server: accepts TCP (optionally TLS) connections and hands each
//! decoded [`Inbound`] to a [`Handler`], one at a time per connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::codec::{DEFAULT_MAX_PAYLOAD, Inbound, MllpCodec};
use crate::error::ListenerError;
use crate::tls::{PeerIdentity, ServerTls};

/// Upper bound on one socket read, so the buffer grows in steps the
/// decoder sees (and caps) rather than in one large jump.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// Any byte stream a connection can run over (plain TCP or TLS).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Listener settings.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// Label for logs and [`FrameContext::listener`].
    pub name: String,
    /// Address to listen on.
    pub bind: SocketAddr,
    /// TLS settings; `None` for plain TCP.
    pub tls: Option<ServerTls>,
    /// Close a connection after this long without receiving a byte while
    /// waiting for input. `None` disables the timeout.
    pub idle_timeout: Option<Duration>,
    /// Limit on the TLS handshake.
    pub handshake_timeout: Duration,
    /// Limit on writing one reply; a peer that stops reading is dropped
    /// so it cannot hold a connection (or shutdown) forever.
    pub write_timeout: Duration,
    /// Connections served at once; further ones are accepted and closed
    /// at once, so clients fail fast instead of waiting in the backlog.
    pub max_connections: usize,
    /// Payload cap per frame; see [`Inbound::TooLarge`].
    pub max_payload: usize,
}

impl ListenerConfig {
    /// Plain TCP on `bind` with defaults: 5 min idle timeout, 10 s
    /// handshake timeout, 30 s write timeout, 256 connections, 16 MiB
    /// payload cap.
    pub fn new(name: impl Into<String>, bind: SocketAddr) -> Self {
        Self {
            name: name.into(),
            bind,
            tls: None,
            idle_timeout: Some(Duration::from_secs(300)),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }

    /// Serves TLS with these settings.
    pub fn with_tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the idle timeout (`None` disables it).
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets the TLS handshake timeout.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets the reply write timeout.
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets the concurrent connection limit.
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets the payload cap.
    pub fn with_max_payload(mut self, max: usize) -> Self {
        self.max_payload = max;
        self
    }
}

/// What the handler learns about the connection an item arrived on.
#[derive(Clone, Debug)]
pub struct FrameContext {
    /// Listener-unique connection number, from 1.
    pub connection_id: u64,
    /// Position of this item on its connection, from 0.
    pub sequence: u64,
    /// Remote socket address.
    pub peer_addr: SocketAddr,
    /// Verified client certificate, on TLS connections that presented one.
    pub peer_identity: Option<Arc<PeerIdentity>>,
    /// [`ListenerConfig::name`].
    pub listener: Arc<str>,
    /// When the item was fully received.
    pub received_at: Instant,
}

/// What to do after handling an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Frame and send this payload.
    Send(Bytes),
    /// Send nothing; read the next item.
    None,
    /// Send nothing and close the connection.
    Close,
    /// Frame and send this payload, then close the connection.
    SendAndClose(Bytes),
}

impl From<Option<Bytes>> for Reply {
    fn from(reply: Option<Bytes>) -> Self {
        match reply {
            Some(payload) => Reply::Send(payload),
            None => Reply::None,
        }
    }
}

/// Processes inbound items. Calls on one connection never overlap: the
/// next item is read only after the previous reply has been written.
///
/// Implemented for every `Fn(FrameContext, Inbound) -> impl Future<Output = Reply>`.
pub trait Handler: Send + Sync + 'static {
    /// Handles one item and says what to send back.
    fn handle(&self, ctx: FrameContext, inbound: Inbound) -> impl Future<Output = Reply> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(FrameContext, Inbound) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send,
{
    fn handle(&self, ctx: FrameContext, inbound: Inbound) -> impl Future<Output = Reply> + Send {
        self(ctx, inbound)
    }
}

/// A bound MLLP listener, ready to [`serve`](MllpListener::serve).
#[derive(Debug)]
pub struct MllpListener {
    tcp: TcpListener,
    config: ListenerConfig,
}

/// Settings every connection task reads.
struct Shared {
    name: Arc<str>,
    acceptor: Option<TlsAcceptor>,
    idle_timeout: Option<Duration>,
    handshake_timeout: Duration,
    write_timeout: Duration,
    max_payload: usize,
}

impl MllpListener {
    /// Binds `config.bind`.
    pub async fn bind(config: ListenerConfig) -> Result<Self, ListenerError> {
        let tcp = TcpListener::bind(config.bind)
            .await
            .map_err(|source| ListenerError::Bind {
                addr: config.bind,
                source,
            })?;
        Self::from_tcp(tcp, config)
    }

    /// Uses an already bound socket; `config.bind` is ignored.
    pub fn from_tcp(tcp: TcpListener, config: ListenerConfig) -> Result<Self, ListenerError> {
        if config.max_connections == 0 {
            return Err(ListenerError::Config("max_connections must be at least 1"));
        }
        Ok(Self { tcp, config })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts and serves connections until `shutdown` is cancelled.
    ///
    /// On shutdown it stops accepting at once. Connections waiting for
    /// input close; a connection whose handler is running lets it finish
    /// and writes its reply, then closes. Returns when every connection
    /// has closed.
    pub async fn serve<H: Handler>(self, handler: H, shutdown: CancellationToken) {
        let Self { tcp, config } = self;
        let shared = Arc::new(Shared {
            name: Arc::from(config.name.as_str()),
            acceptor: config
                .tls
                .as_ref()
                .map(|tls| TlsAcceptor::from(Arc::clone(tls.server_config()))),
            idle_timeout: config.idle_timeout,
            handshake_timeout: config.handshake_timeout,
            write_timeout: config.write_timeout,
            max_payload: config.max_payload,
        });
        let handler = Arc::new(handler);
        let slots = Arc::new(Semaphore::new(config.max_connections));
        let tracker = TaskTracker::new();
        let mut next_id: u64 = 1;
        info!(listener = %shared.name, addr = ?tcp.local_addr().ok(), tls = shared.acceptor.is_some(), "MLLP listener started");

        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                accepted = tcp.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually transient (fd exhaustion, aborted handshake):
                    // back off briefly instead of spinning or giving up.
                    warn!(listener = %shared.name, error = %e, "accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            };
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                warn!(listener = %shared.name, %peer, "connection limit reached; closing new connection");
                drop(stream);
                continue;
            };
            let id = next_id;
            next_id = next_id.wrapping_add(1);
            let shared = Arc::clone(&shared);
            let handler = Arc::clone(&handler);
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                serve_connection(stream, peer, id, shared, handler, shutdown).await;
                drop(permit);
            });
        }

        // Closing the socket now makes new connects fail while the
        // remaining connections drain.
        drop(tcp);
        tracker.close();
        tracker.wait().await;
        info!(listener = %shared.name, "MLLP listener stopped");
    }
}

/// Binds `config.bind` and serves until `shutdown` is cancelled. See
/// [`MllpListener::serve`].
pub async fn serve<H: Handler>(
    config: ListenerConfig,
    handler: H,
    shutdown: CancellationToken,
) -> Result<(), ListenerError> {
    MllpListener::bind(config)
        .await?
        .serve(handler, shutdown)
        .await;
    Ok(())
}

/// `fut` limited to `limit`, or unlimited; `None` means it timed out.
pub(crate) async fn within<F: Future>(limit: Option<Duration>, fut: F) -> Option<F::Output> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, fut).await.ok(),
        None => Some(fut.await),
    }
}

async fn serve_connection<H: Handler>(
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    // Replies are small and latency matters more than packet count.
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(listener = %shared.name, conn = id, error = %e, "set_nodelay failed");
    }
    let (stream, identity): (Box<dyn Io>, Option<Arc<PeerIdentity>>) = match &shared.acceptor {
        None => (Box::new(tcp), None),
        Some(acceptor) => {
            let handshake = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(shared.handshake_timeout, acceptor.accept(tcp)) => r,
            };
            let tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    info!(listener = %shared.name, conn = id, %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    info!(listener = %shared.name, conn = id, %peer, "TLS handshake timed out");
                    return;
                }
            };
            let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            let identity = match leaf.map(|cert| PeerIdentity::from_der(cert)) {
                None => None,
                Some(Ok(identity)) => Some(Arc::new(identity)),
                Some(Err(e)) => {
                    // rustls verified it, yet we cannot say who it is:
                    // refuse rather than hand the handler no identity.
                    warn!(listener = %shared.name, conn = id, %peer, error = %e, "unreadable client certificate");
                    return;
                }
            };
            (Box::new(tls), identity)
        }
    };
    debug!(listener = %shared.name, conn = id, %peer, subject = ?identity.as_ref().map(|i| &i.subject), "connection opened");
    let mut conn = Connection {
        stream,
        buf: BytesMut::new(),
        codec: MllpCodec::with_max_payload(shared.max_payload),
        eof: false,
        id,
        peer,
        identity,
        shared,
    };
    conn.run(handler.as_ref(), &shutdown).await;
}

struct Connection {
    stream: Box<dyn Io>,
    buf: BytesMut,
    codec: MllpCodec,
    eof: bool,
    id: u64,
    peer: SocketAddr,
    identity: Option<Arc<PeerIdentity>>,
    shared: Arc<Shared>,
}

impl Connection {
    async fn run<H: Handler>(&mut self, handler: &H, shutdown: &CancellationToken) {
        let mut sequence: u64 = 0;
        while let Some(inbound) = self.next_inbound(shutdown).await {
            let ctx = FrameContext {
                connection_id: self.id,
                sequence,
                peer_addr: self.peer,
                peer_identity: self.identity.clone(),
                listener: Arc::clone(&self.shared.name),
                received_at: Instant::now(),
            };
            sequence = sequence.wrapping_add(1);
            // Not raced against shutdown: the item in hand is finished.
            let (payload, close) = match handler.handle(ctx, inbound).await {
                Reply::Send(payload) => (Some(payload), false),
                Reply::None => (None, false),
                Reply::Close => (None, true),
                Reply::SendAndClose(payload) => (Some(payload), true),
            };
            if let Some(payload) = payload
                && !self.write_frame(payload).await
            {
                break;
            }
            if close || shutdown.is_cancelled() {
                break;
            }
        }
        // Best effort: sends TLS close_notify / FIN; the peer may be gone.
        let _ = tokio::time::timeout(self.shared.write_timeout, self.stream.shutdown()).await;
        debug!(listener = %self.shared.name, conn = self.id, peer = %self.peer, "connection closed");
    }

    /// The next decoded item, or `None` when the connection should close
    /// (end of stream, idle timeout, read error, shutdown).
    async fn next_inbound(&mut self, shutdown: &CancellationToken) -> Option<Inbound> {
        // Frames already buffered are not started after shutdown either.
        if shutdown.is_cancelled() {
            return None;
        }
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(item)) => return Some(item),
                Ok(None) => {}
                Err(e) => {
                    debug!(listener = %self.shared.name, conn = self.id, error = %e, "decode failed");
                    return None;
                }
            }
            if self.eof {
                return self.codec.decode_eof(&mut self.buf).ok().flatten();
            }
            if self.buf.is_empty() && self.buf.capacity() > 4 * READ_CHUNK {
                // Do not keep a large frame's allocation for the life of
                // a long-lived connection.
                self.buf = BytesMut::new();
            }
            self.buf.reserve(READ_CHUNK);
            let mut limited = (&mut self.stream).take(READ_CHUNK as u64);
            let read = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                r = within(self.shared.idle_timeout, limited.read_buf(&mut self.buf)) => r,
            };
            match read {
                None => {
                    debug!(listener = %self.shared.name, conn = self.id, peer = %self.peer, "idle timeout");
                    return None;
                }
                Some(Ok(0)) => self.eof = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    debug!(listener = %self.shared.name, conn = self.id, peer = %self.peer, error = %e, "read failed");
                    return None;
                }
            }
        }
    }

    /// Writes one framed reply; false when the connection is unusable.
    async fn write_frame(&mut self, payload: Bytes) -> bool {
        let mut out = BytesMut::new();
        if let Err(e) = self.codec.encode(payload, &mut out) {
            // A handler bug; the peer would misparse it, so close instead.
            warn!(listener = %self.shared.name, conn = self.id, error = %e, "reply cannot be framed; closing");
            return false;
        }
        let write = async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.shared.write_timeout, write).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                debug!(listener = %self.shared.name, conn = self.id, error = %e, "write failed");
                false
            }
            Err(_) => {
                debug!(listener = %self.shared.name, conn = self.id, "write timed out");
                false
            }
        }
    }
}
