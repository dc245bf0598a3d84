//! OpenSSL contexts for the two legs, built once and shared by every connection.
//!
//! The upstream context is a client that answers everything a server may send after
//! the handshake (HelloRequest, CertificateRequest, KeyUpdate) and offers
//! post-handshake authentication. The client-leg context is a server that accepts
//! client-initiated renegotiation (OpenSSL 3 refuses it by default) at a bounded rate.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use openssl::ssl::{
    AlpnError, SslAcceptor, SslConnector, SslContext, SslMethod, SslOptions, SslSessionCacheMode,
    SslVerifyMode, SslVersion,
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::ca::LeafCertificate;
use crate::client_certs::ClientCertificates;
use crate::error::TlsError;
use crate::ffi;
use crate::hold::CertificateRequestHold;
use crate::key_exchange::{ClassicServers, CLASSIC_GROUPS};
use crate::keylog::KeyLog;
use crate::resumption::{self, SessionCache, SessionKey};
use crate::state::{ClientRenegotiation, TlsConnectionState};
use crate::stream::{HandshakeTimeouts, Role, TlsStream};

/// How Periscope talks TLS to servers.
#[derive(Clone, Default)]
pub struct UpstreamTlsSettings {
    /// Verify server certificates (the default; `-k` turns it off).
    pub verify: bool,
    /// A PEM file of further CAs to trust, besides the system's.
    pub trusted_ca: Option<PathBuf>,
    pub client_certificates: Option<Arc<ClientCertificates>>,
    /// Connect to servers without RFC 5746 secure renegotiation.
    pub legacy_renegotiation: bool,
    /// Allow TLS 1.0/1.1 and SHA-1 (OpenSSL security level 0) for old servers.
    pub legacy_versions: bool,
    pub keylog: Option<Arc<KeyLog>>,
    /// Which certificate requests after the first handshake wait for the user
    /// (`--intercept-tls`; see [`crate::hold`]). `None`: none do.
    pub certificate_hold: Option<Arc<dyn CertificateRequestHold>>,
}

/// What to connect to: the name to verify (and send as SNI when it is not an IP).
pub struct UpstreamTarget<'a> {
    pub server_name: &'a str,
    /// Whether to send SNI (a client that sent none should not get one added).
    pub send_sni: bool,
    /// ALPN protocols to offer, most preferred first; empty offers none.
    pub alpn: &'a [&'a [u8]],
    /// Offer the library's default key-exchange groups, hybrid post-quantum first
    /// (OpenSSL 3.5 on), unless this server answered such an offer with a classic
    /// group lately (see [`crate::key_exchange`]); `false` offers classic groups
    /// only, for a client that offered no post-quantum group itself.
    pub post_quantum: bool,
    /// For error messages: `host:port`.
    pub peer_label: &'a str,
    /// The handshake's limits (the proxy's, as they are when it connects).
    pub timeouts: HandshakeTimeouts,
}

pub struct UpstreamTls {
    /// Tells this one from any other made in the process (see [`UpstreamTls::id`]).
    id: u64,
    connector: Connector,
    /// The same, offering classic key-exchange groups only.
    classic_connector: Connector,
    settings: UpstreamTlsSettings,
    classic_servers: ClassicServers,
}

/// A client context and the sessions its connections were given: a session is only
/// offered on a connection of the context that made it.
struct Connector {
    ssl: SslConnector,
    sessions: Arc<SessionCache>,
}

impl UpstreamTls {
    pub fn new(settings: UpstreamTlsSettings) -> Result<Self, TlsError> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(UpstreamTls {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            connector: Self::connector(&settings, None)?,
            classic_connector: Self::connector(&settings, Some(CLASSIC_GROUPS))?,
            settings,
            classic_servers: ClassicServers::default(),
        })
    }

    /// Which settings a connection was made with: a proxy that replaces its
    /// `UpstreamTls` (the user changed the trusted CAs or client certificates) knows
    /// the connections made before by their id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// What it was made with, for making another with some of it changed (which
    /// starts with no kept sessions: none crosses a change of client certificates).
    pub fn settings(&self) -> &UpstreamTlsSettings {
        &self.settings
    }

    fn connector(
        settings: &UpstreamTlsSettings,
        groups: Option<&str>,
    ) -> Result<Connector, TlsError> {
        let mut builder = SslConnector::builder(SslMethod::tls_client())?;
        if let Some(groups) = groups {
            builder.set_groups_list(groups)?;
        }
        if let Some(ca) = &settings.trusted_ca {
            builder.load_verify_locations(Some(ca), None)?;
        }
        builder.set_verify(if settings.verify {
            SslVerifyMode::PEER
        } else {
            SslVerifyMode::NONE
        });
        // Servers often close without close_notify; that is not an attack on HTTP
        // framing, which carries its own lengths.
        builder.set_options(SslOptions::IGNORE_UNEXPECTED_EOF);
        // SslConnector's defaults (SSL_OP_ALL) include LEGACY_SERVER_CONNECT; secure
        // renegotiation is only guaranteed when it is off.
        let legacy_connect =
            SslOptions::from_bits_retain(openssl_sys::SSL_OP_LEGACY_SERVER_CONNECT);
        builder.clear_options(legacy_connect);
        if settings.legacy_renegotiation {
            builder.set_options(legacy_connect | SslOptions::ALLOW_UNSAFE_LEGACY_RENEGOTIATION);
        }
        if settings.legacy_versions {
            builder.set_security_level(0);
            builder.set_min_proto_version(Some(SslVersion::TLS1))?;
        }
        // Read whole socket buffers, not a record header then its body: half the
        // read calls on a large transfer.
        builder.set_read_ahead(true);
        ffi::enable_post_handshake_auth(&mut builder);
        ffi::install_event_callbacks(&mut builder);
        ffi::install_client_certificate_callback(&mut builder);
        if let Some(keylog) = &settings.keylog {
            keylog.install(&mut builder);
        }
        // Sessions are kept in `sessions`, which decides which may be reused; OpenSSL's
        // own client cache would keep them all.
        builder
            .set_session_cache_mode(SslSessionCacheMode::CLIENT | SslSessionCacheMode::NO_INTERNAL);
        let sessions = Arc::new(SessionCache::default());
        let kept = Arc::clone(&sessions);
        builder.set_new_session_callback(move |ssl, session| kept.keep(ssl, session));
        Ok(Connector {
            ssl: builder.build(),
            sessions,
        })
    }

    /// Whether a connection to the server at `peer_label` (`host:port`), asked for
    /// `server_name`, offers classic groups only however the client asked, because
    /// the server chose a classic group before (see [`crate::key_exchange`]).
    pub fn offers_classic_groups_only(&self, peer_label: &str, server_name: &str) -> bool {
        self.classic_servers.chose_classic(peer_label, server_name)
    }

    pub async fn connect<S>(
        &self,
        stream: S,
        target: &UpstreamTarget<'_>,
    ) -> Result<TlsStream<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let is_ip = target.server_name.parse::<IpAddr>().is_ok();
        let classic_from_memory = target.post_quantum
            && self
                .classic_servers
                .chose_classic(target.peer_label, target.server_name);
        let post_quantum = target.post_quantum && !classic_from_memory;
        let connector = if post_quantum {
            &self.connector
        } else {
            &self.classic_connector
        };
        let config = connector
            .ssl
            .configure()?
            .use_server_name_indication(target.send_sni && !is_ip)
            .verify_hostname(self.settings.verify);
        let mut ssl = config.into_ssl(target.server_name)?;
        let alpn = encode_alpn(target.alpn);
        if !alpn.is_empty() {
            ssl.set_alpn_protos(&alpn)?;
        }
        let identity = self
            .settings
            .client_certificates
            .as_ref()
            .and_then(|certs| certs.for_host(target.server_name));
        let session_key = SessionKey::new(
            target.peer_label,
            target.server_name,
            target.send_sni && !is_ip,
            &alpn,
            identity.as_ref(),
        );
        if let Some(session) = connector.sessions.offer(&session_key) {
            ffi::offer_session(&mut ssl, &session)?;
        }
        ssl.set_ex_data(resumption::key_index(), session_key);
        let state = TlsConnectionState::upstream_with_hold(
            identity,
            self.settings.certificate_hold.clone(),
            target.peer_label.to_owned(),
        );
        let handshake = TlsStream::handshake(
            ssl,
            stream,
            Role::Client,
            state,
            target.peer_label.to_owned(),
            target.timeouts,
        )
        .await;
        let connected = match handshake {
            Ok(connected) => connected,
            Err(error) => {
                if classic_from_memory {
                    // Offered classic groups only because of what the server chose
                    // before: it may have changed (to post-quantum groups only, say),
                    // so the next connection offers the client's groups again.
                    self.classic_servers
                        .forget(target.peer_label, target.server_name);
                }
                return Err(error);
            }
        };
        if post_quantum {
            self.classic_servers.learn(
                target.peer_label,
                target.server_name,
                ffi::negotiated_group(connected.ssl()).as_deref(),
            );
        }
        Ok(connected)
    }
}

/// How Periscope talks TLS to clients.
#[derive(Clone, Default)]
pub struct ClientTlsSettings {
    pub client_renegotiation: ClientRenegotiation,
    pub keylog: Option<Arc<KeyLog>>,
}

pub struct ClientTls {
    context: SslContext,
    /// The same, accepting classic key-exchange groups only.
    classic_context: SslContext,
    settings: ClientTlsSettings,
}

/// The ALPN protocol the client leg should agree to, stored per connection for the
/// selection callback.
struct AlpnChoice(Option<Vec<u8>>);

fn alpn_choice_index() -> openssl::ex_data::Index<openssl::ssl::Ssl, AlpnChoice> {
    static INDEX: std::sync::OnceLock<openssl::ex_data::Index<openssl::ssl::Ssl, AlpnChoice>> =
        std::sync::OnceLock::new();
    *INDEX.get_or_init(|| {
        openssl::ssl::Ssl::new_ex_index().expect("OpenSSL could not allocate an ex_data index")
    })
}

impl ClientTls {
    pub fn new(settings: ClientTlsSettings) -> Result<Self, TlsError> {
        Ok(ClientTls {
            context: Self::context(&settings, None)?,
            classic_context: Self::context(&settings, Some(CLASSIC_GROUPS))?,
            settings,
        })
    }

    fn context(settings: &ClientTlsSettings, groups: Option<&str>) -> Result<SslContext, TlsError> {
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
        if let Some(groups) = groups {
            builder.set_groups_list(groups)?;
        }
        // Renegotiating clients must do a full handshake, not resume.
        builder.set_session_id_context(b"periscope")?;
        builder.set_session_cache_mode(SslSessionCacheMode::SERVER);
        let mut options =
            SslOptions::NO_SESSION_RESUMPTION_ON_RENEGOTIATION | SslOptions::IGNORE_UNEXPECTED_EOF;
        match settings.client_renegotiation {
            ClientRenegotiation::Allowed { .. } => {
                options |= SslOptions::from_bits_retain(ffi::SSL_OP_ALLOW_CLIENT_RENEGOTIATION)
            }
            ClientRenegotiation::Refused => options |= SslOptions::NO_RENEGOTIATION,
        }
        builder.set_options(options);
        builder.set_read_ahead(true);
        builder.set_alpn_select_callback(|ssl, client_protocols| {
            let wanted = ssl
                .ex_data(alpn_choice_index())
                .and_then(|choice| choice.0.as_deref());
            match wanted {
                Some(wanted) => find_alpn(client_protocols, wanted).ok_or(AlpnError::NOACK),
                None => Err(AlpnError::NOACK),
            }
        });
        ffi::install_event_callbacks(&mut builder);
        if let Some(keylog) = &settings.keylog {
            keylog.install(&mut builder);
        }
        Ok(builder.build().into_context())
    }

    /// Completes the client's handshake presenting `leaf`, agreeing to `alpn` if the
    /// client offered it; `classic_key_exchange` accepts classic groups only (the
    /// server's leg agreed on one: see [`crate::key_exchange`]).
    pub async fn accept<S>(
        &self,
        stream: S,
        leaf: &LeafCertificate,
        alpn: Option<&[u8]>,
        classic_key_exchange: bool,
        timeouts: HandshakeTimeouts,
    ) -> Result<TlsStream<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let context = if classic_key_exchange {
            &self.classic_context
        } else {
            &self.context
        };
        let mut ssl = openssl::ssl::Ssl::new(context)?;
        ssl.set_certificate(&leaf.certificate)?;
        ssl.set_private_key(&leaf.key)?;
        for cert in &leaf.chain {
            ssl.add_chain_cert(cert.clone())?;
        }
        ssl.set_ex_data(alpn_choice_index(), AlpnChoice(alpn.map(<[u8]>::to_vec)));
        let state = TlsConnectionState::client_leg(self.settings.client_renegotiation);
        TlsStream::handshake(
            ssl,
            stream,
            Role::Server,
            state,
            "the client".to_owned(),
            timeouts,
        )
        .await
    }
}

/// ALPN wire format: each protocol prefixed by its length.
pub fn encode_alpn(protocols: &[&[u8]]) -> Vec<u8> {
    let mut wire = Vec::new();
    for protocol in protocols {
        if let Ok(len) = u8::try_from(protocol.len()) {
            wire.push(len);
            wire.extend_from_slice(protocol);
        }
    }
    wire
}

/// Finds `wanted` in the client's wire-format list, returning the slice inside it
/// (OpenSSL requires the answer to point into the client's list).
fn find_alpn<'a>(client_protocols: &'a [u8], wanted: &[u8]) -> Option<&'a [u8]> {
    let mut rest = client_protocols;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        let protocol = tail.get(..len)?;
        if protocol == wanted {
            return Some(protocol);
        }
        rest = &tail[len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_lists_encode_and_are_searched_in_wire_format() {
        let wire = encode_alpn(&[b"h2", b"http/1.1"]);
        assert_eq!(wire, b"\x02h2\x08http/1.1");
        assert_eq!(find_alpn(&wire, b"http/1.1"), Some(&b"http/1.1"[..]));
        assert_eq!(find_alpn(&wire, b"h3"), None);
        assert_eq!(find_alpn(b"\x09short", b"short"), None, "truncated list");
    }
}
