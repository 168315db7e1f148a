//! Ordering (ARCHITECTURE.md, "Ordering" and "Execution"): the per-sequence log of the
//! current view, pre-prepare, prepare, commit, commit certificates and in-order execution.

use super::*;

/// Where the pre-prepare of a sequence in the current view came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// The view's NewView decided it (a re-proposed anchor, or null): the NewView is the
    /// pre-prepare, no vertex may take the sequence in this view.
    NewView,
    /// The primary's vertex of this round carries the proposal.
    Primary {
        /// The anchor's round (strictly increasing with the sequence in a view).
        round: Round,
    },
}

/// How far a log entry got in the current view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SlotState {
    /// Pre-prepared, but the anchor's history is not held yet: no prepare sent.
    AwaitingHistory,
    /// Our prepare went out (or we are the primary).
    PrePrepared,
    /// Prepared: our commit went out.
    Prepared,
}

/// PBFT's log entry for one sequence of the current view. The log is emptied at every
/// view change (claims carry what matters across views) and entries leave it when the
/// sequence executes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Slot {
    /// NewView or primary.
    pub(super) source: Source,
    /// The anchor, or null.
    pub(super) digest: Option<Digest>,
    /// How far it got.
    pub(super) state: SlotState,
}

impl Slot {
    fn primary_round(&self) -> Option<Round> {
        match self.source {
            Source::Primary { round } => Some(round),
            Source::NewView => None,
        }
    }
}

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

    /// Rule 3: the pre-prepare carried by an accepted vertex of the current primary.
    ///
    /// - Only inside our own window (executed, h + W]: what we prepare is what our view
    ///   change will claim, and claims must lie in (h, h + W] of our own h (an early
    ///   pre-prepare is taken again by [`Replica::rescan_pre_prepares`] once h moves).
    /// - Never for a sequence the view's NewView decided: the NewView *is* its
    ///   pre-prepare (finding 1 of the review: otherwise a Byzantine primary gives a
    ///   replica still fetching the re-proposed anchor a second one, and that claim later
    ///   outranks the committed one).
    /// - One pre-prepare per (view, sequence), anchor rounds strictly increasing with
    ///   the sequence in a view: anything else is the primary's signed contradiction,
    ///   reported as evidence and answered by a view change (finding 3).
    pub(super) fn on_pre_prepare(
        &mut self,
        anchor: &SignedVertex,
        proposal: Proposal,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let body = anchor.vertex();
        let own_round = self.own_latest.as_ref().map_or(0, |v| v.vertex().round.0);
        let stale = body.round.0.saturating_add(self.config.max_anchor_lag) < own_round;
        let mutant = self.config.mutant;
        let in_range = if mutant == Some(Mutant::UnboundedClaims) {
            self.accepts(proposal.sequence)
        } else {
            self.in_window(proposal.sequence)
        };
        // An anchor stamped too far ahead of our clock would push consensus time (and
        // expire transactions early): not prepared, so the view times out.
        let future = body.created_at.0 > now.0.saturating_add(self.config.max_clock_drift_ms);
        if proposal.view != self.view
            || !self.view_active
            || body.author != self.primary(proposal.view)
            || !in_range
            || stale
            || future
        {
            return;
        }
        let hash = anchor.hash();
        let sequence = proposal.sequence;
        // A sequence the view's NewView decided has no log entry when it lies at or below
        // our stable checkpoint (NewView entries are installed above h only, on entering
        // the view and on recovery): the NewView is still its only pre-prepare (found by
        // the simulator, seed 10,001,024). The window itself keeps its lower bound at
        // `executed`: raising it to h stalled a seed of the long run (100,008,865).
        if mutant != Some(Mutant::PrePrepareBelowStable)
            && !self.log.contains_key(&sequence)
            && self.new_view_decision(self.view, sequence).is_some()
        {
            return;
        }
        if let Some(slot) = self.log.get(&sequence).copied() {
            match slot.source {
                Source::Primary { .. } if slot.digest == Some(hash) => return,
                Source::NewView
                    if mutant == Some(Mutant::PrePrepareOverNewView)
                        && slot.state == SlotState::AwaitingHistory =>
                {
                    // The old rule: the re-proposed anchor was not a pre-prepare yet.
                    self.log.remove(&sequence);
                }
                _ if mutant == Some(Mutant::CountPrimaryPrepare)
                    || mutant == Some(Mutant::PrePrepareOverNewView) =>
                {
                    return;
                }
                _ => {
                    let first = self.pre_prepare_proof(sequence, slot);
                    self.on_conflicting_pre_prepares(first, anchor.clone(), now, outputs);
                    return;
                }
            }
        }
        if mutant != Some(Mutant::CountPrimaryPrepare) {
            // Anchor rounds strictly increase with the sequence within a view.
            // Entries leave the log when they execute: the last executed anchor of the
            // view still bounds the next one.
            let below = self
                .log
                .range(..sequence)
                .rev()
                .find_map(|(s, slot)| slot.primary_round().map(|r| (*s, r)))
                .or_else(|| {
                    self.last_executed_anchor
                        .and_then(|(s, slot)| slot.primary_round().map(|r| (s, r)))
                        .filter(|(s, _)| *s < sequence)
                });
            let above = self
                .log
                .range(sequence.next()..)
                .find_map(|(s, slot)| slot.primary_round().map(|r| (*s, r)));
            let conflict = below
                .filter(|(_, round)| *round >= body.round)
                .or(above.filter(|(_, round)| *round <= body.round));
            if let Some((other, _)) = conflict {
                let executed = self.last_executed_anchor.filter(|(s, _)| *s == other);
                if let Some(slot) = self
                    .log
                    .get(&other)
                    .copied()
                    .or(executed.map(|(_, slot)| slot))
                {
                    let first = self.pre_prepare_proof(other, slot);
                    self.on_conflicting_pre_prepares(first, anchor.clone(), now, outputs);
                }
                return;
            }
        }
        self.log.insert(
            sequence,
            Slot {
                source: Source::Primary { round: body.round },
                digest: Some(hash),
                state: SlotState::AwaitingHistory,
            },
        );
        self.prepare(sequence, now, outputs);
    }

    /// The signed object that is the pre-prepare of `slot`: the primary's vertex, or the
    /// view's NewView.
    fn pre_prepare_proof(&self, sequence: Sequence, slot: Slot) -> Option<PrePrepareProof> {
        match slot.source {
            // Only the primary's own signed proposal in this view is proof against it.
            Source::Primary { .. } => slot
                .digest
                .and_then(|d| self.dag.get(&d))
                .filter(|v| {
                    v.vertex().author == self.primary(self.view)
                        && v.vertex()
                            .proposal
                            .is_some_and(|p| p.view == self.view && p.sequence == sequence)
                })
                .map(|v| PrePrepareProof::Vertex(v.clone())),
            Source::NewView => match &self.new_view {
                Some(Message::NewView(message)) => Some(PrePrepareProof::NewView {
                    new_view: message.new_view.clone(),
                    sequence,
                }),
                _ => None,
            },
        }
    }

    /// The primary signed two pre-prepares that cannot both stand: evidence, and a view
    /// change (the evidence travels on so the others move too).
    fn on_conflicting_pre_prepares(
        &mut self,
        first: Option<PrePrepareProof>,
        second: SignedVertex,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let Some(first) = first else {
            return;
        };
        if let PrePrepareProof::Vertex(vertex) = &first {
            outputs.push(Output::Broadcast(Message::Vertex(vertex.clone())));
        }
        outputs.push(Output::Broadcast(Message::Vertex(second.clone())));
        let evidence =
            Evidence::ConflictingPrePrepares(Box::new(ConflictingPrePrepares { first, second }));
        self.on_evidence(evidence, now, outputs);
    }

    /// The pre-prepares of the current view that are in the DAG but were not taken when
    /// they arrived: before we entered the view, or above our window before h moved.
    pub(super) fn rescan_pre_prepares(&mut self, now: TimestampMs, outputs: &mut Vec<Output>) {
        if !self.view_active {
            return;
        }
        let primary = self.primary(self.view);
        let Some(latest) = self.latest_by_author[primary.as_usize()] else {
            return;
        };
        let lowest = latest
            .round
            .0
            .saturating_sub(2 * self.config.window + 2 + self.config.max_anchor_lag);
        let mut early = Vec::new();
        for round in (lowest..=latest.round.0).map(Round) {
            for vertex in self.dag.round_vertices(round) {
                let v = vertex.vertex();
                if v.author == primary
                    && v.proposal
                        .is_some_and(|p| p.view == self.view && !self.log.contains_key(&p.sequence))
                {
                    early.push((*vertex).clone());
                }
            }
        }
        for vertex in early {
            if let Some(proposal) = vertex.vertex().proposal {
                self.on_pre_prepare(&vertex, proposal, now, outputs);
            }
        }
    }

    /// Votes for the pre-prepare in the log at `sequence` once its anchor's history is
    /// held (the primary's own pre-prepare stands in for its vote). Persist before send:
    /// the vote and the Q claim it implies are one batch.
    pub(super) fn prepare(
        &mut self,
        sequence: Sequence,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let Some(slot) = self.log.get(&sequence).copied() else {
            return;
        };
        if slot.state != SlotState::AwaitingHistory || sequence <= self.finalizer.last_sequence() {
            return;
        }
        if slot.digest.is_some_and(|d| !self.dag.contains(&d))
            || !self.may_vote(self.view, sequence)
        {
            return;
        }
        if let Some(entry) = self.log.get_mut(&sequence) {
            entry.state = SlotState::PrePrepared;
        }
        self.add_claim(sequence, slot.digest, false);
        if self.primary(self.view) != self.config.index {
            let vote = self.sign_vote(Phase::Prepare, sequence, slot.digest);
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
            let keep = self.prepared_claims.get(&sequence).map(|p| p.digest);
            let claims = self.pre_prepared_claims.entry(sequence).or_default();
            claims.retain(|c| c.digest != digest);
            claims.push(claim);
            // At most MAX_Q_PER_SEQUENCE digests per sequence (a view change's lists stay
            // within 2W): the newest, and always the one our prepared claim names, so the
            // claim keeps its voucher (A2 of the decision rule).
            while claims.len() > crate::view_change::MAX_Q_PER_SEQUENCE {
                claims.sort_by_key(|c| (Some(c.digest) == keep, c.view));
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
        // The primary pre-prepares, it never prepares: a prepare it signed in its own
        // view is a proven fault and never counts toward the 2f (finding 3: counted, it
        // lets a second anchor prepare in the same view).
        if phase == Phase::Prepare
            && vote.vote().voter == self.primary(view)
            && self.config.mutant != Some(Mutant::CountPrimaryPrepare)
        {
            self.drops.invalid_votes += 1;
            self.on_evidence(Evidence::PrimaryPrepare(Box::new(vote)), now, outputs);
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

    /// Rule 4: prepared = the pre-prepare in our log + 2f matching prepares from
    /// validators other than the primary -> send a commit (and claim P).
    pub(super) fn check_prepared(
        &mut self,
        sequence: Sequence,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let Some(slot) = self.log.get(&sequence).copied() else {
            return;
        };
        if !self.view_active
            || !self.may_vote(self.view, sequence)
            || slot.state != SlotState::PrePrepared
            || self
                .prepares
                .count(self.view, sequence, slot.digest.as_ref())
                < self.config.committee.quorum() - 1
        {
            return;
        }
        if let Some(entry) = self.log.get_mut(&sequence) {
            entry.state = SlotState::Prepared;
        }
        self.add_claim(sequence, slot.digest, true);
        let vote = self.sign_vote(Phase::Commit, sequence, slot.digest);
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
            self.dag
                .want(anchor, Sponsor::Certified, self.wanted_limit());
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
            if let Some(slot) = self.log.remove(&next) {
                if slot.primary_round().is_some() {
                    self.last_executed_anchor = Some((next, slot));
                }
            }
            self.own_votes.retain(|(s, _), _| *s > next);
            self.prepares.release_through(next);
            self.commits.release_through(next);
            let retained = next.0.saturating_sub(self.config.decided_retention);
            self.decided = self.decided.split_off(&Sequence(retained + 1));
            let mut batch = StoreBatch::new();
            batch.append_finalized(entry.clone());
            if next.0.is_multiple_of(self.config.snapshot_interval) {
                put_finalizer_snapshot(
                    &mut batch,
                    &self.finalizer.snapshot(),
                    self.config.gc_depth,
                );
            }
            self.forget_finalized_records(&finalized, &mut batch);
            outputs.push(Output::Persist(batch));
            let checkpoint_due = next.0.is_multiple_of(self.config.checkpoint_interval);
            let state_digest = entry.state_digest;
            outputs.push(Output::Finalized(entry));
            if checkpoint_due {
                self.send_checkpoint(next, state_digest, now, outputs);
            }
            if self.view_active {
                // Progress: T goes back to its base and the wait starts over.
                self.timeout_ms = self.config.view_change_timeout_ms;
                self.progress_deadline = None;
            }
            let gc = self.finalizer.gc_round();
            self.forwarded.retain(|(_, round)| *round >= gc);
            let finalizer = &self.finalizer;
            self.unanchored
                .retain(|(round, hash)| *round >= gc && !finalizer.is_finalized(hash));
            let report = self.dag.set_gc_round(gc);
            for hash in report.accepted {
                self.on_accepted(&hash, now, outputs);
            }
            self.repropose_below_gc(now);
        }
    }

    /// Our vertices that fell below the GC round without being finalized will never be:
    /// their transactions go back to the mempool (deduplication keeps them exactly-once).
    pub(super) fn repropose_below_gc(&mut self, now: TimestampMs) {
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
        // Their records, written when they were admitted, stay until they finalize; the
        // mempool cap does not apply to them.
        let _ = self.admit(again, now, self.config.legacy_replay);
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
                Evidence::Equivocation(e) => {
                    e.first.vertex().proposal.is_some() || e.second.vertex().proposal.is_some()
                }
                Evidence::DoubleVote(_) | Evidence::ConflictingPrePrepares(_) => true,
                // Ignored, it harms nothing: no reason to leave the view.
                Evidence::PrimaryPrepare(_) => false,
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
