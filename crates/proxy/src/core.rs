//! What every connection shares: configuration, the CA, the TLS contexts and the bus.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use periscope_tls::{CertificateAuthority, ClientTls, TlsError, UpstreamTls};

use crate::bus::FlowBus;
use crate::config::ProxyConfig;
use crate::hooks::Hooks;
use crate::intercept::{CertificateHolds, Intercept, LiveFlows};
use arc_swap::ArcSwap;
use periscope_flow::filter::Filter;
use std::sync::atomic::AtomicBool;

/// Why the proxy could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("invalid intercept filter {0}")]
    Intercept(String),
    #[error("{0}")]
    Hosts(#[from] crate::hosts::HostRulesError),
}

pub struct ProxyCore {
    pub config: ProxyConfig,
    pub ca: Arc<CertificateAuthority>,
    /// How servers are trusted and answered; replaced whole when the user changes it
    /// (see [`ProxyCore::upstream_tls`]).
    upstream_tls: ArcSwap<UpstreamTls>,
    pub client_tls: ClientTls,
    pub bus: FlowBus,
    pub hooks: Hooks,
    /// Flows in flight, for front ends that act on them (`None`: nobody can).
    pub live: Option<Arc<LiveFlows>>,
    /// The user's intercept filter, when front ends can act on flows.
    pub intercept: Option<Arc<Intercept>>,
    /// Hold servers' certificate requests after the first handshake for the user.
    pub intercept_tls: Arc<AtomicBool>,
    /// `--ignore-hosts`, `--allow-hosts`, `--tcp-hosts`.
    pub hosts: crate::hosts::HostRules,
    /// Hosts whose HTTP/2 server answered HTTP_1_1_REQUIRED: they get HTTP/1.1.
    http11_required: HostMemory,
    /// Hosts whose server selected no ALPN protocol and sent the HTTP/2 preface: they
    /// get HTTP/2 with prior knowledge when they select none.
    http2_preface: HostMemory,
    /// Hosts whose server closed an HTTP/1.1 connection it had selected no protocol
    /// for: they are offered HTTP/2 as well.
    offer_http2: HostMemory,
}

/// How long a host's protocol quirk is remembered without asking again.
const QUIRK_MEMORY: Duration = Duration::from_secs(30 * 60);

/// Hosts with a protocol quirk, until when it is assumed.
#[derive(Default)]
struct HostMemory(Mutex<HashMap<String, Instant>>);

impl HostMemory {
    fn remember(&self, host: &str) {
        let mut hosts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        hosts.retain(|_, until| *until > now);
        hosts.insert(host.to_owned(), now + QUIRK_MEMORY);
    }

    fn holds(&self, host: &str) -> bool {
        let hosts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        hosts.get(host).is_some_and(|until| *until > Instant::now())
    }
}

impl ProxyCore {
    pub fn new(
        config: ProxyConfig,
        ca: Arc<CertificateAuthority>,
        bus: FlowBus,
    ) -> Result<Self, CoreError> {
        let mut hooks = config.hooks.clone();
        let intercept_tls = Arc::new(AtomicBool::new(config.interactive && config.intercept_tls));
        let mut upstream_settings = config.upstream_tls.clone();
        let (live, intercept) = if config.interactive {
            let live = Arc::new(LiveFlows::default());
            let intercept = Arc::new(Intercept::new(
                Arc::clone(&live),
                config.body_limit,
                config.timeouts.clone(),
            ));
            if let Some(text) = &config.intercept {
                let filter = Filter::parse(text)
                    .map_err(|e| CoreError::Intercept(format!("\"{text}\": {e}")))?;
                intercept.set_filter(Some((text.clone(), filter)));
            }
            // Last, as in mitmproxy: a paused flow shows what the rules and scripts
            // made of it.
            hooks.add(Arc::clone(&intercept) as Arc<dyn crate::hooks::ExchangeHook>);
            upstream_settings.certificate_hold = Some(Arc::new(CertificateHolds {
                on: Arc::clone(&intercept_tls),
                live: Arc::clone(&live),
            }));
            (Some(live), Some(intercept))
        } else {
            (None, None)
        };
        let modes = &config.modes;
        let hosts = crate::hosts::HostRules::new(
            &modes.ignore_hosts,
            &modes.allow_hosts,
            &modes.tcp_hosts,
        )?;
        Ok(ProxyCore {
            hosts,
            live,
            intercept,
            intercept_tls,
            upstream_tls: ArcSwap::from_pointee(UpstreamTls::new(upstream_settings)?),
            client_tls: ClientTls::new(config.client_tls.clone())?,
            hooks,
            config,
            ca,
            bus,
            http11_required: HostMemory::default(),
            http2_preface: HostMemory::default(),
            offer_http2: HostMemory::default(),
        })
    }

    /// The timeouts in force now.
    pub fn timeouts(&self) -> crate::config::Timeouts {
        self.config.timeouts.get()
    }

    /// The upstream TLS settings in force now: a connection keeps the ones it
    /// started with.
    pub fn upstream_tls(&self) -> Arc<UpstreamTls> {
        self.upstream_tls.load_full()
    }

    /// Makes upstream connections from now on with `tls`; TLS connections made before
    /// go on with the exchange they carry and are not reused.
    pub fn replace_upstream_tls(&self, tls: UpstreamTls) {
        self.upstream_tls.store(Arc::new(tls));
    }

    /// The [`UpstreamTls::id`] of the settings in force: a TLS connection made with
    /// others is not reused (it may not have verified its server as the user now
    /// wants, or presented another client certificate).
    pub fn upstream_tls_id(&self) -> u64 {
        self.upstream_tls.load().id()
    }

    pub fn remember_http11_required(&self, host: &str) {
        self.http11_required.remember(host);
    }

    pub fn requires_http11(&self, host: &str) -> bool {
        self.http11_required.holds(host)
    }

    pub fn remember_http2_preface(&self, host: &str) {
        self.http2_preface.remember(host);
        self.offer_http2.remember(host);
    }

    pub fn sent_http2_preface(&self, host: &str) -> bool {
        self.http2_preface.holds(host)
    }

    pub fn remember_offer_http2(&self, host: &str) {
        self.offer_http2.remember(host);
    }

    pub fn offers_http2(&self, host: &str) -> bool {
        self.offer_http2.holds(host)
    }

    /// Whether `host:port` is one of Periscope's own listeners: relaying to it would
    /// loop.
    pub fn is_own_listener(&self, host: &str, port: u16) -> bool {
        let targets = |listen| crate::guard::targets_self(listen, host, port);
        targets(self.config.listen)
            || self
                .config
                .modes
                .listeners
                .iter()
                .any(|(_, address)| targets(*address))
    }

    /// Whether a connection to `host:port` is refused: a listener of Periscope's own,
    /// or an address it protects (the control API's).
    pub fn refuses_target(&self, host: &str, port: u16) -> bool {
        self.is_own_listener(host, port)
            || self
                .config
                .protected
                .iter()
                .any(|protected| crate::guard::targets_self(*protected, host, port))
    }
}
