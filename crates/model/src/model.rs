//! The flow: one HTTP exchange as Periscope saw it, with both connections, the
//! timeline of what happened when, and the error if it failed.
//!
//! Everything here is plain data (serde), so the store, the exports and the user
//! interfaces can read a flow without touching the proxy or OpenSSL.

use std::fmt;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::timeline::Timeline;

/// Microseconds since the Unix epoch. Wall-clock, because users compare flow times
/// with logs of other programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(since.as_micros() as i64)
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// Milliseconds from `earlier` to `self`, negative when `earlier` is later.
    pub fn millis_since(self, earlier: Timestamp) -> f64 {
        (self.0 - earlier.0) as f64 / 1e3
    }
}

/// A flow's identity, unique across sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FlowId(pub uuid::Uuid);

impl FlowId {
    /// A time-ordered UUID (version 7): the store's index on ids then grows at its end
    /// like the flows do, where random (version 4) ids dirtied one index page per
    /// flow in every commit.
    pub fn new() -> Self {
        FlowId(uuid::Uuid::now_v7())
    }
}

impl Default for FlowId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One header line. Values are kept as bytes: a debugging proxy must show what was
/// sent, including values that are not UTF-8.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub name: String,
    #[serde(with = "header_value")]
    pub value: Vec<u8>,
}

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }

    pub fn value_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// Header lines in the order they were received.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Header> {
        self.0.iter().find(|h| h.name.eq_ignore_ascii_case(name))
    }

    pub fn get_str(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.get(name).map(Header::value_lossy)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.0.push(Header::new(name, value));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A message body as recorded: the first `content.len()` bytes of `size` bytes seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// The recorded bytes, exactly as on the wire (still content-encoded).
    #[serde(with = "body_bytes")]
    pub content: Bytes,
    /// How many body bytes passed through the proxy.
    pub size: u64,
    /// True when `content` holds less than `size` bytes because of the body limit.
    pub truncated: bool,
}

impl Body {
    pub fn complete(content: impl Into<Bytes>) -> Self {
        let content = content.into();
        Body {
            size: content.len() as u64,
            content,
            truncated: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The host the request is for (Host header, or the CONNECT/SNI host).
    pub host: String,
    pub port: u16,
    /// Path and query, as sent (`/a?b=c`); `*` for `OPTIONS *`.
    pub path: String,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    pub http_version: String,
    /// The HTTP/2 stream the request came on, on the client's connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<u32>,
    pub headers: Headers,
    pub body: Body,
    pub trailers: Option<Headers>,
}

impl Request {
    /// The URL a user would paste into a browser; the port is omitted when default.
    pub fn url(&self) -> String {
        let default_port = matches!(
            (self.scheme.as_str(), self.port),
            ("http", 80) | ("https", 443)
        );
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if default_port || self.port == 0 {
            format!("{}://{}{}", self.scheme, host, self.path)
        } else {
            format!("{}://{}:{}{}", self.scheme, host, self.port, self.path)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub http_version: String,
    /// The HTTP/2 stream the response came on, on the server's connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<u32>,
    pub headers: Headers,
    pub body: Body,
    pub trailers: Option<Headers>,
    /// True when Periscope made this response itself (an error page), rather than
    /// relaying the server's.
    pub generated: bool,
}

/// A summary of a certificate, enough for the Detail view and exports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateSummary {
    pub subject: String,
    pub issuer: String,
    pub subject_alt_names: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    pub serial: String,
    /// SHA-256 of the DER encoding, hex with colons.
    pub sha256_fingerprint: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsInfo {
    /// `TLSv1.2`, `TLSv1.3`, ...
    pub version: String,
    pub cipher: String,
    pub sni: Option<String>,
    pub alpn: Option<String>,
    /// The peer's certificate (upstream: the server's; client leg: the client's, if any).
    pub peer_certificate: Option<CertificateSummary>,
    /// The other certificates the peer sent with its own (intermediates, a root if it
    /// sent one), in the order sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_chain: Vec<CertificateSummary>,
    /// The first handshake resumed an earlier session (no certificate was sent in it;
    /// `peer_certificate` is the one the session was made with).
    #[serde(default)]
    pub resumed: bool,
    /// The key-exchange group agreed on, by OpenSSL's name (`x25519`,
    /// `X25519MLKEM768`); `None` for none (TLS 1.2 RSA key exchange) or not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_exchange: Option<String>,
}

/// One end of a flow: the client's connection to Periscope or Periscope's connection
/// to the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// Identifies the connection across the flows that shared it.
    pub id: u64,
    /// The remote side of this connection.
    pub peer: Option<SocketAddr>,
    /// Our side of this connection.
    pub local: Option<SocketAddr>,
    /// For server connections: the address asked for (`host:port`), which may differ
    /// from `peer` (a name, or an upstream proxy).
    pub target: Option<String>,
    pub tls: Option<TlsInfo>,
}

/// Why a flow did not complete normally. The kinds are the user's vocabulary, so a
/// filter or a UI can group them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowErrorKind {
    /// The client sent something that is not valid HTTP.
    BadRequest,
    /// The server could not be reached (refused, unreachable, name not found).
    Connect,
    /// A timeout: connect, TLS handshake, renegotiation, or waiting for the server.
    Timeout,
    /// The TLS handshake with the server failed (certificate, protocol, alert).
    UpstreamTls,
    /// The server asked for a client certificate we could not satisfy.
    ClientCertificateRequired,
    /// The TLS handshake with the client failed.
    ClientTls,
    /// The server's HTTP was invalid or the connection ended mid-message.
    UpstreamProtocol,
    /// The client went away before the exchange completed.
    ClientDisconnected,
    /// The user killed the flow.
    Killed,
    /// Something else: the message says what.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowError {
    pub kind: FlowErrorKind,
    pub message: String,
    pub at: Timestamp,
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// An HTTP exchange and everything Periscope learned while relaying it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    pub id: FlowId,
    pub client: ConnectionInfo,
    pub server: Option<ConnectionInfo>,
    pub request: Request,
    pub response: Option<Response>,
    pub error: Option<FlowError>,
    pub timeline: Timeline,
    /// Set by the user (console `m`), carried in saved sessions.
    #[serde(default)]
    pub marked: bool,
    /// True when the request came through an intercepted CONNECT tunnel or TLS listener.
    #[serde(default)]
    pub intercepted_tls: bool,
    /// The WebSocket connection that followed a `101 Switching Protocols`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<crate::websocket::WebSocketSession>,
    /// Paused by the user's intercept filter, and where. Only flows in flight are; a
    /// recorded flow never is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercepted: Option<Interception>,
    /// What the user did to the flow.
    #[serde(default, skip_serializing_if = "Annotations::is_empty")]
    pub annotations: Annotations,
    /// The listener (and so the proxy mode) the flow came through; absent in flows
    /// recorded before Periscope had modes (they came through the regular one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<crate::tcp::ListenerInfo>,
    /// Set when the connection was relayed as bytes rather than parsed as HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<crate::tcp::TcpSession>,
    /// The rules (`--map-local`, `--modify-headers`, ...) that changed the flow, in
    /// the order they acted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AppliedRule>,
}

/// A rule that changed a flow: which one, as the user wrote it, and what it did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRule {
    /// The option, as mitmproxy names it: `map_local`, `map_remote`, `modify_headers`,
    /// `modify_body`, `block_list`, `anticache`, `anticomp`, `server_replay`.
    pub rule: String,
    /// The pattern as the user wrote it; for `server_replay`, the session file.
    pub spec: String,
    /// What it did, in a few words ("answered from /srv/site/index.html").
    pub effect: String,
}

/// Where a flow waits for the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "snake_case")]
pub enum Interception {
    /// Before anything was sent to the server.
    Request,
    /// Before anything of the response was sent to the client.
    Response,
    /// A WebSocket message, held before it reaches the other side.
    WebSocketMessage {
        message: crate::websocket::WebSocketMessage,
    },
    /// The server asked for a client certificate during a renegotiation or TLS 1.3
    /// post-handshake authentication; the handshake waits for the user's choice.
    ClientCertificate {
        ca_names: Vec<String>,
        post_handshake: bool,
    },
}

/// The user's marks on a flow, carried in saved sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotations {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// Changed by the user (while intercepted or afterwards); the session keeps what
    /// was recorded, for revert.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub modified: bool,
    /// This flow is a replay of that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<FlowId>,
    /// This flow is a copy of that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<FlowId>,
}

impl Annotations {
    pub fn is_empty(&self) -> bool {
        *self == Annotations::default()
    }
}

impl Flow {
    /// Total time from the first request byte to the last response byte, if both are known.
    pub fn duration_millis(&self) -> Option<f64> {
        use crate::timeline::Milestone;
        let start = self.timeline.milestone(Milestone::RequestStarted)?;
        let end = self
            .timeline
            .milestone(Milestone::ResponseComplete)
            .or_else(|| self.error.as_ref().map(|e| e.at))?;
        Some(end.millis_since(start))
    }

    /// The proxy mode's name (`regular` for flows recorded before there were modes).
    pub fn mode_name(&self) -> &str {
        self.listener
            .as_ref()
            .map_or("regular", crate::tcp::ListenerInfo::mode_name)
    }

    /// The time the flow started (its first request byte, or when it was created).
    pub fn started_at(&self) -> Option<Timestamp> {
        use crate::timeline::Milestone;
        self.timeline.milestone(Milestone::RequestStarted)
    }
}

mod header_value {
    //! Header values serialize as a string when they are UTF-8 (the usual case) and as
    //! `{"base64": "..."}` otherwise, so nothing is lost and JSON stays readable.
    use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Binary { base64: String },
    }

    pub fn serialize<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(value) {
            Ok(text) => Repr::Text(text.to_owned()).serialize(s),
            Err(_) => Repr::Binary {
                base64: BASE64.encode(value),
            }
            .serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text(text) => Ok(text.into_bytes()),
            Repr::Binary { base64 } => BASE64.decode(base64).map_err(serde::de::Error::custom),
        }
    }
}

pub(crate) mod body_bytes {
    //! Bodies serialize as base64 text in JSON; the store keeps them as BLOBs.
    use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        BASE64
            .decode(text)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_omits_default_port_and_brackets_ipv6() {
        let mut request = Request {
            method: "GET".into(),
            scheme: "https".into(),
            host: "example.com".into(),
            port: 443,
            path: "/a?b".into(),
            http_version: "HTTP/1.1".into(),
            stream_id: None,
            headers: Headers::default(),
            body: Body::default(),
            trailers: None,
        };
        assert_eq!(request.url(), "https://example.com/a?b");
        request.port = 8443;
        assert_eq!(request.url(), "https://example.com:8443/a?b");
        request.host = "::1".into();
        assert_eq!(request.url(), "https://[::1]:8443/a?b");
    }

    #[test]
    fn non_utf8_header_values_survive_json() {
        let header = Header::new("x-bin", vec![0xff, 0x00, b'a']);
        let json = serde_json::to_string(&header).unwrap();
        assert!(json.contains("base64"), "{json}");
        let back: Header = serde_json::from_str(&json).unwrap();
        assert_eq!(back, header);
        let text = Header::new("x-text", "héllo");
        let json = serde_json::to_string(&text).unwrap();
        assert_eq!(json, r#"{"name":"x-text","value":"héllo"}"#);
    }
}
