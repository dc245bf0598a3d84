//! What every connection shares: configuration, the CA, the TLS contexts and the bus.

use std::sync::Arc;

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
}

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
        })
    }

    /// The CA certificate, for clients that download it from the proxy.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }
}
