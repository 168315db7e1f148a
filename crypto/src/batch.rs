//! Verifying many signatures at once, in parallel, reporting exactly which failed.

use rayon::prelude::*;

use crate::{PublicKey, Signature, SigningContext};

/// One signature to check.
#[derive(Debug, Clone, Copy)]
pub struct VerifyItem<'a> {
    /// The claimed signer's key.
    pub public_key: &'a PublicKey,
    /// What the signature is for.
    pub context: SigningContext,
    /// The signed bytes.
    pub message: &'a [u8],
    /// The signature.
    pub signature: &'a Signature,
}

/// The outcome of [`verify_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchVerification {
    /// Indices (into the input) of the signatures that did not verify, ascending.
    pub failed: Vec<usize>,
}

impl BatchVerification {
    /// True when every signature verified.
    pub fn all_valid(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Verifies every item on rayon's thread pool. ML-DSA has no batch equation, so this is
/// n independent verifications spread over the cores; the result names each failure.
pub fn verify_batch(items: &[VerifyItem<'_>]) -> BatchVerification {
    let mut failed: Vec<usize> = items
        .par_iter()
        .enumerate()
        .filter(|(_, item)| {
            item.public_key
                .verify(item.context, item.message, item.signature)
                .is_err()
        })
        .map(|(index, _)| index)
        .collect();
    failed.sort_unstable();
    BatchVerification { failed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    #[test]
    fn names_exactly_the_failed_signatures() {
        let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
        let messages: Vec<Vec<u8>> = (0..16u8).map(|i| vec![i; 100]).collect();
        let mut signatures: Vec<Signature> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| keys[i % 4].sign(SigningContext::Vertex, m))
            .collect();
        // Break 3 and 11: one by signing other bytes, one by a wrong signer.
        signatures[3] = keys[3].sign(SigningContext::Vertex, b"something else");
        signatures[11] = keys[0].sign(SigningContext::Vertex, &messages[11]);
        let items: Vec<VerifyItem<'_>> = messages
            .iter()
            .zip(&signatures)
            .enumerate()
            .map(|(i, (message, signature))| VerifyItem {
                public_key: &keys[i % 4].public,
                context: SigningContext::Vertex,
                message,
                signature,
            })
            .collect();
        let result = verify_batch(&items);
        assert_eq!(result.failed, vec![3, 11]);
        assert!(!result.all_valid());
        assert!(verify_batch(&items[..3]).all_valid());
    }
}
