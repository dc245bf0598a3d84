//! CONNECT: connect to the server first (so a dead server is a fast 502 for the
//! CONNECT itself), then look at the client's first bytes. A ClientHello is
//! intercepted — its SNI and ALPN go upstream, our leaf certificate goes back — and
//! anything else is relayed untouched.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use http::{Request, Response, StatusCode};
use periscope_flow::{LogLevel, Milestone, TcpReason, Timestamp, TlsInfo};
use periscope_tls::UpstreamTarget;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::body::{IncomingBody, ProxyBody};
use crate::client_hello::{looks_like_tls, read_client_hello, ClientHello};
use crate::core::ProxyCore;
use crate::destination::Tunnel;
use crate::error::UpstreamError;
use crate::hooks::{ClientHelloInfo, HelloVerdict};
use crate::hosts::HostTreatment;
use crate::io::{Prefixed, WriteDeadline};
use crate::pages::{error_response, error_text, recorded_response};
use crate::recorder::{ClientContext, FlowRecorder};
use crate::session::{ClientProtocol, ClientResponse, ClientSession};
use crate::tcp_relay::TcpFlowStart;
use crate::upgrade::PendingUpgrade;
use crate::upstream::{
    connect_tcp, establish, establish_with_fallback, ConnectedSocket, TlsParameters, UpstreamKey,
    ALPN_H2, ALPN_HTTP11,
};
use crate::upstream_proxy::ServerStream;

pub async fn handle_connect(
    core: &Arc<ProxyCore>,
    client: &ClientContext,
    request: Request<IncomingBody>,
    started: Timestamp,
) -> ClientResponse {
    let Some((host, port)) = connect_target(request.uri()) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "Invalid CONNECT target.",
            &format!("CONNECT needs host:port, got \"{}\".", request.uri()),
        );
    };
    let key = UpstreamKey {
        tls: true,
        host,
        port,
    };
    let via = client.listener.as_ref().and_then(|l| l.via());
    let socket = match connect_tcp(core, via, &key).await {
        Ok(socket) => Ok(socket),
        // A hook may answer what comes through the tunnel (server replay with the
        // servers gone): the requests inside say why the server failed, unless
        // answered.
        Err(error) if core.hooks.may_answer_without_server() => Err(error),
        Err(error) => return connect_failed(core, client, &request, &key, started, error),
    };
    tokio::spawn(tunnel_task(
        Arc::clone(core),
        request,
        socket,
        key,
        client.clone(),
    ));
    Response::new(ProxyBody::generated(""))
}

/// The tunnel's task, boxed: a tunnel serves requests that may CONNECT again, and the
/// explicit type breaks that cycle for the compiler.
fn tunnel_task(
    core: Arc<ProxyCore>,
    mut request: Request<IncomingBody>,
    socket: Result<ConnectedSocket, UpstreamError>,
    key: UpstreamKey,
    client: ClientContext,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        // The request is let go before the tunnel's long life: it would hold its
        // headers and hyper's state for the CONNECT for as long as the tunnel lasts.
        let upgrade = PendingUpgrade::of_request(&mut request);
        drop(request);
        match upgrade.await {
            Ok(upgraded) => run(core, upgraded, socket, key, client, ServerLeg::LikeClient).await,
            Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
        }
    })
}

/// `host:port` from a CONNECT request target, which must be authority-form and
/// nothing more (RFC 9112 §3.2.3): no scheme, path or userinfo, a port other than 0,
/// brackets only around an IPv6 address (an RFC 6874 zone id is tolerated), and a
/// host name of letters, digits, `-`, `.` and `_` otherwise. The
/// host comes back lower-case and without brackets. Anything else is `None`: the
/// client gets a 400 rather than a tunnel to a target it did not quite name.
pub fn connect_target(uri: &http::Uri) -> Option<(String, u16)> {
    if uri.scheme().is_some() || uri.path_and_query().is_some() {
        return None;
    }
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let port = authority.port_u16().filter(|&port| port != 0)?;
    let host = authority.host();
    let host = match host.strip_prefix('[') {
        Some(literal) => {
            let literal = literal.strip_suffix(']')?;
            let address = literal.split("%25").next().unwrap_or_default();
            address.parse::<std::net::Ipv6Addr>().ok()?;
            literal
        }
        // A DNS name or an IPv4 address: RFC 3986 allows more in a reg-name, but no
        // server can be reached under it.
        None if host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) =>
        {
            host
        }
        None => return None,
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// The CONNECT itself failed: the client gets the reason and a flow records it.
fn connect_failed(
    core: &ProxyCore,
    client: &ClientContext,
    request: &Request<IncomingBody>,
    key: &UpstreamKey,
    started: Timestamp,
    error: UpstreamError,
) -> ClientResponse {
    let status = error.status();
    let summary = format!("Periscope could not connect to {}.", key.label());
    let detail = error.to_string();
    let response = error_response(status, &summary, &detail);
    let recorder = FlowRecorder::begin(
        core.bus.clone(),
        client,
        request,
        ("https", key.host.clone(), key.port),
        started,
    );
    recorder.set_response(recorded_response(
        &response,
        error_text(status, &summary, &detail).as_bytes(),
    ));
    recorder.finish_with_error(error.kind(), detail);
    response
}

/// How the server leg's TLS is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerLeg {
    /// TLS when the client speaks TLS (CONNECT, SOCKS5, transparent).
    LikeClient,
    /// As the reverse target says, whatever the client speaks; `rewrite_host` gives
    /// the server its own name in the Host header.
    Reverse { tls: bool, rewrite_host: bool },
}

/// Serves a client connection whose server is known (a CONNECT tunnel, a SOCKS5
/// connection, a transparently redirected one, a reverse proxy's): `socket` was
/// connected first (or failed, which the first request reports). Whoever speaks
/// first decides: a ClientHello is intercepted, HTTP is served, anything else — and
/// any host the user left alone — is relayed as bytes and recorded as a TCP flow.
pub async fn run<C>(
    core: Arc<ProxyCore>,
    mut client_io: C,
    socket: Result<ConnectedSocket, UpstreamError>,
    key: UpstreamKey,
    mut client: ClientContext,
    leg: ServerLeg,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = client.peer_label();
    let timeouts = core.timeouts();
    let mut buffer = BytesMut::with_capacity(4096);
    let server_tcp = socket.as_ref().ok().and_then(|s| s.stream.tcp());
    let server_spoke = async {
        // A peek, not `readable()`: a SOCKS handshake on the socket may have left it
        // marked readable with nothing to read.
        let mut probe = [0u8; 1];
        match server_tcp {
            Some(tcp) => tcp.peek(&mut probe).await.map(drop),
            // Nothing to hear from: the client's first bytes decide alone.
            None => std::future::pending().await,
        }
    };
    // Some protocols start with the server talking (SMTP, SSH): whoever speaks first
    // decides.
    let client_spoke_first = tokio::select! {
        read = client_io.read_buf(&mut buffer) => match read {
            Ok(0) | Err(_) => return,
            Ok(_) => true,
        },
        _ = server_spoke => false,
        _ = tokio::time::sleep(timeouts.client_idle) => {
            tracing::debug!(%peer, "tunnel closed: the client sent nothing");
            return;
        }
    };
    let mut names = connection_names(&key, socket.as_ref().ok());
    let rewrite_host = matches!(
        leg,
        ServerLeg::Reverse {
            rewrite_host: true,
            ..
        }
    );
    if client_spoke_first && looks_like_http(&buffer) {
        let reason = match core.hosts.treatment(&names) {
            HostTreatment::Intercept => None,
            HostTreatment::PassThrough => Some(TcpReason::IgnoredHost),
            HostTreatment::RelayTcp => Some(TcpReason::TcpHost),
        };
        if let Some(reason) = reason {
            let client_io = Prefixed::new(buffer.freeze(), client_io);
            Box::pin(relay_bytes(
                &core, &client, client_io, socket, &key, reason, None,
            ))
            .await;
            return;
        }
        // Plain HTTP: inside a tunnel (a ws:// or http:// URL through a proxy that
        // clients reach with CONNECT), or from a client of a reverse proxy or a
        // redirected one. Intercepted like any other HTTP.
        let server_tls = match leg {
            ServerLeg::Reverse { tls: true, .. } => Some(TlsParameters {
                server_name: key.host.clone(),
                send_sni: true,
                alpn: vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
                post_quantum: true,
            }),
            _ => None,
        };
        let key = UpstreamKey {
            tls: server_tls.is_some(),
            ..key
        };
        let via = client.listener.as_ref().and_then(|l| l.via().cloned());
        let upstream = match socket {
            Ok(socket) if server_tls.is_some() => {
                Box::pin(establish_with_fallback(
                    &core,
                    via.as_ref(),
                    socket,
                    &key,
                    server_tls.as_ref(),
                ))
                .await
            }
            Ok(socket) => Box::pin(establish(&core, socket, None)).await,
            Err(error) => Err(error),
        };
        client.intercepted_tls = leg == ServerLeg::LikeClient;
        let session = Arc::new(ClientSession::new(
            Arc::clone(&core),
            client,
            Some(Tunnel {
                key: key.clone(),
                tls: server_tls,
                rewrite_host,
            }),
        ));
        session.seed(key, upstream);
        Box::pin(session.serve(
            Prefixed::new(buffer.freeze(), client_io),
            ClientProtocol::Detect,
        ))
        .await;
        return;
    }
    if !client_spoke_first || !looks_like_tls(&buffer) {
        let reason = match core.hosts.treatment(&names) {
            HostTreatment::PassThrough => TcpReason::IgnoredHost,
            _ => TcpReason::NotHttp,
        };
        let client_io = Prefixed::new(buffer.freeze(), client_io);
        Box::pin(relay_bytes(
            &core, &client, client_io, socket, &key, reason, None,
        ))
        .await;
        return;
    }
    let hello = match Box::pin(tokio::time::timeout(
        timeouts.tls.handshake,
        read_client_hello(&mut client_io, &mut buffer),
    ))
    .await
    {
        Ok(Ok(hello)) => hello,
        Ok(Err(error)) => {
            core.bus.log(
                LogLevel::Warn,
                format!("{peer}: tunnel to {}: {error}", key.label()),
            );
            return;
        }
        Err(_) => {
            core.bus.log(
                LogLevel::Warn,
                format!(
                    "{peer}: tunnel to {}: no complete ClientHello within {} s",
                    key.label(),
                    timeouts.tls.handshake.as_secs()
                ),
            );
            return;
        }
    };
    if let Some(sni) = &hello.sni {
        names.push(format!("{}:{}", sni.to_ascii_lowercase(), key.port));
    }
    let mut treatment = core.hosts.treatment(&names);
    let mut reason = TcpReason::IgnoredHost;
    // `--tcp-hosts` connections are intercepted at TLS too: the hooks are asked.
    if treatment != HostTreatment::PassThrough && !core.hooks.is_empty() {
        let info = ClientHelloInfo {
            client: client.info.peer,
            server_host: key.host.clone(),
            server_port: key.port,
            sni: hello.sni.clone(),
            // One char per byte (Latin-1): any protocol name survives the trip as it
            // was sent, UTF-8 or not.
            alpn: hello
                .alpn
                .iter()
                .map(|p| p.iter().map(|&b| char::from(b)).collect())
                .collect(),
        };
        if Box::pin(core.hooks.client_hello(&info)).await == HelloVerdict::PassThrough {
            treatment = HostTreatment::PassThrough;
            reason = TcpReason::IgnoredByScript;
        }
    }
    if treatment == HostTreatment::PassThrough {
        let client_io = Prefixed::new(buffer.freeze(), client_io);
        Box::pin(relay_bytes(
            &core, &client, client_io, socket, &key, reason, hello.sni,
        ))
        .await;
        return;
    }
    // The leaf names what the client asked for; the server is asked for the name the
    // client sent (a reverse proxy's server, for its own name).
    let leaf_name = hello.sni.clone().unwrap_or_else(|| key.host.clone());
    let (server_name, server_tls) = match leg {
        ServerLeg::LikeClient => (leaf_name.clone(), true),
        ServerLeg::Reverse { tls, .. } => (key.host.clone(), tls),
    };
    if treatment == HostTreatment::RelayTcp {
        let start = TlsRelayStart {
            hello: &hello,
            leaf_name: &leaf_name,
            server_name: &server_name,
            server_tls,
        };
        Box::pin(relay_tls_as_tcp(
            &core,
            client,
            Prefixed::new(buffer.freeze(), client_io),
            socket,
            &key,
            start,
        ))
        .await;
        return;
    }
    // Offer the server what the client offered (so each side sees the protocol it
    // would have used without us), limited to what Periscope speaks.
    let mut alpn: Vec<Vec<u8>> = hello
        .alpn
        .iter()
        .filter(|p| p.as_slice() == ALPN_H2 || p.as_slice() == ALPN_HTTP11)
        .cloned()
        .collect();
    // HTTP/1.1 is always offered too: Periscope can translate, and some servers answer
    // "http/1.1" even when it was not offered (which OpenSSL rightly rejects).
    if !alpn.iter().any(|p| p.as_slice() == ALPN_HTTP11) {
        alpn.push(ALPN_HTTP11.to_vec());
    }
    if core.requires_http11(&key.host) {
        alpn = vec![ALPN_HTTP11.to_vec()];
    }
    let parameters = TlsParameters {
        server_name: server_name.clone(),
        send_sni: true,
        alpn,
        post_quantum: hello.post_quantum,
    };
    let key = UpstreamKey {
        tls: server_tls,
        ..key
    };
    let via = client.listener.as_ref().and_then(|l| l.via().cloned());
    let upstream = match socket {
        Ok(socket) if server_tls => {
            Box::pin(establish_with_fallback(
                &core,
                via.as_ref(),
                socket,
                &key,
                Some(&parameters),
            ))
            .await
        }
        Ok(socket) => Box::pin(establish(&core, socket, None)).await,
        Err(error) => Err(error),
    };
    let leaf = match core.ca.leaf_for(&leaf_name, &[]) {
        Ok(leaf) => leaf,
        Err(error) => {
            core.bus.log(
                LogLevel::Error,
                format!("cannot mint a certificate for {leaf_name}: {error}"),
            );
            return;
        }
    };
    let server_choice = upstream
        .as_ref()
        .ok()
        .and_then(|c| c.alpn().map(str::to_owned));
    let client_choice = client_alpn(&hello.alpn, server_choice.as_deref());
    let server_tls_info = upstream.as_ref().ok().and_then(|c| c.info.tls.as_ref());
    let tls = match Box::pin(core.client_tls.accept(
        Prefixed::new(buffer.freeze(), client_io),
        &leaf,
        client_choice.as_deref(),
        classic_for_client(&hello, server_tls_info),
        core.timeouts().tls,
    ))
    .await
    {
        Ok(tls) => tls,
        Err(error) => {
            core.bus.log(
                LogLevel::Warn,
                client_handshake_failure(&peer, &leaf_name, &error, &core),
            );
            return;
        }
    };
    let protocol = match tls.ssl().selected_alpn_protocol() {
        Some(ALPN_H2) => ClientProtocol::Http2,
        _ => ClientProtocol::Http1,
    };
    client
        .milestones
        .push((Milestone::ClientTlsEstablished, Timestamp::now()));
    client.info.tls = Some(tls.info());
    client.tls = Some(Arc::clone(tls.state()));
    client.intercepted_tls = true;
    let session = Arc::new(ClientSession::new(
        Arc::clone(&core),
        client,
        Some(Tunnel {
            key: key.clone(),
            tls: server_tls.then_some(parameters),
            rewrite_host,
        }),
    ));
    session.seed(key, upstream);
    Box::pin(session.serve(tls, protocol)).await;
}

/// The names a connection is known by, as `host:port`, for the host rules: the name
/// or address asked for and the address connected to (the SNI is added once read).
fn connection_names(key: &UpstreamKey, socket: Option<&ConnectedSocket>) -> Vec<String> {
    let mut names = vec![format!("{}:{}", key.host, key.port)];
    if let Some(peer) = socket.and_then(|s| s.info.peer) {
        names.push(format!("{}:{}", peer.ip(), peer.port()));
    }
    names
}

/// Relays a connection as bytes and records it as a TCP flow; without a server
/// connection there is nothing to relay to, and the log says why.
async fn relay_bytes<C>(
    core: &ProxyCore,
    client: &ClientContext,
    client_io: C,
    socket: Result<ConnectedSocket, UpstreamError>,
    key: &UpstreamKey,
    reason: TcpReason,
    sni: Option<String>,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let socket = match socket {
        Ok(socket) => socket,
        Err(error) => {
            core.bus.log(
                LogLevel::Warn,
                format!(
                    "{}: cannot relay to {}: {error}",
                    client.peer_label(),
                    key.label()
                ),
            );
            return;
        }
    };
    let start = TcpFlowStart {
        host: key.host.clone(),
        port: key.port,
        reason,
        sni,
        server: socket.info,
        server_milestones: socket.milestones,
        server_tls: None,
    };
    crate::tcp_relay::relay(core, client, client_io, socket.stream, start).await;
}

/// What `relay_tls_as_tcp` needs from the ClientHello and the mode.
struct TlsRelayStart<'a> {
    hello: &'a crate::client_hello::ClientHello,
    leaf_name: &'a str,
    server_name: &'a str,
    server_tls: bool,
}

/// `--tcp-hosts` over TLS: TLS is terminated on both legs (ALPN as the client
/// offered it, whatever the protocol), and the bytes inside relayed as a TCP flow.
async fn relay_tls_as_tcp<C>(
    core: &ProxyCore,
    mut client: ClientContext,
    client_io: C,
    socket: Result<ConnectedSocket, UpstreamError>,
    key: &UpstreamKey,
    start: TlsRelayStart<'_>,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = client.peer_label();
    let socket = match socket {
        Ok(socket) => socket,
        Err(error) => {
            core.bus.log(
                LogLevel::Warn,
                format!("{peer}: cannot relay to {}: {error}", key.label()),
            );
            return;
        }
    };
    let ConnectedSocket {
        stream,
        mut info,
        mut milestones,
        ..
    } = socket;
    let idle = core.timeouts().body_idle;
    let stream = WriteDeadline::new(stream, idle, "the server", None);
    let alpn: Vec<&[u8]> = start.hello.alpn.iter().map(Vec::as_slice).collect();
    let label = key.label();
    let (server_io, server_choice, server_tls): (Box<dyn ServerStream>, _, _) = if start.server_tls
    {
        let connected = core
            .upstream_tls()
            .connect(
                stream,
                &UpstreamTarget {
                    server_name: start.server_name,
                    send_sni: true,
                    alpn: &alpn,
                    post_quantum: start.hello.post_quantum,
                    peer_label: &label,
                    timeouts: core.timeouts().tls,
                },
            )
            .await;
        let tls = match connected {
            Ok(tls) => tls,
            Err(error) => {
                core.bus.log(
                    LogLevel::Warn,
                    format!("{peer}: TLS with {label} failed: {error}"),
                );
                return;
            }
        };
        milestones.push((Milestone::ServerTlsEstablished, Timestamp::now()));
        info.tls = Some(tls.info());
        let choice = tls.ssl().selected_alpn_protocol().map(<[u8]>::to_vec);
        let state = Arc::clone(tls.state());
        (Box::new(tls), choice, Some(state))
    } else {
        (Box::new(stream), None, None)
    };
    let leaf = match core.ca.leaf_for(start.leaf_name, &[]) {
        Ok(leaf) => leaf,
        Err(error) => {
            core.bus.log(
                LogLevel::Error,
                format!("cannot mint a certificate for {}: {error}", start.leaf_name),
            );
            return;
        }
    };
    let client_choice = server_choice
        .filter(|choice| start.hello.alpn.contains(choice))
        .or_else(|| {
            start
                .hello
                .alpn
                .first()
                .cloned()
                .filter(|_| !start.server_tls)
        });
    let tls = match core
        .client_tls
        .accept(
            client_io,
            &leaf,
            client_choice.as_deref(),
            classic_for_client(start.hello, info.tls.as_ref()),
            core.timeouts().tls,
        )
        .await
    {
        Ok(tls) => tls,
        Err(error) => {
            core.bus.log(
                LogLevel::Warn,
                client_handshake_failure(&peer, start.leaf_name, &error, core),
            );
            return;
        }
    };
    client
        .milestones
        .push((Milestone::ClientTlsEstablished, Timestamp::now()));
    client.info.tls = Some(tls.info());
    client.intercepted_tls = true;
    let flow_start = TcpFlowStart {
        host: key.host.clone(),
        port: key.port,
        reason: TcpReason::TcpHost,
        sni: start.hello.sni.clone(),
        server: info,
        server_milestones: milestones,
        server_tls,
    };
    crate::tcp_relay::relay(core, &client, tls, server_io, flow_start).await;
}

/// Whether the client, which may have offered a post-quantum group, gets classic
/// groups only: its server's TLS leg agreed on a classic one (see
/// `periscope_tls::key_exchange`). A leg without TLS, or that failed, decides nothing.
fn classic_for_client(hello: &ClientHello, server_tls: Option<&TlsInfo>) -> bool {
    hello.post_quantum
        && server_tls.is_some_and(|tls| {
            !tls.key_exchange
                .as_deref()
                .is_some_and(periscope_tls::key_exchange::is_post_quantum)
        })
}

/// True when `first` starts like an HTTP/1.x request line or the HTTP/2 preface.
fn looks_like_http(first: &[u8]) -> bool {
    const STARTS: [&[u8]; 10] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"TRACE ",
        b"CONNECT ",
        b"PRI * HTTP/2",
    ];
    STARTS.iter().any(|start| first.starts_with(start))
}

/// The protocol to agree with the client: the server's choice when the client offered
/// it, else the client's HTTP/1.1, else its HTTP/2 (Periscope translates between them).
fn client_alpn(client_offer: &[Vec<u8>], server_choice: Option<&str>) -> Option<Vec<u8>> {
    let offered = |p: &[u8]| client_offer.iter().any(|o| o.as_slice() == p);
    if let Some(choice) = server_choice {
        if offered(choice.as_bytes()) {
            return Some(choice.as_bytes().to_vec());
        }
    }
    [ALPN_HTTP11, ALPN_H2]
        .into_iter()
        .find(|p| offered(p))
        .map(<[u8]>::to_vec)
}

/// Says why a client refused our handshake; the common case is a client that does not
/// trust the CA yet.
fn client_handshake_failure(
    peer: &str,
    server_name: &str,
    error: &periscope_tls::TlsError,
    core: &ProxyCore,
) -> String {
    let text = error.to_string();
    if error.is_certificate_rejection() {
        format!(
            "{peer}: the client rejected Periscope's certificate for {server_name} ({text}). \
             The client does not trust Periscope's CA: install {}",
            core.ca.cert_pem_path().display()
        )
    } else {
        format!("{peer}: TLS handshake with the client for {server_name} failed: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::connect_target;

    fn target(text: &str) -> Option<(String, u16)> {
        connect_target(&text.parse::<http::Uri>().ok()?)
    }

    #[test]
    fn authority_form_targets_are_accepted() {
        assert_eq!(target("Example.COM:443"), Some(("example.com".into(), 443)));
        assert_eq!(target("127.0.0.1:8443"), Some(("127.0.0.1".into(), 8443)));
        assert_eq!(target("[::1]:443"), Some(("::1".into(), 443)));
        assert_eq!(
            target("my_host.internal:1"),
            Some(("my_host.internal".into(), 1))
        );
    }

    /// Each of these was once tunnelled with its extra parts dropped (the bracketed
    /// names were found by the connect_authority fuzz target).
    #[test]
    fn anything_more_or_less_than_host_port_is_refused() {
        for text in [
            "example.com",
            "example.com:0",
            "user@example.com:443",
            "http://example.com:443/",
            "[example.com]:443",
            "[127.0.0.1]:443",
            "[1]:3",
            "[SSSSSSSSSS::1]:8443",
            "[::1]",
            "exa%41mple.com:443",
        ] {
            assert_eq!(target(text), None, "{text}");
        }
    }
}
