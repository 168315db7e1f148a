//! A replicated key-value store on Weft, built only on the public gRPC API (through
//! `weft-client`): an example of an application whose replicas trust no validator.
//!
//! - **Writes** are transactions: an [`Op`] (`set` or `delete`) encoded as a payload
//!   starting with [`PREFIX`], submitted with submit-and-wait.
//! - **Followers** rebuild the state by following `SubscribeFinalized` from any validator
//!   ([`Follower`]). They apply an operation only once a finality proof verified against
//!   the genesis file covers it: for the first entry with transactions after the last
//!   verified one, the follower fetches the proof of its first transaction; the proof
//!   carries every entry up to the next stable checkpoint (each entry's transactions with
//!   their vertex and position, in final order), chained from the digest the follower
//!   already holds to a digest 2f + 1 validators signed. Each payload is fetched with
//!   `GetVertex` and checked against its transaction id (blake3 over expiry and payload),
//!   so a validator can neither invent, alter, reorder nor hide an operation. Entries
//!   without transactions are linked by recomputing their digest; the next proof must
//!   start from that digest, so a validator that left transactions out of one is caught.
//! - **Reads** come from the follower's state ([`State`]), served over HTTP by the
//!   `weft-kv serve` command: `GET /kv/{key}` and `GET /state`.
//!
//! Two followers that verified through the same sequence hold the same state: the state
//! is a function of the verified, totally ordered operations.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_client::{
    chain_entry_without_transactions, verify_proof_range, Client, ClientError, Committee, Digest,
    FinalizedEntry, ProofError, Subscription, TxId,
};

/// What every payload of this application starts with; other payloads on the same
/// ledger are skipped.
pub const PREFIX: &[u8] = b"weft-kv/v1 ";

/// NOT_FOUND answers (about 200 ms apart, rotating over the endpoints) after which a
/// proof or a payload is given up: the subscription named a transaction no validator
/// asked holds.
pub const NOT_FOUND_RETRIES: u32 = 150;

/// Largest key or value accepted, in bytes (a payload must also fit the validators'
/// `max_transaction_bytes`).
pub const MAX_FIELD_BYTES: usize = 16 * 1024;

/// An operation on the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// `key` = `value`.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
}

impl Op {
    /// The transaction payload: [`PREFIX`] then the operation as JSON.
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = PREFIX.to_vec();
        // An enum of strings always serializes.
        payload.extend_from_slice(&serde_json::to_vec(self).unwrap_or_default());
        payload
    }

    /// The operation in `payload`, or `None` when it is not one of ours (another
    /// application's transaction, or a malformed one: skipped by every follower alike).
    pub fn decode(payload: &[u8]) -> Option<Op> {
        let body = payload.strip_prefix(PREFIX)?;
        let op: Op = serde_json::from_slice(body).ok()?;
        let fits = |s: &str| s.len() <= MAX_FIELD_BYTES;
        match &op {
            Op::Set { key, value } if fits(key) && fits(value) => Some(op),
            Op::Delete { key } if fits(key) => Some(op),
            _ => None,
        }
    }
}

/// A follower's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct State {
    /// The keys and values.
    pub entries: BTreeMap<String, String>,
    /// The last sequence a proof's certificate covers: every operation up to it is
    /// applied, and nothing after it. (Entries without transactions after it are linked
    /// by their digest but not published: a validator could claim an entry empty and
    /// only the next proof would tell.)
    pub verified_through: u64,
    /// Operations applied so far.
    pub applied: u64,
}

impl State {
    /// Applies one verified operation.
    pub fn apply(&mut self, op: Op) {
        match op {
            Op::Set { key, value } => {
                self.entries.insert(key, value);
            }
            Op::Delete { key } => {
                self.entries.remove(&key);
            }
        }
        self.applied += 1;
    }

    /// blake3 (hex) over the keys and values, length-prefixed: equal states, equal
    /// digests.
    pub fn digest(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"weft-kv/state/v1");
        for (key, value) in &self.entries {
            hasher.update(&(key.len() as u64).to_le_bytes());
            hasher.update(key.as_bytes());
            hasher.update(&(value.len() as u64).to_le_bytes());
            hasher.update(value.as_bytes());
        }
        hex::encode(hasher.finalize().as_bytes())
    }
}

/// Why a follower stopped.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// A validator call failed (after fail-over).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A proof did not verify against the genesis validator set.
    #[error("a proof does not verify: {0}")]
    Proof(#[from] ProofError),
    /// The subscription skipped sequences.
    #[error("the subscription jumped from sequence {after} to {got}")]
    Gap {
        /// The last sequence held.
        after: u64,
        /// The one received.
        got: u64,
    },
    /// An entry without transactions whose digest does not chain: its validator lied.
    #[error("entry {0} does not chain from the previous digest")]
    Unchained(u64),
    /// A proof that does not continue the verified chain where the subscription is.
    #[error("the proof for entry {sequence} does not continue the verified chain")]
    NotLinked {
        /// The entry.
        sequence: u64,
    },
    /// A payload that is not the one its transaction id names, from every validator
    /// asked.
    #[error("transaction {0}: no validator served the payload finalized")]
    WrongPayload(TxId),
    /// A transaction the subscription named that no validator asked could prove.
    #[error("transaction {0}: no validator proves it (the subscription named it)")]
    NotProven(TxId),
    /// An answer that does not follow the API.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// Follows the ledger and applies verified operations to a shared [`State`].
#[derive(Debug)]
pub struct Follower {
    reader: Client,
    committee: Committee,
    state: Arc<RwLock<State>>,
    /// The digest after `linked`.
    previous: Digest,
    linked: u64,
    proof_timeout: Option<Duration>,
    /// The vertex last fetched (consecutive transactions usually share one).
    vertex: Option<(Vec<u8>, weft_client::VertexAnswer)>,
}

impl Follower {
    /// A follower from genesis that reads proofs and vertices through `reader` and
    /// verifies them against `committee` (the genesis validator set).
    pub fn new(reader: Client, committee: Committee, state: Arc<RwLock<State>>) -> Follower {
        Follower {
            reader,
            committee,
            state,
            previous: Digest::ZERO,
            linked: 0,
            proof_timeout: None,
            vertex: None,
        }
    }

    /// How long to wait for a proof of an entry (a stable checkpoint must cover it
    /// first) before the follower stops with the error; by default it waits as long as
    /// it takes.
    pub fn proof_timeout(mut self, timeout: Duration) -> Follower {
        self.proof_timeout = Some(timeout);
        self
    }

    /// Follows `subscription` (from sequence 1, with transaction ids) until an error.
    pub async fn run(mut self, mut subscription: Subscription) -> Result<(), KvError> {
        loop {
            let entry = subscription.next().await?;
            self.take(entry).await?;
        }
    }

    /// Takes the next subscribed entry.
    pub async fn take(&mut self, entry: FinalizedEntry) -> Result<(), KvError> {
        let sequence = entry.sequence;
        if sequence <= self.linked {
            // Already covered by a proof.
            return Ok(());
        }
        if Some(sequence) != self.linked.checked_add(1) {
            return Err(KvError::Gap {
                after: self.linked,
                got: sequence,
            });
        }
        if entry.transaction_ids.is_empty() {
            let digest = chain_entry_without_transactions(&self.previous, &entry)
                .ok_or_else(|| KvError::Malformed(format!("entry {sequence}")))?;
            if digest.as_bytes().as_slice() != entry.state_digest.as_slice() {
                return Err(KvError::Unchained(sequence));
            }
            self.previous = digest;
            self.linked = sequence;
            return Ok(());
        }
        let first = TxId::from_slice(&entry.transaction_ids[0])?;
        let answer = self.proof(first).await?;
        let range = verify_proof_range(&answer.proof, &self.committee)?;
        let starts_here = range.entries.first().map(|e| e.sequence.0) == Some(sequence);
        if range.previous != self.previous
            || !starts_here
            || *range.proven.tx_id.0.as_bytes() != first.0
        {
            return Err(KvError::NotLinked { sequence });
        }
        // Every payload first, then the whole range under one guard: a failure in the
        // middle applies nothing.
        let mut ops = Vec::new();
        for proven in &range.entries {
            for (id, vertex, position) in &proven.transactions {
                let payload = self.payload(&id.0, vertex, *position).await?;
                if let Some(op) = Op::decode(&payload) {
                    ops.push(op);
                }
            }
        }
        let checkpoint = range.proven.checkpoint.0;
        {
            let mut state = self.write_state();
            for op in ops {
                state.apply(op);
            }
            state.verified_through = checkpoint;
        }
        self.previous = range.certified_digest;
        self.linked = checkpoint;
        Ok(())
    }

    /// The proof of `tx_id`, waiting while the validator asked has not finalized it yet
    /// (NOT_FOUND: the reader may be behind the validator the subscription is on) or no
    /// stable checkpoint covers it yet (UNAVAILABLE: on an idle network that lasts until
    /// more transactions, or the idle heartbeat, order further sequences).
    async fn proof(&mut self, tx_id: TxId) -> Result<weft_client::ProofAnswer, KvError> {
        let deadline = self
            .proof_timeout
            .map(|timeout| tokio::time::Instant::now() + timeout);
        let mut not_found = 0u32;
        loop {
            let left = deadline.map_or(Duration::from_secs(60), |deadline| {
                deadline.saturating_duration_since(tokio::time::Instant::now())
            });
            let waiting = |error: &ClientError| matches!(error, ClientError::Unavailable(_));
            match self.reader.proof(tx_id, left).await {
                Err(error) if error.code() == Some(weft_client::Code::NotFound) => {
                    // Behind, or the subscription named a transaction no validator
                    // finalized: ask the next one, and give up after a while.
                    not_found += 1;
                    if not_found > NOT_FOUND_RETRIES || left.is_zero() {
                        return Err(KvError::NotProven(tx_id));
                    }
                    self.reader.switch_endpoint();
                    tokio::time::sleep(Duration::from_millis(200).min(left)).await;
                }
                Err(error) if waiting(&error) && (deadline.is_none() || !left.is_zero()) => {
                    tokio::time::sleep(Duration::from_millis(200).min(left)).await;
                }
                answer => return Ok(answer?),
            }
        }
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied entry: every entry
        // is applied under one guard. Take the state as it is.
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The payload of a proven transaction, checked against its id. A validator that
    /// does not hold the vertex yet (NOT_FOUND), or serves another payload, is left
    /// for the next endpoint: payloads verify themselves, so any validator will do.
    async fn payload(
        &mut self,
        id: &Digest,
        vertex: &Digest,
        position: u32,
    ) -> Result<Vec<u8>, KvError> {
        let tx_id = TxId(*id.as_bytes());
        let hash = vertex.as_bytes().to_vec();
        let index = usize::try_from(position).unwrap_or(usize::MAX);
        for _ in 0..NOT_FOUND_RETRIES {
            let cached = matches!(&self.vertex, Some((held, _)) if *held == hash);
            if !cached {
                match self.reader.vertex(&hash).await {
                    Ok(answer) => self.vertex = Some((hash.clone(), answer)),
                    Err(error) if error.code() == Some(weft_client::Code::NotFound) => {
                        self.reader.switch_endpoint();
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            let found = self.vertex.as_ref().and_then(|(_, answer)| {
                let payload = answer.transactions.get(index)?;
                let expires_at = answer.transaction_expires_at_ms.get(index)?;
                (TxId::of(*expires_at, payload) == tx_id).then(|| payload.clone())
            });
            if let Some(payload) = found {
                return Ok(payload);
            }
            // Not the payload the id names: ask the next validator.
            self.vertex = None;
            self.reader.switch_endpoint();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(KvError::WrongPayload(tx_id))
    }
}

/// Submits `op` and waits until it is final; its id and sequence.
pub async fn submit(
    client: &mut Client,
    op: &Op,
    timeout: Duration,
) -> Result<(TxId, u64), ClientError> {
    let info = client.submit_and_wait(op.encode(), None, timeout).await?;
    Ok((info.tx_id, info.sequence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip_and_foreign_payloads_are_skipped() {
        let set = Op::Set {
            key: "k".into(),
            value: "v".into(),
        };
        let delete = Op::Delete { key: "k".into() };
        assert_eq!(Op::decode(&set.encode()), Some(set));
        assert_eq!(Op::decode(&delete.encode()), Some(delete));
        assert_eq!(Op::decode(b"another application"), None);
        assert_eq!(Op::decode(b"weft-kv/v1 {\"op\":\"rename\"}"), None);
        let huge = Op::Set {
            key: "k".into(),
            value: "v".repeat(MAX_FIELD_BYTES + 1),
        };
        assert_eq!(Op::decode(&huge.encode()), None);
    }

    #[test]
    fn the_state_digest_follows_the_contents_not_the_order_of_writes() {
        let mut a = State::default();
        let mut b = State::default();
        for (key, value) in [("x", "1"), ("y", "2")] {
            a.apply(Op::Set {
                key: key.into(),
                value: value.into(),
            });
        }
        for (key, value) in [("y", "2"), ("x", "0"), ("x", "1")] {
            b.apply(Op::Set {
                key: key.into(),
                value: value.into(),
            });
        }
        assert_eq!(a.digest(), b.digest());
        b.apply(Op::Delete { key: "x".into() });
        assert_ne!(a.digest(), b.digest());
        // Length prefixes: ("ab", "c") and ("a", "bc") differ.
        let mut c = State::default();
        c.apply(Op::Set {
            key: "ab".into(),
            value: "c".into(),
        });
        let mut d = State::default();
        d.apply(Op::Set {
            key: "a".into(),
            value: "bc".into(),
        });
        assert_ne!(c.digest(), d.digest());
    }
}
