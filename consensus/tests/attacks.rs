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
use weft_dag::testing::{committee, placeholder_signature, DagBuilder, BUILDER_EPOCH_MS};
use weft_dag::{
    Committee, Epoch, Limits, ParentRef, Proposal, Round, Sequence, SignedVertex, TimestampMs,
    Transaction, ValidatorIndex, Vertex, View,
};

/// A client transaction, valid while the tests' clocks run (around `BUILDER_EPOCH_MS`,
/// where `DagBuilder` stamps its vertices).
fn work(payload: Vec<u8>) -> Transaction {
    Transaction::new(payload, TimestampMs(BUILDER_EPOCH_MS + 200_000))
}

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
            // Just below `DagBuilder`'s stamps: its vertices may reference our own genesis
            // (a child is never stamped below its parents), and they are within the
            // clock drift we reference and prepare.
            now: BUILDER_EPOCH_MS - 4_000,
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
    node.step(Input::Transactions(vec![work(b"first".to_vec())]));
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
    node.step(Input::Transactions(vec![work(b"second".to_vec())]));
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
        now: BUILDER_EPOCH_MS + 5_000,
    };
    let mut started = node.step(Input::Start);
    // The mutant does not learn, so it asks nothing.
    let nonce = status_request_nonce(&started);
    assert_eq!(
        nonce.is_some(),
        mutant.is_none(),
        "asks its peers where they are"
    );
    for (peer, view, round) in [(0, 2, 7), (1, 2, 9), (2, 1, 8)] {
        started.extend(node.deliver(
            peer,
            Message::Status {
                view: View(view),
                executed: Sequence(0),
                round: Some(Round(round)),
                answers: nonce,
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

/// The nonce of the status request among `outputs`, if any.
fn status_request_nonce(outputs: &[Output]) -> Option<u64> {
    sent(outputs).into_iter().find_map(|m| match m {
        Message::StatusRequest { nonce } => Some(*nonce),
        _ => None,
    })
}

/// Every vertex of full rounds 0..=`top`, every author referencing every vertex below.
fn full_rounds(committee: &Committee, top: u64) -> Vec<SignedVertex> {
    let mut builder = DagBuilder::with_committee(committee.clone()).transactions_per_vertex(0);
    let mut vertices = builder.genesis();
    for round in 1..=top {
        vertices.extend(builder.full_round(Round(round)));
    }
    vertices
}

/// The signing floor a wiped replica 3 holds (none while it still learns) after 0, 1 and
/// 2 report round 4 in statuses that answer no request of its own (sent before the
/// wipe, when replica 3 may since have signed up to round 6, and delivered late by the
/// network), and then after they report round 7 in answers to its request.
type Floor = Option<(View, Option<Round>, Sequence)>;

fn stale_status_restart(mutant: Option<Mutant>) -> (Floor, Floor) {
    let (committee, _) = committee(4);
    let mut config = ReplicaConfig::new(v(3), committee.clone());
    config.mutant = mutant;
    config.boot_nonce = 77;
    let store = MemoryStore::new();
    let replica = Replica::recover(config.clone(), Signer::Placeholder, &store).expect("recovers");
    let mut node = Node {
        replica,
        store,
        config,
        now: BUILDER_EPOCH_MS + 5_000,
    };
    let started = node.step(Input::Start);
    let nonce = status_request_nonce(&started).expect("asks its peers where they are");
    // The DAG up to round 6 reaches it, so a report of round 7 is credible.
    node.step(Input::Fetched {
        from: v(0),
        vertices: full_rounds(&committee, 6),
    });
    let status = |round: u64, answers: Option<u64>| Message::Status {
        view: View(0),
        executed: Sequence(0),
        round: Some(Round(round)),
        answers,
    };
    for peer in [0u16, 1, 2] {
        // Periodic broadcasts, and an answer to some other request: none is fresh.
        let answers = (peer == 2).then_some(nonce.wrapping_add(1));
        node.deliver(peer, status(4, answers));
    }
    let after_stale = node.replica.signing_floor();
    for peer in [0u16, 1, 2] {
        node.deliver(peer, status(7, Some(nonce)));
    }
    (after_stale, node.replica.signing_floor())
}

#[test]
fn a_wiped_replica_learns_its_floor_only_from_answers_to_its_own_request() {
    let (after_stale, after_fresh) = stale_status_restart(None);
    assert_eq!(after_stale, None, "learned a floor from stale statuses");
    assert_eq!(after_fresh, Some((View(0), Some(Round(7)), Sequence(0))));
    // The old rule: the stale statuses set the floor at round 4, so it would sign round
    // 6, which it may have signed before the wipe.
    let (after_stale, _) = stale_status_restart(Some(Mutant::StaleStatusCounts));
    assert_eq!(after_stale, Some((View(0), Some(Round(4)), Sequence(0))));
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

/// Found by the long run (seed 100,017,076, `flooding`; rule: a replica enters round
/// r + 1 once it holds 2f + 1 vertices of round r, whatever its own last round). Replica
/// 3 signs its genesis vertex and then hears nothing new while 0, 1 and 2 build rounds
/// 1 to 12 among themselves; it learns them late (a fetch), with primary 0's round-12
/// anchor for (view 0, sequence 1), which commits and executes. That moves the GC round
/// to 12 - D = 8, above its own round 0: the quorum of round 0 its next vertex needed is
/// gone for good. With work to do (the anchor, a transaction) it must build above round
/// 12, not stay silent (in the seed it was the primary of the stalled view, so nothing
/// finalized again).
fn fallen_behind_the_gc_round(mutant: Option<Mutant>) -> Vec<Output> {
    let (committee, _) = committee(4);
    let mut config = ReplicaConfig::new(v(3), committee.clone());
    config.gc_depth = 4;
    config.max_round_lead = 4;
    config.mutant = mutant;
    let replica = Replica::new(config.clone(), Signer::Placeholder).expect("valid config");
    let mut node = Node {
        replica,
        store: MemoryStore::new(),
        config,
        now: BUILDER_EPOCH_MS + 1_000,
    };
    let started = node.step(Input::Start);
    assert_eq!(
        own_vertices(&started, 3)
            .iter()
            .map(|x| x.vertex().round)
            .collect::<Vec<_>>(),
        vec![Round(0)],
        "signs its genesis vertex at start"
    );
    let mut builder = DagBuilder::with_committee(committee.clone()).transactions_per_vertex(0);
    let mut history = genesis_except(&mut builder, 3);
    let others = [v(0), v(1), v(2)];
    for round in 1..=12 {
        for author in others {
            let vertex = builder.vertex(author, Round(round), &others, 0);
            history.push(if round == 12 && author == v(0) {
                with_proposal(&vertex, 0, 1)
            } else {
                vertex
            });
        }
    }
    let anchor = history
        .iter()
        .find(|x| x.vertex().proposal.is_some())
        .expect("the anchor")
        .hash();
    let fetched = node.step(Input::Fetched {
        from: v(1),
        vertices: history,
    });
    assert!(own_vertices(&fetched, 3).is_empty(), "nothing to order yet");
    assert!(votes(&fetched, Phase::Prepare)
        .iter()
        .any(|p| p.digest == Some(anchor)));
    let mut outputs = Vec::new();
    for voter in [1, 2] {
        outputs.extend(node.deliver(
            voter,
            Message::Vote(prepare_by(&committee, voter, 0, 1, anchor)),
        ));
    }
    for voter in [1, 2] {
        let mut commit = prepare_by(&committee, voter, 0, 1, anchor).vote().clone();
        commit.phase = Phase::Commit;
        outputs.extend(node.deliver(voter, Message::Vote(commit.sign_with(&Signer::Placeholder))));
    }
    assert_eq!(
        node.replica.last_executed(),
        Sequence(1),
        "sequence 1 executed"
    );
    outputs.extend(node.step(Input::Transactions(vec![work(b"work".to_vec())])));
    outputs
}

#[test]
fn a_replica_whose_own_round_fell_below_the_gc_round_builds_above_the_quorum_round() {
    let built = own_vertices(&fallen_behind_the_gc_round(None), 3);
    assert_eq!(
        built.iter().map(|x| x.vertex().round).collect::<Vec<_>>(),
        vec![Round(13)],
        "one vertex, above the highest round a quorum reached"
    );
    // The old rule: it waits for 2f + 1 vertices of round 0, which the GC removed.
    assert!(own_vertices(&fallen_behind_the_gc_round(Some(Mutant::NoRoundJump)), 3).is_empty());
}

/// The status `outputs` sends to `to`, if any.
fn status_to(outputs: &[Output], to: u16) -> Option<Message> {
    outputs.iter().find_map(|o| match o {
        Output::Send {
            to: t,
            message: m @ Message::Status { .. },
        } if *t == v(to) => Some(m.clone()),
        _ => None,
    })
}

/// A view change `outputs` broadcast, as a signed view change.
fn own_view_change(outputs: &[Output]) -> SignedViewChange {
    sent(outputs)
        .into_iter()
        .find_map(|m| match m {
            Message::ViewChange { view_change, .. } => Some(view_change.clone()),
            _ => None,
        })
        .expect("announced a view change")
}

fn wiped_node(index: u16, committee: &Committee, boot: u64, now: u64) -> (Node, Vec<Output>) {
    let mut config = ReplicaConfig::new(v(index), committee.clone());
    config.boot_nonce = boot;
    let store = MemoryStore::new();
    let replica = Replica::recover(config.clone(), Signer::Placeholder, &store).expect("recovers");
    let mut node = Node {
        replica,
        store,
        config,
        now,
    };
    let started = node.step(Input::Start);
    (node, started)
}

/// Found by the review of the fresh-status rule (rule: a replica that learned a floor
/// answers a status request with at least floor view + 1, floor round + 1 and E: what
/// it may have signed before its own wipe). Beyond the fault model (Byzantine 1 and two
/// wiped replicas, one not yet past its floor), and defense in depth all the same:
/// n = 4; Byzantine 1 (primary of view 1); honest 0 (slow: never leaves view 0), 2, 3.
/// 1. 2 and 3 time out in view 0 and announce view 1; primary 1's NewView (view changes
///    of 1, 2, 3) takes them into view 1; its anchor d carries (view 1, seq 1); honest 3
///    prepares (1, 1, d).
/// 2. 2's disk is wiped. It learns from 0, 1, 3 (floor view 1) and leaves learning, but
///    its view is 0 again and it holds no own vertex.
/// 3. 3's disk is wiped (2 is no longer learning: at most one learner at a time).
///    Its request is answered by 0 (view 0, round 0), by 2 and by Byzantine 1 (a
///    downward lie). Before the rule, 2 answered view 0, round none, so 3's floor was
///    view 0.
/// 4. Primary 1 resends its NewView and an equivocating anchor d' for (1, 1): 3 must
///    not prepare (1, 1, d'), a second prepare for (Prepare, view 1, seq 1).
#[test]
fn a_reporter_wiped_earlier_never_lowers_the_next_wiped_replicas_floor() {
    let (committee, _) = committee(4);
    let mut n0 = Node::new(0, &committee, None);
    let mut n2 = Node::new(2, &committee, None);
    let mut n3 = Node::new(3, &committee, None);
    // Genesis vertices (each node built its own at Start), read back from its store.
    let latest = |n: &Node| {
        let bytes = n.store.replica_state(b"own/latest").unwrap().unwrap();
        let hash = Digest::from_bytes(<[u8; 32]>::try_from(bytes.as_slice()).unwrap());
        n.store.vertex(&hash).unwrap().unwrap()
    };
    let g0 = latest(&n0);
    let g2 = latest(&n2);
    let g3 = latest(&n3);
    let mut builder = DagBuilder::with_committee(committee.clone()).transactions_per_vertex(1);
    let g1 = builder.vertex_with_parents(v(1), Round(0), Vec::new(), 0);

    // 1. Work arrives, nobody makes progress (0 and 1 silent): 2 and 3 time out.
    let mut vcs = Vec::new();
    for node in [&mut n2, &mut n3] {
        node.step(Input::Transactions(vec![work(b"work".to_vec())]));
        node.step(Input::Timer(weft_consensus::replica::Timer::Tick));
        node.now += 60_000;
        let out = node.step(Input::Timer(weft_consensus::replica::Timer::Tick));
        vcs.push(own_view_change(&out));
    }
    assert_eq!(vcs[0].body().view, View(1));
    let vc1 = view_change(&committee, 1, 1, vec![], vec![]);
    let nv = new_view_message(
        &committee,
        1,
        1,
        vec![vc1.clone(), vcs[0].clone(), vcs[1].clone()],
        vec![],
    );
    let parents = vec![g0.as_parent(), g2.as_parent()];
    let d = with_proposal(
        &builder.vertex_with_parents(v(1), Round(1), parents.clone(), 0),
        1,
        1,
    );
    let mut before = Vec::new();
    for node in [&mut n2, &mut n3] {
        node.deliver(1, nv.clone());
        assert_eq!(node.replica.view(), View(1));
        for g in [&g0, &g1, &g2] {
            before.extend(node.deliver(g.vertex().author.0, Message::Vertex(g.clone())));
        }
        before.extend(node.deliver(1, Message::Vertex(d.clone())));
    }
    let prepared_before: Vec<Vote> = votes(&before, Phase::Prepare)
        .into_iter()
        .filter(|p| p.voter == v(3))
        .collect();
    assert_eq!(prepared_before.len(), 1, "3 prepared d in view 1");
    assert_eq!(prepared_before[0].digest, Some(d.hash()));

    // 3 built round 1 on the genesis vertices: its answers name round 1.
    let own_round_1: Vec<SignedVertex> = own_vertices(&before, 3)
        .into_iter()
        .filter(|x| x.vertex().round == Round(1))
        .collect();
    assert_eq!(own_round_1.len(), 1, "3 built round 1");

    // 2. 2 is wiped and learns from 0, 1 and 3, once it holds round 0 again (so 3's
    //    round 1 is credible).
    let (mut n2, started) = wiped_node(2, &committee, 222, n2.now);
    let nonce2 = status_request_nonce(&started).expect("2 asks");
    for g in [&g0, &g1, &g2] {
        n2.deliver(g.vertex().author.0, Message::Vertex(g.clone()));
    }
    let a0 = status_to(&n0.deliver(2, Message::StatusRequest { nonce: nonce2 }), 2).unwrap();
    let a3 = status_to(&n3.deliver(2, Message::StatusRequest { nonce: nonce2 }), 2).unwrap();
    n2.deliver(0, a0);
    n2.deliver(3, a3);
    n2.deliver(
        1,
        Message::Status {
            view: View(1),
            executed: Sequence(0),
            round: Some(Round(0)),
            answers: Some(nonce2),
        },
    );
    assert!(!n2.replica.learning_signing_floor(), "2 learned");
    assert_eq!(n2.replica.signing_floor().map(|f| f.0), Some(View(1)));

    // 3. 3 is wiped and learns from 0, 2 (honest, fresh answers) and Byzantine 1.
    let (mut n3, started) = wiped_node(3, &committee, 333, n3.now);
    let nonce3 = status_request_nonce(&started).expect("3 asks");
    // It holds round 0 and its own round 1 again, so 2's answer of round 2 (its floor
    // round 1 + 1) is credible.
    for g in [&g0, &g1, &g2, &g3, &own_round_1[0]] {
        n3.deliver(g.vertex().author.0, Message::Vertex(g.clone()));
    }
    // A peer that is ahead sends it view 1's NewView (`on_status`), so 2's answer of
    // view 2 (its floor view 1 + 1) is credible too.
    n3.deliver(1, nv.clone());
    assert_eq!(n3.replica.view(), View(1));
    let a0 = status_to(&n0.deliver(3, Message::StatusRequest { nonce: nonce3 }), 3).unwrap();
    let a2 = status_to(&n2.deliver(3, Message::StatusRequest { nonce: nonce3 }), 3).unwrap();
    n3.deliver(0, a0);
    n3.deliver(2, a2);
    n3.deliver(
        1,
        Message::Status {
            view: View(0),
            executed: Sequence(0),
            round: Some(Round(0)),
            answers: Some(nonce3),
        },
    );
    assert_eq!(
        n3.replica.signing_floor().map(|f| f.0),
        Some(View(2)),
        "2 answers at least its floor view + 1"
    );
    assert!(!n3.replica.learning_signing_floor(), "3 learned");

    // 4. Primary 1 replays its NewView and sends an equivocating anchor for (1, 1).
    let d2 = with_proposal(
        &builder.vertex_with_parents(v(1), Round(1), parents, 1),
        1,
        1,
    );
    assert_ne!(d.hash(), d2.hash());
    let mut after = n3.deliver(1, nv);
    for g in [&g0, &g1, &g2] {
        after.extend(n3.deliver(g.vertex().author.0, Message::Vertex(g.clone())));
    }
    after.extend(n3.deliver(1, Message::Vertex(d2.clone())));
    let prepared_after: Vec<Vote> = votes(&after, Phase::Prepare)
        .into_iter()
        .filter(|p| p.view == View(1) && p.sequence == Sequence(1))
        .collect();
    assert!(
        prepared_after
            .iter()
            .all(|p| p.digest == prepared_before[0].digest),
        "honest 3 double-signed (Prepare, view 1, seq 1): before the wipe {:?}, after {:?}",
        prepared_before[0].digest,
        prepared_after.iter().map(|p| p.digest).collect::<Vec<_>>()
    );
}

/// Found by the review of the round jump (rule: a replica's own vertex in the round
/// below is its own parent, whether it is its latest known vertex or came back from
/// peers after a wipe). Replica 3 is wiped; peers relay back its own pre-wipe round-5
/// vertex, and only 0 and 1 of the others reach round 5. It learns floor round 4, so it
/// builds from round 6. Three authors of round 5 are held, so it builds round 6, and
/// that vertex must name three round-5 parents, its own among them (before, it left its
/// own out and signed a vertex with two, which every peer refuses).
#[test]
fn a_wiped_replica_references_its_own_pre_wipe_vertex_of_the_round_below() {
    let (committee, _) = committee(4);
    let mut config = ReplicaConfig::new(v(3), committee.clone());
    config.boot_nonce = 5;
    let store = MemoryStore::new();
    let replica = Replica::recover(config.clone(), Signer::Placeholder, &store).expect("recovers");
    let mut node = Node {
        replica,
        store,
        config,
        now: BUILDER_EPOCH_MS + 5_000,
    };
    let started = node.step(Input::Start);
    let nonce = status_request_nonce(&started).expect("asks");
    let mut builder = DagBuilder::with_committee(committee.clone()).transactions_per_vertex(0);
    let mut history = builder.genesis();
    for round in 1..=4 {
        history.extend(builder.full_round(Round(round)));
    }
    for author in [0u16, 1, 3] {
        history.push(builder.vertex(v(author), Round(5), &[v(0), v(1), v(2), v(3)], 0));
    }
    let mut outputs = node.step(Input::Fetched {
        from: v(0),
        vertices: history,
    });
    for peer in [0u16, 1, 2] {
        outputs.extend(node.deliver(
            peer,
            Message::Status {
                view: View(0),
                executed: Sequence(0),
                round: Some(Round(4)),
                answers: Some(nonce),
            },
        ));
    }
    assert_eq!(
        node.replica.signing_floor(),
        Some((View(0), Some(Round(4)), Sequence(0)))
    );
    outputs.extend(node.step(Input::Transactions(vec![work(b"work".to_vec())])));
    let built = own_vertices(&outputs, 3);
    assert_eq!(built.len(), 1, "builds round 6");
    let body = built[0].vertex();
    assert_eq!(body.round, Round(6));
    let mut round_5: Vec<u16> = body
        .parents
        .iter()
        .filter(|p| p.round == Round(5))
        .map(|p| p.author.0)
        .collect();
    round_5.sort_unstable();
    assert_eq!(round_5, vec![0, 1, 3]);
    body.check_structure(&committee, &Limits::default())
        .expect("a valid vertex");
}

/// Rule: consensus time comes from anchors' stamps, so a replica prepares a primary's
/// anchor only if it is stamped at most `max_clock_drift_ms` ahead of its clock (a
/// Byzantine primary stamping the far future would otherwise expire every pending
/// transaction). The same anchor within the allowance is prepared.
fn stamped_anchor(ahead_ms: u64) -> Vec<Output> {
    let (committee, _) = committee(4);
    let mut node = Node::new(3, &committee, None);
    let mut builder = DagBuilder::with_committee(committee.clone());
    for vertex in genesis_except(&mut builder, 3) {
        node.deliver(vertex.vertex().author.0, Message::Vertex(vertex));
    }
    let mut body = builder
        .vertex(v(0), Round(1), &[v(0), v(1), v(2)], 0)
        .vertex()
        .clone();
    body.created_at = TimestampMs(node.now + ahead_ms);
    body.proposal = Some(Proposal {
        view: View(0),
        sequence: Sequence(1),
    });
    let anchor = SignedVertex::with_signature(body, placeholder_signature());
    node.deliver(0, Message::Vertex(anchor))
}

#[test]
fn an_anchor_stamped_beyond_the_clock_drift_allowance_is_not_prepared() {
    let drift = ReplicaConfig::new(v(3), committee(4).0).max_clock_drift_ms;
    assert!(votes(&stamped_anchor(drift + 1_000), Phase::Prepare).is_empty());
    assert_eq!(votes(&stamped_anchor(drift / 2), Phase::Prepare).len(), 1);
}

/// Liveness (found by the e2e suite: a stall at the end of a load). Validator 3's round-1
/// vertex carries a transaction; the primary receives it together with 3's empty round-2
/// vertex, which overtakes it as 3's latest before any anchor covers it. With everyone
/// else idle, the primary must still anchor it: its first anchor (round 1) reaches round
/// 0 only, so once that executes, a second anchor (round 2) must reference the vertex.
fn overtaken_vertex_anchors(mutant: Option<Mutant>) -> (Digest, Vec<SignedVertex>) {
    let (committee, _) = committee(4);
    let mut node = Node::new(0, &committee, mutant);
    let mut builder = DagBuilder::with_committee(committee.clone()).transactions_per_vertex(0);
    let mut history = genesis_except(&mut builder, 0);
    let others = [v(1), v(2), v(3)];
    history.push(builder.vertex(v(1), Round(1), &others, 0));
    history.push(builder.vertex(v(2), Round(1), &others, 0));
    builder = builder.transactions_per_vertex(1);
    let carrying = builder.vertex(v(3), Round(1), &others, 0);
    builder = builder.transactions_per_vertex(0);
    history.push(carrying.clone());
    for author in others {
        history.push(builder.vertex(author, Round(2), &others, 0));
    }
    let mut outputs = node.step(Input::Fetched {
        from: v(1),
        vertices: history,
    });
    let first = own_vertices(&outputs, 0)
        .into_iter()
        .find(|x| x.vertex().proposal.is_some());
    if let Some(first) = &first {
        // Sequence 1 commits and executes; the primary builds on meanwhile.
        let sequence = first.vertex().proposal.expect("a proposal").sequence.0;
        for voter in [1u16, 2] {
            let prepare = prepare_by(&committee, voter, 0, sequence, first.hash());
            outputs.extend(node.deliver(voter, Message::Vote(prepare)));
        }
        for voter in [1u16, 2] {
            let mut commit = prepare_by(&committee, voter, 0, sequence, first.hash())
                .vote()
                .clone();
            commit.phase = Phase::Commit;
            let commit = commit.sign_with(&Signer::Placeholder);
            outputs.extend(node.deliver(voter, Message::Vote(commit)));
        }
        assert_eq!(node.replica.last_executed(), Sequence(sequence));
    }
    let anchors = own_vertices(&outputs, 0)
        .into_iter()
        .filter(|x| x.vertex().proposal.is_some())
        .collect();
    (carrying.hash(), anchors)
}

#[test]
fn a_vertex_carrying_transactions_is_anchored_after_its_authors_next_vertex_overtakes_it() {
    let (carrying, anchors) = overtaken_vertex_anchors(None);
    assert!(
        anchors
            .iter()
            .any(|a| a.vertex().parents.iter().any(|p| p.hash == carrying)),
        "no anchor references the vertex carrying the transaction: {anchors:?}"
    );
    // The old rule: every author's latest vertex is empty, so nothing is anchored.
    let (_, anchors) = overtaken_vertex_anchors(Some(Mutant::LatestVertexOnly));
    assert!(anchors.is_empty(), "the old rule anchored: {anchors:?}");
}

/// Found by the attack review of the fixes (rule: learning survives a crash until the
/// floor is saved). Replica 3 built round 0, then its store is wiped (keys kept). It
/// starts learning, and before 2f + 1 answers arrive it saves a view: either it enters
/// view 1 through a NewView, or, holding a client transaction while the answers are
/// late, its view-change timer moves it to view 1 without announcing. It crashes and
/// restarts: it must still be learning, and must not sign a second round-0 vertex.
fn learning_crash(
    via_new_view: bool,
    mutant: Option<Mutant>,
) -> (SignedVertex, Vec<SignedVertex>, bool) {
    let (committee, _) = committee(4);
    let mut config = ReplicaConfig::new(v(3), committee.clone());
    config.mutant = mutant;
    let mut before = Node {
        replica: Replica::new(config.clone(), Signer::Placeholder).expect("valid config"),
        store: MemoryStore::new(),
        config: config.clone(),
        now: BUILDER_EPOCH_MS - 4_000,
    };
    let genesis = own_vertices(&before.step(Input::Start), 3)
        .into_iter()
        .next()
        .expect("built round 0");
    let store = MemoryStore::new();
    let replica = Replica::recover(config.clone(), Signer::Placeholder, &store).expect("recovers");
    let mut node = Node {
        replica,
        store,
        config,
        now: before.now + 60_000,
    };
    node.step(Input::Start);
    assert!(node.replica.learning_signing_floor());
    if via_new_view {
        let view_changes = vec![
            view_change(&committee, 0, 1, vec![], vec![]),
            view_change(&committee, 1, 1, vec![], vec![]),
            view_change(&committee, 2, 1, vec![], vec![]),
        ];
        node.deliver(1, new_view_message(&committee, 1, 1, view_changes, vec![]));
    } else {
        node.step(Input::Transactions(vec![work(b"late answers".to_vec())]));
        for _ in 0..400 {
            node.step(Input::Timer(weft_consensus::replica::Timer::Tick));
        }
    }
    let still_learning = node.replica.learning_signing_floor();
    node.replica =
        Replica::recover(node.config.clone(), Signer::Placeholder, &node.store).expect("recovers");
    let outputs = node.step(Input::Start);
    (genesis, own_vertices(&outputs, 3), still_learning)
}

#[test]
fn a_learning_replica_that_crashes_keeps_learning() {
    for via_new_view in [false, true] {
        let (genesis, after, still_learning) = learning_crash(via_new_view, None);
        assert!(still_learning, "learned a floor without answers");
        let second: Vec<&SignedVertex> = after
            .iter()
            .filter(|x| x.vertex().round == genesis.vertex().round && x.hash() != genesis.hash())
            .collect();
        assert!(
            second.is_empty(),
            "via_new_view={via_new_view}: double-signed round 0 after a crash while learning"
        );
        // The old rule: `view` alone ends learning, and round 0 is signed again.
        let (genesis, after, _) = learning_crash(via_new_view, Some(Mutant::LearningNotDurable));
        assert!(
            after
                .iter()
                .any(|x| x.vertex().round == genesis.vertex().round && x.hash() != genesis.hash()),
            "via_new_view={via_new_view}: the mutant did not double-sign"
        );
    }
}

/// A wiped replica 6 of n = 7 (f = 2), one Byzantine reporter 5 among its peers. The
/// DAG it holds reaches round 3 and its executed sequence is 0. Honest 0..=4 answer its
/// request with round 3; Byzantine 5 answers `lie`, first of all. Then round 4 arrives
/// with work. Returns its floor and the rounds of the vertices it built.
fn lied_to_learner(
    lie: (View, Sequence, Option<Round>),
    mutant: Option<Mutant>,
) -> (Floor, Vec<Round>) {
    let (committee, _) = committee(7);
    let mut config = ReplicaConfig::new(v(6), committee.clone());
    config.mutant = mutant;
    config.boot_nonce = 66;
    let store = MemoryStore::new();
    let replica = Replica::recover(config.clone(), Signer::Placeholder, &store).expect("recovers");
    let mut node = Node {
        replica,
        store,
        config,
        now: BUILDER_EPOCH_MS + 5_000,
    };
    let started = node.step(Input::Start);
    let nonce = status_request_nonce(&started).expect("asks");
    let mut builder = DagBuilder::with_committee(committee.clone()).transactions_per_vertex(0);
    let mut history = builder.genesis();
    for round in 1..=3 {
        history.extend(builder.full_round(Round(round)));
    }
    let mut outputs = node.step(Input::Fetched {
        from: v(0),
        vertices: history,
    });
    let (view, executed, round) = lie;
    outputs.extend(node.deliver(
        5,
        Message::Status {
            view,
            executed,
            round,
            answers: Some(nonce),
        },
    ));
    for peer in 0u16..=4 {
        outputs.extend(node.deliver(
            peer,
            Message::Status {
                view: View(0),
                executed: Sequence(0),
                round: Some(Round(3)),
                answers: Some(nonce),
            },
        ));
    }
    let floor = node.replica.signing_floor();
    let round4: Vec<SignedVertex> = (0u16..=5)
        .map(|a| builder.vertex(v(a), Round(4), &[v(0), v(1), v(2), v(3), v(4), v(5)], 0))
        .collect();
    outputs.extend(node.step(Input::Fetched {
        from: v(0),
        vertices: round4,
    }));
    outputs.extend(node.step(Input::Transactions(vec![work(b"work".to_vec())])));
    let built = own_vertices(&outputs, 6)
        .iter()
        .map(|x| x.vertex().round)
        .collect();
    (floor, built)
}

/// Found by the attack review (known limit 12 before the fix; rule: a learning replica
/// counts a report only once it is credible against the DAG and the log it holds, and
/// learns from 2f + 1 credible reports). One Byzantine reporter answering round 10^12,
/// or a far executed sequence with a far view, used to set the floor, so the replica
/// never built again (or never voted again) though f Byzantine plus one wiped replica is
/// within the fault model at n = 7.
#[test]
fn a_byzantine_round_lie_never_silences_a_wiped_replica() {
    let lies = [
        (View(0), Sequence(0), Some(Round(1_000_000_000_000))),
        (View(u64::MAX / 2), Sequence(u64::MAX - 1), Some(Round(3))),
        (
            View(u64::MAX / 2),
            Sequence(u64::MAX - 1),
            Some(Round(u64::MAX - 1)),
        ),
    ];
    for lie in lies {
        let (floor, built) = lied_to_learner(lie, None);
        assert_eq!(
            floor,
            Some((View(0), Some(Round(3)), Sequence(0))),
            "lie {lie:?}: the floor is the honest reports' highest"
        );
        assert_eq!(built, vec![Round(5)], "lie {lie:?}: builds above its floor");
        // The old rule: the lie is the floor.
        let (floor, _) = lied_to_learner(lie, Some(Mutant::UnverifiedReports));
        let (view, executed, round) = lie;
        assert_eq!(
            floor,
            Some((view, round.max(Some(Round(3))), executed)),
            "lie {lie:?}: the mutant took the lie"
        );
    }
    // The round lie alone silences the old rule's replica for good.
    let (_, built) = lied_to_learner(lies[0], Some(Mutant::UnverifiedReports));
    assert!(built.is_empty(), "the mutant built {built:?}");
}

/// A report not yet credible is replaced by the same peer's later answer: at n = 4 every
/// peer's report is needed, so a Byzantine peer that first lies and then answers
/// truthfully delays learning, and the floor never carries the lie.
#[test]
fn a_learner_takes_a_peers_later_credible_answer_over_its_lie() {
    let (committee, _) = committee(4);
    let (mut node, started) = wiped_node(3, &committee, 9, BUILDER_EPOCH_MS + 5_000);
    let nonce = status_request_nonce(&started).expect("asks");
    node.step(Input::Fetched {
        from: v(0),
        vertices: full_rounds(&committee, 2),
    });
    let status = |round: u64| Message::Status {
        view: View(0),
        executed: Sequence(0),
        round: Some(Round(round)),
        answers: Some(nonce),
    };
    node.deliver(0, status(2));
    node.deliver(1, status(2));
    node.deliver(2, status(1_000_000));
    assert!(
        node.replica.learning_signing_floor(),
        "learned from a report of a round nobody reached"
    );
    node.deliver(2, status(2));
    assert_eq!(
        node.replica.signing_floor(),
        Some((View(0), Some(Round(2)), Sequence(0)))
    );
}

/// Rule (issue 11, durable acknowledgement): a replica admits a client transaction with
/// its record in the step's first output, so a crash right after the acknowledgement
/// (the step ran whole) restarts with the transaction in its mempool. Returns whether
/// the restarted replica holds it, and whether the step persisted anything first.
fn acknowledged_then_crashed(mutant: Option<Mutant>) -> (bool, bool) {
    let (committee, _) = committee(4);
    let mut node = Node::new(3, &committee, mutant);
    let transaction = work(b"acknowledged".to_vec());
    let id = transaction.id();
    let outputs = node.step(Input::Transactions(vec![transaction]));
    assert!(node.replica.is_transaction_pending(&id), "admitted");
    let persisted_first = matches!(outputs.first(), Some(Output::Persist(_)));
    node.restart();
    (node.replica.is_transaction_pending(&id), persisted_first)
}

#[test]
fn an_acknowledged_transaction_survives_a_crash() {
    assert_eq!(acknowledged_then_crashed(None), (true, true));
    // The old rule: the mempool is memory only.
    assert_eq!(
        acknowledged_then_crashed(Some(Mutant::MempoolNotDurable)),
        (false, false)
    );
}

/// Rule (nudge): replica 3 holds everyone's round 0 and round 1 of 0, 1 and 2, all
/// empty; with nothing to order it does not build round 1 (it waits for the idle
/// heartbeat). Peer 0 holds a client transaction and no quorum of round 1, and nudges
/// round 1: replica 3 builds its round 1 (empty) at once. A nudge for a round far above
/// what it holds is ignored.
fn nudged_rounds(mutant: Option<Mutant>, nudge: u64) -> Vec<Round> {
    let (committee, _) = committee(4);
    let mut node = Node::new(3, &committee, mutant);
    let mut builder = DagBuilder::with_committee(committee.clone()).transactions_per_vertex(0);
    for vertex in genesis_except(&mut builder, 3) {
        node.deliver(vertex.vertex().author.0, Message::Vertex(vertex));
    }
    // Round 1 of 0, 1, 2 (empty): replica 3 builds its own round 1 only once nudged.
    let mut built = Vec::new();
    for author in [0u16, 1, 2] {
        let vertex = builder.vertex(v(author), Round(1), &[v(0), v(1), v(2)], 0);
        built.extend(own_vertices(
            &node.deliver(author, Message::Vertex(vertex)),
            3,
        ));
    }
    built.extend(own_vertices(
        &node.deliver(
            0,
            Message::Nudge {
                round: Round(nudge),
            },
        ),
        3,
    ));
    built.iter().map(|x| x.vertex().round).collect()
}

#[test]
fn an_idle_replica_builds_the_round_a_peer_with_work_lacks() {
    assert_eq!(nudged_rounds(None, 1), vec![Round(1)]);
    assert_eq!(
        nudged_rounds(None, 50),
        Vec::<Round>::new(),
        "a far round is ignored"
    );
    // The old rule: nothing to order, so nothing is built until the heartbeat.
    assert_eq!(nudged_rounds(Some(Mutant::NoNudge), 1), Vec::<Round>::new());
}

/// A wiped replica 6 of n = 7 learns its floor from reports of `reported_view` by 0..=4
/// and of `byzantine_view` by 5, all at round 3 and executed 0. Its stable checkpoint
/// then reaches 8 = E + W (the others committed 1..=8), and the primaries of views 0 and
/// 1 propose sequence 9. Returns its floor and its prepares for sequence 9 in views 0
/// and 1.
fn recovered_learner_votes(
    reported_view: u64,
    byzantine_view: u64,
) -> (Floor, Vec<Vote>, Vec<Vote>) {
    let (committee, _) = committee(7);
    let (mut node, started) = wiped_node(6, &committee, 61, BUILDER_EPOCH_MS + 5_000);
    let nonce = status_request_nonce(&started).expect("asks");
    let mut builder = DagBuilder::with_committee(committee.clone()).transactions_per_vertex(0);
    let mut history = builder.genesis();
    for round in 1..=3 {
        history.extend(builder.full_round(Round(round)));
    }
    node.step(Input::Fetched {
        from: v(0),
        vertices: history,
    });
    let status = |view: u64| Message::Status {
        view: View(view),
        executed: Sequence(0),
        round: Some(Round(3)),
        answers: Some(nonce),
    };
    node.deliver(5, status(byzantine_view));
    for peer in 0u16..=4 {
        node.deliver(peer, status(reported_view));
    }
    let floor = node.replica.signing_floor();
    let d8 = Digest::of(b"state after 8");
    for signer in 0u16..=4 {
        node.deliver(signer, checkpoint_by(&committee, signer, 8, d8));
    }
    assert_eq!(node.replica.stable_checkpoint().sequence, Sequence(8));
    let parents = [v(0), v(1), v(2), v(3), v(4), v(5)];
    let a0 = with_proposal(&builder.vertex(v(0), Round(4), &parents, 0), 0, 9);
    let p0 = votes(&node.deliver(0, Message::Vertex(a0)), Phase::Prepare);
    let vcs = (0u16..=4)
        .map(|r| view_change(&committee, r, 1, vec![], vec![]))
        .collect();
    node.deliver(1, new_view_message(&committee, 1, 1, vcs, vec![]));
    assert_eq!(node.replica.view(), View(1));
    assert!(node.replica.view_active());
    let a1 = with_proposal(&builder.vertex(v(1), Round(4), &parents, 0), 1, 9);
    let p1 = votes(&node.deliver(1, Message::Vertex(a1)), Phase::Prepare);
    (floor, p0, p1)
}

/// Found by the attack review of the credible reports (rule: once its stable checkpoint
/// reaches E + W a wiped replica votes in any view, since before the wipe it voted only
/// up to C + W for a certified checkpoint C <= E). Before: a vote needed a sequence
/// above E + 2W, so a replica the fault model counts as recovered refused its whole
/// window in every view up to the floor view, and a Byzantine view lie made that every
/// view.
#[test]
fn a_recovered_learner_votes_in_its_window_whatever_view_was_reported() {
    // Honest floor view 1: sequence 9 > E + W is fresh in views 0 and 1.
    let (floor, p0, p1) = recovered_learner_votes(1, 1);
    assert_eq!(floor.map(|f| f.0), Some(View(1)));
    assert_eq!(p0.len(), 1, "prepares sequence 9 in view 0");
    assert_eq!(p1.len(), 1, "prepares sequence 9 in view 1");
    // A Byzantine view lie is counted (views are not checked), and delays nothing here:
    // sequence 9 is above E + W in every view.
    let (floor, p0, p1) = recovered_learner_votes(0, 1 << 62);
    assert_eq!(floor.map(|f| f.0), Some(View(1 << 62)));
    assert_eq!(p0.len(), 1, "prepares sequence 9 in view 0");
    assert_eq!(p1.len(), 1, "prepares sequence 9 in view 1");
}

/// Found by the attack review of the credible reports (rule: a wiped replica never
/// leads a view at or below its floor view). Replica 1 led view 1 (NewView with h = 0),
/// was wiped, learned floor view 1, adopted stable checkpoint 8 = E + W, and the old view
/// changes for view 1 are replayed: it must not sign a second, different NewView(1).
#[test]
fn a_rejoined_primary_never_signs_a_second_new_view_for_a_view_it_led() {
    let (committee, _) = committee(4);
    let mut pre = Node::new(1, &committee, None);
    let vc2 = view_change(&committee, 2, 1, vec![], vec![]);
    let vc3 = view_change(&committee, 3, 1, vec![], vec![]);
    let mut out = pre.deliver(2, vc_message(vc2.clone()));
    out.extend(pre.deliver(3, vc_message(vc3.clone())));
    let before = new_views_sent(&out);
    assert_eq!(before.len(), 1, "signed NewView(1) before the wipe");
    let (mut node, started) = wiped_node(1, &committee, 5, BUILDER_EPOCH_MS + 5_000);
    let nonce = status_request_nonce(&started).expect("asks");
    node.step(Input::Fetched {
        from: v(0),
        vertices: full_rounds(&committee, 0),
    });
    for peer in [0u16, 2, 3] {
        node.deliver(
            peer,
            Message::Status {
                view: View(1),
                executed: Sequence(0),
                round: Some(Round(0)),
                answers: Some(nonce),
            },
        );
    }
    assert_eq!(
        node.replica.signing_floor(),
        Some((View(1), Some(Round(0)), Sequence(0)))
    );
    let d8 = Digest::of(b"state after 8");
    for signer in [0u16, 2, 3] {
        node.deliver(signer, checkpoint_by(&committee, signer, 8, d8));
    }
    assert_eq!(node.replica.stable_checkpoint().sequence, Sequence(8));
    let mut out = node.deliver(2, vc_message(vc2));
    out.extend(node.deliver(3, vc_message(vc3)));
    let after = new_views_sent(&out);
    assert!(
        after
            .iter()
            .all(|nv| nv.new_view.hash() == before[0].new_view.hash()),
        "a second NewView for view 1 by honest 1: stable {:?} before, {:?} after",
        before
            .iter()
            .map(|n| n.new_view.body().stable_sequence)
            .collect::<Vec<_>>(),
        after
            .iter()
            .map(|n| n.new_view.body().stable_sequence)
            .collect::<Vec<_>>()
    );
}

/// Found by the attack review of the credible reports (rule: a report not yet credible
/// keeps the lowest of the peer's answers). Honest peers always answer three rounds
/// above what the learner holds, as when statuses overtake vertices while the set moves
/// on: replacing each report with the latest answer chased them forever.
#[test]
fn a_learner_behind_its_peers_answers_still_learns() {
    let (committee, _) = committee(4);
    let (mut node, started) = wiped_node(3, &committee, 11, BUILDER_EPOCH_MS + 5_000);
    let nonce = status_request_nonce(&started).expect("asks");
    let mut builder = DagBuilder::with_committee(committee.clone()).transactions_per_vertex(0);
    node.step(Input::Fetched {
        from: v(0),
        vertices: builder.genesis(),
    });
    for k in 0u64..10 {
        for peer in [0u16, 1, 2] {
            node.deliver(
                peer,
                Message::Status {
                    view: View(0),
                    executed: Sequence(0),
                    round: Some(Round(k + 3)),
                    answers: Some(nonce),
                },
            );
        }
        let round = builder.full_round(Round(k + 1));
        node.step(Input::Fetched {
            from: v(0),
            vertices: round,
        });
    }
    assert_eq!(
        node.replica.signing_floor(),
        Some((View(0), Some(Round(3)), Sequence(0))),
        "{}",
        node.replica.describe()
    );
}

fn commit_by(committee: &Committee, voter: u16, view: u64, sequence: u64, d: Digest) -> SignedVote {
    Vote {
        chain_id: committee.chain_id().clone(),
        epoch: committee.epoch(),
        phase: Phase::Commit,
        view: View(view),
        sequence: Sequence(sequence),
        digest: Some(d),
        voter: v(voter),
    }
    .sign_with(&Signer::Placeholder)
}

/// Primary 0's `anchor` (proposing sequence 1 in view 0) reaches `node` with prepares
/// and commits by 1 and 2: sequence 1 executes.
fn commit_first_anchor(node: &mut Node, committee: &Committee, anchor: SignedVertex) {
    let d = anchor.hash();
    node.deliver(0, Message::Vertex(anchor));
    for voter in [1u16, 2] {
        node.deliver(voter, Message::Vote(prepare_by(committee, voter, 0, 1, d)));
    }
    for voter in [1u16, 2] {
        node.deliver(voter, Message::Vote(commit_by(committee, voter, 0, 1, d)));
    }
    assert_eq!(
        node.replica.last_executed(),
        Sequence(1),
        "{}",
        node.replica.describe()
    );
}

fn node_with(index: u16, committee: &Committee, edit: impl Fn(&mut ReplicaConfig)) -> Node {
    let mut config = ReplicaConfig::new(v(index), committee.clone());
    edit(&mut config);
    let replica = Replica::new(config.clone(), Signer::Placeholder).expect("valid config");
    let mut node = Node {
        replica,
        store: MemoryStore::new(),
        config,
        now: BUILDER_EPOCH_MS - 4_000,
    };
    node.step(Input::Start);
    node
}

/// Six transactions, in the order of their `mempool/` keys.
fn six_sorted_transactions() -> Vec<Transaction> {
    let mut txs: Vec<Transaction> = (0u8..6).map(|i| work(vec![b'r', i])).collect();
    txs.sort_by_key(|t| *t.id().0.as_bytes());
    txs
}

/// Found by the attack review of durable acknowledgement (rule: recovery reads every
/// `mempool/` record). With a mempool cap of 2, replica 3 holds six records: four for
/// transactions in its own vertices, two (the highest keys) only in its mempool. A
/// recovery that read at most twice the cap lost the last two for good.
#[test]
fn every_acknowledged_transaction_is_restored_whatever_the_record_count() {
    let (committee, _) = committee(4);
    let mut node = node_with(3, &committee, |c| c.max_mempool_transactions = 2);
    let mut builder = DagBuilder::with_committee(committee.clone()).transactions_per_vertex(0);
    for vertex in genesis_except(&mut builder, 3) {
        node.deliver(vertex.vertex().author.0, Message::Vertex(vertex));
    }
    let txs = six_sorted_transactions();
    let mut built = Vec::new();
    built.extend(own_vertices(
        &node.step(Input::Transactions(txs[0..2].to_vec())),
        3,
    ));
    for round in 1..=2u64 {
        for author in [0u16, 1, 2] {
            let vertex = builder.vertex(v(author), Round(round), &[v(0), v(1), v(2)], 0);
            built.extend(own_vertices(
                &node.deliver(author, Message::Vertex(vertex)),
                3,
            ));
        }
    }
    built.extend(own_vertices(
        &node.step(Input::Transactions(txs[2..4].to_vec())),
        3,
    ));
    assert_eq!(
        built
            .iter()
            .map(|x| (x.vertex().round, x.vertex().transactions.len()))
            .collect::<Vec<_>>(),
        vec![(Round(1), 2), (Round(2), 0), (Round(3), 2)],
    );
    let out = node.step(Input::Transactions(txs[4..6].to_vec()));
    assert!(matches!(out.first(), Some(Output::Persist(_))));
    assert_eq!(node.replica.mempool_len(), 2);
    node.restart();
    let lost: Vec<usize> = (0..6)
        .filter(|i| !node.replica.is_transaction_pending(&txs[*i].id()))
        .collect();
    assert!(lost.is_empty(), "not restored after the crash: {lost:?}");
}

/// Found by the attack review of durable acknowledgement (rule: transactions re-queued
/// from our own vertices that fell below the GC round unfinalized bypass the mempool
/// cap). Replica 3's round-1 vertex with t0, t1 is never referenced; its mempool (cap 2)
/// is full when an anchor moves the GC round past it.
#[test]
fn an_orphaned_acknowledged_transaction_is_requeued_even_when_the_mempool_is_full() {
    let (committee, _) = committee(4);
    let mut node = node_with(3, &committee, |c| {
        c.max_mempool_transactions = 2;
        c.gc_depth = 2;
    });
    let mut builder = DagBuilder::with_committee(committee.clone()).transactions_per_vertex(0);
    for vertex in genesis_except(&mut builder, 3) {
        node.deliver(vertex.vertex().author.0, Message::Vertex(vertex));
    }
    let txs = six_sorted_transactions();
    let mut built = own_vertices(&node.step(Input::Transactions(txs[0..2].to_vec())), 3);
    for round in 1..=4u64 {
        for author in [0u16, 1, 2] {
            let vertex = builder.vertex(v(author), Round(round), &[v(0), v(1), v(2)], 0);
            built.extend(own_vertices(
                &node.deliver(author, Message::Vertex(vertex)),
                3,
            ));
        }
    }
    built.extend(own_vertices(
        &node.step(Input::Transactions(txs[2..4].to_vec())),
        3,
    ));
    for _ in 0..6 {
        if built.iter().any(|x| x.vertex().round == Round(4)) {
            break;
        }
        built.extend(own_vertices(
            &node.step(Input::Timer(weft_consensus::replica::Timer::Idle)),
            3,
        ));
    }
    node.step(Input::Transactions(txs[4..6].to_vec()));
    assert_eq!(
        node.replica.mempool_len(),
        2,
        "t4, t5 wait in a full mempool"
    );
    let anchor = with_proposal(
        &builder.vertex(v(0), Round(5), &[v(0), v(1), v(2)], 0),
        0,
        1,
    );
    commit_first_anchor(&mut node, &committee, anchor);
    for t in &txs[0..2] {
        assert!(
            node.replica.is_transaction_pending(&t.id()),
            "acknowledged {:?} was dropped: {}",
            t.id(),
            node.replica.describe()
        );
    }
}

/// Found by the attack review (rule: a report's view is not checked against the
/// learner's). Replica 6 (n = 7) learned floor view 1 from a Byzantine report one view
/// up while the set stayed in view 0, and answers later learners view 2. With a view
/// check, replica 0, wiped next and still in view 0, counted only four reports (the
/// Byzantine 5 silent) and never learned.
#[test]
fn a_recovered_reporters_floor_view_never_keeps_the_next_learner_from_learning() {
    let (committee, _) = committee(7);
    let (mut r6, started) = wiped_node(6, &committee, 61, BUILDER_EPOCH_MS + 5_000);
    let nonce6 = status_request_nonce(&started).expect("asks");
    let history = full_rounds(&committee, 3);
    r6.step(Input::Fetched {
        from: v(0),
        vertices: history.clone(),
    });
    let status = |view: u64, nonce: u64| Message::Status {
        view: View(view),
        executed: Sequence(0),
        round: Some(Round(3)),
        answers: Some(nonce),
    };
    r6.deliver(5, status(1, nonce6));
    for peer in 0u16..=4 {
        r6.deliver(peer, status(0, nonce6));
    }
    assert_eq!(
        r6.replica.signing_floor(),
        Some((View(1), Some(Round(3)), Sequence(0)))
    );
    let (mut learner, started) = wiped_node(0, &committee, 7, BUILDER_EPOCH_MS + 6_000);
    let nonce0 = status_request_nonce(&started).expect("asks");
    learner.step(Input::Fetched {
        from: v(1),
        vertices: history,
    });
    let answer =
        status_to(&r6.deliver(0, Message::StatusRequest { nonce: nonce0 }), 0).expect("6 answers");
    assert!(matches!(answer, Message::Status { view: View(2), .. }));
    learner.deliver(6, answer);
    for peer in 1u16..=4 {
        learner.deliver(peer, status(0, nonce0));
    }
    assert_eq!(learner.replica.view(), View(0));
    assert!(
        !learner.replica.learning_signing_floor(),
        "{}",
        learner.replica.describe()
    );
}

/// Delivers every message and fetch among `nodes`, in order, until none is left; what
/// each node finalized.
fn run_quiet(
    nodes: &mut [Node],
    mut queue: std::collections::VecDeque<(u16, Output)>,
) -> Vec<std::collections::HashSet<weft_dag::TxId>> {
    let n = u16::try_from(nodes.len()).expect("few nodes");
    let mut finalized = vec![std::collections::HashSet::new(); nodes.len()];
    let mut steps = 0;
    while let Some((from, output)) = queue.pop_front() {
        steps += 1;
        assert!(steps < 200_000, "no quiescence");
        let mut deliveries: Vec<(u16, Input)> = Vec::new();
        match output {
            Output::Broadcast(message) => {
                for to in (0..n).filter(|to| *to != from) {
                    deliveries.push((
                        to,
                        Input::Message {
                            from: v(from),
                            message: message.clone(),
                        },
                    ));
                }
            }
            Output::Send { to, message } => deliveries.push((
                to.0,
                Input::Message {
                    from: v(from),
                    message,
                },
            )),
            Output::Fetch { from: peer, hashes } => {
                let vertices = nodes[usize::from(peer.0)].replica.vertices(&hashes);
                deliveries.push((
                    from,
                    Input::Fetched {
                        from: peer,
                        vertices,
                    },
                ));
            }
            Output::Finalized(entry) => {
                for t in &entry.transactions {
                    finalized[usize::from(from)].insert(t.id);
                }
            }
            _ => {}
        }
        for (to, input) in deliveries {
            let outputs = nodes[usize::from(to)].step(input);
            queue.extend(outputs.into_iter().map(|o| (to, o)));
        }
    }
    finalized
}

/// Found by the attack review of the nudge (rule: a replica nudges while work of its own
/// waits, in its mempool or in its own unanchored vertices). In an idle set on a
/// lossless network, replica 3 receives one transaction and builds it into its next
/// vertex at once, leaving its mempool empty; it must be final within a second of
/// heartbeats, in view 0 (before, it waited for a view change).
#[test]
fn a_lone_transaction_in_an_idle_set_is_finalized_in_its_view() {
    let (committee, _) = committee(4);
    let mut nodes: Vec<Node> = (0u16..4).map(|i| Node::new(i, &committee, None)).collect();
    let mut queue = std::collections::VecDeque::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        node.now += 400;
        let outputs = node.step(Input::Timer(weft_consensus::replica::Timer::Tick));
        let index = u16::try_from(i).expect("few nodes");
        queue.extend(
            outputs
                .into_iter()
                .filter(|o| matches!(o, Output::Broadcast(Message::Vertex(_))))
                .map(|o| (index, o)),
        );
    }
    run_quiet(&mut nodes, queue);
    let mut queue = std::collections::VecDeque::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        let outputs = node.step(Input::Timer(weft_consensus::replica::Timer::Idle));
        let index = u16::try_from(i).expect("few nodes");
        queue.extend(outputs.into_iter().map(|o| (index, o)));
    }
    run_quiet(&mut nodes, queue);
    let transaction = work(b"lone".to_vec());
    let id = transaction.id();
    let outputs = nodes[3].step(Input::Transactions(vec![transaction]));
    let mut finalized = run_quiet(&mut nodes, outputs.into_iter().map(|o| (3u16, o)).collect());
    for _ in 0..10 {
        if finalized.iter().all(|f| f.contains(&id)) {
            break;
        }
        let mut queue = std::collections::VecDeque::new();
        for (i, node) in nodes.iter_mut().enumerate() {
            node.now += 100;
            let outputs = node.step(Input::Timer(weft_consensus::replica::Timer::Tick));
            let index = u16::try_from(i).expect("few nodes");
            queue.extend(outputs.into_iter().map(|o| (index, o)));
        }
        for (all, more) in finalized.iter_mut().zip(run_quiet(&mut nodes, queue)) {
            all.extend(more);
        }
    }
    let done: Vec<bool> = finalized.iter().map(|f| f.contains(&id)).collect();
    assert!(done.iter().all(|d| *d), "finalized by {done:?}");
    let views: Vec<View> = nodes.iter().map(|n| n.replica.view()).collect();
    assert_eq!(
        views,
        vec![View(0); 4],
        "finalized only after a view change"
    );
}

/// Rule (checkpointed restart): recovery rebuilds the dedup set from the entries of the
/// snapshot's dedup window. Replica 3 (a snapshot with every entry) finalizes its own
/// round-1 vertex carrying x at sequence 1, restarts, and is sent an identical copy of
/// x by an impatient client. Returns whether the restarted replica remembers x as
/// finalized and whether it admitted the copy.
fn copy_after_snapshot_restart(mutant: Option<Mutant>) -> (bool, bool) {
    let (committee, _) = committee(4);
    let mut node = node_with(3, &committee, |c| {
        c.snapshot_interval = 1;
        c.mutant = mutant;
    });
    let mut builder = DagBuilder::with_committee(committee.clone()).transactions_per_vertex(0);
    for vertex in genesis_except(&mut builder, 3) {
        node.deliver(vertex.vertex().author.0, Message::Vertex(vertex));
    }
    let x = work(b"paid once".to_vec());
    let own = own_vertices(&node.step(Input::Transactions(vec![x.clone()])), 3);
    assert_eq!(own.len(), 1, "{}", node.replica.describe());
    assert_eq!(own[0].vertex().transactions, vec![x.clone()]);
    let mut parents = vec![own[0].as_parent()];
    for author in [0u16, 1, 2] {
        let vertex = builder.vertex(v(author), Round(1), &[v(0), v(1), v(2)], 0);
        if author != 0 {
            parents.push(vertex.as_parent());
        }
        node.deliver(author, Message::Vertex(vertex));
    }
    let anchor = with_proposal(
        &builder.vertex_with_parents(v(0), Round(2), parents, 0),
        0,
        1,
    );
    commit_first_anchor(&mut node, &committee, anchor);
    assert!(node.replica.is_transaction_finalized(&x.id()));
    node.restart();
    let remembered = node.replica.is_transaction_finalized(&x.id());
    node.step(Input::Transactions(vec![x.clone()]));
    (remembered, node.replica.is_transaction_pending(&x.id()))
}

#[test]
fn a_replica_restarted_from_its_snapshot_never_finalizes_a_copy_twice() {
    assert_eq!(copy_after_snapshot_restart(None), (true, false));
    // Without the window: the restarted replica forgot x and proposes the copy again.
    assert_eq!(
        copy_after_snapshot_restart(Some(Mutant::SnapshotWithoutWindow)),
        (false, true)
    );
}

/// Found by the attack review of durable acknowledgement: a `mempool/` record above a
/// `max_transaction_bytes` lowered since its transaction was acknowledged (by an
/// upgrade: the limit is a protocol constant) made recovery fail, so the validator
/// could not start. It now starts; that record stays out of the
/// mempool (no vertex may carry it) and is counted, the others are put back.
#[test]
fn a_record_above_a_lowered_transaction_limit_never_stops_recovery() {
    let (committee, _) = committee(4);
    let mut node = Node::new(3, &committee, None);
    let big = work(vec![7u8; 2_048]);
    let small = work(vec![8u8; 16]);
    node.step(Input::Transactions(vec![big.clone(), small.clone()]));
    assert!(node.replica.is_transaction_pending(&big.id()));
    node.config.limits.max_transaction_bytes = 1_024;
    node.restart();
    assert!(!node.replica.is_transaction_pending(&big.id()));
    assert!(node.replica.is_transaction_pending(&small.id()));
    assert_eq!(node.replica.oversized_mempool_records(), 1);
}

/// A store holding a three-entry log and its vertices, and the first transaction's id.
fn logged_store() -> (MemoryStore, weft_dag::TxId) {
    let (vertices, entries) = weft_dag::testing::entry_chain(3, 1, 2);
    let store = MemoryStore::new();
    let mut batch = weft_dag::store::StoreBatch::new();
    for vertex in vertices {
        batch.put_vertex(vertex);
    }
    let id = entries[0].transactions[0].id;
    for entry in entries {
        batch.append_finalized(entry);
    }
    store.write(batch).expect("write");
    (store, id)
}

/// Found by the attack review of checkpointed restart: the snapshot record only saves
/// time, so one recovery cannot use must never keep a validator from starting or change
/// what it restores. Recorded at the log's head with a consensus time far ahead (so,
/// if used, the dedup set comes back empty): a record taken under another GC depth, or
/// unreadable, is ignored and the whole log replays (the first transaction is still
/// remembered); the same record under this replica's GC depth is used (it is not).
/// One too large to read back is never written.
#[test]
fn a_snapshot_record_recovery_cannot_use_is_ignored_and_never_stops_a_restart() {
    let (committee, _) = committee(4);
    let config = ReplicaConfig::new(v(0), committee);
    let recovered = |store: &MemoryStore| {
        Replica::recover(config.clone(), Signer::Placeholder, store).expect("recovers")
    };
    let (store, id) = logged_store();
    let replayed = recovered(&store);
    assert!(replayed.is_transaction_finalized(&id));
    let rounds = |h: &Digest| store.vertex(h).ok().flatten().map(|v| v.vertex().round);
    let entries = store.finalized_range(Sequence(1), 3).expect("entries");
    let mut snapshot = weft_dag::Finalizer::restore(config.gc_depth, entries, rounds)
        .expect("replays")
        .snapshot();
    snapshot.consensus_time = TimestampMs(u64::MAX / 2);
    let with_record = |gc_depth: u64| {
        let mut batch = weft_dag::store::StoreBatch::new();
        weft_consensus::replica::put_finalizer_snapshot(&mut batch, &snapshot, gc_depth);
        store.write(batch).expect("write");
        recovered(&store).is_transaction_finalized(&id)
    };
    assert!(
        with_record(config.gc_depth + 1),
        "another GC depth: ignored"
    );
    assert!(!with_record(config.gc_depth), "this GC depth: used");
    let mut batch = weft_dag::store::StoreBatch::new();
    batch.put_replica_state(b"finalizer", &[1, 2, 3]);
    store.write(batch).expect("write");
    assert!(
        recovered(&store).is_transaction_finalized(&id),
        "unreadable: ignored"
    );
    let top = snapshot.highest_anchor_round.expect("anchored");
    snapshot.finalized_vertices = (0..=(1u64 << 20))
        .map(|i| (top, Digest::of(&i.to_le_bytes())))
        .collect();
    let mut batch = weft_dag::store::StoreBatch::new();
    weft_consensus::replica::put_finalizer_snapshot(&mut batch, &snapshot, config.gc_depth);
    assert!(
        batch.is_empty(),
        "a record too large to read back is not written"
    );
}

/// Found by the attack review of the wanted-set fix (rule: every retransmission fetches
/// the anchors consensus designated and lacks, whatever else is missing). Byzantine
/// validator 6 of 7 pushes 50 vertices (its waiting buffer's worth), each naming seven
/// made-up parents whose hashes sort below any real one: 350 hashes nobody holds.
/// Replica 3 then commits sequence 1 through a `Decided` certificate that validator 0
/// relays, without holding the anchor; its direct fetches go to validator 0, which
/// (Byzantine too, in this story) never answers. Returns, for each of the next three
/// retransmissions, whether its fetch names the anchor.
fn anchor_in_retransmit_fetches(mutant: Option<Mutant>) -> Vec<bool> {
    let (committee, _) = committee(7);
    let mut node = Node::new(3, &committee, mutant);
    let mut builder = DagBuilder::with_committee(committee.clone()).transactions_per_vertex(0);
    for vertex in genesis_except(&mut builder, 3) {
        node.deliver(vertex.vertex().author.0, Message::Vertex(vertex));
    }
    let made_up = |round: u64, author: u16| {
        let mut bytes = [0u8; 32];
        bytes[8..16].copy_from_slice(&round.to_be_bytes());
        bytes[16..18].copy_from_slice(&author.to_be_bytes());
        Digest::from_slice(&bytes).expect("32 bytes")
    };
    for round in 1..=50u64 {
        let mut parents = vec![ParentRef {
            author: v(6),
            round: Round(round - 1),
            hash: made_up(round, 6),
        }];
        parents.extend((0..6u16).map(|author| ParentRef {
            author: v(author),
            round: Round(round - 1),
            hash: made_up(round, author),
        }));
        let body = Vertex {
            chain_id: committee.chain_id().clone(),
            epoch: committee.epoch(),
            author: v(6),
            round: Round(round),
            created_at: TimestampMs(BUILDER_EPOCH_MS + round),
            proposal: None,
            parents,
            transactions: Vec::new(),
        };
        let junk = SignedVertex::with_signature(body, placeholder_signature());
        node.deliver(6, Message::Vertex(junk));
    }
    let anchor = Digest::of(b"the anchor of sequence 1");
    let certificate: Vec<SignedVote> = [0u16, 1, 2, 4, 5]
        .into_iter()
        .map(|voter| {
            let mut commit = prepare_by(&committee, voter, 0, 1, anchor).vote().clone();
            commit.phase = Phase::Commit;
            commit.sign_with(&Signer::Placeholder)
        })
        .collect();
    let fetches = |outputs: &[Output]| -> Vec<(u16, Vec<Digest>)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Fetch { from, hashes } => Some((from.0, hashes.clone())),
                _ => None,
            })
            .collect()
    };
    let direct = fetches(&node.deliver(0, Message::Decided(certificate)));
    assert!(
        !direct.is_empty() && direct.iter().all(|f| *f == (0, vec![anchor])),
        "the direct fetches all go to validator 0: {direct:?}"
    );
    let interval = node.config.retransmit_interval_ms;
    (0..3)
        .map(|_| {
            node.now += interval;
            let retransmitted =
                fetches(&node.step(Input::Timer(weft_consensus::replica::Timer::Tick)));
            retransmitted
                .iter()
                .any(|(_, hashes)| hashes.contains(&anchor))
        })
        .collect()
}

#[test]
fn every_retransmission_fetches_a_committed_anchor_whatever_else_is_missing() {
    assert_eq!(anchor_in_retransmit_fetches(None), vec![true, true, true]);
    // The old rule: sorted by hash and cut to 256, the made-up parents fill every fetch.
    assert_eq!(
        anchor_in_retransmit_fetches(Some(Mutant::FetchByHashOrder)),
        vec![false, false, false]
    );
}

/// Found by the attack review of the fetch list (rule: each retransmission asks the
/// author of every waiting vertex for the parents it names). Honest validator 1's round-1
/// vertex names a version of validator 0's genesis slot that replica 3 lacks. Returns,
/// for each of the next three retransmissions, whether it asked validator 1 for it.
fn parent_asked_of_its_childs_author(mutant: Option<Mutant>) -> Vec<bool> {
    let (committee, _) = committee(4);
    let mut node = Node::new(3, &committee, mutant);
    let mut builder = DagBuilder::with_committee(committee.clone()).transactions_per_vertex(0);
    let genesis = genesis_except(&mut builder, 3);
    for vertex in &genesis {
        node.deliver(vertex.vertex().author.0, Message::Vertex(vertex.clone()));
    }
    let lacking = Digest::of(b"a version of 0's genesis replica 3 lacks");
    let parents = vec![
        ParentRef {
            author: v(0),
            round: Round(0),
            hash: lacking,
        },
        genesis
            .iter()
            .find(|g| g.vertex().author == v(2))
            .expect("2's genesis")
            .as_parent(),
    ];
    let child = builder.vertex_with_parents(v(1), Round(1), parents, 0);
    node.deliver(1, Message::Vertex(child));
    let interval = node.config.retransmit_interval_ms;
    (0..3)
        .map(|_| {
            node.now += interval;
            node.step(Input::Timer(weft_consensus::replica::Timer::Tick))
                .iter()
                .any(|o| {
                    matches!(o, Output::Fetch { from, hashes } if *from == v(1) && hashes.contains(&lacking))
                })
        })
        .collect()
}

#[test]
fn every_retransmission_asks_a_waiting_vertexs_author_for_its_missing_parents() {
    assert_eq!(
        parent_asked_of_its_childs_author(None),
        vec![true, true, true]
    );
    // The old rule: only the rotating peer is asked, validator 1 once in three.
    assert_eq!(
        parent_asked_of_its_childs_author(Some(Mutant::FetchByRotationOnly))
            .into_iter()
            .filter(|asked| *asked)
            .count(),
        1
    );
}
