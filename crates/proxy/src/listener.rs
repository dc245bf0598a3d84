//! One listener per mode: how its clients are accepted and where their connections
//! go. An HTTP proxy listener (regular, upstream) serves requests and CONNECT; the
//! others find the server first — the reverse target, the SOCKS5 request, the
//! original destination of a redirected connection — and hand the connection to the
//! tunnel, the same code a CONNECT uses, so TLS interception and renegotiations work
//! the same in every mode.

use std::net::SocketAddr;
use std::sync::Arc;

use periscope_flow::{ConnectionInfo, ListenerInfo, LogLevel, Milestone, Timestamp};
use tokio::net::TcpStream;

use crate::core::ProxyCore;
use crate::guard::targets_self;
use crate::intercept::KillSwitch;
use crate::io::{LingeringClose, WriteDeadline, WriteStall};
use crate::mode::{ProxyMode, UpstreamProxy};
use crate::recorder::ClientContext;
use crate::session::{ClientProtocol, ClientSession};
use crate::tunnel::ServerLeg;
use crate::upstream::{connect_tcp, next_connection_id, UpstreamKey};

/// A listener as its connections see it.
#[derive(Debug)]
pub struct Listener {
    pub mode: ProxyMode,
    pub address: SocketAddr,
    /// What each flow records about it.
    pub record: ListenerInfo,
}

impl Listener {
    pub fn new(mode: ProxyMode, address: SocketAddr) -> Self {
        let record = ListenerInfo {
            mode: mode.to_string(),
            address: Some(address),
        };
        Listener {
            mode,
            address,
            record,
        }
    }

    /// The proxy server connections go through (an `upstream:` mode).
    pub fn via(&self) -> Option<&UpstreamProxy> {
        match &self.mode {
            ProxyMode::Upstream(proxy) => Some(proxy),
            _ => None,
        }
    }
}

/// Serves one accepted client of `listener`.
pub async fn serve_client(
    core: Arc<ProxyCore>,
    listener: Arc<Listener>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let connected = Timestamp::now();
    // A dual-stack listener sees IPv4 clients at IPv4-mapped addresses: flows show
    // them as the IPv4 addresses they are.
    let peer = crate::transparent::canonical(peer);
    crate::io::configure_socket(&stream);
    let idle = core.timeouts().client_idle;
    let write_stall = Arc::new(WriteStall::default());
    let connection_kill = Arc::new(KillSwitch::default());
    let client = ClientContext {
        info: ConnectionInfo {
            id: next_connection_id(),
            peer: Some(peer),
            local: stream.local_addr().ok().map(crate::transparent::canonical),
            target: None,
            tls: None,
        },
        milestones: vec![(Milestone::ClientConnected, connected)],
        tls: None,
        intercepted_tls: false,
        write_stall: Arc::clone(&write_stall),
        connection_kill: Arc::clone(&connection_kill),
        listener: Some(Arc::clone(&listener)),
    };
    match &listener.mode {
        ProxyMode::Regular | ProxyMode::Upstream(_) => {
            // hyper's header timeout starts at the first byte; a client that never
            // sends one would otherwise hold its socket and task forever.
            let mut first = [0u8; 1];
            match tokio::time::timeout(idle, stream.peek(&mut first)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => {
                    core.bus.log(
                        LogLevel::Info,
                        format!(
                            "{peer}: closed an idle client connection (nothing sent in {} s)",
                            idle.as_secs_f64()
                        ),
                    );
                    return;
                }
            }
            let stream = client_stream(&core, stream, write_stall, connection_kill);
            let session = Arc::new(ClientSession::new(core, client, None));
            session.serve(stream, ClientProtocol::Detect).await;
        }
        ProxyMode::Reverse(target) => {
            let key = UpstreamKey {
                tls: target.tls,
                host: target.host.clone(),
                port: target.port,
            };
            let leg = ServerLeg::Reverse {
                tls: target.tls,
                rewrite_host: !core.config.modes.keep_host_header,
            };
            // A server that cannot be reached is reported by the first request (a
            // 502 that says why), as in a tunnel whose eager connection failed.
            let socket = connect_tcp(&core, None, &key).await;
            let stream = client_stream(
                &core,
                stream,
                write_stall,
                Arc::clone(&client.connection_kill),
            );
            Box::pin(crate::tunnel::run(core, stream, socket, key, client, leg)).await;
        }
        // Boxed: a task's future is as large as its largest branch, and each of these
        // holds a whole tunnel (handshakes, relays, a session) inline — every regular
        // client connection paid for them (+9 KiB per idle connection, measured).
        ProxyMode::Transparent => {
            Box::pin(serve_redirected(core, client, stream, write_stall)).await
        }
        ProxyMode::Socks5 => Box::pin(serve_socks5(core, client, stream, write_stall)).await,
    }
}

/// The client's socket with the write deadline every socket of both legs has, closed
/// as nginx closes (lingering) so that an error answer sent while the client is still
/// sending is read rather than lost to a reset, whatever the listener's mode.
fn client_stream(
    core: &ProxyCore,
    stream: TcpStream,
    write_stall: Arc<WriteStall>,
    connection_kill: Arc<KillSwitch>,
) -> LingeringClose<WriteDeadline<TcpStream>> {
    let idle = core.timeouts().body_idle;
    LingeringClose::new(
        WriteDeadline::new(stream, idle, "the client", Some(write_stall)),
        connection_kill,
    )
}

/// The transparent mode: the server is where the client was going.
async fn serve_redirected(
    core: Arc<ProxyCore>,
    client: ClientContext,
    stream: TcpStream,
    write_stall: Arc<WriteStall>,
) {
    let peer = client.peer_label();
    let destination = match crate::transparent::original_destination(&stream) {
        Ok(destination) => destination,
        Err(error) => {
            core.bus.log(
                LogLevel::Warn,
                format!(
                    "{peer}: no original destination for a connection to the transparent \
                     listener ({error}); was it redirected by iptables/nft?"
                ),
            );
            return;
        }
    };
    if client.info.local == Some(destination)
        || targets_self(
            core.config.listen,
            &destination.ip().to_string(),
            destination.port(),
        )
    {
        core.bus.log(
            LogLevel::Warn,
            format!(
                "{peer}: connected to the transparent listener directly (not redirected); closed"
            ),
        );
        return;
    }
    let key = UpstreamKey {
        tls: true,
        host: destination.ip().to_string(),
        port: destination.port(),
    };
    let socket = connect_tcp(&core, None, &key).await;
    let stream = client_stream(
        &core,
        stream,
        write_stall,
        Arc::clone(&client.connection_kill),
    );
    crate::tunnel::run(core, stream, socket, key, client, ServerLeg::LikeClient).await;
}

/// The SOCKS5 mode: the handshake names the server; it is connected before the
/// client is told it succeeded, so a dead server gets its SOCKS reply code.
async fn serve_socks5(
    core: Arc<ProxyCore>,
    client: ClientContext,
    stream: TcpStream,
    write_stall: Arc<WriteStall>,
) {
    let peer = client.peer_label();
    let timeout = core.timeouts().client_idle;
    let stream = client_stream(
        &core,
        stream,
        write_stall,
        Arc::clone(&client.connection_kill),
    );
    let credentials = core.config.credentials.as_ref();
    let request = match crate::socks5::accept(stream, credentials, timeout).await {
        Ok(request) => request,
        Err(refusal) => {
            core.bus.log(LogLevel::Info, format!("{peer}: {refusal}"));
            return;
        }
    };
    let key = UpstreamKey {
        tls: true,
        host: request.host.clone(),
        port: request.port,
    };
    if core.refuses_target(&key.host, key.port) {
        core.bus.log(
            LogLevel::Warn,
            format!(
                "{peer}: SOCKS5 request for {} refused: it is Periscope itself",
                key.label()
            ),
        );
        request
            .failed(fast_socks5::ReplyError::ConnectionNotAllowed, timeout)
            .await;
        return;
    }
    let socket = match connect_tcp(&core, None, &key).await {
        Ok(socket) => socket,
        Err(error) => {
            core.bus.log(
                LogLevel::Info,
                format!(
                    "{peer}: SOCKS5 connection to {} failed: {error}",
                    key.label()
                ),
            );
            request
                .failed(crate::socks5::reply_for(&error), timeout)
                .await;
            return;
        }
    };
    let bound = socket
        .info
        .local
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let Some(stream) = request.succeeded(bound, timeout).await else {
        return;
    };
    crate::tunnel::run(core, stream, Ok(socket), key, client, ServerLeg::LikeClient).await;
}
