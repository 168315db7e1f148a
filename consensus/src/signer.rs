//! How a replica signs. Production replicas sign with ML-DSA-87; the simulator may use
//! placeholder signatures in most seeds (so thousands of seeds run in minutes) and real
//! ones in some, which the simulated network then verifies.

use weft_crypto::{SecretKey, Signature, SigningContext};

/// The replica's signing capability.
#[derive(Debug)]
pub enum Signer {
    /// Real ML-DSA-87 signatures.
    MlDsa87(SecretKey),
    /// An all-zero placeholder, for simulations whose network does not verify.
    Placeholder,
}

impl Signer {
    /// Signs `message` under `context`.
    pub fn sign(&self, context: SigningContext, message: &[u8]) -> Signature {
        match self {
            Signer::MlDsa87(secret) => secret.sign(context, message),
            Signer::Placeholder => weft_dag::testing::placeholder_signature(),
        }
    }
}
