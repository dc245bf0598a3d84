//! Why an exchange failed, in the words the client's error page and the flow use.

use std::io;
use std::time::Duration;

use http::StatusCode;
use periscope_flow::FlowErrorKind;
use periscope_tls::{TlsConnectionState, TlsError};

#[derive(thiserror::Error, Debug)]
pub enum UpstreamError {
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },

    #[error("cannot connect to {target}: {source}")]
    Connect { target: String, source: io::Error },

    #[error("connecting to {target} timed out after {} s", timeout.as_secs_f64())]
    ConnectTimeout { target: String, timeout: Duration },

    #[error("{0}")]
    Tls(#[from] TlsError),

    /// The proxy of an `upstream:` mode did not open the connection (it refused, or
    /// answered something that is not its protocol).
    #[error("the upstream proxy {proxy} did not connect to {target}: {reason}")]
    UpstreamProxy {
        proxy: String,
        target: String,
        reason: String,
    },

    #[error("the HTTP handshake with {target} failed: {source}")]
    Handshake {
        target: String,
        source: hyper::Error,
    },

    #[error("{target} did not send a response within {} s", timeout.as_secs_f64())]
    ResponseTimeout { target: String, timeout: Duration },

    /// The server's HTTP was not usable, or the connection under it ended, for a
    /// reason that is neither a timeout nor TLS. The message names what happened.
    #[error("{0}")]
    Protocol(String),
}

impl UpstreamError {
    /// 504 for waits that ran out, 502 for everything else.
    pub fn status(&self) -> StatusCode {
        let timed_out = match self {
            UpstreamError::ConnectTimeout { .. } | UpstreamError::ResponseTimeout { .. } => true,
            UpstreamError::Tls(tls) => tls.is_timeout(),
            _ => false,
        };
        if timed_out {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::BAD_GATEWAY
        }
    }

    pub fn kind(&self) -> FlowErrorKind {
        match self {
            UpstreamError::Resolve { .. }
            | UpstreamError::Connect { .. }
            | UpstreamError::UpstreamProxy { .. } => FlowErrorKind::Connect,
            UpstreamError::ConnectTimeout { .. } | UpstreamError::ResponseTimeout { .. } => {
                FlowErrorKind::Timeout
            }
            UpstreamError::Tls(TlsError::ClientCertificateRequired { .. }) => {
                FlowErrorKind::ClientCertificateRequired
            }
            UpstreamError::Tls(tls) if tls.is_timeout() => FlowErrorKind::Timeout,
            UpstreamError::Tls(_) => FlowErrorKind::UpstreamTls,
            UpstreamError::Handshake { .. } | UpstreamError::Protocol(_) => {
                FlowErrorKind::UpstreamProtocol
            }
        }
    }

    /// The exchange failed for a reason that is neither a timeout nor TLS: the
    /// server's HTTP, or the connection under it.
    pub fn exchange(message: impl Into<String>) -> Self {
        UpstreamError::Protocol(message.into())
    }

    /// Explains a connection that died before our request could be sent, from what its
    /// TLS layer recorded.
    pub fn from_tls_state(target: &str, tls: Option<&TlsConnectionState>) -> Option<Self> {
        let state = tls?;
        TlsError::from_context(target, &state.failure_context()).map(UpstreamError::Tls)
    }

    /// Explains a failed `send_request`: a TLS failure underneath (renegotiation,
    /// certificate request, alert) is the real story, so it comes first.
    pub fn from_exchange(
        target: &str,
        error: &(dyn std::error::Error + 'static),
        tls: Option<&TlsConnectionState>,
    ) -> Self {
        if let Some(tls) = TlsError::find_in(error) {
            return UpstreamError::Tls(tls.clone());
        }
        if let Some(explained) = Self::from_tls_state(target, tls) {
            return explained;
        }
        let detail = describe_hyper_error(error);
        let hyper = error.downcast_ref::<hyper::Error>();
        let message = if hyper.is_some_and(hyper::Error::is_incomplete_message) {
            format!("{target} closed the connection before sending a complete response ({detail})")
        } else if hyper.is_some_and(hyper::Error::is_parse) {
            format!("{target} sent an invalid HTTP response: {detail}")
        } else {
            format!("the exchange with {target} failed: {detail}")
        };
        UpstreamError::exchange(message)
    }
}

/// An error and its causes, joined: hyper's own messages are terse ("connection
/// error") and the cause is what a user needs.
pub fn describe_hyper_error(error: &(dyn std::error::Error + 'static)) -> String {
    if let Some(tls) = TlsError::find_in(error) {
        return tls.to_string();
    }
    let mut parts = vec![describe_cause(error)];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = describe_cause(cause);
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// h2's own words name neither the frame nor the error code ("stream error received:
/// unexpected internal error encountered"), and those are what a user looks up.
fn describe_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let Some(h2) = error.downcast_ref::<h2::Error>() else {
        return error.to_string();
    };
    // h2 fails the streams of a connection that closed under them as a "broken pipe",
    // which reads like a failed write.
    if h2.get_io().map(io::Error::kind) == Some(io::ErrorKind::BrokenPipe) {
        return "the HTTP/2 connection closed before the stream ended".to_owned();
    }
    let Some(reason) = h2.reason() else {
        return h2.to_string();
    };
    let who = if h2.is_remote() {
        "by the peer"
    } else if h2.is_library() {
        "by Periscope (a protocol error)"
    } else {
        "by Periscope"
    };
    let code = reason_name(reason);
    if h2.is_reset() {
        format!("stream reset {who} with RST_STREAM {code} ({reason})")
    } else if h2.is_go_away() {
        format!("connection closed {who} with GOAWAY {code} ({reason})")
    } else {
        h2.to_string()
    }
}

/// The RFC 9113 name of an HTTP/2 error code: `INTERNAL_ERROR`, or the number when it
/// has none.
pub fn reason_name(reason: h2::Reason) -> String {
    let name = format!("{reason:?}");
    if name.starts_with("Reason(") {
        format!("0x{:x}", u32::from(reason))
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use periscope_tls::HandshakePhase;

    /// hyper wraps the TLS stream's I/O error; the TLS failure under it is kept as
    /// such, so callers tell a stalled renegotiation from a reset by its variant.
    #[test]
    fn a_tls_failure_under_an_exchange_keeps_its_variant_status_and_kind() {
        let timeout = TlsError::RenegotiationTimeout {
            peer: "origin:443".into(),
            phase: HandshakePhase::Renegotiation,
            timeout: Duration::from_secs(10),
        };
        let wrapped = io::Error::new(io::ErrorKind::TimedOut, timeout);
        let error = UpstreamError::from_exchange("origin:443", &wrapped, None);
        assert!(matches!(
            error,
            UpstreamError::Tls(TlsError::RenegotiationTimeout { .. })
        ));
        assert_eq!(error.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(error.kind(), FlowErrorKind::Timeout);

        let required = TlsError::ClientCertificateRequired {
            peer: "origin:443".into(),
            phase: HandshakePhase::Renegotiation,
            ca_names: vec!["CN=Corp CA".into()],
            presented: None,
            alert: None,
        };
        let wrapped = io::Error::other(required);
        let error = UpstreamError::from_exchange("origin:443", &wrapped, None);
        assert_eq!(error.kind(), FlowErrorKind::ClientCertificateRequired);
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
        assert!(error.to_string().contains("CN=Corp CA"), "{error}");
    }

    #[test]
    fn a_broken_response_is_a_protocol_error() {
        let error = UpstreamError::exchange("origin:443 sent an invalid HTTP response");
        assert_eq!(error.kind(), FlowErrorKind::UpstreamProtocol);
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
    }
}
