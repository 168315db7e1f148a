//! blake3 digests: the identity of every signed object in Weft.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Length of a [`Digest`] in bytes.
pub const DIGEST_BYTES: usize = 32;

/// A blake3 hash, 32 bytes. Ordered bytewise, so it can break ties deterministically.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Digest([u8; DIGEST_BYTES]);

impl Digest {
    /// The all-zero digest, used as the chain's starting point.
    pub const ZERO: Digest = Digest([0; DIGEST_BYTES]);

    /// The blake3 hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// The blake3 hash of several byte strings fed in order (no separators: callers
    /// must make the concatenation unambiguous, e.g. with fixed-width fields).
    pub fn of_parts(parts: &[&[u8]]) -> Digest {
        let mut hasher = blake3::Hasher::new();
        for part in parts {
            hasher.update(part);
        }
        Digest(*hasher.finalize().as_bytes())
    }

    /// Wraps raw bytes that are already a digest.
    pub const fn from_bytes(bytes: [u8; DIGEST_BYTES]) -> Digest {
        Digest(bytes)
    }

    /// Reads a digest from a slice that must be exactly [`DIGEST_BYTES`] long.
    pub fn from_slice(bytes: &[u8]) -> Result<Digest, DigestParseError> {
        let array: [u8; DIGEST_BYTES] = bytes
            .try_into()
            .map_err(|_| DigestParseError::Length(bytes.len()))?;
        Ok(Digest(array))
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; DIGEST_BYTES] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }
}

/// Why a digest could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestParseError {
    /// The input was not 32 bytes.
    #[error("a digest is {DIGEST_BYTES} bytes, got {0}")]
    Length(usize),
    /// The input was not 64 hex characters.
    #[error("a digest in hex is 64 characters of 0-9a-f")]
    Hex,
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = from_hex(text).ok_or(DigestParseError::Hex)?;
        Digest::from_slice(&bytes)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    /// The first 8 bytes are plenty to tell digests apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", &self.to_hex()[..16])
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_blake3_of_the_bytes() {
        let digest = Digest::of(b"abc");
        assert_eq!(
            digest.to_hex(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }

    #[test]
    fn parts_hash_like_their_concatenation() {
        assert_eq!(Digest::of_parts(&[b"ab", b"c"]), Digest::of(b"abc"));
    }

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        let digest = Digest::of(b"weft");
        assert_eq!(digest.to_hex().parse::<Digest>(), Ok(digest));
        assert_eq!("zz".parse::<Digest>(), Err(DigestParseError::Hex));
        assert_eq!("abcd".parse::<Digest>(), Err(DigestParseError::Length(2)));
    }
}
