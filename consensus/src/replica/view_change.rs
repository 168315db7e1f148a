//! View change (ARCHITECTURE.md, "View change"): timers, `ViewChange`, the new primary's
//! `NewView`, and entering a view.

use super::*;
use crate::view_change::Decision;

impl Replica {
    /// True while something should be making progress: the view-change timer runs.
    pub(super) fn waiting(&self) -> bool {
        if !self.view_active {
            // A replica that announced a later view has given up on ours too: it counts
            // (otherwise a lost view change could leave us waiting without a timer).
            let joined = self
                .view_changes
                .values()
                .filter(|(vc, _)| vc.body().view >= self.view)
                .count();
            return joined >= self.config.committee.quorum();
        }
        !self.log.is_empty() || !self.committed.is_empty() || !self.nothing_to_anchor()
    }

    pub(super) fn check_deadlines(&mut self, now: TimestampMs, outputs: &mut Vec<Output>) {
        if !self.waiting() {
            self.progress_deadline = None;
        } else {
            match self.progress_deadline {
                None => self.progress_deadline = Some(TimestampMs(now.0 + self.timeout_ms)),
                Some(deadline) if now >= deadline => {
                    self.timeout_ms =
                        (self.timeout_ms * 2).min(self.config.max_view_change_timeout_ms);
                    self.start_view_change(self.view.next(), now, outputs);
                    return;
                }
                Some(_) => {}
            }
        }
        // A primary that leaves our own transactions out is replaced too.
        let oldest = self.own_pending.values().map(|o| o.created_at).min();
        if let Some(created) = oldest {
            let since = created.max(self.view_started);
            if self.view_active && now.0 >= since.0 + self.config.transaction_timeout_ms {
                self.start_view_change(self.view.next(), now, outputs);
            }
        }
    }

    /// Moves to `target` (never backwards): persist, then announce.
    pub(super) fn start_view_change(
        &mut self,
        target: View,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        if target <= self.view {
            return;
        }
        self.view = target;
        self.view_active = false;
        self.view_started = now;
        self.progress_deadline = None;
        self.log.clear();
        self.last_executed_anchor = None;
        self.own_votes.clear();
        self.new_view = None;
        self.prepares.release_views_below(target);
        self.commits.release_views_below(target);
        let stable = self.stable.sequence;
        let top = stable
            .checked_add(self.config.window)
            .unwrap_or(Sequence(u64::MAX));
        let view_change = ViewChange {
            chain_id: self.config.committee.chain_id().clone(),
            epoch: self.config.committee.epoch(),
            view: target,
            stable_sequence: stable,
            stable_digest: self.stable.state_digest,
            // Claims in (h, h + W] only (what we prepared always is: see on_pre_prepare).
            prepared: self
                .prepared_claims
                .range(stable.next()..=top)
                .map(|(_, c)| *c)
                .collect(),
            pre_prepared: self
                .pre_prepared_claims
                .range(stable.next()..=top)
                .flat_map(|(_, c)| c.iter().copied())
                .collect(),
            replica: self.config.index,
        };
        if !self.may_announce(target) {
            // A replica that lost its signing record follows the view without signing a
            // view change it may already have signed (see durable::SigningFloor).
            let mut batch = StoreBatch::new();
            batch.put_replica_state(keys::VIEW, &encode_view(target, false));
            outputs.push(Output::Persist(batch));
            self.view_changes
                .retain(|_, (vc, _)| vc.body().view >= target);
            self.try_new_view(now, outputs);
            return;
        }
        let signed = Signed::sign_with(view_change, &self.signer);
        let message = Message::ViewChange {
            view_change: signed.clone(),
            certificate: self.stable.certificate.clone(),
        };
        let mut batch = StoreBatch::new();
        batch.put_replica_state(keys::VIEW, &encode_view(target, false));
        batch.put_replica_state(keys::VIEW_CHANGE, &message.to_wire());
        outputs.push(Output::Persist(batch));
        outputs.push(Output::Broadcast(message.clone()));
        self.own_view_change = Some(message);
        self.view_changes
            .insert(self.config.index, (signed, self.stable.certificate.clone()));
        self.view_changes
            .retain(|_, (vc, _)| vc.body().view >= target);
        self.try_new_view(now, outputs);
    }

    pub(super) fn on_view_change(
        &mut self,
        from: ValidatorIndex,
        view_change: SignedViewChange,
        certificate: Vec<SignedCheckpoint>,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let body = view_change.body();
        let (view, sender) = (body.view, body.replica);
        if view < self.view || (view == self.view && self.view_active) {
            // The sender is behind: the new view that started ours brings it here (once
            // per retransmission interval, whatever the rate of stale view changes).
            let Some(slot) = self.status_replies.get_mut(from.as_usize()) else {
                return;
            };
            let due = now.0 >= slot.0 .0 + self.config.retransmit_interval_ms / 2;
            if due {
                slot.0 = now;
            }
            if due && self.view_active && from != self.config.index {
                if let Some(new_view) = &self.new_view {
                    outputs.push(Output::Send {
                        to: from,
                        message: new_view.clone(),
                    });
                }
            }
            return;
        }
        if !self.certifies(body.stable_sequence, &body.stable_digest, &certificate)
            || !self.claims_valid(body)
        {
            self.drops.invalid_view_messages += 1;
            return;
        }
        if self
            .view_changes
            .get(&sender)
            .is_some_and(|(held, _)| held.body().view >= view)
        {
            return;
        }
        self.view_changes.insert(sender, (view_change, certificate));
        // Join the smallest view that f + 1 others announce above ours.
        let mut announced: Vec<View> = self
            .view_changes
            .iter()
            .filter(|(i, (vc, _))| **i != self.config.index && vc.body().view > self.view)
            .map(|(_, (vc, _))| vc.body().view)
            .collect();
        announced.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(join) = announced.get(self.config.committee.max_faulty()) {
            self.start_view_change(*join, now, outputs);
        }
        self.try_new_view(now, outputs);
    }

    /// The window rule on a view change's claims (the UnboundedClaims mutant skips it).
    pub(super) fn claims_valid(&self, view_change: &ViewChange) -> bool {
        self.config.mutant == Some(Mutant::UnboundedClaims)
            || view_change.check_claims(self.config.window).is_ok()
    }

    /// The decision rule with this replica's W (unbounded for the UnboundedClaims mutant).
    pub(super) fn decide(&self, view_changes: &[&ViewChange]) -> Option<Decision> {
        let window =
            (self.config.mutant != Some(Mutant::UnboundedClaims)).then_some(self.config.window);
        decide(view_changes, self.config.committee.max_faulty(), window)
    }

    /// The new primary announces the view once its view changes decide every sequence.
    pub(super) fn try_new_view(&mut self, now: TimestampMs, outputs: &mut Vec<Output>) {
        if self.view_active
            || self.primary(self.view) != self.config.index
            || !self.may_lead(self.view)
        {
            return;
        }
        let chosen: Vec<&(SignedViewChange, Vec<SignedCheckpoint>)> = self
            .view_changes
            .values()
            .filter(|(vc, _)| vc.body().view == self.view)
            .collect();
        let bodies: Vec<&ViewChange> = chosen.iter().map(|(vc, _)| vc.body()).collect();
        let Some(decision) = self.decide(&bodies) else {
            return;
        };
        let certificate = chosen
            .iter()
            .find(|(vc, _)| vc.body().replica == decision.stable_from)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        let new_view = NewView {
            chain_id: self.config.committee.chain_id().clone(),
            epoch: self.config.committee.epoch(),
            view: self.view,
            primary: self.config.index,
            stable_sequence: decision.stable_sequence,
            stable_digest: decision.stable_digest,
            proposals: decision.proposals,
            view_changes: chosen.iter().map(|(vc, _)| vc.hash()).collect(),
        };
        let message = NewViewMessage {
            new_view: Signed::sign_with(new_view, &self.signer),
            view_changes: chosen.iter().map(|(vc, _)| vc.clone()).collect(),
            certificate,
        };
        let wire = Message::NewView(Box::new(message.clone()));
        if self.config.mutant == Some(Mutant::NewViewNotDurable) {
            // The old order: the NewView leaves before the view's activation is durable.
            let mut batch = StoreBatch::new();
            batch.put_replica_state(keys::NEW_VIEW, &wire.to_wire());
            outputs.push(Output::Persist(batch));
            outputs.push(Output::Broadcast(wire));
            self.enter_view(message, now, outputs);
            return;
        }
        // The NewView and the view's activation are durable together before it leaves:
        // a primary restarted after sending it finds the view active with this NewView,
        // never decides (and signs) a second one (finding 5).
        let mut outputs_after = Vec::new();
        self.enter_view(message, now, &mut outputs_after);
        let Some(Output::Persist(activation)) = outputs_after.first_mut() else {
            debug_assert!(false, "enter_view persists the view first");
            return;
        };
        let mut batch = std::mem::take(activation);
        outputs_after.remove(0);
        batch.put_replica_state(keys::NEW_VIEW, &wire.to_wire());
        outputs.push(Output::Persist(batch));
        outputs.push(Output::Broadcast(wire));
        outputs.extend(outputs_after);
    }

    pub(super) fn on_new_view(
        &mut self,
        message: NewViewMessage,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let body = message.new_view.body();
        if body.view < self.view || (body.view == self.view && self.view_active) {
            return;
        }
        if !self.new_view_checks_out(&message) {
            self.drops.invalid_view_messages += 1;
            return;
        }
        self.enter_view(message, now, outputs);
    }

    /// Recomputes the primary's decision from the view changes it names.
    pub(super) fn new_view_checks_out(&self, message: &NewViewMessage) -> bool {
        let body = message.new_view.body();
        if body.primary != self.primary(body.view)
            || message.view_changes.len() != body.view_changes.len()
        {
            return false;
        }
        let mut senders = BTreeSet::new();
        for (vc, hash) in message.view_changes.iter().zip(&body.view_changes) {
            if vc.hash() != *hash
                || vc.body().view != body.view
                || !senders.insert(vc.body().replica)
                || !self.config.committee.contains(vc.body().replica)
                || !self.claims_valid(vc.body())
            {
                return false;
            }
        }
        let bodies: Vec<&ViewChange> = message.view_changes.iter().map(|vc| vc.body()).collect();
        let Some(decision) = self.decide(&bodies) else {
            return false;
        };
        decision.stable_sequence == body.stable_sequence
            && decision.stable_digest == body.stable_digest
            && decision.proposals == body.proposals
            && self.certifies(
                body.stable_sequence,
                &body.stable_digest,
                &message.certificate,
            )
    }

    /// Starts the new view. The NewView is the pre-prepare of every sequence it decides:
    /// each goes into the log with source NewView (null ones prepared at once, anchors
    /// once their history is held); no vertex may take those sequences in this view.
    /// The view's activation and the NewView are durable in one batch, the first output,
    /// so a restart rebuilds the same log (`durable::recover`).
    pub(super) fn enter_view(
        &mut self,
        message: NewViewMessage,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let body = message.new_view.body().clone();
        self.view = body.view;
        self.view_active = true;
        self.view_started = now;
        self.progress_deadline = None;
        self.log.clear();
        self.last_executed_anchor = None;
        self.own_votes.clear();
        self.own_view_change = None;
        self.prepares.release_views_below(body.view);
        self.commits.release_views_below(body.view);
        self.view_changes
            .retain(|_, (vc, _)| vc.body().view > body.view);
        let wire = Message::NewView(Box::new(message.clone()));
        let mut batch = StoreBatch::new();
        batch.put_replica_state(keys::VIEW, &encode_view(body.view, true));
        if self.config.mutant != Some(Mutant::NewViewNotDurable) {
            batch.put_replica_state(keys::NEW_VIEW, &wire.to_wire());
        }
        outputs.push(Output::Persist(batch));
        if body.stable_sequence > self.stable.sequence {
            self.adopt_stable(
                StableCheckpoint {
                    sequence: body.stable_sequence,
                    state_digest: body.stable_digest,
                    certificate: message.certificate.clone(),
                },
                outputs,
            );
        }
        let last = body
            .proposals
            .last()
            .map_or(body.stable_sequence, |(s, _)| *s);
        self.next_proposal = last
            .max(self.finalizer.last_sequence())
            .max(self.stable.sequence)
            .next();
        self.new_view = Some(wire);
        self.install_new_view(&message, outputs);
        self.reaffirm_executed(&message, now, outputs);
        let decided: Vec<Sequence> = self.log.keys().copied().collect();
        for sequence in decided {
            self.prepare(sequence, now, outputs);
        }
        // Pre-prepares of this view that arrived before we entered it.
        self.rescan_pre_prepares(now, outputs);
    }

    /// Sequences the NewView re-proposes that we executed already (above our stable
    /// checkpoint) get no log entry, but we still take the pre-prepare in this view: a Q
    /// claim in the new view and a prepare. Otherwise a replica that had not executed
    /// them prepares them in the new view alone, its claim outranks ours from the older
    /// view, and no later decision finds f + 1 vouchers for it: every view change after
    /// that is undecidable (seed 2001844 of the crafted gate, split anchors).
    fn reaffirm_executed(
        &mut self,
        message: &NewViewMessage,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let executed = self.finalizer.last_sequence();
        let stable = self.stable.sequence;
        let reaffirmed: Vec<(Sequence, Option<Digest>)> = message
            .new_view
            .body()
            .proposals
            .iter()
            .copied()
            .filter(|(s, _)| *s > stable && *s <= executed)
            .collect();
        for (sequence, digest) in reaffirmed {
            if !self.may_vote(self.view, sequence) {
                continue;
            }
            self.add_claim(sequence, digest, false);
            if self.primary(self.view) == self.config.index {
                let mut batch = StoreBatch::new();
                batch.put_replica_state(keys::CLAIMS, &self.encode_claims());
                outputs.push(Output::Persist(batch));
                continue;
            }
            let vote = self.sign_vote(Phase::Prepare, sequence, digest);
            self.send_vote(vote, now, outputs);
            // Executed: nothing to retransmit for it.
            self.own_votes.remove(&(sequence, Phase::Prepare));
        }
    }

    /// The NewView's decisions as log entries (state AwaitingHistory: `prepare` moves
    /// them on once the anchor is held), and fetches of the anchors we lack from view-
    /// change senders that claimed them.
    pub(super) fn install_new_view(&mut self, message: &NewViewMessage, outputs: &mut Vec<Output>) {
        let body = message.new_view.body();
        for (sequence, digest) in &body.proposals {
            let (sequence, digest) = (*sequence, *digest);
            if sequence <= self.finalizer.last_sequence() || sequence <= self.stable.sequence {
                continue;
            }
            self.log.insert(
                sequence,
                Slot {
                    source: Source::NewView,
                    digest,
                    state: SlotState::AwaitingHistory,
                },
            );
            if let Some(anchor) = digest.filter(|a| !self.dag.contains(a)) {
                let primary = Sponsor::Validator(self.primary(body.view));
                self.dag.want(anchor, primary, self.wanted_limit());
                let holder = message
                    .view_changes
                    .iter()
                    .map(|vc| vc.body())
                    .find(|vc| {
                        vc.replica != self.config.index
                            && vc.pre_prepared.iter().any(|c| c.digest == Some(anchor))
                    })
                    .map(|vc| vc.replica);
                let from = holder.unwrap_or_else(|| self.next_peer());
                outputs.push(Output::Fetch {
                    from,
                    hashes: vec![anchor],
                });
            }
        }
    }
}
