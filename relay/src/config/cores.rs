//! CPU core lists in the Linux cpuset notation (`taskset -c`, `/sys/.../cpus_allowed_list`):
//! comma-separated ids and inclusive ranges, `0-3,6`. A list is a set: it comes out sorted
//! and without duplicates, so shard `i` is pinned to the `i`-th smallest listed CPU.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

/// Highest CPU id a list may name: core_affinity pins through a `cpu_set_t`, which holds CPUs
/// `0..CPU_SETSIZE` (1024). It also bounds a list to 1024 cores, the mesh's shard limit.
pub const CORE_ID_MAX: usize = 1023;
/// Longest core list text accepted, in bytes; a longer one is refused before it is parsed.
pub const CORE_LIST_TEXT_LEN_MAX: usize = 4096;
/// Characters of a bad item quoted back in an error.
const ITEM_QUOTED_LEN_MAX: usize = 32;

/// Why a core list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreListError {
    /// The list names no core; name at least one, or leave the key out to use every core.
    #[error("the core list is empty")]
    Empty,
    /// The text is longer than [`CORE_LIST_TEXT_LEN_MAX`]; use ranges (`0-63`).
    #[error("the core list is {len} bytes long, the limit is {CORE_LIST_TEXT_LEN_MAX}")]
    TextTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// An item is not `N` or `N-M` in decimal digits (empty items, signs, spaces inside an
    /// item and other characters are refused).
    #[error("`{item}` is not a CPU id or range like `0-3`")]
    ItemInvalid {
        /// The item, cut to 32 characters.
        item: String,
    },
    /// A range runs backwards (`5-2`); write it low to high.
    #[error("the range {first}-{last} runs backwards")]
    RangeReversed {
        /// Its first id.
        first: usize,
        /// Its last id.
        last: usize,
    },
    /// A CPU id above [`CORE_ID_MAX`]; shards can only be pinned to CPUs 0..=1023.
    #[error("CPU {core} is above the highest pinnable CPU, {CORE_ID_MAX}")]
    CoreTooHigh {
        /// The id as written (saturated at `u64::MAX`).
        core: u64,
    },
}

/// Parses a core list like `0-3,6` into sorted, distinct CPU ids. Spaces around items are
/// ignored; overlapping items merge (`0-3,2` is `0,1,2,3`), as in the kernel's cpuset lists.
pub(crate) fn parse_cores(text: &str) -> Result<Vec<usize>, CoreListError> {
    if text.len() > CORE_LIST_TEXT_LEN_MAX {
        return Err(CoreListError::TextTooLong { len: text.len() });
    }
    if text.trim().is_empty() {
        return Err(CoreListError::Empty);
    }
    let mut set = CoreSet::default();
    for item in text.split(',') {
        let item = item.trim();
        let (first, last) = match item.split_once('-') {
            Some((first, last)) => (parse_id(first, item)?, parse_id(last, item)?),
            None => {
                let id = parse_id(item, item)?;
                (id, id)
            }
        };
        if first > last {
            return Err(CoreListError::RangeReversed { first, last });
        }
        set.insert_range(first, last);
    }
    Ok(set.ids())
}

/// Writes sorted, distinct ids in the notation [`parse_core_list`](super::parse_core_list)
/// reads, runs as ranges:
/// `[0, 1, 2, 3, 6]` becomes `0-3,6`.
pub fn render_core_list(ids: &[usize]) -> String {
    let mut out = String::new();
    let mut index = 0;
    while index < ids.len() {
        let first = ids[index];
        let mut last = first;
        while index + 1 < ids.len() && ids[index + 1] == last.wrapping_add(1) {
            index += 1;
            last = ids[index];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if first == last {
            out.push_str(&first.to_string());
        } else {
            out.push_str(&format!("{first}-{last}"));
        }
        index += 1;
    }
    out
}

fn parse_id(digits: &str, item: &str) -> Result<usize, CoreListError> {
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        let item: String = item.chars().take(ITEM_QUOTED_LEN_MAX).collect();
        return Err(CoreListError::ItemInvalid { item });
    }
    // Only digits: the parse fails only on overflow, which is "too high" as well.
    checked_id(digits.parse::<u64>().unwrap_or(u64::MAX))
}

fn checked_id(id: u64) -> Result<usize, CoreListError> {
    match usize::try_from(id) {
        Ok(core) if core <= CORE_ID_MAX => Ok(core),
        _ => Err(CoreListError::CoreTooHigh { core: id }),
    }
}

/// CPUs `0..=CORE_ID_MAX` as bits: inserting a range costs at most 1024 steps, so no list
/// can make the parser allocate or loop beyond that.
struct CoreSet([bool; CORE_ID_MAX + 1]);

impl Default for CoreSet {
    fn default() -> Self {
        Self([false; CORE_ID_MAX + 1])
    }
}

impl CoreSet {
    /// `first..=last`, both already checked to be at most [`CORE_ID_MAX`].
    fn insert_range(&mut self, first: usize, last: usize) {
        for slot in &mut self.0[first..=last] {
            *slot = true;
        }
    }

    fn ids(&self) -> Vec<usize> {
        (0..=CORE_ID_MAX).filter(|&id| self.0[id]).collect()
    }
}

/// A parsed core list as a setting: from `--cores 0-3,6`, or in TOML either the same string
/// or an array of ids (`cores = [0, 1, 2, 3, 6]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CoreList(pub(crate) Vec<usize>);

impl std::str::FromStr for CoreList {
    type Err = CoreListError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_cores(text).map(CoreList)
    }
}

impl Serialize for CoreList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&render_core_list(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for CoreList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CoreListVisitor)
    }
}

struct CoreListVisitor;

impl<'de> Visitor<'de> for CoreListVisitor {
    type Value = CoreList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a core list like \"0-3,6\" or an array of CPU ids")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<CoreList, E> {
        parse_cores(text).map(CoreList).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CoreList, A::Error> {
        let mut set = CoreSet::default();
        let mut any = false;
        // Every element is checked against CORE_ID_MAX as it arrives, so a huge array costs
        // time proportional to its (already parsed) length and no memory.
        while let Some(id) = seq.next_element::<u64>()? {
            let id = checked_id(id).map_err(de::Error::custom)?;
            set.insert_range(id, id);
            any = true;
        }
        if !any {
            return Err(de::Error::custom(CoreListError::Empty));
        }
        Ok(CoreList(set.ids()))
    }
}

#[cfg(test)]
mod tests;
