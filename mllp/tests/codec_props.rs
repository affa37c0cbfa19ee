//! Property tests for the codec; these stand in for a fuzz target.

use bytes::{Bytes, BytesMut};
use mllp::{CodecError, Inbound, MllpCodec, encode_frame};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// Bytes that favour the framing characters, so random input often hits
/// the interesting states.
fn framing_heavy_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => any::<u8>(),
        1 => Just(0x0B),
        1 => Just(0x1C),
        1 => Just(0x0D),
    ]
}

/// Makes a payload frameable: no 0x0B and no 0x1C 0x0D. Keeps lone
/// 0x1C (including a trailing one) and lone 0x0D.
fn sanitize(mut payload: Vec<u8>) -> Vec<u8> {
    for i in 0..payload.len() {
        if payload[i] == 0x0B {
            payload[i] = b'v';
        }
        if i > 0 && payload[i - 1] == 0x1C && payload[i] == 0x0D {
            payload[i] = b'r';
        }
    }
    payload
}

/// Splits `stream` into chunks of the given sizes (cycled), feeds them
/// in turn, drains after each, then signals end of stream. Checks the
/// buffer bound after each drain.
fn decode_chunked(max_payload: usize, stream: &[u8], sizes: &[usize]) -> Vec<Inbound> {
    let mut codec = MllpCodec::with_max_payload(max_payload);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = stream;
    let mut sizes = sizes.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        buf.extend_from_slice(chunk);
        while let Some(item) = codec.decode(&mut buf).expect("decode does not fail") {
            out.push(item);
        }
        // cap + pending 0x1C is the most a waiting decoder holds.
        assert!(
            buf.len() <= max_payload.saturating_add(2),
            "buffer {} > cap {} + 2",
            buf.len(),
            max_payload
        );
    }
    while let Some(item) = codec.decode_eof(&mut buf).expect("decode does not fail") {
        out.push(item);
    }
    assert!(buf.is_empty());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Encoding frameable payloads and decoding the concatenation under
    /// any chunking gives back exactly the payloads.
    #[test]
    fn round_trip_under_arbitrary_chunking(
        payloads in proptest::collection::vec(
            proptest::collection::vec(framing_heavy_byte(), 0..64).prop_map(sanitize),
            0..8,
        ),
        sizes in proptest::collection::vec(1usize..40, 1..16),
    ) {
        let mut stream = Vec::new();
        for p in &payloads {
            stream.extend_from_slice(&encode_frame(p).expect("sanitized payload is frameable"));
        }
        let expected: Vec<Inbound> = payloads
            .iter()
            .map(|p| Inbound::Frame(Bytes::copy_from_slice(p)))
            .collect();
        prop_assert_eq!(decode_chunked(64, &stream, &sizes), expected);
    }

    /// Random streams never panic, keep the buffer within cap + 2, and
    /// decode the same whatever the chunking.
    #[test]
    fn random_streams_are_safe_bounded_and_chunking_independent(
        stream in proptest::collection::vec(framing_heavy_byte(), 0..512),
        max_payload in 0usize..48,
        sizes in proptest::collection::vec(1usize..64, 1..16),
    ) {
        let whole = decode_chunked(max_payload, &stream, &[usize::MAX]);
        let chunked = decode_chunked(max_payload, &stream, &sizes);
        prop_assert_eq!(&chunked, &whole);
        // Every input byte is accounted for at most once.
        let accounted: usize = whole
            .iter()
            .map(|item| match item {
                Inbound::Frame(p) => p.len(),
                Inbound::Noise { skipped } => *skipped,
                Inbound::Truncated { bytes } | Inbound::TooLarge { bytes } => *bytes,
            })
            .sum();
        prop_assert!(accounted <= stream.len());
        for item in &whole {
            if let Inbound::Frame(p) = item {
                prop_assert!(p.len() <= max_payload);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// The encoder accepts exactly the payloads the decoder can return.
    #[test]
    fn encoder_accepts_exactly_frameable_payloads(
        payload in proptest::collection::vec(framing_heavy_byte(), 0..64),
    ) {
        let frameable = !payload.contains(&0x0B) && !payload.windows(2).any(|w| w == [0x1C, 0x0D]);
        match encode_frame(&payload) {
            Ok(framed) => {
                prop_assert!(frameable);
                prop_assert_eq!(
                    decode_chunked(usize::MAX, &framed, &[1]),
                    vec![Inbound::Frame(Bytes::from(payload))]
                );
            }
            Err(CodecError::StartBlockInPayload { .. } | CodecError::EndBlockInPayload { .. }) => {
                prop_assert!(!frameable);
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }
}
