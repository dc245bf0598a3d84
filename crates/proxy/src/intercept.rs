//! Flows the user holds and acts on while they are in flight.
//!
//! - [`LiveFlows`]: the flows in flight, by id, each with its [`KillSwitch`] and,
//!   while paused, the way to let it go on. Only kept when a front end can act on
//!   flows (the console, the control API, `--intercept`): a plain `dump` registers
//!   nothing.
//! - [`Intercept`]: the hook that pauses flows matching the user's filter at the
//!   request (before anything goes upstream) and at the response (before anything
//!   goes back). A paused flow waits without a timeout of its own; what the user
//!   edits is applied to the exchange when it goes on.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::StatusCode;
use periscope_flow::filter::Filter;
use periscope_flow::{Flow, FlowId, Interception};
use tokio::sync::{mpsc, oneshot};

use crate::config::LiveTimeouts;
use crate::hooks::{
    rebuild_request, rebuild_response, ExchangeHook, HookFuture, RequestVerdict, ResponseVerdict,
    StageBody,
};
use crate::recorder::{FlowRecorder, Side};
use crate::websocket::{Injected, MessageGate, MessageVerdict};
use periscope_tls::{CertificateRequestHold, ClientCertificate, HeldCertificateRequest};

/// Ends one flow on demand. Everything that waits on behalf of the flow (the response
/// head, a streaming body, a WebSocket) also waits for this.
#[derive(Default)]
pub struct KillSwitch {
    killed: AtomicBool,
    reason: OnceLock<String>,
    wakers: Mutex<Vec<Waker>>,
    /// Killed with this one: an HTTP/1.1 flow takes its client connection along.
    also: OnceLock<Arc<KillSwitch>>,
    /// The user deleted the flow while it was in flight: it ends as killed, and is
    /// not recorded.
    forgotten: AtomicBool,
    /// Ended on purpose without an answer (a 444 block): the connection closes as
    /// usual (a FIN the client reads as an empty reply), not with a reset.
    quiet: AtomicBool,
}

impl KillSwitch {
    /// `other` is killed whenever this one is.
    pub fn also_kill(&self, other: Arc<KillSwitch>) {
        let _ = self.also.set(other);
    }

    pub fn kill(&self, reason: impl Into<String>) {
        let reason = reason.into();
        // Marked first: whatever the connection's end drops reads this flow as killed.
        let _ = self.reason.set(reason.clone());
        self.killed.store(true, Ordering::Release);
        if let Some(also) = self.also.get() {
            also.kill(reason);
        }
        let wakers = std::mem::take(&mut *self.lock());
        for waker in wakers {
            waker.wake();
        }
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Kills the flow and keeps it out of the session (it was deleted).
    pub fn kill_and_forget(&self, reason: impl Into<String>) {
        self.forgotten.store(true, Ordering::Release);
        self.kill(reason);
    }

    /// Ends what this switch guards (a client connection) with an ordinary close.
    pub fn close_quietly(&self, reason: impl Into<String>) {
        self.quiet.store(true, Ordering::Release);
        self.kill(reason);
    }

    /// Killed to be closed with a reset (not [`KillSwitch::close_quietly`]).
    pub fn wants_reset(&self) -> bool {
        self.is_killed() && !self.quiet.load(Ordering::Acquire)
    }

    pub fn is_forgotten(&self) -> bool {
        self.forgotten.load(Ordering::Acquire)
    }

    pub fn reason(&self) -> String {
        self.reason
            .get()
            .cloned()
            .unwrap_or_else(|| "killed in Periscope".to_owned())
    }

    /// Ready once the flow was killed; otherwise wakes `cx` when it is.
    pub fn poll_killed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_killed() {
            return Poll::Ready(());
        }
        let mut wakers = self.lock();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        drop(wakers);
        // Killed between the first check and the registration.
        if self.is_killed() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    pub async fn killed(&self) {
        poll_fn(|cx| self.poll_killed(cx)).await
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Waker>> {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the user decided about a paused flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Resume,
    Kill,
    /// A held WebSocket message goes on with this content.
    Replace(Bytes),
    /// A held WebSocket message is not delivered.
    Drop,
}

/// Why an action on a live flow is not possible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveError {
    /// Not in flight (finished, or never existed).
    Gone,
    /// In flight but not paused.
    Running,
    /// The action does not fit where the flow is.
    Unfit(String),
}

struct LiveFlow {
    recorder: Weak<FlowRecorder>,
    kill: Arc<KillSwitch>,
    pause: Option<oneshot::Sender<Decision>>,
    /// The request (or response) body was read whole, so its content may be edited.
    body_editable: bool,
    /// An open WebSocket's way in, towards the client and towards the server.
    injectors: Option<[mpsc::UnboundedSender<Injected>; 2]>,
    /// A server's certificate request waiting for the user's choice.
    held_certificate: Option<HeldCertificateRequest>,
}

/// The flows in flight, for the front ends to find and act on.
#[derive(Default)]
pub struct LiveFlows {
    flows: Mutex<HashMap<FlowId, LiveFlow>>,
}

impl LiveFlows {
    fn lock(&self) -> MutexGuard<'_, HashMap<FlowId, LiveFlow>> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a flow that just started; returns its kill switch.
    pub fn register(&self, recorder: &Arc<FlowRecorder>) -> Arc<KillSwitch> {
        let kill = Arc::new(KillSwitch::default());
        self.lock().insert(
            recorder.id(),
            LiveFlow {
                recorder: Arc::downgrade(recorder),
                kill: Arc::clone(&kill),
                pause: None,
                body_editable: false,
                injectors: None,
                held_certificate: None,
            },
        );
        kill
    }

    /// Keeps a held certificate request with the first of its flows still in flight
    /// and shows the flow as waiting; `Err` gives it back when none is.
    pub fn hold_certificate(
        &self,
        request: HeldCertificateRequest,
    ) -> Result<(), HeldCertificateRequest> {
        let recorder = {
            let mut flows = self.lock();
            let Some(owner) = request
                .owners
                .iter()
                .find(|id| {
                    flows
                        .get(id)
                        .is_some_and(|live| live.recorder.strong_count() > 0)
                })
                .copied()
            else {
                return Err(request);
            };
            let at = Interception::ClientCertificate {
                ca_names: request.ca_names.clone(),
                post_handshake: request.post_handshake,
            };
            let Some(live) = flows.get_mut(&owner) else {
                return Err(request);
            };
            let Some(recorder) = live.recorder.upgrade() else {
                return Err(request);
            };
            live.held_certificate = Some(request);
            recorder.update(|f| f.intercepted = Some(at));
            recorder
        };
        recorder.publish_live();
        Ok(())
    }

    /// Answers the flow's held certificate request.
    pub fn answer_certificate(
        &self,
        id: FlowId,
        choice: ClientCertificate,
    ) -> Result<(), LiveError> {
        let (request, recorder) = {
            let mut flows = self.lock();
            let live = flows.get_mut(&id).ok_or(LiveError::Gone)?;
            let request = live.held_certificate.take().ok_or_else(|| {
                LiveError::Unfit("no certificate request of its server waits".into())
            })?;
            (request, live.recorder.upgrade())
        };
        // The flow is shown running before the connection goes on: answered first, the
        // response could finish the flow while it still read "intercepted", and a
        // finished flow publishes nothing more, so front ends would show it held for good.
        if let Some(recorder) = recorder {
            recorder.update(|f| f.intercepted = None);
            recorder.publish_live();
        }
        request.answer(choice);
        Ok(())
    }

    /// Opens the way for messages Periscope writes into the flow's WebSocket; the
    /// receivers go to the relay (towards the client, towards the server).
    pub fn open_injection(&self, id: FlowId) -> Option<[mpsc::UnboundedReceiver<Injected>; 2]> {
        let mut flows = self.lock();
        let live = flows.get_mut(&id)?;
        let (to_client, client_receiver) = mpsc::unbounded_channel();
        let (to_server, server_receiver) = mpsc::unbounded_channel();
        live.injectors = Some([to_client, to_server]);
        Some([client_receiver, server_receiver])
    }

    /// Writes a message into the flow's open WebSocket, towards one side.
    pub fn inject(&self, id: FlowId, to_client: bool, message: Injected) -> Result<(), LiveError> {
        let flows = self.lock();
        let live = flows.get(&id).ok_or(LiveError::Gone)?;
        let injectors = live
            .injectors
            .as_ref()
            .ok_or_else(|| LiveError::Unfit("it has no open WebSocket".into()))?;
        let side = if to_client {
            &injectors[0]
        } else {
            &injectors[1]
        };
        side.send(message)
            .map_err(|_| LiveError::Unfit("its WebSocket closed".into()))
    }

    /// Decides about the WebSocket message the flow holds.
    pub fn decide_message(&self, id: FlowId, decision: Decision) -> Result<(), LiveError> {
        let recorder = self.recorder(id).ok_or(LiveError::Gone)?;
        let at_message = recorder
            .read(|f| matches!(f.intercepted, Some(Interception::WebSocketMessage { .. })))
            .unwrap_or(false);
        if !at_message {
            return Err(LiveError::Unfit("it holds no WebSocket message".into()));
        }
        let mut flows = self.lock();
        let live = flows.get_mut(&id).ok_or(LiveError::Gone)?;
        let pause = live.pause.take().ok_or(LiveError::Running)?;
        let _ = pause.send(decision);
        Ok(())
    }

    /// The flow ended.
    pub fn remove(&self, id: FlowId) {
        self.lock().remove(&id);
    }

    fn recorder(&self, id: FlowId) -> Option<Arc<FlowRecorder>> {
        self.lock().get(&id)?.recorder.upgrade()
    }

    /// The flow as it is now, if it is in flight.
    pub fn flow(&self, id: FlowId) -> Option<Flow> {
        self.recorder(id)?.read(Flow::clone)
    }

    /// Every flow in flight, oldest first.
    pub fn flows(&self) -> Vec<Flow> {
        let recorders: Vec<Arc<FlowRecorder>> = self
            .lock()
            .values()
            .filter_map(|live| live.recorder.upgrade())
            .collect();
        let mut flows: Vec<Flow> = recorders
            .iter()
            .filter_map(|r| r.read(Flow::clone))
            .collect();
        flows.sort_by_key(|f| f.id);
        flows
    }

    pub fn paused(&self) -> Vec<FlowId> {
        let mut ids: Vec<FlowId> = self
            .lock()
            .iter()
            .filter(|(_, live)| live.pause.is_some() || live.held_certificate.is_some())
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// Holds `flow` at `at` until the user decides (or kills it).
    pub async fn pause(
        &self,
        flow: &Arc<FlowRecorder>,
        at: Interception,
        body_editable: bool,
    ) -> Decision {
        let (resume, decided) = oneshot::channel();
        let kill = {
            let mut flows = self.lock();
            let Some(live) = flows.get_mut(&flow.id()) else {
                // Not registered: nobody could ever let it go.
                return Decision::Resume;
            };
            live.pause = Some(resume);
            live.body_editable = body_editable;
            Arc::clone(&live.kill)
        };
        flow.update(|f| f.intercepted = Some(at));
        flow.publish_live();
        let decision = tokio::select! {
            decision = decided => decision.unwrap_or(Decision::Kill),
            () = kill.killed() => Decision::Kill,
        };
        let decision = if kill.is_killed() {
            Decision::Kill
        } else {
            decision
        };
        if let Some(live) = self.lock().get_mut(&flow.id()) {
            live.pause = None;
        }
        flow.update(|f| f.intercepted = None);
        if decision != Decision::Kill {
            flow.publish_live();
        }
        decision
    }

    /// Lets a paused flow go on; one waiting at its server's certificate request gets
    /// the configured certificate.
    pub fn resume(&self, id: FlowId) -> Result<(), LiveError> {
        let mut flows = self.lock();
        let live = flows.get_mut(&id).ok_or(LiveError::Gone)?;
        if live.held_certificate.is_some() {
            drop(flows);
            return self.answer_certificate(id, ClientCertificate::Configured);
        }
        let resume = live.pause.take().ok_or(LiveError::Running)?;
        let _ = resume.send(Decision::Resume);
        Ok(())
    }

    /// Resumes every paused flow; how many.
    pub fn resume_all(&self) -> usize {
        let held: Vec<FlowId> = self
            .lock()
            .iter()
            .filter(|(_, live)| live.held_certificate.is_some())
            .map(|(id, _)| *id)
            .collect();
        let answered = held
            .into_iter()
            .filter(|id| {
                self.answer_certificate(*id, ClientCertificate::Configured)
                    .is_ok()
            })
            .count();
        let mut flows = self.lock();
        let mut resumed = 0;
        for resume in flows.values_mut().filter_map(|live| live.pause.take()) {
            let _ = resume.send(Decision::Resume);
            resumed += 1;
        }
        answered + resumed
    }

    /// Kills a flow, paused or not.
    pub fn kill(&self, id: FlowId, reason: &str) -> Result<(), LiveError> {
        self.end(id, reason, false)
    }

    /// Kills the flow and leaves it out of the session: the user deleted it.
    pub fn kill_and_forget(&self, id: FlowId, reason: &str) -> Result<(), LiveError> {
        self.end(id, reason, true)
    }

    fn end(&self, id: FlowId, reason: &str, forget: bool) -> Result<(), LiveError> {
        let mut flows = self.lock();
        let live = flows.get_mut(&id).ok_or(LiveError::Gone)?;
        if forget {
            live.kill.kill_and_forget(reason);
        } else {
            live.kill.kill(reason);
        }
        if let Some(pause) = live.pause.take() {
            let _ = pause.send(Decision::Kill);
        }
        // Dropped unanswered: the handshake is abandoned, the server connection fails.
        live.held_certificate = None;
        Ok(())
    }

    /// Kills every paused flow; how many.
    pub fn kill_paused(&self, reason: &str) -> usize {
        let mut flows = self.lock();
        flows
            .values_mut()
            .filter_map(|live| {
                let held = live.held_certificate.take();
                let pause = live.pause.take();
                if held.is_none() && pause.is_none() {
                    return None;
                }
                live.kill.kill(reason);
                if let Some(pause) = pause {
                    let _ = pause.send(Decision::Kill);
                }
                Some(())
            })
            .count()
    }

    /// Applies `change` to a paused flow (what goes on is the changed flow).
    pub fn edit(
        &self,
        id: FlowId,
        change: impl FnOnce(&mut Flow, bool) -> Result<(), String>,
    ) -> Result<Flow, LiveError> {
        let (recorder, body_editable) = {
            let flows = self.lock();
            let live = flows.get(&id).ok_or(LiveError::Gone)?;
            if live.pause.is_none() {
                return Err(LiveError::Running);
            }
            let recorder = live.recorder.upgrade().ok_or(LiveError::Gone)?;
            (recorder, live.body_editable)
        };
        let mut flow = recorder.read(Flow::clone).ok_or(LiveError::Gone)?;
        change(&mut flow, body_editable).map_err(LiveError::Unfit)?;
        recorder.update(|f| *f = flow.clone());
        recorder.publish_live();
        Ok(flow)
    }
}

/// The user's intercept filter as an exchange hook.
pub struct Intercept {
    filter: RwLock<Option<(String, Arc<Filter>)>>,
    live: Arc<LiveFlows>,
    body_limit: usize,
    timeouts: LiveTimeouts,
}

impl Intercept {
    pub fn new(live: Arc<LiveFlows>, body_limit: usize, timeouts: LiveTimeouts) -> Self {
        Intercept {
            filter: RwLock::new(None),
            live,
            body_limit,
            timeouts,
        }
    }

    /// Sets (or with `None`, clears) the filter; the text is what the user wrote.
    pub fn set_filter(&self, filter: Option<(String, Filter)>) {
        *self.filter.write().unwrap_or_else(|p| p.into_inner()) =
            filter.map(|(text, filter)| (text, Arc::new(filter)));
    }

    pub fn filter_text(&self) -> Option<String> {
        self.filter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(text, _)| text.clone())
    }

    /// Whether the flow matches the filter now.
    pub fn matches(&self, flow: &FlowRecorder) -> bool {
        let filter = self
            .filter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, filter)| Arc::clone(filter));
        filter.is_some_and(|filter| flow.read(|f| filter.matches(f)).unwrap_or(false))
    }
}

impl ExchangeHook for Intercept {
    fn name(&self) -> &'static str {
        "intercept"
    }

    fn request_head<'a>(
        &'a self,
        flow: &'a Arc<FlowRecorder>,
        head: &'a mut http::request::Parts,
        body: &'a mut StageBody,
    ) -> HookFuture<'a, RequestVerdict> {
        Box::pin(async move {
            // A hook before this one (an addon's `flow.intercept()`) may have asked.
            let asked = flow.take_intercept_ask();
            if !asked && !self.matches(flow) {
                return RequestVerdict::Continue;
            }
            let idle = self.timeouts.get().body_idle;
            let whole = body
                .read_whole_into(flow, Side::Request, self.body_limit, idle, None)
                .await;
            let before = flow.read(|f| f.request.clone());
            let decision = self
                .live
                .pause(flow, Interception::Request, whole.is_some())
                .await;
            if decision == Decision::Kill {
                return RequestVerdict::Kill("the flow was killed while intercepted".to_owned());
            }
            let after = flow.read(|f| f.request.clone());
            let Some(edited) = after.filter(|after| Some(after) != before.as_ref()) else {
                return RequestVerdict::Continue;
            };
            match rebuild_request(head, &edited, true) {
                Ok(()) => {
                    if whole.is_some() {
                        body.replace(edited.body.content.clone());
                    }
                    RequestVerdict::Continue
                }
                Err(why) => RequestVerdict::Kill(format!("the edited request is not valid: {why}")),
            }
        })
    }

    fn response_head<'a>(
        &'a self,
        flow: &'a Arc<FlowRecorder>,
        head: &'a mut http::response::Parts,
        body: &'a mut StageBody,
    ) -> HookFuture<'a, ResponseVerdict> {
        Box::pin(async move {
            let asked = flow.take_intercept_ask();
            if !asked && !self.matches(flow) {
                return ResponseVerdict::Continue;
            }
            // After a 101 the connection is another protocol's: there is no body to
            // read (and reading would wait for the connection to end).
            let whole = if head.status == StatusCode::SWITCHING_PROTOCOLS {
                None
            } else {
                let idle = self.timeouts.get().body_idle;
                body.read_whole_into(flow, Side::Response, self.body_limit, idle, None)
                    .await
            };
            let before = flow.read(|f| f.response.clone()).flatten();
            let decision = self
                .live
                .pause(flow, Interception::Response, whole.is_some())
                .await;
            if decision == Decision::Kill {
                return ResponseVerdict::Kill("the flow was killed while intercepted".to_owned());
            }
            let after = flow.read(|f| f.response.clone()).flatten();
            let Some(edited) = after.filter(|after| Some(after) != before.as_ref()) else {
                return ResponseVerdict::Continue;
            };
            match rebuild_response(head, &edited, true) {
                Ok(()) => {
                    if whole.is_some() {
                        body.replace(edited.body.content.clone());
                    }
                    ResponseVerdict::Continue
                }
                Err(why) => {
                    ResponseVerdict::Kill(format!("the edited response is not valid: {why}"))
                }
            }
        })
    }
}

/// Holds a flow's WebSocket messages for the user while the intercept filter matches
/// it, one message at a time.
pub struct FlowGate {
    pub recorder: Arc<FlowRecorder>,
    pub intercept: Arc<Intercept>,
    pub live: Arc<LiveFlows>,
    pub one_at_a_time: tokio::sync::Mutex<()>,
}

impl MessageGate for FlowGate {
    fn holds(&self) -> bool {
        self.intercept.matches(&self.recorder)
    }

    fn decide<'a>(
        &'a self,
        message: &'a periscope_flow::WebSocketMessage,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = MessageVerdict> + Send + 'a>> {
        Box::pin(async move {
            // A message from each side may be held at once; the flow shows one.
            let _turn = self.one_at_a_time.lock().await;
            let at = Interception::WebSocketMessage {
                message: message.clone(),
            };
            match self.live.pause(&self.recorder, at, true).await {
                Decision::Resume => MessageVerdict::Deliver,
                Decision::Replace(content) => MessageVerdict::Replace(content),
                Decision::Drop => MessageVerdict::Drop,
                Decision::Kill => MessageVerdict::Kill,
            }
        })
    }
}

/// Holds servers' certificate requests after the first handshake for the user, while
/// `--intercept-tls` is on (it can change while the proxy runs).
pub struct CertificateHolds {
    pub on: Arc<AtomicBool>,
    pub live: Arc<LiveFlows>,
}

impl CertificateRequestHold for CertificateHolds {
    fn should_hold(&self, owners: &[FlowId]) -> bool {
        self.on.load(Ordering::Relaxed) && !owners.is_empty()
    }

    fn held(&self, request: HeldCertificateRequest) {
        // No flow of it is in flight any more: nobody could answer.
        if let Err(request) = self.live.hold_certificate(request) {
            request.answer(ClientCertificate::Configured);
        }
    }
}
