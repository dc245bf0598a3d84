//! Dialling through the proxy of an `upstream:` mode: an HTTP(S) proxy's CONNECT
//! (hyper speaks it, so its answer is parsed as any HTTP response), or SOCKS5
//! (`tokio-socks`, with the host name sent as it is so the proxy resolves it, as
//! curl's `socks5h://` does). What comes back is a stream to the server that the rest
//! of the proxy uses as it would a direct TCP connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use periscope_tls::UpstreamTarget;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::core::ProxyCore;
use crate::error::UpstreamError;
use crate::mode::{UpstreamProxy, UpstreamScheme};
use crate::upstream::{UpstreamKey, ALPN_HTTP11};

/// Any stream to a server that is not a bare TCP socket.
pub trait ServerStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> ServerStream for S {}

/// A connection to a server: TCP, or a tunnel through an upstream proxy that could
/// not be unwrapped back to its socket (TLS to an HTTPS proxy).
pub enum ServerIo {
    Tcp(TcpStream),
    Tunnelled(Box<dyn ServerStream>),
}

impl ServerIo {
    /// The TCP socket under the connection, to watch for a server that speaks first.
    /// A tunnel inside TLS cannot be watched without reading from it, so a server
    /// that speaks first there is only found out when the client says nothing.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            ServerIo::Tcp(stream) => Some(stream),
            ServerIo::Tunnelled(_) => None,
        }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            ServerIo::Tunnelled(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            ServerIo::Tunnelled(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Tcp(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            ServerIo::Tunnelled(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerIo::Tcp(stream) => stream.is_write_vectored(),
            ServerIo::Tunnelled(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            ServerIo::Tunnelled(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            ServerIo::Tunnelled(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// How a connection through an HTTP proxy carries requests.
#[derive(Clone, Debug)]
pub struct ForwardingProxy {
    /// `Proxy-Authorization` for every request, from the proxy's credentials.
    pub authorization: Option<HeaderValue>,
}

/// `Basic` credentials for an HTTP proxy.
pub fn basic_authorization(proxy: &UpstreamProxy) -> Option<HeaderValue> {
    let (user, password) = proxy.credentials.as_ref()?;
    let token = BASE64.encode(format!("{user}:{password}"));
    HeaderValue::from_str(&format!("Basic {token}")).ok()
}

/// A stream to `key`'s server through `proxy`, on the TCP connection `socket` made to
/// the proxy. The caller bounds the time it takes.
pub async fn tunnel_through(
    core: &ProxyCore,
    proxy: &UpstreamProxy,
    socket: TcpStream,
    key: &UpstreamKey,
) -> Result<ServerIo, UpstreamError> {
    let failed = |reason: String| UpstreamError::UpstreamProxy {
        proxy: proxy.to_string(),
        target: key.label(),
        reason,
    };
    match proxy.scheme {
        UpstreamScheme::Socks5 => {
            let target = (key.host.as_str(), key.port);
            let connected = match &proxy.credentials {
                Some((user, password)) => {
                    tokio_socks::tcp::Socks5Stream::connect_with_password_and_socket(
                        socket, target, user, password,
                    )
                    .await
                }
                None => tokio_socks::tcp::Socks5Stream::connect_with_socket(socket, target).await,
            };
            let stream = connected.map_err(|error| failed(socks_failure(&error)))?;
            Ok(ServerIo::Tcp(stream.into_inner()))
        }
        UpstreamScheme::Http => {
            let upgraded = http_connect(proxy, socket, key).await.map_err(failed)?;
            // The socket itself when the proxy sent nothing past its answer, so the
            // tunnel can tell a server that speaks first.
            Ok(match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) if parts.read_buf.is_empty() => ServerIo::Tcp(parts.io.into_inner()),
                Ok(parts) => ServerIo::Tunnelled(Box::new(crate::io::Prefixed::new(
                    parts.read_buf,
                    parts.io.into_inner(),
                ))),
                Err(upgraded) => ServerIo::Tunnelled(Box::new(TokioIo::new(upgraded))),
            })
        }
        UpstreamScheme::Https => {
            let label = crate::upstream::UpstreamKey {
                tls: true,
                host: proxy.host.clone(),
                port: proxy.port,
            }
            .label();
            let tls = core
                .upstream_tls()
                .connect(
                    socket,
                    &UpstreamTarget {
                        server_name: &proxy.host,
                        send_sni: true,
                        alpn: &[ALPN_HTTP11],
                        post_quantum: true,
                        peer_label: &label,
                        timeouts: core.timeouts().tls,
                    },
                )
                .await?;
            let upgraded = http_connect(proxy, tls, key).await.map_err(failed)?;
            Ok(ServerIo::Tunnelled(Box::new(TokioIo::new(upgraded))))
        }
    }
}

/// CONNECT through an HTTP proxy on `io`; the tunnel comes back as hyper's upgraded
/// stream (with any bytes the proxy sent after its answer).
async fn http_connect<S>(
    proxy: &UpstreamProxy,
    io: S,
    key: &UpstreamKey,
) -> Result<hyper::upgrade::Upgraded, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("the HTTP handshake failed: {e}"))?;
    tokio::spawn(async move {
        // The connection task ends when the tunnel is handed over (or fails, which
        // the request below reports).
        let _ = connection.with_upgrades().await;
    });
    let authority = key.label();
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(authority.as_str())
        .header(http::header::HOST, authority.as_str());
    if let Some(authorization) = basic_authorization(proxy) {
        request = request.header(http::header::PROXY_AUTHORIZATION, authorization);
    }
    let request = request
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("cannot make a CONNECT request for {authority}: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| {
        format!(
            "no answer to CONNECT: {}",
            crate::error::describe_hyper_error(&e)
        )
    })?;
    let status = response.status();
    if !status.is_success() {
        let hint = if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            " (set the credentials with --upstream-auth USER:PASS or in the mode's URL)"
        } else {
            ""
        };
        return Err(format!("it answered CONNECT with {status}{hint}"));
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| format!("the CONNECT tunnel did not open: {e}"))?;
    Ok(upgraded)
}

/// tokio-socks' errors carry the SOCKS reply; the user wants its meaning.
fn socks_failure(error: &tokio_socks::Error) -> String {
    use tokio_socks::Error;
    match error {
        Error::PasswordAuthFailure(code) => {
            format!("it refused the credentials (RFC 1929 status {code})")
        }
        Error::NoAcceptableAuthMethods => {
            "it accepts none of the authentication methods offered (credentials needed?)".to_owned()
        }
        other => other.to_string(),
    }
}
