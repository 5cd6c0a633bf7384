//! Field-level reading and writing shared by requests and events: type codes, a bounds-checked
//! body reader, and length-prefixed field writers.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};
use crate::ids::{CONV_NAME_LEN_MAX, ConvName, MsgId};

/// Type bytes. Requests use 0x01–0x3f, events 0x40–0x7f, 0x80–0xff are reserved.
pub(super) mod type_code {
    pub const HELLO: u8 = 0x01;
    pub const TALK_START: u8 = 0x02;
    pub const TALK_FRAME: u8 = 0x03;
    pub const TALK_END: u8 = 0x04;
    pub const LISTEN: u8 = 0x05;
    pub const UNLISTEN: u8 = 0x06;
    pub const HISTORY: u8 = 0x07;
    pub const PING: u8 = 0x08;
    pub const PONG: u8 = 0x09;

    pub const HELLO_ACCEPTED: u8 = 0x40;
    pub const TALK_STARTED: u8 = 0x41;
    pub const STORED: u8 = 0x42;
    pub const TALK_ENDED: u8 = 0x43;
    pub const LISTENING: u8 = 0x44;
    pub const UNLISTENED: u8 = 0x45;
    pub const MESSAGE_STARTED: u8 = 0x46;
    pub const FRAME_LIVE: u8 = 0x47;
    pub const FRAME_REPLAY: u8 = 0x48;
    pub const MESSAGE_ENDED: u8 = 0x49;
    pub const CAUGHT_UP: u8 = 0x4a;
    pub const HISTORY_PAGE: u8 = 0x4b;
    pub const EVENT_PING: u8 = 0x4c;
    pub const EVENT_PONG: u8 = 0x4d;
    pub const GO_AWAY: u8 = 0x4e;
    pub const ERROR: u8 = 0x4f;
}

/// Reads the fields of one message body, in order, with every length checked against what is
/// left before anything is read or allocated.
pub(super) struct BodyReader {
    body: Bytes,
    message: &'static str,
}

impl BodyReader {
    pub(super) fn new(body: Bytes, message: &'static str) -> Self {
        Self { body, message }
    }

    fn need(&self, len: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.body.len() < len {
            return Err(DecodeError::Truncated {
                message: self.message,
                field,
            });
        }
        Ok(())
    }

    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.body.get_u8())
    }

    pub(super) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.body.get_u16_le())
    }

    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.body.get_u32_le())
    }

    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.need(8, field)?;
        Ok(self.body.get_u64_le())
    }

    pub(super) fn msg_id(&mut self, field: &'static str) -> Result<MsgId, DecodeError> {
        self.need(16, field)?;
        let mut raw = [0u8; 16];
        self.body.copy_to_slice(&mut raw);
        Ok(MsgId::from_le_bytes(raw))
    }

    /// A 0/1 byte.
    pub(super) fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::InvalidTag { field, value }),
        }
    }

    /// A u16-LE length, checked against `max` and the rest of the body, then that many bytes
    /// as a zero-copy slice of the input.
    pub(super) fn blob(&mut self, field: &'static str, max: usize) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(DecodeError::FieldTooLong { field, len, max });
        }
        self.need(len, field)?;
        Ok(self.body.split_to(len))
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes.
    pub(super) fn text(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let raw = self.blob(field, max)?;
        match std::str::from_utf8(&raw) {
            Ok(text) => Ok(text.to_owned()),
            Err(_) => Err(DecodeError::InvalidUtf8 { field }),
        }
    }

    /// A length-prefixed conversation name, validated into a [`ConvName`].
    pub(super) fn conv_name(&mut self) -> Result<ConvName, DecodeError> {
        let raw = self.blob("conversation", CONV_NAME_LEN_MAX)?;
        ConvName::from_utf8(&raw).map_err(DecodeError::InvalidConvName)
    }

    /// Bytes left in the body.
    pub(super) fn remaining(&self) -> usize {
        self.body.len()
    }

    /// Ends the body: every byte must have been read.
    pub(super) fn finish(self) -> Result<(), DecodeError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                message: self.message,
                extra: self.body.len(),
            })
        }
    }
}

/// Writes a u16-LE length and `value`, refusing values longer than `max`.
pub(super) fn put_blob(
    buf: &mut BytesMut,
    field: &'static str,
    value: &[u8],
    max: usize,
) -> Result<(), EncodeError> {
    // Every field maximum is below 65536, so a checked length always fits the u16 prefix.
    let len = match u16::try_from(value.len()) {
        Ok(len) if value.len() <= max => len,
        _ => {
            return Err(EncodeError::FieldTooLong {
                field,
                len: value.len(),
                max,
            });
        }
    };
    buf.put_u16_le(len);
    buf.put_slice(value);
    Ok(())
}

/// Writes a conversation name; a [`ConvName`] is always within the limit.
pub(super) fn put_conv_name(buf: &mut BytesMut, name: &ConvName) -> Result<(), EncodeError> {
    put_blob(
        buf,
        "conversation",
        name.as_str().as_bytes(),
        CONV_NAME_LEN_MAX,
    )
}

/// Starts a frame: a length placeholder and the type byte. Returns where the frame starts.
pub(super) fn begin_frame(buf: &mut BytesMut, type_code: u8) -> usize {
    let start = buf.len();
    buf.put_u32_le(0);
    buf.put_u8(type_code);
    start
}

/// Patches the length of the frame that starts at `start`, or undoes it if it is too long.
pub(super) fn end_frame(buf: &mut BytesMut, start: usize) -> Result<(), EncodeError> {
    let len = buf.len() - start - 4;
    match u32::try_from(len) {
        Ok(len32) if len32 <= super::FRAME_LEN_MAX => {
            buf[start..start + 4].copy_from_slice(&len32.to_le_bytes());
            Ok(())
        }
        _ => {
            buf.truncate(start);
            Err(EncodeError::FrameTooLong {
                len,
                max: super::FRAME_LEN_MAX,
            })
        }
    }
}
