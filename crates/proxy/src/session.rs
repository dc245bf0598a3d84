//! One client connection: its protocol (HTTP/1.1 through hyper, HTTP/2 through h2, or
//! sniffed on the plain listener), the admission of each request, and the dispatch of
//! what was admitted — CONNECT to the tunnel, WebSocket over HTTP/2 to
//! `websocket_h2`, everything else to the `exchange` pipeline. The connections it
//! holds to servers are its `pool`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use periscope_flow::{LogLevel, Timestamp, TlsEventKind};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::{IncomingBody, ProxyBody};
use crate::core::ProxyCore;
use crate::destination::{destination_of, named_target, unbracket, Destination, Tunnel};
use crate::error::{describe_hyper_error, UpstreamError};
use crate::guard::{
    check_credentials, check_framing, loop_refusal, protected_refusal, targets_self, Refusal,
};
use crate::http2::ServerSettings;
use crate::io::Prefixed;
use crate::pages::{error_response, error_text, recorded_response};
use crate::park::{IdleGate, ParkableClient, ParkedClient, TrackedBody};
use crate::pool::UpstreamPool;
use crate::recorder::{ClientContext, FlowRecorder};
use crate::upstream::{ParkedServer, UpstreamConnection, UpstreamKey};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type ClientResponse = Response<ProxyBody<IncomingBody>>;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The largest request head (request line and headers) a client may send.
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// Streams an HTTP/2 client may have open at once on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;

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
    client: ClientContext,
    tunnel: Option<Tunnel>,
    pool: UpstreamPool,
    /// HTTP/1.1 on this connection: one exchange at a time, so a flow the user kills
    /// takes the connection along (HTTP/2 resets just the stream).
    http1: std::sync::atomic::AtomicBool,
}

impl ClientSession {
    pub fn new(core: Arc<ProxyCore>, client: ClientContext, tunnel: Option<Tunnel>) -> Self {
        // The pool belongs to this client connection, and so to one listener: its
        // connections are all made the way that listener's mode makes them.
        let via = client.listener.as_ref().and_then(|l| l.via().cloned());
        let pool = UpstreamPool::new(core.timeouts().pool_idle, via);
        ClientSession {
            core,
            client,
            tunnel,
            pool,
            http1: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn core(&self) -> &Arc<ProxyCore> {
        &self.core
    }

    pub fn pool(&self) -> &UpstreamPool {
        &self.pool
    }

    /// A reverse proxy's connection: the Host header names the server.
    pub fn rewrites_host(&self) -> bool {
        self.tunnel
            .as_ref()
            .is_some_and(|tunnel| tunnel.rewrite_host)
    }

    pub fn in_tunnel(&self) -> bool {
        self.tunnel.is_some()
    }

    /// Hands over the connection made eagerly for a tunnel (or why it failed).
    pub fn seed(&self, key: UpstreamKey, connection: Result<UpstreamConnection, UpstreamError>) {
        self.pool.seed(key, connection);
    }

    /// From now on (the response is on its way to the client), killing the flow kills
    /// an HTTP/1.1 client connection too: a response cut short cannot be answered
    /// otherwise, and its socket is reset so nothing more arrives.
    pub fn tie_connection(&self, recorder: &FlowRecorder) {
        if let Some(kill) = recorder.kill_switch() {
            if self.http1.load(std::sync::atomic::Ordering::Relaxed) {
                kill.also_kill(Arc::clone(&self.client.connection_kill));
            }
        }
    }

    /// Whether this connection speaks HTTP/1.1 (one exchange at a time).
    pub fn is_http1(&self) -> bool {
        self.http1.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes the client's connection at once, whatever is in flight on it.
    pub fn close_client_connection(&self, reason: &str) {
        self.client.connection_kill.close_quietly(reason);
    }

    /// Where `request` goes (the proxy mode's stage of the exchange).
    pub fn destination_of(
        &self,
        request: &Request<IncomingBody>,
    ) -> Result<Destination, Box<ClientResponse>> {
        destination_of(&self.core, self.tunnel.as_ref(), request)
    }

    /// Starts the flow of a request on this connection.
    pub fn begin_flow<B>(
        &self,
        request: &Request<B>,
        target: (&str, String, u16),
        started: Timestamp,
    ) -> Arc<FlowRecorder> {
        let recorder = FlowRecorder::begin(
            self.core.bus.clone(),
            &self.client,
            request,
            target,
            started,
        );
        if let Some(live) = &self.core.live {
            recorder.attach_live(live);
        }
        recorder
    }

    /// Serves HTTP on `io` until the client goes away, in the protocol the TLS
    /// handshake chose (or, on a plain listener, whatever the client speaks).
    pub async fn serve<S>(self: Arc<Self>, io: S, protocol: ClientProtocol)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Each boxed: a connection's task keeps room for the largest future it awaits
        // for as long as it lives, and an idle HTTP/1.1 one needs none of the others.
        let outcome = match protocol {
            ClientProtocol::Http1 => Box::pin(Arc::clone(&self).serve_http1(io)).await,
            ClientProtocol::Http2 => Box::pin(Arc::clone(&self).serve_http2(io)).await,
            ClientProtocol::Detect => match Box::pin(self.sniff_preface(io)).await {
                Some((true, io)) => Box::pin(Arc::clone(&self).serve_http2(io)).await,
                Some((false, io)) => Box::pin(Arc::clone(&self).serve_http1(io)).await,
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
        self.http1.store(true, std::sync::atomic::Ordering::Relaxed);
        let gate = Arc::new(IdleGate::default());
        let session = Arc::clone(&self);
        let service_gate = Arc::clone(&gate);
        // Boxed: hyper keeps room for one request future per connection, and an idle
        // connection should not hold kilobytes of it.
        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
            let session = Arc::clone(&session);
            let in_flight = service_gate.begin();
            Box::pin(async move {
                let connect = request.method() == Method::CONNECT;
                let response = session.handle(request.map(IncomingBody::Http1)).await?;
                let status = response.status();
                if status == StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success()) {
                    in_flight.gate().mark_upgraded();
                }
                Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, in_flight)))
            })
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .preserve_header_case(true)
            // Request heads past this are answered 431.
            .max_buf_size(MAX_REQUEST_HEAD)
            .timer(TokioTimer::new())
            .header_read_timeout(self.core.timeouts().client_idle);
        let killed = Arc::clone(&self.client.connection_kill);
        // What a parked connection's client sends first is read before hyper is back.
        let mut stream = Prefixed::new(Bytes::new(), io);
        loop {
            let (client_io, slot) = ParkableClient::new(stream, Arc::clone(&gate));
            // Boxed, so that a parked connection does not keep room for it.
            let connection = Box::pin(
                builder
                    .serve_connection(TokioIo::new(client_io), service.clone())
                    .with_upgrades(),
            );
            let served = tokio::select! {
                served = connection => served.map_err(Into::into),
                // The user killed the flow in flight on it: the connection goes too, at
                // once (its socket is reset as it is dropped).
                () = killed.killed() => return Ok(()),
            };
            let Some(parked) = slot.take() else {
                return served;
            };
            match self.wait_while_parked(parked).await {
                Some((parked_stream, first)) => {
                    stream = parked_stream;
                    stream.put_back(first);
                }
                None => return Ok(()),
            }
        }
    }

    /// Holds a parked connection (see `park`) until its client speaks again: `Some`
    /// with the stream and what the client sent first, `None` when the connection is
    /// done (the client closed it, it stayed idle past the timeout, or was killed). Its
    /// idle HTTP/1.1 server connections leave hyper too; one that closes (or speaks,
    /// which an idle HTTP/1.1 server must not) is let go.
    async fn wait_while_parked<S>(&self, parked: ParkedClient<S>) -> Option<(S, Bytes)>
    where
        S: AsyncRead + Unpin,
    {
        use tokio::io::AsyncReadExt;
        let ParkedClient {
            mut stream,
            idle_since,
        } = parked;
        let mut servers = Box::pin(self.pool.park_idle()).await;
        let peer = self.client.peer_label();
        tracing::debug!(%peer, servers = servers.len(), "idle connection parked");
        let timeouts = self.core.timeouts();
        let client_deadline = idle_since + timeouts.client_idle;
        let servers_deadline = tokio::time::Instant::now() + timeouts.pool_idle;
        let killed = Arc::clone(&self.client.connection_kill);
        let mut first = [0u8; 256];
        let outcome = loop {
            tokio::select! {
                read = stream.read(&mut first) => break match read {
                    Ok(0) | Err(_) => None,
                    Ok(n) => Some(Bytes::copy_from_slice(&first[..n])),
                },
                spoke = any_server_speaks(&mut servers), if !servers.is_empty() => {
                    servers.swap_remove(spoke);
                }
                () = tokio::time::sleep_until(servers_deadline), if !servers.is_empty() => {
                    servers.clear();
                }
                () = tokio::time::sleep_until(client_deadline) => {
                    self.log_idle_close();
                    break None;
                }
                () = killed.killed() => break None,
            }
        };
        // Back in the pool either way: a session that ends reports their TLS events.
        if outcome.is_some() {
            tracing::debug!(%peer, servers = servers.len(), "parked connection resumed");
        }
        Box::pin(self.pool.unpark(servers)).await;
        outcome.map(|first| (stream, first))
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
            handshake_timeout: self.core.timeouts().client_idle,
            stall_timeout: self.core.timeouts().body_idle,
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
        let deadline = tokio::time::Instant::now() + self.core.timeouts().client_idle;
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
        let peer = self.client.peer_label();
        self.core.bus.log(
            LogLevel::Info,
            format!("{peer}: closed an idle client connection (no complete request head in time)"),
        );
    }

    /// TLS events that happened after the last flow (a refused client renegotiation
    /// that killed the connection, a KeyUpdate on an idle connection) have no flow to
    /// show them: they go to the event log instead.
    async fn report_unattached_tls_events(&self) {
        let peer = self.client.peer_label();
        let mut states = self.pool.tls_states().await;
        states.extend(self.client.tls.iter().cloned());
        for state in states {
            for (_, event) in state.take_events() {
                let level = match event.kind {
                    TlsEventKind::RenegotiationRefused { .. }
                    | TlsEventKind::Alert { fatal: true, .. } => LogLevel::Warn,
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
        let peer = self.client.peer_label();
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

    /// Stage 1 of every request: admission, then the dispatch by what it asks for.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<IncomingBody>,
    ) -> Result<ClientResponse, Infallible> {
        self.core.bus.wait_for_room().await;
        let started = Timestamp::now();
        if let Some(refusal) = self.admit(&request) {
            return Ok(self.refuse(&request, started, refusal));
        }
        if request.method() != Method::CONNECT {
            return Ok(crate::exchange::run(&self, request, started).await);
        }
        if let Some(protocol) = request.extensions().get::<h2::ext::Protocol>() {
            if protocol.as_str().eq_ignore_ascii_case("websocket") {
                return Ok(crate::websocket_h2::run(&self, request, started).await);
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
        Ok(crate::tunnel::handle_connect(&self.core, &self.client, request, started).await)
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
        let host = unbracket(&host);
        if self.core.is_own_listener(host, port) {
            return Some(loop_refusal(host, port));
        }
        self.core
            .config
            .protected
            .iter()
            .any(|protected| targets_self(*protected, host, port))
            .then(|| protected_refusal(host, port))
    }

    /// Answers a refused request, recording it as a flow with an error.
    fn refuse(
        &self,
        request: &Request<IncomingBody>,
        started: Timestamp,
        refusal: Refusal,
    ) -> ClientResponse {
        let recorder = self.begin_flow(
            request,
            named_target(self.tunnel.as_ref(), request),
            started,
        );
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
}

/// The index of the first parked server connection with something to read: its end,
/// an error, or bytes no idle HTTP/1.1 server may send. TLS records that carry no
/// data (a KeyUpdate, a session ticket) are handled inside the read and wake nothing.
fn any_server_speaks(
    servers: &mut [(UpstreamKey, ParkedServer)],
) -> impl std::future::Future<Output = usize> + '_ {
    std::future::poll_fn(move |cx| {
        for (index, (_, server)) in servers.iter_mut().enumerate() {
            let mut byte = [0u8; 1];
            let mut buf = tokio::io::ReadBuf::new(&mut byte);
            if std::pin::Pin::new(&mut server.stream)
                .poll_read(cx, &mut buf)
                .is_ready()
            {
                return std::task::Poll::Ready(index);
            }
        }
        std::task::Poll::Pending
    })
}
