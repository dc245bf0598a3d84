//! What a proxy instance needs to know; built by the binary from the command line.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use arc_swap::ArcSwap;
use periscope_tls::{ClientTlsSettings, HandshakeTimeouts, UpstreamTlsSettings};

/// Every wait the proxy does, with its limit. Each one has its own name in error
/// messages, so a user can tell "could not connect" from "server never answered".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to the server (DNS included).
    pub connect: Duration,
    /// The server's response head after the request was sent.
    pub response: Duration,
    /// Silence in the middle of a body, in either direction.
    pub body_idle: Duration,
    /// A client that has connected but not sent its first bytes (or a full request head).
    pub client_idle: Duration,
    /// A server connection kept for reuse that no request used.
    pub pool_idle: Duration,
    /// TLS handshakes on either leg, and renegotiations once a server started one.
    pub tls: HandshakeTimeouts,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            response: Duration::from_secs(60),
            body_idle: Duration::from_secs(60),
            client_idle: Duration::from_secs(60),
            pool_idle: Duration::from_secs(60),
            tls: HandshakeTimeouts::default(),
        }
    }
}

/// The timeouts in force, which the user may change while the proxy runs (the
/// options page). Every wait reads them when it starts, so a change applies to the
/// waits that start after it. Clones share the same values.
#[derive(Clone)]
pub struct LiveTimeouts(Arc<ArcSwap<Timeouts>>);

impl Default for LiveTimeouts {
    fn default() -> Self {
        LiveTimeouts::new(Timeouts::default())
    }
}

impl LiveTimeouts {
    pub fn new(timeouts: Timeouts) -> Self {
        LiveTimeouts(Arc::new(ArcSwap::from_pointee(timeouts)))
    }

    pub fn get(&self) -> Timeouts {
        **self.0.load()
    }

    pub fn set(&self, timeouts: Timeouts) {
        self.0.store(Arc::new(timeouts));
    }
}

impl std::fmt::Debug for LiveTimeouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

#[derive(Clone)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    /// How much of each body a flow keeps (bodies themselves always pass whole).
    pub body_limit: usize,
    pub timeouts: LiveTimeouts,
    pub upstream_tls: UpstreamTlsSettings,
    pub client_tls: ClientTlsSettings,
    /// Credentials clients must present (`--proxyauth`); `None` admits everyone.
    pub credentials: Option<crate::guard::ProxyCredentials>,
    /// Features that act on every exchange (intercept, rules, addons), in order.
    pub hooks: crate::hooks::Hooks,
    /// A front end can act on flows (the console, the control API, `--intercept`):
    /// flows in flight are registered so they can be found, paused and killed.
    pub interactive: bool,
    /// Pause flows matching this filter (`--intercept`); needs `interactive`.
    pub intercept: Option<String>,
    /// Pause a server's certificate request after the first handshake for the user
    /// (`--intercept-tls`); needs `interactive`.
    pub intercept_tls: bool,
    /// Addresses the proxy refuses to relay to (the control API's): a request sent
    /// through the proxy must never reach them (mitmproxy's CVE-2025-23217).
    pub protected: Vec<SocketAddr>,
    /// The listeners (`--mode`) and the hosts left alone (`--ignore-hosts`, ...).
    pub modes: crate::mode::ModesConfig,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit: 4 * 1024 * 1024,
            timeouts: LiveTimeouts::default(),
            upstream_tls: UpstreamTlsSettings {
                verify: true,
                ..UpstreamTlsSettings::default()
            },
            client_tls: ClientTlsSettings::default(),
            credentials: None,
            hooks: crate::hooks::Hooks::default(),
            interactive: false,
            intercept: None,
            intercept_tls: false,
            protected: Vec::new(),
            modes: crate::mode::ModesConfig::default(),
        }
    }
}
