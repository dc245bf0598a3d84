//! Requests the proxy refuses before relaying anything: ambiguous message framing
//! (request smuggling), missing proxy credentials, and requests that would make
//! Periscope connect to itself.

use std::net::{IpAddr, SocketAddr};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
use http::header::{CONTENT_LENGTH, HOST, PROXY_AUTHORIZATION, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode};
use periscope_flow::FlowErrorKind;
use subtle::ConstantTimeEq;

/// Credentials clients must send (`--proxyauth user:pass`).
#[derive(Clone)]
pub struct ProxyCredentials {
    expected: Vec<u8>,
}

impl ProxyCredentials {
    /// From `user:pass`.
    pub fn parse(spec: &str) -> Option<Self> {
        let (user, _) = spec.split_once(':')?;
        if user.is_empty() {
            return None;
        }
        Some(ProxyCredentials {
            expected: spec.as_bytes().to_vec(),
        })
    }

    /// SOCKS5 credentials (RFC 1929) against `user:pass`; constant-time like
    /// [`Self::accepts`].
    pub fn accepts_user_password(&self, user: &[u8], password: &[u8]) -> bool {
        let mut given = Vec::with_capacity(user.len() + 1 + password.len());
        given.extend_from_slice(user);
        given.push(b':');
        given.extend_from_slice(password);
        given.ct_eq(&self.expected).into()
    }

    /// Constant-time, so response timing does not leak how much of a guess was right.
    fn accepts(&self, header: Option<&http::HeaderValue>) -> bool {
        let Some(value) = header.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some((scheme, encoded)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = BASE64.decode(encoded.trim()) else {
            return false;
        };
        decoded.ct_eq(&self.expected).into()
    }
}

impl std::fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyCredentials(..)")
    }
}

/// Why a request is answered by Periscope instead of being relayed.
pub struct Refusal {
    pub status: StatusCode,
    pub summary: String,
    pub detail: String,
    pub kind: FlowErrorKind,
    /// Close the connection after answering (the rest of the stream is untrustworthy).
    pub close: bool,
    pub challenge: bool,
}

/// A request whose body length two parties could read differently is refused:
/// forwarding it would let a client smuggle a second request past the server.
pub fn check_framing(headers: &HeaderMap) -> Option<Refusal> {
    let refuse = |status, summary: &str, detail: String| Refusal {
        status,
        summary: summary.to_owned(),
        detail,
        kind: FlowErrorKind::BadRequest,
        close: true,
        challenge: false,
    };
    // RFC 9112 §3.2: the server and anything logging the request could each pick a
    // different one.
    if headers.get_all(HOST).iter().nth(1).is_some() {
        return Some(refuse(
            StatusCode::BAD_REQUEST,
            "The request has more than one Host header.",
            "A request names one host (RFC 9112 section 3.2); Periscope does not guess which."
                .to_owned(),
        ));
    }
    let encodings: Vec<&http::HeaderValue> = headers.get_all(TRANSFER_ENCODING).iter().collect();
    if encodings.is_empty() {
        return None;
    }
    if headers.contains_key(CONTENT_LENGTH) {
        return Some(refuse(
            StatusCode::BAD_REQUEST,
            "The request has both Content-Length and Transfer-Encoding.",
            "Servers may read such a body differently (request smuggling), so Periscope \
             does not forward it. Send one or the other."
                .to_owned(),
        ));
    }
    let codings: Vec<String> = encodings
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    if codings != ["chunked"] {
        return Some(refuse(
            StatusCode::NOT_IMPLEMENTED,
            "Unsupported Transfer-Encoding.",
            format!(
                "Periscope forwards request bodies with \"Transfer-Encoding: chunked\" only; \
                 this request has \"{}\".",
                codings.join(", ")
            ),
        ));
    }
    None
}

pub fn check_credentials(headers: &HeaderMap, credentials: &ProxyCredentials) -> Option<Refusal> {
    if credentials.accepts(headers.get(PROXY_AUTHORIZATION)) {
        return None;
    }
    let sent = headers.contains_key(PROXY_AUTHORIZATION);
    Some(Refusal {
        status: StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        summary: if sent {
            "Wrong proxy credentials.".to_owned()
        } else {
            "This proxy requires credentials.".to_owned()
        },
        detail: "Send Proxy-Authorization: Basic (for example curl --proxy-user user:pass)."
            .to_owned(),
        kind: FlowErrorKind::BadRequest,
        close: false,
        challenge: true,
    })
}

/// True when `host:port` is Periscope's own listener, so relaying would loop.
pub fn targets_self(listen: SocketAddr, host: &str, port: u16) -> bool {
    if port != listen.port() {
        return false;
    }
    if host.eq_ignore_ascii_case("localhost") {
        return listen.ip().is_loopback() || listen.ip().is_unspecified();
    }
    let Ok(ip) = host.parse::<IpAddr>() else {
        return false;
    };
    ip == listen.ip()
        || (listen.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified()))
        || (ip.is_loopback() && listen.ip().is_loopback())
}

/// The control API is for the user's own tools, never for a client of the proxy: a
/// page loaded through the proxy must not be able to drive it.
pub fn protected_refusal(host: &str, port: u16) -> Refusal {
    Refusal {
        status: StatusCode::FORBIDDEN,
        summary: format!("{host}:{port} is Periscope's control API."),
        detail: "The control API is not reachable through the proxy; connect to it directly."
            .to_owned(),
        kind: FlowErrorKind::BadRequest,
        close: false,
        challenge: false,
    }
}

pub fn loop_refusal(host: &str, port: u16) -> Refusal {
    Refusal {
        status: StatusCode::LOOP_DETECTED,
        summary: format!("{host}:{port} is Periscope itself."),
        detail: "Relaying this request would send it back to the proxy forever.".to_owned(),
        kind: FlowErrorKind::BadRequest,
        close: false,
        challenge: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_second_host_header_is_refused() {
        assert!(check_framing(&headers(&[("host", "a.example")])).is_none());
        let two = check_framing(&headers(&[("host", "a.example"), ("host", "b.example")]));
        assert_eq!(two.unwrap().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert!(check_framing(&headers(&[("content-length", "5")])).is_none());
        assert!(check_framing(&headers(&[("transfer-encoding", "chunked")])).is_none());
        assert!(check_framing(&headers(&[("transfer-encoding", " Chunked ")])).is_none());
        let both = check_framing(&headers(&[
            ("content-length", "5"),
            ("transfer-encoding", "chunked"),
        ]))
        .unwrap();
        assert_eq!(both.status, StatusCode::BAD_REQUEST);
        assert!(both.close);
        for odd in [
            "gzip, chunked",
            "chunked, identity",
            "xchunked",
            "chunked, chunked",
        ] {
            let refusal = check_framing(&headers(&[("transfer-encoding", odd)])).unwrap();
            assert_eq!(refusal.status, StatusCode::NOT_IMPLEMENTED, "{odd}");
        }
    }

    #[test]
    fn credentials_are_checked() {
        let credentials = ProxyCredentials::parse("alice:s3cret:with:colons").unwrap();
        let basic = |s: &str| format!("Basic {}", BASE64.encode(s));
        let ok = headers(&[("proxy-authorization", &basic("alice:s3cret:with:colons"))]);
        assert!(check_credentials(&ok, &credentials).is_none());
        let wrong = headers(&[("proxy-authorization", &basic("alice:guess"))]);
        assert_eq!(
            check_credentials(&wrong, &credentials).unwrap().status,
            StatusCode::PROXY_AUTHENTICATION_REQUIRED
        );
        assert!(check_credentials(&HeaderMap::new(), &credentials).is_some());
        let garbage = headers(&[("proxy-authorization", "Basic !!!")]);
        assert!(check_credentials(&garbage, &credentials).is_some());
        assert!(ProxyCredentials::parse("nocolon").is_none());
        assert!(ProxyCredentials::parse(":pass").is_none());
    }

    #[test]
    fn the_proxy_recognises_itself() {
        let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(targets_self(listen, "127.0.0.1", 8080));
        assert!(targets_self(listen, "localhost", 8080));
        assert!(
            targets_self(listen, "127.0.0.2", 8080),
            "all of 127/8 is this host"
        );
        assert!(!targets_self(listen, "127.0.0.1", 8081));
        assert!(!targets_self(listen, "example.com", 8080));
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(targets_self(any, "::1", 8080));
    }
}
