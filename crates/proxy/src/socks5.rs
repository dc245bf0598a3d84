//! The SOCKS5 listener's handshake (RFC 1928, with RFC 1929 credentials when
//! `--proxyauth` is set), spoken by `fast-socks5` step by step so that each wait has
//! Periscope's timeout and each refusal the right reply code. What follows a
//! successful CONNECT is the same as for an HTTP CONNECT: the tunnel sniffs TLS, HTTP
//! or anything else.

use std::net::SocketAddr;
use std::time::Duration;

use std::future::Future;

use fast_socks5::server::{states, PasswordAuthentication, Socks5ServerProtocol, SocksServerError};
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::UpstreamError;
use crate::guard::ProxyCredentials;

/// A client that finished the handshake up to its request: the target, and the
/// handshake waiting for Periscope's reply.
pub struct Socks5Request<T> {
    pub host: String,
    pub port: u16,
    reply: Socks5ServerProtocol<T, states::CommandRead>,
}

/// Why a SOCKS5 handshake ended without a request to serve. The client got the reply
/// the protocol has for it, or the connection closed where it has none.
#[derive(Debug, thiserror::Error)]
pub enum Socks5Refusal {
    #[error("no complete SOCKS5 handshake within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("invalid SOCKS5 handshake: {0}")]
    Protocol(#[from] SocksServerError),
    #[error("wrong SOCKS5 credentials for user {0:?}")]
    BadCredentials(String),
    #[error("SOCKS5 {0:?} is not supported (only CONNECT), answered \"command not supported\"")]
    Command(Socks5Command),
}

/// Reads the greeting, authenticates, and reads the request, each step within
/// `timeout`.
pub async fn accept<T>(
    io: T,
    credentials: Option<&ProxyCredentials>,
    timeout: Duration,
) -> Result<Socks5Request<T>, Socks5Refusal>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let authenticated = match credentials {
        None => within(timeout, Socks5ServerProtocol::accept_no_auth(io)).await??,
        Some(credentials) => {
            let negotiate =
                Socks5ServerProtocol::start(io).negotiate_auth(&[PasswordAuthentication]);
            let password = within(timeout, negotiate).await??;
            let (user, pass, received) =
                within(timeout, password.read_username_password()).await??;
            if !credentials.accepts_user_password(user.as_bytes(), pass.as_bytes()) {
                // RFC 1929: a failure status, then the connection closes.
                let _ = within(timeout, received.reject()).await;
                return Err(Socks5Refusal::BadCredentials(user));
            }
            Socks5ServerProtocol::finish_auth(within(timeout, received.accept()).await??)
        }
    };
    let (reply, command, target) = within(timeout, authenticated.read_command()).await??;
    if command != Socks5Command::TCPConnect {
        let _ = within(timeout, reply.reply_error(&ReplyError::CommandNotSupported)).await;
        return Err(Socks5Refusal::Command(command));
    }
    let (host, port) = match target {
        TargetAddr::Ip(address) => (address.ip().to_string(), address.port()),
        TargetAddr::Domain(name, port) => (name.to_ascii_lowercase(), port),
    };
    Ok(Socks5Request { host, port, reply })
}

/// One step of the handshake, which the client must finish within `timeout`.
async fn within<F: Future>(timeout: Duration, step: F) -> Result<F::Output, Socks5Refusal> {
    tokio::time::timeout(timeout, step)
        .await
        .map_err(|_| Socks5Refusal::Timeout(timeout))
}

impl<T: AsyncRead + AsyncWrite + Unpin> Socks5Request<T> {
    /// Tells the client its connection is open (`bound`: Periscope's end of it).
    pub async fn succeeded(self, bound: SocketAddr, timeout: Duration) -> Option<T> {
        tokio::time::timeout(timeout, self.reply.reply_success(bound))
            .await
            .ok()?
            .ok()
    }

    /// Tells the client why its connection was not opened.
    pub async fn failed(self, reply: ReplyError, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.reply.reply_error(&reply)).await;
    }
}

/// The SOCKS5 reply for a server that could not be reached.
pub fn reply_for(error: &UpstreamError) -> ReplyError {
    use std::io::ErrorKind;
    match error {
        UpstreamError::Resolve { .. } => ReplyError::HostUnreachable,
        UpstreamError::ConnectTimeout { .. } => ReplyError::TtlExpired,
        UpstreamError::Connect { source, .. } => match source.kind() {
            ErrorKind::ConnectionRefused => ReplyError::ConnectionRefused,
            ErrorKind::NetworkUnreachable => ReplyError::NetworkUnreachable,
            ErrorKind::HostUnreachable => ReplyError::HostUnreachable,
            _ => ReplyError::GeneralFailure,
        },
        _ => ReplyError::GeneralFailure,
    }
}

/// The handshake over an in-memory stream, for the fuzz target: whatever `input`
/// holds, it ends (with a request, a refusal, or a closed stream) and never panics.
pub async fn accept_bytes(input: &[u8], with_credentials: bool) -> Option<(String, u16)> {
    use tokio::io::AsyncWriteExt;
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    // More than the pipe holds would wait for a reader that only starts after.
    let _ = client.write_all(&input[..input.len().min(60 * 1024)]).await;
    let _ = client.shutdown().await;
    let credentials = ProxyCredentials::parse("user:pass");
    let credentials = credentials.as_ref().filter(|_| with_credentials);
    let accepted = accept(server, credentials, Duration::from_secs(1)).await;
    accepted.ok().map(|request| (request.host, request.port))
}
