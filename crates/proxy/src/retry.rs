//! Whether a request that failed on its way to the server may be sent again. The
//! exchange gathers the facts of one attempt (what the server did, whether the
//! connection was a reused one, whether the flow kept the whole body); this module
//! decides, and does no I/O, so its tests read as conversations on the wire.
//!
//! The rule is that a request is only sent twice when the server cannot have acted on
//! it: it never left, or an HTTP/2 server said so (RFC 9113 §8.7).

/// How many times one request may be sent in all.
pub const MAX_ATTEMPTS: u32 = 3;

/// What went wrong with one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptFailure {
    /// The connection closed before the request could start: usually a kept-alive
    /// connection the server had closed while it sat idle. `tls_explained`: its TLS
    /// layer recorded why (a certificate request, an alert), which is then the answer.
    ClosedBeforeSend { tls_explained: bool },
    /// The request was handed back unsent.
    NotSent,
    /// An HTTP/2 server answered `HTTP_1_1_REQUIRED` (IIS does for paths that need a
    /// client certificate, since HTTP/2 forbids renegotiation).
    Http11Required,
    /// The server selected no protocol by ALPN and answered the HTTP/1.1 request with
    /// the HTTP/2 connection preface: it read no request.
    ServerSpokeHttp2,
    /// The server selected no protocol by ALPN (HTTP/2 was not offered) and closed
    /// without sending a byte, as HTTP/2-only servers such as nghttpd do.
    /// `idempotent`: the request may be sent again even if the server acted on it
    /// (RFC 9110 §9.2.2).
    ClosedWithoutAlpn { idempotent: bool },
    /// An HTTP/2 server said it did not process the request: a GOAWAY whose last
    /// stream id is below the request's, or `REFUSED_STREAM`.
    Unprocessed {
        /// The frame and code, as the flow and the error page name them.
        frame: String,
        /// GOAWAY: the connection takes no more streams.
        connection_closing: bool,
    },
    /// Anything else: the server may have acted on the request.
    Other,
}

/// The attempt that failed.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    /// 1 for the first.
    pub number: u32,
    /// It went on a connection an earlier request had used.
    pub reused: bool,
    /// The flow holds the whole request body (or it had none), so the request can be
    /// rebuilt after it left.
    pub body_replayable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Send the same request again, on a new connection.
    Resend,
    /// Rebuild the request from the flow and send it over HTTP/1.1; the host keeps
    /// HTTP/1.1 from now on.
    ReplayOverHttp11,
    /// Rebuild the request from the flow and send it on a new connection that offers
    /// (or, after a preface, assumes) HTTP/2; the host keeps it from now on.
    ReplayOverHttp2,
    /// Rebuild the request from the flow and send it again; with `connection_closing`
    /// on a new connection.
    Replay { connection_closing: bool },
    /// Fail the exchange.
    GiveUp(GiveUp),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// The failure itself is the answer (the exchange explains it).
    Failed,
    /// The connection closed before the request could be sent, on a fresh connection
    /// or too often.
    ClosedBeforeSend,
    /// The server wants HTTP/1.1, but the body cannot be sent again.
    Http11RequiredBodyLost,
    /// The server speaks only HTTP/2, but the body cannot be sent again.
    ServerSpokeHttp2BodyLost,
    /// The server did not process the request, and it cannot be sent again.
    Unprocessed { frame: String, why: NotReplayed },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReplayed {
    BodyLost,
    TooManyAttempts(u32),
}

pub fn after_failure(attempt: Attempt, failure: &AttemptFailure) -> RetryDecision {
    let another = attempt.number < MAX_ATTEMPTS;
    match failure {
        AttemptFailure::ClosedBeforeSend {
            tls_explained: true,
        } => RetryDecision::GiveUp(GiveUp::Failed),
        AttemptFailure::ClosedBeforeSend {
            tls_explained: false,
        } if attempt.reused && another => RetryDecision::Resend,
        AttemptFailure::ClosedBeforeSend { .. } => RetryDecision::GiveUp(GiveUp::ClosedBeforeSend),
        AttemptFailure::NotSent if attempt.reused && another => RetryDecision::Resend,
        AttemptFailure::NotSent => RetryDecision::GiveUp(GiveUp::Failed),
        AttemptFailure::Http11Required if attempt.body_replayable && another => {
            RetryDecision::ReplayOverHttp11
        }
        AttemptFailure::Http11Required => RetryDecision::GiveUp(GiveUp::Http11RequiredBodyLost),
        AttemptFailure::ServerSpokeHttp2 if attempt.body_replayable && another => {
            RetryDecision::ReplayOverHttp2
        }
        AttemptFailure::ServerSpokeHttp2 => RetryDecision::GiveUp(GiveUp::ServerSpokeHttp2BodyLost),
        AttemptFailure::ClosedWithoutAlpn { idempotent: true }
            if attempt.body_replayable && another =>
        {
            RetryDecision::ReplayOverHttp2
        }
        AttemptFailure::ClosedWithoutAlpn { .. } => RetryDecision::GiveUp(GiveUp::Failed),
        AttemptFailure::Unprocessed {
            frame,
            connection_closing,
        } => {
            if !attempt.body_replayable {
                RetryDecision::GiveUp(GiveUp::Unprocessed {
                    frame: frame.clone(),
                    why: NotReplayed::BodyLost,
                })
            } else if !another {
                RetryDecision::GiveUp(GiveUp::Unprocessed {
                    frame: frame.clone(),
                    why: NotReplayed::TooManyAttempts(attempt.number),
                })
            } else {
                RetryDecision::Replay {
                    connection_closing: *connection_closing,
                }
            }
        }
        AttemptFailure::Other => RetryDecision::GiveUp(GiveUp::Failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_on_reused_connection() -> Attempt {
        Attempt {
            number: 1,
            reused: true,
            body_replayable: true,
        }
    }

    fn first_on_new_connection() -> Attempt {
        Attempt {
            reused: false,
            ..first_on_reused_connection()
        }
    }

    #[test]
    fn server_closed_the_idle_kept_alive_connection_as_it_was_reused_so_the_request_goes_on_a_new_one(
    ) {
        let closed = AttemptFailure::ClosedBeforeSend {
            tls_explained: false,
        };
        assert_eq!(
            after_failure(first_on_reused_connection(), &closed),
            RetryDecision::Resend
        );
        assert_eq!(
            after_failure(first_on_reused_connection(), &AttemptFailure::NotSent),
            RetryDecision::Resend
        );
    }

    #[test]
    fn a_new_connection_that_closes_before_the_request_is_an_error_not_a_loop() {
        let closed = AttemptFailure::ClosedBeforeSend {
            tls_explained: false,
        };
        assert_eq!(
            after_failure(first_on_new_connection(), &closed),
            RetryDecision::GiveUp(GiveUp::ClosedBeforeSend)
        );
        let third = Attempt {
            number: 3,
            ..first_on_reused_connection()
        };
        assert_eq!(
            after_failure(third, &closed),
            RetryDecision::GiveUp(GiveUp::ClosedBeforeSend)
        );
    }

    #[test]
    fn server_rejected_our_certificate_during_a_renegotiation_so_that_is_the_answer() {
        let rejected = AttemptFailure::ClosedBeforeSend {
            tls_explained: true,
        };
        assert_eq!(
            after_failure(first_on_reused_connection(), &rejected),
            RetryDecision::GiveUp(GiveUp::Failed)
        );
    }

    #[test]
    fn http2_server_answers_http_1_1_required_so_the_recorded_request_goes_over_http11() {
        assert_eq!(
            after_failure(first_on_new_connection(), &AttemptFailure::Http11Required),
            RetryDecision::ReplayOverHttp11
        );
        let body_truncated = Attempt {
            body_replayable: false,
            ..first_on_new_connection()
        };
        assert_eq!(
            after_failure(body_truncated, &AttemptFailure::Http11Required),
            RetryDecision::GiveUp(GiveUp::Http11RequiredBodyLost)
        );
    }

    #[test]
    fn server_ignored_alpn_and_sent_its_http2_preface_so_the_request_goes_again_over_http2() {
        assert_eq!(
            after_failure(first_on_new_connection(), &AttemptFailure::ServerSpokeHttp2),
            RetryDecision::ReplayOverHttp2
        );
        let streamed_upload = Attempt {
            body_replayable: false,
            ..first_on_new_connection()
        };
        assert_eq!(
            after_failure(streamed_upload, &AttemptFailure::ServerSpokeHttp2),
            RetryDecision::GiveUp(GiveUp::ServerSpokeHttp2BodyLost)
        );
    }

    #[test]
    fn a_server_that_closes_an_http11_connection_without_alpn_gets_http2_offered_for_a_get_only() {
        let get = AttemptFailure::ClosedWithoutAlpn { idempotent: true };
        assert_eq!(
            after_failure(first_on_new_connection(), &get),
            RetryDecision::ReplayOverHttp2
        );
        let post = AttemptFailure::ClosedWithoutAlpn { idempotent: false };
        assert_eq!(
            after_failure(first_on_new_connection(), &post),
            RetryDecision::GiveUp(GiveUp::Failed)
        );
    }

    #[test]
    fn goaway_below_our_stream_means_unprocessed_so_a_post_is_sent_again_on_a_new_connection() {
        let goaway = AttemptFailure::Unprocessed {
            frame: "GOAWAY NO_ERROR".into(),
            connection_closing: true,
        };
        assert_eq!(
            after_failure(first_on_reused_connection(), &goaway),
            RetryDecision::Replay {
                connection_closing: true
            }
        );
        let refused = AttemptFailure::Unprocessed {
            frame: "RST_STREAM REFUSED_STREAM".into(),
            connection_closing: false,
        };
        assert_eq!(
            after_failure(first_on_new_connection(), &refused),
            RetryDecision::Replay {
                connection_closing: false
            }
        );
    }

    #[test]
    fn a_server_that_keeps_refusing_streams_gets_three_attempts() {
        let refused = AttemptFailure::Unprocessed {
            frame: "RST_STREAM REFUSED_STREAM".into(),
            connection_closing: false,
        };
        let third = Attempt {
            number: MAX_ATTEMPTS,
            ..first_on_reused_connection()
        };
        assert_eq!(
            after_failure(third, &refused),
            RetryDecision::GiveUp(GiveUp::Unprocessed {
                frame: "RST_STREAM REFUSED_STREAM".into(),
                why: NotReplayed::TooManyAttempts(3)
            })
        );
    }

    #[test]
    fn a_reset_after_the_server_may_have_acted_is_never_retried() {
        assert_eq!(
            after_failure(first_on_reused_connection(), &AttemptFailure::Other),
            RetryDecision::GiveUp(GiveUp::Failed)
        );
        let new_connection_unsent =
            after_failure(first_on_new_connection(), &AttemptFailure::NotSent);
        assert_eq!(new_connection_unsent, RetryDecision::GiveUp(GiveUp::Failed));
    }
}
