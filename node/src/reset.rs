//! `weft reset-state`: wipe a validator's data but not what it signed.
//!
//! The finalized log, the transaction index and the stored vertices go; the keys (in
//! `keys/`, never touched) and the consensus signing record (the store's `replica`
//! family: view, votes, view-change claims, stable checkpoint, and the own latest vertex
//! it names) stay. A validator restarted after a reset therefore never votes twice for
//! one (view, sequence) and never builds a second vertex for a round it built, exactly
//! as after a crash: the reset only forgets what peers can give back.

use std::path::Path;

use weft_dag::store::RocksStore;
use weft_dag::Limits;

use crate::config::{ConfigError, Home};

/// Why the reset did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The home folder is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened (most often: the validator is still running).
    #[error("cannot open {path}: {reason} (is the validator still running? stop it first)")]
    Open {
        /// The data folder.
        path: String,
        /// RocksDB's words.
        reason: String,
    },
    /// Reading the signing record or the write failed; nothing was deleted.
    #[error("{0}; nothing was deleted")]
    Store(String),
}

/// Resets the validator at `home`. Returns a one-line summary.
pub fn reset_state(home: &Path) -> Result<String, ResetError> {
    let home = Home::new(home);
    let config = home.load_config()?;
    // The keys must be there: a reset that leaves a validator without its identity
    // would be a different validator.
    home.load_validator_key()?;
    home.load_p2p_key()?;
    let data_dir = home.data_dir(&config);
    if !data_dir.exists() {
        return Ok(format!(
            "reset-state: {} holds no data; nothing to do",
            data_dir.display()
        ));
    }
    let store = RocksStore::open(&data_dir, Limits::default()).map_err(|e| ResetError::Open {
        path: data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let previous = weft_dag::store::Store::log_head(&store)
        .map_err(|e| ResetError::Store(e.to_string()))?
        .map_or(0, |h| h.sequence.0);
    let keep = weft_consensus::replica::signing_record_vertices(&store)
        .map_err(|e| ResetError::Store(e.to_string()))?;
    store
        .reset_keeping(&keep)
        .map_err(|e| ResetError::Store(e.to_string()))?;
    tracing::info!(
        previous_sequence = previous,
        kept_vertices = keep.len(),
        "data reset"
    );
    Ok(format!(
        "reset-state: removed the finalized log (was at sequence {previous}) and the vertices under {}; kept keys/ and the signing record",
        data_dir.display()
    ))
}
