//! Connections to servers: TCP with a deadline, TLS through OpenSSL, then an HTTP/1.1
//! or HTTP/2 client connection whose task owns the socket for its whole life.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::{Request, Response};
use hyper::client::conn::{http1, TrySendError};
use hyper_util::rt::TokioIo;
use periscope_flow::{ConnectionInfo, Milestone, Timestamp};
use periscope_tls::{TlsConnectionState, UpstreamTarget};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::body::IncomingBody;
pub use crate::body::RequestBody;
use crate::core::ProxyCore;
use crate::error::UpstreamError;
use crate::http2::H2Sender;
use crate::io::{FirstBytes, FirstBytesSeen, WriteDeadline};
use crate::mode::{UpstreamProxy, UpstreamScheme};
use crate::park::{BoxedStream, ParkableServer, ServerPark};
use crate::upstream_proxy::{basic_authorization, tunnel_through};
pub use crate::upstream_proxy::{ForwardingProxy, ServerIo};

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

pub fn next_connection_id() -> u64 {
    CONNECTION_IDS.fetch_add(1, Ordering::Relaxed)
}

/// Where requests go: the scheme decides TLS; `server_name` is what TLS verifies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamKey {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl UpstreamKey {
    pub fn label(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// TLS parameters for an upstream connection.
#[derive(Clone, Debug)]
pub struct TlsParameters {
    pub server_name: String,
    pub send_sni: bool,
    /// ALPN protocols to offer, in order (the client's own list, for a tunnel).
    pub alpn: Vec<Vec<u8>>,
    /// Offer post-quantum key exchange (unless the client's own ClientHello did not).
    pub post_quantum: bool,
}

pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A TCP connection to a server (perhaps through an upstream proxy), not yet
/// speaking anything.
pub struct ConnectedSocket {
    pub key: UpstreamKey,
    pub stream: ServerIo,
    pub info: ConnectionInfo,
    pub milestones: Vec<(Milestone, Timestamp)>,
    /// The connection goes to an HTTP proxy that takes absolute-form requests.
    pub forwarding: Option<ForwardingProxy>,
}

/// The HTTP side of a server connection.
pub enum HttpSender {
    Http1(http1::SendRequest<RequestBody>),
    /// Multiplexed: clones share the connection.
    Http2(H2Sender),
}

/// A request that failed, with the request back when it never left: it can then go
/// on another connection whatever its method.
pub struct SendFailure {
    error: Box<dyn std::error::Error + Send + Sync>,
    unsent: Option<Request<RequestBody>>,
}

impl SendFailure {
    pub fn take_message(&mut self) -> Option<Request<RequestBody>> {
        self.unsent.take()
    }

    pub fn error(&self) -> &(dyn std::error::Error + 'static) {
        self.error.as_ref()
    }
}

impl From<TrySendError<Request<RequestBody>>> for SendFailure {
    fn from(mut failure: TrySendError<Request<RequestBody>>) -> Self {
        let unsent = failure.take_message();
        SendFailure {
            error: Box::new(failure.into_error()),
            unsent,
        }
    }
}

impl HttpSender {
    pub fn is_closed(&self) -> bool {
        match self {
            HttpSender::Http1(sender) => sender.is_closed(),
            HttpSender::Http2(sender) => sender.is_closed(),
        }
    }

    pub async fn ready(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match self {
            HttpSender::Http1(sender) => Ok(sender.ready().await?),
            HttpSender::Http2(sender) => Ok(sender.ready().await?),
        }
    }

    /// Opens an extended CONNECT stream (RFC 8441) once the server takes another
    /// stream; only an HTTP/2 connection can.
    pub async fn extended_connect(
        &mut self,
        head: Request<()>,
    ) -> Result<crate::http2::ConnectAnswer, Box<dyn std::error::Error + Send + Sync>> {
        match self {
            HttpSender::Http2(sender) => {
                sender.ready().await?;
                Ok(sender.connect(head).await?)
            }
            HttpSender::Http1(_) => Err("the connection is not HTTP/2".into()),
        }
    }

    pub async fn try_send(
        &mut self,
        request: Request<RequestBody>,
    ) -> Result<Response<IncomingBody>, SendFailure> {
        match self {
            HttpSender::Http1(sender) => sender
                .try_send_request(request)
                .await
                .map(|response| response.map(IncomingBody::Http1))
                .map_err(SendFailure::from),
            HttpSender::Http2(sender) => sender
                .send(request)
                .await
                .map(|response| response.map(IncomingBody::Http2))
                .map_err(|failure| SendFailure {
                    error: Box::new(failure.error),
                    unsent: failure.unsent,
                }),
        }
    }
}

/// A ready HTTP connection to a server.
pub struct UpstreamConnection {
    pub sender: HttpSender,
    pub info: ConnectionInfo,
    pub milestones: Vec<(Milestone, Timestamp)>,
    pub tls: Option<Arc<TlsConnectionState>>,
    /// HTTP/1.1 over TLS whose server selected no protocol by ALPN.
    pub unnegotiated: Option<Unnegotiated>,
    /// Requests go to an HTTP proxy, in absolute-form (an `upstream:` mode's plain
    /// HTTP).
    pub forwarding: Option<ForwardingProxy>,
    /// The [`UpstreamTls::id`](periscope_tls::UpstreamTls::id) of the settings a TLS
    /// connection was made with (`None`: no TLS).
    pub tls_settings: Option<u64>,
    /// How an idle HTTP/1.1 connection's stream is taken back from hyper.
    pub park: Option<Arc<ServerPark>>,
}

/// An idle HTTP/1.1 server connection taken out of hyper: its stream and what is
/// known of it, to be served by a new hyper connection ([`ParkedServer::resume`]).
pub struct ParkedServer {
    pub stream: BoxedStream,
    info: ConnectionInfo,
    milestones: Vec<(Milestone, Timestamp)>,
    tls: Option<Arc<TlsConnectionState>>,
    unnegotiated: Option<Unnegotiated>,
    forwarding: Option<ForwardingProxy>,
    tls_settings: Option<u64>,
}

impl ParkedServer {
    /// The connection again, under a new hyper client connection.
    pub async fn resume(self) -> Result<UpstreamConnection, UpstreamError> {
        let target = self.info.target.clone().unwrap_or_default();
        let (sender, park) = http1_handshake(self.stream, &target).await?;
        Ok(UpstreamConnection {
            sender,
            info: self.info,
            milestones: self.milestones,
            tls: self.tls,
            unnegotiated: self.unnegotiated,
            forwarding: self.forwarding,
            tls_settings: self.tls_settings,
            park,
        })
    }
}

/// What is needed to recognise an HTTP/2-only server behind a connection whose
/// server selected no ALPN protocol: what it sent first, and what was offered.
pub struct Unnegotiated {
    pub first_bytes: Arc<FirstBytesSeen>,
    pub http2_offered: bool,
}

impl UpstreamConnection {
    /// Open, and not made with TLS settings the user has replaced since.
    pub fn reusable(&self, core: &ProxyCore) -> bool {
        !self.sender.is_closed()
            && self
                .tls_settings
                .is_none_or(|id| id == core.upstream_tls_id())
    }

    pub fn is_http2(&self) -> bool {
        matches!(self.sender, HttpSender::Http2(_))
    }

    /// Another handle on an HTTP/2 connection (HTTP/1.1 connections are not shared).
    pub fn share(&self) -> Option<UpstreamConnection> {
        match &self.sender {
            HttpSender::Http2(sender) => Some(UpstreamConnection {
                sender: HttpSender::Http2(sender.clone()),
                info: self.info.clone(),
                milestones: self.milestones.clone(),
                tls: self.tls.clone(),
                unnegotiated: None,
                forwarding: None,
                tls_settings: self.tls_settings,
                park: None,
            }),
            HttpSender::Http1(_) => None,
        }
    }

    /// The protocol the server chose by ALPN, if any.
    pub fn alpn(&self) -> Option<&str> {
        self.info.tls.as_ref().and_then(|tls| tls.alpn.as_deref())
    }

    /// Takes an idle HTTP/1.1 connection out of hyper; `Err` gives back a connection
    /// that cannot be (HTTP/2, or a request in flight), `Ok(None)` means it closed.
    pub async fn park(self) -> Result<Option<ParkedServer>, UpstreamConnection> {
        let Some(park) = self.park.clone() else {
            return Err(self);
        };
        if !self.is_ready() {
            return Err(self);
        }
        let UpstreamConnection {
            sender,
            info,
            milestones,
            tls,
            unnegotiated,
            forwarding,
            tls_settings,
            park: _,
        } = self;
        park.request();
        // Without its sender, an idle hyper connection ends, and its stream comes back
        // instead of being shut down.
        drop(sender);
        Ok(park.handed_back().await.map(|stream| ParkedServer {
            stream,
            info,
            milestones,
            tls,
            unnegotiated,
            forwarding,
            tls_settings,
        }))
    }

    /// Whether a request can be sent now without waiting for one in flight.
    pub fn is_ready(&self) -> bool {
        match &self.sender {
            HttpSender::Http1(sender) => sender.is_ready(),
            HttpSender::Http2(sender) => !sender.is_closed(),
        }
    }
}

/// A connection to `key`'s server: directly, or through the proxy of an `upstream:`
/// mode (`via`) — a tunnel for TLS, and for plain HTTP a connection to an HTTP proxy
/// that takes absolute-form requests. The connect timeout covers the proxy's
/// handshake too.
pub async fn connect_tcp(
    core: &ProxyCore,
    via: Option<&UpstreamProxy>,
    key: &UpstreamKey,
) -> Result<ConnectedSocket, UpstreamError> {
    let target = key.label();
    let timeout = core.timeouts().connect;
    let initiated = Timestamp::now();
    let attempt = async {
        let Some(proxy) = via else {
            let tcp = tcp_to(&key.host, key.port, &target).await?;
            return Ok((ServerIo::Tcp(tcp), None, None));
        };
        let proxy_label = proxy.to_string();
        let tcp = tcp_to(&proxy.host, proxy.port, &proxy_label).await?;
        crate::io::configure_socket(&tcp);
        let addresses = (tcp.peer_addr().ok(), tcp.local_addr().ok());
        let forwards = !key.tls && proxy.scheme != UpstreamScheme::Socks5;
        if !forwards {
            let io = tunnel_through(core, proxy, tcp, key).await?;
            return Ok((io, Some(addresses), None));
        }
        let forwarding = Some(ForwardingProxy {
            authorization: basic_authorization(proxy),
        });
        if proxy.scheme == UpstreamScheme::Http {
            return Ok((ServerIo::Tcp(tcp), Some(addresses), forwarding));
        }
        let tls = core
            .upstream_tls()
            .connect(
                tcp,
                &UpstreamTarget {
                    server_name: &proxy.host,
                    send_sni: true,
                    alpn: &[ALPN_HTTP11],
                    post_quantum: true,
                    peer_label: &proxy_label,
                    timeouts: core.timeouts().tls,
                },
            )
            .await?;
        Ok::<_, UpstreamError>((
            ServerIo::Tunnelled(Box::new(tls)),
            Some(addresses),
            forwarding,
        ))
    };
    let (stream, proxied, forwarding) = match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result?,
        Err(_) => return Err(UpstreamError::ConnectTimeout { target, timeout }),
    };
    let (peer, local) = match (&stream, proxied) {
        (_, Some(addresses)) => addresses,
        (ServerIo::Tcp(tcp), None) => {
            crate::io::configure_socket(tcp);
            (tcp.peer_addr().ok(), tcp.local_addr().ok())
        }
        (ServerIo::Tunnelled(_), None) => (None, None),
    };
    let info = ConnectionInfo {
        id: next_connection_id(),
        peer,
        local,
        target: Some(target),
        tls: None,
    };
    Ok(ConnectedSocket {
        key: key.clone(),
        stream,
        info,
        milestones: vec![
            (Milestone::ServerConnectInitiated, initiated),
            (Milestone::ServerTcpConnected, Timestamp::now()),
        ],
        forwarding,
    })
}

/// TCP to the first of `host`'s addresses that answers.
async fn tcp_to(host: &str, port: u16, label: &str) -> Result<TcpStream, UpstreamError> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| UpstreamError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    let mut last_error = None;
    for address in &addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(UpstreamError::Connect {
        target: label.to_owned(),
        source: last_error.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses found")
        }),
    })
}

/// Turns a connected socket into an HTTP connection, with TLS when `tls` is given.
/// The protocol is the one the server chose by ALPN; a server that chose none speaks
/// HTTP/1.1, unless it is known to speak HTTP/2 regardless.
pub async fn establish(
    core: &ProxyCore,
    socket: ConnectedSocket,
    tls: Option<&TlsParameters>,
) -> Result<UpstreamConnection, UpstreamError> {
    let ConnectedSocket {
        key,
        stream,
        mut info,
        mut milestones,
        forwarding,
    } = socket;
    let target = info.target.clone().unwrap_or_default();
    let stream = WriteDeadline::new(stream, core.timeouts().body_idle, "the server", None);
    let Some(parameters) = tls else {
        let (sender, park) = http1_handshake(Box::new(stream), &target).await?;
        return Ok(UpstreamConnection {
            sender,
            info,
            milestones,
            tls: None,
            unnegotiated: None,
            forwarding,
            tls_settings: None,
            park,
        });
    };
    let alpn: Vec<&[u8]> = parameters.alpn.iter().map(Vec::as_slice).collect();
    let upstream_tls = core.upstream_tls();
    let tls_stream = upstream_tls
        .connect(
            stream,
            &UpstreamTarget {
                server_name: &parameters.server_name,
                send_sni: parameters.send_sni,
                alpn: &alpn,
                post_quantum: parameters.post_quantum,
                peer_label: &target,
                timeouts: core.timeouts().tls,
            },
        )
        .await?;
    milestones.push((Milestone::ServerTlsEstablished, Timestamp::now()));
    info.tls = Some(tls_stream.info());
    let state = Arc::clone(tls_stream.state());
    let mut unnegotiated = None;
    let (sender, park) = match tls_stream.ssl().selected_alpn_protocol() {
        Some(ALPN_H2) => (http2_handshake(core, tls_stream, &target).await?, None),
        None if core.sent_http2_preface(&key.host) => {
            (http2_handshake(core, tls_stream, &target).await?, None)
        }
        Some(_) => http1_handshake(Box::new(tls_stream), &target).await?,
        None => {
            let (sniffed, first_bytes) = FirstBytes::new(tls_stream);
            unnegotiated = Some(Unnegotiated {
                first_bytes,
                http2_offered: parameters.alpn.iter().any(|p| p == ALPN_H2),
            });
            http1_handshake(Box::new(sniffed), &target).await?
        }
    };
    Ok(UpstreamConnection {
        sender,
        info,
        milestones,
        tls: Some(state),
        unnegotiated,
        forwarding: None,
        tls_settings: Some(upstream_tls.id()),
        park,
    })
}

/// Like [`establish`]; a server that refuses every protocol offered (alert
/// no_application_protocol) is asked again, on a new connection, with everything
/// Periscope can translate to; and a handshake that failed while the server was
/// offered classic key-exchange groups only because it chose one before is tried
/// again, on a new connection, with the client's groups.
pub async fn establish_with_fallback(
    core: &ProxyCore,
    via: Option<&UpstreamProxy>,
    socket: ConnectedSocket,
    key: &UpstreamKey,
    tls: Option<&TlsParameters>,
) -> Result<UpstreamConnection, UpstreamError> {
    let target = socket.info.target.clone().unwrap_or_default();
    let classic_from_memory = tls.is_some_and(|tls| {
        tls.post_quantum
            && core
                .upstream_tls()
                .offers_classic_groups_only(&target, &tls.server_name)
    });
    match establish(core, socket, tls).await {
        Err(UpstreamError::Tls(error)) if error.is_no_application_protocol() => {
            let wider = tls.map(|tls| TlsParameters {
                alpn: vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
                ..tls.clone()
            });
            let socket = connect_tcp(core, via, key).await?;
            establish(core, socket, wider.as_ref()).await
        }
        // Offered classic groups only because of what the server chose before; the
        // failure made Periscope forget it, so once more with the client's groups (a
        // server that now takes post-quantum groups only).
        Err(UpstreamError::Tls(_)) if classic_from_memory => {
            let socket = connect_tcp(core, via, key).await?;
            establish(core, socket, tls).await
        }
        other => other,
    }
}

/// An HTTP/1.1 client connection on `stream`, whose stream can be taken back while
/// idle (its [`ServerPark`]).
async fn http1_handshake(
    stream: BoxedStream,
    target: &str,
) -> Result<(HttpSender, Option<Arc<ServerPark>>), UpstreamError> {
    let park = Arc::new(ServerPark::default());
    let stream = ParkableServer::new(stream, Arc::clone(&park));
    let (sender, connection) = http1::Builder::new()
        .preserve_header_case(true)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| UpstreamError::Handshake {
            target: target.to_owned(),
            source,
        })?;
    let target = target.to_owned();
    tokio::spawn(async move {
        // Errors surface through the request that was in flight; this is the record
        // of connections that failed while idle.
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%target, error = %crate::error::describe_hyper_error(&error), "upstream connection ended");
        }
    });
    Ok((HttpSender::Http1(sender), Some(park)))
}

async fn http2_handshake<S>(
    core: &ProxyCore,
    stream: S,
    target: &str,
) -> Result<HttpSender, UpstreamError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stall = core.timeouts().body_idle;
    let sender = H2Sender::handshake(stream, target, stall)
        .await
        .map_err(|error| {
            UpstreamError::exchange(format!(
                "the HTTP/2 handshake with {target} failed: {}",
                crate::error::describe_hyper_error(&error)
            ))
        })?;
    Ok(HttpSender::Http2(sender))
}
