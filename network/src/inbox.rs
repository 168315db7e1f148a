//! What the network hands to the rest of the node: one bounded queue per validator,
//! drained round-robin, so a validator that floods us fills only its own queue and the
//! others' messages keep flowing. Connection events and requests go first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::{Channel, Event};

#[derive(Debug)]
struct State {
    control: VecDeque<Event>,
    peers: Vec<VecDeque<(Channel, Bytes)>>,
    next: usize,
    closed: bool,
}

/// The shared inbox. One task consumes it.
#[derive(Debug, Clone)]
pub(crate) struct Inbox {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    per_peer: usize,
}

/// Why a message was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Full,
    Closed,
}

impl Inbox {
    pub(crate) fn new(validators: usize, per_peer: usize) -> Inbox {
        Inbox {
            state: Arc::new(Mutex::new(State {
                control: VecDeque::new(),
                peers: (0..validators).map(|_| VecDeque::new()).collect(),
                next: 0,
                closed: false,
            })),
            notify: Arc::new(Notify::new()),
            per_peer,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain queues behind: still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a message from validator `from`, unless its queue is full.
    pub(crate) fn push_message(
        &self,
        from: u16,
        channel: Channel,
        payload: Bytes,
    ) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        let Some(queue) = state.peers.get_mut(usize::from(from)) else {
            return Err(Refused::Closed);
        };
        if queue.len() >= self.per_peer {
            return Err(Refused::Full);
        }
        queue.push_back((channel, payload));
        drop(state);
        self.notify.notify_one();
        Ok(())
    }

    /// Queues a connection event or a request (bounded elsewhere).
    pub(crate) fn push_control(&self, event: Event) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.control.push_back(event);
        drop(state);
        self.notify.notify_one();
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }

    fn pop(&self) -> Option<Option<Event>> {
        let mut state = self.lock();
        if let Some(event) = state.control.pop_front() {
            return Some(Some(event));
        }
        let count = state.peers.len();
        for step in 0..count {
            let peer = (state.next + step) % count;
            if let Some((channel, payload)) = state.peers[peer].pop_front() {
                state.next = (peer + 1) % count;
                let from = u16::try_from(peer).unwrap_or(u16::MAX);
                return Some(Some(Event::Message {
                    from,
                    channel,
                    payload,
                }));
            }
        }
        if state.closed {
            return Some(None);
        }
        None
    }

    /// The next event, or `None` once the service has stopped and everything queued
    /// was handed out.
    pub(crate) async fn recv(&self) -> Option<Event> {
        loop {
            if let Some(event) = self.pop() {
                return event;
            }
            // `notify_one` stores a permit when nobody waits, so a push between `pop`
            // and here is not lost.
            self.notify.notified().await;
        }
    }

    /// Messages waiting from validator `from`.
    pub(crate) fn queued(&self, from: u16) -> usize {
        self.lock()
            .peers
            .get(usize::from(from))
            .map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_of(event: Option<Event>) -> u16 {
        match event {
            Some(Event::Message { from, .. }) => from,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn a_flooding_peer_fills_only_its_own_queue_and_peers_take_turns() {
        futures::executor::block_on(async {
            let inbox = Inbox::new(3, 4);
            for _ in 0..4 {
                inbox
                    .push_message(0, Channel::Consensus, Bytes::from_static(b"flood"))
                    .expect("room");
            }
            assert_eq!(
                inbox.push_message(0, Channel::Consensus, Bytes::from_static(b"more")),
                Err(Refused::Full)
            );
            inbox
                .push_message(2, Channel::Vertices, Bytes::from_static(b"honest"))
                .expect("its own queue has room");
            assert_eq!(inbox.queued(0), 4);
            assert_eq!(from_of(inbox.recv().await), 0);
            assert_eq!(
                from_of(inbox.recv().await),
                2,
                "the other peer is next, not the flood"
            );
            assert_eq!(from_of(inbox.recv().await), 0);
            inbox.close();
            assert_eq!(from_of(inbox.recv().await), 0);
            assert_eq!(from_of(inbox.recv().await), 0);
            assert!(inbox.recv().await.is_none());
            assert_eq!(
                inbox.push_message(1, Channel::Consensus, Bytes::new()),
                Err(Refused::Closed)
            );
        });
    }

    #[test]
    fn control_events_go_first() {
        futures::executor::block_on(async {
            let inbox = Inbox::new(2, 4);
            inbox
                .push_message(1, Channel::Consensus, Bytes::from_static(b"m"))
                .expect("room");
            inbox.push_control(Event::Connected(1));
            assert!(matches!(inbox.recv().await, Some(Event::Connected(1))));
            assert_eq!(from_of(inbox.recv().await), 1);
        });
    }
}
