//! How a replica signs. Production replicas sign with ML-DSA-87; the simulator may use
//! placeholder signatures in most seeds (so thousands of seeds run in minutes) and real
//! ones in some, which the simulated network then verifies.

use std::sync::Arc;

use weft_crypto::{SecretKey, Signature, SigningContext};

/// The replica's signing capability. Cloning shares the key (a restarted replica in the
/// simulator signs with the same one).
#[derive(Debug, Clone)]
pub enum Signer {
    /// Real ML-DSA-87 signatures.
    MlDsa87(Arc<SecretKey>),
    /// An all-zero placeholder, for simulations whose network does not verify.
    Placeholder,
}

impl Signer {
    /// Signs with `secret`.
    pub fn ml_dsa_87(secret: SecretKey) -> Signer {
        Signer::MlDsa87(Arc::new(secret))
    }

    /// Signs `message` under `context`.
    pub fn sign(&self, context: SigningContext, message: &[u8]) -> Signature {
        match self {
            Signer::MlDsa87(secret) => secret.sign(context, message),
            Signer::Placeholder => weft_dag::testing::placeholder_signature(),
        }
    }
}
