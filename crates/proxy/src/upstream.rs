//! Connections to servers: TCP with a deadline, TLS through OpenSSL, then an HTTP/1.1
//! client connection whose task owns the socket for its whole life.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use periscope_flow::{ConnectionInfo, Milestone, Timestamp};
use periscope_tls::{TlsConnectionState, UpstreamTarget};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::body::RecordingBody;
use crate::core::ProxyCore;
use crate::error::UpstreamError;

pub type RequestBody = RecordingBody<Incoming>;

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

/// TLS parameters for an upstream connection made on behalf of a tunnel.
#[derive(Clone, Debug)]
pub struct TlsParameters {
    pub server_name: String,
    pub send_sni: bool,
    pub alpn: Vec<Vec<u8>>,
}

/// A TCP connection to a server, not yet speaking anything.
pub struct ConnectedSocket {
    pub stream: TcpStream,
    pub info: ConnectionInfo,
    pub milestones: Vec<(Milestone, Timestamp)>,
}

/// A ready HTTP/1.1 connection to a server.
pub struct UpstreamConnection {
    pub sender: SendRequest<RequestBody>,
    pub info: ConnectionInfo,
    pub milestones: Vec<(Milestone, Timestamp)>,
    pub tls: Option<Arc<TlsConnectionState>>,
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
    let _ = stream.set_nodelay(true);
    let info = ConnectionInfo {
        id: next_connection_id(),
        peer: stream.peer_addr().ok(),
        local: stream.local_addr().ok(),
        target: Some(target),
        tls: None,
    };
    Ok(ConnectedSocket {
        stream,
        info,
        milestones: vec![
            (Milestone::ServerConnectInitiated, initiated),
            (Milestone::ServerTcpConnected, Timestamp::now()),
        ],
    })
}

/// Turns a connected socket into an HTTP connection, with TLS when `tls` is given.
pub async fn establish(
    core: &ProxyCore,
    socket: ConnectedSocket,
    tls: Option<&TlsParameters>,
) -> Result<UpstreamConnection, UpstreamError> {
    let ConnectedSocket {
        stream,
        mut info,
        mut milestones,
    } = socket;
    let target = info.target.clone().unwrap_or_default();
    match tls {
        None => {
            let sender = http_handshake(stream, &target).await?;
            Ok(UpstreamConnection {
                sender,
                info,
                milestones,
                tls: None,
            })
        }
        Some(parameters) => {
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
            let sender = http_handshake(tls_stream, &target).await?;
            Ok(UpstreamConnection {
                sender,
                info,
                milestones,
                tls: Some(state),
            })
        }
    }
}

async fn http_handshake<S>(
    stream: S,
    target: &str,
) -> Result<SendRequest<RequestBody>, UpstreamError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
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
    Ok(sender)
}
