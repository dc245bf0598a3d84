//! Writes every flow and log entry to the session store as it happens, on a thread of
//! its own (SQLite calls block), in batches so a busy proxy costs one transaction per
//! batch rather than per flow.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use periscope_flow::store::{FlowStore, StoreError};
use periscope_flow::{Flow, FlowEvent};
use periscope_proxy::FlowBus;

const BATCH: usize = 512;
/// How long a batch may wait for more flows before it is committed.
const GATHER: Duration = Duration::from_millis(20);

/// The running writer; [`Recording::finish`] saves what is queued and stops it.
pub struct Recording {
    thread: JoinHandle<()>,
    bus: FlowBus,
}

impl Recording {
    /// Saves every flow already published, then returns (called at exit, so a
    /// `periscope dump -w` stopped by ctrl-c or SIGTERM keeps its last flows).
    pub fn finish(self) {
        self.bus.close_reliable();
        if self.thread.join().is_err() {
            eprintln!("periscope: error: the session-store thread failed");
        }
    }
}

pub fn spawn(store: Arc<FlowStore>, bus: &FlowBus) -> Recording {
    let mut events = bus.subscribe_reliable();
    let writer_bus = bus.clone();
    let thread = std::thread::Builder::new()
        .name("session-store".into())
        .spawn(move || {
            let bus = writer_bus;
            let mut reported_failure = false;
            let mut flows: Vec<Arc<Flow>> = Vec::with_capacity(BATCH);
            let mut removed = Vec::new();
            while let Some(first) = events.blocking_recv() {
                let started = Instant::now();
                let mut next = Some(first);
                let mut taken = 0;
                while let Some(event) = next.take() {
                    taken += FlowBus::cost_of(&event);
                    match event {
                        FlowEvent::Completed(flow) | FlowEvent::Updated(flow) => flows.push(flow),
                        FlowEvent::Log(entry) => {
                            if let Err(error) = store.append_log(&entry) {
                                report(&error, &mut reported_failure);
                            }
                        }
                        // Deleted already by whoever removed it; again here, in case
                        // the flow was still queued then.
                        FlowEvent::Removed(id) => removed.push(id),
                        FlowEvent::Cleared { generation } => {
                            // Everything gathered so far was published before the
                            // clear: dropped unsaved, never visible again.
                            flows.clear();
                            removed.clear();
                            let failure = store.clear().err().map(|error| {
                                report(&error, &mut reported_failure);
                                error.to_string()
                            });
                            bus.cleared(generation, failure);
                        }
                        FlowEvent::RequestReceived(_) | FlowEvent::WebSocketMessage { .. } => {}
                    }
                    if flows.len() < BATCH {
                        next = events.try_recv().ok();
                        if next.is_none() && !flows.is_empty() && started.elapsed() < GATHER {
                            // More flows are likely on their way under load; one commit
                            // for many costs far less than one each (every commit
                            // rewrites its dirty pages into the WAL).
                            std::thread::sleep(GATHER / 4);
                            next = events.try_recv().ok();
                        }
                    }
                }
                if !flows.is_empty() {
                    match store.insert_many(&flows) {
                        Ok(()) => reported_failure = false,
                        Err(error) => report(&error, &mut reported_failure),
                    }
                    // Saved or failed, either way no longer waiting: a failed write
                    // was reported, and keeping the flows would grow without bound.
                    bus.saved(&flows);
                    flows.clear();
                }
                for id in removed.drain(..) {
                    if let Err(error) = store.delete(id) {
                        report(&error, &mut reported_failure);
                    }
                }
                bus.release(taken);
            }
        })
        .expect("cannot start the session-store thread");
    Recording {
        thread,
        bus: bus.clone(),
    }
}

/// Says once (until writes work again) that flows are not being saved; the proxy keeps
/// serving either way.
fn report(error: &StoreError, reported: &mut bool) {
    if *reported {
        return;
    }
    *reported = true;
    match error {
        StoreError::DiskFull { .. } => eprintln!(
            "periscope: error: the disk is full; flows are no longer saved to the session \
             file ({error}). The proxy keeps running."
        ),
        _ => eprintln!("periscope: error: cannot save flows to the session file: {error}"),
    }
}
