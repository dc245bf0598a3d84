//! TLS errors in the words a user needs: which host, which phase, what the peer said,
//! and what to do about it.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use openssl::ssl::{self, SslRef};
use openssl::x509::X509VerifyResult;
use periscope_model::Direction;

use crate::alert;
use crate::state::{AlertRecord, FailureContext, HandshakePhase};

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

    #[error("{}", client_certificate_message(peer, *phase, ca_names, presented.as_deref(), alert.as_ref()))]
    ClientCertificateRequired {
        peer: String,
        phase: HandshakePhase,
        ca_names: Vec<String>,
        presented: Option<String>,
        /// The alert the server ended the connection with; `None` when it just
        /// closed it.
        alert: Option<AlertRecord>,
    },

    #[error(
        "{peer} asked for a client certificate during {}; the request was held for the user \
         (--intercept-tls) and abandoned, so the handshake was ended",
        phase.describe()
    )]
    CertificateRequestAbandoned { peer: String, phase: HandshakePhase },

    #[error("{peer} does not support secure renegotiation (RFC 5746), so the connection was refused; start Periscope with --legacy-renegotiation to allow such servers")]
    InsecureRenegotiation { peer: String },

    #[error("{}", alert_message(peer, *phase, *direction, description))]
    Alert {
        peer: String,
        phase: HandshakePhase,
        /// The AlertDescription; see [`crate::alert`] for the ones Periscope tells apart.
        code: u8,
        /// `Received`: the peer sent it; `Sent`: Periscope did.
        direction: Direction,
        /// libssl's name for `code`.
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

/// A copy for a second owner (the error page and the flow both keep one); an I/O
/// error keeps its kind and text.
impl Clone for TlsError {
    fn clone(&self) -> Self {
        match self {
            TlsError::HandshakeTimeout { peer, timeout } => TlsError::HandshakeTimeout {
                peer: peer.clone(),
                timeout: *timeout,
            },
            TlsError::RenegotiationTimeout {
                peer,
                phase,
                timeout,
            } => TlsError::RenegotiationTimeout {
                peer: peer.clone(),
                phase: *phase,
                timeout: *timeout,
            },
            TlsError::CertificateVerification { peer, reason } => {
                TlsError::CertificateVerification {
                    peer: peer.clone(),
                    reason: reason.clone(),
                }
            }
            TlsError::ClientCertificateRequired {
                peer,
                phase,
                ca_names,
                presented,
                alert,
            } => TlsError::ClientCertificateRequired {
                peer: peer.clone(),
                phase: *phase,
                ca_names: ca_names.clone(),
                presented: presented.clone(),
                alert: alert.clone(),
            },
            TlsError::CertificateRequestAbandoned { peer, phase } => {
                TlsError::CertificateRequestAbandoned {
                    peer: peer.clone(),
                    phase: *phase,
                }
            }
            TlsError::InsecureRenegotiation { peer } => {
                TlsError::InsecureRenegotiation { peer: peer.clone() }
            }
            TlsError::Alert {
                peer,
                phase,
                code,
                direction,
                description,
            } => TlsError::Alert {
                peer: peer.clone(),
                phase: *phase,
                code: *code,
                direction: *direction,
                description: description.clone(),
            },
            TlsError::Protocol {
                peer,
                phase,
                detail,
            } => TlsError::Protocol {
                peer: peer.clone(),
                phase: *phase,
                detail: detail.clone(),
            },
            TlsError::Setup(stack) => TlsError::Setup(stack.clone()),
            TlsError::Io(error) => TlsError::Io(io::Error::new(error.kind(), error.to_string())),
        }
    }
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
        if error.is_some_and(refused_legacy_renegotiation) {
            return TlsError::InsecureRenegotiation { peer };
        }
        let detail = error.map(describe_ssl_error).unwrap_or_default();
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
        if context.certificate_request_abandoned {
            // Whatever OpenSSL or the server said next followed from it.
            return Some(TlsError::CertificateRequestAbandoned {
                peer: peer.to_owned(),
                phase,
            });
        }
        if let Some(request) = &context.certificate_request {
            let rejected = context
                .alert_received
                .as_ref()
                .is_some_and(|alert| alert.fatal && alert::refuses_client_certificate(alert.code));
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
                    alert: context.alert_received.clone(),
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
                code: alert.code,
                direction: alert.direction,
                description: alert.description.clone(),
            })
    }

    /// The code of the TLS alert this error is about, when it is about one.
    pub fn alert_code(&self) -> Option<u8> {
        match self {
            TlsError::Alert { code, .. } => Some(*code),
            TlsError::ClientCertificateRequired { alert, .. } => alert.as_ref().map(|a| a.code),
            _ => None,
        }
    }

    /// The code of the alert the peer sent, when this error is one.
    fn alert_received(&self) -> Option<u8> {
        match self {
            TlsError::Alert {
                code,
                direction: Direction::Received,
                ..
            } => Some(*code),
            _ => None,
        }
    }

    /// The server refused every ALPN protocol offered (alert no_application_protocol):
    /// asking again with other protocols may succeed.
    pub fn is_no_application_protocol(&self) -> bool {
        self.alert_received() == Some(alert::NO_APPLICATION_PROTOCOL)
    }

    /// The peer did not accept the certificate it was shown (unknown_ca,
    /// bad_certificate, certificate_unknown, unsupported_certificate): on the client
    /// leg, a client that does not trust Periscope's CA.
    pub fn is_certificate_rejection(&self) -> bool {
        self.alert_received()
            .is_some_and(alert::distrusts_certificate)
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

/// libssl's reason code for a server without RFC 5746 (ssl/sslerr.h:
/// SSL_R_UNSAFE_LEGACY_RENEGOTIATION_DISABLED; openssl-sys has no constant for it).
const SSL_R_UNSAFE_LEGACY_RENEGOTIATION_DISABLED: i32 = 338;
/// ERR_LIB_SSL.
const ERR_LIB_SSL: i32 = 20;

/// Whether OpenSSL refused the handshake because the server lacks secure renegotiation.
fn refused_legacy_renegotiation(error: &ssl::Error) -> bool {
    error.ssl_error().is_some_and(|stack| {
        stack.errors().iter().any(|e| {
            e.library_code() == ERR_LIB_SSL
                && e.reason_code() == SSL_R_UNSAFE_LEGACY_RENEGOTIATION_DISABLED
        })
    })
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

fn alert_message(
    peer: &str,
    phase: HandshakePhase,
    direction: Direction,
    description: &str,
) -> String {
    let phase = phase.describe();
    match direction {
        Direction::Received => {
            format!("{peer} sent the TLS alert \"{description}\" during {phase}")
        }
        Direction::Sent => {
            format!("Periscope sent the TLS alert \"{description}\" to {peer} during {phase}")
        }
    }
}

fn client_certificate_message(
    peer: &str,
    phase: HandshakePhase,
    ca_names: &[String],
    presented: Option<&str>,
    alert: Option<&AlertRecord>,
) -> String {
    let mut message = format!(
        "{peer} required a client certificate during {}",
        phase.describe()
    );
    match alert {
        Some(alert) => message.push_str(&format!(
            " and ended the connection with the alert \"{}\".",
            alert.description
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::CertificateRequestRecord;

    const SERVER: &str = "origin.example:443";

    fn received(code: u8, fatal: bool, phase: HandshakePhase) -> AlertRecord {
        AlertRecord {
            direction: Direction::Received,
            fatal,
            code,
            description: alert::description(code),
            phase,
        }
    }

    fn after(alert: AlertRecord) -> FailureContext {
        FailureContext {
            phase: Some(alert.phase),
            alert_received: Some(alert),
            ..FailureContext::default()
        }
    }

    fn certificate_request(phase: HandshakePhase) -> CertificateRequestRecord {
        CertificateRequestRecord {
            ca_names: vec!["CN=Client CA".into()],
            post_handshake: false,
            phase,
            presented: None,
        }
    }

    #[test]
    fn a_server_refusing_every_protocol_offered_is_told_apart_by_its_alert_code() {
        let context = after(received(
            alert::NO_APPLICATION_PROTOCOL,
            true,
            HandshakePhase::Initial,
        ));
        let error = TlsError::from_context(SERVER, &context).expect("explained");
        assert!(error.is_no_application_protocol(), "{error:?}");
        assert!(!error.is_certificate_rejection());
        assert_eq!(error.alert_code(), Some(120));
        assert!(
            matches!(
                error,
                TlsError::Alert {
                    direction: Direction::Received,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "origin.example:443 sent the TLS alert \"no application protocol\" during the TLS handshake"
        );
    }

    #[test]
    fn a_client_that_does_not_trust_the_certificate_is_a_certificate_rejection() {
        for code in [
            alert::UNKNOWN_CA,
            alert::BAD_CERTIFICATE,
            alert::CERTIFICATE_UNKNOWN,
            alert::UNSUPPORTED_CERTIFICATE,
        ] {
            let context = after(received(code, true, HandshakePhase::Initial));
            let error = TlsError::from_context("the client", &context).expect("explained");
            assert!(error.is_certificate_rejection(), "{code}: {error}");
            assert!(!error.is_no_application_protocol());
            assert_eq!(error.alert_code(), Some(code));
        }
        let expired = after(received(
            alert::CERTIFICATE_EXPIRED,
            true,
            HandshakePhase::Initial,
        ));
        let error = TlsError::from_context("the client", &expired).expect("explained");
        assert!(
            !error.is_certificate_rejection(),
            "an expired certificate is not a matter of trust: {error}"
        );
    }

    #[test]
    fn an_alert_periscope_sent_is_not_the_peers_complaint() {
        let error = TlsError::Alert {
            peer: "the client".into(),
            phase: HandshakePhase::Initial,
            code: alert::UNKNOWN_CA,
            direction: Direction::Sent,
            description: alert::description(alert::UNKNOWN_CA),
        };
        assert!(!error.is_certificate_rejection());
        assert_eq!(error.alert_code(), Some(alert::UNKNOWN_CA));
        assert_eq!(
            error.to_string(),
            "Periscope sent the TLS alert \"unknown CA\" to the client during the TLS handshake"
        );
    }

    #[test]
    fn a_warning_alert_explains_nothing() {
        let context = after(received(
            alert::NO_RENEGOTIATION,
            false,
            HandshakePhase::Established,
        ));
        assert!(TlsError::from_context(SERVER, &context).is_none());
    }

    #[test]
    fn a_handshake_failure_after_a_certificate_request_names_the_request_and_keeps_the_alert() {
        let context = FailureContext {
            certificate_request: Some(certificate_request(HandshakePhase::Renegotiation)),
            ..after(received(
                alert::HANDSHAKE_FAILURE,
                true,
                HandshakePhase::Renegotiation,
            ))
        };
        let error = TlsError::from_context(SERVER, &context).expect("explained");
        assert!(
            matches!(error, TlsError::ClientCertificateRequired { .. }),
            "{error:?}"
        );
        assert_eq!(error.alert_code(), Some(alert::HANDSHAKE_FAILURE));
        assert!(!error.is_certificate_rejection());
        let text = error.to_string();
        assert!(
            text.contains("during a TLS renegotiation")
                && text.contains("with the alert \"handshake failure\"")
                && text.contains("CN=Client CA"),
            "{text}"
        );
    }

    #[test]
    fn a_server_that_closes_during_a_renegotiation_for_a_certificate_has_no_alert_code() {
        let context = FailureContext {
            phase: Some(HandshakePhase::Renegotiation),
            certificate_request: Some(certificate_request(HandshakePhase::Renegotiation)),
            ..FailureContext::default()
        };
        let error = TlsError::from_context(SERVER, &context).expect("explained");
        assert!(
            matches!(
                error,
                TlsError::ClientCertificateRequired { alert: None, .. }
            ),
            "{error:?}"
        );
        assert_eq!(error.alert_code(), None);
        assert!(error.to_string().contains("closed the connection"));
    }
}
