//! The validator set of one epoch: who may sign, and how many make a quorum.

use weft_crypto::PublicKey;

use crate::{ChainId, Epoch, ValidatorIndex};

/// The fixed validator set of one chain and epoch: n validators, of which up to
/// f = (n - 1) / 3 may be Byzantine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committee {
    chain_id: ChainId,
    epoch: Epoch,
    public_keys: Vec<PublicKey>,
}

/// A validator set that cannot tolerate faults or cannot be indexed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitteeError {
    /// Fewer than 4 validators tolerate no Byzantine fault.
    #[error("a validator set needs at least 4 validators to tolerate one fault, got {0}")]
    TooSmall(usize),
    /// More validators than a `ValidatorIndex` can name.
    #[error("a validator set has at most {max} validators, got {actual}", max = u16::MAX)]
    TooLarge {
        /// Validators given.
        actual: usize,
    },
    /// The same key appears twice.
    #[error("validators {first} and {second} have the same public key")]
    DuplicateKey {
        /// First index with the key.
        first: usize,
        /// Second index with the key.
        second: usize,
    },
}

impl Committee {
    /// Builds a validator set, refusing sizes that tolerate no fault and repeated keys.
    pub fn new(
        chain_id: ChainId,
        epoch: Epoch,
        public_keys: Vec<PublicKey>,
    ) -> Result<Committee, CommitteeError> {
        if public_keys.len() < 4 {
            return Err(CommitteeError::TooSmall(public_keys.len()));
        }
        if public_keys.len() > usize::from(u16::MAX) {
            return Err(CommitteeError::TooLarge {
                actual: public_keys.len(),
            });
        }
        for (second, key) in public_keys.iter().enumerate() {
            if let Some(first) = public_keys[..second].iter().position(|k| k == key) {
                return Err(CommitteeError::DuplicateKey { first, second });
            }
        }
        Ok(Committee {
            chain_id,
            epoch,
            public_keys,
        })
    }

    /// The chain this set validates.
    pub fn chain_id(&self) -> &ChainId {
        &self.chain_id
    }

    /// The epoch of this set.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// n, the number of validators.
    pub fn size(&self) -> usize {
        self.public_keys.len()
    }

    /// f, the most Byzantine validators tolerated: (n - 1) / 3.
    pub fn max_faulty(&self) -> usize {
        (self.size() - 1) / 3
    }

    /// The quorum, 2f + 1 when n = 3f + 1; in general n - f, so any two quorums share an
    /// honest validator.
    pub fn quorum(&self) -> usize {
        self.size() - self.max_faulty()
    }

    /// f + 1: enough that at least one is honest.
    pub fn validity(&self) -> usize {
        self.max_faulty() + 1
    }

    /// The key of validator `index`, if it is in the set.
    pub fn public_key(&self, index: ValidatorIndex) -> Option<&PublicKey> {
        self.public_keys.get(index.as_usize())
    }

    /// Every validator index, in order.
    pub fn indices(&self) -> impl Iterator<Item = ValidatorIndex> + '_ {
        (0..self.public_keys.len()).filter_map(|i| u16::try_from(i).ok().map(ValidatorIndex))
    }

    /// True when `index` names a validator of this set.
    pub fn contains(&self, index: ValidatorIndex) -> bool {
        index.as_usize() < self.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_crypto::Keypair;

    fn keys(n: usize) -> Vec<PublicKey> {
        (0..n).map(|_| Keypair::generate().public).collect()
    }

    #[test]
    fn quorum_sizes() {
        let chain = ChainId::new("t").expect("valid");
        for (n, f, q) in [(4, 1, 3), (5, 1, 4), (7, 2, 5), (10, 3, 7)] {
            let committee = Committee::new(chain.clone(), Epoch(0), keys(n)).expect("valid");
            assert_eq!(
                (committee.max_faulty(), committee.quorum()),
                (f, q),
                "n={n}"
            );
            // Two quorums intersect in at least f + 1 validators, so in an honest one.
            assert!(2 * q - n > f);
        }
    }

    #[test]
    fn refuses_small_sets_and_duplicate_keys() {
        let chain = ChainId::new("t").expect("valid");
        assert_eq!(
            Committee::new(chain.clone(), Epoch(0), keys(3)),
            Err(CommitteeError::TooSmall(3))
        );
        let mut repeated = keys(4);
        repeated[3] = repeated[1];
        assert_eq!(
            Committee::new(chain, Epoch(0), repeated),
            Err(CommitteeError::DuplicateKey {
                first: 1,
                second: 3
            })
        );
    }
}
