//! Client transactions: opaque payloads named by their blake3 hash.

use std::fmt;

use serde::{Deserialize, Serialize};
use weft_crypto::Digest;

/// A transaction's identity: the blake3 hash of its payload. Two transactions with the
/// same payload are the same transaction, which is what makes deduplication exact.
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

/// A client transaction: opaque bytes the ledger orders but does not interpret.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transaction {
    payload: Vec<u8>,
}

impl Transaction {
    /// Wraps a payload. Size limits are checked where transactions enter (the mempool,
    /// the vertex decoder), not here.
    pub fn new(payload: Vec<u8>) -> Transaction {
        Transaction { payload }
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The blake3 hash of the payload.
    pub fn id(&self) -> TxId {
        TxId(Digest::of(&self.payload))
    }
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Transaction({:?}, {} bytes)",
            self.id(),
            self.payload.len()
        )
    }
}
