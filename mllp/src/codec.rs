//! MLLP framing: `0x0B payload 0x1C 0x0D`.
//!
//! The decoder is a small state machine over a `BytesMut`. It never
//! returns an error for malformed input: malformed input becomes an
//! [`Inbound`] outcome the caller can log or answer, and the decoder
//! resynchronises on the next start block.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::CodecError;

/// Start-block character (VT).
pub const START_BLOCK: u8 = 0x0B;
/// First end-block character (FS).
pub const END_BLOCK: u8 = 0x1C;
/// Second end-block character (CR).
pub const CARRIAGE_RETURN: u8 = 0x0D;
/// Default cap on a frame's payload: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// One decoded unit of an inbound MLLP byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A complete frame's payload (block characters stripped).
    Frame(Bytes),
    /// Bytes outside any frame were discarded. Reported just before the
    /// frame that follows them, or at end of stream.
    Noise {
        /// Number of bytes discarded.
        skipped: usize,
    },
    /// A frame was cut short: a new start block arrived before its end
    /// block, or the stream ended inside it. Its bytes were dropped.
    Truncated {
        /// Payload bytes of the dropped partial frame.
        bytes: usize,
    },
    /// A frame exceeded the payload cap. Reported as soon as the cap is
    /// crossed; the rest of that frame is discarded without further
    /// reports, up to its end block or the next start block.
    TooLarge {
        /// Payload bytes seen when the cap was crossed: the cap plus one.
        /// The frame was at least this long.
        bytes: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside a frame, looking for a start block. `noise` counts bytes
    /// discarded so far and not yet reported.
    Hunting { noise: usize },
    /// Inside a frame (its start block already consumed). The buffer
    /// holds payload; `scanned` bytes of it are known to contain neither
    /// a start block nor an end sequence, so they are not searched again.
    InFrame { scanned: usize },
    /// Dropping the tail of an oversize frame. `pending_fs` records that
    /// the previous chunk ended in 0x1C, so a leading 0x0D ends the frame.
    Discarding { pending_fs: bool },
}

/// MLLP frame codec. See the module docs for the frame format.
#[derive(Debug, Clone)]
pub struct MllpCodec {
    max_payload: usize,
    state: State,
}

impl Default for MllpCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl MllpCodec {
    /// A codec with the default payload cap ([`DEFAULT_MAX_PAYLOAD`]).
    pub fn new() -> Self {
        Self::with_max_payload(DEFAULT_MAX_PAYLOAD)
    }

    /// A codec that reports frames with more than `max_payload` payload
    /// bytes as [`Inbound::TooLarge`].
    pub fn with_max_payload(max_payload: usize) -> Self {
        Self {
            max_payload,
            state: State::Hunting { noise: 0 },
        }
    }

    /// The payload cap in bytes.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// True while the decoder is inside a frame (start block seen, end
    /// block not yet).
    pub fn in_frame(&self) -> bool {
        matches!(self.state, State::InFrame { .. })
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Option<Inbound> {
        loop {
            match self.state {
                State::Hunting { noise } => match memchr::memchr(START_BLOCK, buf) {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.state = State::InFrame { scanned: 0 };
                        let skipped = noise.saturating_add(i);
                        if skipped > 0 {
                            return Some(Inbound::Noise { skipped });
                        }
                    }
                    None => {
                        // Noise is dropped at once so it never accumulates.
                        self.state = State::Hunting {
                            noise: noise.saturating_add(buf.len()),
                        };
                        buf.clear();
                        return None;
                    }
                },
                State::InFrame { scanned } => return self.scan_frame(buf, scanned),
                State::Discarding { pending_fs } => {
                    if buf.is_empty() {
                        // Keep `pending_fs` for the next read.
                        return None;
                    }
                    if pending_fs && buf.first() == Some(&CARRIAGE_RETURN) {
                        buf.advance(1);
                        self.state = State::Hunting { noise: 0 };
                        continue;
                    }
                    match discard_scan(buf) {
                        DiscardEnd::StartBlock(i) => {
                            // Keep the start block: Hunting picks it up.
                            buf.advance(i);
                            self.state = State::Hunting { noise: 0 };
                        }
                        DiscardEnd::EndBlock(i) => {
                            buf.advance(i + 2);
                            self.state = State::Hunting { noise: 0 };
                        }
                        DiscardEnd::NeedMore { pending_fs } => {
                            buf.clear();
                            self.state = State::Discarding { pending_fs };
                            return None;
                        }
                    }
                }
            }
        }
    }

    /// Searches the unscanned part of the payload. Only the first
    /// `max_payload + 1` bytes are ever searched: an end block further on
    /// would make the frame oversize anyway.
    fn scan_frame(&mut self, buf: &mut BytesMut, mut from: usize) -> Option<Inbound> {
        let window = buf.len().min(self.max_payload.saturating_add(1));
        while from < window {
            let Some(rel) = memchr::memchr2(START_BLOCK, END_BLOCK, &buf[from..window]) else {
                from = window;
                break;
            };
            let i = from + rel;
            if buf[i] == START_BLOCK {
                // New start block inside a frame: the sender gave up on
                // the previous one.
                buf.advance(i + 1);
                self.state = State::InFrame { scanned: 0 };
                return Some(Inbound::Truncated { bytes: i });
            }
            match buf.get(i + 1) {
                Some(&CARRIAGE_RETURN) => {
                    let payload = buf.split_to(i).freeze();
                    buf.advance(2);
                    self.state = State::Hunting { noise: 0 };
                    return Some(Inbound::Frame(payload));
                }
                // 0x1C without 0x0D is payload.
                Some(_) => from = i + 1,
                None => {
                    // Last byte is 0x1C: the 0x0D may be in the next read.
                    self.state = State::InFrame { scanned: i };
                    return None;
                }
            }
        }
        if from > self.max_payload {
            // More than max_payload bytes with no terminator among them.
            buf.advance(from);
            // The remainder is dropped by later decode calls, which the
            // caller makes until one returns None.
            self.state = State::Discarding { pending_fs: false };
            return Some(Inbound::TooLarge { bytes: from });
        }
        self.state = State::InFrame { scanned: from };
        None
    }
}

enum DiscardEnd {
    /// A start block at this index.
    StartBlock(usize),
    /// An end sequence starting at this index.
    EndBlock(usize),
    /// Nothing found; everything may be dropped.
    NeedMore { pending_fs: bool },
}

fn discard_scan(buf: &[u8]) -> DiscardEnd {
    let mut from = 0;
    while let Some(rel) = memchr::memchr2(START_BLOCK, END_BLOCK, &buf[from..]) {
        let i = from + rel;
        if buf[i] == START_BLOCK {
            return DiscardEnd::StartBlock(i);
        }
        match buf.get(i + 1) {
            Some(&CARRIAGE_RETURN) => return DiscardEnd::EndBlock(i),
            Some(_) => from = i + 1,
            None => return DiscardEnd::NeedMore { pending_fs: true },
        }
    }
    DiscardEnd::NeedMore { pending_fs: false }
}

impl Decoder for MllpCodec {
    type Item = Inbound;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        Ok(self.decode_inner(buf))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        if let Some(item) = self.decode_inner(buf) {
            return Ok(Some(item));
        }
        // Whatever is left cannot complete any more: report it once and
        // reset so the codec could be reused.
        let leftover = match self.state {
            State::InFrame { .. } => Some(Inbound::Truncated { bytes: buf.len() }),
            State::Hunting { noise } if noise > 0 => Some(Inbound::Noise { skipped: noise }),
            State::Hunting { .. } | State::Discarding { .. } => None,
        };
        buf.clear();
        self.state = State::Hunting { noise: 0 };
        Ok(leftover)
    }
}

/// Checks that `payload` can be framed: it must not contain a start
/// block or the end sequence, or the receiver would split it.
pub fn validate_payload(payload: &[u8]) -> Result<(), CodecError> {
    if let Some(offset) = memchr::memchr(START_BLOCK, payload) {
        return Err(CodecError::StartBlockInPayload { offset });
    }
    if let Some(offset) = memchr::memmem::find(payload, &[END_BLOCK, CARRIAGE_RETURN]) {
        return Err(CodecError::EndBlockInPayload { offset });
    }
    Ok(())
}

/// Appends the framed `payload` to `dst` after validating it.
fn encode_into(payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
    validate_payload(payload)?;
    dst.reserve(payload.len() + 3);
    dst.put_u8(START_BLOCK);
    dst.put_slice(payload);
    dst.put_u8(END_BLOCK);
    dst.put_u8(CARRIAGE_RETURN);
    Ok(())
}

/// Frames `payload` into a fresh buffer.
pub fn encode_frame(payload: &[u8]) -> Result<Bytes, CodecError> {
    let mut dst = BytesMut::with_capacity(payload.len() + 3);
    encode_into(payload, &mut dst)?;
    Ok(dst.freeze())
}

impl Encoder<Bytes> for MllpCodec {
    type Error = CodecError;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_into(&payload, dst)
    }
}

impl Encoder<&[u8]> for MllpCodec {
    type Error = CodecError;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_into(payload, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VT: u8 = START_BLOCK;
    const FS: u8 = END_BLOCK;
    const CR: u8 = CARRIAGE_RETURN;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![VT];
        out.extend_from_slice(payload);
        out.extend_from_slice(&[FS, CR]);
        out
    }

    fn f(payload: &[u8]) -> Inbound {
        Inbound::Frame(Bytes::copy_from_slice(payload))
    }

    /// Feeds `chunks` one at a time, draining after each like
    /// `FramedRead` does, then signals end of stream.
    fn run(codec: &mut MllpCodec, chunks: &[&[u8]]) -> Vec<Inbound> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(item) = codec.decode(&mut buf).expect("decode is infallible") {
                out.push(item);
            }
            assert!(
                buf.len() <= codec.max_payload() + 2,
                "buffer grew to {}",
                buf.len()
            );
        }
        while let Some(item) = codec.decode_eof(&mut buf).expect("decode is infallible") {
            out.push(item);
        }
        assert!(buf.is_empty());
        out
    }

    fn run_one(chunks: &[&[u8]]) -> Vec<Inbound> {
        run(&mut MllpCodec::new(), chunks)
    }

    #[test]
    fn single_frame() {
        assert_eq!(run_one(&[&frame(b"MSH|^~\\&|A")]), vec![f(b"MSH|^~\\&|A")]);
    }

    #[test]
    fn empty_payload() {
        assert_eq!(run_one(&[&frame(b"")]), vec![f(b"")]);
    }

    #[test]
    fn two_frame_stream_split_at_every_byte() {
        let mut stream = frame(b"first\rPID|1");
        stream.extend(frame(b"second\x1cx"));
        let expected = vec![f(b"first\rPID|1"), f(b"second\x1cx")];
        for split in 0..=stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(run_one(&[a, b]), expected, "split at {split}");
        }
    }

    #[test]
    fn two_frame_stream_byte_by_byte() {
        let mut stream = frame(b"one");
        stream.extend(frame(b"two"));
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run_one(&chunks), vec![f(b"one"), f(b"two")]);
    }

    #[test]
    fn several_frames_in_one_read_come_out_one_per_call() {
        let mut stream = Vec::new();
        for p in [&b"a"[..], b"bb", b"ccc"] {
            stream.extend(frame(p));
        }
        let mut codec = MllpCodec::new();
        let mut buf = BytesMut::from(&stream[..]);
        assert_eq!(codec.decode(&mut buf).ok().flatten(), Some(f(b"a")));
        // The rest stays buffered until asked for.
        assert_eq!(&buf[..], &stream[4..]);
        assert_eq!(codec.decode(&mut buf).ok().flatten(), Some(f(b"bb")));
        assert_eq!(codec.decode(&mut buf).ok().flatten(), Some(f(b"ccc")));
        assert_eq!(codec.decode(&mut buf).ok().flatten(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn garbage_before_and_between_frames_is_reported_as_noise() {
        let mut stream = b"\r\nGARBAGE".to_vec();
        stream.extend(frame(b"one"));
        stream.extend(b"xyz\x1c\r");
        stream.extend(frame(b"two"));
        assert_eq!(
            run_one(&[&stream]),
            vec![
                Inbound::Noise { skipped: 9 },
                f(b"one"),
                Inbound::Noise { skipped: 5 },
                f(b"two"),
            ]
        );
    }

    #[test]
    fn noise_split_over_reads_is_reported_once() {
        let mut tail = b"ise".to_vec();
        tail.extend(frame(b"x"));
        assert_eq!(
            run_one(&[b"n", b"o", &tail]),
            vec![Inbound::Noise { skipped: 5 }, f(b"x")]
        );
    }

    #[test]
    fn trailing_noise_is_reported_at_eof() {
        let mut stream = frame(b"x");
        stream.extend(b"\r\n");
        assert_eq!(
            run_one(&[&stream]),
            vec![f(b"x"), Inbound::Noise { skipped: 2 }]
        );
    }

    #[test]
    fn fs_without_cr_is_payload() {
        let payload = b"\x1ca\x1cb\x1c\x1cc\x1c";
        assert_eq!(run_one(&[&frame(payload)]), vec![f(payload)]);
    }

    #[test]
    fn first_end_sequence_ends_the_frame() {
        // FS FS CR: the first FS is payload, the second ends the frame;
        // what follows before the next start block is noise.
        let stream = b"\x0ba\x1cb\x1c\x1c\rc\x1c\r";
        assert_eq!(
            run_one(&[stream]),
            vec![f(b"a\x1cb\x1c"), Inbound::Noise { skipped: 3 }]
        );
    }

    #[test]
    fn fs_as_last_byte_of_buffer_waits_for_more() {
        let mut codec = MllpCodec::new();
        let mut buf = BytesMut::from(&b"\x0babc\x1c"[..]);
        assert_eq!(codec.decode(&mut buf).ok().flatten(), None);
        assert_eq!(codec.state, State::InFrame { scanned: 3 });
        buf.extend_from_slice(b"d\x1c");
        assert_eq!(codec.decode(&mut buf).ok().flatten(), None);
        buf.extend_from_slice(b"\r");
        assert_eq!(codec.decode(&mut buf).ok().flatten(), Some(f(b"abc\x1cd")));
    }

    #[test]
    fn truncated_frame_then_new_frame() {
        let mut stream = b"\x0bpartial".to_vec();
        stream.extend(frame(b"whole"));
        assert_eq!(
            run_one(&[&stream]),
            vec![Inbound::Truncated { bytes: 7 }, f(b"whole")]
        );
        // Same when the new start block arrives in a later read.
        assert_eq!(
            run_one(&[b"\x0bpart", b"ial", &frame(b"whole")]),
            vec![Inbound::Truncated { bytes: 7 }, f(b"whole")]
        );
    }

    #[test]
    fn cap_exceeded_then_normal_frame_decodes() {
        let mut codec = MllpCodec::with_max_payload(8);
        let mut stream = frame(b"exactly8");
        stream.extend(frame(b"this one is far too long"));
        stream.extend(frame(b"ok"));
        assert_eq!(
            run(&mut codec, &[&stream]),
            vec![f(b"exactly8"), Inbound::TooLarge { bytes: 9 }, f(b"ok")]
        );
        // Byte-by-byte gives the same result.
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(
            run(&mut MllpCodec::with_max_payload(8), &chunks),
            vec![f(b"exactly8"), Inbound::TooLarge { bytes: 9 }, f(b"ok")]
        );
    }

    #[test]
    fn oversize_frame_is_reported_before_it_ends_and_not_buffered() {
        let mut codec = MllpCodec::with_max_payload(1024);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[VT]);
        let mut reports = Vec::new();
        for _ in 0..100 {
            buf.extend_from_slice(&[b'x'; 512]);
            while let Some(item) = codec.decode(&mut buf).ok().flatten() {
                reports.push(item);
            }
            assert!(buf.len() <= 1026);
        }
        assert_eq!(reports, vec![Inbound::TooLarge { bytes: 1025 }]);
        // Its end block, then noise, then a good frame.
        buf.extend_from_slice(b"\x1c\rjunk");
        buf.extend_from_slice(&frame(b"next"));
        while let Some(item) = codec.decode(&mut buf).ok().flatten() {
            reports.push(item);
        }
        assert_eq!(reports[1..], [Inbound::Noise { skipped: 4 }, f(b"next")]);
    }

    #[test]
    fn oversize_tail_end_block_split_across_reads() {
        let mut codec = MllpCodec::with_max_payload(2);
        let out = run(&mut codec, &[b"\x0babcdef\x1c", b"\rZ", &frame(b"ok")]);
        assert_eq!(
            out,
            vec![
                Inbound::TooLarge { bytes: 3 },
                Inbound::Noise { skipped: 1 },
                f(b"ok")
            ]
        );
    }

    #[test]
    fn eof_mid_frame_is_truncated() {
        assert_eq!(
            run_one(&[&frame(b"a"), b"\x0bhalf a fra"]),
            vec![f(b"a"), Inbound::Truncated { bytes: 10 }]
        );
        assert_eq!(run_one(&[b"\x0b"]), vec![Inbound::Truncated { bytes: 0 }]);
        assert_eq!(
            run_one(&[b"\x0babc\x1c"]),
            vec![Inbound::Truncated { bytes: 4 }]
        );
    }

    #[test]
    fn eof_inside_oversize_frame_reports_nothing_more() {
        let mut codec = MllpCodec::with_max_payload(2);
        assert_eq!(
            run(&mut codec, &[b"\x0babcdef"]),
            vec![Inbound::TooLarge { bytes: 3 }]
        );
    }

    #[test]
    fn scanning_is_incremental() {
        let mut codec = MllpCodec::new();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[VT]);
        let chunk = [b'x'; 4096];
        for _ in 0..64 {
            buf.extend_from_slice(&chunk);
            assert_eq!(codec.decode(&mut buf).ok().flatten(), None);
            // Everything held has been searched once and is not searched
            // again on the next read.
            assert_eq!(codec.state, State::InFrame { scanned: buf.len() });
        }
    }

    #[test]
    fn sixteen_mib_frame_in_4k_reads_is_linear() {
        let payload_len = DEFAULT_MAX_PAYLOAD;
        let mut codec = MllpCodec::new();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[VT]);
        let chunk = [b'y'; 4096];
        let started = std::time::Instant::now();
        for _ in 0..payload_len / chunk.len() {
            buf.extend_from_slice(&chunk);
            assert_eq!(codec.decode(&mut buf).ok().flatten(), None);
        }
        buf.extend_from_slice(&[FS, CR]);
        match codec.decode(&mut buf).ok().flatten() {
            Some(Inbound::Frame(p)) => assert_eq!(p.len(), payload_len),
            other => panic!("expected a frame, got {other:?}"),
        }
        // Quadratic rescanning would touch ~32 GiB here; linear is 16 MiB.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn encoder_frames_and_round_trips() {
        let mut codec = MllpCodec::new();
        let mut dst = BytesMut::new();
        codec
            .encode(Bytes::from_static(b"MSH|x"), &mut dst)
            .unwrap();
        codec.encode(&b"ends with FS\x1c"[..], &mut dst).unwrap();
        assert_eq!(&dst[..8], b"\x0bMSH|x\x1c\r");
        assert_eq!(run_one(&[&dst]), vec![f(b"MSH|x"), f(b"ends with FS\x1c")]);
        assert_eq!(
            encode_frame(b"").unwrap(),
            Bytes::from_static(b"\x0b\x1c\r")
        );
    }

    #[test]
    fn encoder_rejects_unframeable_payloads() {
        assert!(matches!(
            encode_frame(b"ab\x0bc"),
            Err(CodecError::StartBlockInPayload { offset: 2 })
        ));
        assert!(matches!(
            encode_frame(b"abc\x1c\rd"),
            Err(CodecError::EndBlockInPayload { offset: 3 })
        ));
        let mut dst = BytesMut::new();
        assert!(MllpCodec::new().encode(&b"\x0b"[..], &mut dst).is_err());
        assert!(dst.is_empty());
    }
}
