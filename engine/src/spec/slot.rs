//! Slots: the members of a group's allocation.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One member of a group's allocation: an index for sized groups, an id for `ids` groups.
///
/// Slots order numerically for indexes and by text for ids, so plans sort stably.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Slot {
    /// Slot `i` of a sized group.
    Index(u32),
    /// A fixed identity of an `ids` group.
    Id(String),
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Index(i) => write!(f, "{i}"),
            Slot::Id(id) => f.write_str(id),
        }
    }
}
