//! Newtypes for the numbers that cross module boundaries, so a round is never passed
//! where a view is expected.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! number {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub struct $name(pub $inner);

        impl $name {
            /// The raw number.
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

number!(
    /// A DAG round. Round 0 holds the genesis vertices, which have no parents.
    Round(u64)
);
number!(
    /// A PBFT view; its primary is a deterministic function of it.
    View(u64)
);
number!(
    /// A position in the finalized log. Sequence 1 is the first entry.
    Sequence(u64)
);
number!(
    /// A validator set's epoch.
    Epoch(u64)
);
number!(
    /// A validator's position in the validator set, from 0 to n-1.
    ValidatorIndex(u16)
);
number!(
    /// Milliseconds since the Unix epoch, as claimed by a vertex's author.
    TimestampMs(u64)
);

impl Round {
    /// The round before this one (round 0 has none).
    pub fn previous(self) -> Option<Round> {
        self.0.checked_sub(1).map(Round)
    }

    /// The next round.
    pub fn next(self) -> Round {
        Round(self.0 + 1)
    }
}

impl Sequence {
    /// The next sequence (saturating: `u64::MAX` is its own successor, so arithmetic on
    /// peer-supplied sequences never wraps; bounds are checked before it matters).
    pub fn next(self) -> Sequence {
        Sequence(self.0.saturating_add(1))
    }

    /// `self + n`, or `None` on overflow.
    pub fn checked_add(self, n: u64) -> Option<Sequence> {
        self.0.checked_add(n).map(Sequence)
    }
}

impl View {
    /// The next view (saturating, like [`Sequence::next`]).
    pub fn next(self) -> View {
        View(self.0.saturating_add(1))
    }
}

impl ValidatorIndex {
    /// The index as a `usize`, for indexing per-validator tables.
    pub fn as_usize(self) -> usize {
        usize::from(self.0)
    }
}

/// The longest chain id, in bytes.
pub const MAX_CHAIN_ID_BYTES: usize = 64;

/// The name of a chain: 1 to 64 bytes of `a-z 0-9 - _ .`, inside every signed object so a
/// signature on one chain is worthless on another.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChainId(String);

/// A chain id that breaks the naming rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "chain id must be 1 to {MAX_CHAIN_ID_BYTES} characters of a-z, 0-9, '-', '_' or '.'; got {0:?}"
)]
pub struct ChainIdError(pub String);

impl ChainId {
    /// Checks the naming rule.
    pub fn new(name: &str) -> Result<ChainId, ChainIdError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_CHAIN_ID_BYTES
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if valid {
            Ok(ChainId(name.to_owned()))
        } else {
            Err(ChainIdError(name.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_naming_rule() {
        assert!(ChainId::new("weft-devnet.1_a").is_ok());
        for bad in ["", "Weft", "a b", "é", &"x".repeat(65)] {
            assert!(ChainId::new(bad).is_err(), "{bad:?}");
        }
        assert!(ChainId::new(&"x".repeat(64)).is_ok());
    }
}
