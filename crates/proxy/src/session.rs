//! One client connection's HTTP conversation: each request becomes a flow, is relayed
//! to its server over a connection this client connection owns, and its response
//! streams back while the flow records it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use periscope_flow::{
    Body, ConnectionInfo, Flow, FlowErrorKind, FlowId, LogLevel, Milestone, Timeline, Timestamp,
};
use periscope_tls::TlsConnectionState;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::{IncomingBody, ProxyBody, RecordingBody, RequestBody};
use crate::core::ProxyCore;
use crate::error::{describe_hyper_error, UpstreamError};
use crate::guard::{check_credentials, check_framing, loop_refusal, targets_self, Refusal};
use crate::headers::{record_headers, strip_hop_by_hop, wants_upgrade};
use crate::http2::{ClientStreamId, ConnectAnswer, ServerSettings, ServerStreamId};
use crate::io::Prefixed;
use crate::pages::{error_response, error_text, proxy_info_page, recorded_response};
use crate::recorder::{FlowRecorder, Side};
use crate::upgrade::PendingUpgrade;
use crate::upstream::{
    connect_tcp, establish, establish_with_fallback, HttpSender, TlsParameters, UpstreamConnection,
    UpstreamKey, ALPN_H2, ALPN_HTTP11,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type ClientResponse = Response<ProxyBody<IncomingBody>>;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The largest request head (request line and headers) a client may send.
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// Streams an HTTP/2 client may have open at once on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// An intercepted CONNECT tunnel: every request in it goes to one server.
pub struct Tunnel {
    pub key: UpstreamKey,
    /// `None` for plain HTTP spoken inside a CONNECT tunnel (ws:// through a proxy).
    pub tls: Option<TlsParameters>,
}

/// The connections a client connection holds to one server.
#[derive(Default)]
struct Pool {
    /// HTTP/1.1 connections, one request at a time each.
    idle: Vec<UpstreamConnection>,
    /// An HTTP/2 connection, shared by all requests.
    shared: Option<UpstreamConnection>,
    /// The eager connection made for a tunnel failed; the first request reports it.
    failed: Option<Box<UpstreamError>>,
}

/// Which protocol the client speaks on this connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientProtocol {
    Http1,
    Http2,
    /// A plain listener: HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
    Detect,
}

pub struct ClientSession {
    core: Arc<ProxyCore>,
    client: ConnectionInfo,
    client_milestones: Vec<(Milestone, Timestamp)>,
    client_tls: Option<Arc<TlsConnectionState>>,
    tunnel: Option<Tunnel>,
    upstreams: tokio::sync::Mutex<HashMap<UpstreamKey, Pool>>,
}

/// Where a request goes and how the flow names it.
struct Target {
    key: UpstreamKey,
    /// The client multiplexes (HTTP/2): a busy HTTP/1.1 upstream connection is not
    /// waited for.
    concurrent: bool,
    tls: Option<TlsParameters>,
    scheme: &'static str,
    host: String,
    port: u16,
}

impl ClientSession {
    pub fn new(
        core: Arc<ProxyCore>,
        client: ConnectionInfo,
        client_milestones: Vec<(Milestone, Timestamp)>,
        client_tls: Option<Arc<TlsConnectionState>>,
        tunnel: Option<Tunnel>,
    ) -> Self {
        ClientSession {
            core,
            client,
            client_milestones,
            client_tls,
            tunnel,
            upstreams: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Hands over the connection made eagerly for a tunnel (or why it failed).
    pub fn seed(&self, key: UpstreamKey, connection: Result<UpstreamConnection, UpstreamError>) {
        let mut pool = Pool {
            idle: Vec::with_capacity(1),
            ..Pool::default()
        };
        match connection {
            Ok(connection) if connection.is_http2() => pool.shared = Some(connection),
            Ok(connection) => pool.idle.push(connection),
            Err(error) => pool.failed = Some(Box::new(error)),
        }
        // Nothing else holds the lock before the session starts serving.
        if let Ok(mut upstreams) = self.upstreams.try_lock() {
            upstreams.insert(key, pool);
        }
    }

    /// Serves HTTP on `io` until the client goes away, in the protocol the TLS
    /// handshake chose (or, on a plain listener, whatever the client speaks).
    pub async fn serve<S>(self: Arc<Self>, io: S, protocol: ClientProtocol)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let outcome = match protocol {
            ClientProtocol::Http1 => Arc::clone(&self).serve_http1(io).await,
            ClientProtocol::Http2 => Arc::clone(&self).serve_http2(io).await,
            ClientProtocol::Detect => match self.sniff_preface(io).await {
                Some((true, io)) => Arc::clone(&self).serve_http2(io).await,
                Some((false, io)) => Arc::clone(&self).serve_http1(io).await,
                None => Ok(()),
            },
        };
        if let Err(error) = outcome {
            self.log_connection_error(error.as_ref());
        }
        self.report_unattached_tls_events().await;
    }

    async fn serve_http1<S>(self: Arc<Self>, io: S) -> Result<(), BoxError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let session = Arc::clone(&self);
        // Boxed: hyper keeps room for one request future per connection, and an idle
        // connection should not hold kilobytes of it.
        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
            let session = Arc::clone(&session);
            Box::pin(async move { session.handle(request.map(IncomingBody::Http1)).await })
        });
        hyper::server::conn::http1::Builder::new()
            .preserve_header_case(true)
            // Request heads past this are answered 431.
            .max_buf_size(MAX_REQUEST_HEAD)
            .timer(TokioTimer::new())
            .header_read_timeout(self.core.config.timeouts.client_idle)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades()
            .await
            .map_err(Into::into)
    }

    /// Extended CONNECT (RFC 8441) is advertised so that HTTP/2 clients open
    /// WebSockets on this connection, as they would with the server; without it
    /// browsers fall back to a separate HTTP/1.1 connection.
    async fn serve_http2<S>(self: Arc<Self>, io: S) -> Result<(), BoxError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let settings = ServerSettings {
            max_concurrent_streams: MAX_CONCURRENT_STREAMS,
            handshake_timeout: self.core.config.timeouts.client_idle,
        };
        let session = Arc::clone(&self);
        crate::http2::serve(io, settings, move |request| {
            let session = Arc::clone(&session);
            async move {
                match session.handle(request.map(IncomingBody::from)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
        })
        .await
    }

    /// On a plain listener: whether the client opens with the HTTP/2 preface (h2c with
    /// prior knowledge), and the stream with the bytes read put back. `None`: it said
    /// nothing in time, or closed.
    async fn sniff_preface<S>(&self, mut io: S) -> Option<(bool, Prefixed<S>)>
    where
        S: AsyncRead + Unpin,
    {
        use tokio::io::AsyncReadExt;
        let mut seen = bytes::BytesMut::with_capacity(HTTP2_PREFACE.len());
        let deadline = tokio::time::Instant::now() + self.core.config.timeouts.client_idle;
        while seen.len() < HTTP2_PREFACE.len() && HTTP2_PREFACE.starts_with(&seen) {
            let mut chunk = [0u8; 24];
            let wanted = HTTP2_PREFACE.len() - seen.len();
            match tokio::time::timeout_at(deadline, io.read(&mut chunk[..wanted])).await {
                Ok(Ok(0)) | Ok(Err(_)) if seen.is_empty() => return None,
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
                Err(_) => {
                    if seen.is_empty() {
                        self.log_idle_close();
                        return None;
                    }
                    // Part of a request line: hyper answers it (408 or 400).
                    break;
                }
            }
        }
        let http2 = seen.as_ref() == HTTP2_PREFACE;
        Some((http2, Prefixed::new(seen.freeze(), io)))
    }

    fn log_idle_close(&self) {
        let peer = self.peer_label();
        self.core.bus.log(
            LogLevel::Info,
            format!("{peer}: closed an idle client connection (no complete request head in time)"),
        );
    }

    fn peer_label(&self) -> String {
        self.client
            .peer
            .map(|p| p.to_string())
            .unwrap_or_else(|| "client".into())
    }

    /// TLS events that happened after the last flow (a refused client renegotiation
    /// that killed the connection, a KeyUpdate on an idle connection) have no flow to
    /// show them: they go to the event log instead.
    async fn report_unattached_tls_events(&self) {
        let peer = self.peer_label();
        let mut states: Vec<Arc<TlsConnectionState>> = self.client_tls.iter().cloned().collect();
        for pool in self.upstreams.lock().await.values() {
            let connections = pool.idle.iter().chain(pool.shared.iter());
            states.extend(connections.filter_map(|c| c.tls.clone()));
        }
        for state in states {
            for (_, event) in state.take_events() {
                let level = match event.kind {
                    periscope_flow::TlsEventKind::RenegotiationRefused { .. }
                    | periscope_flow::TlsEventKind::Alert { fatal: true, .. } => LogLevel::Warn,
                    _ => LogLevel::Info,
                };
                self.core.bus.log(
                    level,
                    format!("{peer}: {event} (after the last request on this connection)"),
                );
            }
        }
    }

    fn log_connection_error(&self, error: &(dyn std::error::Error + 'static)) {
        let peer = self.peer_label();
        match error.downcast_ref::<hyper::Error>() {
            Some(error) if error.is_parse_too_large() => self.core.bus.log(
                LogLevel::Warn,
                format!(
                    "{peer}: request head too large (over {} KiB), answered 431 and closed",
                    MAX_REQUEST_HEAD / 1024
                ),
            ),
            Some(error) if error.is_parse() || error.is_parse_status() => self.core.bus.log(
                LogLevel::Warn,
                format!(
                    "{peer}: invalid HTTP request, answered 400 and closed: {}",
                    describe_hyper_error(error)
                ),
            ),
            Some(error) if error.is_timeout() => self.log_idle_close(),
            _ => {
                tracing::debug!(%peer, error = %describe_hyper_error(error), "client connection ended")
            }
        }
    }

    pub async fn handle(
        self: Arc<Self>,
        mut request: Request<IncomingBody>,
    ) -> Result<ClientResponse, Infallible> {
        self.core.bus.wait_for_room().await;
        let started = Timestamp::now();
        if let Some(refusal) = self.admit(&request) {
            return Ok(self.refuse(&request, started, refusal));
        }
        if request.method() == Method::CONNECT {
            if let Some(protocol) = request.extensions().get::<h2::ext::Protocol>() {
                if protocol.as_str().eq_ignore_ascii_case("websocket") {
                    return Ok(self.websocket_over_http2(request, started).await);
                }
                return Ok(error_response(
                    StatusCode::NOT_IMPLEMENTED,
                    &format!(
                        "Periscope does not relay {:?} over extended CONNECT.",
                        protocol.as_str()
                    ),
                    "Only WebSocket (RFC 8441) is relayed over HTTP/2 extended CONNECT.",
                ));
            }
            if self.tunnel.is_some() {
                return Ok(error_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "CONNECT inside an intercepted tunnel is not supported.",
                    "Send CONNECT to the proxy directly.",
                ));
            }
            return Ok(crate::tunnel::handle_connect(
                &self.core,
                &self.client,
                &self.client_milestones,
                request,
                started,
            )
            .await);
        }
        let target = match self.target_of(&request) {
            Ok(target) => target,
            Err(response) => return Ok(*response),
        };
        let recorder = self.new_flow(
            &request,
            target.scheme,
            target.host.clone(),
            target.port,
            started,
        );
        recorder.publish_request();
        let client_upgrade =
            wants_upgrade(request.headers()).then(|| PendingUpgrade::of_request(&mut request));
        let upstream_request = self.upstream_request(request, &target, &recorder);
        Ok(self
            .exchange(target, recorder, upstream_request, client_upgrade)
            .await)
    }

    /// The target of a request, or the answer when it is not one to forward.
    fn target_of(&self, request: &Request<IncomingBody>) -> Result<Target, Box<ClientResponse>> {
        if let Some(tunnel) = &self.tunnel {
            let (host, port) = match host_header(request.headers()) {
                Some((host, port)) => (host, port.unwrap_or(tunnel.key.port)),
                None => (
                    tunnel
                        .tls
                        .as_ref()
                        .map_or_else(|| tunnel.key.host.clone(), |tls| tls.server_name.clone()),
                    tunnel.key.port,
                ),
            };
            return Ok(Target {
                concurrent: request.version() == Version::HTTP_2,
                key: tunnel.key.clone(),
                tls: tunnel.tls.clone(),
                scheme: if tunnel.tls.is_some() {
                    "https"
                } else {
                    "http"
                },
                host,
                port,
            });
        }
        let uri = request.uri();
        let Some(host) = uri.host() else {
            // Not a proxy request: somebody pointed a browser at the proxy itself.
            let path = uri.path();
            return Err(Box::new(proxy_info_page(self.core.ca_pem(), path)));
        };
        let (tls, scheme, default_port) = match uri.scheme_str() {
            Some("https") => (true, "https", 443),
            Some("http") | None => (false, "http", 80),
            Some(other) => {
                return Err(Box::new(error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("Periscope cannot proxy {other}:// URLs."),
                    "Only http:// and https:// URLs can be requested through an HTTP proxy.",
                )))
            }
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(default_port);
        let key = UpstreamKey {
            tls,
            host: host.clone(),
            port,
        };
        // The client asked the proxy for https://: it speaks HTTP/1.1 to us, and any
        // protocol can be used upstream.
        let tls = tls.then(|| TlsParameters {
            server_name: host.clone(),
            send_sni: true,
            alpn: vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
        });
        Ok(Target {
            concurrent: request.version() == Version::HTTP_2,
            key,
            tls,
            scheme,
            host,
            port,
        })
    }

    /// Checks made before anything is relayed; `Some` is the answer instead.
    fn admit(&self, request: &Request<IncomingBody>) -> Option<Refusal> {
        if let Some(refusal) = check_framing(request.headers()) {
            return Some(refusal);
        }
        if self.tunnel.is_some() {
            // Inside a tunnel the client already authenticated with its CONNECT.
            return None;
        }
        if let Some(credentials) = &self.core.config.credentials {
            if let Some(refusal) = check_credentials(request.headers(), credentials) {
                return Some(refusal);
            }
        }
        let extended_connect = request.extensions().get::<h2::ext::Protocol>().is_some();
        let (host, port) = if request.method() == Method::CONNECT && !extended_connect {
            // An invalid target is answered 400 by the CONNECT handler.
            crate::tunnel::connect_target(request.uri())?
        } else {
            let host = request.uri().host()?.to_owned();
            let default_port = if request.uri().scheme_str() == Some("https") {
                443
            } else {
                80
            };
            (host, request.uri().port_u16().unwrap_or(default_port))
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        targets_self(self.core.config.listen, &host, port).then(|| loop_refusal(&host, port))
    }

    /// Answers a refused request, recording it as a flow with an error.
    fn refuse(
        &self,
        request: &Request<IncomingBody>,
        started: Timestamp,
        refusal: Refusal,
    ) -> ClientResponse {
        let uri = request.uri();
        let (scheme, default_port) = match (&self.tunnel, uri.scheme_str()) {
            (Some(_), _) | (None, Some("https")) => ("https", 443),
            _ => ("http", 80),
        };
        let (host, port) = match (uri.host(), host_header(request.headers())) {
            (Some(host), _) => (host.to_owned(), uri.port_u16().unwrap_or(default_port)),
            (None, Some((host, port))) => (host, port.unwrap_or(default_port)),
            (None, None) => (String::new(), default_port),
        };
        let recorder = self.new_flow(request, scheme, host, port, started);
        let mut response = error_response(refusal.status, &refusal.summary, &refusal.detail);
        if refusal.challenge {
            response.headers_mut().insert(
                http::header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"periscope\""),
            );
        }
        if refusal.close {
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        let text = error_text(refusal.status, &refusal.summary, &refusal.detail);
        recorder.set_response(recorded_response(&response, text.as_bytes()));
        recorder.finish_with_error(
            refusal.kind,
            format!("{} {}", refusal.summary, refusal.detail),
        );
        response
    }

    fn new_flow(
        &self,
        request: &Request<IncomingBody>,
        scheme: &str,
        host: String,
        port: u16,
        started: Timestamp,
    ) -> Arc<FlowRecorder> {
        let path = request
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let mut timeline = Timeline::new();
        for (milestone, at) in &self.client_milestones {
            timeline.mark(*milestone, *at);
        }
        timeline.mark(Milestone::RequestStarted, started);
        let flow = Flow {
            id: FlowId::new(),
            client: self.client.clone(),
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
            intercepted_tls: self.tunnel.is_some(),
            websocket: None,
        };
        FlowRecorder::new(flow, self.core.bus.clone(), self.client_tls.clone())
    }

    fn upstream_request(
        &self,
        request: Request<IncomingBody>,
        target: &Target,
        recorder: &Arc<FlowRecorder>,
    ) -> Request<RequestBody> {
        let (mut parts, body) = request.into_parts();
        let upgrade = wants_upgrade(&parts.headers);
        strip_hop_by_hop(&mut parts.headers, upgrade);
        normalize_framing(&mut parts.headers);
        if !parts.headers.contains_key(HOST) {
            if let Ok(value) = HeaderValue::from_str(&host_header_value(&target.key)) {
                parts.headers.insert(HOST, value);
            }
        }
        let origin_form = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        parts.uri = origin_form
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
        parts.version = Version::HTTP_11;
        let config = &self.core.config;
        let body = RecordingBody::new(
            body,
            Arc::clone(recorder),
            Side::Request,
            config.body_limit,
            config.timeouts.body_idle,
        );
        Request::from_parts(parts, Box::new(body))
    }

    async fn exchange(
        &self,
        target: Target,
        recorder: Arc<FlowRecorder>,
        mut request: Request<RequestBody>,
        client_upgrade: Option<PendingUpgrade>,
    ) -> ClientResponse {
        let label = target.key.label();
        let response_timeout = self.core.config.timeouts.response;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut connection, reused) = match self.checkout(&target).await {
                Ok(checked_out) => checked_out,
                Err(error) => return self.fail(&recorder, &label, error),
            };
            recorder.set_server(
                connection.info.clone(),
                &connection.milestones,
                connection.tls.clone(),
            );
            fit_request_to(&mut request, &target.key, connection.is_http2());
            // Kept to replay the request over HTTP/1.1 if an HTTP/2 server demands it.
            let replay = connection.is_http2().then(|| ReplayHead::of(&request));
            match until_ready(&mut connection, &label, reused && attempt < 3, "request").await {
                Ok(()) => {}
                Err(None) => continue,
                Err(Some(error)) => return self.fail(&recorder, &label, error),
            }
            let sent = connection.sender.try_send(request);
            let failure = match await_response(&recorder, sent, response_timeout).await {
                Err(_) => {
                    let error = UpstreamError::ResponseTimeout {
                        target: label.clone(),
                        timeout: response_timeout,
                    };
                    return self.fail(&recorder, &label, error);
                }
                Ok(Ok(response)) => {
                    self.checkin(&target.key, connection).await;
                    return self.relay_response(recorder, response, client_upgrade);
                }
                Ok(Err(failure)) => failure,
            };
            let mut failure = failure;
            if let Some(unsent) = failure.take_message() {
                // The request never left: a kept-alive connection the server closed
                // just as we reused it.
                if reused && attempt < 3 {
                    request = unsent;
                    continue;
                }
            }
            if is_http11_required(failure.error()) {
                self.core.remember_http11_required(&target.key.host);
                recorder.push_note(format!(
                    "{label} answered HTTP_1_1_REQUIRED over HTTP/2; retrying over HTTP/1.1 \
                     (and using HTTP/1.1 for this host from now on)"
                ));
                self.forget_http2(&target.key).await;
                match replay.and_then(|head| head.rebuild(&recorder, &self.core)) {
                    Some(rebuilt) if attempt < 3 => {
                        request = rebuilt;
                        continue;
                    }
                    _ => {
                        let error = UpstreamError::exchange(format!(
                                "{label} requires HTTP/1.1 for this request (HTTP_1_1_REQUIRED) and \
                                 the request body could not be replayed; the next request will use HTTP/1.1"
                            ));
                        return self.fail(&recorder, &label, error);
                    }
                }
            }
            if let Some(refusal) = unprocessed_by_server(failure.error()) {
                if refusal.connection_closing {
                    self.forget_http2(&target.key).await;
                }
                let why = &refusal.frame;
                match replay.and_then(|head| head.rebuild(&recorder, &self.core)) {
                    Some(rebuilt) if attempt < 3 => {
                        recorder.push_note(format!(
                            "{label} answered {why} without processing the request; sending it again"
                        ));
                        request = rebuilt;
                        continue;
                    }
                    rebuilt => {
                        let reason = if rebuilt.is_some() {
                            format!("after {attempt} attempts")
                        } else {
                            "and the request body could not be replayed".to_owned()
                        };
                        let error = UpstreamError::exchange(format!(
                            "{label} answered {why} without processing the request, {reason}"
                        ));
                        return self.fail(&recorder, &label, error);
                    }
                }
            }
            if let Some(answer) = client_body_failed(&recorder) {
                return answer;
            }
            let error =
                UpstreamError::from_exchange(&label, failure.error(), connection.tls.as_deref());
            return self.fail(&recorder, &label, error);
        }
    }

    /// WebSocket over HTTP/2 (RFC 8441). When the server's HTTP/2 connection allows
    /// extended CONNECT, the request goes on to it as one; otherwise it becomes an
    /// HTTP/1.1 Upgrade, whose 101 becomes the client's 200. Either way the streams
    /// are then relayed frame by frame — RFC 8441 keeps RFC 6455 framing, masks
    /// included, so the relay and recorder of HTTP/1.1 WebSockets serve unchanged.
    async fn websocket_over_http2(
        &self,
        mut request: Request<IncomingBody>,
        started: Timestamp,
    ) -> ClientResponse {
        if self.tunnel.is_none() && request.uri().host().is_none() {
            // Not the proxy-info page target_of would answer: a 2xx to a CONNECT
            // would open the stream as a tunnel.
            return error_response(
                StatusCode::BAD_REQUEST,
                "Invalid extended CONNECT.",
                "A WebSocket over HTTP/2 sent to the proxy needs :scheme, :authority and :path.",
            );
        }
        let mut target = match self.target_of(&request) {
            Ok(target) => target,
            Err(response) => return *response,
        };
        let recorder = self.new_flow(
            &request,
            target.scheme,
            target.host.clone(),
            target.port,
            started,
        );
        if let Some(connection) = self.extended_connect_upstream(&target.key).await {
            recorder.push_note(
                "WebSocket over HTTP/2 extended CONNECT (RFC 8441) on both legs".to_owned(),
            );
            recorder.publish_request();
            return self
                .extended_connect(request, &target, recorder, connection)
                .await;
        }
        if let Some(tls) = target.tls.as_mut() {
            tls.alpn = vec![ALPN_HTTP11.to_vec()];
        }
        recorder.push_note(
            "WebSocket over HTTP/2 extended CONNECT (RFC 8441) on the client leg, relayed \
             as an HTTP/1.1 Upgrade (RFC 6455) on the server leg"
                .to_owned(),
        );
        recorder.publish_request();
        let client_upgrade = PendingUpgrade::of_request(&mut request);
        let label = target.key.label();
        let key = match crate::websocket::handshake_key() {
            Ok(key) => key,
            Err(error) => {
                let error = UpstreamError::exchange(format!(
                    "no random bytes for a Sec-WebSocket-Key: {error}"
                ));
                return self.fail(&recorder, &label, error);
            }
        };
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_else(|| host_header_value(&target.key));
        let response_timeout = self.core.config.timeouts.response;
        let mut attempt = 0;
        let (response, connection) = loop {
            attempt += 1;
            let (mut connection, reused) = match self.checkout_http1(&target).await {
                Ok(checked_out) => checked_out,
                Err(error) => return self.fail(&recorder, &label, error),
            };
            recorder.set_server(
                connection.info.clone(),
                &connection.milestones,
                connection.tls.clone(),
            );
            match until_ready(
                &mut connection,
                &label,
                reused && attempt < 3,
                "WebSocket handshake",
            )
            .await
            {
                Ok(()) => {}
                Err(None) => continue,
                Err(Some(error)) => return self.fail(&recorder, &label, error),
            }
            let upgrade = websocket_upgrade_request(
                request.headers(),
                &path,
                &authority,
                &key,
                &recorder,
                &self.core,
            );
            let sent = connection.sender.try_send(upgrade);
            match await_response(&recorder, sent, response_timeout).await {
                Err(_) => {
                    let error = UpstreamError::ResponseTimeout {
                        target: label.clone(),
                        timeout: response_timeout,
                    };
                    return self.fail(&recorder, &label, error);
                }
                Ok(Ok(response)) => break (response, connection),
                Ok(Err(mut failure)) => {
                    // A kept-alive connection the server closed just as it was reused.
                    if failure.take_message().is_some() && reused && attempt < 3 {
                        continue;
                    }
                    let error = UpstreamError::from_exchange(
                        &label,
                        failure.error(),
                        connection.tls.as_deref(),
                    );
                    return self.fail(&recorder, &label, error);
                }
            }
        };
        let status = response.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            if status.is_success() {
                // Relayed as is, a 2xx would tell the client its WebSocket is open.
                let error = UpstreamError::exchange(format!(
                    "{label} answered the WebSocket handshake with {status} instead of \
                         101 Switching Protocols"
                ));
                return self.fail(&recorder, &label, error);
            }
            self.checkin(&target.key, connection).await;
            return self.relay_response(recorder, response, None);
        }
        let (mut parts, _) = response.into_parts();
        record_response_head(&recorder, &parts);
        let accept = parts
            .headers
            .get(http::header::SEC_WEBSOCKET_ACCEPT)
            .map(HeaderValue::as_bytes);
        let expected = crate::websocket::accept_key(&key);
        if !upgrades_to(&parts.headers, "websocket") || accept != Some(expected.as_bytes()) {
            let error = UpstreamError::exchange(format!(
                "{label} answered 101 Switching Protocols without accepting the WebSocket \
                     handshake (Upgrade: websocket and a Sec-WebSocket-Accept for the key sent)"
            ));
            return self.fail(&recorder, &label, error);
        }
        let Some(server_upgrade) = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .map(PendingUpgrade::http1)
        else {
            let error =
                UpstreamError::exchange(format!("the connection to {label} cannot be upgraded"));
            return self.fail(&recorder, &label, error);
        };
        start_websocket_session(&recorder, &parts.headers);
        recorder.push_note(
            "answered the HTTP/2 client 200 for the server's 101 Switching Protocols".to_owned(),
        );
        recorder.set_body(Side::Response, Body::default(), None);
        recorder.finish();
        crate::tunnel::relay_upgraded(&self.core, &recorder, server_upgrade, client_upgrade);
        // The server's chosen subprotocol and extensions, and any other end-to-end
        // header (a cookie); the handshake headers belong to the HTTP/1.1 leg.
        let mut headers = std::mem::take(&mut parts.headers);
        strip_hop_by_hop(&mut headers, false);
        for name in [
            CONTENT_LENGTH,
            TRANSFER_ENCODING,
            http::header::SEC_WEBSOCKET_ACCEPT,
        ] {
            headers.remove(name);
        }
        let mut answer = Response::new(ProxyBody::generated(""));
        *answer.headers_mut() = headers;
        answer
    }

    /// The server's HTTP/2 connection, when it has one that allows extended CONNECT.
    async fn extended_connect_upstream(&self, key: &UpstreamKey) -> Option<UpstreamConnection> {
        let pools = self.upstreams.lock().await;
        let shared = pools.get(key)?.shared.as_ref()?;
        match &shared.sender {
            HttpSender::Http2(sender)
                if !sender.is_closed() && sender.supports_extended_connect() =>
            {
                shared.share()
            }
            _ => None,
        }
    }

    /// Relays an RFC 8441 WebSocket to a server that speaks it: the client's extended
    /// CONNECT goes on as one, and the server's answer comes back as it is.
    async fn extended_connect(
        &self,
        mut request: Request<IncomingBody>,
        target: &Target,
        recorder: Arc<FlowRecorder>,
        mut connection: UpstreamConnection,
    ) -> ClientResponse {
        let label = target.key.label();
        recorder.set_server(
            connection.info.clone(),
            &connection.milestones,
            connection.tls.clone(),
        );
        let client_upgrade = PendingUpgrade::of_request(&mut request);
        let HttpSender::Http2(sender) = &mut connection.sender else {
            return self.fail(
                &recorder,
                &label,
                UpstreamError::exchange(format!("the connection to {label} is not HTTP/2")),
            );
        };
        let head = extended_connect_request(&request, &target.key);
        let response_timeout = self.core.config.timeouts.response;
        let answer = match tokio::time::timeout(response_timeout, async {
            sender.ready().await?;
            sender.connect(head).await
        })
        .await
        {
            Err(_) => {
                let error = UpstreamError::ResponseTimeout {
                    target: label.clone(),
                    timeout: response_timeout,
                };
                return self.fail(&recorder, &label, error);
            }
            Ok(Err(error)) => {
                let error = UpstreamError::from_exchange(&label, &error, connection.tls.as_deref());
                return self.fail(&recorder, &label, error);
            }
            Ok(Ok(answer)) => answer,
        };
        let (response, stream) = match answer {
            ConnectAnswer::Refused(response) => {
                return self.relay_response(recorder, response.map(IncomingBody::Http2), None)
            }
            ConnectAnswer::Open(response, stream) => (response, stream),
        };
        let (mut parts, ()) = response.into_parts();
        record_response_head(&recorder, &parts);
        start_websocket_session(&recorder, &parts.headers);
        recorder.set_body(Side::Response, Body::default(), None);
        recorder.finish();
        crate::tunnel::relay_upgraded(
            &self.core,
            &recorder,
            PendingUpgrade::ready(stream),
            client_upgrade,
        );
        let mut headers = std::mem::take(&mut parts.headers);
        strip_hop_by_hop(&mut headers, false);
        headers.remove(CONTENT_LENGTH);
        let mut answer = Response::new(ProxyBody::generated(""));
        *answer.status_mut() = parts.status;
        *answer.headers_mut() = headers;
        answer
    }

    /// An HTTP/1.1 connection for a WebSocket handshake: an idle one, or a new one
    /// (whose ALPN the caller limited to HTTP/1.1).
    async fn checkout_http1(
        &self,
        target: &Target,
    ) -> Result<(UpstreamConnection, bool), UpstreamError> {
        {
            let mut pools = self.upstreams.lock().await;
            let pool = pools.entry(target.key.clone()).or_default();
            if let Some(error) = pool.failed.take() {
                return Err(*error);
            }
            pool.idle.retain(|c| !c.sender.is_closed());
            if let Some(position) = pool.idle.iter().position(UpstreamConnection::is_ready) {
                return Ok((pool.idle.swap_remove(position), true));
            }
        }
        let socket = connect_tcp(&self.core, &target.key).await?;
        let connection = establish(&self.core, socket, target.tls.as_ref()).await?;
        if connection.is_http2() {
            return Err(UpstreamError::exchange(format!(
                "{} chose HTTP/2 although only HTTP/1.1 was offered",
                target.key.label()
            )));
        }
        Ok((connection, false))
    }

    /// A connection to the target: the shared HTTP/2 one, an idle HTTP/1.1 one, or new.
    async fn checkout(&self, target: &Target) -> Result<(UpstreamConnection, bool), UpstreamError> {
        let mut busy = None;
        {
            let mut pools = self.upstreams.lock().await;
            let pool = pools.entry(target.key.clone()).or_default();
            if let Some(error) = pool.failed.take() {
                return Err(*error);
            }
            if let Some(shared) = pool.shared.as_ref().and_then(UpstreamConnection::share) {
                if !shared.sender.is_closed() {
                    return Ok((shared, true));
                }
                pool.shared = None;
            }
            pool.idle.retain(|c| !c.sender.is_closed());
            if let Some(position) = pool.idle.iter().position(|c| c.is_ready()) {
                return Ok((pool.idle.swap_remove(position), true));
            }
            // An HTTP/1.1 client sends one request at a time: its connection is about to
            // be free, so wait for it rather than open another.
            if !target.concurrent && !pool.idle.is_empty() {
                busy = pool.idle.pop();
            }
        }
        if let Some(connection) = busy {
            return Ok((connection, true));
        }
        let connection = self.open(target).await?;
        if let Some(shared) = connection.share() {
            let mut pools = self.upstreams.lock().await;
            pools.entry(target.key.clone()).or_default().shared = Some(shared);
        }
        Ok((connection, false))
    }

    async fn open(&self, target: &Target) -> Result<UpstreamConnection, UpstreamError> {
        let mut tls = target.tls.clone();
        if let Some(tls) = tls.as_mut() {
            if self.core.requires_http11(&target.key.host) {
                tls.alpn = vec![ALPN_HTTP11.to_vec()];
            }
        }
        let socket = connect_tcp(&self.core, &target.key).await?;
        establish_with_fallback(&self.core, socket, &target.key, tls.as_ref()).await
    }

    async fn checkin(&self, key: &UpstreamKey, connection: UpstreamConnection) {
        if connection.is_http2() {
            return;
        }
        self.upstreams
            .lock()
            .await
            .entry(key.clone())
            .or_default()
            .idle
            .push(connection);
    }

    async fn forget_http2(&self, key: &UpstreamKey) {
        if let Some(pool) = self.upstreams.lock().await.get_mut(key) {
            pool.shared = None;
        }
    }

    fn relay_response(
        &self,
        recorder: Arc<FlowRecorder>,
        response: Response<IncomingBody>,
        client_upgrade: Option<PendingUpgrade>,
    ) -> ClientResponse {
        let (mut parts, body) = response.into_parts();
        record_response_head(&recorder, &parts);
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        strip_hop_by_hop(&mut parts.headers, switching);
        normalize_framing(&mut parts.headers);
        let server_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .map(PendingUpgrade::http1);
        if switching && upgrades_to(&parts.headers, "websocket") {
            start_websocket_session(&recorder, &parts.headers);
        }
        let config = &self.core.config;
        let body = RecordingBody::new(
            body,
            Arc::clone(&recorder),
            Side::Response,
            config.body_limit,
            config.timeouts.body_idle,
        );
        if switching {
            if let (Some(server), Some(client)) = (server_upgrade, client_upgrade) {
                crate::tunnel::relay_upgraded(&self.core, &recorder, server, client);
            }
        }
        Response::from_parts(parts, ProxyBody::Relayed(body))
    }

    fn fail(&self, recorder: &FlowRecorder, label: &str, error: UpstreamError) -> ClientResponse {
        let status = error.status();
        let summary = format!("Periscope could not complete the request to {label}.");
        let detail = error.to_string();
        let response = error_response(status, &summary, &detail);
        let text = error_text(status, &summary, &detail);
        recorder.set_response(recorded_response(&response, text.as_bytes()));
        recorder.finish_with_error(error.kind(), detail);
        response
    }
}

/// Marks the flow as a WebSocket, with the extensions the server accepted (its
/// messages are recorded as the relay sees them).
fn start_websocket_session(recorder: &FlowRecorder, headers: &HeaderMap) {
    let extensions = headers
        .get(http::header::SEC_WEBSOCKET_EXTENSIONS)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    recorder.update(|flow| {
        flow.websocket = Some(periscope_flow::WebSocketSession {
            extensions,
            ..Default::default()
        })
    });
}

/// Records a server's response head in the flow (its body is recorded as it streams).
fn record_response_head(recorder: &FlowRecorder, parts: &http::response::Parts) {
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

/// The HTTP/1.1 Upgrade request (RFC 6455 §4.1) that stands for an HTTP/2 client's
/// extended CONNECT: its end-to-end headers (subprotocols, extensions, origin,
/// cookies) go along; the handshake headers are Periscope's own, since an HTTP/2
/// client sends no key and expects no accept.
fn websocket_upgrade_request(
    client_headers: &HeaderMap,
    path: &str,
    authority: &str,
    key: &str,
    recorder: &Arc<FlowRecorder>,
    core: &ProxyCore,
) -> Request<RequestBody> {
    let mut headers = client_headers.clone();
    strip_hop_by_hop(&mut headers, false);
    for name in [
        HOST,
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        http::header::SEC_WEBSOCKET_KEY,
        http::header::SEC_WEBSOCKET_ACCEPT,
        http::header::SEC_WEBSOCKET_VERSION,
    ] {
        headers.remove(name);
    }
    if let Ok(value) = HeaderValue::from_str(authority) {
        headers.insert(HOST, value);
    }
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        http::header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    if let Ok(value) = HeaderValue::from_str(key) {
        headers.insert(http::header::SEC_WEBSOCKET_KEY, value);
    }
    let body = RecordingBody::new(
        IncomingBody::Replayed(http_body_util::Full::new(bytes::Bytes::new())),
        Arc::clone(recorder),
        Side::Request,
        core.config.body_limit,
        core.config.timeouts.body_idle,
    );
    let mut request = Request::new(Box::new(body));
    *request.method_mut() = Method::GET;
    *request.uri_mut() = path
        .parse::<Uri>()
        .unwrap_or_else(|_| Uri::from_static("/"));
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request
}

/// The client's extended CONNECT as it goes to an HTTP/2 server: its end-to-end
/// headers (version, subprotocols, extensions, origin, cookies) and `:protocol`.
fn extended_connect_request(request: &Request<IncomingBody>, key: &UpstreamKey) -> Request<()> {
    let mut headers = request.headers().clone();
    strip_hop_by_hop(&mut headers, false);
    headers.remove(HOST);
    headers.remove(CONTENT_LENGTH);
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| host_header_value(key));
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let scheme = if key.tls { "https" } else { "http" };
    let mut head = Request::new(());
    *head.method_mut() = Method::CONNECT;
    *head.uri_mut() = format!("{scheme}://{authority}{path}")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    *head.version_mut() = Version::HTTP_2;
    *head.headers_mut() = headers;
    head.extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    head
}

/// Waits until `connection` takes a request. `Err(None)`: it closed while idle and
/// `may_retry` allows another; `Err(Some(_))`: why the exchange failed — what its TLS
/// layer recorded (an alert, a certificate request) comes first.
async fn until_ready(
    connection: &mut UpstreamConnection,
    label: &str,
    may_retry: bool,
    what: &str,
) -> Result<(), Option<UpstreamError>> {
    if connection.sender.ready().await.is_ok() {
        return Ok(());
    }
    if let Some(error) = UpstreamError::from_tls_state(label, connection.tls.as_deref()) {
        return Err(Some(error));
    }
    if may_retry {
        return Err(None);
    }
    Err(Some(UpstreamError::exchange(format!(
        "the connection to {label} closed before the {what} could be sent"
    ))))
}

/// Waits for the response head. The timeout counts from the end of the request body,
/// and is extended while the body is still moving: a slow upload is bounded by the
/// body idle timeout, not mistaken for a silent server.
async fn await_response<F: std::future::Future>(
    recorder: &FlowRecorder,
    sent: F,
    timeout: std::time::Duration,
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
        if let Some(complete) = recorder.request_complete_at() {
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

    /// The request again, if its body was recorded whole (or it had none).
    fn rebuild(
        self,
        recorder: &Arc<FlowRecorder>,
        core: &ProxyCore,
    ) -> Option<Request<RequestBody>> {
        let body = if self.had_body {
            let (complete, body) = recorder.update(|flow| {
                (
                    flow.timeline
                        .milestone(Milestone::RequestComplete)
                        .is_some(),
                    flow.request.body.clone(),
                )
            });
            if !complete || body.truncated {
                return None;
            }
            body.content
        } else {
            bytes::Bytes::new()
        };
        let mut request = Request::new(Box::new(RecordingBody::new(
            IncomingBody::Replayed(http_body_util::Full::new(body)),
            Arc::clone(recorder),
            Side::Request,
            core.config.body_limit,
            core.config.timeouts.body_idle,
        )));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.headers_mut() = self.headers;
        Some(request)
    }
}

/// An HTTP/2 server's "use HTTP/1.1 for this request" (RFC 9113 §8.7; IIS sends it
/// for paths that need a client certificate, since HTTP/2 forbids renegotiation).
fn is_http11_required(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(h2) = current.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::HTTP_1_1_REQUIRED);
        }
        source = current.source();
    }
    false
}

/// An HTTP/2 server's word that it did not act on a request, so that sending it again
/// is safe even when it is not idempotent (RFC 9113 §8.7).
struct Unprocessed {
    /// The frame and error code, as the flow and the error page name them.
    frame: String,
    /// GOAWAY: the connection takes no more streams, the retry needs a new one.
    connection_closing: bool,
}

/// A GOAWAY whose last-stream-id is below the request's stream (h2 fails exactly those
/// streams with the peer's GOAWAY error), or a REFUSED_STREAM reset.
fn unprocessed_by_server(error: &(dyn std::error::Error + 'static)) -> Option<Unprocessed> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(h2) = current.downcast_ref::<h2::Error>() {
            let reason = h2.reason()?;
            let code = crate::error::reason_name(reason);
            if !h2.is_remote() {
                return None;
            }
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
            return None;
        }
        source = current.source();
    }
    None
}

fn upgrades_to(headers: &HeaderMap, protocol: &str) -> bool {
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

fn host_header(headers: &HeaderMap) -> Option<(String, Option<u16>)> {
    let value = headers.get(HOST)?.to_str().ok()?;
    let authority: http::uri::Authority = value.parse().ok()?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    Some((host, authority.port_u16()))
}

fn host_header_value(key: &UpstreamKey) -> String {
    let default = if key.tls { 443 } else { 80 };
    let host = if key.host.contains(':') {
        format!("[{}]", key.host)
    } else {
        key.host.clone()
    };
    if key.port == default {
        host
    } else {
        format!("{host}:{}", key.port)
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
