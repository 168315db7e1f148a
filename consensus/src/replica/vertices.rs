//! The DAG side (ARCHITECTURE.md, "Vertex" and "Accepting vertices"): the mempool,
//! inserting and accepting vertices, and building our own.

use super::*;

/// One of our own vertices whose transactions are not final yet.
#[derive(Clone, Debug)]
pub(super) struct OwnPending {
    pub(super) hash: Digest,
    pub(super) created_at: TimestampMs,
    pub(super) transactions: Vec<Transaction>,
}

impl Replica {
    /// Admits what can still be finalized and is new; returns the admitted ones (the
    /// caller makes client submissions durable with `persist_admitted`).
    pub(super) fn add_transactions(
        &mut self,
        transactions: Vec<Transaction>,
        now: TimestampMs,
    ) -> Vec<Transaction> {
        self.admit(transactions, now, true)
    }

    /// Admission; `capped` is false for transactions we acknowledged before (re-queued
    /// from our own vertices that fell below the GC round unfinalized): the cap is for
    /// new work, and dropping those would lose an acknowledged transaction (found by the
    /// attack review).
    pub(super) fn admit(
        &mut self,
        transactions: Vec<Transaction>,
        now: TimestampMs,
        capped: bool,
    ) -> Vec<Transaction> {
        let mut admitted = Vec::new();
        for transaction in transactions {
            // Only what can still be finalized: not expired, and within the dedup window
            // of our clock (the execution rule decides by consensus time in the end).
            if !Finalizer::within_validity(now, transaction.expires_at()) {
                self.drops.expired_transactions += 1;
                continue;
            }
            let id = transaction.id();
            if self.finalizer.is_transaction_finalized(&id) || self.mempool_ids.contains(&id) {
                continue;
            }
            if capped && self.mempool.len() >= self.config.max_mempool_transactions {
                self.drops.mempool_full += 1;
                continue;
            }
            self.mempool_ids.insert(id);
            admitted.push(transaction.clone());
            self.mempool.push_back(transaction);
        }
        admitted
    }

    pub(super) fn insert_vertex(
        &mut self,
        from: ValidatorIndex,
        vertex: SignedVertex,
        pushed: bool,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        // Pushed vertices are taken only up to R rounds above our own round, the highest
        // round we accepted or our GC round, whichever is highest (a replica that lost its
        // chain catches up through committed anchors and what it executed): a flood of
        // future rounds is dropped before it costs memory.
        let own_round = self.own_latest.as_ref().map_or(0, |v| v.vertex().round.0);
        let reference = if self.config.legacy_replay {
            own_round
        } else {
            own_round
                .max(self.dag.highest_round().map_or(0, |r| r.0))
                .max(self.dag.gc_round().0)
        };
        if pushed && vertex.vertex().round.0 > reference.saturating_add(self.config.max_round_lead)
        {
            self.drops.future_vertices += 1;
            return;
        }
        match self.dag.insert(vertex) {
            Ok(report) => {
                if let Some(equivocation) = report.equivocation {
                    self.on_evidence(Evidence::Equivocation(Box::new(equivocation)), now, outputs);
                }
                if !report.missing.is_empty() {
                    outputs.push(Output::Fetch {
                        from,
                        hashes: report.missing.iter().map(|p| p.hash).collect(),
                    });
                }
                for hash in report.accepted {
                    self.on_accepted(&hash, now, outputs);
                }
            }
            Err(InsertError::UnwantedEquivocation(evidence)) => {
                self.on_evidence(Evidence::Equivocation(evidence), now, outputs);
            }
            Err(InsertError::BelowGcRound { .. }) => {}
            Err(_) => self.drops.invalid_vertices += 1,
        }
    }

    pub(super) fn banned(&self, author: ValidatorIndex) -> bool {
        self.faults
            .get(author.as_usize())
            .is_some_and(|f| *f >= self.config.ban_threshold)
    }

    pub(super) fn on_accepted(
        &mut self,
        hash: &Digest,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let Some(vertex) = self.dag.get(hash).cloned() else {
            return;
        };
        let body = vertex.vertex();
        // Every accepted vertex is stored: peers fetch histories from our store, the
        // finalized log names them, and recovery replays them.
        // Our own vertices too, except the one just built (`build_vertex` persisted it):
        // after a wipe, peers relay back what we signed before it, the finalized log may
        // name them, and recovery replays that log from the store (found by crashing a
        // wiped replica again: "vertex .. of the anchor's history is not held").
        let just_built = self
            .own_latest
            .as_ref()
            .is_some_and(|own| own.hash() == *hash);
        if body.author != self.config.index || !just_built {
            let mut batch = StoreBatch::new();
            batch.put_vertex(vertex.clone());
            outputs.push(Output::Persist(batch));
        }
        let slot = &mut self.latest_by_author[body.author.as_usize()];
        if slot.is_none_or(|latest| latest.round < body.round) {
            *slot = Some(vertex.as_parent());
        }
        if !body.transactions.is_empty() && !self.finalizer.is_finalized(hash) {
            self.unanchored.insert((body.round, *hash));
        }
        if let Some(proposal) = body.proposal {
            self.on_pre_prepare(&vertex, proposal, now, outputs);
        }
        // Pre-prepares waiting for this anchor's history (NewView re-proposals).
        let ready: Vec<Sequence> = self
            .log
            .iter()
            .filter(|(_, slot)| {
                slot.state == SlotState::AwaitingHistory && slot.digest.as_ref() == Some(hash)
            })
            .map(|(s, _)| *s)
            .collect();
        for sequence in ready {
            self.prepare(sequence, now, outputs);
        }
    }

    /// Rule 1: build the next vertex when a quorum of the previous round is held and
    /// there is something to order (or the idle timer fired).
    pub(super) fn maybe_build_vertex(&mut self, now: TimestampMs, outputs: &mut Vec<Output>) {
        if self.learning() {
            return;
        }
        let mut next_round = match &self.own_latest {
            None => Round(0),
            Some(latest) => latest.vertex().round.next(),
        }
        .max(self.lowest_own_round());
        if let Some(previous) = next_round.previous() {
            if !self.holds_quorum_of(previous, now) {
                if let Some(ahead) = self.highest_quorum_round_from(next_round, now) {
                    next_round = ahead.next();
                }
            }
        }
        // Backpressure: at most 2D rounds above the GC round. Beyond, only the primary
        // builds, and only to propose the anchor that moves the GC round.
        let cap = self.finalizer.gc_round().0 + 2 * self.config.gc_depth;
        if next_round.0 > cap && !self.wants_to_propose() {
            return;
        }
        if let Some(previous) = next_round.previous() {
            let authors: Vec<&SignedVertex> = self
                .dag
                .round_vertices(previous)
                .into_iter()
                .filter(|v| self.referencable(v, now))
                .collect();
            let mut distinct: Vec<ValidatorIndex> =
                authors.iter().map(|v| v.vertex().author).collect();
            if self.config.mutant != Some(Mutant::CountParentVertices) {
                distinct.dedup();
            }
            if distinct.len() < self.config.committee.quorum() {
                self.maybe_nudge(previous, now, outputs);
                return;
            }
            let nudged = self.nudged.is_some_and(|round| next_round <= round)
                && self.config.mutant != Some(Mutant::NoNudge)
                && !self.config.legacy_replay;
            let has_work = !self.mempool.is_empty()
                || self.idle_fired
                || nudged
                || authors
                    .iter()
                    .any(|v| !v.vertex().transactions.is_empty() || v.vertex().proposal.is_some())
                || self.wants_to_propose();
            if !has_work {
                if !self.idle_armed {
                    self.idle_armed = true;
                    outputs.push(Output::SetTimer {
                        timer: Timer::Idle,
                        after_ms: self.config.idle_interval_ms,
                    });
                }
                return;
            }
        }
        if self.nudged.is_some_and(|round| next_round >= round) {
            self.nudged = None;
        }
        self.stuck_since = None;
        self.build_vertex(next_round, now, outputs);
    }

    /// Work of ours waits but we hold no quorum of `previous`: ask peers to build it
    /// (after half a retransmission interval stuck, then at most that often).
    fn maybe_nudge(&mut self, previous: Round, now: TimestampMs, outputs: &mut Vec<Output>) {
        // Work of ours waits: transactions in the mempool, or in our own vertices that no
        // anchor covered yet (a lone transaction built at once leaves the mempool empty,
        // found by the attack review).
        if (self.mempool.is_empty() && self.own_pending.is_empty())
            || self.config.mutant == Some(Mutant::NoNudge)
            || self.config.legacy_replay
        {
            self.stuck_since = None;
            return;
        }
        // Only once stuck for half a retransmission interval: under load the quorum of
        // the round below arrives within milliseconds, and peers build anyway.
        let pause = self.config.retransmit_interval_ms / 2;
        let since = *self.stuck_since.get_or_insert(now);
        if now.0 < since.0.saturating_add(pause) {
            return;
        }
        if self
            .last_nudge
            .is_some_and(|last| now.0 < last.0.saturating_add(pause))
        {
            return;
        }
        self.last_nudge = Some(now);
        outputs.push(Output::Broadcast(Message::Nudge { round: previous }));
    }

    /// A peer lacks a quorum of `round`. Taken only for a round at most one above the
    /// highest we hold (it exists, or is the next one) and not yet built by us, and at
    /// most once per half retransmission interval per peer: a Byzantine validator can
    /// make us build at most one round per nudge it is allowed (known limit 14).
    pub(super) fn on_nudge(&mut self, from: ValidatorIndex, round: Round, now: TimestampMs) {
        if from == self.config.index || self.learning() {
            return;
        }
        let top = self.dag.highest_round().map_or(0, |r| r.0);
        if round.0 > top.saturating_add(1) {
            return;
        }
        let own = self.own_latest.as_ref().map(|v| v.vertex().round);
        if own.is_some_and(|own| own >= round) {
            return;
        }
        let pause = self.config.retransmit_interval_ms / 2;
        let Some(taken) = self.nudges_taken.get_mut(from.as_usize()) else {
            return;
        };
        if taken.0 != 0 && now.0 < taken.0.saturating_add(pause) {
            return;
        }
        *taken = now;
        self.nudged = Some(self.nudged.map_or(round, |r| r.max(round)));
    }

    /// False for another author's vertex stamped more than half the clock drift allowance
    /// ahead of our clock: we neither reference nor count it. Our own `created_at` is the
    /// maximum of our clock and our parents', so a Byzantine far-future stamp would
    /// otherwise spread into honest vertices and from there into consensus time (which
    /// expires transactions). With this rule honest vertices stay within half the
    /// allowance of their author's clock, and voters (who allow the whole of it) accept
    /// honest anchors despite some skew.
    pub(super) fn referencable(&self, vertex: &SignedVertex, now: TimestampMs) -> bool {
        let body = vertex.vertex();
        body.author == self.config.index
            || body.created_at.0 <= now.0.saturating_add(self.config.max_clock_drift_ms / 2)
    }

    /// True when referencable accepted vertices of `round` come from at least 2f + 1
    /// distinct authors.
    fn holds_quorum_of(&self, round: Round, now: TimestampMs) -> bool {
        let mut authors: Vec<ValidatorIndex> = self
            .dag
            .round_vertices(round)
            .iter()
            .filter(|v| self.referencable(v, now))
            .map(|v| v.vertex().author)
            .collect();
        authors.dedup();
        authors.len() >= self.config.committee.quorum()
    }

    /// The highest round at or above `lowest` whose accepted vertices come from a quorum,
    /// if any. A replica whose own chain fell behind (it was cut off, crashed or synced
    /// by certificates while the others built on) has no quorum at its own next round's
    /// predecessor, possibly ever again: those rounds may be below the GC round. It
    /// builds above the highest round a quorum reached instead (Narwhal's rule: a round
    /// is entered once 2f + 1 vertices of the round below are held). At least f + 1
    /// honest validators signed that round, so a Byzantine minority cannot pull us up.
    fn highest_quorum_round_from(&self, lowest: Round, now: TimestampMs) -> Option<Round> {
        if self.config.mutant == Some(Mutant::NoRoundJump) {
            return None;
        }
        let mut round = self.dag.highest_round()?;
        while round >= lowest {
            if self.holds_quorum_of(round, now) {
                return Some(round);
            }
            round = round.previous()?;
        }
        None
    }

    pub(super) fn wants_to_propose(&self) -> bool {
        self.may_vote(self.view, self.next_proposal)
            && self.view_active
            && self.primary(self.view) == self.config.index
            && self.in_window(self.next_proposal)
            && !self.nothing_to_anchor()
    }

    /// True when no accepted vertex outside the finalized set carries transactions: the
    /// primary then has nothing to anchor.
    pub(super) fn nothing_to_anchor(&self) -> bool {
        // Idle rounds still need an anchor now and then, or the GC round never moves and
        // an idle DAG grows without bound.
        let own_round = self.own_latest.as_ref().map_or(0, |v| v.vertex().round.0);
        let gc_lag = own_round.saturating_sub(self.finalizer.gc_round().0);
        if gc_lag > self.config.gc_depth + self.config.gc_depth / 2 {
            return false;
        }
        let gc = self.finalizer.gc_round();
        let old_rule =
            self.config.mutant == Some(Mutant::LatestVertexOnly) || self.config.legacy_replay;
        let carried_anywhere = !old_rule
            && self
                .unanchored
                .iter()
                .any(|(round, hash)| *round >= gc && !self.finalizer.is_finalized(hash));
        self.mempool.is_empty()
            && !carried_anywhere
            && self.latest_by_author.iter().flatten().all(|p| {
                self.finalizer.is_finalized(&p.hash)
                    || p.round < self.finalizer.gc_round()
                    || self
                        .dag
                        .get(&p.hash)
                        .is_none_or(|v| v.vertex().transactions.is_empty())
            })
    }

    pub(super) fn build_vertex(
        &mut self,
        round: Round,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let index = self.config.index;
        let mut parents = Vec::new();
        if let Some(previous) = round.previous() {
            // Our own link: our vertex of the previous round if the DAG holds one (after a
            // wipe, peers may relay back one we signed before it, and the quorum count
            // above included it), otherwise our latest vertex.
            let own_below = self
                .dag
                .round_vertices(previous)
                .into_iter()
                .find(|v| v.vertex().author == index)
                .map(SignedVertex::as_parent);
            let own_latest = self.own_latest.as_ref().map(SignedVertex::as_parent);
            if let Some(own) = own_below.or(own_latest) {
                parents.push(own);
            }
            let lowest =
                Round(round.0.saturating_sub(self.config.gc_depth)).max(self.dag.gc_round());
            let mut in_previous: BTreeMap<ValidatorIndex, Vec<ParentRef>> = BTreeMap::new();
            for vertex in self.dag.round_vertices(previous) {
                if !self.referencable(vertex, now) {
                    continue;
                }
                in_previous
                    .entry(vertex.vertex().author)
                    .or_default()
                    .push(vertex.as_parent());
            }
            // Previous-round authors we can leave out and still reach a quorum.
            let mut spare = in_previous
                .len()
                .saturating_sub(self.config.committee.quorum());
            for author in self.config.committee.indices().filter(|a| *a != index) {
                // The author's vertex of the previous round; otherwise its latest older
                // vertex that our history does not reach yet (a slow validator). A banned
                // author is referenced only when the quorum needs it.
                if self.banned(author) {
                    if !in_previous.contains_key(&author) {
                        continue;
                    }
                    if spare > 0 {
                        spare -= 1;
                        continue;
                    }
                }
                let older = self.latest_by_author[author.as_usize()].filter(|latest| {
                    latest.round < previous
                        && latest.round >= lowest
                        && !self.own_history.contains(&latest.hash)
                        && self
                            .dag
                            .get(&latest.hash)
                            .is_some_and(|v| self.referencable(v, now))
                });
                match in_previous.get(&author) {
                    Some(versions) if self.config.mutant == Some(Mutant::CountParentVertices) => {
                        parents.extend(versions.iter().copied());
                    }
                    Some(versions) => parents.extend(versions.first().copied()),
                    None => parents.extend(older),
                }
            }
        }
        let created_at = parents
            .iter()
            .filter_map(|p| self.dag.get(&p.hash))
            .map(|v| v.vertex().created_at)
            .fold(now, TimestampMs::max);
        // Propose only with something to order: empty anchors would keep every replica
        // building empty rounds forever.
        let proposal = (self.view_active
            && self.primary(self.view) == index
            && self.in_window(self.next_proposal)
            && round.0 > 0
            && self.may_vote(self.view, self.next_proposal)
            && !self.nothing_to_anchor())
        .then_some(Proposal {
            view: self.view,
            sequence: self.next_proposal,
        });
        let mut transactions: Vec<Transaction> = Vec::new();
        while transactions.len() < self.config.max_batch_transactions {
            let Some(transaction) = self.mempool.pop_front() else {
                break;
            };
            // Expired while it waited: it could never be finalized.
            if transaction.expires_at() < now {
                self.mempool_ids.remove(&transaction.id());
                self.drops.expired_transactions += 1;
                continue;
            }
            transactions.push(transaction);
        }
        let vertex = Vertex {
            chain_id: self.config.committee.chain_id().clone(),
            epoch: self.config.committee.epoch(),
            author: index,
            round,
            created_at,
            proposal,
            parents,
            transactions,
        };
        let signed = vertex.signed_by(|context, bytes| self.signer.sign(context, bytes));
        if self.config.mutant.is_none() {
            if let Err(error) = signed
                .vertex()
                .check_structure(&self.config.committee, &self.config.limits)
            {
                debug_assert!(false, "built an invalid vertex: {error}");
                return;
            }
        }
        // The primary's pre-prepare is its vertex: the log entry and the Q claim are made
        // here and persisted in the same batch as the vertex, before it leaves (finding
        // 4: a primary killed in between re-proposed the sequence after a restart).
        let durable_claim =
            proposal.is_some() && self.config.mutant != Some(Mutant::ProposalNotDurable);
        if let Some(proposal) = proposal {
            self.next_proposal = self.next_proposal.next();
            if durable_claim {
                self.log.insert(
                    proposal.sequence,
                    Slot {
                        source: Source::Primary { round },
                        digest: Some(signed.hash()),
                        state: SlotState::PrePrepared,
                    },
                );
                self.add_claim(proposal.sequence, Some(signed.hash()), false);
            }
        }
        if !signed.vertex().transactions.is_empty() {
            self.own_pending.insert(
                round,
                OwnPending {
                    hash: signed.hash(),
                    created_at: now,
                    transactions: signed.vertex().transactions.clone(),
                },
            );
        }
        // Persist before send: the own vertex is durable before anyone can see it, so a
        // restarted replica never signs a second vertex for this round.
        let mut batch = StoreBatch::new();
        batch.put_vertex(signed.clone());
        batch.put_replica_state(keys::OWN_LATEST, signed.hash().as_bytes());
        if durable_claim {
            batch.put_replica_state(keys::CLAIMS, &self.encode_claims());
        }
        if self.config.mutant == Some(Mutant::NoDurableOwnVertex) {
            // The mutant writes each own vertex only when it builds the next one.
            if let Some(previous) = self.deferred_own.replace(batch) {
                outputs.push(Output::Persist(previous));
            }
        } else {
            outputs.push(Output::Persist(batch));
        }
        outputs.push(Output::Broadcast(Message::Vertex(signed.clone())));
        self.add_to_own_history(&signed);
        self.own_latest = Some(signed.clone());
        self.idle_fired = false;
        self.insert_vertex(index, signed, false, now, outputs);
    }

    pub(super) fn add_to_own_history(&mut self, vertex: &SignedVertex) {
        let mut stack = vec![vertex.hash()];
        while let Some(hash) = stack.pop() {
            if !self.own_history.insert(hash) {
                continue;
            }
            if let Some(v) = self.dag.get(&hash) {
                stack.extend(v.vertex().parents.iter().map(|p| p.hash));
            }
        }
        let gc = self.dag.gc_round();
        if gc.0 > 0 {
            let dag = &self.dag;
            self.own_history.retain(|h| {
                dag.get(h).is_some_and(|v| v.vertex().round >= gc) || *h == vertex.hash()
            });
        }
    }
}
