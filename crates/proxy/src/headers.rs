//! Header handling between the legs: what a flow records, and which headers are
//! hop-by-hop (they describe one connection and must not be forwarded).

use http::header::{self, HeaderMap, HeaderName};
use periscope_flow::Headers;

pub fn record_headers(map: &HeaderMap) -> Headers {
    Headers(
        map.iter()
            .map(|(name, value)| periscope_flow::Header::new(name.as_str(), value.as_bytes()))
            .collect(),
    )
}

/// The protocol of the hop a message goes on next, which decides what it may keep of
/// the headers that describe one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// HTTP/1.1. An upgrade request or a 101 keeps `Connection: upgrade` and
    /// `Upgrade`, which the next hop needs to see.
    Http1 { keep_upgrade: bool },
    /// An HTTP/2 request: no connection-specific header at all (RFC 9113 §8.2.2), and
    /// `TE` only as `trailers`.
    Http2Request,
    /// An HTTP/2 response: as a request, and no `TE` either.
    Http2Response,
}

/// Removes the headers that belong to one connection (RFC 9110 §7.6.1): those named
/// in `Connection`, and the classic hop-by-hop set; for HTTP/2, everything it forbids.
/// The one place Periscope decides this, for both legs and both protocols.
pub fn strip_hop_by_hop(map: &mut HeaderMap, next: NextHop) {
    let keep_upgrade = matches!(next, NextHop::Http1 { keep_upgrade: true });
    // "trailers" in TE is not about this hop's transfer codings: it says the client
    // accepts trailers, which Periscope relays, and gRPC servers refuse requests
    // without it. It is also the only TE value HTTP/2 allows.
    let accepts_trailers = next != NextHop::Http2Response
        && map
            .get_all(header::TE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|coding| {
                let name = coding.split(';').next().unwrap_or_default();
                name.trim().eq_ignore_ascii_case("trailers")
            });
    let listed: Vec<HeaderName> = map
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in listed {
        map.remove(name);
    }
    for name in [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
    ] {
        map.remove(name);
    }
    map.remove(header::TE);
    if accepts_trailers {
        map.insert(header::TE, http::HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        map.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
    } else {
        map.remove(header::CONNECTION);
        map.remove(header::UPGRADE);
    }
    if next != (NextHop::Http1 { keep_upgrade }) {
        // HTTP/2 frames its own bodies.
        map.remove(header::TRANSFER_ENCODING);
    }
}

/// True when the message asks to switch protocols (`Connection: upgrade` + `Upgrade`).
pub fn wants_upgrade(map: &HeaderMap) -> bool {
    map.contains_key(header::UPGRADE)
        && map
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn connection_listed_and_classic_hop_by_hop_headers_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(
            &mut headers,
            NextHop::Http1 {
                keep_upgrade: false,
            },
        );
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["accept"]);
    }

    #[test]
    fn te_keeps_only_its_trailers_value() {
        let mut headers = map(&[("connection", "TE"), ("te", "gzip;q=0.5, Trailers")]);
        strip_hop_by_hop(
            &mut headers,
            NextHop::Http1 {
                keep_upgrade: false,
            },
        );
        assert_eq!(
            headers.get_all("te").iter().collect::<Vec<_>>(),
            ["trailers"]
        );
        assert!(!headers.contains_key("connection"));
    }

    #[test]
    fn upgrade_requests_keep_their_upgrade_headers() {
        let mut headers = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "abc"),
        ]);
        assert!(wants_upgrade(&headers));
        strip_hop_by_hop(&mut headers, NextHop::Http1 { keep_upgrade: true });
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(headers["connection"], "upgrade");
        assert_eq!(headers["sec-websocket-key"], "abc");
    }

    #[test]
    fn http2_messages_lose_every_connection_specific_header() {
        let pairs = [
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("x-end-to-end", "1"),
        ];
        let mut request = map(&pairs);
        strip_hop_by_hop(&mut request, NextHop::Http2Request);
        let mut names: Vec<_> = request.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "x-end-to-end"]);
        let mut response = map(&pairs);
        strip_hop_by_hop(&mut response, NextHop::Http2Response);
        let names: Vec<_> = response.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-end-to-end"]);
    }

    #[test]
    fn http1_keeps_transfer_encoding_for_the_framing_decision() {
        let mut headers = map(&[("transfer-encoding", "chunked")]);
        strip_hop_by_hop(
            &mut headers,
            NextHop::Http1 {
                keep_upgrade: false,
            },
        );
        assert!(headers.contains_key("transfer-encoding"));
    }
}
