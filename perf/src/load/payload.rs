//! The load generator's frame payload: a fixed header that lets a listener attribute and time
//! every frame it hears, padded to the configured frame size.
//!
//! ```text
//!  0      4            8        12     16                 24         32
//!  magic  conversation message  seq    intended_send_us   sent_us    padding … (to --frame-bytes)
//! ```
//!
//! All integers little-endian. `intended_send_us` is the frame's scheduled send time on the
//! host's monotonic clock (talkers and listeners run on the same host), so a listener's latency
//! is measured from when the frame *should* have been sent, not when it was. `sent_us` (when it
//! was actually handed to the socket) separates the generator's own lateness from the relay's.

/// Marks a payload as one of ours ("hkpf" little-endian); anything else is counted as foreign.
pub const PAYLOAD_MAGIC: u32 = u32::from_le_bytes(*b"hkpf");

/// Bytes of the header; the smallest `--frame-bytes` accepted.
pub const PAYLOAD_HEADER_BYTES: usize = 32;

/// What a frame's payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadHeader {
    /// Index of the conversation (0..N) the frame was sent to.
    pub conversation: u32,
    /// The talker's message counter within the run (0 for its first message).
    pub message: u32,
    /// The frame's seq within its message.
    pub seq: u32,
    /// When the frame was scheduled to be sent, µs on the monotonic clock.
    pub intended_send_us: u64,
    /// When the frame was handed to the socket, µs on the monotonic clock.
    pub sent_us: u64,
}

/// Why a payload is not one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Fewer bytes than the header: another client talks in the conversation, or the relay
    /// cut the payload. Counted as a foreign frame.
    #[error("payload of {len} bytes is shorter than the {PAYLOAD_HEADER_BYTES}-byte header")]
    TooShort {
        /// The payload's length.
        len: usize,
    },
    /// The magic does not match: not a frame of hark-perf. Counted as a foreign frame.
    #[error("payload magic {found:#010x} is not hark-perf's")]
    BadMagic {
        /// The first four bytes, little-endian.
        found: u32,
    },
}

impl PayloadHeader {
    /// Writes the header into the first [`PAYLOAD_HEADER_BYTES`] of `payload` (which the caller
    /// sized to the frame size, at least the header); the padding is left as it is.
    pub fn write_into(&self, payload: &mut [u8]) {
        let header = &mut payload[..PAYLOAD_HEADER_BYTES];
        header[0..4].copy_from_slice(&PAYLOAD_MAGIC.to_le_bytes());
        header[4..8].copy_from_slice(&self.conversation.to_le_bytes());
        header[8..12].copy_from_slice(&self.message.to_le_bytes());
        header[12..16].copy_from_slice(&self.seq.to_le_bytes());
        header[16..24].copy_from_slice(&self.intended_send_us.to_le_bytes());
        header[24..32].copy_from_slice(&self.sent_us.to_le_bytes());
    }

    /// Reads the header of a received payload.
    pub fn read(payload: &[u8]) -> Result<PayloadHeader, PayloadError> {
        let Some(header) = payload.first_chunk::<PAYLOAD_HEADER_BYTES>() else {
            return Err(PayloadError::TooShort { len: payload.len() });
        };
        let word = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let long = |at: usize| u64::from(word(at)) | (u64::from(word(at + 4)) << 32);
        let magic = word(0);
        if magic != PAYLOAD_MAGIC {
            return Err(PayloadError::BadMagic { found: magic });
        }
        Ok(PayloadHeader {
            conversation: word(4),
            message: word(8),
            seq: word(12),
            intended_send_us: long(16),
            sent_us: long(24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_short_payload_is_refused() {
        assert_eq!(
            PayloadHeader::read(&[0u8; PAYLOAD_HEADER_BYTES - 1]),
            Err(PayloadError::TooShort {
                len: PAYLOAD_HEADER_BYTES - 1
            })
        );
    }

    #[test]
    fn a_foreign_payload_is_refused() {
        let payload = [0xffu8; 100];
        assert_eq!(
            PayloadHeader::read(&payload),
            Err(PayloadError::BadMagic { found: u32::MAX })
        );
    }

    proptest! {
        #[test]
        fn header_round_trips_through_any_padding(
            conversation: u32, message: u32, seq: u32, intended_send_us: u64, sent_us: u64,
            padding in 0usize..200, fill: u8,
        ) {
            let header = PayloadHeader { conversation, message, seq, intended_send_us, sent_us };
            let mut payload = vec![fill; PAYLOAD_HEADER_BYTES + padding];
            header.write_into(&mut payload);
            prop_assert_eq!(PayloadHeader::read(&payload), Ok(header));
            prop_assert!(payload[PAYLOAD_HEADER_BYTES..].iter().all(|b| *b == fill));
        }
    }
}
