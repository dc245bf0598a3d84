//! TLS errors in the words a user needs: which host, which phase, what the peer said,
//! and what to do about it.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use openssl::ssl::{self, SslRef};
use openssl::x509::X509VerifyResult;

use crate::state::{FailureContext, HandshakePhase};

#[derive(thiserror::Error, Debug)]
pub enum ClientCertError {
    #[error("cannot read client certificate {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("client certificate {path} is not usable: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

#[derive(thiserror::Error, Debug)]
pub enum TlsError {
    #[error("the TLS handshake with {peer} did not complete within {} s", timeout.as_secs_f64())]
    HandshakeTimeout { peer: String, timeout: Duration },

    #[error(
        "{peer} started {} and did not complete it within {} s; the connection was abandoned",
        phase.describe(),
        timeout.as_secs_f64()
    )]
    RenegotiationTimeout {
        peer: String,
        phase: HandshakePhase,
        timeout: Duration,
    },

    #[error("the certificate of {peer} failed verification: {reason} (use --upstream-trusted-ca FILE to trust its CA, or -k/--ssl-insecure to skip verification)")]
    CertificateVerification { peer: String, reason: String },

    #[error("{}", client_certificate_message(peer, *phase, ca_names, presented.as_deref(), alert.as_deref()))]
    ClientCertificateRequired {
        peer: String,
        phase: HandshakePhase,
        ca_names: Vec<String>,
        presented: Option<String>,
        alert: Option<String>,
    },

    #[error("{peer} does not support secure renegotiation (RFC 5746), so the connection was refused; start Periscope with --legacy-renegotiation to allow such servers")]
    InsecureRenegotiation { peer: String },

    #[error("{peer} sent the TLS alert \"{description}\" during {}", phase.describe())]
    Alert {
        peer: String,
        phase: HandshakePhase,
        description: String,
    },

    #[error("TLS failure with {peer} during {}: {detail}", phase.describe())]
    Protocol {
        peer: String,
        phase: HandshakePhase,
        detail: String,
    },

    #[error("TLS setup failed: {0}")]
    Setup(#[from] openssl::error::ErrorStack),

    #[error("{0}")]
    Io(#[from] io::Error),
}

impl TlsError {
    /// Explains a failure of `ssl` using what its callbacks recorded.
    pub(crate) fn classify(
        peer: &str,
        ssl: &SslRef,
        context: &FailureContext,
        error: Option<&ssl::Error>,
    ) -> TlsError {
        let peer = peer.to_owned();
        let phase = context.phase.unwrap_or(HandshakePhase::Established);
        let verify = ssl.verify_result();
        if phase == HandshakePhase::Initial && verify != X509VerifyResult::OK {
            return TlsError::CertificateVerification {
                peer,
                reason: verify.error_string().to_owned(),
            };
        }
        let detail = error.map(describe_ssl_error).unwrap_or_default();
        if detail.contains("unsafe legacy renegotiation disabled") {
            return TlsError::InsecureRenegotiation { peer };
        }
        if let Some(explained) = Self::from_context(&peer, context) {
            return explained;
        }
        if let Some(io) = error.and_then(|e| e.io_error()) {
            return TlsError::Io(io::Error::new(io.kind(), io.to_string()));
        }
        TlsError::Protocol {
            peer,
            phase,
            detail: if detail.is_empty() {
                "the connection closed".into()
            } else {
                detail
            },
        }
    }

    /// What the events of a connection say about why it failed, when they say
    /// anything: the server's fatal alert, and whether it followed a certificate
    /// request. In TLS 1.3 a server rejects our certificate only after our side of the
    /// handshake is done, so this is also how a connection that died "for no reason"
    /// right after connecting gets its explanation.
    pub fn from_context(peer: &str, context: &FailureContext) -> Option<TlsError> {
        let phase = context.phase.unwrap_or(HandshakePhase::Established);
        if let Some(request) = &context.certificate_request {
            let rejected = context
                .alert_received
                .as_ref()
                .is_some_and(|alert| alert.fatal && is_certificate_alert(alert.code));
            let closed_during_request = context.alert_received.is_none()
                && matches!(
                    phase,
                    HandshakePhase::Renegotiation | HandshakePhase::PostHandshakeAuth
                );
            if rejected || closed_during_request {
                return Some(TlsError::ClientCertificateRequired {
                    peer: peer.to_owned(),
                    phase: request.phase,
                    ca_names: request.ca_names.clone(),
                    presented: request.presented.clone(),
                    alert: context
                        .alert_received
                        .as_ref()
                        .map(|a| a.description.clone()),
                });
            }
        }
        context
            .alert_received
            .as_ref()
            .filter(|a| a.fatal)
            .map(|alert| TlsError::Alert {
                peer: peer.to_owned(),
                phase: alert.phase,
                description: alert.description.clone(),
            })
    }

    /// Whether the error means "waited too long" (the proxy answers 504) rather than
    /// "failed" (502).
    pub fn is_timeout(&self) -> bool {
        match self {
            TlsError::HandshakeTimeout { .. } | TlsError::RenegotiationTimeout { .. } => true,
            TlsError::Io(e) => e.kind() == io::ErrorKind::TimedOut,
            _ => false,
        }
    }

    /// Finds a `TlsError` in an error's source chain (hyper wraps our I/O errors).
    pub fn find_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a TlsError> {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = current {
            if let Some(tls) = e.downcast_ref::<TlsError>() {
                return Some(tls);
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                if let Some(tls) = io
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<TlsError>())
                {
                    return Some(tls);
                }
            }
            current = e.source();
        }
        None
    }

    pub(crate) fn into_io(self) -> io::Error {
        let kind = match &self {
            TlsError::HandshakeTimeout { .. } | TlsError::RenegotiationTimeout { .. } => {
                io::ErrorKind::TimedOut
            }
            TlsError::Io(e) => e.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

/// Alerts a server sends when it does not accept the client's certificate (or its
/// absence).
fn is_certificate_alert(code: u8) -> bool {
    matches!(code, 40 | 42 | 43 | 44 | 45 | 46 | 48 | 49 | 116)
}

fn describe_ssl_error(error: &ssl::Error) -> String {
    if let Some(stack) = error.ssl_error() {
        let reasons: Vec<String> = stack
            .errors()
            .iter()
            .map(|e| e.reason().unwrap_or("unknown error").to_owned())
            .collect();
        if !reasons.is_empty() {
            return reasons.join("; ");
        }
    }
    if let Some(io) = error.io_error() {
        return io.to_string();
    }
    error.to_string()
}

fn client_certificate_message(
    peer: &str,
    phase: HandshakePhase,
    ca_names: &[String],
    presented: Option<&str>,
    alert: Option<&str>,
) -> String {
    let mut message = format!(
        "{peer} required a client certificate during {}",
        phase.describe()
    );
    match alert {
        Some(alert) => message.push_str(&format!(
            " and ended the connection with the alert \"{alert}\"."
        )),
        None => message.push_str(" and closed the connection."),
    }
    match presented {
        None => {
            message.push_str(" Periscope had no client certificate for this host and sent none.")
        }
        Some(subject) => message.push_str(&format!(
            " Periscope presented {subject}, which the server did not accept."
        )),
    }
    if ca_names.is_empty() {
        message.push_str(" The server did not name the certificate authorities it accepts.");
    } else {
        message.push_str(" The server accepts certificates issued by: ");
        message.push_str(&ca_names.join("; "));
        message.push('.');
    }
    message.push_str(
        " To present a certificate, start Periscope with --client-certs FILE.pem \
         (certificate and private key in one PEM file, used for every host) or \
         --client-certs DIR (a directory of <host>.pem files).",
    );
    message
}
