//! Periscope's proxy: the listener, CONNECT interception, the HTTP relay between the
//! legs and the life of each flow.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use periscope_proxy::{FlowBus, Proxy, ProxyConfig};
//! use periscope_tls::CertificateAuthority;
//!
//! let ca = Arc::new(CertificateAuthority::load_or_create("/tmp/periscope".as_ref())?);
//! let bus = FlowBus::new();
//! let mut flows = bus.subscribe();
//! let proxy = Proxy::bind(ProxyConfig::default(), ca, bus).await?;
//! println!("listening on {}", proxy.local_addr());
//! tokio::spawn(proxy.run());
//! while let Ok(event) = flows.recv().await {
//!     println!("{event:?}");
//! }
//! # Ok(()) }
//! ```

mod body;
mod bus;
mod client_hello;
mod config;
mod connection_threads;
mod control;
mod core;
mod destination;
mod error;
mod exchange;
mod guard;
mod headers;
mod hooks;
mod hosts;
mod http2;
mod intercept;
mod io;
mod listener;
mod mode;
mod pages;
mod park;
mod pool;
mod recorder;
mod retry;
mod session;
pub mod socks5;
mod tcp_relay;
mod transparent;
mod tunnel;
mod upgrade;
mod upstream;
mod upstream_proxy;
mod websocket;
mod websocket_h2;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use periscope_flow::LogLevel;
use periscope_tls::{CertificateAuthority, TlsError};
use tokio::net::TcpListener;

use crate::connection_threads::{ConnectionThreads, Dispatch};

pub use crate::bus::FlowBus;
pub use crate::client_hello::{parse_client_hello, ClientHello, ClientHelloError};
pub use crate::config::{LiveTimeouts, ProxyConfig, Timeouts};
pub use crate::control::ProxyControl;
pub use crate::error::UpstreamError;
pub use crate::guard::ProxyCredentials;
pub use crate::hooks::{
    answer_from, rebuild_request, rebuild_response, ClientHelloInfo, ExchangeHook, HelloVerdict,
    HookFuture, Hooks, RequestVerdict, ResponseVerdict, StageBody,
};
pub use crate::hosts::{HostRules, HostRulesError, HostTreatment};
pub use crate::mode::{
    ModeError, ModeSpec, ModesConfig, ProxyMode, ReverseTarget, UpstreamProxy, UpstreamScheme,
};
pub use crate::pages::{onboarding_file, OnboardingFile, ONBOARDING_CSP};
pub use crate::recorder::{FlowRecorder, Side};
pub use crate::tunnel::connect_target;

use crate::core::ProxyCore;
use crate::listener::{serve_client, Listener};

#[derive(thiserror::Error, Debug)]
pub enum ProxyError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Setup(String),
}

impl From<crate::core::CoreError> for ProxyError {
    fn from(error: crate::core::CoreError) -> Self {
        match error {
            crate::core::CoreError::Tls(tls) => ProxyError::Tls(tls),
            other => ProxyError::Setup(other.to_string()),
        }
    }
}

/// A bound, not yet running proxy: one listener per mode.
pub struct Proxy {
    core: Arc<ProxyCore>,
    listeners: Vec<(Arc<Listener>, TcpListener)>,
}

impl Proxy {
    /// Binds every listener of `config.modes` (one regular listener at
    /// `config.listen` when it names none).
    pub async fn bind(
        config: ProxyConfig,
        ca: Arc<CertificateAuthority>,
        bus: FlowBus,
    ) -> Result<Self, ProxyError> {
        let mut config = config;
        let wanted = if config.modes.listeners.is_empty() {
            vec![(ProxyMode::Regular, config.listen)]
        } else {
            config.modes.listeners.clone()
        };
        let mut bound = Vec::with_capacity(wanted.len());
        for (mode, address) in wanted {
            let listener =
                bind_listener(address).map_err(|source| ProxyError::Bind { address, source })?;
            // With port 0 the system picks one; the loop check must know which.
            let address = listener.local_addr().unwrap_or(address);
            bound.push((mode, address, listener));
        }
        config.modes.listeners = bound
            .iter()
            .map(|(mode, address, _)| (mode.clone(), *address))
            .collect();
        // `listen` stays the first HTTP proxy listener's, for what asks for "the"
        // proxy address (replays, the page that serves the CA).
        if let Some((_, address, _)) = bound
            .iter()
            .find(|(mode, _, _)| mode.is_http_proxy())
            .or_else(|| bound.first())
        {
            config.listen = *address;
        }
        let core = Arc::new(ProxyCore::new(config, ca, bus)?);
        let listeners = bound
            .into_iter()
            .map(|(mode, address, listener)| (Arc::new(Listener::new(mode, address)), listener))
            .collect();
        Ok(Proxy { core, listeners })
    }

    /// The handle front ends act on flows in flight with; `None` unless the proxy is
    /// `interactive`.
    pub fn control(&self) -> Option<ProxyControl> {
        ProxyControl::new(&self.core)
    }

    /// The first listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners
            .first()
            .map_or(self.core.config.listen, |(listener, _)| listener.address)
    }

    /// Every listener: its mode as written (`regular`, `socks5`, ...) and its address.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .map(|(listener, _)| (listener.record.mode.clone(), listener.address))
            .collect()
    }

    /// Accepts clients on every listener until the process ends (or this future is
    /// dropped, which stops the connection threads and the connections on them).
    /// Clients are served on one thread per core ([`connection_threads`]).
    pub async fn run(self) {
        let threads = match ConnectionThreads::start() {
            Ok(threads) => threads,
            Err(error) => {
                self.core.bus.log(
                    LogLevel::Warn,
                    format!(
                        "cannot start the connection threads ({error}); serving clients on \
                         the main runtime"
                    ),
                );
                let mut accepting = tokio::task::JoinSet::new();
                for (listener, socket) in self.listeners {
                    accepting.spawn(accept_loop(Arc::clone(&self.core), listener, socket, None));
                }
                while accepting.join_next().await.is_some() {}
                return;
            }
        };
        let mut accepting = Vec::new();
        for (listener, socket) in self.listeners {
            let address = listener.address;
            let core = Arc::clone(&self.core);
            let dispatch = Arc::clone(threads.dispatch());
            let accept = move |socket| accept_loop(core, listener, socket, Some(dispatch));
            match threads.accept_on_first(socket, accept) {
                Ok(accept_loop) => accepting.push(accept_loop),
                Err(error) => self.core.bus.log(
                    LogLevel::Error,
                    format!("cannot accept clients on {address}: {error}"),
                ),
            }
        }
        for accept_loop in accepting {
            let _ = accept_loop.await;
        }
        // Kept until here: dropping it stops the threads, the accept loops with them.
        drop(threads);
    }
}

/// Running out of file descriptors is logged and waited out rather than ending the
/// listener.
async fn accept_loop(
    core: Arc<ProxyCore>,
    listener: Arc<Listener>,
    socket: TcpListener,
    dispatch: Option<Arc<Dispatch>>,
) {
    loop {
        match socket.accept().await {
            Ok((stream, peer)) => {
                let serve = {
                    let core = Arc::clone(&core);
                    let listener = Arc::clone(&listener);
                    move |stream| serve_client(core, listener, stream, peer)
                };
                match &dispatch {
                    Some(dispatch) => {
                        if let Err(error) = dispatch.serve(stream, serve) {
                            core.bus.log(
                                LogLevel::Error,
                                format!("cannot serve the client {peer}: {error}"),
                            );
                        }
                    }
                    None => {
                        tokio::spawn(serve(stream));
                    }
                }
            }
            Err(error) => {
                core.bus.log(
                    LogLevel::Error,
                    format!(
                        "cannot accept a client connection on {} ({}): {error} (open file limit \
                         reached?); retrying",
                        listener.address, listener.record.mode
                    ),
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A listening socket on `address`. The unspecified IPv6 address (`[::]`) takes IPv4
/// connections too whatever `net.ipv6.bindv6only` says (one listener for both
/// families, as the transparent recipe needs); a specific IPv6 address only IPv6.
fn bind_listener(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(v6) => {
            let socket = tokio::net::TcpSocket::new_v6()?;
            let dual_stack = v6.ip().is_unspecified();
            nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::Ipv6V6Only,
                &!dual_stack,
            )
            .map_err(std::io::Error::from)?;
            socket
        }
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    // As std's listeners on Linux: the kernel's limit (somaxconn, 4096 by default).
    socket.listen(4096)
}
