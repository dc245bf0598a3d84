//! One request's way through the proxy, as a pipeline of named stages:
//!
//! 1. **admitted** — the client session checked framing, credentials and loops
//!    (`guard`), and dispatched CONNECT and WebSocket-over-HTTP/2 elsewhere;
//! 2. **destination chosen** — `destination` (the proxy mode decides);
//! 3. **flow started** — the `FlowRecorder` is created and live views hear of it;
//! 4. **request head** — the hooks (intercept, rules, addons) may change or answer it;
//! 5. **connected and sent** — [`deliver`]: a pooled or new connection (`pool`), the
//!    request shaped for that connection's protocol, sent, and sent again when the
//!    `retry` policy allows;
//! 6. **response head** — recorded; the hooks may change it;
//! 7. **body relayed** — the response streams back while the flow records it, and the
//!    flow is published when it ends (done or failed).
//!
//! Every failure answers the client with a page that says what failed and records
//! the same error in the flow.

use std::sync::Arc;

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use periscope_flow::{Body, FlowErrorKind, Milestone, Timestamp};

use crate::body::{IncomingBody, ProxyBody, RecordingBody, RequestBody};
use crate::core::ProxyCore;
use crate::destination::{host_header_value, Destination};
use crate::error::UpstreamError;
use crate::headers::{record_headers, strip_hop_by_hop, wants_upgrade, NextHop};
use crate::hooks::{RequestVerdict, ResponseVerdict, StageBody};
use crate::http2::ServerStreamId;
use crate::pages::{error_response, error_text, recorded_response};
use crate::pool::ConnectionKind;
use crate::recorder::{version_label, FlowRecorder, Side};
use crate::retry::{after_failure, Attempt, AttemptFailure, GiveUp, NotReplayed, RetryDecision};
use crate::session::{ClientResponse, ClientSession};
use crate::upgrade::PendingUpgrade;
use crate::upstream::{UpstreamConnection, UpstreamKey};

/// Runs stages 2 to 7 for a request the session admitted.
pub async fn run(
    session: &ClientSession,
    mut request: Request<IncomingBody>,
    started: Timestamp,
) -> ClientResponse {
    let core = session.core();
    let mut destination = match session.destination_of(&request) {
        Ok(destination) => destination,
        Err(answer) => return *answer,
    };
    if session.rewrites_host() {
        // A reverse proxy's client named Periscope; the server gets its own name.
        if let Ok(value) = HeaderValue::from_str(&host_header_value(destination.key())) {
            request.headers_mut().insert(HOST, value);
        }
    }
    let recorder = session.begin_flow(
        &request,
        (
            destination.scheme,
            destination.host.clone(),
            destination.port,
        ),
        started,
    );
    recorder.publish_request();
    let client_upgrade =
        wants_upgrade(request.headers()).then(|| PendingUpgrade::of_request(&mut request));
    let (mut head, body) = request.into_parts();
    let mut body = StageBody::new(body);
    if !core.hooks.is_empty() {
        match core
            .hooks
            .request_head(&recorder, &mut head, &mut body)
            .await
        {
            RequestVerdict::Continue => {}
            RequestVerdict::Answer(answer) => return answered_by_hook(&recorder, answer),
            RequestVerdict::Kill(reason) => return killed(&recorder, &reason),
            RequestVerdict::Close(reason) => return closed(session, &recorder, &reason).await,
        }
        // A hook may have sent the request elsewhere: the destination follows the flow.
        if let Some(moved) = recorder
            .read(|flow| destination.moved_to(&flow.request))
            .flatten()
        {
            destination = moved;
        }
    }
    let upstream_request = shape_request(
        core,
        head,
        body.into_body(),
        &destination.pool.key,
        &recorder,
    );
    let (response, connection) = match deliver(
        session,
        &destination,
        &recorder,
        upstream_request,
        ConnectionKind::Any,
    )
    .await
    {
        Ok(delivered) => delivered,
        Err(answer) => return answer,
    };
    session.pool().checkin(destination.key(), connection).await;
    let (mut head, body) = response.into_parts();
    record_response_head(&recorder, &head);
    session.tie_connection(&recorder);
    if core.hooks.is_empty() {
        return relay_response(core, recorder, head, body, client_upgrade);
    }
    let mut body = StageBody::new(body);
    if let ResponseVerdict::Kill(reason) = core
        .hooks
        .response_head(&recorder, &mut head, &mut body)
        .await
    {
        return killed(&recorder, &reason);
    }
    relay_response(core, recorder, head, body.into_body(), client_upgrade)
}

/// The client's request as it goes upstream: hop-by-hop headers gone, framing
/// unambiguous, a Host header, origin-form, and the body recorded as it streams.
fn shape_request(
    core: &ProxyCore,
    mut head: http::request::Parts,
    body: IncomingBody,
    key: &UpstreamKey,
    recorder: &Arc<FlowRecorder>,
) -> Request<RequestBody> {
    let upgrade = wants_upgrade(&head.headers);
    strip_hop_by_hop(
        &mut head.headers,
        NextHop::Http1 {
            keep_upgrade: upgrade,
        },
    );
    normalize_framing(&mut head.headers);
    if !head.headers.contains_key(HOST) {
        if let Ok(value) = HeaderValue::from_str(&host_header_value(key)) {
            head.headers.insert(HOST, value);
        }
    }
    let origin_form = head
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    head.uri = origin_form
        .parse::<Uri>()
        .unwrap_or_else(|_| Uri::from_static("/"));
    head.version = Version::HTTP_11;
    Request::from_parts(head, recorded_request_body(core, body, recorder))
}

pub fn recorded_request_body(
    core: &ProxyCore,
    body: IncomingBody,
    recorder: &Arc<FlowRecorder>,
) -> RequestBody {
    let config = &core.config;
    Box::new(RecordingBody::new(
        body,
        Arc::clone(recorder),
        Side::Request,
        config.body_limit,
        core.timeouts().body_idle,
    ))
}

/// Stage 5: a connection, the request sent on it, and the response head — or the
/// answer for the client when that failed. A request that failed where the server
/// cannot have acted on it is sent again as [`crate::retry`] decides.
pub async fn deliver(
    session: &ClientSession,
    destination: &Destination,
    recorder: &Arc<FlowRecorder>,
    mut request: Request<RequestBody>,
    kind: ConnectionKind,
) -> Result<(Response<IncomingBody>, UpstreamConnection), ClientResponse> {
    let core = session.core();
    let key = destination.key();
    let label = key.label();
    let response_timeout = core.timeouts().response;
    let mut number = 0;
    loop {
        number += 1;
        let (mut connection, reused) =
            match session.pool().checkout(core, &destination.pool, kind).await {
                Ok(checked_out) => checked_out,
                Err(error) => return Err(fail(recorder, &label, error)),
            };
        recorder.set_server(
            connection.info.clone(),
            &connection.milestones,
            connection.tls.clone(),
        );
        fit_request_to(&mut request, key, connection.is_http2());
        if let Some(forwarding) = &connection.forwarding {
            to_absolute_form(&mut request, key, forwarding);
        }
        // Kept to send the request again if the server turns it away unprocessed: an
        // HTTP/2 server, or one that speaks HTTP/2 without saying so by ALPN.
        let replay = (connection.is_http2() || connection.unnegotiated.is_some())
            .then(|| ReplayHead::of(&request));
        let idempotent = request.method().is_idempotent();
        let attempt = |body_replayable| Attempt {
            number,
            reused,
            body_replayable,
        };
        if connection.sender.ready().await.is_err() {
            let explained = UpstreamError::from_tls_state(&label, connection.tls.as_deref());
            // Nothing was sent: any request may go again.
            let closed = if refused_without_alpn(&connection) && explained.is_none() {
                AttemptFailure::ClosedWithoutAlpn { idempotent: true }
            } else {
                AttemptFailure::ClosedBeforeSend {
                    tls_explained: explained.is_some(),
                }
            };
            match after_failure(attempt(true), &closed) {
                RetryDecision::Resend => continue,
                RetryDecision::ReplayOverHttp2 => {
                    offer_http2_from_now_on(core, recorder, key);
                    continue;
                }
                _ => {}
            }
            let error = explained.unwrap_or_else(|| {
                UpstreamError::exchange(format!(
                    "the connection to {label} closed before the request could be sent"
                ))
            });
            return Err(fail(recorder, &label, error));
        }
        let sent = connection.sender.try_send(request);
        let tls = connection.tls.clone();
        // The user's time choosing a certificate is not the server's delay.
        let held = move || tls.as_ref().is_some_and(|t| t.certificate_request_held());
        let waited = match recorder.kill_switch() {
            None => await_response(recorder, sent, response_timeout, held).await,
            Some(kill) => tokio::select! {
                waited = await_response(recorder, sent, response_timeout, held) => waited,
                () = kill.killed() => return Err(killed(recorder, &kill_reason(recorder, kill))),
            },
        };
        let mut failure = match waited {
            Err(_) => {
                let error = UpstreamError::ResponseTimeout {
                    target: label.clone(),
                    timeout: response_timeout,
                };
                return Err(fail(recorder, &label, error));
            }
            Ok(Ok(response)) => return Ok((response, connection)),
            Ok(Err(failure)) => failure,
        };
        if let Some(kill) = recorder.kill_switch().filter(|kill| kill.is_killed()) {
            return Err(killed(recorder, &kill_reason(recorder, kill)));
        }
        let unsent = failure.take_message();
        let what_happened =
            classify_failure(&connection, idempotent, failure.error(), unsent.is_some());
        let body_replayable =
            unsent.is_some() || replay.as_ref().is_some_and(|r| r.replayable(recorder));
        let decision = after_failure(attempt(body_replayable), &what_happened);
        if what_happened == AttemptFailure::Http11Required {
            core.remember_http11_required(&key.host);
            recorder.push_note(format!(
                "{label} answered HTTP_1_1_REQUIRED over HTTP/2; retrying over HTTP/1.1 \
                 (and using HTTP/1.1 for this host from now on)"
            ));
            session.pool().forget_http2(key).await;
        }
        if decision == RetryDecision::ReplayOverHttp2 {
            if what_happened == AttemptFailure::ServerSpokeHttp2 {
                core.remember_http2_preface(&key.host);
                recorder.push_note(format!(
                    "{label} selected no protocol by ALPN and answered with the HTTP/2 \
                     connection preface; retrying over HTTP/2 (and using HTTP/2 for this host \
                     from now on)"
                ));
            } else {
                offer_http2_from_now_on(core, recorder, key);
            }
        }
        let again = match decision {
            RetryDecision::Resend => unsent,
            RetryDecision::ReplayOverHttp11 | RetryDecision::ReplayOverHttp2 => {
                unsent.or_else(|| replay.and_then(|r| r.rebuild(recorder, core)))
            }
            RetryDecision::Replay { connection_closing } => {
                if connection_closing {
                    session.pool().forget_http2(key).await;
                }
                if let AttemptFailure::Unprocessed { frame, .. } = &what_happened {
                    recorder.push_note(format!(
                        "{label} answered {frame} without processing the request; sending it again"
                    ));
                }
                unsent.or_else(|| replay.and_then(|r| r.rebuild(recorder, core)))
            }
            RetryDecision::GiveUp(give_up) => {
                if let Some(answer) = client_body_failed(recorder) {
                    return Err(answer);
                }
                let error = give_up_error(&label, give_up, &failure, &connection);
                return Err(fail(recorder, &label, error));
            }
        };
        match again {
            Some(again) => request = again,
            None => {
                let error = UpstreamError::exchange(format!(
                    "the request to {label} could not be sent again: its body was not kept whole"
                ));
                return Err(fail(recorder, &label, error));
            }
        }
    }
}

/// A connection whose server selected no protocol by ALPN (HTTP/2 was not offered)
/// and sent nothing: what HTTP/2-only servers such as nghttpd do to HTTP/1.1 clients.
fn refused_without_alpn(connection: &UpstreamConnection) -> bool {
    connection
        .unnegotiated
        .as_ref()
        .is_some_and(|unnegotiated| {
            !unnegotiated.http2_offered && unnegotiated.first_bytes.bytes().is_empty()
        })
}

fn offer_http2_from_now_on(core: &ProxyCore, recorder: &FlowRecorder, key: &UpstreamKey) {
    core.remember_offer_http2(&key.host);
    recorder.push_note(format!(
        "{} selected no protocol by ALPN and closed the HTTP/1.1 connection without \
         answering; retrying with HTTP/2 offered (and offering it to this host from now on)",
        key.label()
    ));
}

/// What a failed send means for the retry policy.
fn classify_failure(
    connection: &UpstreamConnection,
    idempotent: bool,
    error: &(dyn std::error::Error + 'static),
    unsent: bool,
) -> AttemptFailure {
    if let Some(unnegotiated) = &connection.unnegotiated {
        if unnegotiated.first_bytes.is_http2_preface() {
            return AttemptFailure::ServerSpokeHttp2;
        }
    }
    if refused_without_alpn(connection) {
        return AttemptFailure::ClosedWithoutAlpn { idempotent };
    }
    if is_http11_required(error) {
        return AttemptFailure::Http11Required;
    }
    if let Some(refusal) = unprocessed_by_server(error) {
        return AttemptFailure::Unprocessed {
            frame: refusal.frame,
            connection_closing: refusal.connection_closing,
        };
    }
    if unsent {
        AttemptFailure::NotSent
    } else {
        AttemptFailure::Other
    }
}

fn give_up_error(
    label: &str,
    give_up: GiveUp,
    failure: &crate::upstream::SendFailure,
    connection: &UpstreamConnection,
) -> UpstreamError {
    match give_up {
        GiveUp::Failed | GiveUp::ClosedBeforeSend => {
            UpstreamError::from_exchange(label, failure.error(), connection.tls.as_deref())
        }
        GiveUp::Http11RequiredBodyLost => UpstreamError::exchange(format!(
            "{label} requires HTTP/1.1 for this request (HTTP_1_1_REQUIRED) and the request \
             body could not be replayed; the next request will use HTTP/1.1"
        )),
        GiveUp::ServerSpokeHttp2BodyLost => UpstreamError::exchange(format!(
            "{label} speaks only HTTP/2 (it ignored ALPN and sent its HTTP/2 preface) and the \
             request body could not be replayed; the next request will use HTTP/2"
        )),
        GiveUp::Unprocessed { frame, why } => {
            let reason = match why {
                NotReplayed::TooManyAttempts(attempts) => format!("after {attempts} attempts"),
                NotReplayed::BodyLost => "and the request body could not be replayed".to_owned(),
            };
            UpstreamError::exchange(format!(
                "{label} answered {frame} without processing the request, {reason}"
            ))
        }
    }
}

/// Waits for the response head. The timeout counts from the end of the request body,
/// and is extended while the body is still moving: a slow upload is bounded by the
/// body idle timeout, not mistaken for a silent server.
async fn await_response<F: std::future::Future>(
    recorder: &FlowRecorder,
    sent: F,
    timeout: std::time::Duration,
    waiting_for_user: impl Fn() -> bool,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::pin!(sent);
    let mut deadline = tokio::time::Instant::now() + timeout;
    let mut bytes_seen = recorder.request_bytes();
    loop {
        let elapsed = match tokio::time::timeout_at(deadline, &mut sent).await {
            Ok(output) => return Ok(output),
            Err(elapsed) => elapsed,
        };
        let now = tokio::time::Instant::now();
        if waiting_for_user() {
            deadline = now + timeout;
        } else if let Some(complete) = recorder.request_complete_at() {
            let since = std::time::Duration::from_micros(
                Timestamp::now().0.saturating_sub(complete.0).max(0) as u64,
            );
            match timeout.checked_sub(since) {
                Some(left) if !left.is_zero() => deadline = now + left,
                _ => return Err(elapsed),
            }
        } else if recorder.request_bytes() != bytes_seen {
            bytes_seen = recorder.request_bytes();
            deadline = now + timeout;
        } else {
            return Err(elapsed);
        }
    }
}

/// The upstream request failed because the client's body did: the client hears about
/// its own request (400, 408), not about the server, and the connection closes.
fn client_body_failed(recorder: &FlowRecorder) -> Option<ClientResponse> {
    let error = recorder.error()?;
    let (status, summary) = match error.kind {
        FlowErrorKind::BadRequest => (
            StatusCode::BAD_REQUEST,
            "The request body is not valid HTTP framing.",
        ),
        FlowErrorKind::Timeout => (StatusCode::REQUEST_TIMEOUT, "The request body stalled."),
        FlowErrorKind::ClientDisconnected => {
            (StatusCode::BAD_REQUEST, "The request body ended early.")
        }
        _ => return None,
    };
    let mut response = error_response(status, summary, &error.message);
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    let text = error_text(status, summary, &error.message);
    recorder.set_response(recorded_response(&response, text.as_bytes()));
    recorder.finish();
    Some(response)
}

/// Answers the client with an error page for `error`, and ends the flow with it.
pub fn fail(recorder: &FlowRecorder, label: &str, error: UpstreamError) -> ClientResponse {
    let status = error.status();
    let summary = format!("Periscope could not complete the request to {label}.");
    let detail = error.to_string();
    let response = error_response(status, &summary, &detail);
    let text = error_text(status, &summary, &detail);
    recorder.set_response(recorded_response(&response, text.as_bytes()));
    recorder.finish_with_error(error.kind(), detail);
    response
}

/// A hook answered the request itself.
pub fn answered_by_hook(
    recorder: &FlowRecorder,
    answer: http::Response<bytes::Bytes>,
) -> ClientResponse {
    let (parts, content) = answer.into_parts();
    let mut response = Response::from_parts(parts, ProxyBody::generated(content.clone()));
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(content.len()));
    recorder.set_response(recorded_response(&response, &content));
    recorder.set_body(Side::Response, Body::complete(content), None);
    recorder.finish();
    response
}

/// Why the user's kill ended the exchange, with how far the request body had got
/// when it was still on its way (an upload killed in transit).
fn kill_reason(recorder: &FlowRecorder, kill: &crate::intercept::KillSwitch) -> String {
    let sent = recorder.request_bytes();
    if sent > 0 && recorder.request_complete_at().is_none() {
        format!("{} after {sent} bytes of the request body", kill.reason())
    } else {
        kill.reason()
    }
}

/// A hook (or the user) killed the exchange: an HTTP/1.1 client gets a 502 that says
/// so and the connection closes; an HTTP/2 client's stream is reset.
pub fn killed(recorder: &FlowRecorder, reason: &str) -> ClientResponse {
    let status = StatusCode::BAD_GATEWAY;
    let summary = "The flow was killed in Periscope.";
    let mut response = error_response(status, summary, reason);
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response.extensions_mut().insert(crate::http2::ResetStream);
    let text = error_text(status, summary, reason);
    recorder.set_response(recorded_response(&response, text.as_bytes()));
    recorder.finish_with_error(FlowErrorKind::Killed, reason.to_owned());
    response
}

/// A hook ended the exchange without an answer (a 444 block): an HTTP/1.1 client's
/// connection closes with nothing written; an HTTP/2 client's stream is reset.
async fn closed(session: &ClientSession, recorder: &FlowRecorder, reason: &str) -> ClientResponse {
    if !session.is_http1() {
        return killed(recorder, reason);
    }
    recorder.finish_with_error(FlowErrorKind::Killed, reason.to_owned());
    session.close_client_connection(reason);
    // The connection's task ends at the close and drops this exchange with it; no
    // answer is ever written.
    std::future::pending().await
}

/// Records a server's response head in the flow (its body is recorded as it streams).
pub fn record_response_head(recorder: &FlowRecorder, parts: &http::response::Parts) {
    let reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
        .unwrap_or_else(|| parts.status.canonical_reason().unwrap_or("").to_owned());
    recorder.set_response(periscope_flow::Response {
        status: parts.status.as_u16(),
        reason,
        http_version: version_label(parts.version).to_owned(),
        stream_id: parts.extensions.get::<ServerStreamId>().map(|id| id.0),
        headers: record_headers(&parts.headers),
        body: Body::default(),
        trailers: None,
        generated: false,
    });
    recorder.collect_tls_events();
}

/// Stage 7: the response goes back to the client, its body recorded as it streams; a
/// 101 hands both connections to the upgraded relay.
pub fn relay_response(
    core: &Arc<ProxyCore>,
    recorder: Arc<FlowRecorder>,
    mut parts: http::response::Parts,
    body: IncomingBody,
    client_upgrade: Option<PendingUpgrade>,
) -> ClientResponse {
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(
        &mut parts.headers,
        NextHop::Http1 {
            keep_upgrade: switching,
        },
    );
    normalize_framing(&mut parts.headers);
    let server_upgrade = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .map(PendingUpgrade::http1);
    if switching && upgrades_to(&parts.headers, "websocket") {
        crate::websocket::start_session(&recorder, &parts.headers);
    }
    parts.extensions.insert(recorder.stall_notice());
    if let Some(kill) = recorder.kill_switch() {
        parts.extensions.insert(Arc::clone(kill));
    }
    let config = &core.config;
    let body = RecordingBody::new(
        body,
        Arc::clone(&recorder),
        Side::Response,
        config.body_limit,
        core.timeouts().body_idle,
    );
    if switching {
        if let (Some(server), Some(client)) = (server_upgrade, client_upgrade) {
            crate::websocket::relay_upgraded(core, &recorder, server, client);
        }
    }
    Response::from_parts(parts, ProxyBody::Relayed(body))
}

/// Shapes a request for the upstream protocol: HTTP/1.1 wants origin-form and a Host
/// header, HTTP/2 an absolute URI whose authority replaces Host.
fn fit_request_to(request: &mut Request<RequestBody>, key: &UpstreamKey, http2: bool) {
    let path = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let authority = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| host_header_value(key));
    if http2 {
        let scheme = if key.tls { "https" } else { "http" };
        if let Ok(uri) = format!("{scheme}://{authority}{path}").parse::<Uri>() {
            *request.uri_mut() = uri;
            request.headers_mut().remove(HOST);
        }
        *request.version_mut() = Version::HTTP_2;
    } else {
        if let Ok(value) = HeaderValue::from_str(&authority) {
            request.headers_mut().insert(HOST, value);
        }
        *request.uri_mut() = path
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
        *request.version_mut() = Version::HTTP_11;
    }
}

/// A request to an HTTP proxy (an `upstream:` mode's plain HTTP): absolute-form, with
/// the proxy's credentials.
fn to_absolute_form(
    request: &mut Request<RequestBody>,
    key: &UpstreamKey,
    forwarding: &crate::upstream::ForwardingProxy,
) {
    let authority = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| host_header_value(key));
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    if let Ok(uri) = format!("http://{authority}{path}").parse::<Uri>() {
        *request.uri_mut() = uri;
    }
    if let Some(authorization) = &forwarding.authorization {
        request
            .headers_mut()
            .insert(http::header::PROXY_AUTHORIZATION, authorization.clone());
    }
}

/// What is needed to send a request again after an HTTP/2 server refused it.
struct ReplayHead {
    method: http::Method,
    uri: Uri,
    headers: HeaderMap,
    had_body: bool,
}

impl ReplayHead {
    fn of(request: &Request<RequestBody>) -> Self {
        ReplayHead {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
            had_body: !http_body::Body::is_end_stream(request.body()),
        }
    }

    /// Whether the flow kept the whole body (or there was none).
    fn replayable(&self, recorder: &FlowRecorder) -> bool {
        !self.had_body
            || recorder
                .read(|flow| {
                    flow.timeline
                        .milestone(Milestone::RequestComplete)
                        .is_some()
                        && !flow.request.body.truncated
                })
                .unwrap_or(false)
    }

    /// The request again, if its body was recorded whole (or it had none).
    fn rebuild(
        self,
        recorder: &Arc<FlowRecorder>,
        core: &ProxyCore,
    ) -> Option<Request<RequestBody>> {
        if !self.replayable(recorder) {
            return None;
        }
        let body = if self.had_body {
            recorder.read(|flow| flow.request.body.content.clone())?
        } else {
            bytes::Bytes::new()
        };
        let body = IncomingBody::Replayed(http_body_util::Full::new(body));
        let mut request = Request::new(recorded_request_body(core, body, recorder));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.headers_mut() = self.headers;
        Some(request)
    }
}

/// An HTTP/2 server's "use HTTP/1.1 for this request" (RFC 9113 §8.7; IIS sends it
/// for paths that need a client certificate, since HTTP/2 forbids renegotiation).
fn is_http11_required(error: &(dyn std::error::Error + 'static)) -> bool {
    find_h2(error).is_some_and(|h2| h2.reason() == Some(h2::Reason::HTTP_1_1_REQUIRED))
}

/// An HTTP/2 server's word that it did not act on a request.
struct Unprocessed {
    frame: String,
    connection_closing: bool,
}

/// A GOAWAY whose last-stream-id is below the request's stream (h2 fails exactly those
/// streams with the peer's GOAWAY error), or a REFUSED_STREAM reset.
fn unprocessed_by_server(error: &(dyn std::error::Error + 'static)) -> Option<Unprocessed> {
    let h2 = find_h2(error)?;
    let reason = h2.reason()?;
    if !h2.is_remote() {
        return None;
    }
    let code = crate::error::reason_name(reason);
    if h2.is_go_away() {
        return Some(Unprocessed {
            frame: format!("GOAWAY {code}"),
            connection_closing: true,
        });
    }
    if h2.is_reset() && reason == h2::Reason::REFUSED_STREAM {
        return Some(Unprocessed {
            frame: format!("RST_STREAM {code}"),
            connection_closing: false,
        });
    }
    None
}

fn find_h2<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a h2::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(h2) = current.downcast_ref::<h2::Error>() {
            return Some(h2);
        }
        source = current.source();
    }
    None
}

pub fn upgrades_to(headers: &HeaderMap, protocol: &str) -> bool {
    headers
        .get_all(http::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(protocol))
}

/// Framing is re-derived by hyper from the body: a message that arrived chunked
/// leaves chunked (or close-delimited to an HTTP/1.0 peer), never with both headers.
/// Repeated identical Content-Length values (which hyper accepts, RFC 9112 §6.3) leave
/// as one.
fn normalize_framing(headers: &mut HeaderMap) {
    if headers.remove(TRANSFER_ENCODING).is_some() {
        headers.remove(CONTENT_LENGTH);
        return;
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let repeated = match (lengths.next(), lengths.next()) {
        (Some(first), None) => first.as_bytes().contains(&b','),
        (Some(_), Some(_)) => true,
        _ => false,
    };
    if repeated {
        let single = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| HeaderValue::from_str(v.trim()).ok());
        if let Some(single) = single {
            headers.insert(CONTENT_LENGTH, single);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_chunked_message_leaves_chunked_without_a_length() {
        let mut map = headers(&[("transfer-encoding", "chunked"), ("content-length", "5")]);
        normalize_framing(&mut map);
        assert!(!map.contains_key(TRANSFER_ENCODING));
        assert!(!map.contains_key(CONTENT_LENGTH));
    }

    #[test]
    fn repeated_equal_lengths_leave_as_one() {
        let mut map = headers(&[("content-length", "5, 5")]);
        normalize_framing(&mut map);
        assert_eq!(
            map.get_all(CONTENT_LENGTH).iter().collect::<Vec<_>>(),
            ["5"]
        );
        let mut map = headers(&[("content-length", "7"), ("content-length", "7")]);
        normalize_framing(&mut map);
        assert_eq!(
            map.get_all(CONTENT_LENGTH).iter().collect::<Vec<_>>(),
            ["7"]
        );
    }

    #[test]
    fn http2_requests_carry_the_authority_in_the_uri_http11_in_host() {
        let key = UpstreamKey {
            tls: true,
            host: "example.test".into(),
            port: 8443,
        };
        let body: RequestBody = {
            let recorder = test_recorder();
            Box::new(RecordingBody::new(
                IncomingBody::Empty,
                recorder,
                Side::Request,
                1024,
                std::time::Duration::from_secs(1),
            ))
        };
        let mut request = Request::new(body);
        *request.uri_mut() = "/a?b".parse().unwrap();
        fit_request_to(&mut request, &key, true);
        assert_eq!(request.uri(), "https://example.test:8443/a?b");
        assert!(request.headers().get(HOST).is_none());
        fit_request_to(&mut request, &key, false);
        assert_eq!(request.uri(), "/a?b");
        assert_eq!(request.headers()[HOST], "example.test:8443");
    }

    fn test_recorder() -> Arc<FlowRecorder> {
        let client = crate::recorder::ClientContext {
            info: periscope_flow::ConnectionInfo {
                id: 1,
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
            listener: None,
        };
        FlowRecorder::begin(
            crate::bus::FlowBus::new(),
            &client,
            &Request::new(()),
            ("https", "example.test".into(), 8443),
            Timestamp::now(),
        )
    }
}
