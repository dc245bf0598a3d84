//! Periscope's TLS layer: the CA and its leaf certificates, OpenSSL contexts for both
//! legs, the async TLS stream, and the capture of post-handshake events.
//!
//! OpenSSL is used on both legs because it is the TLS library that renegotiates and
//! answers post-handshake certificate requests as a client. Every `unsafe` call into
//! it lives in the private `ffi` module (the only place the workspace allows
//! `unsafe`); what other code needs of it is safe API: [`PostHandshake`],
//! [`alert::description`].

pub mod alert;
pub mod ca;
pub mod certs;
pub mod client_certs;
pub mod context;
pub mod error;
pub mod events;
mod ffi;
pub mod hold;
pub mod key_exchange;
pub mod keylog;
pub mod post_handshake;
mod resumption;
pub mod state;
pub mod stream;

pub use ca::{CertificateAuthority, CertificateForm, LeafCertificate};
pub use client_certs::{ClientCertificates, ClientIdentity};
pub use context::{ClientTls, ClientTlsSettings, UpstreamTarget, UpstreamTls, UpstreamTlsSettings};
pub use error::{ClientCertError, TlsError};
pub use events::{TlsEventTap, EVENT_QUEUE_CAPACITY};
pub use hold::{CertificateRequestHold, ClientCertificate, HeldCertificateRequest};
pub use keylog::KeyLog;
pub use post_handshake::{offer_post_handshake_auth, PostHandshake};
pub use state::{ClientRenegotiation, FailureContext, HandshakePhase, TlsConnectionState};
pub use stream::{HandshakeTimeouts, TlsStream};

/// The OpenSSL Periscope runs on ("OpenSSL 3.0.19 27 Jan 2026"): the system's
/// libssl, or the one built in with the `vendored` feature.
pub fn openssl_version() -> &'static str {
    openssl::version::version()
}
