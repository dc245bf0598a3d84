//! The live feed of flow events from the proxy to its front ends (the dump printer,
//! the console, the web UI): a broadcast ring that every subscriber reads at its own
//! pace.
//!
//! An event stays only until every subscriber has read it, and the ring is bounded by
//! bytes as well as by count: a subscriber that stops reading (a paused
//! `periscope dump | less`) holds at most [`MAX_BYTES`] of flows, not the last 16,384
//! flows with their bodies. When it reads again it learns how many events
//! it missed ([`RecvError::Lagged`]), as with `tokio::sync::broadcast`, whose error
//! types it reuses. Subscribers that must see everything (the session store) use the
//! proxy's reliable queue instead.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

pub use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::events::FlowEvent;
use crate::model::Flow;

/// Most events the ring holds.
pub const MAX_EVENTS: usize = 16 * 1024;
/// Most bytes of flows (bodies, messages, a share for each head) the ring holds.
pub const MAX_BYTES: usize = 32 * 1024 * 1024;

/// What an event costs the ring, roughly: its bodies and messages plus a fixed share
/// for the head.
pub fn cost_of(event: &FlowEvent) -> usize {
    const HEAD: usize = 2048;
    fn flow_cost(flow: &Flow) -> usize {
        let response = flow.response.as_ref().map_or(0, |r| r.body.content.len());
        let messages = flow.websocket.as_ref().map_or(0, |ws| {
            ws.messages.iter().map(|m| m.content.len() + 64).sum()
        });
        HEAD + flow.request.body.content.len() + response + messages
    }
    match event {
        FlowEvent::Completed(flow)
        | FlowEvent::Updated(flow)
        | FlowEvent::RequestReceived(flow) => flow_cost(flow),
        FlowEvent::WebSocketMessage { message, .. } => 64 + message.content.len(),
        FlowEvent::Log(entry) => 64 + entry.message.len(),
        FlowEvent::Removed(_) | FlowEvent::Cleared { .. } => 64,
    }
}

struct Ring {
    state: Mutex<RingState>,
    arrived: Notify,
    receivers: AtomicUsize,
    senders: AtomicUsize,
    max_events: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct RingState {
    events: VecDeque<(FlowEvent, usize)>,
    /// The sequence number the next event gets; the oldest held is
    /// `next - events.len()`.
    next: u64,
    bytes: usize,
    closed: bool,
    /// Where each subscriber is: events every subscriber has passed are let go.
    cursors: Vec<(u64, u64)>,
    next_subscriber: u64,
}

impl RingState {
    fn oldest(&self) -> u64 {
        self.next - self.events.len() as u64
    }

    fn pop_front(&mut self) {
        if let Some((_, cost)) = self.events.pop_front() {
            self.bytes -= cost;
        }
    }

    /// Lets go of the events every subscriber has read.
    fn release_read(&mut self) {
        let Some(slowest) = self.cursors.iter().map(|(_, next)| *next).min() else {
            return;
        };
        while self.oldest() < slowest && !self.events.is_empty() {
            self.pop_front();
        }
    }
}

impl Ring {
    fn lock(&self) -> MutexGuard<'_, RingState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending side; clones share the ring. The ring closes when the last is dropped.
pub struct FlowFeed {
    ring: Arc<Ring>,
}

impl Default for FlowFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowFeed {
    pub fn new() -> Self {
        Self::with_limits(MAX_EVENTS, MAX_BYTES)
    }

    pub fn with_limits(max_events: usize, max_bytes: usize) -> Self {
        FlowFeed {
            ring: Arc::new(Ring {
                state: Mutex::default(),
                arrived: Notify::new(),
                receivers: AtomicUsize::new(0),
                senders: AtomicUsize::new(1),
                max_events: max_events.max(1),
                max_bytes,
            }),
        }
    }

    /// A subscriber that sees the events sent from now on.
    pub fn subscribe(&self) -> FlowReceiver {
        self.ring.receivers.fetch_add(1, Ordering::AcqRel);
        let mut state = self.ring.lock();
        let id = state.next_subscriber;
        state.next_subscriber += 1;
        let next = state.next;
        state.cursors.push((id, next));
        FlowReceiver {
            ring: Arc::clone(&self.ring),
            id,
            next,
        }
    }

    /// Sends `event` to every subscriber; without subscribers it is dropped at once.
    pub fn send(&self, event: FlowEvent) {
        if self.ring.receivers.load(Ordering::Acquire) == 0 {
            return;
        }
        let cost = cost_of(&event);
        {
            let mut state = self.ring.lock();
            state.events.push_back((event, cost));
            state.next += 1;
            state.bytes += cost;
            // The newest event always stays, however large.
            while state.events.len() > 1
                && (state.events.len() > self.ring.max_events || state.bytes > self.ring.max_bytes)
            {
                state.pop_front();
            }
        }
        self.ring.arrived.notify_waiters();
    }

    /// Bytes the ring holds now.
    pub fn held_bytes(&self) -> usize {
        self.ring.lock().bytes
    }
}

impl Clone for FlowFeed {
    fn clone(&self) -> Self {
        self.ring.senders.fetch_add(1, Ordering::AcqRel);
        FlowFeed {
            ring: Arc::clone(&self.ring),
        }
    }
}

impl Drop for FlowFeed {
    fn drop(&mut self) {
        if self.ring.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.ring.lock().closed = true;
            self.ring.arrived.notify_waiters();
        }
    }
}

/// One subscriber's position in the ring.
pub struct FlowReceiver {
    ring: Arc<Ring>,
    id: u64,
    next: u64,
}

impl FlowReceiver {
    /// The next event, waiting for it; `Lagged(n)` when `n` events were dropped
    /// before this subscriber read them (the next call goes on from the oldest held).
    pub async fn recv(&mut self) -> Result<FlowEvent, RecvError> {
        let ring = Arc::clone(&self.ring);
        loop {
            let arrived = ring.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            match self.try_recv() {
                Ok(event) => return Ok(event),
                Err(TryRecvError::Lagged(missed)) => return Err(RecvError::Lagged(missed)),
                Err(TryRecvError::Closed) => return Err(RecvError::Closed),
                Err(TryRecvError::Empty) => arrived.await,
            }
        }
    }

    pub fn try_recv(&mut self) -> Result<FlowEvent, TryRecvError> {
        let mut state = self.ring.lock();
        let oldest = state.oldest();
        if self.next < oldest {
            let missed = oldest - self.next;
            self.next = oldest;
            self.moved(&mut state);
            return Err(TryRecvError::Lagged(missed));
        }
        if self.next == state.next {
            return Err(if state.closed {
                TryRecvError::Closed
            } else {
                TryRecvError::Empty
            });
        }
        let event = state.events[(self.next - oldest) as usize].0.clone();
        self.next += 1;
        self.moved(&mut state);
        Ok(event)
    }

    /// Records this subscriber's new position and lets go of what all have read.
    fn moved(&self, state: &mut RingState) {
        let was_slowest_at = state
            .cursors
            .iter_mut()
            .find(|(id, _)| *id == self.id)
            .map(|(_, next)| std::mem::replace(next, self.next));
        if was_slowest_at == Some(state.oldest()) {
            state.release_read();
        }
    }
}

impl Drop for FlowReceiver {
    fn drop(&mut self) {
        let mut state = self.ring.lock();
        state.cursors.retain(|(id, _)| *id != self.id);
        if state.cursors.is_empty() {
            state.events.clear();
            state.bytes = 0;
        } else {
            state.release_read();
        }
        drop(state);
        self.ring.receivers.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{LogEntry, LogLevel};

    fn log(text: &str) -> FlowEvent {
        FlowEvent::Log(LogEntry::new(LogLevel::Info, text))
    }

    fn text(event: FlowEvent) -> String {
        match event {
            FlowEvent::Log(entry) => entry.message,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn every_subscriber_reads_every_event_in_order() {
        let feed = FlowFeed::new();
        let mut first = feed.subscribe();
        let mut second = feed.subscribe();
        feed.send(log("a"));
        feed.send(log("b"));
        for receiver in [&mut first, &mut second] {
            assert_eq!(text(receiver.recv().await.unwrap()), "a");
            assert_eq!(text(receiver.recv().await.unwrap()), "b");
            assert!(matches!(receiver.try_recv(), Err(TryRecvError::Empty)));
        }
    }

    #[tokio::test]
    async fn a_waiting_subscriber_wakes_on_the_next_event_and_on_close() {
        let feed = FlowFeed::new();
        let mut receiver = feed.subscribe();
        let waiting = tokio::spawn(async move {
            let event = receiver.recv().await.map(text);
            let end = receiver.recv().await;
            (event, end)
        });
        tokio::task::yield_now().await;
        feed.send(log("late"));
        drop(feed);
        let (event, end) = waiting.await.unwrap();
        assert_eq!(event.unwrap(), "late");
        assert!(matches!(end, Err(RecvError::Closed)));
    }

    #[test]
    fn a_paused_subscriber_holds_at_most_the_byte_limit_and_learns_what_it_missed() {
        let feed = FlowFeed::with_limits(1_000_000, 10 * 1024);
        let mut paused = feed.subscribe();
        let big = "x".repeat(1024);
        for _ in 0..1000 {
            feed.send(log(&big));
        }
        assert!(feed.held_bytes() <= 10 * 1024, "{}", feed.held_bytes());
        match paused.try_recv() {
            Err(TryRecvError::Lagged(missed)) => assert!(missed > 990, "{missed}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(text(paused.try_recv().unwrap()).len(), 1024);
    }

    #[test]
    fn without_subscribers_nothing_is_held() {
        let feed = FlowFeed::new();
        feed.send(log("nobody listens"));
        assert_eq!(feed.held_bytes(), 0);
        let mut late = feed.subscribe();
        assert!(matches!(late.try_recv(), Err(TryRecvError::Empty)));
    }

    #[test]
    fn events_every_subscriber_has_read_are_let_go() {
        let feed = FlowFeed::new();
        let mut fast = feed.subscribe();
        let mut slow = feed.subscribe();
        feed.send(log(&"x".repeat(1000)));
        feed.send(log(&"y".repeat(1000)));
        let held = feed.held_bytes();
        assert!(held > 2000);
        fast.try_recv().unwrap();
        fast.try_recv().unwrap();
        assert_eq!(feed.held_bytes(), held, "the slow one has read nothing yet");
        slow.try_recv().unwrap();
        assert!(feed.held_bytes() < held);
        slow.try_recv().unwrap();
        assert_eq!(feed.held_bytes(), 0, "all read: nothing held");
        drop(slow);
        feed.send(log("z"));
        assert_eq!(text(fast.try_recv().unwrap()), "z");
        assert_eq!(feed.held_bytes(), 0);
    }

    #[test]
    fn the_count_limit_holds_too() {
        let feed = FlowFeed::with_limits(3, usize::MAX);
        let mut receiver = feed.subscribe();
        for n in 0..10 {
            feed.send(log(&n.to_string()));
        }
        assert!(matches!(receiver.try_recv(), Err(TryRecvError::Lagged(7))));
        assert_eq!(text(receiver.try_recv().unwrap()), "7");
    }
}
