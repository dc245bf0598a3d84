//! One client connection's HTTP conversation: each request becomes a flow, is relayed
//! to its server over a connection this client connection owns, and its response
//! streams back while the flow records it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use periscope_flow::{
    Body, ConnectionInfo, Flow, FlowId, LogLevel, Milestone, Timeline, Timestamp,
};
use periscope_tls::TlsConnectionState;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::{ProxyBody, RecordingBody};
use crate::core::ProxyCore;
use crate::error::{describe_hyper_error, UpstreamError};
use crate::headers::{record_headers, strip_hop_by_hop, wants_upgrade};
use crate::pages::{error_response, error_text, proxy_info_page, recorded_response};
use crate::recorder::{FlowRecorder, Side};
use crate::upstream::{connect_tcp, establish, TlsParameters, UpstreamConnection, UpstreamKey};

pub type ClientResponse = Response<ProxyBody<Incoming>>;

/// An intercepted CONNECT tunnel: every request in it goes to one server.
pub struct Tunnel {
    pub key: UpstreamKey,
    pub tls: TlsParameters,
}

enum Slot {
    Ready(Box<UpstreamConnection>),
    /// The eager connection made for a tunnel failed; the first request reports it.
    Failed(UpstreamError),
}

pub struct ClientSession {
    core: Arc<ProxyCore>,
    client: ConnectionInfo,
    client_milestones: Vec<(Milestone, Timestamp)>,
    client_tls: Option<Arc<TlsConnectionState>>,
    tunnel: Option<Tunnel>,
    upstreams: tokio::sync::Mutex<HashMap<UpstreamKey, Slot>>,
}

/// Where a request goes and how the flow names it.
struct Target {
    key: UpstreamKey,
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
        let slot = match connection {
            Ok(connection) => Slot::Ready(Box::new(connection)),
            Err(error) => Slot::Failed(error),
        };
        // Nothing else holds the lock before the session starts serving.
        if let Ok(mut upstreams) = self.upstreams.try_lock() {
            upstreams.insert(key, slot);
        }
    }

    /// Serves HTTP/1.1 on `io` until the client goes away.
    pub async fn serve<S>(self: Arc<Self>, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let session = Arc::clone(&self);
        let service = service_fn(move |request| {
            let session = Arc::clone(&session);
            async move { session.handle(request).await }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .preserve_header_case(true)
            .timer(TokioTimer::new())
            .header_read_timeout(self.core.config.timeouts.client_idle)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        if let Err(error) = connection.await {
            let peer = self
                .client
                .peer
                .map(|p| p.to_string())
                .unwrap_or_else(|| "client".into());
            if error.is_parse() || error.is_parse_status() {
                self.core.bus.log(
                    LogLevel::Warn,
                    format!(
                        "{peer}: invalid HTTP request, answered 400 and closed: {}",
                        describe_hyper_error(&error)
                    ),
                );
            } else if error.is_timeout() {
                self.core.bus.log(
                    LogLevel::Info,
                    format!("{peer}: closed an idle client connection (no complete request head in time)"),
                );
            } else {
                tracing::debug!(%peer, error = %describe_hyper_error(&error), "client connection ended");
            }
        }
    }

    pub async fn handle(
        self: Arc<Self>,
        mut request: Request<Incoming>,
    ) -> Result<ClientResponse, Infallible> {
        let started = Timestamp::now();
        if request.method() == Method::CONNECT {
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
        let recorder = self.new_flow(&request, &target, started);
        recorder.publish_request();
        let client_upgrade =
            wants_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
        let upstream_request = self.upstream_request(request, &target, &recorder);
        Ok(self
            .exchange(target, recorder, upstream_request, client_upgrade)
            .await)
    }

    /// The target of a request, or the answer when it is not one to forward.
    fn target_of(&self, request: &Request<Incoming>) -> Result<Target, Box<ClientResponse>> {
        if let Some(tunnel) = &self.tunnel {
            let (host, port) = match host_header(request.headers()) {
                Some((host, port)) => (host, port.unwrap_or(tunnel.key.port)),
                None => (tunnel.tls.server_name.clone(), tunnel.key.port),
            };
            return Ok(Target {
                key: tunnel.key.clone(),
                tls: Some(tunnel.tls.clone()),
                scheme: "https",
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
        let tls = tls.then(|| TlsParameters {
            server_name: host.clone(),
            send_sni: true,
            alpn: vec![b"http/1.1".to_vec()],
        });
        Ok(Target {
            key,
            tls,
            scheme,
            host,
            port,
        })
    }

    fn new_flow(
        &self,
        request: &Request<Incoming>,
        target: &Target,
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
                scheme: target.scheme.to_owned(),
                host: target.host.clone(),
                port: target.port,
                path,
                http_version: version_label(request.version()).to_owned(),
                headers: record_headers(request.headers()),
                body: Body::default(),
                trailers: None,
            },
            response: None,
            error: None,
            timeline,
            marked: false,
            intercepted_tls: self.tunnel.is_some(),
        };
        FlowRecorder::new(flow, self.core.bus.clone(), self.client_tls.clone())
    }

    fn upstream_request(
        &self,
        request: Request<Incoming>,
        target: &Target,
        recorder: &Arc<FlowRecorder>,
    ) -> Request<RecordingBody<Incoming>> {
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
        Request::from_parts(parts, body)
    }

    async fn exchange(
        &self,
        target: Target,
        recorder: Arc<FlowRecorder>,
        mut request: Request<RecordingBody<Incoming>>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> ClientResponse {
        let label = target.key.label();
        let response_timeout = self.core.config.timeouts.response;
        // One retry, only for a request that never left: a kept-alive connection the
        // server closed just as we reused it.
        for attempt in 0..2 {
            let (mut connection, reused) = match self.checkout(&target).await {
                Ok(checked_out) => checked_out,
                Err(error) => return self.fail(&recorder, &label, error),
            };
            recorder.set_server(
                connection.info.clone(),
                &connection.milestones,
                connection.tls.clone(),
            );
            if connection.sender.ready().await.is_err() {
                if attempt == 0 {
                    continue;
                }
                let error = UpstreamError::Exchange {
                    message: format!(
                        "the connection to {label} closed before the request could be sent"
                    ),
                    timeout: false,
                    tls: false,
                    client_certificate: false,
                };
                return self.fail(&recorder, &label, error);
            }
            let sent = connection.sender.try_send_request(request);
            match tokio::time::timeout(response_timeout, sent).await {
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
                Ok(Err(mut failure)) => match failure.take_message() {
                    Some(unsent) if reused && attempt == 0 => {
                        request = unsent;
                        continue;
                    }
                    _ => {
                        let error = UpstreamError::from_exchange(&label, failure.error());
                        return self.fail(&recorder, &label, error);
                    }
                },
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// A connection to the target: the kept-alive one if it is still open, else new.
    async fn checkout(&self, target: &Target) -> Result<(UpstreamConnection, bool), UpstreamError> {
        let existing = self.upstreams.lock().await.remove(&target.key);
        match existing {
            Some(Slot::Ready(connection)) if !connection.sender.is_closed() => {
                return Ok((*connection, true))
            }
            Some(Slot::Failed(error)) => return Err(error),
            _ => {}
        }
        let socket = connect_tcp(&self.core, &target.key).await?;
        let connection = establish(&self.core, socket, target.tls.as_ref()).await?;
        Ok((connection, false))
    }

    async fn checkin(&self, key: &UpstreamKey, connection: UpstreamConnection) {
        self.upstreams
            .lock()
            .await
            .insert(key.clone(), Slot::Ready(Box::new(connection)));
    }

    fn relay_response(
        &self,
        recorder: Arc<FlowRecorder>,
        response: Response<Incoming>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> ClientResponse {
        let (mut parts, body) = response.into_parts();
        let reason = parts
            .extensions
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .unwrap_or_else(|| parts.status.canonical_reason().unwrap_or("").to_owned());
        recorder.set_response(periscope_flow::Response {
            status: parts.status.as_u16(),
            reason,
            http_version: version_label(parts.version).to_owned(),
            headers: record_headers(&parts.headers),
            body: Body::default(),
            trailers: None,
            generated: false,
        });
        recorder.collect_tls_events();
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        strip_hop_by_hop(&mut parts.headers, switching);
        normalize_framing(&mut parts.headers);
        let server_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
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

/// Framing is re-derived by hyper from the body: a message that arrived chunked
/// leaves chunked (or close-delimited to an HTTP/1.0 peer), never with both headers.
fn normalize_framing(headers: &mut HeaderMap) {
    if headers.remove(TRANSFER_ENCODING).is_some() {
        headers.remove(CONTENT_LENGTH);
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
