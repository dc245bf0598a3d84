//! The TLS alert descriptions Periscope tells apart (RFC 5246 §7.2, RFC 8446 §6), and
//! what they mean for a proxy.
//!
//! Callers decide on these codes, never on the text of an error: libssl's names for
//! them change between versions (OpenSSL 3.0 has none for the TLS 1.3 additions).

pub const CLOSE_NOTIFY: u8 = 0;
pub const HANDSHAKE_FAILURE: u8 = 40;
pub const BAD_CERTIFICATE: u8 = 42;
pub const UNSUPPORTED_CERTIFICATE: u8 = 43;
pub const CERTIFICATE_REVOKED: u8 = 44;
pub const CERTIFICATE_EXPIRED: u8 = 45;
pub const CERTIFICATE_UNKNOWN: u8 = 46;
pub const UNKNOWN_CA: u8 = 48;
pub const ACCESS_DENIED: u8 = 49;
pub const NO_RENEGOTIATION: u8 = 100;
pub const MISSING_EXTENSION: u8 = 109;
pub const CERTIFICATE_REQUIRED: u8 = 116;
pub const NO_APPLICATION_PROTOCOL: u8 = 120;

/// libssl's name for an alert (`handshake failure`, `unknown CA`, ...), with names
/// for the TLS 1.3 alerts OpenSSL 3.0 has none for; `alert N` for unknown codes.
pub fn description(code: u8) -> String {
    crate::ffi::alert_description(code)
}

/// Alerts a server sends when it does not accept the client's certificate, or its
/// absence (a handshake_failure is what TLS 1.2 servers send for "none given").
pub fn refuses_client_certificate(code: u8) -> bool {
    matches!(
        code,
        HANDSHAKE_FAILURE
            | BAD_CERTIFICATE
            | UNSUPPORTED_CERTIFICATE
            | CERTIFICATE_REVOKED
            | CERTIFICATE_EXPIRED
            | CERTIFICATE_UNKNOWN
            | UNKNOWN_CA
            | ACCESS_DENIED
            | CERTIFICATE_REQUIRED
    )
}

/// Alerts a peer sends when it does not accept the certificate it was shown as
/// trustworthy: what a client sends when it does not trust the CA that issued it.
/// (Expired or revoked certificates are a different complaint.)
pub fn distrusts_certificate(code: u8) -> bool {
    matches!(
        code,
        BAD_CERTIFICATE | UNSUPPORTED_CERTIFICATE | CERTIFICATE_UNKNOWN | UNKNOWN_CA
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_openssl_and_cover_the_tls13_alerts() {
        assert_eq!(description(HANDSHAKE_FAILURE), "handshake failure");
        assert_eq!(description(UNKNOWN_CA), "unknown CA");
        assert_eq!(description(CERTIFICATE_REQUIRED), "certificate required");
        assert_eq!(
            description(NO_APPLICATION_PROTOCOL),
            "no application protocol"
        );
        assert_eq!(description(MISSING_EXTENSION), "missing extension");
        assert_eq!(description(250), "alert 250");
    }

    #[test]
    fn distrust_is_a_subset_of_the_refusals_of_a_client_certificate() {
        for code in 0..=u8::MAX {
            if distrusts_certificate(code) {
                assert!(refuses_client_certificate(code), "{code}");
            }
        }
        assert!(distrusts_certificate(UNKNOWN_CA));
        assert!(!distrusts_certificate(CERTIFICATE_EXPIRED));
        assert!(!distrusts_certificate(HANDSHAKE_FAILURE));
        assert!(refuses_client_certificate(CERTIFICATE_REQUIRED));
        assert!(!refuses_client_certificate(NO_APPLICATION_PROTOCOL));
        assert!(!refuses_client_certificate(CLOSE_NOTIFY));
    }
}
