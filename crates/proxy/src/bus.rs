//! The one way flows leave the proxy: a broadcast of [`FlowEvent`]s that the dump
//! printer, the store and the user interfaces subscribe to.

use periscope_flow::live::{FlowFeed, FlowReceiver};
use periscope_flow::{Flow, FlowEvent, FlowId, LogEntry, LogLevel};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

/// How much the reliable subscribers (the session store) may fall behind, in bytes of
/// queued flows, before new requests wait for them: under a load the store cannot
/// keep up with, the proxy slows down instead of growing without bound or dropping
/// flows.
const BACKLOG_LIMIT: usize = 64 * 1024 * 1024;

/// The longest one request waits for the backlog to shrink.
const ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Bytes published to reliable subscribers and not yet released by them.
#[derive(Default)]
struct Backlog {
    bytes: AtomicUsize,
    room: Notify,
}

/// The subscribers that must see every event, and the flows handed to them that they
/// have not saved yet.
#[derive(Default)]
struct Reliable {
    subscribers: Vec<mpsc::UnboundedSender<FlowEvent>>,
    /// A flow leaves the proxy's flows in flight when it is published and reaches the
    /// session store when the store's writer commits it, a few milliseconds to a
    /// batch later. A front end asking in between must still find it: it is here.
    unsaved: HashMap<FlowId, Arc<Flow>>,
    /// The generation of the last clear asked for.
    clears_requested: u64,
}

/// What the session store's writer reports of the clears it was asked for.
#[derive(Default)]
struct ClearsDone {
    generation: u64,
    /// The last clear that failed, and why.
    failure: Option<(u64, String)>,
}

#[derive(Clone)]
pub struct FlowBus {
    /// Front ends: each reads at its own pace; one that falls far behind (by count or
    /// by bytes) is told how many events it missed.
    feed: FlowFeed,
    /// Subscribers that must see every event (the session store): unbounded queues,
    /// since dropping a flow is worse than holding it in memory for a moment.
    reliable: Arc<Mutex<Reliable>>,
    /// Whether anyone shows requests before their response arrives.
    requests_wanted: Arc<AtomicBool>,
    backlog: Arc<Backlog>,
    clears_done: Arc<(Mutex<ClearsDone>, Condvar)>,
}

impl Default for FlowBus {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowBus {
    pub fn new() -> Self {
        FlowBus {
            feed: FlowFeed::new(),
            reliable: Arc::default(),
            requests_wanted: Arc::default(),
            backlog: Arc::default(),
            clears_done: Arc::default(),
        }
    }

    /// Asks for [`FlowEvent::RequestReceived`] events (a live view of requests in
    /// flight); without a caller they are not produced.
    pub fn want_requests(&self) {
        self.requests_wanted.store(true, Ordering::Relaxed);
    }

    pub fn wants_requests(&self) -> bool {
        self.requests_wanted.load(Ordering::Relaxed)
    }

    /// Ends every reliable subscription: each receiver gets the events already sent,
    /// then the end of its channel (how the store is told to finish at exit).
    pub fn close_reliable(&self) {
        self.lock_reliable().subscribers.clear();
    }

    fn lock_reliable(&self) -> MutexGuard<'_, Reliable> {
        self.reliable.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A subscription that never skips events. Its owner calls [`FlowBus::saved`] for
    /// the flows it has saved.
    pub fn subscribe_reliable(&self) -> mpsc::UnboundedReceiver<FlowEvent> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.lock_reliable().subscribers.push(sender);
        receiver
    }

    /// The reliable subscriber saved these flows: they are no longer kept as unsaved
    /// (unless a newer version of one was published since).
    pub fn saved(&self, flows: &[Arc<Flow>]) {
        let mut reliable = self.lock_reliable();
        for flow in flows {
            if reliable
                .unsaved
                .get(&flow.id)
                .is_some_and(|kept| Arc::ptr_eq(kept, flow))
            {
                reliable.unsaved.remove(&flow.id);
            }
        }
    }

    /// A flow published for the store and not saved yet.
    pub fn unsaved(&self, id: FlowId) -> Option<Arc<Flow>> {
        self.lock_reliable().unsaved.get(&id).cloned()
    }

    /// Every flow published for the store and not saved yet, in no order.
    pub fn unsaved_flows(&self) -> Vec<Arc<Flow>> {
        self.lock_reliable().unsaved.values().cloned().collect()
    }

    pub fn subscribe(&self) -> FlowReceiver {
        self.feed.subscribe()
    }

    /// The live feed itself, for a front end that subscribes on its own (the API,
    /// per WebSocket).
    pub fn feed(&self) -> FlowFeed {
        self.feed.clone()
    }

    pub fn publish(&self, event: FlowEvent) {
        self.send_reliable(&mut self.lock_reliable(), &event);
        self.feed.send(event);
    }

    fn send_reliable(&self, reliable: &mut Reliable, event: &FlowEvent) {
        if reliable.subscribers.is_empty() {
            return;
        }
        let cost = Self::cost_of(event);
        reliable.subscribers.retain(|subscriber| {
            let sent = subscriber.send(event.clone()).is_ok();
            if sent {
                self.backlog.bytes.fetch_add(cost, Ordering::Relaxed);
            }
            sent
        });
        match event {
            FlowEvent::Completed(flow) | FlowEvent::Updated(flow)
                if !reliable.subscribers.is_empty() =>
            {
                reliable.unsaved.insert(flow.id, Arc::clone(flow));
            }
            FlowEvent::Removed(id) => {
                reliable.unsaved.remove(id);
            }
            FlowEvent::Cleared { .. } => reliable.unsaved.clear(),
            _ => {}
        }
    }

    /// Asks the session store's writer to remove every flow that has ended: it gets
    /// [`FlowEvent::Cleared`] after every flow published so far, drops those it has
    /// not saved, empties the store and reports with [`FlowBus::cleared`]. The
    /// generation to wait for ([`FlowBus::wait_cleared`]); `None` when there is no
    /// writer (the caller clears the store itself).
    pub fn publish_clear(&self) -> Option<u64> {
        let mut reliable = self.lock_reliable();
        if reliable.subscribers.is_empty() {
            return None;
        }
        reliable.clears_requested += 1;
        let generation = reliable.clears_requested;
        self.send_reliable(&mut reliable, &FlowEvent::Cleared { generation });
        Some(generation)
    }

    /// The writer did the clear `generation` (or failed to: `failure`); front ends
    /// are told now, when the store is empty.
    pub fn cleared(&self, generation: u64, failure: Option<String>) {
        let (done, changed) = &*self.clears_done;
        {
            let mut done = done.lock().unwrap_or_else(|p| p.into_inner());
            done.generation = done.generation.max(generation);
            if let Some(why) = failure {
                done.failure = Some((generation, why));
            }
        }
        changed.notify_all();
        self.feed.send(FlowEvent::Cleared { generation });
    }

    /// Waits up to `wait` for the writer to do the clear `generation`.
    pub fn wait_cleared(&self, generation: u64, wait: Duration) -> Result<(), String> {
        let (done, changed) = &*self.clears_done;
        let done = done.lock().unwrap_or_else(|p| p.into_inner());
        let (done, timeout) = changed
            .wait_timeout_while(done, wait, |done| done.generation < generation)
            .unwrap_or_else(|p| p.into_inner());
        if timeout.timed_out() {
            return Err(format!("the session store did not clear within {wait:?}"));
        }
        match &done.failure {
            Some((failed, why)) if *failed == generation => Err(why.clone()),
            _ => Ok(()),
        }
    }

    /// Tells the live feed only: for a change already in the session store (a user's
    /// edit, revert or duplicate of a recorded flow), which the store's writer must
    /// not write again — it would take the edited flow for a new recording of the
    /// proxy's, and keep it as the original that revert puts back.
    pub fn publish_live(&self, event: FlowEvent) {
        self.feed.send(event);
    }

    /// What an event costs a reliable subscriber's queue, roughly: its bodies and
    /// messages plus a fixed share for the head.
    pub fn cost_of(event: &FlowEvent) -> usize {
        periscope_flow::live::cost_of(event)
    }

    /// A reliable subscriber is done with events that cost `cost` in all.
    pub fn release(&self, cost: usize) {
        let before = self.backlog.bytes.fetch_sub(cost, Ordering::AcqRel);
        if before >= BACKLOG_LIMIT && before.saturating_sub(cost) < BACKLOG_LIMIT {
            self.backlog.room.notify_waiters();
        }
    }

    /// Returns once the reliable subscribers are less than [`BACKLOG_LIMIT`] behind
    /// (at once, nearly always), or after [`ROOM_WAIT`] at the most: a subscriber that
    /// stopped releasing must slow the proxy down, not freeze it.
    pub async fn wait_for_room(&self) {
        let deadline = tokio::time::Instant::now() + ROOM_WAIT;
        loop {
            if self.backlog.bytes.load(Ordering::Acquire) < BACKLOG_LIMIT {
                return;
            }
            let notified = self.backlog.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.backlog.bytes.load(Ordering::Acquire) < BACKLOG_LIMIT {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        // Front ends print these; tracing only keeps a debug copy for -vv.
        let entry = LogEntry::new(level, message);
        tracing::debug!(?level, "{}", entry.message);
        self.publish(FlowEvent::Log(entry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn big_log_entry() -> FlowEvent {
        FlowEvent::Log(LogEntry::new(LogLevel::Info, "x".repeat(BACKLOG_LIMIT)))
    }

    #[tokio::test]
    async fn requests_wait_while_the_store_is_far_behind_and_go_on_when_it_catches_up() {
        let bus = FlowBus::new();
        let _store = bus.subscribe_reliable();
        let started = Instant::now();
        bus.wait_for_room().await;
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "no backlog, no wait"
        );

        let event = big_log_entry();
        let cost = FlowBus::cost_of(&event);
        bus.publish(event);
        let waiting = {
            let bus = bus.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                bus.wait_for_room().await;
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !waiting.is_finished(),
            "a request waits while the store is behind"
        );
        bus.release(cost);
        let waited = waiting.await.unwrap();
        assert!(
            waited < ROOM_WAIT,
            "released at once when the store caught up: {waited:?}"
        );
    }

    #[tokio::test]
    async fn a_store_that_stopped_reading_delays_requests_but_does_not_freeze_them() {
        let bus = FlowBus::new();
        let _store = bus.subscribe_reliable();
        bus.publish(big_log_entry());
        let started = Instant::now();
        bus.wait_for_room().await;
        let waited = started.elapsed();
        assert!(waited >= ROOM_WAIT && waited < ROOM_WAIT * 3, "{waited:?}");
    }
}
