//! Holding a server's certificate request for the user (`--intercept-tls`).
//!
//! When a server asks for a client certificate after the first handshake (a TLS 1.2
//! renegotiation, TLS 1.3 post-handshake authentication), Periscope normally answers
//! at once with the `--client-certs` identity for the host, or an empty Certificate.
//! With a [`CertificateRequestHold`] in [`crate::UpstreamTlsSettings`], it can instead
//! pause the handshake at that point and hand the user a [`HeldCertificateRequest`];
//! the server and the exchange wait until the user answers it.
//!
//! How the pause works: OpenSSL's certificate callback returns -1, which suspends the
//! handshake (`SSL_ERROR_WANT_X509_LOOKUP`) and makes every later `SSL_read` and
//! `SSL_write` call it again. [`crate::TlsStream`] turns that error into `Pending` and
//! parks its task's waker with the connection; [`HeldCertificateRequest::answer`] (or
//! dropping the request) wakes it, and the callback's next run installs what the user
//! chose and lets the handshake go on. The renegotiation timeout does not run while the
//! request is held: the user's time is not the server's delay.

use std::fmt;
use std::sync::{Arc, Weak};

use periscope_model::FlowId;

use crate::client_certs::ClientIdentity;
use crate::state::TlsConnectionState;

/// Which certificate to present for a held request.
#[derive(Clone)]
pub enum ClientCertificate {
    /// The `--client-certs` identity for the host, or an empty Certificate when there
    /// is none (what Periscope presents when it does not hold requests).
    Configured,
    /// An empty Certificate.
    None,
    /// This identity, for example one loaded from a PEM file the user named
    /// ([`ClientIdentity::load`]).
    Identity(Arc<ClientIdentity>),
}

impl ClientCertificate {
    /// How the timeline says it (see `TlsEventKind::CertificateRequestHeld`).
    pub(crate) fn describe(&self) -> String {
        match self {
            ClientCertificate::Configured => "the configured certificate".to_owned(),
            ClientCertificate::None => "no certificate".to_owned(),
            ClientCertificate::Identity(identity) => identity.source.display().to_string(),
        }
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCertificate::Configured => f.write_str("Configured"),
            ClientCertificate::None => f.write_str("None"),
            ClientCertificate::Identity(identity) => f
                .debug_tuple("Identity")
                .field(&identity.subject)
                .field(&identity.source)
                .finish(),
        }
    }
}

/// Decides which certificate requests wait for the user, and receives them.
pub trait CertificateRequestHold: Send + Sync {
    /// Whether to hold this request. Called from OpenSSL's certificate callback, on the
    /// task that drives the connection, for requests after the first handshake only;
    /// it must not block. `owners`: the flows in flight on the connection (the owners
    /// of its live taps, see [`TlsConnectionState::tap_for`]).
    fn should_hold(&self, owners: &[FlowId]) -> bool;

    /// Receives a request `should_hold` chose to hold. Called in the same place, so it
    /// must not block either: hand the request over (to the console, the API) and
    /// return. It may be answered from any thread, at once or much later.
    fn held(&self, request: HeldCertificateRequest);
}

/// A server's certificate request (during a renegotiation or TLS 1.3 post-handshake
/// authentication) that waits for the user; the server and the exchange wait meanwhile.
///
/// Dropping it unanswered abandons the handshake: the connection fails with
/// [`crate::TlsError::CertificateRequestAbandoned`] (a killed flow does this).
pub struct HeldCertificateRequest {
    /// The CAs the server accepts, as it named them (empty: any).
    pub ca_names: Vec<String>,
    /// TLS 1.3 post-handshake authentication; `false`: a TLS 1.2 renegotiation.
    pub post_handshake: bool,
    /// The flows in flight on the connection when the request arrived.
    pub owners: Vec<FlowId>,
    /// The server (`host:port`).
    pub peer: String,
    /// The subject of the `--client-certs` identity for this host: what
    /// [`ClientCertificate::Configured`] presents. `None`: it presents an empty
    /// Certificate.
    pub configured: Option<String>,
    answer_to: Option<AnswerTo>,
}

/// Where the answer goes: the connection's state, if the connection still exists, and
/// which of its requests this is (answers are applied to that request only).
struct AnswerTo {
    connection: Weak<TlsConnectionState>,
    request: u64,
}

impl HeldCertificateRequest {
    pub(crate) fn new(
        connection: &Arc<TlsConnectionState>,
        request: u64,
        ca_names: Vec<String>,
        post_handshake: bool,
        owners: Vec<FlowId>,
        peer: String,
        configured: Option<String>,
    ) -> Self {
        HeldCertificateRequest {
            ca_names,
            post_handshake,
            owners,
            peer,
            configured,
            answer_to: Some(AnswerTo {
                connection: Arc::downgrade(connection),
                request,
            }),
        }
    }

    /// Presents `choice` and lets the handshake go on. Does nothing when the
    /// connection is gone.
    pub fn answer(mut self, choice: ClientCertificate) {
        if let Some(to) = self.answer_to.take() {
            to.settle(Some(choice));
        }
    }
}

impl AnswerTo {
    fn settle(self, choice: Option<ClientCertificate>) {
        if let Some(connection) = self.connection.upgrade() {
            connection.settle_held_request(self.request, choice);
        }
    }
}

impl Drop for HeldCertificateRequest {
    fn drop(&mut self) {
        if let Some(to) = self.answer_to.take() {
            to.settle(None);
        }
    }
}

impl fmt::Debug for HeldCertificateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldCertificateRequest")
            .field("ca_names", &self.ca_names)
            .field("post_handshake", &self.post_handshake)
            .field("owners", &self.owners)
            .field("peer", &self.peer)
            .field("configured", &self.configured)
            .finish_non_exhaustive()
    }
}
