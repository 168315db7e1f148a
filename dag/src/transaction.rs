//! Client transactions: opaque payloads with an expiry, named by a hash of both.

use std::fmt;

use serde::{Deserialize, Serialize};
use weft_crypto::Digest;

use crate::TimestampMs;

/// The longest a transaction may live: its expiry is at most this far above the
/// consensus time at which it is finalized (and above the admitting validator's clock).
/// It bounds the dedup set: an id is remembered only until its expiry, and a
/// transaction is finalized only before its expiry, so at most MAX_TTL_MS of
/// transactions are ever remembered.
pub const MAX_TTL_MS: u64 = 300_000;

/// A transaction's identity: blake3 of `"weft/tx/v1" || expires_at u64 LE || payload`.
/// Two transactions with the same payload and expiry are the same transaction, which is
/// what makes deduplication exact; the same payload with another expiry is another
/// transaction.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxId(pub Digest);

impl fmt::Debug for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxId({})", &self.0.to_hex()[..16])
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A client transaction: opaque bytes the ledger orders but does not interpret, and the
/// consensus time (milliseconds since the Unix epoch) after which it can no longer be
/// finalized.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transaction {
    expires_at: TimestampMs,
    payload: Vec<u8>,
}

impl Transaction {
    /// A payload that expires at `expires_at`. Size and expiry limits are checked where
    /// transactions enter (the API, the mempool, the vertex decoder), not here.
    pub fn new(payload: Vec<u8>, expires_at: TimestampMs) -> Transaction {
        Transaction {
            expires_at,
            payload,
        }
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The consensus time after which it is never finalized.
    pub fn expires_at(&self) -> TimestampMs {
        self.expires_at
    }

    /// Its id: blake3 over the expiry and the payload.
    pub fn id(&self) -> TxId {
        transaction_id(self.expires_at, &self.payload)
    }
}

/// The id of a transaction with this expiry and payload (what clients compute).
pub fn transaction_id(expires_at: TimestampMs, payload: &[u8]) -> TxId {
    let mut bytes = Vec::with_capacity(18 + payload.len());
    bytes.extend_from_slice(b"weft/tx/v1");
    bytes.extend_from_slice(&expires_at.0.to_le_bytes());
    bytes.extend_from_slice(payload);
    TxId(Digest::of(&bytes))
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Transaction({:?}, expires {} ms, {} bytes)",
            self.id(),
            self.expires_at.0,
            self.payload.len()
        )
    }
}
