//! Upstream TLS session resumption: the sessions servers give Periscope, kept per
//! server and offered on the next connection to it, so that a client's new
//! connection does not cost a full handshake (and a certificate verification) on the
//! server leg as well as on its own.
//!
//! What a session may carry decides which ones are kept. A session is kept only from
//! a connection on which the server never asked for a client certificate, never
//! renegotiated and never started post-handshake authentication: such a session may
//! stand for a certificate Periscope presented, and a server resuming it would skip the
//! certificate request it renegotiates for (the very exchange Periscope exists to
//! show). This is checked when the session arrives and again before it is offered,
//! since the connection may have done any of these in between. Sessions are keyed by
//! everything that makes one connection to a server differ from another — the address,
//! the name verified and sent as SNI, the ALPN offered and the `--client-certs`
//! identity for the host — so that a session never crosses identities.
//!
//! Renegotiations never offer a session whatever the first handshake did (see
//! `TlsConnectionState::on_client_state_transition`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::ssl::{Ssl, SslRef, SslSession, SslVersion};

use crate::client_certs::ClientIdentity;
use crate::ffi;
use crate::state::TlsConnectionState;

/// How many servers' sessions are kept; the server whose sessions arrived first goes.
const SERVERS_KEPT: usize = 1024;

/// Sessions kept per server: concurrent new connections to one server each take one
/// (TLS 1.3 sessions are offered once: OpenSSL servers, like many, issue two tickets
/// per connection, and a ticket used twice may be refused or tracked).
const SESSIONS_PER_SERVER: usize = 4;

/// Everything that must match for a session to be offered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SessionKey {
    /// `host:port` connected to.
    peer: String,
    server_name: String,
    send_sni: bool,
    /// ALPN offered, in wire format.
    alpn: Vec<u8>,
    /// The identity `--client-certs` holds for the host, by address: identities are
    /// loaded once and live as long as the proxy.
    identity: Option<usize>,
}

impl SessionKey {
    pub(crate) fn new(
        peer: &str,
        server_name: &str,
        send_sni: bool,
        alpn: &[u8],
        identity: Option<&Arc<ClientIdentity>>,
    ) -> Self {
        SessionKey {
            peer: peer.to_owned(),
            server_name: server_name.to_owned(),
            send_sni,
            alpn: alpn.to_vec(),
            identity: identity.map(|identity| Arc::as_ptr(identity) as usize),
        }
    }
}

struct KeptSession {
    session: SslSession,
    /// The connection the session came from, to check again before offering it.
    origin: Arc<TlsConnectionState>,
}

/// The sessions of one upstream context (sessions only resume on the context that
/// made them).
#[derive(Default)]
pub(crate) struct SessionCache {
    inner: Mutex<Servers>,
}

#[derive(Default)]
struct Servers {
    sessions: HashMap<SessionKey, VecDeque<KeptSession>>,
    /// Servers in the order their sessions first arrived, to bound the map.
    arrival: VecDeque<SessionKey>,
}

impl SessionCache {
    /// Keeps `session`, which the connection `ssl` received, when that connection may
    /// have its sessions reused.
    pub(crate) fn keep(&self, ssl: &SslRef, session: SslSession) {
        let (Some(key), Some(origin)) = (ssl.ex_data(key_index()), ffi::state_of(ssl)) else {
            return;
        };
        if !origin.session_may_be_reused() {
            return;
        }
        let origin = Arc::clone(origin);
        let mut servers = self.lock();
        if !servers.sessions.contains_key(key) {
            if servers.arrival.len() >= SERVERS_KEPT {
                if let Some(oldest) = servers.arrival.pop_front() {
                    servers.sessions.remove(&oldest);
                }
            }
            servers.arrival.push_back(key.clone());
        }
        let kept = servers.sessions.entry(key.clone()).or_default();
        if kept.len() >= SESSIONS_PER_SERVER {
            kept.pop_front();
        }
        kept.push_back(KeptSession { session, origin });
    }

    /// A session to offer to the server `key` names, newest first. TLS 1.3 sessions
    /// are handed out once; a TLS 1.2 session stays for the next connection too.
    pub(crate) fn offer(&self, key: &SessionKey) -> Option<SslSession> {
        let mut servers = self.lock();
        let kept = servers.sessions.get_mut(key)?;
        let now = unix_now();
        while let Some(candidate) = kept.pop_back() {
            let session = &candidate.session;
            let expired = session.time().saturating_add(session.timeout()) <= now;
            if expired || !candidate.origin.session_may_be_reused() {
                continue;
            }
            let offered = candidate.session.clone();
            if session.protocol_version() != SslVersion::TLS1_3 {
                kept.push_back(candidate);
            }
            return Some(offered);
        }
        None
    }

    fn lock(&self) -> MutexGuard<'_, Servers> {
        // Every update is a single map or queue operation: a poisoned lock is usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    fn kept(&self, key: &SessionKey) -> usize {
        self.lock().sessions.get(key).map_or(0, VecDeque::len)
    }
}

/// Where a connection's [`SessionKey`] is kept for the new-session callback.
pub(crate) fn key_index() -> openssl::ex_data::Index<Ssl, SessionKey> {
    static INDEX: OnceLock<openssl::ex_data::Index<Ssl, SessionKey>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("OpenSSL could not allocate an ex_data index"))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ssl::{SslConnector, SslMethod};

    fn key(identity: Option<usize>) -> SessionKey {
        SessionKey {
            peer: "example.test:443".into(),
            server_name: "example.test".into(),
            send_sni: true,
            alpn: b"\x08http/1.1".to_vec(),
            identity,
        }
    }

    /// A connection carrying `key`, as `UpstreamTls::connect` prepares one.
    fn connection(key: &SessionKey, state: Arc<TlsConnectionState>) -> Ssl {
        let connector = SslConnector::builder(SslMethod::tls_client())
            .unwrap()
            .build();
        let mut ssl = connector
            .configure()
            .unwrap()
            .into_ssl("example.test")
            .unwrap();
        ssl.set_ex_data(key_index(), key.clone());
        ffi::attach_state(&mut ssl, state);
        ssl
    }

    /// A TLS 1.2 session from a real handshake with a server that issues tickets.
    fn session() -> SslSession {
        use openssl::ssl::{SslAcceptor, SslVerifyMode};
        use std::os::unix::net::UnixStream;
        static SESSION: OnceLock<Vec<u8>> = OnceLock::new();
        let der = SESSION.get_or_init(|| {
            let confdir = tempfile::tempdir().unwrap();
            let ca = crate::CertificateAuthority::load_or_create(confdir.path()).unwrap();
            let leaf = ca.leaf_for("example.test", &[]).unwrap();
            let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
            acceptor.set_certificate(&leaf.certificate).unwrap();
            acceptor.set_private_key(&leaf.key).unwrap();
            acceptor
                .set_max_proto_version(Some(SslVersion::TLS1_2))
                .unwrap();
            let acceptor = acceptor.build();
            let (client_end, server_end) = UnixStream::pair().unwrap();
            let server = std::thread::spawn(move || {
                let mut tls = acceptor.accept(server_end).unwrap();
                let _ = std::io::Read::read(&mut tls, &mut [0u8; 1]);
            });
            let mut connector = SslConnector::builder(SslMethod::tls_client()).unwrap();
            connector.set_verify(SslVerifyMode::NONE);
            let tls = connector
                .build()
                .connect("example.test", client_end)
                .unwrap();
            let der = tls.ssl().session().unwrap().to_der().unwrap();
            drop(tls);
            server.join().unwrap();
            der
        });
        SslSession::from_der(der).unwrap()
    }

    #[test]
    fn a_session_is_offered_only_for_the_same_server_and_identity() {
        let cache = SessionCache::default();
        let ssl = connection(&key(Some(1)), TlsConnectionState::upstream(None));
        cache.keep(&ssl, session());
        assert!(cache.offer(&key(Some(2))).is_none(), "another identity");
        assert!(cache.offer(&key(None)).is_none(), "no identity");
        let mut other = key(Some(1));
        other.alpn = b"\x02h2".to_vec();
        assert!(cache.offer(&other).is_none(), "another ALPN");
        assert!(cache.offer(&key(Some(1))).is_some());
        assert!(cache.offer(&key(Some(1))).is_some(), "TLS 1.2: kept");
    }

    #[test]
    fn a_session_from_a_connection_that_saw_a_certificate_request_is_not_kept() {
        let cache = SessionCache::default();
        let state = TlsConnectionState::upstream(None);
        state.record_certificate_request_for_tests();
        let ssl = connection(&key(None), state);
        cache.keep(&ssl, session());
        assert_eq!(cache.kept(&key(None)), 0);
    }

    #[test]
    fn a_session_whose_connection_later_saw_a_certificate_request_is_not_offered() {
        let cache = SessionCache::default();
        let state = TlsConnectionState::upstream(None);
        let ssl = connection(&key(None), Arc::clone(&state));
        cache.keep(&ssl, session());
        assert_eq!(cache.kept(&key(None)), 1);
        state.record_certificate_request_for_tests();
        assert!(cache.offer(&key(None)).is_none());
    }

    #[test]
    fn the_cache_keeps_a_bounded_number_of_servers_and_sessions() {
        let cache = SessionCache::default();
        for server in 0..SERVERS_KEPT + 10 {
            let mut key = key(None);
            key.peer = format!("host-{server}:443");
            let ssl = connection(&key, TlsConnectionState::upstream(None));
            for _ in 0..SESSIONS_PER_SERVER + 2 {
                cache.keep(&ssl, session());
            }
        }
        let servers = cache.lock();
        assert_eq!(servers.sessions.len(), SERVERS_KEPT);
        assert_eq!(servers.arrival.len(), SERVERS_KEPT);
        assert!(servers
            .sessions
            .values()
            .all(|kept| kept.len() == SESSIONS_PER_SERVER));
    }
}
