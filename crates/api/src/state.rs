//! What the binary hands the API ([`ApiState`]) and what the handlers share while it
//! runs ([`Shared`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use periscope_control::FlowControl;
use periscope_flow::live::FlowFeed;
use periscope_flow::store::FlowStore;
use tokio::sync::{broadcast, watch};

use crate::auth::Secrets;
use crate::error::ApiError;
use crate::export::FlowExporter;

/// Tells whether a TCP peer of the API is a connection the proxy itself opened
/// upstream: the proxy relaying a client's request to the API.
pub type ProxyConnectionCheck = Arc<dyn Fn(SocketAddr) -> bool + Send + Sync>;

/// The web UI's files: a path under `/ui/` (`app.js`; `index.html` for `/`) to its
/// content type and bytes (`periscope_web::asset`). The API serves them; it does not
/// know what they are.
pub type UiAssets = fn(&str) -> Option<(&'static str, &'static [u8])>;

/// The onboarding page and the CA certificate (`/onboarding`, `/cert/pem`,
/// `/cert/cer`, `/cert/p12`): a path to its content type, the name to download it
/// as (certificates), and its bytes. The proxy serves the same at `http://periscope/`.
pub type OnboardingFiles = Arc<dyn Fn(&str) -> (String, Option<String>, Vec<u8>) + Send + Sync>;

/// Everything the control API needs from the running proxy.
pub struct ApiState {
    /// What users can do to flows.
    pub control: Arc<dyn FlowControl>,
    /// The session: recorded flows and the event log.
    pub store: Arc<FlowStore>,
    /// The live feed; each `/updates` WebSocket subscribes to it. The proxy must ask
    /// its bus for `RequestReceived` events (`FlowBus::want_requests`) for flows in
    /// flight to show up live.
    pub feed: FlowFeed,
    /// The secret of `?token=` and `Authorization: Bearer` ([`crate::random_token`] or
    /// `--web-password`).
    pub token: String,
    /// Host names accepted besides loopback names and addresses and the listening
    /// address (a name the user reaches the API by on a LAN).
    pub allowed_hosts: Vec<String>,
    /// When set, requests from TCP peers it matches are refused.
    pub is_proxy_connection: Option<ProxyConnectionCheck>,
    /// The export formats (`GET /flows/{id}/export/...`); `None` answers 501.
    pub exporter: Option<Arc<dyn FlowExporter>>,
    /// The web UI, served at `/` (to browsers) and `/ui/...`; `None` serves no UI.
    pub ui: Option<UiAssets>,
    /// The onboarding page and the CA's files, served without a token; `None`: not
    /// served.
    pub onboarding: Option<OnboardingFiles>,
}

impl ApiState {
    pub fn new(
        control: Arc<dyn FlowControl>,
        store: Arc<FlowStore>,
        feed: FlowFeed,
        token: String,
    ) -> Self {
        ApiState {
            control,
            store,
            feed,
            token,
            allowed_hosts: Vec::new(),
            is_proxy_connection: None,
            exporter: None,
            ui: None,
            onboarding: None,
        }
    }
}

/// The state every handler gets.
pub struct Shared {
    pub control: Arc<dyn FlowControl>,
    pub store: Arc<FlowStore>,
    pub feed: FlowFeed,
    pub secrets: Secrets,
    pub listen: SocketAddr,
    pub allowed_hosts: Vec<String>,
    pub is_proxy_connection: Option<ProxyConnectionCheck>,
    pub exporter: Option<Arc<dyn FlowExporter>>,
    pub ui: Option<UiAssets>,
    pub onboarding: Option<OnboardingFiles>,
    /// Messages the API itself makes for the WebSockets (options changed through it).
    pub announcements: broadcast::Sender<Arc<str>>,
    /// Turns true when the server shuts down, so open WebSockets close.
    pub shutdown: watch::Receiver<bool>,
    next_log_id: AtomicU64,
}

impl Shared {
    pub fn new(state: ApiState, listen: SocketAddr, shutdown: watch::Receiver<bool>) -> Self {
        let (announcements, _) = broadcast::channel(64);
        Shared {
            control: state.control,
            store: state.store,
            feed: state.feed,
            secrets: Secrets::new(state.token, listen.port()),
            listen,
            allowed_hosts: state.allowed_hosts,
            is_proxy_connection: state.is_proxy_connection,
            exporter: state.exporter,
            ui: state.ui,
            onboarding: state.onboarding,
            announcements,
            shutdown,
            next_log_id: AtomicU64::new(1),
        }
    }

    /// An id for a log line sent to a front end (mitmweb's `events` need one; it only
    /// has to be unique).
    pub fn log_id(&self) -> u64 {
        self.next_log_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a message to every open `/updates` WebSocket.
    pub fn announce(&self, message: String) {
        // No WebSocket open: nobody to tell.
        let _ = self.announcements.send(message.into());
    }
}

/// Runs `work` (SQLite, or a `FlowControl` call that may reach it) on tokio's blocking
/// pool, so a long query never stalls the API's other connections.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))?
}
