//! The one signed envelope every consensus message type uses (votes, checkpoints, view
//! changes, new views): a body with its canonical bytes, which begin with the chain id
//! and epoch, and an ML-DSA-87 signature under the body's own FIPS 204 context. A
//! signature can therefore never be replayed as another type, on another chain or in
//! another epoch, and the identity of a signed object is the blake3 hash of its bytes.
//!
//! Wire form: `u32 length, body bytes, signature [4,627]`. The length is bounded by the
//! body type's [`Body::MAX_BYTES`] before anything is allocated.

use weft_crypto::{Digest, SecretKey, Signature, SigningContext, SIGNATURE_BYTES};
use weft_dag::codec::{DecodeError, Reader, Writer};
use weft_dag::{ChainId, Committee, Epoch, ValidatorIndex};

use crate::messages::MessageError;

/// A signable body: canonical bytes, a signing context, a signer.
pub trait Body: Sized + Clone {
    /// The largest canonical encoding accepted on the wire.
    const MAX_BYTES: usize;
    /// Its FIPS 204 context (a vote's depends on its phase).
    fn context(&self) -> SigningContext;
    /// Canonical bytes.
    fn encode(&self) -> Vec<u8>;
    /// Parses canonical bytes.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
    /// Who signs it.
    fn signer(&self) -> ValidatorIndex;
    /// Its chain and epoch.
    fn chain(&self) -> (&ChainId, Epoch);
}

/// A body with its canonical bytes and signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed<T> {
    body: T,
    encoded: Vec<u8>,
    signature: Signature,
}

impl<T: Body> Signed<T> {
    /// Signs `body` with `signer`. ML-DSA signing is randomized: persist the result and
    /// re-send it, never sign the same body twice.
    pub fn sign_with(body: T, signer: &crate::Signer) -> Signed<T> {
        let encoded = body.encode();
        let signature = signer.sign(body.context(), &encoded);
        Signed {
            body,
            encoded,
            signature,
        }
    }

    /// Signs `body` with `secret` (see [`Signed::sign_with`]).
    pub fn sign(body: T, secret: &SecretKey) -> Signed<T> {
        let encoded = body.encode();
        let signature = secret.sign(body.context(), &encoded);
        Signed {
            body,
            encoded,
            signature,
        }
    }

    /// The body.
    pub fn body(&self) -> &T {
        &self.body
    }

    /// The signed bytes.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// blake3 of the signed bytes: the object's identity.
    pub fn hash(&self) -> Digest {
        Digest::of(&self.encoded)
    }

    /// Replaces the signature (the simulator's forger uses this).
    pub fn with_signature(mut self, signature: Signature) -> Signed<T> {
        self.signature = signature;
        self
    }

    /// Checks chain, epoch, signer and signature against `committee`.
    pub fn verify(&self, committee: &Committee) -> Result<(), MessageError> {
        let (chain, epoch) = self.body.chain();
        if chain != committee.chain_id() || epoch != committee.epoch() {
            return Err(MessageError::WrongChain);
        }
        let signer = self.body.signer();
        let key = committee
            .public_key(signer)
            .ok_or(MessageError::UnknownSigner(signer))?;
        key.verify(self.body.context(), &self.encoded, &self.signature)
            .map_err(|_| MessageError::BadSignature)
    }

    /// Appends the wire form: `u32 length, body bytes, signature`.
    pub fn write_wire(&self, writer: &mut Writer) {
        writer.u32(u32::try_from(self.encoded.len()).unwrap_or(u32::MAX));
        writer.raw(&self.encoded);
        writer.raw(self.signature.as_bytes());
    }

    /// The wire form on its own.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut writer = Writer::with_capacity(4 + self.encoded.len() + SIGNATURE_BYTES);
        self.write_wire(&mut writer);
        writer.finish()
    }

    /// Reads the wire form (the body at most [`Body::MAX_BYTES`]). The signature is not
    /// verified (see [`Signed::verify`]).
    pub fn read_wire(reader: &mut Reader<'_>) -> Result<Signed<T>, DecodeError> {
        let length = u64::from(reader.u32("body length")?);
        let length = reader.count("body bytes", length, T::MAX_BYTES, 1)?;
        let encoded = reader.take("body", length)?;
        let body = T::decode(encoded)?;
        let signature = read_signature(reader)?;
        Ok(Signed {
            body,
            encoded: encoded.to_vec(),
            signature,
        })
    }

    /// Reads exactly one wire form from `bytes`.
    pub fn from_wire(bytes: &[u8]) -> Result<Signed<T>, DecodeError> {
        let mut reader = Reader::new(bytes);
        let signed = Signed::read_wire(&mut reader)?;
        reader.finish()?;
        Ok(signed)
    }
}

pub(crate) fn read_signature(reader: &mut Reader<'_>) -> Result<Signature, DecodeError> {
    Signature::from_bytes(reader.take("signature", SIGNATURE_BYTES)?).map_err(|e| {
        DecodeError::Invalid {
            field: "signature",
            reason: e.to_string(),
        }
    })
}
