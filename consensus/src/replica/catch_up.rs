//! Catch-up and retransmission (ARCHITECTURE.md, "Sync" and the liveness rules): the
//! periodic re-send, fetches of missing vertices, `Status` answered with commit
//! certificates, and `Decided` certificates taken from peers.

use super::*;

/// Most hashes one retransmission fetches (the network allows 1,024 per request).
const MAX_RETRANSMIT_FETCH: usize = 256;

impl Replica {
    pub(super) fn start(&mut self, now: TimestampMs, outputs: &mut Vec<Output>) {
        self.view_started = now;
        if self.learning() && self.config.mutant != Some(Mutant::LearningNotDurable) {
            // First of all outputs: learning survives a crash until the floor is saved.
            let mut batch = StoreBatch::new();
            batch.put_replica_state(keys::LEARNING, &[1]);
            outputs.push(Output::Persist(batch));
        }
        if self.learning() {
            // A fresh nonce for this start: only statuses sent after it count (§8).
            let mut seed = Vec::with_capacity(16);
            seed.extend_from_slice(&self.config.boot_nonce.to_le_bytes());
            seed.extend_from_slice(&now.0.to_le_bytes());
            let digest = Digest::of(&seed);
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest.as_bytes()[..8]);
            self.learning_nonce = u64::from_le_bytes(first);
        }
        outputs.push(Output::SetTimer {
            timer: Timer::Tick,
            after_ms: self.config.tick_interval_ms,
        });
        self.retransmit(now, outputs);
        // Log entries a restart rebuilt from the NewView (null ones, or anchors already
        // held) are prepared now rather than after a view-change timeout.
        let waiting: Vec<Sequence> = self.log.keys().copied().collect();
        for sequence in waiting {
            self.prepare(sequence, now, outputs);
        }
    }

    /// Re-sends what peers may have lost, asks for what we miss.
    pub(super) fn retransmit(&mut self, now: TimestampMs, outputs: &mut Vec<Output>) {
        self.last_retransmit = now;
        self.forget_expired_records(now, outputs);
        if let Some(own) = &self.own_latest {
            outputs.push(Output::Broadcast(Message::Vertex(own.clone())));
        }
        if self.view_active {
            for vote in self.own_votes.values() {
                outputs.push(Output::Broadcast(Message::Vote(vote.clone())));
            }
        } else if let Some(view_change) = &self.own_view_change {
            outputs.push(Output::Broadcast(view_change.clone()));
        }
        for checkpoint in self.own_checkpoints.values() {
            outputs.push(Output::Broadcast(Message::Checkpoint(checkpoint.clone())));
        }
        outputs.push(Output::Broadcast(
            self.status(self.finalizer.last_sequence()),
        ));
        if self.learning() {
            outputs.push(Output::Broadcast(Message::StatusRequest {
                nonce: self.learning_nonce,
            }));
        }
        // Anchors consensus designated and we lack: fetched again, and wanted again (so
        // they are taken even if their author sent us another version of the slot,
        // however many wishes came since the first). The view's primary vouches for its
        // log's anchors, a commit certificate for committed ones.
        let mut wishes = Vec::new();
        let primary = Sponsor::Validator(self.primary(self.view));
        for slot in self.log.values() {
            if let Some(anchor) = slot.digest.filter(|a| !self.dag.contains(a)) {
                wishes.push((anchor, primary));
            }
        }
        for (sequence, anchor) in &self.committed {
            if let Some(anchor) = anchor.filter(|a| !self.dag.contains(a)) {
                if *sequence <= self.finalizer.last_sequence().next() {
                    wishes.push((anchor, Sponsor::Certified));
                }
            }
        }
        if !Mutant::stale_wants(&self.config) {
            let limit = self.wanted_limit();
            for (anchor, sponsor) in &wishes {
                self.dag.want(*anchor, *sponsor, limit);
            }
        }
        let anchors: Vec<Digest> = wishes.into_iter().map(|(anchor, _)| anchor).collect();
        let missing = if Mutant::fetch_by_hash_order(&self.config) {
            let mut missing = self.dag.missing();
            missing.extend(anchors);
            missing.sort_unstable();
            missing.dedup();
            missing.truncate(MAX_RETRANSMIT_FETCH);
            missing
        } else {
            self.retransmit_fetch_list(anchors)
        };
        if !missing.is_empty() {
            let from = self.next_peer();
            outputs.push(Output::Fetch {
                from,
                hashes: missing,
            });
        }
        // Each author of a waiting vertex is asked for the parents that vertex names:
        // an honest one holds them. The rotation alone can lock onto the window's cycle,
        // so that a parent is only ever asked of Byzantine peers (found by the attack
        // review of the fetch list: n = 10 with 850 made-up parents in view).
        if !Mutant::fetch_by_rotation_only(&self.config) {
            let own = self.config.index;
            for (author, hashes) in self.dag.missing_by_child_author(MAX_RETRANSMIT_FETCH) {
                if author != own && !hashes.is_empty() {
                    outputs.push(Output::Fetch {
                        from: author,
                        hashes,
                    });
                }
            }
        }
    }

    /// What one retransmission fetches: every anchor consensus designated and we lack
    /// (at most W + 1, never cut), then missing parents, a window of them that moves on
    /// with each retransmission. Found by the attack review of the wanted-set fix: the
    /// whole list sorted by hash and cut to 256 let one Byzantine validator fill every
    /// fetch with parents nobody holds (the waiting buffer takes about `gc_depth` of its
    /// vertices, each naming n made-up parents that sort low), so a committed anchor
    /// whose first fetch went to it was never asked for again.
    fn retransmit_fetch_list(&mut self, mut anchors: Vec<Digest>) -> Vec<Digest> {
        anchors.sort_unstable();
        anchors.dedup();
        let room = MAX_RETRANSMIT_FETCH.saturating_sub(anchors.len());
        let mut parents: Vec<Digest> = self
            .dag
            .missing()
            .into_iter()
            .filter(|hash| anchors.binary_search(hash).is_err())
            .collect();
        if parents.len() > room {
            let start = self.missing_rotation % parents.len();
            parents.rotate_left(start);
            parents.truncate(room);
            self.missing_rotation = start.saturating_add(room);
        } else {
            self.missing_rotation = 0;
        }
        anchors.extend(parents);
        anchors
    }

    /// Anchors we may be fetching at once: committed or re-proposed sequences in flight.
    pub(super) fn wanted_limit(&self) -> usize {
        usize::try_from(4 * self.config.window).unwrap_or(usize::MAX)
    }

    /// Peers in turn, for fetches that may have failed.
    pub(super) fn next_peer(&mut self) -> ValidatorIndex {
        let n = self.config.committee.size();
        self.fetch_rotation = (self.fetch_rotation + 1) % n;
        let mut peer = self.fetch_rotation;
        if peer == self.config.index.as_usize() {
            peer = (peer + 1) % n;
        }
        ValidatorIndex(u16::try_from(peer).unwrap_or(0))
    }

    /// A peer tells where it is: help it catch up if we are ahead.
    /// Our `Status`: view, the given executed sequence, and our own latest round.
    pub(super) fn status(&self, executed: Sequence) -> Message {
        Message::Status {
            view: self.view,
            executed,
            round: self.own_latest.as_ref().map(|v| v.vertex().round),
            answers: None,
        }
    }

    /// A learning peer asks where we are: our status, echoing its nonce. At most one
    /// answer per peer per half retransmission interval unless the nonce is new. A
    /// replica that is learning itself knows nothing worth reporting and stays silent.
    pub(super) fn on_status_request(
        &mut self,
        from: ValidatorIndex,
        nonce: u64,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        if from == self.config.index || self.learning() {
            return;
        }
        let Some(slot) = self.request_replies.get_mut(from.as_usize()) else {
            return;
        };
        if nonce == slot.1 && now.0 < slot.0 .0 + self.config.retransmit_interval_ms / 2 {
            return;
        }
        *slot = (now, nonce);
        // A replica that learned a floor itself (its store was wiped earlier) may hold
        // less than it signed before that wipe: it answers with at least what its floor
        // bounds (a view change up to floor view + 1, a vertex up to floor round + 1,
        // an execution up to E), so it never lowers the asker's floor. Upward only
        // delays the asker. Found by review: a reporter wiped earlier answered view 0,
        // and the asker then prepared a second digest in view 1.
        let mut view = self.view;
        let mut executed = self.finalizer.last_sequence();
        let mut round = self.own_latest.as_ref().map(|v| v.vertex().round);
        if let Some(floor) = &self.floor {
            view = view.max(View(floor.view.0.saturating_add(1)));
            executed = executed.max(floor.executed);
            if let Some(floor_round) = floor.round {
                let bound = Round(floor_round.0.saturating_add(1));
                round = Some(round.map_or(bound, |r| r.max(bound)));
            }
        }
        outputs.push(Output::Send {
            to: from,
            message: Message::Status {
                view,
                executed,
                round,
                answers: Some(nonce),
            },
        });
    }

    pub(super) fn on_status(
        &mut self,
        from: ValidatorIndex,
        view: View,
        executed: Sequence,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        if from == self.config.index {
            return;
        }
        // At most one answer per peer per retransmission interval unless it moved on: a
        // replayed status must not make us resend certificates at its rate.
        let Some(slot) = self.status_replies.get_mut(from.as_usize()) else {
            return;
        };
        if executed <= slot.1 && now.0 < slot.0 .0 + self.config.retransmit_interval_ms / 2 {
            return;
        }
        *slot = (now, executed);
        let mut sent = 0;
        let mut next = executed.next();
        while next <= self.finalizer.last_sequence() && sent < 2 * self.config.window {
            if let Some(certificate) = self.decided.get(&next) {
                outputs.push(Output::Send {
                    to: from,
                    message: Message::Decided(certificate.clone()),
                });
                sent += 1;
            }
            next = next.next();
        }
        if view < self.view && self.view_active {
            if let Some(new_view) = &self.new_view {
                outputs.push(Output::Send {
                    to: from,
                    message: new_view.clone(),
                });
            }
        }
    }

    /// A commit certificate from a peer: 2f + 1 distinct commit votes for one
    /// (view, sequence, digest) prove the sequence committed, whatever our view.
    pub(super) fn on_decided(
        &mut self,
        from: ValidatorIndex,
        votes: Vec<SignedVote>,
        outputs: &mut Vec<Output>,
    ) {
        let Some(first) = votes.first().map(|v| v.vote().clone()) else {
            return;
        };
        let sequence = first.sequence;
        let executed = self.finalizer.last_sequence();
        if sequence <= executed
            || sequence.0 > executed.0 + 2 * self.config.window
            || self.committed.contains_key(&sequence)
        {
            return;
        }
        let voters: BTreeSet<ValidatorIndex> = votes
            .iter()
            .filter(|v| {
                let v = v.vote();
                v.phase == Phase::Commit
                    && v.view == first.view
                    && v.sequence == sequence
                    && v.digest == first.digest
                    && self.config.committee.contains(v.voter)
            })
            .map(|v| v.vote().voter)
            .collect();
        if voters.len() < self.config.committee.quorum() || voters.len() != votes.len() {
            self.drops.invalid_view_messages += 1;
            return;
        }
        let mut certificate = votes;
        certificate.sort_by_key(|v| v.vote().voter);
        self.mark_committed(sequence, first.digest, certificate, outputs);
        // The last certificate of a batch: ask the same peer for the next batch at once,
        // so catching up outpaces the others' progress.
        if sequence.0 == executed.0 + 2 * self.config.window {
            outputs.push(Output::Send {
                to: from,
                message: self.status(sequence),
            });
        }
        if let Some(anchor) = first.digest.filter(|d| !self.dag.contains(d)) {
            outputs.push(Output::Fetch {
                from,
                hashes: vec![anchor],
            });
        }
    }
}
