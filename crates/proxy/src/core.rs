//! What every connection shares: configuration, the CA, the TLS contexts and the bus.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use periscope_tls::{CertificateAuthority, ClientTls, TlsError, UpstreamTls};

use crate::bus::FlowBus;
use crate::config::ProxyConfig;

pub struct ProxyCore {
    pub config: ProxyConfig,
    pub ca: Arc<CertificateAuthority>,
    pub upstream_tls: UpstreamTls,
    pub client_tls: ClientTls,
    pub bus: FlowBus,
    ca_pem: Vec<u8>,
    /// Hosts whose HTTP/2 server answered HTTP_1_1_REQUIRED, until when to use
    /// HTTP/1.1 with them.
    http11_required: Mutex<HashMap<String, Instant>>,
}

/// How long a host that demanded HTTP/1.1 gets HTTP/1.1 without asking again.
const HTTP11_MEMORY: Duration = Duration::from_secs(30 * 60);

impl ProxyCore {
    pub fn new(
        config: ProxyConfig,
        ca: Arc<CertificateAuthority>,
        bus: FlowBus,
    ) -> Result<Self, TlsError> {
        Ok(ProxyCore {
            ca_pem: ca.certificate().to_pem()?,
            upstream_tls: UpstreamTls::new(config.upstream_tls.clone())?,
            client_tls: ClientTls::new(config.client_tls.clone())?,
            config,
            ca,
            bus,
            http11_required: Mutex::new(HashMap::new()),
        })
    }

    pub fn remember_http11_required(&self, host: &str) {
        let mut hosts = self
            .http11_required
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        hosts.retain(|_, until| *until > now);
        hosts.insert(host.to_owned(), now + HTTP11_MEMORY);
    }

    pub fn requires_http11(&self, host: &str) -> bool {
        let hosts = self
            .http11_required
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        hosts.get(host).is_some_and(|until| *until > Instant::now())
    }

    /// The CA certificate, for clients that download it from the proxy.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }
}
