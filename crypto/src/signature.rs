//! ML-DSA-87 keys and signatures (FIPS 204), always bound to a [`SigningContext`].

use std::fmt;

use pqcrypto_mldsa::mldsa87;
use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};

use crate::digest::{from_hex, to_hex};
use crate::Digest;

/// Length of an encoded ML-DSA-87 public key.
pub const PUBLIC_KEY_BYTES: usize = mldsa87::public_key_bytes();
/// Length of an encoded ML-DSA-87 secret key.
pub const SECRET_KEY_BYTES: usize = mldsa87::secret_key_bytes();
/// Length of an ML-DSA-87 signature.
pub const SIGNATURE_BYTES: usize = mldsa87::signature_bytes();

/// What is being signed. Each kind of signed object has its own FIPS 204 context string,
/// so a signature made for one kind never verifies as another (domain separation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SigningContext {
    /// A DAG vertex (and, for the primary's anchor, the PBFT pre-prepare it carries).
    Vertex,
    /// A PBFT prepare vote.
    Prepare,
    /// A PBFT commit vote.
    Commit,
    /// A checkpoint vote.
    Checkpoint,
    /// A view-change message.
    ViewChange,
    /// A new-view message.
    NewView,
    /// The binding of a validator's libp2p identity to its ML-DSA key.
    PeerBinding,
}

impl SigningContext {
    /// Every context, for tests that must cover them all.
    pub const ALL: [SigningContext; 7] = [
        SigningContext::Vertex,
        SigningContext::Prepare,
        SigningContext::Commit,
        SigningContext::Checkpoint,
        SigningContext::ViewChange,
        SigningContext::NewView,
        SigningContext::PeerBinding,
    ];

    /// The FIPS 204 `ctx` string (at most 255 bytes by the standard).
    pub const fn as_bytes(self) -> &'static [u8] {
        match self {
            SigningContext::Vertex => b"weft/vertex/v1",
            SigningContext::Prepare => b"weft/prepare/v1",
            SigningContext::Commit => b"weft/commit/v1",
            SigningContext::Checkpoint => b"weft/checkpoint/v1",
            SigningContext::ViewChange => b"weft/view-change/v1",
            SigningContext::NewView => b"weft/new-view/v1",
            SigningContext::PeerBinding => b"weft/peer-binding/v1",
        }
    }
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature does not match the message, context and key. Permanent.
    #[error("ML-DSA-87 signature does not verify for this message, context and key")]
    Invalid,
}

/// Why key or signature bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Wrong length for the kind of object.
    #[error("{kind} must be {expected} bytes, got {actual}")]
    Length {
        /// What was being read.
        kind: &'static str,
        /// The required length.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// Not valid hex.
    #[error("{kind} is not valid hex")]
    Hex {
        /// What was being read.
        kind: &'static str,
    },
}

fn exact_length(kind: &'static str, bytes: &[u8], expected: usize) -> Result<(), KeyError> {
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(KeyError::Length {
            kind,
            expected,
            actual: bytes.len(),
        })
    }
}

/// An ML-DSA-87 public key.
#[derive(Clone, Copy)]
pub struct PublicKey(mldsa87::PublicKey);

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for PublicKey {}

impl std::hash::Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PublicKey {
    /// Reads a public key from its FIPS 204 encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        exact_length("an ML-DSA-87 public key", bytes, PUBLIC_KEY_BYTES)?;
        mldsa87::PublicKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| KeyError::Length {
                kind: "an ML-DSA-87 public key",
                expected: PUBLIC_KEY_BYTES,
                actual: bytes.len(),
            })
    }

    /// Reads a public key from hex.
    pub fn from_hex(text: &str) -> Result<PublicKey, KeyError> {
        let bytes = from_hex(text.trim()).ok_or(KeyError::Hex {
            kind: "an ML-DSA-87 public key",
        })?;
        PublicKey::from_bytes(&bytes)
    }

    /// The FIPS 204 encoding.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Lower-case hex of the encoding.
    pub fn to_hex(&self) -> String {
        to_hex(self.as_bytes())
    }

    /// A short, stable name for this key: the blake3 of its encoding.
    pub fn fingerprint(&self) -> Digest {
        Digest::of(self.as_bytes())
    }

    /// Checks `signature` over `message` under `context`.
    pub fn verify(
        &self,
        context: SigningContext,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        mldsa87::verify_detached_signature_ctx(&signature.0, message, context.as_bytes(), &self.0)
            .map_err(|_| SignatureError::Invalid)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({:?})", self.fingerprint())
    }
}

/// An ML-DSA-87 secret key. Never printed; overwritten with zeros when dropped.
pub struct SecretKey(Box<mldsa87::SecretKey>);

impl SecretKey {
    /// Reads a secret key from its FIPS 204 encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<SecretKey, KeyError> {
        exact_length("an ML-DSA-87 secret key", bytes, SECRET_KEY_BYTES)?;
        mldsa87::SecretKey::from_bytes(bytes)
            .map(|key| SecretKey(Box::new(key)))
            .map_err(|_| KeyError::Length {
                kind: "an ML-DSA-87 secret key",
                expected: SECRET_KEY_BYTES,
                actual: bytes.len(),
            })
    }

    /// The FIPS 204 encoding. Handle with care.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Signs `message` under `context`. ML-DSA signing is randomized (hedged): signing the
    /// same message twice gives two different valid signatures, so callers that must not
    /// sign twice keep and re-send the first signature.
    pub fn sign(&self, context: SigningContext, message: &[u8]) -> Signature {
        Signature(Box::new(mldsa87::detached_sign_ctx(
            message,
            context.as_bytes(),
            &self.0,
        )))
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        if let Ok(zeros) = mldsa87::SecretKey::from_bytes(&[0; SECRET_KEY_BYTES]) {
            *self.0 = zeros;
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A validator's signing key pair.
#[derive(Debug)]
pub struct Keypair {
    /// The public half.
    pub public: PublicKey,
    /// The secret half.
    pub secret: SecretKey,
}

impl Keypair {
    /// A fresh key pair from the operating system's randomness.
    pub fn generate() -> Keypair {
        let (public, secret) = mldsa87::keypair();
        Keypair {
            public: PublicKey(public),
            secret: SecretKey(Box::new(secret)),
        }
    }

    /// Signs `message` under `context` with the secret key.
    pub fn sign(&self, context: SigningContext, message: &[u8]) -> Signature {
        self.secret.sign(context, message)
    }
}

/// An ML-DSA-87 signature (4,627 bytes), kept on the heap so the messages that carry
/// it stay small to move.
#[derive(Clone)]
pub struct Signature(Box<mldsa87::DetachedSignature>);

impl Signature {
    /// Reads a signature; it must be exactly [`SIGNATURE_BYTES`] long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Signature, KeyError> {
        exact_length("an ML-DSA-87 signature", bytes, SIGNATURE_BYTES)?;
        mldsa87::DetachedSignature::from_bytes(bytes)
            .map(|signature| Signature(Box::new(signature)))
            .map_err(|_| KeyError::Length {
                kind: "an ML-DSA-87 signature",
                expected: SIGNATURE_BYTES,
                actual: bytes.len(),
            })
    }

    /// The signature bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl PartialEq for Signature {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Signature {}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({:?})", Digest::of(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_those_of_ml_dsa_87() {
        // FIPS 204, Table 2: ML-DSA-87.
        assert_eq!(PUBLIC_KEY_BYTES, 2592);
        assert_eq!(SECRET_KEY_BYTES, 4896);
        assert_eq!(SIGNATURE_BYTES, 4627);
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let keys = Keypair::generate();
        let signature = keys.sign(SigningContext::Vertex, b"vertex bytes");
        assert_eq!(
            keys.public
                .verify(SigningContext::Vertex, b"vertex bytes", &signature),
            Ok(())
        );
    }

    #[test]
    fn a_wrong_context_message_key_or_bit_fails() {
        let keys = Keypair::generate();
        let other = Keypair::generate();
        let message = b"prepare v=1 s=7";
        let signature = keys.sign(SigningContext::Prepare, message);

        for context in SigningContext::ALL {
            let expected = if context == SigningContext::Prepare {
                Ok(())
            } else {
                Err(SignatureError::Invalid)
            };
            assert_eq!(keys.public.verify(context, message, &signature), expected);
        }
        assert_eq!(
            keys.public
                .verify(SigningContext::Prepare, b"prepare v=1 s=8", &signature),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            other
                .public
                .verify(SigningContext::Prepare, message, &signature),
            Err(SignatureError::Invalid)
        );
        for bit in [0, 8 * 100 + 3, 8 * SIGNATURE_BYTES - 1] {
            let mut bytes = signature.as_bytes().to_vec();
            bytes[bit / 8] ^= 1 << (bit % 8);
            let flipped = Signature::from_bytes(&bytes).expect("length unchanged");
            assert_eq!(
                keys.public
                    .verify(SigningContext::Prepare, message, &flipped),
                Err(SignatureError::Invalid),
                "flipped bit {bit}"
            );
        }
    }

    #[test]
    fn contexts_are_distinct_and_within_the_fips_204_limit() {
        let mut seen = std::collections::HashSet::new();
        for context in SigningContext::ALL {
            assert!(context.as_bytes().len() <= 255);
            assert!(seen.insert(context.as_bytes()), "{context:?} repeats");
        }
    }

    #[test]
    fn wrong_lengths_are_refused() {
        assert!(matches!(
            Signature::from_bytes(&[0; SIGNATURE_BYTES - 1]),
            Err(KeyError::Length { .. })
        ));
        assert!(matches!(
            PublicKey::from_bytes(&[0; 10]),
            Err(KeyError::Length { .. })
        ));
        assert!(matches!(
            SecretKey::from_bytes(&[]),
            Err(KeyError::Length { .. })
        ));
    }

    #[test]
    fn keys_round_trip_through_bytes_and_hex() {
        let keys = Keypair::generate();
        let public = PublicKey::from_hex(&keys.public.to_hex()).expect("valid hex");
        assert_eq!(public, keys.public);
        let secret = SecretKey::from_bytes(keys.secret.as_bytes()).expect("valid length");
        let signature = secret.sign(SigningContext::Commit, b"m");
        assert_eq!(
            public.verify(SigningContext::Commit, b"m", &signature),
            Ok(())
        );
        assert!(!format!("{:?}", keys.secret).contains(&to_hex(&keys.secret.as_bytes()[..8])));
    }
}
