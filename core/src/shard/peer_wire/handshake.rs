//! The link handshake: three messages that prove to each host that the other holds the
//! cluster's keyring, and tell each the other's shard, boot generation and map version.
//!
//! ```text
//!  dialer                                           acceptor
//!    ── link_hello {version, key_id, from, to, map, generation, nonce_d} ──►
//!    ◄─ link_welcome {nonce_a, generation, map, MAC(k, "acceptor" ‖ hello ‖ nonce_a ‖ generation ‖ map)}
//!    ── link_proof {MAC(k, "dialer" ‖ hello ‖ nonce_a)} ─────────────────────►
//!  Established                                      Established
//! ```
//!
//! `k` is the link key of the hello's key id: BLAKE3 `derive_key("hark peer link v1", key)`
//! of a keyring key; the MAC is BLAKE3 keyed with `k`. `hello` is the hello frame exactly as
//! sent (length prefix included). Sans-IO: both sides are fed bytes and append what to send
//! to an output buffer; nonces come from the caller's random source.

use bytes::{Buf, BufMut, BytesMut};

use super::body::{MAP_LEN, Reader, SHARD_LEN, put_map, put_shard};
use super::codec::{LEN_PREFIX_LEN, begin_frame, end_frame, next_frame, type_code};
use super::{HANDSHAKE_FRAME_LEN_MAX, PEER_LINK_VERSION, PeerWireError};
use crate::ids::{HostId, ShardId};
use crate::shard::MapVersion;
use crate::token::{KeyId, Keyring};

/// BLAKE3 `derive_key` context that turns a keyring key into its link key, so a link MAC can
/// never be confused with a token MAC made with the same key.
pub const LINK_KEY_CONTEXT: &str = "hark peer link v1";

/// Bytes of a handshake nonce.
pub const LINK_NONCE_LEN: usize = 16;

/// Bytes of a handshake MAC (a BLAKE3 output).
const MAC_LEN: usize = 32;

/// Body bytes of a version 1 hello: version, key id, from, to, map, generation, nonce.
const HELLO_BODY_LEN: usize = 2 + 4 + SHARD_LEN + SHARD_LEN + MAP_LEN + 8 + LINK_NONCE_LEN;

/// Bytes of a whole version 1 hello frame, the input of both MACs.
const HELLO_FRAME_LEN: usize = LEN_PREFIX_LEN + 1 + HELLO_BODY_LEN;

/// Domain labels in front of each MAC's input, so the acceptor's MAC can never serve as the
/// dialer's.
const WELCOME_LABEL: &[u8] = b"acceptor";
const PROOF_LABEL: &[u8] = b"dialer";

/// What a host tells its peer about itself in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostState {
    /// The host's boot generation: a number that grows with every start of the host, so a
    /// peer can tell a restarted host (whose proxy sessions are gone) from a reconnect.
    pub generation: u64,
    /// The ownership map the host runs now.
    pub map: MapVersion,
}

/// The outcome of a handshake: the link is authenticated and joins `local` to `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Established {
    /// This side's shard (the dialer's `from`, or the acceptor's shard the hello named).
    pub local: ShardId,
    /// The other side's shard.
    pub peer: ShardId,
    /// The peer host's boot generation.
    pub peer_generation: u64,
    /// The map the peer host ran at the handshake.
    pub peer_map: MapVersion,
    /// The keyring key both sides proved they hold.
    pub key_id: KeyId,
}

/// One link key. Its `Debug` never shows the bytes, so a handshake can be logged.
#[derive(Clone, Copy)]
struct LinkKey([u8; 32]);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(<redacted>)")
    }
}

/// The link keys of a keyring, derived once per keyring and shared by every handshake.
#[derive(Clone)]
pub struct LinkKeys {
    /// 1..=KEYRING_KEYS_MAX link keys, in keyring order.
    keys: Vec<(KeyId, LinkKey)>,
    /// The key an acceptor uses for a hello with an unknown key id, so that hello is answered
    /// exactly like a good one. Secret (derived from a keyring key), so a peer without the
    /// keyring cannot tell a decoy welcome from a real one.
    decoy: LinkKey,
}

impl LinkKeys {
    /// The link key of every key in `keyring`.
    pub fn derive(keyring: &Keyring) -> Self {
        let keys: Vec<(KeyId, LinkKey)> = keyring
            .key_ids()
            .filter_map(|id| {
                let key = keyring.key(id)?;
                Some((
                    id,
                    LinkKey(blake3::derive_key(LINK_KEY_CONTEXT, key.as_bytes())),
                ))
            })
            .collect();
        // A keyring holds at least one key, so the minting key's link key is there.
        let first = keys.first().map_or([0; 32], |(_, key)| key.0);
        let decoy = LinkKey(*blake3::keyed_hash(&first, b"hark peer link v1 decoy").as_bytes());
        Self { keys, decoy }
    }

    fn get(&self, key_id: KeyId) -> Option<&LinkKey> {
        self.keys
            .iter()
            .find(|(id, _)| *id == key_id)
            .map(|(_, key)| key)
    }
}

impl std::fmt::Debug for LinkKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<KeyId> = self.keys.iter().map(|(id, _)| *id).collect();
        write!(f, "LinkKeys({ids:?}, <redacted>)")
    }
}

fn welcome_mac(
    key: &LinkKey,
    hello: &[u8],
    nonce: &[u8; LINK_NONCE_LEN],
    host: HostState,
) -> blake3::Hash {
    let mut mac = blake3::Hasher::new_keyed(&key.0);
    mac.update(WELCOME_LABEL);
    mac.update(hello);
    mac.update(nonce);
    mac.update(&host.generation.to_le_bytes());
    mac.update(&host.map.epoch.to_le_bytes());
    mac.update(&host.map.checksum.to_le_bytes());
    mac.finalize()
}

fn proof_mac(key: &LinkKey, hello: &[u8], acceptor_nonce: &[u8; LINK_NONCE_LEN]) -> blake3::Hash {
    let mut mac = blake3::Hasher::new_keyed(&key.0);
    mac.update(PROOF_LABEL);
    mac.update(hello);
    mac.update(acceptor_nonce);
    mac.finalize()
}

/// Takes the next whole handshake frame of type `expected` off `input`, returning its body.
fn next_message(input: &mut BytesMut, expected: u8) -> Result<Option<BytesMut>, PeerWireError> {
    let Some((type_code, body_len)) = next_frame(input, HANDSHAKE_FRAME_LEN_MAX)? else {
        return Ok(None);
    };
    let mut frame = input.split_to(LEN_PREFIX_LEN + 1 + body_len);
    if type_code != expected {
        return Err(PeerWireError::UnknownType { type_code });
    }
    frame.advance(LEN_PREFIX_LEN + 1);
    Ok(Some(frame))
}

/// The dialing side of a link handshake.
#[derive(Debug)]
pub struct DialerHandshake {
    key: LinkKey,
    key_id: KeyId,
    hello: [u8; HELLO_FRAME_LEN],
    from: ShardId,
    to: ShardId,
    over: bool,
}

impl DialerHandshake {
    /// Starts a handshake from shard `from` of this host to shard `to` of another, proving
    /// the key `key_id` (use the keyring's minting key: see docs/peer-links.md on rotation),
    /// and appends the hello to `out`. `nonce` must be fresh random bytes. Fails only when the
    /// keyring lacks `key_id`.
    pub fn start(
        keys: &LinkKeys,
        key_id: KeyId,
        from: ShardId,
        to: ShardId,
        local: HostState,
        nonce: [u8; LINK_NONCE_LEN],
        out: &mut BytesMut,
    ) -> Result<Self, PeerWireError> {
        let key = *keys
            .get(key_id)
            .ok_or(PeerWireError::KeyUnknown { key_id })?;
        let mut frame = BytesMut::with_capacity(HELLO_FRAME_LEN);
        let start = begin_frame(&mut frame, type_code::LINK_HELLO);
        frame.put_u16_le(PEER_LINK_VERSION);
        frame.put_u32_le(key_id.0);
        put_shard(&mut frame, from);
        put_shard(&mut frame, to);
        put_map(&mut frame, local.map);
        frame.put_u64_le(local.generation);
        frame.put_slice(&nonce);
        end_frame(&mut frame, start);
        let mut hello = [0u8; HELLO_FRAME_LEN];
        hello.copy_from_slice(&frame);
        out.put_slice(&hello);
        Ok(Self {
            key,
            key_id,
            hello,
            from,
            to,
            over: false,
        })
    }

    /// Feeds bytes from the acceptor. `Ok(None)` until the whole welcome is there; then
    /// checks it, appends the proof to `out` and returns the established link. Bytes after
    /// the welcome stay in `input` for the [`super::LinkDecoder`].
    pub fn handle_input(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Option<Established>, PeerWireError> {
        if self.over {
            return Err(PeerWireError::HandshakeOver);
        }
        let result = self.welcome(input, out);
        if !matches!(result, Ok(None)) {
            self.over = true;
        }
        result
    }

    fn welcome(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Option<Established>, PeerWireError> {
        let Some(body) = next_message(input, type_code::LINK_WELCOME)? else {
            return Ok(None);
        };
        let mut r = Reader::new(&body, "link_welcome");
        let nonce: [u8; LINK_NONCE_LEN] = r.array("nonce")?;
        let generation = r.u64("generation")?;
        let map = r.map()?;
        let mac: [u8; MAC_LEN] = r.array("mac")?;
        r.finish()?;
        let peer = HostState { generation, map };
        // blake3::Hash compares in constant time.
        if welcome_mac(&self.key, &self.hello, &nonce, peer) != blake3::Hash::from(mac) {
            return Err(PeerWireError::MacInvalid);
        }
        let start = begin_frame(out, type_code::LINK_PROOF);
        out.put_slice(proof_mac(&self.key, &self.hello, &nonce).as_bytes());
        end_frame(out, start);
        Ok(Some(Established {
            local: self.from,
            peer: self.to,
            peer_generation: generation,
            peer_map: map,
            key_id: self.key_id,
        }))
    }
}

/// Where an acceptor is in its handshake.
#[derive(Debug)]
enum AcceptorPhase {
    AwaitingHello,
    AwaitingProof {
        /// The hello's link key, or the decoy when the key id is unknown.
        key: LinkKey,
        /// Whether `key` is the decoy: reported only once the proof is checked.
        key_unknown: bool,
        hello: [u8; HELLO_FRAME_LEN],
        established: Established,
    },
    Over,
}

/// The accepting side of a link handshake.
#[derive(Debug)]
pub struct AcceptorHandshake {
    keys: LinkKeys,
    host: HostId,
    local: HostState,
    nonce: [u8; LINK_NONCE_LEN],
    phase: AcceptorPhase,
}

impl AcceptorHandshake {
    /// Waits for a hello to a shard of `host`, answering with `local` (this host's boot
    /// generation and map). `nonce` must be fresh random bytes.
    pub fn new(
        keys: &LinkKeys,
        host: HostId,
        local: HostState,
        nonce: [u8; LINK_NONCE_LEN],
    ) -> Self {
        Self {
            keys: keys.clone(),
            host,
            local,
            nonce,
            phase: AcceptorPhase::AwaitingHello,
        }
    }

    /// Feeds bytes from the dialer. Appends the welcome to `out` once the hello is in;
    /// returns the established link once the proof checks out (`Ok(None)` until then). Bytes
    /// after the proof stay in `input` for the [`super::LinkDecoder`]. The caller checks that
    /// `Established::local`'s core exists on this host.
    pub fn handle_input(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Option<Established>, PeerWireError> {
        loop {
            let step = match &self.phase {
                AcceptorPhase::AwaitingHello => self.hello(input, out),
                AcceptorPhase::AwaitingProof { .. } => self.proof(input),
                AcceptorPhase::Over => return Err(PeerWireError::HandshakeOver),
            };
            match step {
                Ok(Step::Wait) => return Ok(None),
                Ok(Step::Next(phase)) => self.phase = phase,
                Ok(Step::Done(established)) => {
                    self.phase = AcceptorPhase::Over;
                    return Ok(Some(established));
                }
                Err(error) => {
                    self.phase = AcceptorPhase::Over;
                    return Err(error);
                }
            }
        }
    }

    fn hello(&self, input: &mut BytesMut, out: &mut BytesMut) -> Result<Step, PeerWireError> {
        let Some(body) = next_message(input, type_code::LINK_HELLO)? else {
            return Ok(Step::Wait);
        };
        let mut r = Reader::new(&body, "link_hello");
        // The version first: a later version's hello may be laid out differently.
        let version = r.u16("version")?;
        if version != PEER_LINK_VERSION {
            return Err(PeerWireError::VersionUnsupported {
                version,
                supported: PEER_LINK_VERSION,
            });
        }
        let key_id = KeyId(r.u32("key_id")?);
        let from = r.shard("from")?;
        let to = r.shard("to")?;
        let map = r.map()?;
        let generation = r.u64("generation")?;
        let _nonce: [u8; LINK_NONCE_LEN] = r.array("nonce")?;
        r.finish()?;
        if to.host != self.host {
            return Err(PeerWireError::TargetWrong {
                to,
                host: self.host,
            });
        }
        // An unknown key id is answered like a known one, with a decoy key, and refused only
        // at the proof: the dialer learns nothing about which key ids this host holds.
        let (key, key_unknown) = match self.keys.get(key_id) {
            Some(key) => (*key, false),
            None => (self.keys.decoy, true),
        };
        let mut hello = [0u8; HELLO_FRAME_LEN];
        // The body is exactly HELLO_BODY_LEN (checked by `finish`), so the frame is
        // HELLO_FRAME_LEN bytes: prefix, type, body.
        hello[..LEN_PREFIX_LEN].copy_from_slice(&((1 + HELLO_BODY_LEN) as u32).to_le_bytes());
        hello[LEN_PREFIX_LEN] = type_code::LINK_HELLO;
        hello[LEN_PREFIX_LEN + 1..].copy_from_slice(&body);

        let start = begin_frame(out, type_code::LINK_WELCOME);
        out.put_slice(&self.nonce);
        out.put_u64_le(self.local.generation);
        put_map(out, self.local.map);
        out.put_slice(welcome_mac(&key, &hello, &self.nonce, self.local).as_bytes());
        end_frame(out, start);
        Ok(Step::Next(AcceptorPhase::AwaitingProof {
            key,
            key_unknown,
            hello,
            established: Established {
                local: to,
                peer: from,
                peer_generation: generation,
                peer_map: map,
                key_id,
            },
        }))
    }

    fn proof(&self, input: &mut BytesMut) -> Result<Step, PeerWireError> {
        let AcceptorPhase::AwaitingProof {
            key,
            key_unknown,
            hello,
            established,
        } = &self.phase
        else {
            return Err(PeerWireError::HandshakeOver);
        };
        let Some(body) = next_message(input, type_code::LINK_PROOF)? else {
            return Ok(Step::Wait);
        };
        let mut r = Reader::new(&body, "link_proof");
        let mac: [u8; MAC_LEN] = r.array("mac")?;
        r.finish()?;
        // blake3::Hash compares in constant time; the MAC is computed and compared for an
        // unknown key id too, so both refusals take the same path up to here.
        let mac_matches = proof_mac(key, hello, &self.nonce) == blake3::Hash::from(mac);
        if *key_unknown {
            return Err(PeerWireError::KeyUnknown {
                key_id: established.key_id,
            });
        }
        if !mac_matches {
            return Err(PeerWireError::MacInvalid);
        }
        Ok(Step::Done(*established))
    }
}

/// One step of the acceptor.
enum Step {
    /// More input is needed.
    Wait,
    /// The phase moved on; try the next message.
    Next(AcceptorPhase),
    /// The proof checked out.
    Done(Established),
}
