//! Checkpoints (ARCHITECTURE.md, "Checkpoints"): signing the executed state every K
//! sequences, stable checkpoints, and the window they move.

use super::*;

impl Replica {
    /// Rule 6: sign the executed state at a checkpoint sequence (persisted first: the
    /// executed state it names is durable, it went out in the same ordered outputs).
    pub(super) fn send_checkpoint(
        &mut self,
        sequence: Sequence,
        state_digest: Digest,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let checkpoint = Checkpoint {
            chain_id: self.config.committee.chain_id().clone(),
            epoch: self.config.committee.epoch(),
            sequence,
            state_digest,
            signer: self.config.index,
        }
        .sign_with(&self.signer);
        if sequence > self.stable.sequence {
            self.own_checkpoints.insert(sequence, checkpoint.clone());
            // Bounded like the slots of others' checkpoints (see `on_checkpoint`).
            let oldest = Sequence(sequence.0.saturating_sub(self.config.window));
            self.own_checkpoints = self.own_checkpoints.split_off(&oldest);
        }
        outputs.push(Output::Broadcast(Message::Checkpoint(checkpoint.clone())));
        self.on_checkpoint(checkpoint, now, outputs);
    }

    /// Collects checkpoint signatures for sequences in (h, h + W + K]; 2f + 1 matching
    /// make the sequence stable. Anything further ahead is dropped, not buffered.
    pub(super) fn on_checkpoint(
        &mut self,
        signed: SignedCheckpoint,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let checkpoint = signed.checkpoint();
        let (sequence, signer, digest) = (
            checkpoint.sequence,
            checkpoint.signer,
            checkpoint.state_digest,
        );
        let base = self.stable.sequence.0.max(self.finalizer.last_sequence().0);
        let horizon = base + self.config.window + self.config.checkpoint_interval;
        if sequence <= self.stable.sequence
            || sequence.0 > horizon
            || sequence.0 % self.config.checkpoint_interval != 0
        {
            self.drops.out_of_window_messages += 1;
            return;
        }
        // Slots far below what we executed are superseded by later checkpoints: a replica
        // that caught up by commit certificates past its stable checkpoint would otherwise
        // keep one slot per checkpoint sequence it passed (found by crashing a wiped
        // replica again: 69 slots against a bound of 60).
        let oldest = Sequence(base.saturating_sub(self.config.window));
        if sequence < oldest {
            self.drops.out_of_window_messages += 1;
            return;
        }
        self.checkpoints = self.checkpoints.split_off(&oldest);
        let signatures = self.checkpoints.entry(sequence).or_default();
        signatures.entry(signer).or_insert(signed);
        let matching: Vec<SignedCheckpoint> = signatures
            .values()
            .filter(|c| c.checkpoint().state_digest == digest)
            .cloned()
            .collect();
        if matching.len() < self.config.committee.quorum() {
            return;
        }
        // Agreement makes our own digest equal to any quorum's; a mismatch means this
        // replica diverged (more than f faulty validators): it stops following the
        // checkpoint and the host must halt it (see `diverged`).
        if let Some(own) = self.own_checkpoints.get(&sequence) {
            if own.checkpoint().state_digest != digest {
                self.diverged = Some(sequence);
                return;
            }
        }
        self.adopt_stable(
            StableCheckpoint {
                sequence,
                state_digest: digest,
                certificate: matching,
            },
            outputs,
        );
        // Pre-prepares that were above our window until now.
        self.rescan_pre_prepares(now, outputs);
    }

    /// Moves h and releases what lies below it.
    pub(super) fn adopt_stable(&mut self, stable: StableCheckpoint, outputs: &mut Vec<Output>) {
        let sequence = stable.sequence;
        let mut batch = StoreBatch::new();
        batch.put_replica_state(keys::STABLE, &encode_stable(&stable));
        self.stable = stable;
        self.checkpoints = self.checkpoints.split_off(&sequence.next());
        self.own_checkpoints = self.own_checkpoints.split_off(&sequence.next());
        self.prepared_claims = self.prepared_claims.split_off(&sequence.next());
        self.pre_prepared_claims = self.pre_prepared_claims.split_off(&sequence.next());
        // A replica behind the checkpoint still needs the votes of what it has not
        // executed; it catches up through peers' commit certificates.
        let released = sequence.min(self.finalizer.last_sequence());
        self.prepares.release_through(released);
        self.commits.release_through(released);
        let kept = self.vote_keys.split_off(&released.next());
        for key in std::mem::replace(&mut self.vote_keys, kept)
            .into_values()
            .flatten()
        {
            batch.delete_replica_state(&key);
        }
        outputs.push(Output::Persist(batch));
    }

    /// True when `certificate` proves `(sequence, digest)` stable: 2f + 1 distinct signers
    /// (signatures verified by the host). The genesis checkpoint needs none.
    pub(super) fn certifies(
        &self,
        sequence: Sequence,
        digest: &Digest,
        certificate: &[SignedCheckpoint],
    ) -> bool {
        if sequence == Sequence(0) {
            return true;
        }
        let signers: BTreeSet<ValidatorIndex> = certificate
            .iter()
            .map(SignedCheckpoint::checkpoint)
            .filter(|c| {
                c.sequence == sequence
                    && c.state_digest == *digest
                    && self.config.committee.contains(c.signer)
            })
            .map(|c| c.signer)
            .collect();
        signers.len() >= self.config.committee.quorum()
    }
}
