//! Ordering (ARCHITECTURE.md, "Ordering" and "Execution"): the per-sequence log of the
//! current view, pre-prepare, prepare, commit, commit certificates and in-order execution.

use super::*;

impl Replica {
    /// (executed, h + W]: not executed yet, and inside the window above the stable
    /// checkpoint h. Anything else is dropped without buffering.
    pub(super) fn in_window(&self, sequence: Sequence) -> bool {
        let executed = self.finalizer.last_sequence().0;
        sequence.0 > executed && sequence.0 <= self.stable.sequence.0 + self.config.window
    }

    /// What a replica accepts from others reaches W further than what it proposes: the
    /// primary's stable checkpoint may be ahead of ours, and a pre-prepare or vote
    /// dropped for being early would never be sent again (a stall without view change).
    /// Still bounded: at most 3W sequences above the executed one are held; a replica
    /// further behind catches up through commit certificates.
    pub(super) fn accepts(&self, sequence: Sequence) -> bool {
        let executed = self.finalizer.last_sequence().0;
        let base = self
            .stable
            .sequence
            .0
            .clamp(executed, executed + self.config.window);
        sequence.0 > executed && sequence.0 <= base + 2 * self.config.window
    }

    /// Rule 3: prepare an accepted anchor of the current primary, once per (view, sequence).
    pub(super) fn on_pre_prepare(
        &mut self,
        anchor: &SignedVertex,
        proposal: Proposal,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let body = anchor.vertex();
        let own_round = self.own_latest.as_ref().map_or(0, |v| v.vertex().round.0);
        let stale = body.round.0 + self.config.max_anchor_lag < own_round;
        if proposal.view != self.view
            || !self.view_active
            || body.author != self.primary(proposal.view)
            || !self.accepts(proposal.sequence)
            || self.pre_prepares.contains_key(&proposal.sequence)
            || stale
        {
            return;
        }
        self.prepare(proposal.sequence, Some(anchor.hash()), now, outputs);
    }

    /// Accepts (view, sequence, digest) as pre-prepared and votes for it (the primary's
    /// own pre-prepare counts as its vote).
    pub(super) fn prepare(
        &mut self,
        sequence: Sequence,
        digest: Option<Digest>,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        if self.pre_prepares.contains_key(&sequence) || sequence <= self.finalizer.last_sequence() {
            return;
        }
        self.pre_prepares.insert(sequence, digest);
        self.add_claim(sequence, digest, false);
        if self.primary(self.view) != self.config.index {
            let vote = self.sign_vote(Phase::Prepare, sequence, digest);
            self.send_vote(vote, now, outputs);
        } else {
            let mut batch = StoreBatch::new();
            batch.put_replica_state(keys::CLAIMS, &self.encode_claims());
            outputs.push(Output::Persist(batch));
        }
        self.check_prepared(sequence, now, outputs);
    }

    /// Records a Q (pre-prepared) or P (prepared) claim in the current view.
    pub(super) fn add_claim(&mut self, sequence: Sequence, digest: Option<Digest>, prepared: bool) {
        let claim = Claim {
            sequence,
            view: self.view,
            digest,
        };
        if prepared {
            self.prepared_claims.insert(sequence, claim);
        } else {
            let claims = self.pre_prepared_claims.entry(sequence).or_default();
            claims.retain(|c| c.digest != digest);
            claims.push(claim);
            // A handful of digests per sequence is all a view change needs; older ones
            // go first.
            if claims.len() > 4 {
                claims.sort_by_key(|c| c.view);
                claims.remove(0);
            }
        }
    }

    pub(super) fn sign_vote(
        &self,
        phase: Phase,
        sequence: Sequence,
        digest: Option<Digest>,
    ) -> SignedVote {
        Vote {
            chain_id: self.config.committee.chain_id().clone(),
            epoch: self.config.committee.epoch(),
            phase,
            view: self.view,
            sequence,
            digest,
            voter: self.config.index,
        }
        .sign_with(&self.signer)
    }

    /// Persist before send: the signed vote and the claims it implies are durable before
    /// it leaves; then it counts toward our own quorum like anyone else's.
    pub(super) fn send_vote(
        &mut self,
        vote: SignedVote,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let v = vote.vote();
        let key = keys::vote(v.phase, v.view.0, v.sequence.0);
        let mut batch = StoreBatch::new();
        batch.put_replica_state(&key, &vote.to_wire());
        batch.put_replica_state(keys::CLAIMS, &self.encode_claims());
        outputs.push(Output::Persist(batch));
        self.vote_keys.entry(v.sequence).or_default().push(key);
        self.own_votes.insert((v.sequence, v.phase), vote.clone());
        outputs.push(Output::Broadcast(Message::Vote(vote.clone())));
        self.on_vote(vote, now, outputs);
    }

    pub(super) fn on_vote(
        &mut self,
        vote: SignedVote,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let (phase, view, sequence) = {
            let v = vote.vote();
            (v.phase, v.view, v.sequence)
        };
        if view != self.view || !self.accepts(sequence) {
            self.drops.out_of_window_messages += 1;
            return;
        }
        let tracker = match phase {
            Phase::Prepare => &mut self.prepares,
            Phase::Commit => &mut self.commits,
        };
        match tracker.add(vote) {
            VoteOutcome::DoubleVote(evidence) => {
                self.on_evidence(Evidence::DoubleVote(evidence), now, outputs);
            }
            VoteOutcome::Duplicate => {}
            VoteOutcome::Counted(_) | VoteOutcome::QuorumReached(_) => match phase {
                Phase::Prepare => self.check_prepared(sequence, now, outputs),
                Phase::Commit => self.check_committed(sequence, outputs),
            },
        }
    }

    /// Rule 4: prepared = our pre-prepare + 2f matching prepares -> send a commit.
    pub(super) fn check_prepared(
        &mut self,
        sequence: Sequence,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let Some(digest) = self.pre_prepares.get(&sequence).copied() else {
            return;
        };
        if !self.view_active
            || self.commit_sent.contains(&sequence)
            || self.prepares.count(self.view, sequence, digest.as_ref())
                < self.config.committee.quorum() - 1
        {
            return;
        }
        self.commit_sent.insert(sequence);
        self.add_claim(sequence, digest, true);
        let vote = self.sign_vote(Phase::Commit, sequence, digest);
        self.send_vote(vote, now, outputs);
    }

    /// Committed = 2f + 1 matching commits, for any digest (even one whose pre-prepare
    /// we missed: the anchor is then fetched from a voter).
    pub(super) fn check_committed(&mut self, sequence: Sequence, outputs: &mut Vec<Output>) {
        if self.committed.contains_key(&sequence) {
            return;
        }
        let quorum = self.config.committee.quorum();
        let mut candidates = self.commits.digests(self.view, sequence);
        candidates.sort_unstable();
        candidates.dedup();
        let Some(digest) = candidates
            .into_iter()
            .find(|d| self.commits.count(self.view, sequence, d.as_ref()) >= quorum)
        else {
            return;
        };
        let certificate = self.commits.votes_for(self.view, sequence, digest.as_ref());
        self.mark_committed(sequence, digest, certificate, outputs);
    }

    pub(super) fn mark_committed(
        &mut self,
        sequence: Sequence,
        digest: Option<Digest>,
        certificate: Vec<SignedVote>,
        outputs: &mut Vec<Output>,
    ) {
        self.committed.insert(sequence, digest);
        if let Some(anchor) = digest.filter(|d| !self.dag.contains(d)) {
            self.dag.want(anchor, self.wanted_limit());
            if let Some(voter) = certificate
                .iter()
                .map(|v| v.vote().voter)
                .find(|v| *v != self.config.index)
            {
                outputs.push(Output::Fetch {
                    from: voter,
                    hashes: vec![anchor],
                });
            }
        }
        self.decided.insert(sequence, certificate);
    }

    /// Rule 5: execute committed sequences strictly in order.
    pub(super) fn execute_committed(&mut self, now: TimestampMs, outputs: &mut Vec<Output>) {
        loop {
            let next = self.finalizer.last_sequence().next();
            let Some(anchor) = self.committed.get(&next).copied() else {
                return;
            };
            if anchor.is_some_and(|h| !self.dag.contains(&h)) {
                // The fetch was requested when it committed; wait for the anchor.
                return;
            }
            let entry = match self.finalizer.execute(&self.dag, next, anchor, now.0) {
                Ok(entry) => entry,
                Err(error) => {
                    debug_assert!(false, "committed anchor could not execute: {error}");
                    return;
                }
            };
            for transaction in &entry.transactions {
                self.mempool_ids.remove(&transaction.id);
            }
            let finalized: HashSet<TxId> = entry.transactions.iter().map(|t| t.id).collect();
            self.mempool.retain(|t| !finalized.contains(&t.id()));
            let vertices: HashSet<Digest> = entry.vertices.iter().copied().collect();
            self.own_pending
                .retain(|_, own| !vertices.contains(&own.hash));
            self.committed.remove(&next);
            self.pre_prepares.remove(&next);
            self.awaiting_history.remove(&next);
            self.commit_sent.remove(&next);
            self.own_votes.retain(|(s, _), _| *s > next);
            self.prepares.release_through(next);
            self.commits.release_through(next);
            let retained = next.0.saturating_sub(self.config.decided_retention);
            self.decided = self.decided.split_off(&Sequence(retained + 1));
            let mut batch = StoreBatch::new();
            batch.append_finalized(entry.clone());
            outputs.push(Output::Persist(batch));
            let checkpoint_due = next.0.is_multiple_of(self.config.checkpoint_interval);
            let state_digest = entry.state_digest;
            outputs.push(Output::Finalized(entry));
            if checkpoint_due {
                self.send_checkpoint(next, state_digest, outputs);
            }
            if self.view_active {
                // Progress: T goes back to its base and the wait starts over.
                self.timeout_ms = self.config.view_change_timeout_ms;
                self.progress_deadline = None;
            }
            let gc = self.finalizer.gc_round();
            self.forwarded.retain(|(_, round)| *round >= gc);
            let report = self.dag.set_gc_round(gc);
            for hash in report.accepted {
                self.on_accepted(&hash, now, outputs);
            }
            self.repropose_below_gc();
        }
    }

    /// Our vertices that fell below the GC round without being finalized will never be:
    /// their transactions go back to the mempool (deduplication keeps them exactly-once).
    pub(super) fn repropose_below_gc(&mut self) {
        let gc = self.finalizer.gc_round();
        let kept = self.own_pending.split_off(&gc);
        let dropped = std::mem::replace(&mut self.own_pending, kept);
        let mut again = Vec::new();
        for own in dropped.values() {
            for transaction in &own.transactions {
                self.mempool_ids.remove(&transaction.id());
            }
        }
        for own in dropped.into_values() {
            again.extend(
                own.transactions
                    .into_iter()
                    .filter(|t| !self.finalizer.is_transaction_finalized(&t.id())),
            );
        }
        self.add_transactions(again);
    }

    /// Evidence lowers the culprit's standing; proof that the primary equivocated
    /// replaces it (and the evidence travels on, so the others see it too).
    pub(super) fn on_evidence(
        &mut self,
        evidence: Evidence,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let culprit = evidence.culprit();
        if let Some(count) = self.faults.get_mut(culprit.as_usize()) {
            *count = count.saturating_add(1);
        }
        let primary_proven_faulty = culprit == self.primary(self.view)
            && match &evidence {
                Evidence::Equivocation(e) => e.second.vertex().proposal.is_some(),
                Evidence::DoubleVote(_) => true,
            };
        // The primary's equivocation travels on, once per slot, so every replica sees it.
        if let Evidence::Equivocation(e) = &evidence {
            let slot = (e.author(), e.round());
            if primary_proven_faulty && self.forwarded.insert(slot) {
                outputs.push(Output::Broadcast(Message::Vertex(e.first.clone())));
                outputs.push(Output::Broadcast(Message::Vertex(e.second.clone())));
            }
        }
        outputs.push(Output::Evidence(evidence));
        if primary_proven_faulty && self.view_active && culprit != self.config.index {
            self.start_view_change(self.view.next(), now, outputs);
        }
    }
}
