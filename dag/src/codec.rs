//! The canonical binary encoding of signed objects: fixed-width little-endian integers,
//! explicit length prefixes, no optional padding and no trailing bytes, so every valid byte
//! string has exactly one decoding and `encode(decode(b)) == b`.
//!
//! Decoding untrusted bytes never allocates more than the input's own length: every count
//! is checked against an explicit limit and against the bytes that remain before any
//! buffer is reserved.

/// Why bytes could not be decoded. All decode errors are permanent for those bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("input ended while reading {field}: needed {needed} more bytes, {remaining} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// Bytes remained after a complete object.
    #[error("{0} bytes remain after a complete object")]
    TrailingBytes(usize),
    /// A count or length is above its limit.
    #[error("{field} is {actual}, above the limit of {limit}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// The value read.
        actual: u64,
        /// The limit.
        limit: u64,
    },
    /// A field holds a value outside its domain.
    #[error("{field} is invalid: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Appends fields to a byte buffer.
#[derive(Debug, Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Writer {
        Writer {
            bytes: Vec::with_capacity(capacity),
        }
    }

    /// Appends one byte.
    pub fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }

    /// Appends a little-endian u16.
    pub fn u16(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// Appends a little-endian u32.
    pub fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// Appends a little-endian u64.
    pub fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// Appends raw bytes with no length prefix (fixed-size fields).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads fields from untrusted bytes, front to back.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// Takes the next `count` bytes.
    pub fn take(&mut self, field: &'static str, count: usize) -> Result<&'a [u8], DecodeError> {
        if count > self.bytes.len() {
            return Err(DecodeError::Truncated {
                field,
                needed: count,
                remaining: self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Ok(head)
    }

    /// Takes exactly `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(field, N)?);
        Ok(array)
    }

    /// Reads one byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// Reads a little-endian u16.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian u32.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian u64.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// Reads a count and checks it against `limit` and against the bytes left, given that
    /// each element needs at least `min_element_bytes`; returns it as a `usize` that is
    /// safe to reserve.
    pub fn count(
        &mut self,
        field: &'static str,
        raw: u64,
        limit: usize,
        min_element_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
        if raw > limit_u64 {
            return Err(DecodeError::TooLarge {
                field,
                actual: raw,
                limit: limit_u64,
            });
        }
        let count = usize::try_from(raw).map_err(|_| DecodeError::TooLarge {
            field,
            actual: raw,
            limit: limit_u64,
        })?;
        let needed = count.saturating_mul(min_element_bytes);
        if needed > self.remaining() {
            return Err(DecodeError::Truncated {
                field,
                needed,
                remaining: self.remaining(),
            });
        }
        Ok(count)
    }

    /// Fails unless every byte has been read.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.bytes.len()))
        }
    }
}

/// Writes the header every signed object begins with: the chain id (u8 length, bytes)
/// and the epoch (u64), so a signature is bound to one chain and epoch.
pub fn write_chain_header(writer: &mut Writer, chain_id: &crate::ChainId, epoch: crate::Epoch) {
    let chain = chain_id.as_str().as_bytes();
    // ChainId guarantees at most 64 bytes.
    writer.u8(u8::try_from(chain.len()).unwrap_or(u8::MAX));
    writer.raw(chain);
    writer.u64(epoch.0);
}

/// Reads the header written by [`write_chain_header`].
pub fn read_chain_header(
    reader: &mut Reader<'_>,
) -> Result<(crate::ChainId, crate::Epoch), DecodeError> {
    let length = usize::from(reader.u8("chain id length")?);
    let bytes = reader.take("chain id", length)?;
    let chain_id = std::str::from_utf8(bytes)
        .ok()
        .and_then(|name| crate::ChainId::new(name).ok())
        .ok_or_else(|| DecodeError::Invalid {
            field: "chain id",
            reason: "not 1 to 64 characters of a-z 0-9 - _ .".into(),
        })?;
    Ok((chain_id, crate::Epoch(reader.u64("epoch")?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_little_endian() {
        let mut writer = Writer::default();
        writer.u8(1);
        writer.u16(0x0203);
        writer.u32(0x0405_0607);
        writer.u64(u64::MAX);
        let bytes = writer.finish();
        assert_eq!(&bytes[..3], &[1, 3, 2]);
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.u8("a"), Ok(1));
        assert_eq!(reader.u16("b"), Ok(0x0203));
        assert_eq!(reader.u32("c"), Ok(0x0405_0607));
        assert_eq!(reader.u64("d"), Ok(u64::MAX));
        assert_eq!(reader.finish(), Ok(()));
    }

    #[test]
    fn counts_are_bounded_by_limit_and_remaining_bytes() {
        let mut reader = Reader::new(&[0; 10]);
        assert!(matches!(
            reader.count("parents", 11, 10, 1),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            reader.count("parents", 3, 10, 4),
            Err(DecodeError::Truncated { .. })
        ));
        assert_eq!(reader.count("parents", 2, 10, 4), Ok(2));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let reader = Reader::new(&[1]);
        assert_eq!(reader.finish(), Err(DecodeError::TrailingBytes(1)));
    }
}
