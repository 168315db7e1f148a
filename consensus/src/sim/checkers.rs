//! The checkers that need no simulation: agreement, integrity and the exact-set order,
//! over finalized logs.

use std::collections::{BTreeMap, HashMap, HashSet};

use weft_crypto::Digest;
use weft_dag::{FinalizedEntry, Round, SignedVertex, TxId};

/// Checker 1 (agreement): every sequence two replicas both finalized has the same
/// anchor, ordered vertex hashes, transaction ids and chained digest.
pub fn check_agreement(logs: &[Vec<FinalizedEntry>]) -> Vec<String> {
    let mut violations = Vec::new();
    let mut reference: BTreeMap<u64, (usize, &FinalizedEntry)> = BTreeMap::new();
    for (replica, log) in logs.iter().enumerate() {
        for entry in log {
            match reference.get(&entry.sequence.0) {
                None => {
                    reference.insert(entry.sequence.0, (replica, entry));
                }
                Some((first, expected)) => {
                    let same = expected.anchor == entry.anchor
                        && expected.vertices == entry.vertices
                        && expected.transactions == entry.transactions
                        && expected.state_digest == entry.state_digest;
                    if !same {
                        violations.push(format!(
                            "agreement: sequence {} differs between replicas {first} and {replica}",
                            entry.sequence
                        ));
                    }
                }
            }
        }
    }
    violations
}

/// Checker 2 (integrity): no replica finalizes a transaction twice or one that was never
/// submitted, and every transaction an honest replica acknowledged is final everywhere.
/// A transaction whose client only ever reached Byzantine validators is owed nothing:
/// they may censor it (seed 1024932 of the first long run: 15 retries, all to a twin).
pub fn check_integrity(
    logs: &[Vec<FinalizedEntry>],
    submitted: &HashMap<TxId, u64>,
    acknowledged: &HashSet<TxId>,
) -> Vec<String> {
    let mut violations = Vec::new();
    for (replica, log) in logs.iter().enumerate() {
        let mut seen = HashSet::new();
        for entry in log {
            for transaction in &entry.transactions {
                if !seen.insert(transaction.id) {
                    violations.push(format!(
                        "integrity: replica {replica} finalized {:?} twice",
                        transaction.id
                    ));
                }
                if !submitted.contains_key(&transaction.id) {
                    violations.push(format!(
                        "integrity: replica {replica} finalized unsubmitted {:?}",
                        transaction.id
                    ));
                }
            }
        }
        let missing = acknowledged.iter().filter(|id| !seen.contains(*id)).count();
        if missing > 0 {
            violations.push(format!(
                "liveness: replica {replica} never finalized {missing} acknowledged transactions"
            ));
        }
    }
    violations
}

/// Checker 3 (order) with the exact-set rule recomputed independently: sequence s
/// finalizes exactly the anchor's history at or above `G_s` that no earlier sequence
/// finalized, in an order where every parent comes before its children.
pub fn check_exact_set(
    logs: &[Vec<FinalizedEntry>],
    vertices: &HashMap<Digest, SignedVertex>,
    gc_depth: u64,
) -> Vec<String> {
    let Some(log) = logs.iter().max_by_key(|log| log.len()) else {
        return Vec::new();
    };
    let mut finalized: HashSet<Digest> = HashSet::new();
    let mut highest: Option<Round> = None;
    let mut violations = Vec::new();
    for entry in log {
        let Some(anchor) = entry.anchor else {
            if !entry.vertices.is_empty() {
                violations.push(format!(
                    "order: null sequence {} finalized vertices",
                    entry.sequence
                ));
            }
            continue;
        };
        let Some(anchor_vertex) = vertices.get(&anchor) else {
            continue;
        };
        let round = anchor_vertex.vertex().round;
        highest = Some(highest.map_or(round, |h| h.max(round)));
        let gc = Round(highest.map_or(0, |h| h.0.saturating_sub(gc_depth)));
        let mut expected = HashSet::new();
        let mut stack = vec![anchor];
        let mut complete = true;
        while let Some(hash) = stack.pop() {
            if finalized.contains(&hash) || !expected.insert(hash) {
                continue;
            }
            let Some(vertex) = vertices.get(&hash) else {
                complete = false;
                continue;
            };
            for parent in &vertex.vertex().parents {
                if parent.round >= gc {
                    stack.push(parent.hash);
                }
            }
        }
        let got: HashSet<Digest> = entry.vertices.iter().copied().collect();
        if complete && got != expected {
            violations.push(format!(
                "order: sequence {} finalized {} vertices, the exact-set rule gives {}",
                entry.sequence,
                got.len(),
                expected.len()
            ));
        }
        let mut position = HashMap::new();
        for (k, hash) in entry.vertices.iter().enumerate() {
            position.insert(*hash, k);
        }
        for (k, hash) in entry.vertices.iter().enumerate() {
            if let Some(vertex) = vertices.get(hash) {
                for parent in &vertex.vertex().parents {
                    if position.get(&parent.hash).is_some_and(|p| *p > k) {
                        violations.push(format!(
                            "order: sequence {} puts a vertex before its parent",
                            entry.sequence
                        ));
                    }
                }
            }
        }
        finalized.extend(got);
    }
    violations
}
