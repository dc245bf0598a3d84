//! A flow as the API shows it: mitmweb's `flow_to_json` shape (so tools written for
//! mitmweb read it), plus what Periscope records that mitmweb has no name for — the
//! timeline with its TLS events, the intercept point, HTTP/2 stream ids, WebSocket
//! messages. `crates/api/README.md` documents every field.
//!
//! Bodies are left out (they are served by `content.data`); their length and SHA-256
//! are in, as in mitmweb, so a UI knows when to fetch them again.

use std::borrow::Cow;
use std::net::SocketAddr;

use periscope_control::Content;
use periscope_model::{
    Body, CertificateSummary, ConnectionInfo, Flow, FlowId, Headers, Interception, Milestone,
    Timeline, TimelineEntry, TimelineEvent, Timestamp, WebSocketMessage, WebSocketOpcode,
    WebSocketSession,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// How much of a flow to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// What lists and live updates carry: everything but bodies and WebSocket
    /// message contents (a flow may hold 100,000 messages).
    Summary,
    /// `GET /flows/{id}`: the summary plus the WebSocket messages.
    Full,
}

/// The flow's JSON, as `GET /flows` and the updates WebSocket send it.
pub fn flow_json(flow: &Flow, detail: Detail) -> serde_json::Value {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_value(FlowJson::new(flow, detail)).unwrap_or_default()
}

/// A log entry as mitmweb's `events/add` and `GET /events` carry it.
#[derive(Serialize)]
pub struct LogJson<'a> {
    pub id: u64,
    pub message: &'a str,
    pub level: &'static str,
    pub timestamp: f64,
}

impl<'a> LogJson<'a> {
    pub fn new(id: u64, entry: &'a periscope_model::LogEntry) -> Self {
        use periscope_model::LogLevel;
        LogJson {
            id,
            message: &entry.message,
            level: match entry.level {
                LogLevel::Debug => "debug",
                LogLevel::Info => "info",
                LogLevel::Warn => "warn",
                LogLevel::Error => "error",
            },
            timestamp: seconds(entry.at),
        }
    }
}

#[derive(Serialize)]
struct FlowJson<'a> {
    id: FlowId,
    #[serde(rename = "type")]
    kind: &'static str,
    intercepted: bool,
    /// mitmweb: `"request"` for a flow made by replaying a request, else null.
    is_replay: Option<&'static str>,
    modified: bool,
    marked: bool,
    comment: &'a str,
    timestamp_created: Option<f64>,
    client_conn: ClientConnJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_conn: Option<ServerConnJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorJson<'a>>,
    request: RequestJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ResponseJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    websocket: Option<WebSocketJson<'a>>,
    // Periscope's own, below.
    /// Where the flow waits for the user, while `intercepted`.
    intercept: Option<InterceptJson<'a>>,
    replay_of: Option<FlowId>,
    duplicate_of: Option<FlowId>,
    /// Came through a CONNECT tunnel or TLS listener that Periscope terminated.
    intercepted_tls: bool,
    timeline: Vec<TimelineJson<'a>>,
}

impl<'a> FlowJson<'a> {
    fn new(flow: &'a Flow, detail: Detail) -> Self {
        let timeline = &flow.timeline;
        let annotations = &flow.annotations;
        FlowJson {
            id: flow.id,
            kind: "http",
            intercepted: flow.intercepted.is_some(),
            is_replay: annotations.replay_of.map(|_| "request"),
            modified: annotations.modified,
            marked: flow.marked,
            comment: &annotations.comment,
            timestamp_created: created_at(flow).map(seconds),
            client_conn: ClientConnJson::new(&flow.client, timeline),
            server_conn: flow
                .server
                .as_ref()
                .map(|server| ServerConnJson::new(server, timeline)),
            error: flow.error.as_ref().map(|error| ErrorJson {
                msg: &error.message,
                timestamp: seconds(error.at),
                kind: error.kind.clone(),
            }),
            request: RequestJson::new(flow),
            response: flow
                .response
                .as_ref()
                .map(|response| ResponseJson::new(response, timeline)),
            websocket: flow
                .websocket
                .as_ref()
                .map(|session| WebSocketJson::new(session, detail)),
            intercept: flow.intercepted.as_ref().map(InterceptJson::new),
            replay_of: annotations.replay_of,
            duplicate_of: annotations.duplicate_of,
            intercepted_tls: flow.intercepted_tls,
            timeline: timeline.entries().iter().map(TimelineJson::new).collect(),
        }
    }
}

/// When the flow began: its first request byte; else (a request that never got that
/// far) its first timeline entry or its error. Not the first entry always: on a
/// reused connection that is the connection's setup, maybe minutes earlier.
fn created_at(flow: &Flow) -> Option<Timestamp> {
    flow.started_at()
        .or_else(|| flow.timeline.entries().first().map(|entry| entry.at))
        .or_else(|| flow.error.as_ref().map(|error| error.at))
}

/// mitmweb's timestamps: seconds since the epoch, as a float.
fn seconds(at: Timestamp) -> f64 {
    at.as_secs_f64()
}

fn milestone(timeline: &Timeline, milestone: Milestone) -> Option<f64> {
    timeline.milestone(milestone).map(seconds)
}

/// `[ip, port]`, as mitmweb writes addresses.
fn address(addr: Option<SocketAddr>) -> Option<(String, u16)> {
    addr.map(|a| (a.ip().to_string(), a.port()))
}

/// `host:port` (or `[v6]:port`) split into `[host, port]`.
fn split_target(target: &str) -> Option<(String, u16)> {
    let authority: http::uri::Authority = target.parse().ok()?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host.to_owned(), authority.port_u16()?))
}

/// A header value as text: UTF-8 when it is (nearly always), else each byte as the
/// Latin-1 character of that number, which loses nothing (HTTP's historical reading
/// of header bytes).
fn header_text(value: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(value) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(value.iter().map(|&b| char::from(b)).collect()),
    }
}

/// mitmweb's header list: `[[name, value], ...]` in the order received.
fn header_pairs(headers: &Headers) -> Vec<(&str, Cow<'_, str>)> {
    headers
        .iter()
        .map(|header| (header.name.as_str(), header_text(&header.value)))
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

#[derive(Serialize)]
struct CertJson<'a> {
    subject: &'a str,
    issuer: &'a str,
    altnames: &'a [String],
    notbefore: &'a str,
    notafter: &'a str,
    serial: &'a str,
    /// Lowercase hex without colons, as mitmweb's.
    sha256: String,
}

impl<'a> CertJson<'a> {
    fn new(cert: &'a CertificateSummary) -> Self {
        CertJson {
            subject: &cert.subject,
            issuer: &cert.issuer,
            altnames: &cert.subject_alt_names,
            notbefore: &cert.not_before,
            notafter: &cert.not_after,
            serial: &cert.serial,
            sha256: cert
                .sha256_fingerprint
                .chars()
                .filter(|c| *c != ':')
                .flat_map(char::to_lowercase)
                .collect(),
        }
    }
}

/// The TLS fields both connections share.
#[derive(Serialize)]
struct TlsFields<'a> {
    tls_established: bool,
    cert: Option<CertJson<'a>>,
    sni: Option<&'a str>,
    cipher: Option<&'a str>,
    alpn: Option<&'a str>,
    tls_version: Option<&'a str>,
    /// Periscope's own: the first handshake resumed an earlier session.
    tls_session_resumed: Option<bool>,
    /// Periscope's own: the key-exchange group agreed on (`x25519`, `X25519MLKEM768`).
    tls_key_exchange: Option<&'a str>,
    /// Periscope's own: the other certificates the peer sent with `cert`, in order.
    cert_chain: Vec<CertJson<'a>>,
}

impl<'a> TlsFields<'a> {
    fn new(connection: &'a ConnectionInfo) -> Self {
        let tls = connection.tls.as_ref();
        TlsFields {
            tls_established: tls.is_some(),
            cert: tls
                .and_then(|t| t.peer_certificate.as_ref())
                .map(CertJson::new),
            sni: tls.and_then(|t| t.sni.as_deref()),
            cipher: tls.map(|t| t.cipher.as_str()),
            alpn: tls.and_then(|t| t.alpn.as_deref()),
            tls_version: tls.map(|t| t.version.as_str()),
            tls_session_resumed: tls.map(|t| t.resumed),
            tls_key_exchange: tls.and_then(|t| t.key_exchange.as_deref()),
            cert_chain: tls
                .map(|t| t.peer_chain.iter().map(CertJson::new).collect())
                .unwrap_or_default(),
        }
    }
}

#[derive(Serialize)]
struct ClientConnJson<'a> {
    id: u64,
    peername: Option<(String, u16)>,
    sockname: Option<(String, u16)>,
    #[serde(flatten)]
    tls: TlsFields<'a>,
    timestamp_start: Option<f64>,
    timestamp_tls_setup: Option<f64>,
    /// Not recorded: a flow is published before its connection closes.
    timestamp_end: Option<f64>,
}

impl<'a> ClientConnJson<'a> {
    fn new(connection: &'a ConnectionInfo, timeline: &Timeline) -> Self {
        ClientConnJson {
            id: connection.id,
            peername: address(connection.peer),
            sockname: address(connection.local),
            tls: TlsFields::new(connection),
            timestamp_start: milestone(timeline, Milestone::ClientConnected),
            timestamp_tls_setup: milestone(timeline, Milestone::ClientTlsEstablished),
            timestamp_end: None,
        }
    }
}

#[derive(Serialize)]
struct ServerConnJson<'a> {
    id: u64,
    peername: Option<(String, u16)>,
    sockname: Option<(String, u16)>,
    /// The address asked for, `[host, port]`.
    address: Option<(String, u16)>,
    #[serde(flatten)]
    tls: TlsFields<'a>,
    timestamp_start: Option<f64>,
    timestamp_tcp_setup: Option<f64>,
    timestamp_tls_setup: Option<f64>,
    timestamp_end: Option<f64>,
}

impl<'a> ServerConnJson<'a> {
    fn new(connection: &'a ConnectionInfo, timeline: &Timeline) -> Self {
        ServerConnJson {
            id: connection.id,
            peername: address(connection.peer),
            sockname: address(connection.local),
            address: connection.target.as_deref().and_then(split_target),
            tls: TlsFields::new(connection),
            timestamp_start: milestone(timeline, Milestone::ServerConnectInitiated),
            timestamp_tcp_setup: milestone(timeline, Milestone::ServerTcpConnected),
            timestamp_tls_setup: milestone(timeline, Milestone::ServerTlsEstablished),
            timestamp_end: None,
        }
    }
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    msg: &'a str,
    timestamp: f64,
    /// Periscope's grouping of errors (`connect`, `timeout`, `upstream_tls`, ...).
    kind: periscope_model::FlowErrorKind,
}

/// What mitmweb and Periscope both say about a body.
#[derive(Serialize)]
struct BodyFields {
    /// Bytes recorded (what `content.data` returns), as mitmweb's.
    #[serde(rename = "contentLength")]
    content_length: usize,
    #[serde(rename = "contentHash")]
    content_hash: String,
    /// Bytes that passed through the proxy; more than `contentLength` when truncated.
    size: u64,
    /// The body limit cut the recording short.
    truncated: bool,
}

impl BodyFields {
    fn new(body: &Body) -> Self {
        BodyFields {
            content_length: body.content.len(),
            content_hash: sha256_hex(&body.content),
            size: body.size,
            truncated: body.truncated,
        }
    }
}

#[derive(Serialize)]
struct RequestJson<'a> {
    method: &'a str,
    scheme: &'a str,
    host: &'a str,
    port: u16,
    path: &'a str,
    http_version: &'a str,
    headers: Vec<(&'a str, Cow<'a, str>)>,
    #[serde(flatten)]
    body: BodyFields,
    timestamp_start: Option<f64>,
    timestamp_end: Option<f64>,
    pretty_host: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trailers: Option<Vec<(&'a str, Cow<'a, str>)>>,
    /// The HTTP/2 stream on the client's connection.
    stream_id: Option<u32>,
}

impl<'a> RequestJson<'a> {
    fn new(flow: &'a Flow) -> Self {
        let request = &flow.request;
        RequestJson {
            method: &request.method,
            scheme: &request.scheme,
            host: &request.host,
            port: request.port,
            path: &request.path,
            http_version: &request.http_version,
            headers: header_pairs(&request.headers),
            body: BodyFields::new(&request.body),
            timestamp_start: milestone(&flow.timeline, Milestone::RequestStarted),
            timestamp_end: milestone(&flow.timeline, Milestone::RequestComplete),
            pretty_host: &request.host,
            trailers: request.trailers.as_ref().map(header_pairs),
            stream_id: request.stream_id,
        }
    }
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    http_version: &'a str,
    status_code: u16,
    reason: &'a str,
    headers: Vec<(&'a str, Cow<'a, str>)>,
    #[serde(flatten)]
    body: BodyFields,
    timestamp_start: Option<f64>,
    timestamp_end: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trailers: Option<Vec<(&'a str, Cow<'a, str>)>>,
    /// The HTTP/2 stream on the server's connection.
    stream_id: Option<u32>,
    /// Periscope wrote this response itself (an error page).
    generated: bool,
}

impl<'a> ResponseJson<'a> {
    fn new(response: &'a periscope_model::Response, timeline: &Timeline) -> Self {
        ResponseJson {
            http_version: &response.http_version,
            status_code: response.status,
            reason: &response.reason,
            headers: header_pairs(&response.headers),
            body: BodyFields::new(&response.body),
            timestamp_start: milestone(timeline, Milestone::ResponseStarted),
            timestamp_end: milestone(timeline, Milestone::ResponseComplete),
            trailers: response.trailers.as_ref().map(header_pairs),
            stream_id: response.stream_id,
            generated: response.generated,
        }
    }
}

#[derive(Serialize)]
struct MessagesMeta {
    #[serde(rename = "contentLength")]
    content_length: usize,
    count: usize,
    timestamp_last: Option<f64>,
}

#[derive(Serialize)]
struct WebSocketJson<'a> {
    messages_meta: MessagesMeta,
    closed_by_client: Option<bool>,
    close_code: Option<u16>,
    close_reason: Option<&'a str>,
    timestamp_end: Option<f64>,
    /// `Sec-WebSocket-Extensions` the server accepted.
    extensions: Option<&'a str>,
    /// Messages seen but not kept (past the body limit).
    dropped_messages: u64,
    /// Only in `GET /flows/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<MessageJson>>,
}

impl<'a> WebSocketJson<'a> {
    fn new(session: &'a WebSocketSession, detail: Detail) -> Self {
        WebSocketJson {
            messages_meta: MessagesMeta {
                content_length: session.messages.iter().map(|m| m.content.len()).sum(),
                count: session.messages.len(),
                timestamp_last: session.messages.last().map(|m| seconds(m.at)),
            },
            closed_by_client: session.closed_by_client,
            close_code: session.close_code,
            close_reason: session.close_reason.as_deref(),
            timestamp_end: session.closed_at.map(seconds),
            extensions: session.extensions.as_deref(),
            dropped_messages: session.dropped_messages,
            messages: (detail == Detail::Full)
                .then(|| session.messages.iter().map(MessageJson::new).collect()),
        }
    }
}

/// One WebSocket message; `content` is text for a text message, `{"base64": ...}`
/// otherwise.
#[derive(Serialize)]
pub struct MessageJson {
    from_client: bool,
    #[serde(rename = "type")]
    opcode: &'static str,
    content: Content,
    size: u64,
    truncated: bool,
    frames: u32,
    timestamp: f64,
}

impl MessageJson {
    pub fn new(message: &WebSocketMessage) -> Self {
        let content = match (message.opcode, std::str::from_utf8(&message.content)) {
            (WebSocketOpcode::Text, Ok(text)) => Content::Text(text.to_owned()),
            _ => Content::from_bytes(&message.content),
        };
        MessageJson {
            from_client: message.from_client,
            opcode: message.opcode.name(),
            content,
            size: message.size,
            truncated: message.truncated,
            frames: message.frames,
            timestamp: seconds(message.at),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "at", rename_all = "snake_case")]
enum InterceptJson<'a> {
    Request,
    Response,
    WebsocketMessage {
        message: MessageJson,
    },
    ClientCertificate {
        ca_names: &'a [String],
        post_handshake: bool,
    },
}

impl<'a> InterceptJson<'a> {
    fn new(interception: &'a Interception) -> Self {
        match interception {
            Interception::Request => InterceptJson::Request,
            Interception::Response => InterceptJson::Response,
            Interception::WebSocketMessage { message } => InterceptJson::WebsocketMessage {
                message: MessageJson::new(message),
            },
            Interception::ClientCertificate {
                ca_names,
                post_handshake,
            } => InterceptJson::ClientCertificate {
                ca_names,
                post_handshake: *post_handshake,
            },
        }
    }
}

/// A timeline entry: the model's fields (`entry` is `milestone`, `tls` or `note`) with
/// the time in seconds and a line of text a UI can show as it is.
#[derive(Serialize)]
struct TimelineJson<'a> {
    timestamp: f64,
    #[serde(flatten)]
    event: &'a TimelineEvent,
    text: String,
}

impl<'a> TimelineJson<'a> {
    fn new(entry: &'a TimelineEntry) -> Self {
        let text = match &entry.event {
            TimelineEvent::Milestone { milestone } => milestone.label().to_owned(),
            TimelineEvent::Tls(event) => event.to_string(),
            TimelineEvent::Note { message } => message.clone(),
        };
        TimelineJson {
            timestamp: seconds(entry.at),
            event: &entry.event,
            text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_host_and_port_like_mitmweb_addresses() {
        assert_eq!(
            split_target("example.com:443"),
            Some(("example.com".to_owned(), 443))
        );
        assert_eq!(split_target("[::1]:8443"), Some(("::1".to_owned(), 8443)));
        assert_eq!(split_target("no-port"), None);
    }

    #[test]
    fn header_values_that_are_not_utf8_read_as_latin1_without_loss() {
        assert_eq!(header_text(b"plain"), "plain");
        let text = header_text(&[b'a', 0xe9, 0xff]);
        assert_eq!(text, "a\u{e9}\u{ff}");
        let back: Vec<u8> = text.chars().map(|c| c as u8).collect();
        assert_eq!(back, vec![b'a', 0xe9, 0xff]);
    }

    #[test]
    fn content_hash_is_mitmwebs_sha256_hex() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
