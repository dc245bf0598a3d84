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
}

pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A TCP connection to a server, not yet speaking anything.
pub struct ConnectedSocket {
    pub key: UpstreamKey,
    pub stream: TcpStream,
    pub info: ConnectionInfo,
    pub milestones: Vec<(Milestone, Timestamp)>,
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
}

/// What is needed to recognise an HTTP/2-only server behind a connection whose
/// server selected no ALPN protocol: what it sent first, and what was offered.
pub struct Unnegotiated {
    pub first_bytes: Arc<FirstBytesSeen>,
    pub http2_offered: bool,
}

impl UpstreamConnection {
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
            }),
            HttpSender::Http1(_) => None,
        }
    }

    /// The protocol the server chose by ALPN, if any.
    pub fn alpn(&self) -> Option<&str> {
        self.info.tls.as_ref().and_then(|tls| tls.alpn.as_deref())
    }

    /// Whether a request can be sent now without waiting for one in flight.
    pub fn is_ready(&self) -> bool {
        match &self.sender {
            HttpSender::Http1(sender) => sender.is_ready(),
            HttpSender::Http2(sender) => !sender.is_closed(),
        }
    }
}

pub async fn connect_tcp(
    core: &ProxyCore,
    key: &UpstreamKey,
) -> Result<ConnectedSocket, UpstreamError> {
    let target = key.label();
    let timeout = core.config.timeouts.connect;
    let initiated = Timestamp::now();
    let attempt = async {
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((key.host.as_str(), key.port))
            .await
            .map_err(|source| UpstreamError::Resolve {
                host: key.host.clone(),
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
            target: target.clone(),
            source: last_error.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses found")
            }),
        })
    };
    let stream = match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result?,
        Err(_) => return Err(UpstreamError::ConnectTimeout { target, timeout }),
    };
    crate::io::configure_socket(&stream);
    let info = ConnectionInfo {
        id: next_connection_id(),
        peer: stream.peer_addr().ok(),
        local: stream.local_addr().ok(),
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
    } = socket;
    let target = info.target.clone().unwrap_or_default();
    let stream = WriteDeadline::new(stream, core.config.timeouts.body_idle, "the server", None);
    let Some(parameters) = tls else {
        let sender = http1_handshake(stream, &target).await?;
        return Ok(UpstreamConnection {
            sender,
            info,
            milestones,
            tls: None,
            unnegotiated: None,
        });
    };
    let alpn: Vec<&[u8]> = parameters.alpn.iter().map(Vec::as_slice).collect();
    let tls_stream = core
        .upstream_tls
        .connect(
            stream,
            &UpstreamTarget {
                server_name: &parameters.server_name,
                send_sni: parameters.send_sni,
                alpn: &alpn,
                peer_label: &target,
            },
        )
        .await?;
    milestones.push((Milestone::ServerTlsEstablished, Timestamp::now()));
    info.tls = Some(tls_stream.info());
    let state = Arc::clone(tls_stream.state());
    let mut unnegotiated = None;
    let sender = match tls_stream.ssl().selected_alpn_protocol() {
        Some(ALPN_H2) => http2_handshake(core, tls_stream, &target).await?,
        None if core.sent_http2_preface(&key.host) => {
            http2_handshake(core, tls_stream, &target).await?
        }
        Some(_) => http1_handshake(tls_stream, &target).await?,
        None => {
            let (sniffed, first_bytes) = FirstBytes::new(tls_stream);
            unnegotiated = Some(Unnegotiated {
                first_bytes,
                http2_offered: parameters.alpn.iter().any(|p| p == ALPN_H2),
            });
            http1_handshake(sniffed, &target).await?
        }
    };
    Ok(UpstreamConnection {
        sender,
        info,
        milestones,
        tls: Some(state),
        unnegotiated,
    })
}

/// Like [`establish`]; a server that refuses every protocol offered (alert
/// no_application_protocol) is asked again, on a new connection, with everything
/// Periscope can translate to.
pub async fn establish_with_fallback(
    core: &ProxyCore,
    socket: ConnectedSocket,
    key: &UpstreamKey,
    tls: Option<&TlsParameters>,
) -> Result<UpstreamConnection, UpstreamError> {
    match establish(core, socket, tls).await {
        Err(UpstreamError::Tls(error)) if error.is_no_application_protocol() => {
            let wider = tls.map(|tls| TlsParameters {
                alpn: vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
                ..tls.clone()
            });
            let socket = connect_tcp(core, key).await?;
            establish(core, socket, wider.as_ref()).await
        }
        other => other,
    }
}

async fn http1_handshake<S>(stream: S, target: &str) -> Result<HttpSender, UpstreamError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
    Ok(HttpSender::Http1(sender))
}

async fn http2_handshake<S>(
    core: &ProxyCore,
    stream: S,
    target: &str,
) -> Result<HttpSender, UpstreamError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stall = core.config.timeouts.body_idle;
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
