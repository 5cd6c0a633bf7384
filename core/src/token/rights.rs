//! What a token lets its holder do: a small set of [`Right`]s.

use std::fmt;
use std::str::FromStr;

use super::TokenError;

/// One thing a token can allow. Rights are independent: `admin` does not imply the others,
/// so an operator token that should also talk lists `talk,admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Right {
    /// Start messages and send frames in a conversation.
    Talk,
    /// Receive a conversation's live frames.
    Listen,
    /// Replay stored messages (listen from a message or a time, history queries).
    History,
    /// Operate the relay: drain, ring and store inspection.
    Admin,
}

impl Right {
    /// Every right, in bit order (the order [`Rights`] formats them in).
    pub const ALL: [Right; 4] = [Right::Talk, Right::Listen, Right::History, Right::Admin];

    /// The right's bit in the token's rights byte.
    pub const fn bit(self) -> u8 {
        match self {
            Right::Talk => 1,
            Right::Listen => 2,
            Right::History => 4,
            Right::Admin => 8,
        }
    }

    /// The right's name in the text form: `talk`, `listen`, `history`, `admin`.
    pub const fn name(self) -> &'static str {
        match self {
            Right::Talk => "talk",
            Right::Listen => "listen",
            Right::History => "history",
            Right::Admin => "admin",
        }
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Right`]s, stored as the token's rights byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rights(u8);

impl Rights {
    /// No right at all.
    pub const NONE: Rights = Rights(0);
    /// Every right.
    pub const ALL: Rights = Rights(0b1111);

    /// The set holding exactly `rights`.
    pub fn of(rights: &[Right]) -> Self {
        Rights(rights.iter().fold(0, |bits, right| bits | right.bit()))
    }

    /// Reads a rights byte; `None` when it has a bit this version does not know.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits & !Self::ALL.0 == 0 {
            Some(Rights(bits))
        } else {
            None
        }
    }

    /// The rights byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether `right` is in the set.
    pub const fn contains(self, right: Right) -> bool {
        self.0 & right.bit() != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set with `right` added.
    pub const fn with(self, right: Right) -> Self {
        Rights(self.0 | right.bit())
    }

    /// The rights in the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Right> {
        Right::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rights({self})")
    }
}

/// Comma-separated names in bit order, e.g. `talk,listen`; empty for no right.
impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, right) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(right.name())?;
        }
        Ok(())
    }
}

/// Parses comma-separated right names (`talk,listen,history,admin`, any order, repeats
/// allowed, spaces around names ignored); the empty string is no right.
impl FromStr for Rights {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(Rights::NONE);
        }
        let mut rights = Rights::NONE;
        for name in s.split(',') {
            let name = name.trim();
            let right = Right::ALL
                .into_iter()
                .find(|r| r.name() == name)
                .ok_or_else(|| TokenError::RightUnknown(name.chars().take(32).collect()))?;
            rights = rights.with(right);
        }
        Ok(rights)
    }
}
