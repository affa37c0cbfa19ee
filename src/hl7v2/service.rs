//! The MLLP listeners of `hearth serve`: one per configured listener, on a runtime of their
//! own (with their own connection pool), stopped gracefully with the HTTP server.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mllp::{FrameContext, Inbound, ListenerConfig, MllpListener, Reply, ServerTls};
use tokio_util::sync::CancellationToken;

use super::ack::{AckCode, AckError, build_ack};
use super::feed::ListenerSettings;
use super::ingest::{Answer, Ingestor, Receipt};
use crate::config::{Config, MllpListenerConfig};
use crate::ops::Metrics;
use crate::store::{self, Store};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Feed(#[from] super::feed::FeedConfigError),
    #[error("listener {0}: {1}")]
    Tls(String, String),
    #[error("listener {0}: {1}")]
    Bind(String, String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Running listeners; `stop` finishes the messages in hand and returns.
pub struct MllpService {
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    pub addresses: Vec<(String, std::net::SocketAddr)>,
}

impl MllpService {
    pub fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn listener_config(c: &MllpListenerConfig) -> Result<ListenerConfig, ServiceError> {
    let mut lc = ListenerConfig::new(c.name.clone(), c.listen)
        .with_max_payload(c.max_frame_bytes)
        .with_idle_timeout(Some(Duration::from_secs(c.idle_timeout_secs)));
    if let Some(tls) = &c.tls {
        let server = ServerTls::from_pem_files(&tls.cert, &tls.key, tls.client_ca.as_deref())
            .map_err(|e| ServiceError::Tls(c.name.clone(), e.to_string()))?;
        lc = lc.with_tls(server);
    }
    Ok(lc)
}

/// Start every configured listener. Returns when they are bound (or one failed to bind).
pub fn start(config: &Config, metrics: Arc<Metrics>) -> Result<Option<MllpService>, ServiceError> {
    if config.mllp.listeners.is_empty() {
        return Ok(None);
    }
    let settings: Vec<(ListenerSettings, ListenerConfig)> = config
        .mllp
        .listeners
        .iter()
        .map(|c| Ok((ListenerSettings::from_config(c)?, listener_config(c)?)))
        .collect::<Result<_, ServiceError>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hearth-mllp")
        .build()?;
    let db_url = config
        .database_url()
        .map_err(|e| ServiceError::Bind("*".into(), e.to_string()))?
        .to_owned();
    let max_connections = config.database.max_connections;
    let lock_timeout = config.database.lock_timeout_ms;
    let config = config.clone();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("hearth-mllp".into())
        .spawn(move || {
            runtime.block_on(async move {
                let pool = match store::connect(&db_url, max_connections).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ServiceError::Store(e)));
                        return;
                    }
                };
                let store = Store::new(pool, lock_timeout);
                let mut tasks = Vec::new();
                let mut addresses = Vec::new();
                for (listener, lc) in settings {
                    let name = lc.name.clone();
                    let bound = match MllpListener::bind(lc).await {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = ready_tx.send(Err(ServiceError::Bind(name, e.to_string())));
                            return;
                        }
                    };
                    if let Ok(addr) = bound.local_addr() {
                        addresses.push((name.clone(), addr));
                    }
                    let ingestor = Arc::new(Ingestor {
                        store: store.clone(),
                        local_base: format!("{}/", config.fhir_base(&listener.tenant)),
                        listener,
                    });
                    let handler = handler(ingestor, metrics.clone());
                    tasks.push(tokio::spawn(bound.serve(handler, token.clone())));
                    tracing::info!(listener = %name, "mllp listening");
                }
                let _ = ready_tx.send(Ok(addresses));
                for t in tasks {
                    let _ = t.await;
                }
            });
        })?;
    match ready_rx.recv() {
        Ok(Ok(addresses)) => Ok(Some(MllpService {
            shutdown,
            thread: Some(thread),
            addresses,
        })),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(ServiceError::Bind(
            "*".into(),
            "the MLLP runtime stopped".into(),
        )),
    }
}

/// The per-frame handler: frames go through the ingestor; framing trouble is answered here.
fn handler(
    ingestor: Arc<Ingestor>,
    metrics: Arc<Metrics>,
) -> impl Fn(FrameContext, Inbound) -> std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>
+ Send
+ Sync
+ 'static {
    move |ctx: FrameContext, inbound: Inbound| {
        let ingestor = ingestor.clone();
        let metrics = metrics.clone();
        Box::pin(async move {
            let listener = ingestor.listener.name.clone();
            match inbound {
                Inbound::Frame(raw) => {
                    let identities: Vec<String> = ctx
                        .peer_identity
                        .as_ref()
                        .map(|p| {
                            let cn = p
                                .subject
                                .split(',')
                                .filter_map(|part| part.trim().strip_prefix("CN="))
                                .map(str::to_owned);
                            cn.chain(p.dns_names.iter().cloned()).collect()
                        })
                        .unwrap_or_default();
                    let result = ingestor
                        .process(Receipt {
                            raw: &raw,
                            peer_identities: Some(&identities),
                            replay_of: None,
                        })
                        .await;
                    metrics
                        .hl7_ack_latency
                        .with_label_values(&[&listener])
                        .observe(ctx.received_at.elapsed().as_secs_f64());
                    match result {
                        Ok(p) => {
                            let ack = if p.duplicate {
                                "duplicate".to_owned()
                            } else {
                                p.ack_code.map_or("none", AckCode::code).to_owned()
                            };
                            metrics
                                .hl7_messages
                                .with_label_values(&[&listener, "message", &ack])
                                .inc();
                            match p.answer {
                                Answer::Ack(bytes) => Reply::Send(Bytes::from(bytes)),
                                Answer::Nothing => Reply::None,
                                Answer::Close => {
                                    tracing::warn!(listener = %listener, connection = ctx.connection_id, "closing a connection that sent something that is not HL7");
                                    Reply::Close
                                }
                            }
                        }
                        Err(e) => {
                            // Not stored, so not acknowledged: the sender keeps the message and
                            // resends it on a new connection.
                            tracing::error!(listener = %listener, error = %e, "could not store an HL7 message; closing without ACK");
                            metrics
                                .hl7_messages
                                .with_label_values(&[&listener, "message", "unstored"])
                                .inc();
                            Reply::Close
                        }
                    }
                }
                Inbound::TooLarge { bytes } => {
                    tracing::warn!(listener = %listener, bytes, "frame over the size limit");
                    let error = AckError {
                        code: 207,
                        text: format!("frame exceeds {} bytes", bytes.saturating_sub(1)),
                        location: None,
                    };
                    let ack = build_ack(
                        None,
                        AckCode::AR,
                        &[error],
                        "HEARTH-LIMIT",
                        chrono::Utc::now(),
                    );
                    Reply::SendAndClose(Bytes::from(ack))
                }
                Inbound::Truncated { bytes } => {
                    tracing::warn!(listener = %listener, bytes, "truncated frame dropped; the sender will resend it");
                    Reply::None
                }
                Inbound::Noise { skipped } => {
                    tracing::warn!(listener = %listener, skipped, "bytes outside any frame skipped");
                    Reply::None
                }
            }
        })
    }
}
