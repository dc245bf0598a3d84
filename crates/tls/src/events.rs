//! Where a connection's TLS events go: to the exchanges in flight when they happen.
//!
//! A connection outlives its exchanges (HTTP/1 keep-alive, a pooled upstream
//! connection, HTTP/2 streams side by side), so "the next flow that asks" is not who
//! an event belongs to. An exchange holds a [`TlsEventTap`] while it is in flight and
//! receives every event recorded meanwhile; when several taps are live (HTTP/2), each
//! receives a copy. A tap made while no other is live also receives what was recorded
//! while none was: the connection's setup (the first handshake's CertificateRequest,
//! its alerts) for the first exchange, and what happened on the idle connection since
//! the last exchange (a HelloRequest answered between requests) for the next one —
//! timestamped before that exchange began. Events after the last exchange stay in the
//! unattached queue, for the event log.
//!
//! A tap made with [`TlsConnectionState::tap_for`] also names the flow that owns it, so
//! the connection knows which flows are in flight on it (a certificate request held
//! for the user names them).
//!
//! ```
//! # use periscope_tls::TlsConnectionState;
//! let connection = TlsConnectionState::upstream(None);
//! let exchange = connection.tap();
//! // ... the request and response are relayed; OpenSSL's callbacks record events ...
//! let events = exchange.take();
//! drop(exchange);
//! assert!(events.is_empty() && connection.take_unattached().is_empty());
//! ```
//!
//! Every queue keeps at most [`EVENT_QUEUE_CAPACITY`] events not yet taken and counts
//! the ones it had to let go: a WebSocket open for hours with a KeyUpdate a minute must
//! not grow without bound.

use std::sync::Arc;

use periscope_model::{FlowId, Initiator, Timestamp, TlsEvent, TlsEventKind};

use crate::state::TlsConnectionState;

/// How many events a tap (or the unattached queue) keeps until they are taken.
pub const EVENT_QUEUE_CAPACITY: usize = 1024;

/// The events of one connection delivered to one exchange while the tap lives.
/// Dropping it unregisters it; events it still held are discarded.
pub struct TlsEventTap {
    connection: Arc<TlsConnectionState>,
    id: TapId,
}

impl TlsEventTap {
    pub(crate) fn new(connection: Arc<TlsConnectionState>, id: TapId) -> Self {
        TlsEventTap { connection, id }
    }

    /// The events delivered since the last call, oldest first.
    pub fn take(&self) -> Vec<(Timestamp, TlsEvent)> {
        self.connection
            .with_routing(|routing| routing.take_tapped(self.id))
    }

    /// How many events this tap could not keep (it was full), since it was made.
    pub fn dropped(&self) -> u64 {
        self.connection
            .with_routing(|routing| routing.tap_dropped(self.id))
    }

    /// The flow this tap was made for, if it was made with
    /// [`TlsConnectionState::tap_for`].
    pub fn owner(&self) -> Option<FlowId> {
        self.connection
            .with_routing(|routing| routing.tap_owner(self.id))
    }
}

impl Drop for TlsEventTap {
    fn drop(&mut self) {
        self.connection
            .with_routing(|routing| routing.remove_tap(self.id));
    }
}

impl std::fmt::Debug for TlsEventTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsEventTap").field("id", &self.id).finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TapId(u64);

/// A bounded queue of events: keeps the first ones, counts the rest.
#[derive(Debug, Default)]
struct EventQueue {
    events: Vec<(Timestamp, TlsEvent)>,
    dropped: u64,
}

impl EventQueue {
    fn push(&mut self, at: Timestamp, event: TlsEvent) {
        if self.events.len() < EVENT_QUEUE_CAPACITY {
            self.events.push((at, event));
        } else {
            self.dropped += 1;
        }
    }

    fn take(&mut self) -> Vec<(Timestamp, TlsEvent)> {
        std::mem::take(&mut self.events)
    }

    /// Records a received HelloRequest. When the last event is the start of a
    /// renegotiation (OpenSSL reports the start before the message that caused it),
    /// the HelloRequest goes before it and the start is credited to the peer.
    fn push_hello_request(&mut self, event: TlsEvent) -> bool {
        let Some((started_at, started)) = self.events.last_mut() else {
            self.push(Timestamp::now(), event);
            return false;
        };
        let TlsEventKind::RenegotiationStarted { initiator } = &mut started.kind else {
            self.push(Timestamp::now(), event);
            return false;
        };
        *initiator = Initiator::Peer;
        let at = *started_at;
        if self.events.len() < EVENT_QUEUE_CAPACITY {
            let position = self.events.len() - 1;
            self.events.insert(position, (at, event));
        } else {
            self.dropped += 1;
        }
        true
    }
}

/// A live tap's queue, and the flow it was made for.
#[derive(Debug)]
struct Tap {
    id: TapId,
    owner: Option<FlowId>,
    queue: EventQueue,
}

/// The queues of one connection; lives inside its state's lock.
#[derive(Debug)]
pub(crate) struct EventRouting {
    /// Everything recorded before the first tap was made; handed to that tap.
    /// `None` once it was.
    before_first_tap: Option<EventQueue>,
    taps: Vec<Tap>,
    unattached: EventQueue,
    next_tap: u64,
}

impl Default for EventRouting {
    fn default() -> Self {
        EventRouting {
            before_first_tap: Some(EventQueue::default()),
            taps: Vec::new(),
            unattached: EventQueue::default(),
            next_tap: 0,
        }
    }
}

impl EventRouting {
    pub(crate) fn record(&mut self, at: Timestamp, event: TlsEvent) {
        self.for_each_destination(|queue| {
            queue.push(at, event.clone());
        });
    }

    /// Records a HelloRequest the peer sent (see [`EventQueue::push_hello_request`]);
    /// returns whether it explained a renegotiation start already recorded.
    pub(crate) fn record_hello_request_received(&mut self, event: TlsEvent) -> bool {
        let mut explained = false;
        self.for_each_destination(|queue| {
            explained |= queue.push_hello_request(event.clone());
        });
        explained
    }

    fn for_each_destination(&mut self, mut deliver: impl FnMut(&mut EventQueue)) {
        if !self.taps.is_empty() {
            self.taps.iter_mut().for_each(|tap| deliver(&mut tap.queue));
        } else if let Some(setup) = &mut self.before_first_tap {
            deliver(setup);
        } else {
            deliver(&mut self.unattached);
        }
    }

    pub(crate) fn add_tap(&mut self, owner: Option<FlowId>) -> TapId {
        let id = TapId(self.next_tap);
        self.next_tap += 1;
        let queue = match self.before_first_tap.take() {
            Some(setup) => setup,
            None if self.taps.is_empty() => std::mem::take(&mut self.unattached),
            None => EventQueue::default(),
        };
        self.taps.push(Tap { id, owner, queue });
        id
    }

    pub(crate) fn remove_tap(&mut self, id: TapId) {
        self.taps.retain(|tap| tap.id != id);
    }

    fn tap_queue(&mut self, id: TapId) -> Option<&mut EventQueue> {
        self.taps
            .iter_mut()
            .find(|tap| tap.id == id)
            .map(|tap| &mut tap.queue)
    }

    fn tap_owner(&self, id: TapId) -> Option<FlowId> {
        self.taps.iter().find(|tap| tap.id == id)?.owner
    }

    /// The flows of the live taps, oldest tap first, each once.
    pub(crate) fn owners(&self) -> Vec<FlowId> {
        let mut owners: Vec<FlowId> = Vec::with_capacity(self.taps.len());
        for owner in self.taps.iter().filter_map(|tap| tap.owner) {
            if !owners.contains(&owner) {
                owners.push(owner);
            }
        }
        owners
    }

    pub(crate) fn take_tapped(&mut self, id: TapId) -> Vec<(Timestamp, TlsEvent)> {
        self.tap_queue(id).map(EventQueue::take).unwrap_or_default()
    }

    pub(crate) fn tap_dropped(&mut self, id: TapId) -> u64 {
        self.tap_queue(id).map_or(0, |queue| queue.dropped)
    }

    pub(crate) fn take_unattached(&mut self) -> Vec<(Timestamp, TlsEvent)> {
        self.unattached.take()
    }

    pub(crate) fn unattached_dropped(&self) -> u64 {
        self.unattached.dropped
    }

    /// What no tap received: before the first tap, everything; after it, the
    /// unattached events.
    pub(crate) fn take_untapped(&mut self) -> Vec<(Timestamp, TlsEvent)> {
        let mut events = self
            .before_first_tap
            .as_mut()
            .map(EventQueue::take)
            .unwrap_or_default();
        events.extend(self.unattached.take());
        events
    }
}

#[cfg(test)]
mod tests {
    use periscope_model::{Direction, Leg};

    use super::*;

    fn server_leg(kind: TlsEventKind) -> TlsEvent {
        TlsEvent {
            leg: Leg::Server,
            kind,
        }
    }

    fn key_update() -> TlsEvent {
        server_leg(TlsEventKind::KeyUpdate {
            direction: Direction::Received,
            update_requested: false,
        })
    }

    fn hello_request() -> TlsEvent {
        server_leg(TlsEventKind::HelloRequest {
            direction: Direction::Received,
        })
    }

    fn renegotiation_started() -> TlsEvent {
        server_leg(TlsEventKind::RenegotiationStarted {
            initiator: Initiator::Periscope,
        })
    }

    fn renegotiation_completed() -> TlsEvent {
        server_leg(TlsEventKind::RenegotiationCompleted {
            version: "TLSv1.2".into(),
            cipher: "ECDHE-RSA-AES128-GCM-SHA256".into(),
        })
    }

    fn certificate_requested() -> TlsEvent {
        server_leg(TlsEventKind::CertificateRequested {
            ca_names: vec!["CN=Client CA".into()],
            post_handshake: false,
        })
    }

    /// What the callbacks record when a server renegotiates: the start first (OpenSSL
    /// reports it before the HelloRequest), then the HelloRequest, then the rest.
    fn server_renegotiates(connection: &TlsConnectionState) {
        connection.record(renegotiation_started());
        connection.record_hello_request_received(hello_request());
        connection.record(certificate_requested());
        connection.record(renegotiation_completed());
    }

    fn kinds(events: Vec<(Timestamp, TlsEvent)>) -> Vec<TlsEventKind> {
        events.into_iter().map(|(_, e)| e.kind).collect()
    }

    #[test]
    fn events_of_a_renegotiation_reach_only_the_exchange_in_flight() {
        let connection = TlsConnectionState::upstream(None);

        let first = connection.tap();
        // GET /public: answered without a renegotiation.
        assert!(first.take().is_empty());
        drop(first);

        let second = connection.tap();
        // GET /private: the server renegotiates before it answers.
        server_renegotiates(&connection);
        let events = kinds(second.take());
        drop(second);

        assert_eq!(
            events,
            vec![
                hello_request().kind,
                TlsEventKind::RenegotiationStarted {
                    initiator: Initiator::Peer
                },
                certificate_requested().kind,
                renegotiation_completed().kind,
            ]
        );
        assert!(connection.take_unattached().is_empty());
    }

    #[test]
    fn a_key_update_reaches_every_exchange_sharing_the_connection() {
        let connection = TlsConnectionState::upstream(None);
        let stream_1 = connection.tap();
        let stream_3 = connection.tap();

        connection.record(key_update());
        assert_eq!(kinds(stream_1.take()), vec![key_update().kind]);
        drop(stream_1);

        connection.record(key_update());
        assert_eq!(
            kinds(stream_3.take()),
            vec![key_update().kind, key_update().kind],
            "the stream still open got both, the closed one's copy is gone with it"
        );
        assert!(connection.take_unattached().is_empty());
    }

    #[test]
    fn the_first_exchange_receives_what_happened_while_connecting() {
        let connection = TlsConnectionState::upstream(None);
        // The first handshake asked for a certificate.
        connection.record(certificate_requested());

        let first = connection.tap();
        connection.record(key_update());
        assert_eq!(
            kinds(first.take()),
            vec![certificate_requested().kind, key_update().kind]
        );
        drop(first);

        // The setup went to the first tap only.
        let second = connection.tap();
        assert!(second.take().is_empty());
    }

    #[test]
    fn events_between_exchanges_go_to_the_next_exchange_and_after_the_last_to_the_log() {
        let connection = TlsConnectionState::upstream(None);
        drop(connection.tap());

        // The connection sits idle in the pool; the server updates its keys.
        connection.record(key_update());

        let next = connection.tap();
        assert_eq!(kinds(next.take()), vec![key_update().kind]);
        assert!(connection.take_unattached().is_empty(), "handed over once");
        drop(next);

        // After the last exchange, nobody comes: the event log gets it.
        connection.record(key_update());
        assert_eq!(kinds(connection.take_unattached()), vec![key_update().kind]);
    }

    #[test]
    fn a_second_exchange_sharing_the_connection_does_not_take_what_the_first_one_has() {
        let connection = TlsConnectionState::upstream(None);
        let first = connection.tap();
        connection.record(key_update());
        let second = connection.tap();
        assert!(second.take().is_empty());
        assert_eq!(kinds(first.take()), vec![key_update().kind]);
    }

    #[test]
    fn a_hello_request_before_any_renegotiation_start_is_recorded_as_it_comes() {
        let connection = TlsConnectionState::upstream(None);
        let exchange = connection.tap();
        connection.record(key_update());
        assert!(!connection.record_hello_request_received(hello_request()));
        assert_eq!(
            kinds(exchange.take()),
            vec![key_update().kind, hello_request().kind]
        );
    }

    #[test]
    fn taps_and_the_unattached_queue_keep_a_bounded_number_of_events_and_count_the_rest() {
        let connection = TlsConnectionState::upstream(None);
        let websocket = connection.tap();
        for _ in 0..EVENT_QUEUE_CAPACITY + 10 {
            connection.record(key_update());
        }
        assert_eq!(websocket.take().len(), EVENT_QUEUE_CAPACITY);
        assert_eq!(websocket.dropped(), 10);
        // Taking makes room again; the count stays.
        connection.record(key_update());
        assert_eq!(websocket.take().len(), 1);
        assert_eq!(websocket.dropped(), 10);
        drop(websocket);

        for _ in 0..EVENT_QUEUE_CAPACITY + 3 {
            connection.record(key_update());
        }
        assert_eq!(connection.take_unattached().len(), EVENT_QUEUE_CAPACITY);
        assert_eq!(connection.unattached_dropped(), 3);
    }

    #[test]
    fn events_before_the_first_tap_are_bounded_too() {
        let connection = TlsConnectionState::upstream(None);
        for _ in 0..EVENT_QUEUE_CAPACITY + 1 {
            connection.record(key_update());
        }
        let first = connection.tap();
        assert_eq!(first.take().len(), EVENT_QUEUE_CAPACITY);
        assert_eq!(first.dropped(), 1);
    }

    #[test]
    fn the_owners_are_the_flows_of_the_live_taps() {
        let connection = TlsConnectionState::upstream(None);
        let (stream_1, stream_3) = (FlowId::new(), FlowId::new());
        let first = connection.tap_for(stream_1);
        let unowned = connection.tap();
        let second = connection.tap_for(stream_3);
        assert_eq!(connection.owners(), vec![stream_1, stream_3]);
        assert_eq!(first.owner(), Some(stream_1));
        assert_eq!(unowned.owner(), None);

        drop(first);
        assert_eq!(connection.owners(), vec![stream_3]);
        // An owned tap receives events like any other.
        connection.record(key_update());
        assert_eq!(kinds(second.take()), vec![key_update().kind]);
        assert_eq!(kinds(unowned.take()), vec![key_update().kind]);
        drop(second);
        assert!(connection.owners().is_empty());
    }

    #[test]
    fn take_events_hands_over_what_no_tap_received() {
        let connection = TlsConnectionState::upstream(None);
        connection.record(certificate_requested());
        assert_eq!(
            kinds(connection.take_events()),
            vec![certificate_requested().kind]
        );

        let exchange = connection.tap();
        connection.record(key_update());
        assert!(connection.take_events().is_empty(), "the tap has it");
        assert_eq!(exchange.take().len(), 1);
        drop(exchange);

        connection.record(key_update());
        assert_eq!(kinds(connection.take_events()), vec![key_update().kind]);
    }
}
