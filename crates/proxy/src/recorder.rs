//! The flow in flight: created in one place when a request arrives, filled in by the
//! relay as the exchange progresses, published once when it ends — with its response,
//! with its error, or, when the exchange was abandoned because the client left, with
//! that error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use http::{Request, Version};
use periscope_flow::{
    Body, ConnectionInfo, Flow, FlowError, FlowErrorKind, FlowEvent, FlowId, Headers, Milestone,
    Response, Timeline, Timestamp,
};
use periscope_tls::{TlsConnectionState, TlsEventTap};

/// How the note about TLS events a flow could not keep begins.
const DROPPED: &str = "more TLS events happened than a flow keeps";

use crate::bus::FlowBus;
use crate::headers::record_headers;
use crate::http2::ClientStreamId;
use crate::intercept::{KillSwitch, LiveFlows};
use crate::io::{StallNotice, WriteStall};

/// Which message of the exchange a body belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// What every flow of one client connection shares: where it came from.
#[derive(Clone)]
pub struct ClientContext {
    pub info: ConnectionInfo,
    /// When the connection was made and its TLS handshake done.
    pub milestones: Vec<(Milestone, Timestamp)>,
    pub tls: Option<Arc<TlsConnectionState>>,
    /// The requests came through an intercepted CONNECT tunnel.
    pub intercepted_tls: bool,
    /// Set when writes to the client were given up because it stopped reading.
    pub write_stall: Arc<WriteStall>,
    /// Closes the client's connection at once (a reset) when killed: an HTTP/1.1
    /// flow the user kills takes its connection along.
    pub connection_kill: Arc<KillSwitch>,
    /// The listener the client came through (`None` for replays).
    pub listener: Option<Arc<crate::listener::Listener>>,
}

impl ClientContext {
    /// The client's address for log lines.
    pub fn peer_label(&self) -> String {
        self.info
            .peer
            .map(|p| p.to_string())
            .unwrap_or_else(|| "client".into())
    }
}

/// In a request's extensions: the id its flow must have (a replay, whose id the user
/// gets before the exchange starts).
#[derive(Clone, Copy, Debug)]
pub struct PresetFlowId(pub FlowId);

/// In a request's extensions: the flow this request replays.
#[derive(Clone, Copy, Debug)]
pub struct ReplayOf(pub FlowId);

pub struct FlowRecorder {
    id: FlowId,
    /// `None` once the flow was handed over (late updates then have nowhere to go).
    flow: Mutex<Option<Flow>>,
    bus: FlowBus,
    /// The TLS events of the client's connection while this flow is in flight.
    client_events: Mutex<Option<TlsEventTap>>,
    /// The TLS events of the server connection this flow uses, while in flight.
    server_events: Mutex<Option<TlsEventTap>>,
    client_write_stall: Arc<WriteStall>,
    /// Set when the client's HTTP/2 stream never opened its window for the response.
    stream_stall: Arc<WriteStall>,
    /// When front ends can act on flows: the registry this flow is in, and its kill
    /// switch.
    live: OnceLock<(Arc<LiveFlows>, Arc<KillSwitch>)>,
    published: AtomicBool,
    /// Request body bytes relayed so far: the response timeout waits while they move.
    request_bytes: AtomicU64,
    /// Response body bytes relayed so far, for the error of a client that left.
    response_bytes: AtomicU64,
    /// A hook asked to pause the flow for the user at the end of this hook point.
    intercept_asked: AtomicBool,
}

impl FlowRecorder {
    /// The one place a flow is created: a request from `client`, for `scheme://host:port`.
    pub fn begin<B>(
        bus: FlowBus,
        client: &ClientContext,
        request: &Request<B>,
        target: (&str, String, u16),
        started: Timestamp,
    ) -> Arc<Self> {
        let (scheme, host, port) = target;
        let path = match request.uri().path_and_query() {
            Some(path) => path.as_str().to_owned(),
            // A CONNECT's authority-form target names host and port, and no path.
            None if request.method() == http::Method::CONNECT => String::new(),
            None => "/".to_owned(),
        };
        let mut timeline = Timeline::new();
        for (milestone, at) in &client.milestones {
            timeline.mark(*milestone, *at);
        }
        timeline.mark(Milestone::RequestStarted, started);
        let extensions = request.extensions();
        let id = extensions
            .get::<PresetFlowId>()
            .map_or_else(FlowId::new, |preset| preset.0);
        let annotations = periscope_flow::Annotations {
            replay_of: extensions.get::<ReplayOf>().map(|of| of.0),
            ..Default::default()
        };
        let flow = Flow {
            id,
            client: client.info.clone(),
            server: None,
            request: periscope_flow::Request {
                method: request.method().as_str().to_owned(),
                scheme: scheme.to_owned(),
                host,
                port,
                path,
                http_version: version_label(request.version()).to_owned(),
                stream_id: request.extensions().get::<ClientStreamId>().map(|id| id.0),
                headers: record_headers(request.headers()),
                body: Body::default(),
                trailers: None,
            },
            response: None,
            error: None,
            timeline,
            marked: false,
            intercepted_tls: client.intercepted_tls,
            websocket: None,
            intercepted: None,
            annotations,
            listener: client.listener.as_ref().map(|l| l.record.clone()),
            tcp: None,
            rules: Vec::new(),
        };
        Self::with_flow(bus, client, flow)
    }

    /// The flow of a connection relayed as bytes: `TCP tcp://host:port`, no response.
    pub fn begin_tcp(
        bus: FlowBus,
        client: &ClientContext,
        (host, port): (String, u16),
        tcp: periscope_flow::TcpSession,
        started: Timestamp,
    ) -> Arc<Self> {
        let mut timeline = Timeline::new();
        for (milestone, at) in &client.milestones {
            timeline.mark(*milestone, *at);
        }
        timeline.mark(Milestone::RequestStarted, started);
        let flow = Flow {
            id: FlowId::new(),
            client: client.info.clone(),
            server: None,
            request: periscope_flow::Request {
                method: "TCP".to_owned(),
                scheme: "tcp".to_owned(),
                host,
                port,
                path: String::new(),
                http_version: String::new(),
                stream_id: None,
                headers: Headers::default(),
                body: Body::default(),
                trailers: None,
            },
            response: None,
            error: None,
            timeline,
            marked: false,
            intercepted_tls: client.intercepted_tls,
            websocket: None,
            intercepted: None,
            annotations: Default::default(),
            listener: client.listener.as_ref().map(|l| l.record.clone()),
            tcp: Some(tcp),
            rules: Vec::new(),
        };
        Self::with_flow(bus, client, flow)
    }

    fn with_flow(bus: FlowBus, client: &ClientContext, flow: Flow) -> Arc<Self> {
        let id = flow.id;
        Arc::new(FlowRecorder {
            id: flow.id,
            flow: Mutex::new(Some(flow)),
            bus,
            client_events: Mutex::new(client.tls.as_ref().map(|tls| tls.tap_for(id))),
            server_events: Mutex::new(None),
            client_write_stall: Arc::clone(&client.write_stall),
            stream_stall: Arc::default(),
            live: OnceLock::new(),
            published: AtomicBool::new(false),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            intercept_asked: AtomicBool::new(false),
        })
    }

    /// A hook (an addon script's `flow.intercept()`) asks that the flow pause for the
    /// user once every hook of this point ran, as the intercept filter pauses it
    /// (`on: false` withdraws the request). Only a flow someone can resume (a front end
    /// that acts on flows runs) pauses: returns whether this one can.
    pub fn ask_intercept(&self, on: bool) -> bool {
        if self.live.get().is_none() {
            return false;
        }
        self.intercept_asked.store(on, Ordering::Release);
        true
    }

    /// Whether a hook asked to pause the flow here; the request is used up.
    pub(crate) fn take_intercept_ask(&self) -> bool {
        self.intercept_asked.swap(false, Ordering::AcqRel)
    }

    pub fn id(&self) -> FlowId {
        self.id
    }

    /// Puts the flow in `live`, where front ends find it while it is in flight.
    pub fn attach_live(self: &Arc<Self>, live: &Arc<LiveFlows>) {
        let kill = live.register(self);
        let _ = self.live.set((Arc::clone(live), kill));
    }

    /// The flow's kill switch, when front ends can act on it.
    pub fn kill_switch(&self) -> Option<&Arc<KillSwitch>> {
        self.live.get().map(|(_, kill)| kill)
    }

    /// Deleted by the user while in flight: nothing more of it is published.
    fn forgotten(&self) -> bool {
        self.kill_switch().is_some_and(|kill| kill.is_forgotten())
    }

    fn lock(&self) -> MutexGuard<'_, Option<Flow>> {
        self.flow.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the flow in flight; nothing happens once it was handed over.
    pub fn update(&self, f: impl FnOnce(&mut Flow)) {
        if let Some(flow) = self.lock().as_mut() {
            f(flow);
        }
    }

    /// Reads the flow in flight; `None` once it was handed over.
    pub fn read<R>(&self, f: impl FnOnce(&Flow) -> R) -> Option<R> {
        self.lock().as_ref().map(f)
    }

    /// Attaches the server connection; its TLS events from now on belong to this flow
    /// (those of a connection it used before, on an earlier attempt, no longer do).
    pub fn set_server(
        &self,
        info: ConnectionInfo,
        milestones: &[(Milestone, Timestamp)],
        tls: Option<Arc<TlsConnectionState>>,
    ) {
        self.update(|flow| {
            for (milestone, at) in milestones {
                flow.timeline.mark(*milestone, *at);
            }
            flow.server = Some(info);
        });
        let tap = tls.as_ref().map(|tls| tls.tap_for(self.id));
        *self.server_events.lock().unwrap_or_else(|p| p.into_inner()) = tap;
    }

    pub fn set_response(&self, response: Response) {
        self.update(|flow| {
            flow.timeline
                .mark(Milestone::ResponseStarted, Timestamp::now());
            flow.response = Some(response);
        });
    }

    /// A body a hook read whole before it goes on: the flow shows it whole (its end
    /// is marked when it has passed, by [`FlowRecorder::set_body`]).
    pub fn set_whole_body(&self, side: Side, content: bytes::Bytes) {
        self.update(|flow| match side {
            Side::Request => flow.request.body = Body::complete(content),
            Side::Response => {
                if let Some(response) = flow.response.as_mut() {
                    response.body = Body::complete(content);
                }
            }
        });
    }

    pub fn set_body(&self, side: Side, body: Body, trailers: Option<Headers>) {
        self.update(|flow| match side {
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
        });
    }

    /// Records an error; the first one wins (later ones are consequences).
    pub fn set_error(&self, kind: FlowErrorKind, message: impl Into<String>) {
        self.update(|flow| {
            if flow.error.is_none() {
                flow.error = Some(FlowError {
                    kind,
                    message: message.into(),
                    at: Timestamp::now(),
                });
            }
        });
    }

    /// Counts body bytes relayed on `side`.
    pub fn add_body_bytes(&self, side: Side, count: u64) {
        let counter = match side {
            Side::Request => &self.request_bytes,
            Side::Response => &self.response_bytes,
        };
        counter.fetch_add(count, Ordering::Relaxed);
    }

    pub fn request_bytes(&self) -> u64 {
        self.request_bytes.load(Ordering::Relaxed)
    }

    /// When the request body was relayed whole, if it was.
    pub fn request_complete_at(&self) -> Option<Timestamp> {
        self.read(|flow| flow.timeline.milestone(Milestone::RequestComplete))
            .flatten()
    }

    /// The error recorded so far, if any.
    pub fn error(&self) -> Option<FlowError> {
        self.read(|flow| flow.error.clone()).flatten()
    }

    /// Moves the TLS events of both connections since the last call into the flow's
    /// timeline, with a note when the bounded queue had to drop some.
    pub fn collect_tls_events(&self) {
        let mut events = Vec::new();
        let mut dropped = 0;
        for taps in [&self.client_events, &self.server_events] {
            if let Some(tap) = taps.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                events.extend(tap.take());
                dropped += tap.dropped();
            }
        }
        if events.is_empty() && dropped == 0 {
            return;
        }
        self.update(|flow| {
            for (at, event) in events {
                flow.timeline.push_tls(at, event);
            }
            if dropped > 0
                && !flow
                    .timeline
                    .notes()
                    .any(|(_, note)| note.starts_with(DROPPED))
            {
                flow.timeline.push_note(
                    Timestamp::now(),
                    format!("{DROPPED} ({dropped} so far): the flow keeps the first ones"),
                );
            }
        });
    }

    /// The flow is over: events on its connections from now on belong to others.
    fn detach_tls_events(&self) {
        for taps in [&self.client_events, &self.server_events] {
            taps.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }

    /// A line in the flow's timeline about something Periscope did (a protocol
    /// fallback, a retry).
    pub fn push_note(&self, message: String) {
        self.update(|flow| flow.timeline.push_note(Timestamp::now(), message));
    }

    /// Publishes the request head for live views (when a front end asked for them:
    /// copying every request head costs time nobody else needs).
    pub fn publish_request(&self) {
        if !self.bus.wants_requests() {
            return;
        }
        if let Some(snapshot) = self.read(|flow| Arc::new(flow.clone())) {
            self.bus.publish(FlowEvent::RequestReceived(snapshot));
        }
    }

    /// Publishes the flow in flight as it is now (paused, resumed, edited), whoever
    /// asked for requests in flight or not: a front end showing an intercepted flow
    /// must see it.
    pub fn publish_live(&self) {
        if self.forgotten() {
            return;
        }
        if let Some(snapshot) = self.read(|flow| Arc::new(flow.clone())) {
            self.bus.publish(FlowEvent::RequestReceived(snapshot));
        }
    }

    /// Publishes a flow that changed after it finished (its WebSocket closed).
    pub fn publish_update(&self) {
        if self.forgotten() {
            return;
        }
        self.collect_tls_events();
        if let Some(snapshot) = self.read(|flow| Arc::new(flow.clone())) {
            self.bus.publish(FlowEvent::Updated(snapshot));
        }
    }

    pub fn publish(&self, event: FlowEvent) {
        self.bus.publish(event);
    }

    /// Publishes the finished flow, once.
    pub fn finish(&self) {
        if self.published.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.forgotten() {
            self.detach_tls_events();
            self.lock().take();
            self.leave_live();
            return;
        }
        self.collect_tls_events();
        let snapshot = {
            let mut flow = self.lock();
            if let Some(current) = flow.as_mut() {
                self.count_bodies_still_streaming(current);
                // Nothing waits for the user any more once the exchange is over (a
                // certificate request held past the flow's end is dropped with it); a
                // WebSocket's held messages come later and set it again.
                current.intercepted = None;
            }
            if flow.as_ref().is_some_and(|f| f.websocket.is_none()) {
                self.detach_tls_events();
            }
            match flow.as_ref() {
                // Its messages are still to come: keep the flow, publish a copy.
                Some(current) if current.websocket.is_some() => Some(current.clone()),
                // Nothing changes after this point: hand the flow over without a copy.
                _ => flow.take(),
            }
        };
        let websocket = snapshot.as_ref().is_some_and(|f| f.websocket.is_some());
        if let Some(snapshot) = snapshot {
            self.bus.publish(FlowEvent::Completed(Arc::new(snapshot)));
        }
        // A WebSocket stays in flight (killable) until its relay ends.
        if !websocket {
            self.leave_live();
        }
    }

    /// A body still on its way when the flow ends (killed, or failed on the other
    /// leg) reports to the flow only when it is dropped, after the flow was published:
    /// the counters say how much of it passed, and the flow keeps that.
    fn count_bodies_still_streaming(&self, flow: &mut Flow) {
        fn count(body: &mut Body, passed: u64) {
            if passed > body.size {
                body.size = passed;
                body.truncated = (body.content.len() as u64) < passed;
            }
        }
        // Only a side whose body never completed: a request resent after a refusal
        // (HTTP_1_1_REQUIRED, REFUSED_STREAM, a GOAWAY race) is counted once per
        // attempt, so the counter is no measure of a body that completed.
        let completed = |flow: &Flow, milestone| flow.timeline.milestone(milestone).is_some();
        if !completed(flow, Milestone::RequestComplete) {
            count(&mut flow.request.body, self.request_bytes());
        }
        if !completed(flow, Milestone::ResponseComplete) {
            if let Some(response) = flow.response.as_mut() {
                count(
                    &mut response.body,
                    self.response_bytes.load(Ordering::Relaxed),
                );
            }
        }
    }

    fn leave_live(&self) {
        if let Some((live, _)) = self.live.get() {
            live.remove(self.id);
        }
    }

    pub fn finish_with_error(&self, kind: FlowErrorKind, message: impl Into<String>) {
        self.set_error(kind, message);
        self.finish();
    }

    /// What the client leg reports back when the response stalls on its stream.
    pub fn stall_notice(&self) -> StallNotice {
        StallNotice(Arc::clone(&self.stream_stall))
    }

    /// Ends a flow whose client is gone after `relayed` bytes of the response: it
    /// closed or reset the connection, or stopped reading and was given up (or the
    /// user killed the flow, which closes both legs).
    pub fn finish_client_gone(&self, relayed: u64) {
        if let Some(kill) = self.kill_switch().filter(|kill| kill.is_killed()) {
            self.finish_with_error(
                FlowErrorKind::Killed,
                format!("{} after {relayed} bytes of the response", kill.reason()),
            );
            return;
        }
        let stalled = self
            .client_write_stall
            .stalled_for()
            .or_else(|| self.stream_stall.stalled_for());
        if let Some(stalled) = stalled {
            self.finish_with_error(
                FlowErrorKind::Timeout,
                format!(
                    "the client stopped reading: no progress writing the response for {} s \
                     after {relayed} bytes of it",
                    stalled.as_secs_f64()
                ),
            );
            return;
        }
        let waiting = self.read(|flow| flow.response.is_none()).unwrap_or(false);
        let context = if waiting {
            " (it left while Periscope waited for the server's answer)"
        } else {
            ""
        };
        self.finish_with_error(
            FlowErrorKind::ClientDisconnected,
            format!("the client disconnected after {relayed} bytes of the response{context}"),
        );
    }
}

/// A flow whose exchange was dropped before it ended: its client left (an HTTP/1.1
/// connection closed, an HTTP/2 stream reset) while Periscope waited for the server
/// or relayed the answer. It is stored with that error rather than lost.
impl Drop for FlowRecorder {
    fn drop(&mut self) {
        self.leave_live();
        if self.published.load(Ordering::Acquire) {
            return;
        }
        let relayed = self.response_bytes.load(Ordering::Relaxed);
        let waiting = self.read(|flow| flow.response.is_none()).unwrap_or(false);
        let context = if waiting {
            " (it left while Periscope waited for the server's answer)"
        } else {
            ""
        };
        self.finish_with_error(
            FlowErrorKind::ClientDisconnected,
            format!("the client disconnected after {relayed} bytes of the response{context}"),
        );
    }
}

pub fn version_label(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientContext {
        ClientContext {
            info: ConnectionInfo {
                id: 1,
                peer: Some("127.0.0.1:5000".parse().unwrap()),
                local: None,
                target: None,
                tls: None,
            },
            milestones: vec![(Milestone::ClientConnected, Timestamp(10))],
            tls: None,
            intercepted_tls: true,
            write_stall: Arc::default(),
            connection_kill: Arc::default(),
            listener: None,
        }
    }

    fn get(uri: &str) -> Request<()> {
        let mut request = Request::new(());
        *request.uri_mut() = uri.parse().unwrap();
        request.headers_mut().insert("x-a", "1".parse().unwrap());
        request
    }

    fn completed(events: &mut periscope_flow::live::FlowReceiver) -> Arc<Flow> {
        loop {
            match events.try_recv().expect("an event") {
                FlowEvent::Completed(flow) => return flow,
                _ => continue,
            }
        }
    }

    #[test]
    fn a_flow_starts_with_the_request_and_the_client_connection() {
        let bus = FlowBus::new();
        let recorder = FlowRecorder::begin(
            bus,
            &client(),
            &get("/a?b=c"),
            ("https", "example.test".into(), 8443),
            Timestamp(20),
        );
        let flow = recorder.read(Flow::clone).unwrap();
        assert_eq!(flow.request.url(), "https://example.test:8443/a?b=c");
        assert_eq!(flow.request.headers.get_str("x-a").as_deref(), Some("1"));
        assert!(flow.intercepted_tls);
        assert_eq!(
            flow.timeline.milestone(Milestone::ClientConnected),
            Some(Timestamp(10))
        );
        assert_eq!(
            flow.timeline.milestone(Milestone::RequestStarted),
            Some(Timestamp(20))
        );
        recorder.finish();
    }

    /// A finished flow, as the recorder publishes it (not published here).
    fn finished_flow() -> Arc<Flow> {
        let recorder = FlowRecorder::begin(
            FlowBus::new(),
            &client(),
            &get("/"),
            ("http", "example.test".into(), 80),
            Timestamp::now(),
        );
        let flow = Arc::new(recorder.read(Flow::clone).unwrap());
        recorder.finish();
        flow
    }

    #[test]
    fn a_clear_reaches_the_store_after_the_flows_before_it_and_front_ends_when_done() {
        let bus = FlowBus::new();
        assert_eq!(bus.publish_clear(), None, "no writer: the caller clears");

        let mut store = bus.subscribe_reliable();
        let mut front_end = bus.subscribe();
        let before = finished_flow();
        bus.publish(FlowEvent::Completed(Arc::clone(&before)));
        let generation = bus.publish_clear().expect("a writer");
        assert!(bus.unsaved(before.id).is_none(), "cleared from the shelf");
        let after = finished_flow();
        bus.publish(FlowEvent::Completed(Arc::clone(&after)));

        let order: Vec<String> = std::iter::from_fn(|| store.try_recv().ok())
            .map(|event| match event {
                FlowEvent::Completed(flow) if flow.id == before.id => "before".to_owned(),
                FlowEvent::Completed(flow) if flow.id == after.id => "after".to_owned(),
                FlowEvent::Cleared { generation } => format!("cleared {generation}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(order, ["before", "cleared 1", "after"]);
        assert!(bus.unsaved(after.id).is_some());

        let waiting = {
            let bus = bus.clone();
            std::thread::spawn(move || {
                bus.wait_cleared(generation, std::time::Duration::from_secs(10))
            })
        };
        bus.cleared(generation, None);
        assert_eq!(waiting.join().unwrap(), Ok(()));
        let told: Vec<FlowEvent> = std::iter::from_fn(|| front_end.try_recv().ok()).collect();
        assert!(
            matches!(told.last(), Some(FlowEvent::Cleared { generation: 1 })),
            "front ends hear of it once done: {told:?}"
        );
    }

    #[test]
    fn waiting_for_a_clear_ends_with_its_failure_or_a_timeout() {
        let bus = FlowBus::new();
        let _store = bus.subscribe_reliable();
        let first = bus.publish_clear().unwrap();
        bus.cleared(first, Some("disk full".into()));
        assert_eq!(
            bus.wait_cleared(first, std::time::Duration::ZERO),
            Err("disk full".into())
        );
        let second = bus.publish_clear().unwrap();
        let waited = bus.wait_cleared(second, std::time::Duration::from_millis(50));
        assert!(waited.unwrap_err().contains("did not clear"));
        bus.cleared(second, None);
        assert_eq!(bus.wait_cleared(second, std::time::Duration::ZERO), Ok(()));
    }

    #[test]
    fn a_finished_flow_is_kept_as_unsaved_until_the_store_says_it_saved_that_version() {
        let bus = FlowBus::new();
        let mut store = bus.subscribe_reliable();
        let start = |path: &str| {
            FlowRecorder::begin(
                bus.clone(),
                &client(),
                &get(path),
                ("http", "example.test".into(), 80),
                Timestamp::now(),
            )
        };
        let recorder = start("/a");
        let id = recorder.id();
        recorder.finish();
        assert!(bus.unsaved(id).is_some(), "published, not saved yet");
        let FlowEvent::Completed(first) = store.try_recv().unwrap() else {
            panic!("the store gets the finished flow")
        };

        // A newer version published before the store saved the first stays kept.
        let mut newer = Flow::clone(&first);
        newer.annotations.comment = "newer".into();
        bus.publish(FlowEvent::Updated(Arc::new(newer)));
        bus.saved(std::slice::from_ref(&first));
        assert_eq!(
            bus.unsaved(id)
                .expect("the newer version")
                .annotations
                .comment,
            "newer"
        );
        let FlowEvent::Updated(second) = store.try_recv().unwrap() else {
            panic!("the store gets the update")
        };
        bus.saved(&[second]);
        assert!(bus.unsaved(id).is_none(), "saved: the store has it now");

        // A flow removed before it was saved is not kept.
        let removed = start("/b");
        let removed_id = removed.id();
        removed.finish();
        bus.publish(FlowEvent::Removed(removed_id));
        assert!(bus.unsaved_flows().is_empty());

        // Without a store nothing is kept.
        drop(store);
        let unrecorded = start("/c");
        unrecorded.finish();
        assert!(bus.unsaved_flows().is_empty());
    }

    #[test]
    fn an_abandoned_exchange_is_published_with_the_client_disconnect() {
        let bus = FlowBus::new();
        let mut events = bus.subscribe();
        let recorder = FlowRecorder::begin(
            bus,
            &client(),
            &get("/slow"),
            ("http", "example.test".into(), 80),
            Timestamp::now(),
        );
        drop(recorder);
        let flow = completed(&mut events);
        let error = flow.error.as_ref().expect("an error");
        assert_eq!(error.kind, FlowErrorKind::ClientDisconnected);
        assert!(
            error
                .message
                .starts_with("the client disconnected after 0 bytes of the response"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_finished_flow_is_published_once_and_not_again_on_drop() {
        let bus = FlowBus::new();
        let mut events = bus.subscribe();
        let recorder = FlowRecorder::begin(
            bus,
            &client(),
            &get("/"),
            ("http", "example.test".into(), 80),
            Timestamp::now(),
        );
        recorder.finish();
        recorder.set_error(FlowErrorKind::Other, "too late");
        drop(recorder);
        let flow = completed(&mut events);
        assert!(flow.error.is_none());
        assert!(events.try_recv().is_err(), "nothing more was published");
    }

    #[test]
    fn a_finished_flow_is_not_published_as_waiting_for_the_user() {
        let bus = FlowBus::new();
        let mut events = bus.subscribe();
        let recorder = FlowRecorder::begin(
            bus,
            &client(),
            &get("/vedauth"),
            ("https", "example.test".into(), 443),
            Timestamp::now(),
        );
        recorder.update(|f| {
            f.intercepted = Some(periscope_flow::Interception::ClientCertificate {
                ca_names: vec![],
                post_handshake: false,
            })
        });
        recorder.finish();
        assert_eq!(completed(&mut events).intercepted, None);
    }
}
