//! HAR 1.2 export: flows as an HTTP Archive that Chrome DevTools, Firefox and HAR
//! viewers import, plus what only Periscope knows in `_`-prefixed fields.
//!
//! ```
//! use periscope_flow::har;
//!
//! let value = har::to_har(Vec::new(), "0.1.0");
//! assert_eq!(value["log"]["version"], "1.2");
//! assert_eq!(value["log"]["creator"]["name"], "Periscope");
//!
//! // A session of any size streams, one entry at a time.
//! let mut writer = har::HarWriter::new(Vec::new(), "0.1.0")?;
//! // writer.write_flow(&flow)?; for each flow, e.g. from FlowStore::for_each
//! let bytes = writer.finish()?;
//! let parsed: serde_json::Value = serde_json::from_slice(&bytes)?;
//! assert_eq!(parsed, value);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What goes where
//!
//! - Bodies are decoded (`Content-Encoding` undone) into `text`; bytes that are
//!   not UTF-8 are base64 with `"encoding": "base64"` (also on `postData`, as
//!   several tools accept). A body cut by the body limit says so in `comment`.
//! - `timings` follow the HAR 1.2 rules, from the timeline's milestones: `connect`
//!   and `ssl` only when the server connection was opened for this flow (else -1),
//!   and, as the spec requires, `connect` includes `ssl`; `blocked` is the time
//!   from the first request byte until that connection was started; `dns` is
//!   inside `connect` (-1); `send` ends at the last request byte, `wait` at the
//!   first response byte, `receive` at the last. A phase cut short by an error
//!   ends at the error. `time` is the sum of the non-negative phases but `ssl`.
//! - `_tlsEvents`: every TLS event of the flow (renegotiations, certificate
//!   requests, KeyUpdates, alerts) as `{time, leg, type, details, text}`;
//!   `_notes`: what Periscope did on the flow's behalf, as `{time, text}`.
//! - `_error` and `_errorKind` on a failed flow; a flow without a response gets
//!   status 0 and `response._error`, as Chrome writes failed requests.
//! - `_mode`: the proxy mode the flow came through, as written (`socks5`,
//!   `reverse:https://example.com:443`), for flows of another mode than `regular`.
//!
//! HAR archives HTTP: connections relayed as TCP (ignored hosts, `--tcp-hosts`,
//! anything neither TLS nor HTTP) are left out.

use std::borrow::Cow;
use std::io::{self, Write};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};

use crate::content::decode_body;
use crate::model::{Body, Flow, Headers, Timestamp};
use crate::timeline::{Leg, Milestone};

/// The creator name written in `log.creator.name`.
pub const CREATOR_NAME: &str = "Periscope";

/// The whole archive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Har {
    pub log: Log,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Log {
    pub version: String,
    pub creator: Creator,
    /// Periscope sees requests, not pages: always empty, present because some
    /// importers expect the array.
    pub pages: Vec<Page>,
    pub entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Creator {
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    pub started_date_time: String,
    pub id: String,
    pub title: String,
    pub page_timings: PageTimings,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageTimings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_content_load: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_load: Option<f64>,
}

/// One flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// RFC 3339 with milliseconds, UTC.
    pub started_date_time: String,
    /// Milliseconds: the sum of the non-negative `timings` but `ssl`.
    pub time: f64,
    pub request: HarRequest,
    pub response: HarResponse,
    pub cache: Cache,
    pub timings: Timings,
    #[serde(rename = "serverIPAddress", skip_serializing_if = "Option::is_none")]
    pub server_ip_address: Option<String>,
    /// The id of the server connection, shared by the flows that used it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(rename = "_tlsEvents")]
    pub tls_events: Vec<HarTlsEvent>,
    /// What Periscope did on the flow's behalf (an HTTP/1.1 fallback, a retry).
    #[serde(rename = "_notes", default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<HarNote>,
    /// Why the flow failed, as the user saw it.
    #[serde(rename = "_error", skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The error's kind (`timeout`, `client_certificate_required`, ...).
    #[serde(rename = "_errorKind", skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// `websocket` for WebSocket entries, as Chrome writes it.
    #[serde(rename = "_resourceType", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// The WebSocket messages, in Chrome's format.
    #[serde(
        rename = "_webSocketMessages",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub web_socket_messages: Vec<HarWebSocketMessage>,
    #[serde(rename = "_mode", default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The rules that changed the flow (map_local, modify_headers, …).
    #[serde(
        rename = "_periscopeRules",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub rules: Vec<crate::AppliedRule>,
}

/// A WebSocket message as Chrome DevTools writes it in `_webSocketMessages`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HarWebSocketMessage {
    /// `send` (from the client) or `receive`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Seconds since the Unix epoch.
    pub time: f64,
    pub opcode: u8,
    /// Text as is; other payloads base64.
    pub data: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HarRequest {
    pub method: String,
    pub url: String,
    pub http_version: String,
    pub cookies: Vec<Cookie>,
    pub headers: Vec<NameValue>,
    pub query_string: Vec<NameValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_data: Option<PostData>,
    /// -1: the exact size of the header block on the wire is not recorded.
    pub headers_size: i64,
    pub body_size: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The HTTP/2 stream of the client's connection the request came on.
    #[serde(rename = "_streamId", default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HarResponse {
    pub status: u16,
    pub status_text: String,
    pub http_version: String,
    pub cookies: Vec<Cookie>,
    pub headers: Vec<NameValue>,
    pub content: Content,
    #[serde(rename = "redirectURL")]
    pub redirect_url: String,
    pub headers_size: i64,
    pub body_size: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Chrome's field for a request that got no response; DevTools shows it.
    #[serde(rename = "_error", skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The HTTP/2 stream of the server's connection the response came on.
    #[serde(rename = "_streamId", default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<u32>,
}

/// A header or a query parameter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cookie {
    pub name: String,
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostData {
    pub mime_type: String,
    pub text: String,
    /// `base64` when `text` holds base64 of bytes that are not UTF-8 (not in HAR
    /// 1.2 for postData; understood by several importers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    /// Bytes of the decoded content.
    pub size: i64,
    /// Bytes saved by `Content-Encoding`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<i64>,
    pub mime_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Periscope does not cache: always `{}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {}

/// Milliseconds; -1 where a phase does not apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub blocked: f64,
    pub dns: f64,
    pub connect: f64,
    pub send: f64,
    pub wait: f64,
    pub receive: f64,
    pub ssl: f64,
}

/// A TLS event in `_tlsEvents`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HarTlsEvent {
    /// RFC 3339 with microseconds: renegotiation steps are often within a millisecond.
    pub time: String,
    pub leg: Leg,
    /// The event's kind, as in the flow JSON: `hello_request`, `renegotiation_started`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The kind's fields (`direction`, `ca_names`, `version`, ...).
    pub details: serde_json::Map<String, serde_json::Value>,
    /// The line `periscope dump` prints for it.
    pub text: String,
}

/// A timeline note in `_notes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HarNote {
    /// RFC 3339 with microseconds.
    pub time: String,
    pub text: String,
}

/// The archive of `flows` as JSON.
pub fn to_har(flows: impl IntoIterator<Item = Flow>, creator_version: &str) -> serde_json::Value {
    let har = Har {
        log: Log {
            version: "1.2".to_owned(),
            creator: creator(creator_version),
            pages: Vec::new(),
            entries: flows
                .into_iter()
                .filter(|flow| flow.tcp.is_none())
                .map(|flow| entry(&flow))
                .collect(),
        },
    };
    serde_json::to_value(har).unwrap_or_default()
}

/// Writes the archive of `flows` to `out`, one entry at a time.
pub fn write_har<W: Write>(
    out: W,
    flows: impl IntoIterator<Item = Flow>,
    creator_version: &str,
) -> io::Result<W> {
    let mut writer = HarWriter::new(out, creator_version)?;
    for flow in flows {
        writer.write_flow(&flow)?;
    }
    writer.finish()
}

/// Streams an archive: the head on `new`, an entry per `write_flow`, the tail on
/// `finish`. Memory use does not grow with the number of flows. Entries are
/// written in many small pieces: give it a `BufWriter` when `out` is a file.
pub struct HarWriter<W: Write> {
    out: W,
    entries: usize,
}

impl<W: Write> HarWriter<W> {
    pub fn new(mut out: W, creator_version: &str) -> io::Result<Self> {
        out.write_all(br#"{"log":{"version":"1.2","creator":"#)?;
        serde_json::to_writer(&mut out, &creator(creator_version))?;
        out.write_all(br#","pages":[],"entries":["#)?;
        Ok(HarWriter { out, entries: 0 })
    }

    /// Writes `flow`'s entry; a TCP flow has none (see the module documentation).
    pub fn write_flow(&mut self, flow: &Flow) -> io::Result<()> {
        if flow.tcp.is_some() {
            return Ok(());
        }
        if self.entries > 0 {
            self.out.write_all(b",")?;
        }
        serde_json::to_writer(&mut self.out, &entry(flow))?;
        self.entries += 1;
        Ok(())
    }

    /// How many entries were written.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Closes the archive and returns the writer, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(b"]}}")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn creator(version: &str) -> Creator {
    Creator {
        name: CREATOR_NAME.to_owned(),
        version: version.to_owned(),
    }
}

/// The HAR entry for one flow.
pub fn entry(flow: &Flow) -> Entry {
    let (timings, time) = timings(flow);
    let server = flow.server.as_ref();
    Entry {
        started_date_time: rfc3339(start_of(flow), 3),
        time,
        request: request(flow),
        response: response(flow),
        cache: Cache {},
        timings,
        server_ip_address: server
            .and_then(|s| s.peer)
            .map(|peer| peer.ip().to_string()),
        connection: server.map(|s| s.id.to_string()),
        comment: None,
        tls_events: flow
            .timeline
            .tls_events()
            .map(|(at, event)| {
                let mut details = match serde_json::to_value(&event.kind) {
                    Ok(serde_json::Value::Object(map)) => map,
                    _ => serde_json::Map::new(),
                };
                let kind = match details.remove("type") {
                    Some(serde_json::Value::String(kind)) => kind,
                    _ => String::new(),
                };
                HarTlsEvent {
                    time: rfc3339(at, 6),
                    leg: event.leg,
                    kind,
                    details,
                    text: event.to_string(),
                }
            })
            .collect(),
        notes: flow
            .timeline
            .notes()
            .map(|(at, text)| HarNote {
                time: rfc3339(at, 6),
                text: text.to_owned(),
            })
            .collect(),
        error: flow.error.as_ref().map(|e| e.message.clone()),
        error_kind: flow.error.as_ref().and_then(|e| {
            serde_json::to_value(&e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
        }),
        resource_type: flow.websocket.as_ref().map(|_| "websocket".to_owned()),
        mode: flow
            .listener
            .as_ref()
            .filter(|listener| listener.mode != "regular")
            .map(|listener| listener.mode.clone()),
        rules: flow.rules.clone(),
        web_socket_messages: flow
            .websocket
            .iter()
            .flat_map(|session| &session.messages)
            .map(|message| HarWebSocketMessage {
                kind: if message.from_client {
                    "send"
                } else {
                    "receive"
                }
                .to_owned(),
                time: message.at.as_secs_f64(),
                opcode: message.opcode.number(),
                data: match message.text() {
                    Some(text) => text.to_owned(),
                    None => BASE64.encode(&message.content),
                },
            })
            .collect(),
    }
}

fn request(flow: &Flow) -> HarRequest {
    let request = &flow.request;
    let query = request
        .path
        .split_once('?')
        .map(|(_, query)| query.split('#').next().unwrap_or(""))
        .unwrap_or("");
    let post_data = (!request.body.content.is_empty() || request.body.size > 0).then(|| {
        let decoded = decode(&request.headers, &request.body);
        PostData {
            mime_type: header_string(&request.headers, "content-type").unwrap_or_default(),
            text: decoded.text,
            encoding: decoded.encoding,
            comment: decoded.comment,
        }
    });
    HarRequest {
        method: request.method.clone(),
        url: request.url(),
        http_version: request.http_version.clone(),
        cookies: request_cookies(&request.headers),
        headers: name_values(&request.headers),
        query_string: form_urlencoded::parse(query.as_bytes())
            .map(|(name, value)| NameValue {
                name: name.into_owned(),
                value: value.into_owned(),
            })
            .collect(),
        post_data,
        headers_size: -1,
        body_size: saturating_i64(request.body.size),
        comment: None,
        stream_id: request.stream_id,
    }
}

fn response(flow: &Flow) -> HarResponse {
    let Some(response) = &flow.response else {
        return HarResponse {
            status: 0,
            status_text: String::new(),
            http_version: String::new(),
            cookies: Vec::new(),
            headers: Vec::new(),
            content: Content {
                size: 0,
                compression: None,
                mime_type: "x-unknown".to_owned(),
                text: None,
                encoding: None,
                comment: None,
            },
            redirect_url: String::new(),
            headers_size: -1,
            body_size: -1,
            comment: None,
            error: Some(
                flow.error
                    .as_ref()
                    .map_or_else(|| "no response".to_owned(), |e| e.message.clone()),
            ),
            stream_id: None,
        };
    };
    let decoded = decode(&response.headers, &response.body);
    let set_at = flow
        .timeline
        .milestone(Milestone::ResponseStarted)
        .unwrap_or_else(|| start_of(flow));
    HarResponse {
        status: response.status,
        status_text: response.reason.clone(),
        http_version: response.http_version.clone(),
        cookies: response
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|h| set_cookie(&h.value_lossy(), set_at))
            .collect(),
        headers: name_values(&response.headers),
        content: Content {
            size: saturating_i64(decoded.size),
            compression: decoded.compression,
            mime_type: header_string(&response.headers, "content-type")
                .unwrap_or_else(|| "x-unknown".to_owned()),
            text: (decoded.size > 0 || !decoded.text.is_empty()).then_some(decoded.text),
            encoding: decoded.encoding,
            comment: decoded.comment,
        },
        redirect_url: header_string(&response.headers, "location").unwrap_or_default(),
        headers_size: -1,
        body_size: saturating_i64(response.body.size),
        comment: response
            .generated
            .then(|| "response generated by Periscope, not sent by the server".to_owned()),
        error: None,
        stream_id: response.stream_id,
    }
}

fn name_values(headers: &Headers) -> Vec<NameValue> {
    headers
        .iter()
        .map(|h| NameValue {
            name: h.name.clone(),
            value: h.value_lossy().into_owned(),
        })
        .collect()
}

fn header_string(headers: &Headers, name: &str) -> Option<String> {
    headers.get_str(name).map(Cow::into_owned)
}

/// A body as HAR text.
struct DecodedBody {
    text: String,
    encoding: Option<String>,
    /// Bytes the text stands for.
    size: u64,
    compression: Option<i64>,
    comment: Option<String>,
}

fn decode(headers: &Headers, body: &Body) -> DecodedBody {
    let codings: Vec<_> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-encoding"))
        .map(|h| h.value_lossy())
        .collect();
    let coding = (!codings.is_empty()).then(|| codings.join(","));
    let mut comments = Vec::new();
    if body.truncated {
        comments.push(format!(
            "truncated: Periscope recorded {} of {} bytes",
            body.content.len(),
            body.size
        ));
    }
    let (bytes, compression) = match decode_body(coding.as_deref(), &body.content) {
        Ok(decoded) => {
            let compression = (coding.is_some() && !body.truncated)
                .then(|| saturating_i64(decoded.len() as u64) - saturating_i64(body.size));
            (decoded, compression)
        }
        Err(error) => {
            comments.push(format!("not decoded ({error}): the bytes as received"));
            (Cow::Borrowed(&body.content[..]), None)
        }
    };
    let size = bytes.len() as u64;
    let (text, encoding) = match std::str::from_utf8(&bytes) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => (BASE64.encode(&bytes), Some("base64".to_owned())),
    };
    DecodedBody {
        text,
        encoding,
        size,
        compression,
        comment: (!comments.is_empty()).then(|| comments.join("; ")),
    }
}

/// The cookies of every `Cookie` header.
fn request_cookies(headers: &Headers) -> Vec<Cookie> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .flat_map(|h| {
            h.value_lossy()
                .split(';')
                .map(str::trim)
                .filter(|pair| !pair.is_empty())
                .map(request_cookie)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One `name=value` pair of a `Cookie` header.
fn request_cookie(pair: &str) -> Cookie {
    match cookie::Cookie::parse(pair) {
        Ok(parsed) => Cookie {
            name: parsed.name().to_owned(),
            value: parsed.value().to_owned(),
            ..Cookie::default()
        },
        // A pair without a name (`flag`, `=flag`) is a value with an empty name, as
        // browsers keep it (RFC 6265bis §5.6); the cookie crate refuses those.
        Err(_) => Cookie {
            value: pair.strip_prefix('=').unwrap_or(pair).trim().to_owned(),
            ..Cookie::default()
        },
    }
}

/// One `Set-Cookie` value, as the cookie crate reads it (an `Expires` in any of the
/// date forms cookies use; one it cannot read is left out). `received` turns
/// `Max-Age` into an expiry time.
fn set_cookie(value: &str, received: Timestamp) -> Option<Cookie> {
    let parsed = cookie::Cookie::parse(value).ok()?;
    let expires = match (parsed.max_age(), parsed.expires_datetime()) {
        // Max-Age wins over Expires (RFC 6265 §5.3 step 3).
        (Some(max_age), _) => {
            Some(Timestamp(received.0.saturating_add(
                max_age.whole_seconds().saturating_mul(1_000_000),
            )))
        }
        (None, Some(at)) => i64::try_from(at.unix_timestamp_nanos() / 1_000)
            .ok()
            .map(Timestamp),
        (None, None) => None,
    };
    Some(Cookie {
        name: parsed.name().to_owned(),
        value: parsed.value().to_owned(),
        path: parsed.path().map(str::to_owned),
        domain: parsed.domain().map(str::to_owned),
        expires: expires.map(|at| rfc3339(at, 3)),
        http_only: Some(parsed.http_only().unwrap_or(false)),
        secure: Some(parsed.secure().unwrap_or(false)),
    })
}

/// When the flow began: its first request byte, else the first thing recorded.
fn start_of(flow: &Flow) -> Timestamp {
    flow.started_at()
        .or_else(|| flow.timeline.entries().first().map(|e| e.at))
        .or_else(|| flow.error.as_ref().map(|e| e.at))
        .unwrap_or(Timestamp(0))
}

/// The HAR timings and the entry's `time`. See the module documentation.
fn timings(flow: &Flow) -> (Timings, f64) {
    let timeline = &flow.timeline;
    let start = start_of(flow);
    let mut at = start;
    // The first phase whose end is missing ends at the error, if there is one.
    let mut failure = flow.error.as_ref().map(|e| e.at);
    let mut phase = |end: Option<Timestamp>| -> Option<f64> {
        let end = end.or_else(|| failure.take())?.max(at);
        let length = end.millis_since(at);
        at = end;
        Some(round_ms(length))
    };

    // A connection opened before the request started was made for an earlier one.
    let opened_here = timeline
        .milestone(Milestone::ServerConnectInitiated)
        .filter(|&initiated| initiated >= start);
    let (blocked, connect, ssl) = match opened_here {
        Some(initiated) => {
            let blocked = phase(Some(initiated));
            let tcp = phase(timeline.milestone(Milestone::ServerTcpConnected));
            let tls_end = timeline.milestone(Milestone::ServerTlsEstablished);
            let ssl = if tls_end.is_some() || flow.request.scheme == "https" {
                phase(tls_end)
            } else {
                None
            };
            // HAR 1.2: "If ssl is defined then the time is also included in connect".
            let connect = match (tcp, ssl) {
                (None, None) => None,
                (tcp, ssl) => Some(round_ms(tcp.unwrap_or(0.0) + ssl.unwrap_or(0.0))),
            };
            (blocked, connect, ssl)
        }
        None => (None, None, None),
    };
    let send = phase(timeline.milestone(Milestone::RequestComplete)).unwrap_or(0.0);
    let wait = phase(timeline.milestone(Milestone::ResponseStarted)).unwrap_or(0.0);
    let receive = phase(timeline.milestone(Milestone::ResponseComplete)).unwrap_or(0.0);

    let or_unknown = |t: Option<f64>| t.unwrap_or(-1.0);
    let timings = Timings {
        blocked: or_unknown(blocked),
        dns: -1.0,
        connect: or_unknown(connect),
        send,
        wait,
        receive,
        ssl: or_unknown(ssl),
    };
    let time = [
        timings.blocked,
        timings.dns,
        timings.connect,
        send,
        wait,
        receive,
    ]
    .iter()
    .filter(|&&t| t >= 0.0)
    .sum();
    (timings, round_ms(time))
}

/// Milliseconds to the microsecond the timestamps have, without float noise.
fn round_ms(ms: f64) -> f64 {
    (ms * 1_000.0).round() / 1_000.0
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The earliest and the latest time RFC 3339 can write (its years have four
/// digits), in microseconds since the epoch: 0000-01-01T00:00:00Z and
/// 9999-12-31T23:59:59.999999Z.
const RFC3339_RANGE: (i64, i64) = (-62_167_219_200_000_000, 253_402_300_799_999_999);

/// `2024-05-01T12:34:56.789Z` (3 digits) or `...56.789012Z` (6 digits). Times
/// beyond RFC 3339's years (a hostile `Max-Age`, a damaged session) are clamped
/// to them, so the archive stays valid.
fn rfc3339(at: Timestamp, digits: u32) -> String {
    let micros = at.0.clamp(RFC3339_RANGE.0, RFC3339_RANGE.1);
    let format = match digits {
        6 => SecondsFormat::Micros,
        _ => SecondsFormat::Millis,
    };
    DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(format, true)
}

#[cfg(test)]
mod tests;
