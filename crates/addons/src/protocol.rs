//! The messages between the proxy and the worker (PROTOCOL.md): flows as the worker
//! sees them, and the changes a hook made, applied back to the flow. Pure: no I/O.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use periscope_flow::{Body, Flow, Headers, Request, Response, TlsEvent};
use serde::Deserialize;
use serde_json::{json, Value};

/// A flow hook the worker may define. The discriminant is the bit in [`HookSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowHook {
    RequestHeaders,
    Request,
    ResponseHeaders,
    Response,
    Error,
    WebSocketStart,
    WebSocketMessage,
    WebSocketEnd,
    TlsEvent,
    TlsClientHello,
}

impl FlowHook {
    pub const ALL: [FlowHook; 10] = [
        FlowHook::RequestHeaders,
        FlowHook::Request,
        FlowHook::ResponseHeaders,
        FlowHook::Response,
        FlowHook::Error,
        FlowHook::WebSocketStart,
        FlowHook::WebSocketMessage,
        FlowHook::WebSocketEnd,
        FlowHook::TlsEvent,
        FlowHook::TlsClientHello,
    ];

    /// mitmproxy's name of the hook (Periscope's for `tls_event`).
    pub fn name(self) -> &'static str {
        match self {
            FlowHook::RequestHeaders => "requestheaders",
            FlowHook::Request => "request",
            FlowHook::ResponseHeaders => "responseheaders",
            FlowHook::Response => "response",
            FlowHook::Error => "error",
            FlowHook::WebSocketStart => "websocket_start",
            FlowHook::WebSocketMessage => "websocket_message",
            FlowHook::WebSocketEnd => "websocket_end",
            FlowHook::TlsEvent => "tls_event",
            FlowHook::TlsClientHello => "tls_clienthello",
        }
    }

    pub fn from_name(name: &str) -> Option<FlowHook> {
        FlowHook::ALL.into_iter().find(|hook| hook.name() == name)
    }

    /// The bodies the hook may read (mitmproxy's `request`/`response` run once the
    /// body is read; the `…headers` hooks before): left out of the call and sent
    /// when a script reads them (PROTOCOL.md, `deferred`).
    pub fn readable_bodies(self) -> &'static [BodySide] {
        match self {
            FlowHook::Request => &[BodySide::Request],
            FlowHook::Response => &[BodySide::Request, BodySide::Response],
            _ => &[],
        }
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// The flow hooks the loaded scripts define, as bits (read on every exchange, so a
/// plain integer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookSet(pub u32);

impl HookSet {
    pub fn contains(self, hook: FlowHook) -> bool {
        self.0 & hook.bit() != 0
    }

    pub fn insert(&mut self, hook: FlowHook) {
        self.0 |= hook.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// One script as the worker reported it after loading.
#[derive(Clone, Debug, Deserialize)]
pub struct ScriptReport {
    pub path: String,
    #[serde(default)]
    pub hooks: Vec<String>,
    /// Why it did not load: `file:line: error`.
    #[serde(default)]
    pub error: Option<String>,
}

/// What the worker writes, one JSON object a line.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// The scripts are loaded (at start, and after each restart).
    Ready { scripts: Vec<ScriptReport> },
    /// A script was reloaded: the hooks defined now.
    Hooks { scripts: Vec<ScriptReport> },
    /// A hook call ended.
    Result {
        id: u64,
        #[serde(default)]
        changes: Box<Changes>,
        #[serde(default)]
        errors: Vec<String>,
    },
    /// A line for the event log (`ctx.log`, `logging`, a traceback).
    Log { level: String, message: String },
    /// A hook of call `id` reads a body the call left out (`deferred`): the proxy
    /// answers with [`body_answer`].
    Body { id: u64, side: BodySide },
}

/// Which message's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodySide {
    Request,
    Response,
}

impl From<BodySide> for periscope_proxy::Side {
    fn from(side: BodySide) -> Self {
        match side {
            BodySide::Request => periscope_proxy::Side::Request,
            BodySide::Response => periscope_proxy::Side::Response,
        }
    }
}

impl BodySide {
    pub fn name(self) -> &'static str {
        match self {
            BodySide::Request => "request",
            BodySide::Response => "response",
        }
    }
}

/// Bytes as the protocol carries them (PROTOCOL.md, "Bytes").
pub fn base64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// The answer to a worker's `body` request: the body whole, or `null` when there is
/// none to give (larger than `--body-limit`, not whole in time, not there yet).
pub fn body_answer(id: u64, side: BodySide, content: Option<&Bytes>) -> String {
    json!({
        "type": "body",
        "id": id,
        "side": side.name(),
        "content": content.map(|c| base64(c)),
    })
    .to_string()
}

impl WorkerMessage {
    pub fn parse(line: &str) -> Result<WorkerMessage, serde_json::Error> {
        serde_json::from_str(line)
    }
}

/// The union of the hooks of `scripts`.
pub fn hooks_of(scripts: &[ScriptReport]) -> HookSet {
    let mut set = HookSet::default();
    for name in scripts.iter().flat_map(|s| s.hooks.iter()) {
        if let Some(hook) = FlowHook::from_name(name) {
            set.insert(hook);
        }
    }
    set
}

/// What the scripts changed in one hook call. Fields absent: unchanged.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Changes {
    #[serde(default)]
    pub request: Option<MessageChanges>,
    #[serde(default)]
    pub response: Option<MessageChanges>,
    /// The response was made by the script (`http.Response.make`): it is whole.
    #[serde(default)]
    pub response_new: bool,
    #[serde(default)]
    pub kill: bool,
    #[serde(default)]
    pub intercept: Option<bool>,
    #[serde(default)]
    pub marked: Option<bool>,
    #[serde(default)]
    pub comment: Option<String>,
    /// `tls_clienthello`: leave the connection alone (`data.ignore_connection`).
    #[serde(default)]
    pub ignore_connection: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct MessageChanges {
    pub method: Option<String>,
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub status_code: Option<u16>,
    pub reason: Option<String>,
    /// `[name, value]`, each value one code point per byte.
    pub headers: Option<Vec<(String, String)>>,
    /// Base64; `None` inside means "no content".
    #[serde(default, deserialize_with = "present")]
    pub content: Option<Option<String>>,
}

/// Tells a field given as `null` (`Some(None)`) from one not given (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeError {
    #[error("the script set content that is not base64")]
    Content,
    #[error("the script made a response with status {0}")]
    Status(u16),
}

fn latin1(value: &[u8]) -> String {
    value.iter().map(|&b| char::from(b)).collect()
}

fn from_latin1(value: &str) -> Vec<u8> {
    // Code points above U+00FF cannot come from the runtime (it encodes bytes);
    // another worker's mistake is kept as UTF-8 rather than refused.
    if value.chars().all(|c| (c as u32) < 256) {
        value.chars().map(|c| c as u8).collect()
    } else {
        value.as_bytes().to_vec()
    }
}

fn headers_json(headers: &Headers) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|h| json!([h.name, latin1(&h.value)]))
            .collect(),
    )
}

fn content_json(body: &Body, with_body: bool) -> Value {
    if with_body && !body.truncated {
        Value::String(base64(&body.content))
    } else {
        Value::Null
    }
}

/// The flow as the worker sees it; bodies only when `with_body` (and kept whole).
pub fn flow_json(flow: &Flow, with_body: bool) -> Value {
    let request = &flow.request;
    let response = flow.response.as_ref().map(|r| {
        json!({
            "status_code": r.status,
            "reason": r.reason,
            "http_version": r.http_version,
            "headers": headers_json(&r.headers),
            "content": content_json(&r.body, with_body),
        })
    });
    json!({
        "id": flow.id.to_string(),
        "request": {
            "method": request.method,
            "scheme": request.scheme,
            "host": request.host,
            "port": request.port,
            "path": request.path,
            "http_version": request.http_version,
            "headers": headers_json(&request.headers),
            "content": content_json(&request.body, with_body),
            "timestamp_start": flow.started_at().map(|t| t.as_secs_f64()),
        },
        "response": response,
        "error": flow.error.as_ref().map(|e| json!({"msg": e.message, "timestamp": e.at.as_secs_f64()})),
        "client_conn": {
            "peer": flow.client.peer.map(|p| p.to_string()),
            "sni": flow.client.tls.as_ref().and_then(|t| t.sni.clone()),
        },
        "server_conn": flow.server.as_ref().map(|s| json!({
            "address": s.target,
            "peer": s.peer.map(|p| p.to_string()),
        })),
        "marked": flow.marked,
        "comment": flow.annotations.comment,
        "websocket": flow.websocket.as_ref().map(|ws| json!({
            "messages": ws.messages.iter().map(|m| json!({
                "from_client": m.from_client,
                "is_text": m.text().is_some(),
                "content": base64(&m.content),
                "timestamp": m.at.as_secs_f64(),
            })).collect::<Vec<_>>(),
            "close_code": ws.close_code,
            "close_reason": ws.close_reason,
            "closed_by_client": ws.closed_by_client,
        })),
    })
}

/// A TLS event as `tls_event(flow, event)` gets it: the model's JSON (`leg`, `kind`
/// and the kind's fields).
pub fn tls_event_json(event: &TlsEvent) -> Value {
    serde_json::to_value(event).unwrap_or(Value::Null)
}

/// A ClientHello as `tls_clienthello(data)` gets it: the client's address, the
/// server the connection goes to, and what the client asked for.
pub fn client_hello_json(hello: &periscope_proxy::ClientHelloInfo) -> Value {
    serde_json::json!({
        "client": hello.client.map(|a| serde_json::json!([a.ip().to_string(), a.port()])),
        "server": [hello.server_host, hello.server_port],
        "sni": hello.sni,
        "alpn_protocols": hello.alpn,
    })
}

fn apply_message_headers(headers: &mut Headers, changed: &Option<Vec<(String, String)>>) -> bool {
    let Some(changed) = changed else {
        return false;
    };
    *headers = Headers(
        changed
            .iter()
            .map(|(name, value)| periscope_flow::Header::new(name.clone(), from_latin1(value)))
            .collect(),
    );
    true
}

fn decode_content(content: &Option<Option<String>>) -> Result<Option<Bytes>, ChangeError> {
    match content {
        None => Ok(None),
        Some(None) => Ok(Some(Bytes::new())),
        Some(Some(text)) => BASE64
            .decode(text)
            .map(|bytes| Some(Bytes::from(bytes)))
            .map_err(|_| ChangeError::Content),
    }
}

/// Applies request changes; returns whether the body was replaced.
pub fn apply_to_request(
    request: &mut Request,
    changes: &MessageChanges,
) -> Result<bool, ChangeError> {
    if let Some(method) = &changes.method {
        request.method.clone_from(method);
    }
    if let Some(scheme) = &changes.scheme {
        request.scheme.clone_from(scheme);
    }
    if let Some(host) = &changes.host {
        request.host.clone_from(host);
    }
    if let Some(port) = changes.port {
        request.port = port;
    }
    if let Some(path) = &changes.path {
        request.path.clone_from(path);
    }
    apply_message_headers(&mut request.headers, &changes.headers);
    match decode_content(&changes.content)? {
        Some(content) => {
            request.body = Body::complete(content);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Applies response changes; returns whether the body was replaced.
pub fn apply_to_response(
    response: &mut Response,
    changes: &MessageChanges,
) -> Result<bool, ChangeError> {
    if let Some(status) = changes.status_code {
        if !(100..=999).contains(&status) {
            return Err(ChangeError::Status(status));
        }
        response.status = status;
    }
    if let Some(reason) = &changes.reason {
        response.reason.clone_from(reason);
    }
    apply_message_headers(&mut response.headers, &changes.headers);
    match decode_content(&changes.content)? {
        Some(content) => {
            response.body = Body::complete(content);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// A response a script made (`http.Response.make`) as the flow records it.
pub fn new_response(changes: &MessageChanges) -> Result<Response, ChangeError> {
    let mut response = Response {
        status: 200,
        reason: String::new(),
        http_version: "HTTP/1.1".into(),
        stream_id: None,
        headers: Headers::default(),
        body: Body::default(),
        trailers: None,
        generated: true,
    };
    apply_to_response(&mut response, changes)?;
    if changes.reason.is_none() {
        response.reason = http::StatusCode::from_u16(response.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
            .to_owned();
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            method: "GET".into(),
            scheme: "http".into(),
            host: "origin.test".into(),
            port: 80,
            path: "/a".into(),
            http_version: "HTTP/1.1".into(),
            stream_id: None,
            headers: Headers(vec![periscope_flow::Header::new("Host", "origin.test")]),
            body: Body::complete(Bytes::from_static(b"one")),
            trailers: None,
        }
    }

    #[test]
    fn a_result_line_becomes_changes_and_applies_field_by_field() {
        let line = r#"{"type":"result","id":3,"changes":{"request":{"path":"/b?x=1","headers":[["Host","origin.test"],["X-Added","\u00e9"]]}}}"#;
        let WorkerMessage::Result {
            id,
            changes,
            errors,
        } = WorkerMessage::parse(line).unwrap()
        else {
            panic!("not a result");
        };
        assert_eq!((id, errors.len()), (3, 0));
        let mut request = request();
        let replaced = apply_to_request(&mut request, changes.request.as_ref().unwrap()).unwrap();
        assert!(!replaced, "no content in the diff: the body stays");
        assert_eq!(request.path, "/b?x=1");
        assert_eq!(request.method, "GET");
        // U+00E9 stands for the byte 0xE9.
        assert_eq!(request.headers.get("x-added").unwrap().value, vec![0xE9]);
        assert_eq!(&request.body.content[..], b"one");
    }

    #[test]
    fn content_null_empties_the_body_and_absent_content_keeps_it() {
        let changes: MessageChanges = serde_json::from_str(r#"{"content":null}"#).unwrap();
        let mut request = request();
        assert!(apply_to_request(&mut request, &changes).unwrap());
        assert!(request.body.content.is_empty());
        let changes: MessageChanges = serde_json::from_str(r#"{"content":"dHdv"}"#).unwrap();
        assert!(apply_to_request(&mut request, &changes).unwrap());
        assert_eq!(&request.body.content[..], b"two");
    }

    #[test]
    fn a_made_response_gets_the_canonical_reason_and_bad_status_is_refused() {
        let changes: MessageChanges =
            serde_json::from_str(r#"{"status_code":404,"headers":[["a","b"]],"content":""}"#)
                .unwrap();
        let response = new_response(&changes).unwrap();
        assert_eq!(
            (response.status, response.reason.as_str()),
            (404, "Not Found")
        );
        let bad: MessageChanges = serde_json::from_str(r#"{"status_code":7}"#).unwrap();
        assert_eq!(new_response(&bad).unwrap_err(), ChangeError::Status(7));
    }

    #[test]
    fn the_hooks_reported_become_bits_and_unknown_names_are_ignored() {
        let line = r#"{"type":"ready","scripts":[{"path":"/s.py","hooks":["response","tls_event","nonsense"]}]}"#;
        let WorkerMessage::Ready { scripts } = WorkerMessage::parse(line).unwrap() else {
            panic!("not ready");
        };
        let set = hooks_of(&scripts);
        assert!(set.contains(FlowHook::Response) && set.contains(FlowHook::TlsEvent));
        assert!(!set.contains(FlowHook::Request) && !set.contains(FlowHook::RequestHeaders));
    }

    #[test]
    fn bodies_are_sent_only_when_asked_and_header_bytes_survive() {
        let mut flow_request = request();
        flow_request.headers.push("X-Bin", vec![0xff_u8, b'a']);
        let flow = Flow {
            request: flow_request,
            ..test_flow()
        };
        let without = flow_json(&flow, false);
        assert!(without["request"]["content"].is_null());
        let with = flow_json(&flow, true);
        assert_eq!(with["request"]["content"], "b25l");
        assert_eq!(with["request"]["headers"][1][1], "\u{ff}a");
    }

    fn test_flow() -> Flow {
        serde_json::from_value(json!({
            "id": "0190a8e0-0000-7000-8000-000000000000",
            "client": {"id": 1, "peer": null, "local": null, "target": null, "tls": null},
            "server": null,
            "request": serde_json::to_value(request()).unwrap(),
            "response": null,
            "error": null,
            "timeline": serde_json::to_value(periscope_flow::Timeline::new()).unwrap(),
        }))
        .unwrap()
    }
}
