//! ML-DSA-87 signatures with FIPS 204 contexts, blake3 digests and validator key files for Weft.
//!
//! Every signature Weft makes is ML-DSA-87 (FIPS 204) over canonical bytes, made with a
//! FIPS 204 context string that names the kind of object signed ([`SigningContext`]), so a
//! signature on a vertex can never be replayed as a vote, and a vote for prepare never as
//! a commit. Identities are blake3 [`Digest`]s of signed bytes.
//!
//! The crate is synchronous and free of I/O, with one deliberate exception: the
//! [`key_file`] module reads and writes a validator's secret key file, because the
//! permission checks on that file belong next to the format they protect.

mod batch;
mod digest;
pub mod key_file;
mod signature;

pub use batch::{verify_batch, BatchVerification, VerifyItem};
pub use digest::{Digest, DigestParseError, DIGEST_BYTES};
pub use signature::{
    KeyError, Keypair, PublicKey, SecretKey, Signature, SignatureError, SigningContext,
    PUBLIC_KEY_BYTES, SECRET_KEY_BYTES, SIGNATURE_BYTES,
};
