//! The flow in flight: filled in by the relay as the exchange progresses, published
//! once when it ends — with its response, or with its error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use periscope_flow::{
    Body, ConnectionInfo, Flow, FlowError, FlowErrorKind, FlowEvent, Headers, Milestone, Response,
    Timestamp,
};
use periscope_tls::TlsConnectionState;

use crate::bus::FlowBus;

/// Which message of the exchange a body belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

pub struct FlowRecorder {
    flow: Mutex<Flow>,
    bus: FlowBus,
    client_tls: Option<Arc<TlsConnectionState>>,
    server_tls: Mutex<Option<Arc<TlsConnectionState>>>,
    published: AtomicBool,
    /// Request body bytes relayed so far: the response timeout waits while they move.
    request_bytes: AtomicU64,
}

impl FlowRecorder {
    pub fn new(flow: Flow, bus: FlowBus, client_tls: Option<Arc<TlsConnectionState>>) -> Arc<Self> {
        Arc::new(FlowRecorder {
            flow: Mutex::new(flow),
            bus,
            client_tls,
            server_tls: Mutex::new(None),
            published: AtomicBool::new(false),
            request_bytes: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the flow in flight.
    pub fn update<R>(&self, f: impl FnOnce(&mut Flow) -> R) -> R {
        f(&mut self.lock())
    }

    /// Attaches the server connection; its TLS events from now on belong to this flow.
    pub fn set_server(
        &self,
        info: ConnectionInfo,
        milestones: &[(Milestone, Timestamp)],
        tls: Option<Arc<TlsConnectionState>>,
    ) {
        {
            let mut flow = self.lock();
            for (milestone, at) in milestones {
                flow.timeline.mark(*milestone, *at);
            }
            flow.server = Some(info);
        }
        *self.server_tls.lock().unwrap_or_else(|p| p.into_inner()) = tls;
    }

    pub fn server_tls(&self) -> Option<Arc<TlsConnectionState>> {
        self.server_tls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_response(&self, response: Response) {
        let mut flow = self.lock();
        flow.timeline
            .mark(Milestone::ResponseStarted, Timestamp::now());
        flow.response = Some(response);
    }

    pub fn set_body(&self, side: Side, body: Body, trailers: Option<Headers>) {
        let mut flow = self.lock();
        match side {
            Side::Request => {
                flow.request.body = body;
                flow.request.trailers = trailers;
                flow.timeline
                    .mark(Milestone::RequestComplete, Timestamp::now());
            }
            Side::Response => {
                if let Some(response) = flow.response.as_mut() {
                    response.body = body;
                    response.trailers = trailers;
                }
                flow.timeline
                    .mark(Milestone::ResponseComplete, Timestamp::now());
            }
        }
    }

    /// Records an error; the first one wins (later ones are consequences).
    pub fn set_error(&self, kind: FlowErrorKind, message: impl Into<String>) {
        let mut flow = self.lock();
        if flow.error.is_none() {
            flow.error = Some(FlowError {
                kind,
                message: message.into(),
                at: Timestamp::now(),
            });
        }
    }

    pub fn add_request_bytes(&self, count: u64) {
        self.request_bytes.fetch_add(count, Ordering::Relaxed);
    }

    pub fn request_bytes(&self) -> u64 {
        self.request_bytes.load(Ordering::Relaxed)
    }

    /// When the request body was relayed whole, if it was.
    pub fn request_complete_at(&self) -> Option<Timestamp> {
        self.lock().timeline.milestone(Milestone::RequestComplete)
    }

    /// The error recorded so far, if any.
    pub fn error(&self) -> Option<FlowError> {
        self.lock().error.clone()
    }

    /// Moves TLS events recorded on either connection into the flow's timeline.
    pub fn collect_tls_events(&self) {
        let mut events = Vec::new();
        if let Some(client) = &self.client_tls {
            events.extend(client.take_events());
        }
        if let Some(server) = self.server_tls() {
            events.extend(server.take_events());
        }
        if events.is_empty() {
            return;
        }
        let mut flow = self.lock();
        for (at, event) in events {
            flow.timeline.push_tls(at, event);
        }
    }

    /// A line in the flow's timeline about something Periscope did (a protocol
    /// fallback, a retry).
    pub fn push_note(&self, message: String) {
        self.lock().timeline.push_note(Timestamp::now(), message);
    }

    /// Publishes the request head for live views (when a front end asked for them:
    /// copying every request head costs time nobody else needs).
    pub fn publish_request(&self) {
        if !self.bus.wants_requests() {
            return;
        }
        let snapshot = Arc::new(self.lock().clone());
        self.bus.publish(FlowEvent::RequestReceived(snapshot));
    }

    /// Publishes a flow that changed after it finished (its WebSocket closed).
    pub fn publish_update(&self) {
        self.collect_tls_events();
        let snapshot = Arc::new(self.lock().clone());
        self.bus.publish(FlowEvent::Updated(snapshot));
    }

    pub fn publish(&self, event: FlowEvent) {
        self.bus.publish(event);
    }

    /// Publishes the finished flow, once.
    pub fn finish(&self) {
        if self.published.swap(true, Ordering::AcqRel) {
            return;
        }
        self.collect_tls_events();
        let snapshot = {
            let mut flow = self.lock();
            if flow.websocket.is_some() {
                // Its messages are still to come: keep the flow, publish a copy.
                flow.clone()
            } else {
                // Nothing changes after this point: hand the flow over without a copy.
                let placeholder = placeholder(&flow);
                std::mem::replace(&mut *flow, placeholder)
            }
        };
        self.bus.publish(FlowEvent::Completed(Arc::new(snapshot)));
    }

    pub fn finish_with_error(&self, kind: FlowErrorKind, message: impl Into<String>) {
        self.set_error(kind, message);
        self.finish();
    }
}

/// What stays in a recorder once its flow was handed over: late updates (a request
/// body finishing after the response) land here and are dropped.
fn placeholder(flow: &Flow) -> Flow {
    Flow {
        id: flow.id,
        client: ConnectionInfo {
            id: flow.client.id,
            peer: None,
            local: None,
            target: None,
            tls: None,
        },
        server: None,
        request: periscope_flow::Request {
            method: String::new(),
            scheme: String::new(),
            host: String::new(),
            port: 0,
            path: String::new(),
            http_version: String::new(),
            stream_id: None,
            headers: Headers::default(),
            body: Body::default(),
            trailers: None,
        },
        response: None,
        error: None,
        timeline: periscope_flow::Timeline::new(),
        marked: false,
        intercepted_tls: flow.intercepted_tls,
        websocket: None,
    }
}
