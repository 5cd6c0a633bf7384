//! Identifiers every host computes the same way.
//!
//! * [`ConvName`] / [`ConvId`]: a conversation is named by a UTF-8 string; its 64-bit id is the
//!   XXH3-64 hash (seed 0) of the name's UTF-8 bytes, so a client in any language derives the
//!   same id from the same name.
//! * [`ShardId`]: one core of one host, `(host, core)`: the unit that owns conversations and
//!   stores messages.
//! * [`MsgId`]: one message (one press of the talk button). 128 bits that name the shard which
//!   stores the message and order messages by start time:
//!
//! ```text
//!  127                      64 63        48 47        32 31                  0
//! ┌──────────────────────────┬────────────┬────────────┬─────────────────────┐
//! │ start time, µs since the │  host id   │    core    │ counter (per shard, │
//! │ Unix epoch (u64)         │   (u16)    │   (u16)    │ per microsecond)    │
//! └──────────────────────────┴────────────┴────────────┴─────────────────────┘
//! ```
//!
//! On the wire a `MsgId` is 16 bytes little-endian (the u128 value); as text it is 32
//! lowercase hex digits of the u128 value, most significant first, so text order equals
//! numeric order equals start-time order.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Longest conversation name, in UTF-8 bytes.
pub const CONV_NAME_LEN_MAX: usize = 255;

/// Why a string is not a valid conversation name or id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IdError {
    /// The conversation name is empty; give it at least one character.
    #[error("conversation name is empty")]
    ConvNameEmpty,
    /// The conversation name is longer than [`CONV_NAME_LEN_MAX`] bytes; shorten it.
    #[error("conversation name is {len} bytes, the limit is {CONV_NAME_LEN_MAX}")]
    ConvNameTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The conversation name holds a control character (U+0000–U+001F, U+007F), which would
    /// garble logs and terminals; remove it.
    #[error("conversation name contains a control character at byte {at}")]
    ConvNameControl {
        /// Byte offset of the first control character.
        at: usize,
    },
    /// The bytes are not valid UTF-8.
    #[error("conversation name is not valid UTF-8")]
    ConvNameUtf8,
    /// A message id must be exactly 32 hexadecimal digits.
    #[error("message id must be 32 hex digits, got {0:?}")]
    MsgIdText(String),
}

/// A validated conversation name: 1 to 255 bytes of UTF-8 without control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConvName(String);

impl ConvName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, IdError> {
        let name = name.into();
        if name.is_empty() {
            return Err(IdError::ConvNameEmpty);
        }
        if name.len() > CONV_NAME_LEN_MAX {
            return Err(IdError::ConvNameTooLong { len: name.len() });
        }
        if let Some(at) = name.bytes().position(|b| b < 0x20 || b == 0x7f) {
            return Err(IdError::ConvNameControl { at });
        }
        Ok(Self(name))
    }

    /// Validates a name received as raw bytes (from the wire or a file).
    pub fn from_utf8(bytes: &[u8]) -> Result<Self, IdError> {
        let name = std::str::from_utf8(bytes).map_err(|_| IdError::ConvNameUtf8)?;
        Self::new(name)
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The conversation's id: XXH3-64 (seed 0) of the name's UTF-8 bytes.
    pub fn id(&self) -> ConvId {
        ConvId::of_name(&self.0)
    }
}

impl fmt::Debug for ConvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ConvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ConvName {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for ConvName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A conversation's 64-bit key: XXH3-64 with seed 0 of the UTF-8 name.
///
/// This is the key of the ownership map and of the store's per-conversation timelines.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConvId(pub u64);

impl ConvId {
    /// Hashes a conversation name. The name is not validated here; use [`ConvName`] for input.
    pub fn of_name(name: &str) -> Self {
        Self(xxhash_rust::xxh3::xxh3_64(name.as_bytes()))
    }
}

impl fmt::Display for ConvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A host of the cluster. Operators assign host ids; they must be unique in a cluster.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct HostId(pub u16);

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One shard: a core of a host. It owns conversations and has its own slice of the store.
///
/// `core` is the shard's number on its host: the CPU core it is pinned to. A store directory
/// is named after its shard, so history written by a shard stays addressable after the host
/// restarts with another set of cores.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ShardId {
    /// The host the shard runs on.
    pub host: HostId,
    /// The shard's number on that host: its index in the host's core list (not the CPU id;
    /// see docs/decisions.md).
    pub core: u16,
}

impl ShardId {
    /// The shard `core` on `host`.
    pub const fn new(host: u16, core: u16) -> Self {
        Self {
            host: HostId(host),
            core,
        }
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host.0, self.core)
    }
}

/// A message id; see the module docs for the bit layout.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgId(pub u128);

impl MsgId {
    /// Assembles an id from its parts.
    pub const fn from_parts(start_us: u64, shard: ShardId, counter: u32) -> Self {
        Self(
            ((start_us as u128) << 64)
                | ((shard.host.0 as u128) << 48)
                | ((shard.core as u128) << 32)
                | counter as u128,
        )
    }

    /// Start time of the message, microseconds since the Unix epoch, as the owner shard's
    /// clock saw it.
    pub const fn start_us(self) -> u64 {
        (self.0 >> 64) as u64
    }

    /// The shard that assigned the id and stores the message.
    pub const fn shard(self) -> ShardId {
        ShardId {
            host: HostId((self.0 >> 48) as u16),
            core: (self.0 >> 32) as u16,
        }
    }

    /// The per-shard counter that separates ids assigned in the same microsecond.
    pub const fn counter(self) -> u32 {
        self.0 as u32
    }

    /// The 16-byte wire form: the u128 value, little-endian.
    pub const fn to_le_bytes(self) -> [u8; 16] {
        self.0.to_le_bytes()
    }

    /// Reads the 16-byte wire form.
    pub const fn from_le_bytes(bytes: [u8; 16]) -> Self {
        Self(u128::from_le_bytes(bytes))
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MsgId({:032x})", self.0)
    }
}

impl FromStr for MsgId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdError::MsgIdText(s.chars().take(40).collect()));
        }
        u128::from_str_radix(s, 16)
            .map(MsgId)
            .map_err(|_| IdError::MsgIdText(s.to_owned()))
    }
}

/// Hands out strictly increasing [`MsgId`]s for one shard.
///
/// Time comes in as an argument. Ids never go backwards even if the clock does: a reading at
/// or before the last id's time reuses that time with the next counter value. After a restart,
/// seed the generator with the newest id the shard has stored ([`MsgIdGenerator::resume_after`])
/// so a clock that stepped back cannot reissue an id.
#[derive(Debug, Clone)]
pub struct MsgIdGenerator {
    shard: ShardId,
    last: Option<MsgId>,
}

impl MsgIdGenerator {
    /// A generator for `shard` that has issued nothing yet.
    pub const fn new(shard: ShardId) -> Self {
        Self { shard, last: None }
    }

    /// Makes every later id greater than `newest`, whichever shard issued `newest`.
    pub fn resume_after(&mut self, newest: MsgId) {
        if self.last.is_none_or(|last| newest > last) {
            self.last = Some(newest);
        }
    }

    /// The shard this generator issues ids for.
    pub const fn shard(&self) -> ShardId {
        self.shard
    }

    /// The next id, for a message starting at `now_us` (µs since the Unix epoch).
    pub fn next(&mut self, now_us: u64) -> MsgId {
        let candidate = MsgId::from_parts(now_us, self.shard, 0);
        let id = match self.last {
            Some(last) if candidate <= last => self.smallest_after(last),
            _ => candidate,
        };
        self.last = Some(id);
        id
    }

    /// The smallest id of this shard greater than `floor`: the same microsecond when that is
    /// still free, else the following one.
    fn smallest_after(&self, floor: MsgId) -> MsgId {
        let start_us = floor.start_us();
        if floor.shard() == self.shard {
            if let Some(counter) = floor.counter().checked_add(1) {
                return MsgId::from_parts(start_us, self.shard, counter);
            }
        } else if MsgId::from_parts(start_us, self.shard, 0) > floor {
            return MsgId::from_parts(start_us, self.shard, 0);
        }
        MsgId::from_parts(start_us.saturating_add(1), self.shard, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn conv_id_is_xxh3_of_the_utf8_name() {
        // Reference values of XXH3-64 with seed 0; a client in another language must match.
        assert_eq!(ConvId::of_name("").0, 0x2d06_8005_38d3_94c2);
        assert_eq!(
            ConvName::new("general").unwrap().id(),
            ConvId::of_name("general")
        );
        assert_ne!(ConvId::of_name("a"), ConvId::of_name("b"));
    }

    #[test]
    fn conv_names_are_validated() {
        assert_eq!(ConvName::new(""), Err(IdError::ConvNameEmpty));
        assert_eq!(
            ConvName::new("x".repeat(256)),
            Err(IdError::ConvNameTooLong { len: 256 })
        );
        assert!(ConvName::new("x".repeat(255)).is_ok());
        assert_eq!(
            ConvName::new("a\nb"),
            Err(IdError::ConvNameControl { at: 1 })
        );
        assert_eq!(
            ConvName::from_utf8(&[0xff, 0xfe]),
            Err(IdError::ConvNameUtf8)
        );
        assert_eq!(ConvName::new("équipe/ops").unwrap().as_str(), "équipe/ops");
    }

    #[test]
    fn msg_id_layout_is_as_documented() {
        let id = MsgId::from_parts(
            0x0102_0304_0506_0708,
            ShardId::new(0x0a0b, 0x0c0d),
            0x1122_3344,
        );
        assert_eq!(id.0, 0x0102_0304_0506_0708_0a0b_0c0d_1122_3344);
        assert_eq!(id.to_string(), "01020304050607080a0b0c0d11223344");
        assert_eq!(id.start_us(), 0x0102_0304_0506_0708);
        assert_eq!(id.shard(), ShardId::new(0x0a0b, 0x0c0d));
        assert_eq!(id.counter(), 0x1122_3344);
        assert_eq!(id.to_le_bytes()[0], 0x44);
        assert_eq!("01020304050607080a0b0c0d11223344".parse::<MsgId>(), Ok(id));
        assert!("0102".parse::<MsgId>().is_err());
        assert!("0102030405060708 a0b0c0d11223344".parse::<MsgId>().is_err());
        assert!("+1020304050607080a0b0c0d11223344".parse::<MsgId>().is_err());
    }

    #[test]
    fn generator_is_monotonic_when_the_clock_stalls_or_steps_back() {
        let shard = ShardId::new(3, 1);
        let mut g = MsgIdGenerator::new(shard);
        let a = g.next(1_000);
        let b = g.next(1_000);
        let c = g.next(900);
        let d = g.next(2_000);
        assert!(a < b && b < c && c < d);
        assert_eq!((a.start_us(), a.counter()), (1_000, 0));
        assert_eq!((b.start_us(), b.counter()), (1_000, 1));
        assert_eq!((c.start_us(), c.counter()), (1_000, 2));
        assert_eq!((d.start_us(), d.counter()), (2_000, 0));
        assert!([a, b, c, d].iter().all(|id| id.shard() == shard));
    }

    #[test]
    fn generator_resumes_after_the_newest_stored_id() {
        let shard = ShardId::new(1, 0);
        let mut g = MsgIdGenerator::new(shard);
        let stored = MsgId::from_parts(5_000, ShardId::new(2, 7), 9);
        g.resume_after(stored);
        let next = g.next(4_000);
        assert!(next > stored);
        assert_eq!(next.shard(), shard);
        // Our own older id does not move the floor back.
        g.resume_after(MsgId::from_parts(10, shard, 0));
        assert!(g.next(0) > next);
    }

    #[test]
    fn generator_counter_exhaustion_borrows_the_next_microsecond() {
        let shard = ShardId::new(0, 0);
        let mut g = MsgIdGenerator::new(shard);
        g.resume_after(MsgId::from_parts(7, shard, u32::MAX));
        let id = g.next(7);
        assert_eq!((id.start_us(), id.counter()), (8, 0));
    }

    proptest! {
        #[test]
        fn generated_ids_strictly_increase(
            seed in any::<MsgId>(),
            clock in proptest::collection::vec(0u64..10_000, 1..200),
        ) {
            let shard = ShardId::new(4, 2);
            let mut g = MsgIdGenerator::new(shard);
            g.resume_after(seed);
            let mut prev = seed;
            for now in clock {
                let id = g.next(now);
                prop_assert!(id > prev, "{id:?} after {prev:?}");
                prop_assert_eq!(id.shard(), shard);
                prev = id;
            }
        }

        #[test]
        fn msg_id_text_and_bytes_round_trip(v in any::<u128>()) {
            let id = MsgId(v);
            prop_assert_eq!(id.to_string().parse::<MsgId>(), Ok(id));
            prop_assert_eq!(MsgId::from_le_bytes(id.to_le_bytes()), id);
        }
    }

    impl Arbitrary for MsgId {
        type Parameters = ();
        type Strategy = BoxedStrategy<Self>;
        fn arbitrary_with(_: ()) -> Self::Strategy {
            any::<u128>().prop_map(MsgId).boxed()
        }
    }
}
