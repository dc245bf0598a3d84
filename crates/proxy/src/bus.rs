//! The one way flows leave the proxy: a broadcast of [`FlowEvent`]s that the dump
//! printer, the store and the user interfaces subscribe to.

use periscope_flow::{FlowEvent, LogEntry, LogLevel};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};

/// Large enough that a front end pausing for a redraw does not miss flows; a
/// subscriber that falls further behind is told how many it missed.
const CAPACITY: usize = 16 * 1024;

#[derive(Clone)]
pub struct FlowBus {
    sender: broadcast::Sender<FlowEvent>,
    /// Subscribers that must see every event (the session store): unbounded queues,
    /// since dropping a flow is worse than holding it in memory for a moment.
    reliable: Arc<Mutex<Vec<mpsc::UnboundedSender<FlowEvent>>>>,
    /// Whether anyone shows requests before their response arrives.
    requests_wanted: Arc<AtomicBool>,
}

impl Default for FlowBus {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowBus {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        FlowBus {
            sender,
            reliable: Arc::default(),
            requests_wanted: Arc::default(),
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
        self.reliable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// A subscription that never skips events.
    pub fn subscribe_reliable(&self) -> mpsc::UnboundedReceiver<FlowEvent> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.reliable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sender);
        receiver
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FlowEvent> {
        self.sender.subscribe()
    }

    pub fn publish(&self, event: FlowEvent) {
        {
            let mut reliable = self.reliable.lock().unwrap_or_else(|p| p.into_inner());
            reliable.retain(|subscriber| subscriber.send(event.clone()).is_ok());
        }
        // No subscriber is not an error: a headless proxy may record nothing.
        let _ = self.sender.send(event);
    }

    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        // Front ends print these; tracing only keeps a debug copy for -vv.
        let entry = LogEntry::new(level, message);
        tracing::debug!(?level, "{}", entry.message);
        self.publish(FlowEvent::Log(entry));
    }
}
