//! The bytes of the cluster's UDP datagrams: an envelope, identity cards, foca's SWIM
//! messages and the map announcements gossiped alongside them.
//!
//! An explicit little-endian codec rather than a serde format: every length is fixed or
//! bounded by a tag, so a decoder reads at most a known number of bytes and refuses
//! anything else (layouts in `docs/cluster.md`).
//!
//! ```text
//!   datagram     = "hk" ‖ version u8 (1) ‖ kind u8 ‖ body
//!   kind 1 swim  = foca header ‖ foca's updates and broadcasts (cards and items below)
//!   kind 2 who   = nonce u64 ‖ zero padding up to WHO_ARE_YOU_LEN   (exact length)
//!   kind 3 i-am  = nonce u64 ‖ card                                 (no trailing bytes)
//!   card         = host u16 ‖ generation u64 ‖ cluster addr ‖ client addr ‖ cores u16 ‖ weight u32
//!   addr         = 4 ‖ ip[4] ‖ port u16 | 6 ‖ ip[16] ‖ port u16 ‖ flowinfo u32 ‖ scope_id u32
//! ```

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Incarnation, Member, Message, State};

use super::card::HostCard;
use super::error::CodecError;
use crate::ids::HostId;

/// The first two bytes of every hark cluster datagram; anything else is dropped unread.
pub const DATAGRAM_MAGIC: [u8; 2] = *b"hk";
/// The datagram layout version this build speaks.
pub const DATAGRAM_VERSION: u8 = 1;
/// Bytes of the envelope before the body: magic, version, kind.
pub const ENVELOPE_LEN: usize = 4;

/// Longest encoded address (IPv6 with flow info and scope).
const ADDR_LEN_MAX: usize = 1 + 16 + 2 + 4 + 4;
/// Longest encoded card.
pub const CARD_LEN_MAX: usize = 2 + 8 + 2 * ADDR_LEN_MAX + 2 + 4;
/// Length of an i-am datagram with the longest card.
pub const I_AM_LEN_MAX: usize = ENVELOPE_LEN + 8 + CARD_LEN_MAX;
/// Exact length of a who-are-you datagram: padded to the longest answer, so a forged source
/// address gets no more bytes back than the forger sent.
pub const WHO_ARE_YOU_LEN: usize = I_AM_LEN_MAX;

/// Length of one encoded [`MapAnnouncement`].
pub const ANNOUNCEMENT_LEN: usize = 1 + 2 + 8 + 8 + 8 + 8;
/// The announcement layout version.
const ANNOUNCEMENT_VERSION: u8 = 1;

/// What a datagram carries, after the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A SWIM message for foca (its bytes, undecoded).
    Swim(&'a [u8]),
    /// A joining host asks a seed address for its card; the answer echoes `nonce`.
    WhoAreYou {
        /// Chosen by the asker; an answer with another nonce is not trusted.
        nonce: u64,
    },
    /// A seed's answer: its card.
    IAm {
        /// The nonce of the question.
        nonce: u64,
        /// The answering host's card.
        card: HostCard,
    },
}

/// Why a datagram's envelope was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Not a hark cluster datagram (too short or wrong magic).
    NotHark,
    /// A hark datagram of another layout version.
    VersionUnknown(u8),
    /// A kind this version does not define.
    KindUnknown(u8),
    /// A who-are-you or i-am body that does not decode.
    Body(CodecError),
}

const KIND_SWIM: u8 = 1;
const KIND_WHO_ARE_YOU: u8 = 2;
const KIND_I_AM: u8 = 3;

/// Reads the envelope and, for the small kinds, the body.
pub fn decode_datagram(data: &[u8]) -> Result<Datagram<'_>, EnvelopeError> {
    if data.len() < ENVELOPE_LEN || data[..2] != DATAGRAM_MAGIC {
        return Err(EnvelopeError::NotHark);
    }
    if data[2] != DATAGRAM_VERSION {
        return Err(EnvelopeError::VersionUnknown(data[2]));
    }
    let mut body = &data[ENVELOPE_LEN..];
    match data[3] {
        KIND_SWIM => Ok(Datagram::Swim(body)),
        KIND_WHO_ARE_YOU => {
            if data.len() != WHO_ARE_YOU_LEN {
                return Err(EnvelopeError::Body(CodecError::LengthWrong {
                    len: data.len(),
                    expected: WHO_ARE_YOU_LEN,
                }));
            }
            let nonce = read_u64(&mut body).map_err(EnvelopeError::Body)?;
            Ok(Datagram::WhoAreYou { nonce })
        }
        KIND_I_AM => {
            let nonce = read_u64(&mut body).map_err(EnvelopeError::Body)?;
            let card = decode_card(&mut body).map_err(EnvelopeError::Body)?;
            if !body.is_empty() {
                return Err(EnvelopeError::Body(CodecError::TrailingBytes(body.len())));
            }
            Ok(Datagram::IAm { nonce, card })
        }
        kind => Err(EnvelopeError::KindUnknown(kind)),
    }
}

/// The envelope of a SWIM datagram; foca's bytes follow.
pub fn swim_envelope(out: &mut Vec<u8>) {
    out.extend_from_slice(&DATAGRAM_MAGIC);
    out.extend_from_slice(&[DATAGRAM_VERSION, KIND_SWIM]);
}

/// A who-are-you datagram.
pub fn encode_who_are_you(nonce: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(WHO_ARE_YOU_LEN);
    out.extend_from_slice(&DATAGRAM_MAGIC);
    out.extend_from_slice(&[DATAGRAM_VERSION, KIND_WHO_ARE_YOU]);
    out.put_u64_le(nonce);
    out.resize(WHO_ARE_YOU_LEN, 0);
    out
}

/// An i-am datagram.
pub fn encode_i_am(nonce: u64, card: &HostCard) -> Vec<u8> {
    let mut out = Vec::with_capacity(I_AM_LEN_MAX);
    out.extend_from_slice(&DATAGRAM_MAGIC);
    out.extend_from_slice(&[DATAGRAM_VERSION, KIND_I_AM]);
    out.put_u64_le(nonce);
    put_card(&mut out, card);
    out
}

/// One host's view of the map, gossiped as a foca custom broadcast: "host at generation,
/// in its `seq`-th announcement, holds a map of `epoch` and `checksum`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapAnnouncement {
    /// The announcing host.
    pub host: HostId,
    /// Its boot.
    pub generation: u64,
    /// Raised with every announcement of this boot: a receiver keeps only the newest.
    pub seq: u64,
    /// The announcer's map epoch.
    pub epoch: u64,
    /// The announcer's map checksum.
    pub checksum: u64,
}

impl MapAnnouncement {
    /// The fixed-length encoding.
    pub fn encode(&self) -> [u8; ANNOUNCEMENT_LEN] {
        let mut out = [0u8; ANNOUNCEMENT_LEN];
        let mut buf = &mut out[..];
        buf.put_u8(ANNOUNCEMENT_VERSION);
        buf.put_u16_le(self.host.0);
        buf.put_u64_le(self.generation);
        buf.put_u64_le(self.seq);
        buf.put_u64_le(self.epoch);
        buf.put_u64_le(self.checksum);
        out
    }

    /// Decodes exactly one announcement.
    pub fn decode(data: &[u8]) -> Result<Self, CodecError> {
        if data.len() != ANNOUNCEMENT_LEN {
            return Err(CodecError::LengthWrong {
                len: data.len(),
                expected: ANNOUNCEMENT_LEN,
            });
        }
        let mut buf = data;
        let version = buf.get_u8();
        if version != ANNOUNCEMENT_VERSION {
            return Err(CodecError::AnnouncementVersionUnknown(version));
        }
        Ok(Self {
            host: HostId(buf.get_u16_le()),
            generation: buf.get_u64_le(),
            seq: buf.get_u64_le(),
            epoch: buf.get_u64_le(),
            checksum: buf.get_u64_le(),
        })
    }
}

/// foca's [`Codec`] for [`HostCard`] identities, in the layout above.
#[derive(Debug, Clone, Copy, Default)]
pub struct CardCodec;

impl Codec<HostCard> for CardCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<HostCard>,
        mut buf: impl BufMut,
    ) -> Result<(), CodecError> {
        let mut out = Vec::with_capacity(3 * CARD_LEN_MAX + 8);
        put_card(&mut out, &header.src);
        out.put_u16_le(header.src_incarnation);
        put_card(&mut out, &header.dst);
        put_message(&mut out, &header.message);
        put_all(&mut buf, &out)
    }

    fn decode_header(&mut self, mut buf: impl Buf) -> Result<Header<HostCard>, CodecError> {
        let src = decode_card(&mut buf)?;
        let src_incarnation = read_u16(&mut buf)?;
        let dst = decode_card(&mut buf)?;
        let message = decode_message(&mut buf)?;
        Ok(Header {
            src,
            src_incarnation,
            dst,
            message,
        })
    }

    fn encode_member(
        &mut self,
        member: &Member<HostCard>,
        mut buf: impl BufMut,
    ) -> Result<(), CodecError> {
        let mut out = Vec::with_capacity(CARD_LEN_MAX + 3);
        put_card(&mut out, member.id());
        out.put_u16_le(member.incarnation());
        out.put_u8(match member.state() {
            State::Alive => 0,
            State::Suspect => 1,
            State::Down => 2,
        });
        put_all(&mut buf, &out)
    }

    fn decode_member(&mut self, mut buf: impl Buf) -> Result<Member<HostCard>, CodecError> {
        let card = decode_card(&mut buf)?;
        let incarnation: Incarnation = read_u16(&mut buf)?;
        let state = match read_u8(&mut buf)? {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Down,
            tag => return Err(CodecError::StateUnknown(tag)),
        };
        Ok(Member::new(card, incarnation, state))
    }
}

/// Writes `bytes` whole or not at all (foca requires a clean buffer on failure).
fn put_all(buf: &mut impl BufMut, bytes: &[u8]) -> Result<(), CodecError> {
    if buf.remaining_mut() < bytes.len() {
        return Err(CodecError::BufferFull);
    }
    buf.put_slice(bytes);
    Ok(())
}

/// Appends a card's encoding.
pub fn put_card(out: &mut Vec<u8>, card: &HostCard) {
    out.put_u16_le(card.host().0);
    out.put_u64_le(card.generation());
    put_addr(out, card.cluster_addr());
    put_addr(out, card.client_addr());
    out.put_u16_le(card.cores());
    out.put_u32_le(card.weight_per_core());
}

/// Reads and validates one card.
pub fn decode_card(buf: &mut impl Buf) -> Result<HostCard, CodecError> {
    let host = HostId(read_u16(buf)?);
    let generation = read_u64(buf)?;
    let cluster_addr = decode_addr(buf)?;
    let client_addr = decode_addr(buf)?;
    let cores = read_u16(buf)?;
    let weight_per_core = read_u32(buf)?;
    Ok(HostCard::new(
        host,
        generation,
        cluster_addr,
        client_addr,
        cores,
        weight_per_core,
    )?)
}

fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            out.put_u8(4);
            out.put_slice(&v4.ip().octets());
            out.put_u16_le(v4.port());
        }
        SocketAddr::V6(v6) => {
            out.put_u8(6);
            out.put_slice(&v6.ip().octets());
            out.put_u16_le(v6.port());
            out.put_u32_le(v6.flowinfo());
            out.put_u32_le(v6.scope_id());
        }
    }
}

fn decode_addr(buf: &mut impl Buf) -> Result<SocketAddr, CodecError> {
    match read_u8(buf)? {
        4 => {
            let mut ip = [0u8; 4];
            read_exact(buf, &mut ip)?;
            let port = read_u16(buf)?;
            Ok(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        6 => {
            let mut ip = [0u8; 16];
            read_exact(buf, &mut ip)?;
            let port = read_u16(buf)?;
            let flowinfo = read_u32(buf)?;
            let scope_id = read_u32(buf)?;
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flowinfo,
                scope_id,
            )))
        }
        tag => Err(CodecError::AddressFamilyUnknown(tag)),
    }
}

const MSG_PING: u8 = 0;
const MSG_ACK: u8 = 1;
const MSG_PING_REQ: u8 = 2;
const MSG_INDIRECT_PING: u8 = 3;
const MSG_INDIRECT_ACK: u8 = 4;
const MSG_FORWARDED_ACK: u8 = 5;
const MSG_ANNOUNCE: u8 = 6;
const MSG_FEED: u8 = 7;
const MSG_GOSSIP: u8 = 8;
const MSG_BROADCAST: u8 = 9;
const MSG_TURN_UNDEAD: u8 = 10;

fn put_message(out: &mut Vec<u8>, message: &Message<HostCard>) {
    match message {
        Message::Ping(probe) => out.extend_from_slice(&[MSG_PING, *probe]),
        Message::Ack(probe) => out.extend_from_slice(&[MSG_ACK, *probe]),
        Message::PingReq {
            target,
            probe_number,
        } => put_card_and_probe(out, MSG_PING_REQ, target, *probe_number),
        Message::IndirectPing {
            origin,
            probe_number,
        } => put_card_and_probe(out, MSG_INDIRECT_PING, origin, *probe_number),
        Message::IndirectAck {
            target,
            probe_number,
        } => put_card_and_probe(out, MSG_INDIRECT_ACK, target, *probe_number),
        Message::ForwardedAck {
            origin,
            probe_number,
        } => put_card_and_probe(out, MSG_FORWARDED_ACK, origin, *probe_number),
        Message::Announce => out.put_u8(MSG_ANNOUNCE),
        Message::Feed => out.put_u8(MSG_FEED),
        Message::Gossip => out.put_u8(MSG_GOSSIP),
        Message::Broadcast => out.put_u8(MSG_BROADCAST),
        Message::TurnUndead => out.put_u8(MSG_TURN_UNDEAD),
    }
}

fn put_card_and_probe(out: &mut Vec<u8>, tag: u8, card: &HostCard, probe_number: u8) {
    out.put_u8(tag);
    put_card(out, card);
    out.put_u8(probe_number);
}

fn decode_message(buf: &mut impl Buf) -> Result<Message<HostCard>, CodecError> {
    let tag = read_u8(buf)?;
    let message = match tag {
        MSG_PING => Message::Ping(read_u8(buf)?),
        MSG_ACK => Message::Ack(read_u8(buf)?),
        MSG_PING_REQ | MSG_INDIRECT_PING | MSG_INDIRECT_ACK | MSG_FORWARDED_ACK => {
            let card = decode_card(buf)?;
            let probe_number = read_u8(buf)?;
            match tag {
                MSG_PING_REQ => Message::PingReq {
                    target: card,
                    probe_number,
                },
                MSG_INDIRECT_PING => Message::IndirectPing {
                    origin: card,
                    probe_number,
                },
                MSG_INDIRECT_ACK => Message::IndirectAck {
                    target: card,
                    probe_number,
                },
                _ => Message::ForwardedAck {
                    origin: card,
                    probe_number,
                },
            }
        }
        MSG_ANNOUNCE => Message::Announce,
        MSG_FEED => Message::Feed,
        MSG_GOSSIP => Message::Gossip,
        MSG_BROADCAST => Message::Broadcast,
        MSG_TURN_UNDEAD => Message::TurnUndead,
        tag => return Err(CodecError::MessageUnknown(tag)),
    };
    Ok(message)
}

fn need(buf: &impl Buf, len: usize) -> Result<(), CodecError> {
    if buf.remaining() < len {
        return Err(CodecError::Truncated {
            needed: len - buf.remaining(),
        });
    }
    Ok(())
}

fn read_exact(buf: &mut impl Buf, out: &mut [u8]) -> Result<(), CodecError> {
    need(buf, out.len())?;
    buf.copy_to_slice(out);
    Ok(())
}

fn read_u8(buf: &mut impl Buf) -> Result<u8, CodecError> {
    need(buf, 1)?;
    Ok(buf.get_u8())
}

fn read_u16(buf: &mut impl Buf) -> Result<u16, CodecError> {
    need(buf, 2)?;
    Ok(buf.get_u16_le())
}

fn read_u32(buf: &mut impl Buf) -> Result<u32, CodecError> {
    need(buf, 4)?;
    Ok(buf.get_u32_le())
}

fn read_u64(buf: &mut impl Buf) -> Result<u64, CodecError> {
    need(buf, 8)?;
    Ok(buf.get_u64_le())
}
