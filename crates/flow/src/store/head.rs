//! A flow's JSON without its body bytes, written straight from a borrowed flow.
//!
//! The output is exactly `serde_json::to_string` of the flow with empty bodies (a
//! test holds it to that), so it reads back with `Flow`'s own `Deserialize`. It is
//! written this way for speed, the cost that bounds inserts: no clone of the flow
//! (a third of the encoding time) and no allocation per header value. The
//! destructuring below stops compiling when the model gains a field, so the two
//! cannot drift apart silently.

use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;
use std::cell::RefCell;
use std::collections::HashMap;

use crate::model::{
    Body, ConnectionInfo, Flow, FlowError, FlowId, Header, Headers, Request, Response,
};
use crate::timeline::Timeline;

/// Most flows share their connections with the flows before them (keep-alive,
/// HTTP/2), and a connection's JSON (TLS parameters, the server's certificate) is a
/// third of a flow's: each connection is serialized once per writer thread.
const CONNECTION_MEMO: usize = 256;

thread_local! {
    static CONNECTIONS: RefCell<HashMap<u64, (ConnectionInfo, Box<RawValue>)>> =
        RefCell::new(HashMap::new());
}

fn connection_json(info: &ConnectionInfo) -> serde_json::Result<Box<RawValue>> {
    CONNECTIONS.with(|memo| {
        let mut memo = memo.borrow_mut();
        // The same id can carry more detail later (a tunnel's TLS): compare it all.
        if let Some((known, json)) = memo.get(&info.id) {
            if known == info {
                return Ok(json.clone());
            }
        }
        let json = serde_json::value::to_raw_value(info)?;
        if memo.len() >= CONNECTION_MEMO {
            memo.clear();
        }
        memo.insert(info.id, (info.clone(), json.clone()));
        Ok(json)
    })
}

#[derive(Serialize)]
struct FlowHead<'a> {
    id: &'a FlowId,
    client: Box<RawValue>,
    server: Option<Box<RawValue>>,
    request: RequestHead<'a>,
    response: Option<ResponseHead<'a>>,
    error: &'a Option<FlowError>,
    timeline: &'a Timeline,
    marked: bool,
    intercepted_tls: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    websocket: &'a Option<crate::websocket::WebSocketSession>,
}

#[derive(Serialize)]
struct RequestHead<'a> {
    method: &'a str,
    scheme: &'a str,
    host: &'a str,
    port: u16,
    path: &'a str,
    http_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_id: Option<u32>,
    headers: HeadersRef<'a>,
    body: BodyHead,
    trailers: Option<HeadersRef<'a>>,
}

#[derive(Serialize)]
struct ResponseHead<'a> {
    status: u16,
    reason: &'a str,
    http_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_id: Option<u32>,
    headers: HeadersRef<'a>,
    body: BodyHead,
    trailers: Option<HeadersRef<'a>>,
    generated: bool,
}

/// A body with its bytes left out: the empty base64 string `Body` reads as empty.
#[derive(Serialize)]
struct BodyHead {
    content: &'static str,
    size: u64,
    truncated: bool,
}

pub(super) fn to_json(flow: &Flow) -> serde_json::Result<String> {
    let Flow {
        id,
        client,
        server,
        request,
        response,
        error,
        timeline,
        marked,
        intercepted_tls,
        websocket,
    } = flow;
    // Sized once: growing a String to 2-3 KB by doubling copied it seven times.
    let header_bytes: usize = request
        .headers
        .iter()
        .chain(response.iter().flat_map(|r| r.headers.iter()))
        .map(|h| h.name.len() + h.value.len() + 24)
        .sum();
    let mut json = Vec::with_capacity(1024 + header_bytes + 128 * timeline.entries().len());
    serde_json::to_writer(
        &mut json,
        &FlowHead {
            id,
            client: connection_json(client)?,
            server: server.as_ref().map(connection_json).transpose()?,
            request: request_head(request),
            response: response.as_ref().map(response_head),
            error,
            timeline,
            marked: *marked,
            intercepted_tls: *intercepted_tls,
            websocket,
        },
    )?;
    // serde_json writes only valid UTF-8.
    Ok(String::from_utf8(json).unwrap_or_default())
}

fn request_head(request: &Request) -> RequestHead<'_> {
    let Request {
        method,
        scheme,
        host,
        port,
        path,
        http_version,
        stream_id,
        headers,
        body,
        trailers,
    } = request;
    RequestHead {
        method,
        scheme,
        host,
        port: *port,
        path,
        http_version,
        stream_id: *stream_id,
        headers: HeadersRef(headers),
        body: body_head(body),
        trailers: trailers.as_ref().map(HeadersRef),
    }
}

fn response_head(response: &Response) -> ResponseHead<'_> {
    let Response {
        status,
        reason,
        http_version,
        stream_id,
        headers,
        body,
        trailers,
        generated,
    } = response;
    ResponseHead {
        status: *status,
        reason,
        http_version,
        stream_id: *stream_id,
        headers: HeadersRef(headers),
        body: body_head(body),
        trailers: trailers.as_ref().map(HeadersRef),
        generated: *generated,
    }
}

fn body_head(body: &Body) -> BodyHead {
    let Body {
        content: _,
        size,
        truncated,
    } = body;
    BodyHead {
        content: "",
        size: *size,
        truncated: *truncated,
    }
}

/// `Headers` as the model writes them: `[{"name": ..., "value": ...}]`, the value
/// a string when it is UTF-8 and `{"base64": ...}` otherwise.
struct HeadersRef<'a>(&'a Headers);

impl Serialize for HeadersRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for header in self.0.iter() {
            seq.serialize_element(&HeaderRef(header))?;
        }
        seq.end()
    }
}

struct HeaderRef<'a>(&'a Header);

impl Serialize for HeaderRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Header { name, value } = self.0;
        let mut header = serializer.serialize_struct("Header", 2)?;
        header.serialize_field("name", name)?;
        match std::str::from_utf8(value) {
            Ok(text) => header.serialize_field("value", text)?,
            Err(_) => header.serialize_field(
                "value",
                &Base64Value {
                    base64: BASE64.encode(value),
                },
            )?,
        }
        header.end()
    }
}

#[derive(Serialize)]
struct Base64Value {
    base64: String,
}
