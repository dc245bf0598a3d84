//! The proxy's half of `periscope_control::FlowControl`: what a front end can do to
//! flows in flight — resume, kill, edit a paused one, change the intercept filter —
//! and replaying a request through the same pipeline (and TLS handling) as a live one.
//! The binary joins it with the session store, which holds the recorded flows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};
use http_body_util::BodyExt;
use periscope_control::{
    apply_edit, CertificateChoice, ControlError, FlowEdit, Injection, MessageDecision,
};
use periscope_flow::filter::Filter;
use periscope_flow::{ConnectionInfo, Flow, FlowId, Interception, Timestamp, WebSocketOpcode};
use periscope_tls::{ClientCertificate, ClientIdentity, UpstreamTls, UpstreamTlsSettings};

use crate::body::IncomingBody;
use crate::config::Timeouts;
use crate::core::ProxyCore;
use crate::intercept::{Decision, Intercept, LiveError, LiveFlows};
use crate::recorder::{ClientContext, PresetFlowId, ReplayOf};
use crate::session::ClientSession;
use crate::upstream::next_connection_id;
use crate::websocket::Injected;

/// A handle on a running proxy's flows in flight.
#[derive(Clone)]
pub struct ProxyControl {
    core: Arc<ProxyCore>,
    live: Arc<LiveFlows>,
    intercept: Arc<Intercept>,
    intercept_tls: Arc<AtomicBool>,
}

impl ProxyControl {
    /// The address of the first HTTP proxy listener (the first listener when none
    /// is one): where the onboarding page tells clients to point.
    pub fn proxy_address(&self) -> std::net::SocketAddr {
        self.core.config.listen
    }

    /// `None` unless the proxy was configured `interactive`.
    pub(crate) fn new(core: &Arc<ProxyCore>) -> Option<Self> {
        Some(ProxyControl {
            live: Arc::clone(core.live.as_ref()?),
            intercept: Arc::clone(core.intercept.as_ref()?),
            intercept_tls: Arc::clone(&core.intercept_tls),
            core: Arc::clone(core),
        })
    }

    pub fn live_flow(&self, id: FlowId) -> Option<Flow> {
        self.live.flow(id)
    }

    /// The flows in flight, oldest first.
    pub fn live_flows(&self) -> Vec<Flow> {
        self.live.flows()
    }

    /// The flows waiting for the user.
    pub fn paused(&self) -> Vec<FlowId> {
        self.live.paused()
    }

    pub fn resume(&self, id: FlowId) -> Result<(), ControlError> {
        self.live
            .resume(id)
            .map_err(|e| live_error(id, "resumed", e))
    }

    pub fn resume_all(&self) -> usize {
        self.live.resume_all()
    }

    pub fn kill(&self, id: FlowId) -> Result<(), ControlError> {
        self.live
            .kill(id, "killed in Periscope")
            .map_err(|e| live_error(id, "killed", e))
    }

    /// Kills a flow in flight and keeps it out of the session: deleted by the user.
    pub fn delete(&self, id: FlowId) -> Result<(), ControlError> {
        self.live
            .kill_and_forget(id, "deleted in Periscope")
            .map_err(|e| live_error(id, "deleted", e))
    }

    pub fn kill_paused(&self) -> usize {
        self.live.kill_paused("killed in Periscope")
    }

    /// Edits a paused flow: its request while paused at the request, its response
    /// while paused at the response. A body can be changed only when it was read
    /// whole (it was at most `--body-limit`).
    pub fn edit(&self, id: FlowId, edit: &FlowEdit) -> Result<Flow, ControlError> {
        self.live
            .edit(id, |flow, body_editable| {
                match flow.intercepted {
                    Some(Interception::Request) if edit.response.is_some() => {
                        return Err("it is paused at the request: there is no response yet".into())
                    }
                    Some(Interception::Response) if edit.request.is_some() => {
                        return Err("the request was sent already; edit the response".into())
                    }
                    Some(Interception::Request) | Some(Interception::Response) => {}
                    _ => {
                        return Err(
                            "only a flow paused at its request or response can be edited".into(),
                        )
                    }
                }
                let body_edit = edit.request.as_ref().is_some_and(|r| r.content.is_some())
                    || edit.response.as_ref().is_some_and(|r| r.content.is_some());
                if body_edit && !body_editable {
                    return Err(
                        "its body is larger than --body-limit and streams through unchanged".into(),
                    );
                }
                apply_edit(flow, edit).map_err(|e| e.to_string())
            })
            .map_err(|e| live_error(id, "edited", e))
    }

    /// Answers the certificate request a flow's server made and the user was asked
    /// about (`--intercept-tls`).
    pub fn choose_client_certificate(
        &self,
        id: FlowId,
        choice: CertificateChoice,
    ) -> Result<(), ControlError> {
        let certificate = match choice {
            CertificateChoice::Configured => ClientCertificate::Configured,
            CertificateChoice::None => ClientCertificate::None,
            CertificateChoice::File { path } => ClientCertificate::Identity(Arc::new(
                ClientIdentity::load(&path)
                    .map_err(|e| ControlError::InvalidEdit(e.to_string()))?,
            )),
        };
        self.live
            .answer_certificate(id, certificate)
            .map_err(|e| live_error(id, "answered", e))
    }

    /// Decides about the WebSocket message a flow holds.
    pub fn decide_message(
        &self,
        id: FlowId,
        decision: MessageDecision,
    ) -> Result<(), ControlError> {
        let decision = match decision {
            MessageDecision::Resume { content: None } => Decision::Resume,
            MessageDecision::Resume {
                content: Some(content),
            } => Decision::Replace(Bytes::from(content.bytes()?)),
            MessageDecision::Drop => Decision::Drop,
        };
        self.live
            .decide_message(id, decision)
            .map_err(|e| live_error(id, "decided", e))
    }

    /// Writes a message into a flow's open WebSocket.
    pub fn inject_message(&self, id: FlowId, message: Injection) -> Result<(), ControlError> {
        let injected = Injected {
            opcode: if message.binary {
                WebSocketOpcode::Binary
            } else {
                WebSocketOpcode::Text
            },
            content: Bytes::from(message.content.bytes()?),
        };
        if !message.binary && std::str::from_utf8(&injected.content).is_err() {
            return Err(ControlError::InvalidEdit(
                "a text message must be UTF-8; send it as binary".into(),
            ));
        }
        self.live
            .inject(id, message.to_client, injected)
            .map_err(|e| live_error(id, "written to", e))
    }

    pub fn intercept(&self) -> Option<String> {
        self.intercept.filter_text()
    }

    /// Sets the intercept filter (an empty or `None` one pauses nothing); a filter
    /// that does not parse changes nothing.
    pub fn set_intercept(&self, text: Option<&str>) -> Result<(), ControlError> {
        let text = text.map(str::trim).filter(|t| !t.is_empty());
        let filter = match text {
            None => None,
            Some(text) => Some((
                text.to_owned(),
                Filter::parse(text).map_err(|e| {
                    ControlError::InvalidOption(format!("intercept filter \"{text}\": {e}"))
                })?,
            )),
        };
        self.intercept.set_filter(filter);
        Ok(())
    }

    pub fn intercept_tls(&self) -> bool {
        self.intercept_tls.load(Ordering::Relaxed)
    }

    pub fn set_intercept_tls(&self, on: bool) {
        self.intercept_tls.store(on, Ordering::Relaxed);
    }

    /// Every wait that starts from now on has these limits.
    pub fn set_timeouts(&self, timeouts: Timeouts) {
        self.core.config.timeouts.set(timeouts);
    }

    /// How servers are trusted and answered now (a copy, to change and give to
    /// [`ProxyControl::set_upstream_tls`]).
    pub fn upstream_tls_settings(&self) -> UpstreamTlsSettings {
        self.core.upstream_tls().settings().clone()
    }

    /// Server connections made from now on use `tls`, made from
    /// [`ProxyControl::upstream_tls_settings`] changed. Connections already made keep
    /// theirs until they close; no TLS session made before is resumed after.
    pub fn set_upstream_tls(&self, tls: UpstreamTls) {
        self.core.replace_upstream_tls(tls);
    }

    /// Sends `flow`'s request again, as it is now, through the same pipeline as a
    /// client's request. Returns the new flow's id at once; the flow is published as
    /// any other when it ends, marked as a replay of `flow`.
    pub fn replay(&self, flow: &Flow) -> Result<FlowId, ControlError> {
        let request = replay_request(flow)?;
        let id = FlowId::new();
        let mut request = request;
        request.extensions_mut().insert(PresetFlowId(id));
        request.extensions_mut().insert(ReplayOf(flow.id));
        let client = ClientContext {
            info: ConnectionInfo {
                id: next_connection_id(),
                peer: None,
                local: None,
                target: None,
                tls: None,
            },
            milestones: Vec::new(),
            tls: None,
            intercepted_tls: false,
            write_stall: Arc::default(),
            connection_kill: Arc::default(),
            // The mode the flow came through, when it still listens: a replay of an
            // upstream mode's flow goes through the same proxy.
            listener: self.listener_of(flow),
        };
        let session = ClientSession::new(Arc::clone(&self.core), client, None);
        tokio::spawn(async move {
            let response = crate::exchange::run(&session, request, Timestamp::now()).await;
            // Read to the end, as a client would: the flow records the body and ends.
            let _ = response.into_body().collect().await;
        });
        Ok(id)
    }
}

impl ProxyControl {
    fn listener_of(&self, flow: &Flow) -> Option<Arc<crate::listener::Listener>> {
        let recorded = flow.listener.as_ref()?;
        let (mode, address) = self
            .core
            .config
            .modes
            .listeners
            .iter()
            .find(|(mode, _)| mode.to_string() == recorded.mode)?;
        Some(Arc::new(crate::listener::Listener::new(
            mode.clone(),
            *address,
        )))
    }
}

/// The request of `flow` as it goes out again: method, absolute URL, headers, body.
fn replay_request(flow: &Flow) -> Result<Request<IncomingBody>, ControlError> {
    let not_possible = |why: String| ControlError::NotPossible {
        id: flow.id,
        what: "replayed",
        why,
    };
    let recorded = &flow.request;
    if recorded.method.eq_ignore_ascii_case("CONNECT") {
        return Err(not_possible("a CONNECT is a tunnel, not a request".into()));
    }
    if recorded.body.truncated {
        return Err(not_possible(format!(
            "only {} of its {} body bytes were recorded (--body-limit)",
            recorded.body.content.len(),
            recorded.body.size
        )));
    }
    let method = Method::from_bytes(recorded.method.as_bytes())
        .map_err(|e| not_possible(format!("method: {e}")))?;
    let uri: Uri = recorded
        .url()
        .parse()
        .map_err(|e| not_possible(format!("URL: {e}")))?;
    let mut request = Request::new(IncomingBody::Replayed(http_body_util::Full::new(
        Bytes::clone(&recorded.body.content),
    )));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    for header in recorded.headers.iter() {
        // HTTP/2 pseudo-headers are in the URL; framing is the body's.
        if header.name.starts_with(':')
            || header.name.eq_ignore_ascii_case("content-length")
            || header.name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(&header.value),
        ) else {
            return Err(not_possible(format!(
                "header {:?} is not valid",
                header.name
            )));
        };
        headers.append(name, value);
    }
    if !recorded.body.content.is_empty() {
        headers.insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(recorded.body.content.len()),
        );
    }
    Ok(request)
}

fn live_error(id: FlowId, what: &'static str, error: LiveError) -> ControlError {
    match error {
        LiveError::Gone => ControlError::NotFound(id),
        LiveError::Running => ControlError::NotIntercepted(id),
        LiveError::Unfit(why) => ControlError::NotPossible { id, what, why },
    }
}
