//! Where a request goes: the stage of an exchange that the proxy mode decides. On a
//! connection whose server was found first (a CONNECT tunnel, SOCKS5, a transparently
//! redirected connection), that server, with the Host header naming the flow; for a
//! reverse proxy, its server under its own name; on an HTTP proxy listener, the
//! absolute URI of a proxy request.

use http::header::HOST;
use http::{HeaderMap, Request, StatusCode, Version};

use crate::body::IncomingBody;
use crate::core::ProxyCore;
use crate::pages::{error_response, proxy_info_page};
use crate::pool::PoolTarget;
use crate::session::ClientResponse;
use crate::upstream::{TlsParameters, UpstreamKey, ALPN_H2, ALPN_HTTP11};

/// An intercepted CONNECT tunnel: every request in it goes to one server.
pub struct Tunnel {
    pub key: UpstreamKey,
    /// `None` for plain HTTP spoken inside a CONNECT tunnel (ws:// through a proxy).
    pub tls: Option<TlsParameters>,
    /// A reverse proxy's: requests name the server, not the Host the client sent
    /// (which named Periscope), and their Host header is rewritten to match.
    pub rewrite_host: bool,
}

/// Where a request goes and how the flow names it.
pub struct Destination {
    pub pool: PoolTarget,
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
}

impl Destination {
    pub fn key(&self) -> &UpstreamKey {
        &self.pool.key
    }

    /// Where the request goes now that `request` (as the flow records it, perhaps
    /// edited) names another scheme, host or port; `None` when it names this one.
    pub fn moved_to(&self, request: &periscope_flow::Request) -> Option<Destination> {
        let scheme = match request.scheme.as_str() {
            "https" => "https",
            _ => "http",
        };
        if scheme == self.scheme && request.host == self.host && request.port == self.port {
            return None;
        }
        let tls = scheme == "https";
        let host = request.host.to_ascii_lowercase();
        Some(Destination {
            pool: PoolTarget {
                key: UpstreamKey {
                    tls,
                    host: host.clone(),
                    port: request.port,
                },
                tls: tls.then(|| TlsParameters {
                    server_name: host.clone(),
                    send_sni: true,
                    alpn: self.pool.tls.as_ref().map_or_else(
                        || vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
                        |t| t.alpn.clone(),
                    ),
                    post_quantum: self.pool.tls.as_ref().is_none_or(|t| t.post_quantum),
                }),
                concurrent: self.pool.concurrent,
            },
            scheme,
            host,
            port: request.port,
        })
    }
}

/// The destination of `request`, or the answer when it is not one to forward.
pub fn destination_of(
    core: &ProxyCore,
    tunnel: Option<&Tunnel>,
    request: &Request<IncomingBody>,
) -> Result<Destination, Box<ClientResponse>> {
    let concurrent = request.version() == Version::HTTP_2;
    if let Some(tunnel) = tunnel {
        let named = host_header(request.headers()).filter(|_| !tunnel.rewrite_host);
        let (host, port) = match named {
            Some((host, port)) => (host, port.unwrap_or(tunnel.key.port)),
            None => (
                tunnel
                    .tls
                    .as_ref()
                    .map_or_else(|| tunnel.key.host.clone(), |tls| tls.server_name.clone()),
                tunnel.key.port,
            ),
        };
        return Ok(Destination {
            pool: PoolTarget {
                key: tunnel.key.clone(),
                tls: tunnel.tls.clone(),
                concurrent,
            },
            scheme: if tunnel.tls.is_some() {
                "https"
            } else {
                "http"
            },
            host,
            port,
        });
    }
    let uri = request.uri();
    let Some(host) = uri.host() else {
        // Not a proxy request: somebody pointed a browser at the proxy itself.
        return Err(Box::new(proxy_info_page(
            &core.ca,
            uri.path(),
            core.config.listen,
        )));
    };
    if host.eq_ignore_ascii_case("periscope") && uri.scheme_str() == Some("http") {
        // `http://periscope/` through the proxy: the onboarding page (mitmproxy's
        // mitm.it), before the client trusts the CA.
        return Err(Box::new(proxy_info_page(
            &core.ca,
            uri.path(),
            core.config.listen,
        )));
    }
    let (tls, scheme, default_port) = match uri.scheme_str() {
        Some("https") => (true, "https", 443),
        Some("http") | None => (false, "http", 80),
        Some(other) => {
            return Err(Box::new(error_response(
                StatusCode::BAD_REQUEST,
                &format!("Periscope cannot proxy {other}:// URLs."),
                "Only http:// and https:// URLs can be requested through an HTTP proxy.",
            )))
        }
    };
    let host = unbracket(host).to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(default_port);
    // The client asked the proxy for https://: it speaks HTTP/1.1 to us, and any
    // protocol can be used upstream.
    let tls_parameters = tls.then(|| TlsParameters {
        server_name: host.clone(),
        send_sni: true,
        alpn: vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
        post_quantum: true,
    });
    Ok(Destination {
        pool: PoolTarget {
            key: UpstreamKey {
                tls,
                host: host.clone(),
                port,
            },
            tls: tls_parameters,
            concurrent,
        },
        scheme,
        host,
        port,
    })
}

/// The host and port a request names, for a flow that was refused before a
/// destination was chosen: its URI, else its Host header.
pub fn named_target(
    tunnel: Option<&Tunnel>,
    request: &Request<IncomingBody>,
) -> (&'static str, String, u16) {
    let uri = request.uri();
    let (scheme, default_port) = match (tunnel, uri.scheme_str()) {
        (Some(_), _) | (None, Some("https")) => ("https", 443),
        _ => ("http", 80),
    };
    let (host, port) = match (uri.host(), host_header(request.headers())) {
        (Some(host), _) => (host.to_owned(), uri.port_u16().unwrap_or(default_port)),
        (None, Some((host, port))) => (host, port.unwrap_or(default_port)),
        (None, None) => (String::new(), default_port),
    };
    (scheme, host, port)
}

pub fn host_header(headers: &HeaderMap) -> Option<(String, Option<u16>)> {
    let value = headers.get(HOST)?.to_str().ok()?;
    let authority: http::uri::Authority = value.parse().ok()?;
    let host = unbracket(authority.host()).to_ascii_lowercase();
    Some((host, authority.port_u16()))
}

/// The Host header value for `key`: the port only when it is not the scheme's default.
pub fn host_header_value(key: &UpstreamKey) -> String {
    let default = if key.tls { 443 } else { 80 };
    let host = if key.host.contains(':') {
        format!("[{}]", key.host)
    } else {
        key.host.clone()
    };
    if key.port == default {
        host
    } else {
        format!("{host}:{}", key.port)
    }
}

/// An IPv6 literal without its URI brackets.
pub fn unbracket(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_values_name_the_port_only_when_it_is_not_the_default() {
        let key = |tls, host: &str, port| UpstreamKey {
            tls,
            host: host.into(),
            port,
        };
        assert_eq!(
            host_header_value(&key(true, "example.test", 443)),
            "example.test"
        );
        assert_eq!(
            host_header_value(&key(false, "example.test", 443)),
            "example.test:443"
        );
        assert_eq!(host_header_value(&key(true, "::1", 8443)), "[::1]:8443");
    }

    #[test]
    fn host_headers_are_read_lower_case_without_brackets() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "[::1]:8443".parse().unwrap());
        assert_eq!(host_header(&headers), Some(("::1".into(), Some(8443))));
        headers.insert(HOST, "Example.TEST".parse().unwrap());
        assert_eq!(host_header(&headers), Some(("example.test".into(), None)));
    }
}
