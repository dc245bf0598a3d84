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
mod control;
mod core;
mod destination;
mod error;
mod exchange;
mod guard;
mod headers;
mod hooks;
mod http2;
mod intercept;
mod io;
mod pages;
mod pool;
mod recorder;
mod retry;
mod session;
mod tunnel;
mod upgrade;
mod upstream;
mod websocket;
mod websocket_h2;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use periscope_flow::{ConnectionInfo, LogLevel, Milestone, Timestamp};
use periscope_tls::{CertificateAuthority, TlsError};
use tokio::net::{TcpListener, TcpStream};

pub use crate::bus::FlowBus;
pub use crate::client_hello::{parse_client_hello, ClientHello, ClientHelloError};
pub use crate::config::{ProxyConfig, Timeouts};
pub use crate::control::ProxyControl;
pub use crate::error::UpstreamError;
pub use crate::guard::ProxyCredentials;
pub use crate::hooks::{ExchangeHook, HookFuture, Hooks, RequestVerdict, ResponseVerdict};
pub use crate::tunnel::connect_target;

use crate::core::ProxyCore;
use crate::intercept::KillSwitch;
use crate::io::{LingeringClose, WriteDeadline, WriteStall};
use crate::recorder::ClientContext;
use crate::session::{ClientProtocol, ClientSession};
use crate::upstream::next_connection_id;

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

/// A bound, not yet running proxy.
pub struct Proxy {
    core: Arc<ProxyCore>,
    listener: TcpListener,
}

impl Proxy {
    pub async fn bind(
        config: ProxyConfig,
        ca: Arc<CertificateAuthority>,
        bus: FlowBus,
    ) -> Result<Self, ProxyError> {
        let address = config.listen;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ProxyError::Bind { address, source })?;
        // With port 0 the system picks one; the loop check must know which.
        let mut config = config;
        config.listen = listener.local_addr().unwrap_or(address);
        let core = Arc::new(ProxyCore::new(config, ca, bus)?);
        Ok(Proxy { core, listener })
    }

    /// The handle front ends act on flows in flight with; `None` unless the proxy is
    /// `interactive`.
    pub fn control(&self) -> Option<ProxyControl> {
        ProxyControl::new(&self.core)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.core.config.listen)
    }

    /// Accepts clients until the process ends. Running out of file descriptors is
    /// logged and waited out rather than ending the proxy.
    pub async fn run(self) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let core = Arc::clone(&self.core);
                    tokio::spawn(serve_client(core, stream, peer));
                }
                Err(error) => {
                    self.core.bus.log(
                        LogLevel::Error,
                        format!("cannot accept a client connection: {error} (open file limit reached?); retrying"),
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn serve_client(core: Arc<ProxyCore>, stream: TcpStream, peer: SocketAddr) {
    let connected = Timestamp::now();
    crate::io::configure_socket(&stream);
    // hyper's header timeout starts at the first byte; a client that never sends one
    // would otherwise hold its socket and task forever.
    let idle = core.config.timeouts.client_idle;
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
    let write_stall = Arc::new(WriteStall::default());
    let connection_kill = Arc::new(KillSwitch::default());
    let client = ClientContext {
        info: ConnectionInfo {
            id: next_connection_id(),
            peer: Some(peer),
            local: stream.local_addr().ok(),
            target: None,
            tls: None,
        },
        milestones: vec![(Milestone::ClientConnected, connected)],
        tls: None,
        intercepted_tls: false,
        write_stall: Arc::clone(&write_stall),
        connection_kill: Arc::clone(&connection_kill),
    };
    let stream = LingeringClose::new(
        WriteDeadline::new(
            stream,
            core.config.timeouts.body_idle,
            "the client",
            Some(write_stall),
        ),
        connection_kill,
    );
    let session = Arc::new(ClientSession::new(core, client, None));
    session.serve(stream, ClientProtocol::Detect).await;
}
