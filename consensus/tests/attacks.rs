//! The attacker's review (issue 10), one deterministic test per finding: honest replicas
//! driven only through `Replica::handle` (and `Replica::recover` from the store their
//! outputs wrote), a scripted Byzantine peer crafting signed messages, and each test run
//! twice: with the rule (the attack fails) and with the rule's `Mutant` (the old code:
//! the attack succeeds), so every test is seen to fire.
//!
//! Signatures are placeholders: the replica trusts its host to verify them, and the
//! attacks here are all validly signed by the Byzantine validator's own key.

use weft_consensus::messages::{Checkpoint, Message, NewViewMessage, Phase, SignedVote, Vote};
use weft_consensus::replica::{Evidence, Input, Mutant, Output, Replica, ReplicaConfig};
use weft_consensus::view_change::{Claim, NewView, Signed, SignedViewChange, ViewChange};
use weft_consensus::Signer;
use weft_crypto::Digest;
use weft_dag::store::{MemoryStore, Store};
use weft_dag::testing::{committee, placeholder_signature, DagBuilder};
use weft_dag::{
    Committee, Epoch, Limits, Proposal, Round, Sequence, SignedVertex, TimestampMs, Transaction,
    ValidatorIndex, View,
};

fn v(i: u16) -> ValidatorIndex {
    ValidatorIndex(i)
}

/// One honest replica and the store its outputs write.
struct Node {
    replica: Replica,
    store: MemoryStore,
    config: ReplicaConfig,
    now: u64,
}

impl Node {
    fn new(index: u16, committee: &Committee, mutant: Option<Mutant>) -> Node {
        let mut config = ReplicaConfig::new(v(index), committee.clone());
        config.mutant = mutant;
        let replica = Replica::new(config.clone(), Signer::Placeholder).expect("valid config");
        let mut node = Node {
            replica,
            store: MemoryStore::new(),
            config,
            now: 1_000,
        };
        node.step(Input::Start);
        node
    }

    /// Feeds one input; carries out every output's persistence, returns the outputs.
    fn step(&mut self, input: Input) -> Vec<Output> {
        self.step_until(input, |_| false)
    }

    /// Feeds one input and "crashes" right after the first output `stop` matches: later
    /// outputs of the step, persistence included, never happen.
    fn step_until(&mut self, input: Input, stop: impl Fn(&Output) -> bool) -> Vec<Output> {
        self.now += 10;
        let outputs = self.replica.handle(TimestampMs(self.now), input);
        let mut carried = Vec::new();
        for output in outputs {
            if let Output::Persist(batch) = &output {
                self.store.write(batch.clone()).expect("memory store");
            }
            let last = stop(&output);
            carried.push(output);
            if last {
                break;
            }
        }
        carried
    }

    fn deliver(&mut self, from: u16, message: Message) -> Vec<Output> {
        self.step(Input::Message {
            from: v(from),
            message,
        })
    }

    /// Restarts from what the store holds.
    fn restart(&mut self) {
        self.replica = Replica::recover(self.config.clone(), Signer::Placeholder, &self.store)
            .expect("recovers");
        self.step(Input::Start);
    }
}

fn sent(outputs: &[Output]) -> Vec<&Message> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Broadcast(m) | Output::Send { message: m, .. } => Some(m),
            _ => None,
        })
        .collect()
}

fn votes(outputs: &[Output], phase: Phase) -> Vec<Vote> {
    sent(outputs)
        .into_iter()
        .filter_map(|m| match m {
            Message::Vote(vote) if vote.vote().phase == phase => Some(vote.vote().clone()),
            _ => None,
        })
        .collect()
}

fn view_changes_sent(outputs: &[Output]) -> Vec<View> {
    sent(outputs)
        .into_iter()
        .filter_map(|m| match m {
            Message::ViewChange { view_change, .. } => Some(view_change.body().view),
            _ => None,
        })
        .collect()
}

fn new_views_sent(outputs: &[Output]) -> Vec<NewViewMessage> {
    sent(outputs)
        .into_iter()
        .filter_map(|m| match m {
            Message::NewView(nv) => Some((**nv).clone()),
            _ => None,
        })
        .collect()
}

fn evidence_kinds(outputs: &[Output]) -> Vec<&'static str> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Evidence(e) => Some(e.kind()),
            _ => None,
        })
        .collect()
}

/// `vertex` re-signed by its author with `proposal` inside (the Byzantine primary's
/// crafted pre-prepare).
fn with_proposal(vertex: &SignedVertex, view: u64, sequence: u64) -> SignedVertex {
    let mut body = vertex.vertex().clone();
    body.proposal = Some(Proposal {
        view: View(view),
        sequence: Sequence(sequence),
    });
    SignedVertex::with_signature(body, placeholder_signature())
}

fn prepare_by(
    committee: &Committee,
    voter: u16,
    view: u64,
    sequence: u64,
    d: Digest,
) -> SignedVote {
    Vote {
        chain_id: committee.chain_id().clone(),
        epoch: committee.epoch(),
        phase: Phase::Prepare,
        view: View(view),
        sequence: Sequence(sequence),
        digest: Some(d),
        voter: v(voter),
    }
    .sign_with(&Signer::Placeholder)
}

fn view_change(
    committee: &Committee,
    replica: u16,
    view: u64,
    prepared: Vec<Claim>,
    pre_prepared: Vec<Claim>,
) -> SignedViewChange {
    Signed::sign_with(
        ViewChange {
            chain_id: committee.chain_id().clone(),
            epoch: Epoch(0),
            view: View(view),
            stable_sequence: Sequence(0),
            stable_digest: Digest::default(),
            prepared,
            pre_prepared,
            replica: v(replica),
        },
        &Signer::Placeholder,
    )
}

fn vc_message(vc: SignedViewChange) -> Message {
    Message::ViewChange {
        view_change: vc,
        certificate: Vec::new(),
    }
}

/// The NewView of `view` signed by `primary` over `view_changes`, with `proposals`
/// decided (stable checkpoint 0).
fn new_view_message(
    committee: &Committee,
    view: u64,
    primary: u16,
    view_changes: Vec<SignedViewChange>,
    proposals: Vec<(Sequence, Option<Digest>)>,
) -> Message {
    let new_view = NewView {
        chain_id: committee.chain_id().clone(),
        epoch: Epoch(0),
        view: View(view),
        primary: v(primary),
        stable_sequence: Sequence(0),
        stable_digest: Digest::default(),
        proposals,
        view_changes: view_changes.iter().map(Signed::hash).collect(),
    };
    Message::NewView(Box::new(NewViewMessage {
        new_view: Signed::sign_with(new_view, &Signer::Placeholder),
        view_changes,
        certificate: Vec::new(),
    }))
}

/// View 1's NewView (primary 1) over the view changes of 0, 1 and 2, where 0 prepared
/// and 2 pre-prepared anchor `d` at sequence 1 in view 0: it re-proposes d at sequence 1.
fn view_1_reproposing(committee: &Committee, d: Digest) -> Message {
    let claim = Claim {
        sequence: Sequence(1),
        view: View(0),
        digest: Some(d),
    };
    let vcs = vec![
        view_change(committee, 0, 1, vec![claim], vec![claim]),
        view_change(committee, 1, 1, vec![], vec![]),
        view_change(committee, 2, 1, vec![], vec![claim]),
    ];
    new_view_message(committee, 1, 1, vcs, vec![(Sequence(1), Some(d))])
}

/// Genesis vertices of the other validators (the replica under test builds its own).
fn genesis_except(builder: &mut DagBuilder, own: u16) -> Vec<SignedVertex> {
    builder
        .genesis()
        .into_iter()
        .filter(|g| g.vertex().author != v(own))
        .collect()
}

/// Finding 1 (rule: in a view entered through a NewView, the NewView is the pre-prepare
/// of every sequence it decides). Replica 3 enters view 1 through a NewView that
/// re-proposes anchor d at sequence 1, which it does not hold yet. The Byzantine primary
/// of view 1 then sends it a vertex of its own carrying (view 1, sequence 1): the replica
/// must not prepare it, and must treat it as the primary's contradiction.
fn new_view_decided_sequence_attack(mutant: Option<Mutant>) -> Vec<Output> {
    let (committee, _) = committee(4);
    let mut node = Node::new(3, &committee, mutant);
    let d = Digest::of(b"anchor committed in view 0 on replica 0 only");
    let entered = node.deliver(1, view_1_reproposing(&committee, d));
    assert_eq!(node.replica.view(), View(1), "entered view 1");
    assert!(
        entered
            .iter()
            .any(|o| matches!(o, Output::Fetch { hashes, .. } if hashes.contains(&d))),
        "fetches the re-proposed anchor"
    );
    let mut builder = DagBuilder::with_committee(committee.clone());
    let mut outputs = Vec::new();
    for vertex in genesis_except(&mut builder, 3) {
        outputs.extend(node.deliver(vertex.vertex().author.0, Message::Vertex(vertex)));
    }
    let own = builder.vertex(v(1), Round(1), &[v(0), v(1), v(2)], 0);
    let fake = with_proposal(&own, 1, 1);
    outputs.extend(node.deliver(1, Message::Vertex(fake)));
    outputs
}

#[test]
fn a_primary_vertex_cannot_take_a_sequence_the_new_view_decided() {
    let outputs = new_view_decided_sequence_attack(None);
    let prepares = votes(&outputs, Phase::Prepare);
    assert!(
        prepares.iter().all(|p| p.sequence != Sequence(1)),
        "prepared the Byzantine anchor over the NewView's: {prepares:?}"
    );
    assert!(evidence_kinds(&outputs).contains(&"pre_prepare"));
    assert_eq!(view_changes_sent(&outputs), vec![View(2)]);
    // The old rule (the mutant) prepares it: the first step of the fork.
    let outputs = new_view_decided_sequence_attack(Some(Mutant::PrePrepareOverNewView));
    assert!(votes(&outputs, Phase::Prepare)
        .iter()
        .any(|p| p.sequence == Sequence(1) && p.view == View(1)));
}

/// Found by the simulator after the fixes (seed 10,001,024; rule O3: a sequence the
/// view's NewView decided is never taken by a primary's vertex, even when it lies at or
/// below the stable checkpoint and has no log entry). Replica 3 enters view 1 through
/// a NewView that re-proposes anchor d at sequence 1, which it does not hold. Before it
/// executes anything, 2f + 1 peers' checkpoints at sequence 4 make its stable checkpoint
/// 4, and it restarts (recovery rebuilds the log above 4 only). The Byzantine primary of view 1 then
/// sends it an anchor of its own for (view 1, sequence 1): sequence 1 is fixed by the
/// checkpoint certificate, and the replica must not pre-prepare it.
fn below_stable_attack(mutant: Option<Mutant>) -> Vec<Output> {
    let (committee, _) = committee(4);
    let mut node = Node::new(3, &committee, mutant);
    let d = Digest::of(b"anchor committed in view 0");
    node.deliver(1, view_1_reproposing(&committee, d));
    assert_eq!(node.replica.view(), View(1), "entered view 1");
    let state = Digest::of(b"state at sequence 4");
    for peer in [0, 1, 2] {
        node.deliver(peer, checkpoint_by(&committee, peer, 4, state));
    }
    assert_eq!(node.replica.stable_checkpoint().sequence, Sequence(4));
    assert_eq!(node.replica.last_executed(), Sequence(0));
    // It restarts: recovery installs the NewView above the stable checkpoint only, so
    // sequence 1 has no log entry left.
    node.restart();
    let mut builder = DagBuilder::with_committee(committee.clone());
    let mut outputs = Vec::new();
    for vertex in genesis_except(&mut builder, 3) {
        outputs.extend(node.deliver(vertex.vertex().author.0, Message::Vertex(vertex)));
    }
    let own = builder.vertex(v(1), Round(1), &[v(0), v(1), v(2)], 0);
    outputs.extend(node.deliver(1, Message::Vertex(with_proposal(&own, 1, 1))));
    outputs
}

#[test]
fn a_restarted_replica_never_pre_prepares_at_or_below_its_stable_checkpoint() {
    let outputs = below_stable_attack(None);
    assert!(
        votes(&outputs, Phase::Prepare)
            .iter()
            .all(|p| p.sequence != Sequence(1)),
        "prepared sequence 1 below the stable checkpoint"
    );
    // Without the check (the log entry is gone): it prepares the Byzantine anchor
    // against the NewView's decision.
    let outputs = below_stable_attack(Some(Mutant::PrePrepareBelowStable));
    assert!(votes(&outputs, Phase::Prepare)
        .iter()
        .any(|p| p.sequence == Sequence(1) && p.view == View(1)));
}

/// Finding 2 (rule: claims outside (h, h + W] make a view change invalid; the decision
/// never passes h + W). The new primary of view 1 receives a Byzantine view change with
/// a claim at sequence 5,000 before the honest ones: its NewView must stay within W
/// proposals and decode on the wire.
fn far_claim_attack(mutant: Option<Mutant>) -> (Replica, Vec<Output>) {
    let (committee, _) = committee(4);
    let mut node = Node::new(1, &committee, mutant);
    let far = Claim {
        sequence: Sequence(5_000),
        view: View(0),
        digest: Some(Digest::of(b"far")),
    };
    let mut outputs = node.deliver(
        0,
        vc_message(view_change(&committee, 0, 1, vec![far], vec![far])),
    );
    outputs.extend(node.deliver(2, vc_message(view_change(&committee, 2, 1, vec![], vec![]))));
    outputs.extend(node.deliver(3, vc_message(view_change(&committee, 3, 1, vec![], vec![]))));
    (node.replica, outputs)
}

#[test]
fn a_far_away_view_change_claim_is_refused_and_the_new_view_stays_small() {
    let (replica, outputs) = far_claim_attack(None);
    let new_views = new_views_sent(&outputs);
    assert_eq!(new_views.len(), 1, "the new primary announced view 1");
    let proposals = &new_views[0].new_view.body().proposals;
    assert!(proposals.len() <= 8, "{} proposals", proposals.len());
    let wire = Message::NewView(Box::new(new_views[0].clone())).to_wire();
    assert!(Message::from_wire(&wire, &Limits::default()).is_ok());
    assert!(replica.drops().invalid_view_messages >= 1);
    assert!(replica.view_active());
    // The old rule: 5,000 null proposals, a NewView no receiver can decode.
    let (_, outputs) = far_claim_attack(Some(Mutant::UnboundedClaims));
    let new_views = new_views_sent(&outputs);
    assert_eq!(new_views[0].new_view.body().proposals.len(), 5_000);
    let wire = Message::NewView(Box::new(new_views[0].clone())).to_wire();
    assert!(Message::from_wire(&wire, &Limits::default()).is_err());
}

#[test]
fn view_change_claims_outside_the_window_are_invalid() {
    let (committee, _) = committee(4);
    let claim = |sequence: u64, view: u64| Claim {
        sequence: Sequence(sequence),
        view: View(view),
        digest: Some(Digest::of(&sequence.to_le_bytes())),
    };
    let check = |prepared: Vec<Claim>, pre_prepared: Vec<Claim>| {
        view_change(&committee, 0, 3, prepared, pre_prepared)
            .body()
            .check_claims(8)
    };
    assert!(check(vec![claim(1, 2), claim(8, 0)], vec![claim(8, 0)]).is_ok());
    assert!(check(vec![claim(9, 0)], vec![]).is_err(), "above h + W");
    assert!(check(vec![], vec![claim(0, 0)]).is_err(), "at h");
    assert!(check(vec![claim(u64::MAX, 0)], vec![]).is_err());
    assert!(
        check(vec![claim(2, 3)], vec![]).is_err(),
        "claim from the new view"
    );
    assert!(
        check(vec![claim(2, 0), claim(2, 1)], vec![]).is_err(),
        "two P for one sequence"
    );
    assert!(check(vec![], vec![claim(2, 0), claim(2, 1), claim(2, 2)]).is_err());
}

/// Finding 3, first half (rule: the primary of view v never counts toward the 2f
/// prepares of view v). The Byzantine primary sends replica 3 anchor Y and its own
/// prepare for Y: with only the replica's own prepare and the primary's, Y must not be
/// prepared (no commit), and the primary's prepare is evidence.
fn primary_prepare_attack(mutant: Option<Mutant>) -> Vec<Output> {
    let (committee, _) = committee(4);
    let mut node = Node::new(3, &committee, mutant);
    let mut builder = DagBuilder::with_committee(committee.clone());
    for vertex in genesis_except(&mut builder, 3) {
        node.deliver(vertex.vertex().author.0, Message::Vertex(vertex));
    }
    let y = with_proposal(
        &builder.vertex(v(0), Round(1), &[v(0), v(1), v(2)], 0),
        0,
        1,
    );
    let mut outputs = node.deliver(0, Message::Vertex(y.clone()));
    assert!(
        votes(&outputs, Phase::Prepare)
            .iter()
            .any(|p| p.digest == Some(y.hash())),
        "an honest replica prepares the first pre-prepare it sees"
    );
    outputs.extend(node.deliver(0, Message::Vote(prepare_by(&committee, 0, 0, 1, y.hash()))));
    outputs
}

#[test]
fn the_primary_prepare_never_counts() {
    let outputs = primary_prepare_attack(None);
    assert!(
        votes(&outputs, Phase::Commit).is_empty(),
        "prepared with the primary's vote"
    );
    assert!(evidence_kinds(&outputs).contains(&"primary_prepare"));
    let outputs = primary_prepare_attack(Some(Mutant::CountPrimaryPrepare));
    assert_eq!(votes(&outputs, Phase::Commit).len(), 1);
}

/// Finding 3, second half (rules: two pre-prepares for one (view, sequence) are primary
/// equivocation; anchor rounds strictly increase within a view). Replica 3 holds anchor
/// Y (round 1) for (0, 1); the primary's round-2 vertex X for the same (0, 1), or a
/// round-2 anchor for sequence 2 after a round-1 anchor for sequence 3, must be evidence
/// and a view change, not silently ignored.
fn second_pre_prepare_attack(mutant: Option<Mutant>, inverted: bool) -> Vec<Output> {
    let (committee, _) = committee(4);
    let mut node = Node::new(3, &committee, mutant);
    let mut builder = DagBuilder::with_committee(committee.clone());
    for vertex in genesis_except(&mut builder, 3) {
        node.deliver(vertex.vertex().author.0, Message::Vertex(vertex));
    }
    let first_sequence = if inverted { 3 } else { 1 };
    let y = with_proposal(
        &builder.vertex(v(0), Round(1), &[v(0), v(1), v(2)], 0),
        0,
        first_sequence,
    );
    node.deliver(0, Message::Vertex(y.clone()));
    // The others' round-1 vertices, so the primary's round-2 vertex has its parents.
    for author in [1, 2] {
        let vertex = builder.vertex(v(author), Round(1), &[v(0), v(1), v(2)], 0);
        node.deliver(author, Message::Vertex(vertex));
    }
    let x_body = builder.vertex(v(0), Round(2), &[v(1), v(2)], 0);
    let mut body = x_body.vertex().clone();
    body.parents[0] = y.as_parent();
    let x = SignedVertex::with_signature(body, placeholder_signature());
    let x = with_proposal(&x, 0, if inverted { 2 } else { 1 });
    node.deliver(0, Message::Vertex(x))
}

#[test]
fn two_pre_prepares_for_one_sequence_are_evidence_and_a_view_change() {
    let outputs = second_pre_prepare_attack(None, false);
    assert!(
        evidence_kinds(&outputs).contains(&"pre_prepare"),
        "{outputs:?}"
    );
    assert_eq!(view_changes_sent(&outputs), vec![View(1)]);
    let outputs = second_pre_prepare_attack(Some(Mutant::CountPrimaryPrepare), false);
    assert!(evidence_kinds(&outputs).is_empty());
    assert!(view_changes_sent(&outputs).is_empty());
}

#[test]
fn anchor_rounds_must_increase_with_the_sequence_in_a_view() {
    let outputs = second_pre_prepare_attack(None, true);
    assert!(evidence_kinds(&outputs).contains(&"pre_prepare"));
    assert_eq!(view_changes_sent(&outputs), vec![View(1)]);
    assert!(votes(&outputs, Phase::Prepare).is_empty());
    let outputs = second_pre_prepare_attack(Some(Mutant::CountPrimaryPrepare), true);
    assert!(votes(&outputs, Phase::Prepare)
        .iter()
        .any(|p| p.sequence == Sequence(2)));
}

/// Finding 4 (rule: the primary's (v, s, d) is durable with the anchor that carries it,
/// and after a restart it proposes only above everything it proposed in the view). The
/// honest primary 0 is killed right after its anchor for sequence 1 leaves; restarted
/// from its store, its next anchor must not carry sequence 1 again.
fn primary_restart(mutant: Option<Mutant>) -> Vec<Proposal> {
    let (committee, _) = committee(4);
    let mut node = Node::new(0, &committee, mutant);
    let own_genesis: Vec<SignedVertex> = node
        .store
        .replica_state(b"own/latest")
        .ok()
        .flatten()
        .and_then(|h| {
            let hash = Digest::from_bytes(<[u8; 32]>::try_from(h.as_slice()).ok()?);
            node.store.vertex(&hash).ok().flatten()
        })
        .into_iter()
        .collect();
    assert_eq!(own_genesis.len(), 1, "round 0 built on start");
    let mut builder = DagBuilder::with_committee(committee.clone());
    let genesis = genesis_except(&mut builder, 0);
    node.step(Input::Transactions(vec![Transaction::new(
        b"first".to_vec(),
    )]));
    let mut proposals: Vec<(Digest, Proposal)> = Vec::new();
    let is_anchor = |o: &Output| matches!(o, Output::Broadcast(Message::Vertex(vertex)) if vertex.vertex().proposal.is_some());
    for vertex in genesis.clone() {
        let author = vertex.vertex().author.0;
        let outputs = node.step_until(
            Input::Message {
                from: v(author),
                message: Message::Vertex(vertex),
            },
            is_anchor,
        );
        if let Some(anchor) = outputs.iter().find(|o| is_anchor(o)) {
            if let Output::Broadcast(Message::Vertex(vertex)) = anchor {
                proposals.extend(vertex.vertex().proposal.map(|p| (vertex.hash(), p)));
            }
            break;
        }
    }
    assert_eq!(proposals.len(), 1, "the primary proposed before the crash");
    node.restart();
    node.step(Input::Fetched {
        from: v(1),
        vertices: own_genesis.into_iter().chain(genesis).collect(),
    });
    node.step(Input::Transactions(vec![Transaction::new(
        b"second".to_vec(),
    )]));
    for author in [1, 2, 3] {
        let vertex = builder.vertex(v(author), Round(1), &[v(1), v(2), v(3)], 0);
        let outputs = node.deliver(author, Message::Vertex(vertex));
        for message in sent(&outputs) {
            if let Message::Vertex(vertex) = message {
                let fresh = proposals.iter().all(|(h, _)| *h != vertex.hash());
                if vertex.vertex().author == v(0) && fresh {
                    proposals.extend(vertex.vertex().proposal.map(|p| (vertex.hash(), p)));
                }
            }
        }
    }
    proposals.into_iter().map(|(_, p)| p).collect()
}

#[test]
fn a_restarted_primary_never_proposes_a_sequence_twice() {
    let proposals = primary_restart(None);
    assert_eq!(proposals.len(), 2, "{proposals:?}");
    assert_eq!(proposals[0].sequence, Sequence(1));
    assert_eq!(proposals[1].sequence, Sequence(2), "{proposals:?}");
    // The old rule re-proposes sequence 1 with a second anchor: a double pre-prepare.
    let proposals = primary_restart(Some(Mutant::ProposalNotDurable));
    assert!(
        proposals
            .iter()
            .filter(|p| p.sequence == Sequence(1))
            .count()
            == 2,
        "{proposals:?}"
    );
}

/// Finding 5 (rule: a new primary makes the NewView and the view's activation durable
/// together before sending it; a restarted new primary re-counts its own view change).
/// Primary 1 of view 1 is killed right after its NewView leaves; restarted, it must be in
/// view 1 with that NewView, and other view changes must not make it sign another.
fn new_primary_restart(mutant: Option<Mutant>) -> (Vec<NewViewMessage>, bool) {
    let (committee, _) = committee(4);
    let mut node = Node::new(1, &committee, mutant);
    node.deliver(2, vc_message(view_change(&committee, 2, 1, vec![], vec![])));
    let outputs = node.step_until(
        Input::Message {
            from: v(3),
            message: vc_message(view_change(&committee, 3, 1, vec![], vec![])),
        },
        |o| matches!(o, Output::Broadcast(Message::NewView(_))),
    );
    let mut new_views = new_views_sent(&outputs);
    assert_eq!(new_views.len(), 1, "the NewView left before the crash");
    node.restart();
    let active = node.replica.view_active() && node.replica.view() == View(1);
    for (from, replica) in [(0, 0), (3, 3), (2, 2)] {
        let outputs = node.deliver(
            from,
            vc_message(view_change(&committee, replica, 1, vec![], vec![])),
        );
        new_views.extend(sent(&outputs).into_iter().filter_map(|m| match m {
            Message::NewView(nv) => Some((**nv).clone()),
            _ => None,
        }));
    }
    (new_views, active)
}

#[test]
fn a_restarted_new_primary_never_signs_a_second_new_view() {
    let (new_views, active) = new_primary_restart(None);
    assert!(active, "restarted in view 1, active");
    let first = new_views[0].new_view.hash();
    assert!(new_views.iter().all(|nv| nv.new_view.hash() == first));
    let (new_views, active) = new_primary_restart(Some(Mutant::NewViewNotDurable));
    assert!(!active);
    assert!(
        new_views
            .iter()
            .any(|nv| nv.new_view.hash() != new_views[0].new_view.hash()),
        "the old order signs a second, different NewView"
    );
}

/// Every evidence kind names the validator that signed both halves.
#[test]
fn evidence_names_the_primary() {
    let outputs = primary_prepare_attack(None);
    let culprits: Vec<ValidatorIndex> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Evidence(e @ Evidence::PrimaryPrepare(_)) => Some(e.culprit()),
            _ => None,
        })
        .collect();
    assert_eq!(culprits, vec![v(0)]);
}

/// Finding 5, second half (rule: an empty store is not a fresh validator; it signs
/// nothing until 2f + 1 peers told it their view and round, then only above them).
/// Replica 3 restarts from an empty store (keys kept, no `reset-state`): it must not
/// re-sign a round-0 vertex at once, and once peers report view 2 it must not vote in
/// view 2 (it may have voted there before the wipe).
fn wiped_restart(mutant: Option<Mutant>) -> (Vec<Output>, Vec<Output>) {
    let (committee, _) = committee(4);
    let mut config = ReplicaConfig::new(v(3), committee.clone());
    config.mutant = mutant;
    let store = MemoryStore::new();
    let replica = Replica::recover(config.clone(), Signer::Placeholder, &store).expect("recovers");
    let mut node = Node {
        replica,
        store,
        config,
        now: 5_000,
    };
    let mut started = node.step(Input::Start);
    for (peer, view, round) in [(0, 2, 7), (1, 2, 9), (2, 1, 8)] {
        started.extend(node.deliver(
            peer,
            Message::Status {
                view: View(view),
                executed: Sequence(0),
                round: Some(Round(round)),
            },
        ));
    }
    let d = Digest::of(b"anchor of sequence 2");
    let claim = Claim {
        sequence: Sequence(2),
        view: View(0),
        digest: Some(d),
    };
    let vcs = vec![
        view_change(&committee, 0, 2, vec![claim], vec![claim]),
        view_change(&committee, 1, 2, vec![], vec![claim]),
        view_change(&committee, 2, 2, vec![], vec![]),
    ];
    let entered = node.deliver(
        2,
        new_view_message(
            &committee,
            2,
            2,
            vcs,
            vec![(Sequence(1), None), (Sequence(2), Some(d))],
        ),
    );
    assert_eq!(node.replica.view(), View(2));
    (started, entered)
}

#[test]
fn a_wiped_replica_signs_only_above_what_2f_plus_1_peers_report() {
    let own_vertices = |outputs: &[Output]| {
        sent(outputs)
            .into_iter()
            .filter(|m| matches!(m, Message::Vertex(vx) if vx.vertex().author == v(3)))
            .count()
    };
    let (started, entered) = wiped_restart(None);
    assert_eq!(own_vertices(&started), 0, "signed a vertex before learning");
    assert!(
        votes(&entered, Phase::Prepare).is_empty(),
        "voted in view 2"
    );
    // The old rule: a round-0 vertex at once (a second one for that round) and a vote in
    // a view it may already have voted in.
    let (started, entered) = wiped_restart(Some(Mutant::WipedStoreSignsAtOnce));
    assert_eq!(own_vertices(&started), 1);
    assert_eq!(votes(&entered, Phase::Prepare).len(), 1);
}

/// A checkpoint vote by `signer`.
fn checkpoint_by(committee: &Committee, signer: u16, sequence: u64, digest: Digest) -> Message {
    Message::Checkpoint(
        Checkpoint {
            chain_id: committee.chain_id().clone(),
            epoch: committee.epoch(),
            sequence: Sequence(sequence),
            state_digest: digest,
            signer: v(signer),
        }
        .sign_with(&Signer::Placeholder),
    )
}

fn own_vertices(outputs: &[Output], own: u16) -> Vec<SignedVertex> {
    sent(outputs)
        .into_iter()
        .filter_map(|m| match m {
            Message::Vertex(vx) if vx.vertex().author == v(own) => Some(vx.clone()),
            _ => None,
        })
        .collect()
}

/// Found by the review of the fixes (rule: a log entry rebuilt from a vote keeps the
/// NewView as its source when the NewView decided that sequence; only the primary's own
/// proposal is proof against it). Schedule (every validator honest; only message loss, one lagging replica and one
/// crash). n = 4, replica 3 under test.
///
/// 1. View 0: primary 0's round-2 vertex d carries (view 0, seq 1). Replica 3 prepares
///    it. View 0 times out before it commits.
/// 2. View 1 (primary 1): the NewView (view changes of 0, 1, 2: 0 prepared d, 2
///    pre-prepared it) re-proposes d at sequence 1. Replica 3 enters view 1 and prepares
///    (view 1, seq 1, d): the vote is persisted under vote/Prepare/1/1.
/// 3. Replica 3 misses primary 1's anchors for sequences 2..4 (loss), the others commit
///    and execute 1..4 and their checkpoint at 4 reaches replica 3: stable = 4,
///    executed = 0.
/// 4. Replica 3 crashes and restarts. `recover` installs the NewView only above the
///    stable checkpoint (skips sequence 1), then rebuilds sequence 1 from the vote as
///    `Source::Primary { round: round of d }` -- a view-0 vertex of replica 0 now posed as
///    primary 1's view-1 pre-prepare (before the fix).
/// 5. Primary 1's (honest) view-1 anchor for sequence 5 (above the stable checkpoint),
///    at round 2, arrives. Round-order rule: the "anchor" below it (d, round 2) is not
///    lower -> `ConflictingPrePrepares` naming the honest primary 1, and replica 3 starts
///    a view change. It never prepares sequence 5 in view 1.
fn recovered_new_view_slot(restart: bool) -> Vec<Output> {
    let (committee, _) = committee(4);
    let mut node = Node::new(3, &committee, None);
    let mut seen: Vec<SignedVertex> = own_vertices(&[], 3);
    let mut builder = DagBuilder::with_committee(committee.clone());
    let genesis = genesis_except(&mut builder, 3);
    for vertex in genesis.clone() {
        let out = node.deliver(vertex.vertex().author.0, Message::Vertex(vertex.clone()));
        seen.extend(own_vertices(&out, 3));
        seen.push(vertex);
    }
    let round1: Vec<SignedVertex> = [0u16, 1, 2]
        .iter()
        .map(|a| builder.vertex(v(*a), Round(1), &[v(0), v(1), v(2)], 0))
        .collect();
    for vertex in round1.clone() {
        let out = node.deliver(vertex.vertex().author.0, Message::Vertex(vertex.clone()));
        seen.extend(own_vertices(&out, 3));
        seen.push(vertex);
    }
    // 1. Primary 0's anchor d at round 2 for (view 0, seq 1).
    let d = with_proposal(
        &builder.vertex(v(0), Round(2), &[v(0), v(1), v(2)], 0),
        0,
        1,
    );
    let out = node.deliver(0, Message::Vertex(d.clone()));
    seen.extend(own_vertices(&out, 3));
    assert!(votes(&out, Phase::Prepare)
        .iter()
        .any(|p| p.digest == Some(d.hash())));
    // 2. NewView of view 1 re-proposes d at sequence 1.
    let out = node.deliver(1, view_1_reproposing(&committee, d.hash()));
    seen.extend(own_vertices(&out, 3));
    assert_eq!(node.replica.view(), View(1));
    assert!(votes(&out, Phase::Prepare)
        .iter()
        .any(|p| p.view == View(1) && p.sequence == Sequence(1) && p.digest == Some(d.hash())));
    // 3. The others' checkpoint at 4.
    let state = Digest::of(b"state after sequence 4");
    for signer in [0u16, 1, 2] {
        let out = node.deliver(signer, checkpoint_by(&committee, signer, 4, state));
        seen.extend(own_vertices(&out, 3));
    }
    assert_eq!(node.replica.stable_checkpoint().sequence, Sequence(4));
    assert_eq!(node.replica.last_executed(), Sequence(0));
    // 4. Crash and restart (the control keeps running).
    let mut outputs = Vec::new();
    if restart {
        node.restart();
        // Its history comes back by fetch (the anchor d is fetched at Start: it is a
        // log entry's digest the DAG lacks).
        let mut all = seen.clone();
        all.push(d.clone());
        all.sort_by_key(|x| x.vertex().round);
        outputs.extend(node.step(Input::Fetched {
            from: v(0),
            vertices: all,
        }));
    }
    // 5. Honest primary 1's first view-1 anchor above the stable checkpoint: its
    //    round-2 vertex carrying (1, 5).
    let anchor = with_proposal(
        &builder.vertex(v(1), Round(2), &[v(0), v(1), v(2)], 0),
        1,
        5,
    );
    outputs.extend(node.deliver(1, Message::Vertex(anchor.clone())));
    outputs
}

#[test]
fn control_without_restart_prepares_the_honest_primarys_anchor() {
    let outputs = recovered_new_view_slot(false);
    assert!(
        evidence_kinds(&outputs).is_empty(),
        "{:?}",
        evidence_kinds(&outputs)
    );
    assert!(votes(&outputs, Phase::Prepare)
        .iter()
        .any(|p| p.view == View(1) && p.sequence == Sequence(5)));
}

#[test]
fn a_restarted_replica_never_names_the_honest_primary_in_evidence() {
    let outputs = recovered_new_view_slot(true);
    let culprits: Vec<ValidatorIndex> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Evidence(e) => Some(e.culprit()),
            _ => None,
        })
        .collect();
    let prepared_5 = votes(&outputs, Phase::Prepare)
        .iter()
        .any(|p| p.view == View(1) && p.sequence == Sequence(5));
    assert!(
        culprits.is_empty() && prepared_5,
        "evidence against honest validators {culprits:?}; prepared seq 5: {prepared_5}; view changes sent: {:?}",
        view_changes_sent(&outputs)
    );
}
