//! MLLP (Minimal Lower Layer Protocol) transport for Hearth.
//!
//! # What it does
//!
//! - [`MllpCodec`]: a `tokio_util` [`Decoder`](tokio_util::codec::Decoder) /
//!   [`Encoder`](tokio_util::codec::Encoder) that turns a byte stream into
//!   [`Inbound`] items and payloads into frames.
//! - [`MllpListener`] / [`serve`]: a TCP or TLS (rustls) server with optional
//!   client-certificate authentication, that calls a [`Handler`] per item and
//!   writes back what it returns ([`Reply`]).
//! - [`MllpClient`]: a small client for tools and tests (send a frame, wait
//!   for the reply frame).
//!
//! ```no_run
//! use mllp::{FrameContext, Inbound, ListenerConfig, MllpListener, Reply};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run() -> Result<(), mllp::ListenerError> {
//! let config = ListenerConfig::new("lab-feed", "0.0.0.0:2575".parse().expect("valid address"));
//! let shutdown = CancellationToken::new();
//! let handler = |ctx: FrameContext, inbound: Inbound| async move {
//!     match inbound {
//!         // A real handler would parse the payload and build an ACK.
//!         Inbound::Frame(payload) => Reply::Send(payload),
//!         Inbound::TooLarge { .. } => Reply::Close,
//!         Inbound::Noise { .. } | Inbound::Truncated { .. } => Reply::None,
//!     }
//! };
//! MllpListener::bind(config).await?.serve(handler, shutdown).await;
//! # Ok(())
//! # }
//! ```
//!
//! # What it does not do
//!
//! It knows bytes and frames only. It does not parse HL7 v2 (no segments,
//! fields or MSH), does not build ACKs, and knows nothing of FHIR: the
//! handler decides what a payload means and what to answer.
//!
//! # Frame format
//!
//! ```text
//! 0x0B  payload bytes  0x1C 0x0D
//! ```
//!
//! The payload may contain any byte except 0x0B, and may contain 0x1C when
//! it is not followed by 0x0D. The encoder refuses payloads that break this
//! ([`CodecError::StartBlockInPayload`], [`CodecError::EndBlockInPayload`]).
//!
//! Malformed input is not an error. The decoder resynchronises on the next
//! start block and reports what it dropped, so the caller can log it or
//! answer with an error acknowledgement:
//!
//! - bytes outside a frame: [`Inbound::Noise`];
//! - a start block inside a frame, or end of stream inside a frame:
//!   [`Inbound::Truncated`] (the partial frame is dropped);
//! - a frame over the payload cap (default 16 MiB): [`Inbound::TooLarge`],
//!   reported as soon as the cap is crossed; the rest of that frame is
//!   discarded.
//!
//! # Guarantees
//!
//! - **Per-connection ordering.** On one connection the handler is called
//!   for item n+1 only after the reply to item n has been written. Replies go
//!   out in the order the frames came in. Different connections run
//!   concurrently.
//! - **Bounded memory.** A connection buffers at most the payload cap plus one
//!   read (16 KiB) plus a couple of bytes. Noise and the tail of an oversize
//!   frame are dropped as they arrive. The number of connections is capped
//!   ([`ListenerConfig::max_connections`]). Idle connections are closed
//!   ([`ListenerConfig::idle_timeout`]), and so are peers that stop reading
//!   replies ([`ListenerConfig::write_timeout`]).
//! - **Linear decoding.** The decoder remembers how far it has searched, so
//!   a frame that arrives in many small reads is scanned once.
//! - **No panics on input.** Any byte sequence gives items, never a panic.
//!   This is checked by property tests.
//! - **Graceful shutdown.** When the [`CancellationToken`](tokio_util::sync::CancellationToken)
//!   passed to [`MllpListener::serve`] is cancelled, the listener stops accepting.
//!   Connections waiting for input close. A connection whose handler is running
//!   finishes it and writes the reply, then closes. `serve` returns once
//!   every connection is closed. A frame that was only partly received, or
//!   received but not yet handled, is not processed, so its sender gets no
//!   reply and will resend it.

mod client;
mod codec;
mod error;
mod listener;
mod tls;

pub use client::{DEFAULT_CLIENT_TIMEOUT, MllpClient};
pub use codec::{
    CARRIAGE_RETURN, DEFAULT_MAX_PAYLOAD, END_BLOCK, Inbound, MllpCodec, START_BLOCK, encode_frame,
    validate_payload,
};
pub use error::{ClientError, CodecError, ListenerError, TlsError};
pub use listener::{FrameContext, Handler, ListenerConfig, MllpListener, Reply, serve};
pub use tls::{ClientTls, PeerIdentity, ServerTls};
