//! Which `Host` and `Origin` headers name the API itself: the defence against DNS
//! rebinding (a page whose own name resolves to 127.0.0.1 is still "evil.example" in
//! its Host header) and against cross-site requests (a page elsewhere sends its own
//! Origin).
//!
//! Ports are not compared with the listening port: an SSH tunnel or a port forward
//! (`ssh -L 9000:127.0.0.1:8081`) reaches the API under another port, and rebinding
//! is about the name, not the port.

use std::net::{IpAddr, SocketAddr};

use axum::http::uri::{Authority, Uri};

/// True when `host` (a Host header's host part, IPv6 without brackets) is a name of
/// the API: `localhost`, a loopback address, the listening address, any address when
/// listening on all of them (an IP literal cannot be rebound to another site), or a
/// name the user allowed.
pub fn host_is_ours(host: &str, listen: SocketAddr, allowed: &[String]) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        return ip.is_loopback()
            || ip == listen.ip().to_canonical()
            || listen.ip().is_unspecified();
    }
    allowed.iter().any(|name| name.eq_ignore_ascii_case(host))
}

/// The host part of an authority, without the brackets of an IPv6 literal.
pub fn bare_host(authority: &Authority) -> &str {
    let host = authority.host();
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Checks a request's `Host` header (and the authority of an absolute-form target,
/// which HTTP/1.1 says wins over Host); `Err` says what is wrong.
pub fn check_host(
    host_header: Option<&str>,
    target: &Uri,
    listen: SocketAddr,
    allowed: &[String],
) -> Result<(), String> {
    let Some(host_header) = host_header else {
        return Err("the request has no Host header".to_owned());
    };
    let authority: Authority = host_header
        .parse()
        .map_err(|_| format!("Host {host_header:?} is not a host name"))?;
    if !host_is_ours(bare_host(&authority), listen, allowed) {
        return Err(format!(
            "Host {host_header:?} does not name this API (DNS rebinding?); use 127.0.0.1 or localhost"
        ));
    }
    if let Some(target_authority) = target.authority() {
        if !host_is_ours(bare_host(target_authority), listen, allowed) {
            return Err(format!(
                "request target {target} does not name this API (was it sent through a proxy?)"
            ));
        }
    }
    Ok(())
}

/// True when `origin` (an Origin header) is the page of the API itself: `http`, the
/// same host as the request's `Host` header, and the same port (80 when absent).
pub fn origin_matches_host(origin: &str, host_header: &str) -> bool {
    let (Ok(origin), Ok(host)) = (origin.parse::<Uri>(), host_header.parse::<Authority>()) else {
        return false;
    };
    let Some(origin_authority) = origin.authority() else {
        return false;
    };
    origin.scheme_str() == Some("http")
        && origin.path() == "/"
        && origin_authority.host().eq_ignore_ascii_case(host.host())
        && origin_authority.port_u16().unwrap_or(80) == host.port_u16().unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(addr: &str) -> SocketAddr {
        addr.parse().unwrap()
    }

    #[test]
    fn loopback_names_and_the_listening_address_are_ours() {
        let loopback = listen("127.0.0.1:8081");
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3", "::1"] {
            assert!(host_is_ours(host, loopback, &[]), "{host}");
        }
        let lan = listen("192.168.1.5:8081");
        assert!(host_is_ours("192.168.1.5", lan, &[]));
        assert!(!host_is_ours("192.168.1.6", lan, &[]));
        assert!(host_is_ours("10.0.0.1", listen("0.0.0.0:8081"), &[]));
        assert!(host_is_ours("::ffff:127.0.0.1", loopback, &[]));
    }

    #[test]
    fn other_names_are_not_unless_allowed() {
        let loopback = listen("127.0.0.1:8081");
        assert!(!host_is_ours("evil.example", loopback, &[]));
        assert!(!host_is_ours("localhost.evil.example", loopback, &[]));
        assert!(!host_is_ours("evil.example", listen("0.0.0.0:8081"), &[]));
        let allowed = vec!["periscope.lan".to_owned()];
        assert!(host_is_ours("Periscope.LAN", loopback, &allowed));
    }

    #[test]
    fn host_headers_are_checked_with_any_port_and_absolute_targets_too() {
        let loopback = listen("127.0.0.1:8081");
        let path: Uri = "/flows".parse().unwrap();
        assert!(check_host(Some("127.0.0.1:8081"), &path, loopback, &[]).is_ok());
        assert!(check_host(Some("localhost:9000"), &path, loopback, &[]).is_ok());
        assert!(check_host(Some("[::1]:8081"), &path, loopback, &[]).is_ok());
        assert!(check_host(Some("evil.example:8081"), &path, loopback, &[]).is_err());
        assert!(check_host(None, &path, loopback, &[]).is_err());
        let absolute: Uri = "http://evil.example/flows".parse().unwrap();
        assert!(check_host(Some("127.0.0.1:8081"), &absolute, loopback, &[]).is_err());
    }

    #[test]
    fn origins_match_only_the_same_scheme_host_and_port() {
        assert!(origin_matches_host(
            "http://127.0.0.1:8081",
            "127.0.0.1:8081"
        ));
        assert!(origin_matches_host(
            "http://LOCALHOST:8081",
            "localhost:8081"
        ));
        assert!(origin_matches_host("http://localhost", "localhost:80"));
        assert!(origin_matches_host("http://[::1]:8081", "[::1]:8081"));
        assert!(!origin_matches_host(
            "http://evil.example",
            "127.0.0.1:8081"
        ));
        assert!(!origin_matches_host(
            "http://127.0.0.1:9999",
            "127.0.0.1:8081"
        ));
        assert!(!origin_matches_host(
            "https://127.0.0.1:8081",
            "127.0.0.1:8081"
        ));
        assert!(!origin_matches_host("null", "127.0.0.1:8081"));
        assert!(!origin_matches_host(
            "http://localhost:8081",
            "127.0.0.1:8081"
        ));
    }
}
