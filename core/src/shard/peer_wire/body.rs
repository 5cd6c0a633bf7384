//! Field-level reading and writing of link bodies: a bounds-checked reader, and the layouts
//! of the fields several frames share (connection id, map version, grant).

use bytes::{BufMut, BytesMut};

use super::PeerWireError;
use crate::ids::{CONV_NAME_LEN_MAX, ConvName, ShardId};
use crate::shard::{ConnId, MapVersion};
use crate::token::{ConvPrefix, Grant, KeyId, Rights, SUBJECT_LEN_MAX, Scope, Subject};

/// Scope kind byte of a grant: exactly one conversation.
pub(super) const SCOPE_CONVERSATION: u8 = 0;
/// Scope kind byte of a grant: a prefix of conversation names.
pub(super) const SCOPE_PREFIX: u8 = 1;

/// Bytes of an encoded [`ConnId`].
pub(super) const CONN_LEN: usize = 8;
/// Bytes of an encoded [`MapVersion`].
pub(super) const MAP_LEN: usize = 16;
/// Bytes of an encoded [`ShardId`].
pub(super) const SHARD_LEN: usize = 4;

/// Reads the fields of one body, in order, with every length checked against what is left
/// before anything is read. Works on a borrowed slice: payloads that must stay zero-copy are
/// split off the input buffer by the caller after the fixed fields.
pub(super) struct Reader<'a> {
    body: &'a [u8],
    message: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn new(body: &'a [u8], message: &'static str) -> Self {
        Self { body, message }
    }

    pub(super) fn take(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<&'a [u8], PeerWireError> {
        if self.body.len() < len {
            return Err(PeerWireError::Truncated {
                message: self.message,
                field,
            });
        }
        let (head, rest) = self.body.split_at(len);
        self.body = rest;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], PeerWireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, PeerWireError> {
        Ok(self.take(1, field)?[0])
    }

    pub(super) fn u16(&mut self, field: &'static str) -> Result<u16, PeerWireError> {
        self.array(field).map(u16::from_le_bytes)
    }

    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, PeerWireError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, PeerWireError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A 0/1 byte.
    pub(super) fn flag(&mut self, field: &'static str) -> Result<bool, PeerWireError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(PeerWireError::InvalidTag { field, value }),
        }
    }

    /// A u16-LE length checked against `max` and the rest of the body, then that many bytes.
    pub(super) fn blob16(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a [u8], PeerWireError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(PeerWireError::FieldTooLong { field, len, max });
        }
        self.take(len, field)
    }

    pub(super) fn conn(&mut self) -> Result<ConnId, PeerWireError> {
        Ok(ConnId {
            index: self.u32("conn_index")?,
            generation: self.u32("conn_generation")?,
        })
    }

    pub(super) fn map(&mut self) -> Result<MapVersion, PeerWireError> {
        Ok(MapVersion {
            epoch: self.u64("map_epoch")?,
            checksum: self.u64("map_checksum")?,
        })
    }

    pub(super) fn shard(&mut self, field: &'static str) -> Result<ShardId, PeerWireError> {
        Ok(ShardId::new(self.u16(field)?, self.u16(field)?))
    }

    /// A grant, field by field, each validated by the type that guards it.
    pub(super) fn grant(&mut self) -> Result<Grant, PeerWireError> {
        let subject = self.blob16("grant_subject", SUBJECT_LEN_MAX)?;
        let subject = std::str::from_utf8(subject)
            .ok()
            .and_then(|text| Subject::new(text).ok())
            .ok_or(PeerWireError::GrantInvalid {
                field: "subject",
                why: "not 1 to 64 bytes of UTF-8 without control characters",
            })?;
        let rights =
            Rights::from_bits(self.u8("grant_rights")?).ok_or(PeerWireError::GrantInvalid {
                field: "rights",
                why: "a bit that names no right",
            })?;
        let kind = self.u8("grant_scope_kind")?;
        let text = self.blob16("grant_scope", CONV_NAME_LEN_MAX)?;
        let scope = match kind {
            SCOPE_CONVERSATION => Scope::Conversation(ConvName::from_utf8(text).map_err(|_| {
                PeerWireError::GrantInvalid {
                    field: "scope",
                    why: "not a valid conversation name",
                }
            })?),
            SCOPE_PREFIX => Scope::Prefix(
                std::str::from_utf8(text)
                    .ok()
                    .and_then(|text| ConvPrefix::new(text).ok())
                    .ok_or(PeerWireError::GrantInvalid {
                        field: "scope",
                        why: "not a valid conversation prefix",
                    })?,
            ),
            value => {
                return Err(PeerWireError::InvalidTag {
                    field: "grant_scope_kind",
                    value,
                });
            }
        };
        Ok(Grant {
            subject,
            rights,
            scope,
            expires_at_s: self.u64("grant_expires_at_s")?,
            key_id: KeyId(self.u32("grant_key_id")?),
        })
    }

    /// Ends the body: every byte must have been read.
    pub(super) fn finish(self) -> Result<(), PeerWireError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(PeerWireError::TrailingBytes {
                message: self.message,
                extra: self.body.len(),
            })
        }
    }
}

pub(super) fn put_conn(buf: &mut BytesMut, conn: ConnId) {
    buf.put_u32_le(conn.index);
    buf.put_u32_le(conn.generation);
}

pub(super) fn put_map(buf: &mut BytesMut, map: MapVersion) {
    buf.put_u64_le(map.epoch);
    buf.put_u64_le(map.checksum);
}

pub(super) fn put_shard(buf: &mut BytesMut, shard: ShardId) {
    buf.put_u16_le(shard.host.0);
    buf.put_u16_le(shard.core);
}

/// Writes a grant. Its parts are valid by construction ([`Subject`], [`ConvName`] and
/// [`ConvPrefix`] bound their lengths), so this cannot fail.
pub(super) fn put_grant(buf: &mut BytesMut, grant: &Grant) {
    let (kind, scope) = match &grant.scope {
        Scope::Conversation(name) => (SCOPE_CONVERSATION, name.as_str()),
        Scope::Prefix(prefix) => (SCOPE_PREFIX, prefix.as_str()),
    };
    put_text16(buf, grant.subject.as_str());
    buf.put_u8(grant.rights.bits());
    buf.put_u8(kind);
    put_text16(buf, scope);
    buf.put_u64_le(grant.expires_at_s);
    buf.put_u32_le(grant.key_id.0);
}

/// A u16 length and the text; only for texts whose type bounds them to 255 bytes.
fn put_text16(buf: &mut BytesMut, text: &str) {
    // Subjects are at most 64 bytes, names and prefixes at most 255: the length fits a u16.
    buf.put_u16_le(text.len() as u16);
    buf.put_slice(text.as_bytes());
}
