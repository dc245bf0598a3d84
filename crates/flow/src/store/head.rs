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
    Annotations, AppliedRule, Body, ConnectionInfo, Flow, FlowError, FlowId, Header, Headers,
    Request, Response,
};
use crate::timeline::{Milestone, Timeline, TimelineEvent};

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

/// The fields of a flow before its timeline...
#[derive(Serialize)]
struct FlowHeadStart<'a> {
    id: &'a FlowId,
    client: Box<RawValue>,
    server: Option<Box<RawValue>>,
    request: RequestHead<'a>,
    response: Option<ResponseHead<'a>>,
    error: &'a Option<FlowError>,
}

/// ...and after it (the timeline in between is written by [`write_timeline`]).
#[derive(Serialize)]
struct FlowHeadEnd<'a> {
    marked: bool,
    intercepted_tls: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    websocket: &'a Option<crate::websocket::WebSocketSession>,
    #[serde(skip_serializing_if = "Annotations::is_empty")]
    annotations: &'a Annotations,
    #[serde(skip_serializing_if = "Option::is_none")]
    listener: &'a Option<crate::ListenerInfo>,
    // A TCP flow's bytes are few (the body limit) and have no body columns: they stay
    // in the head.
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp: &'a Option<crate::TcpSession>,
    #[serde(skip_serializing_if = "<[AppliedRule]>::is_empty")]
    rules: &'a [AppliedRule],
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
        // A stored flow is never paused: the store keeps what happened.
        intercepted: _,
        annotations,
        listener,
        tcp,
        rules,
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
        &FlowHeadStart {
            id,
            client: connection_json(client)?,
            server: server.as_ref().map(connection_json).transpose()?,
            request: request_head(request),
            response: response.as_ref().map(response_head),
            error,
        },
    )?;
    // `{..., "error": ...}` becomes `{..., "error": ..., "timeline": [...], "marked": ...}`.
    json.pop();
    json.extend_from_slice(b",\"timeline\":");
    write_timeline(&mut json, timeline)?;
    let end = json.len();
    serde_json::to_writer(
        &mut json,
        &FlowHeadEnd {
            marked: *marked,
            intercepted_tls: *intercepted_tls,
            websocket,
            annotations,
            listener,
            tcp,
            rules,
        },
    )?;
    json[end] = b',';
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

/// A timeline as the model writes it. Milestones, nearly all of a timeline, are
/// written by hand: the derived form (a flattened, internally tagged enum) goes
/// through serde's map serializer, and even a plain struct costs a thousand
/// instructions an entry in escaped-string writes, a tenth of the whole insert.
fn write_timeline(json: &mut Vec<u8>, timeline: &Timeline) -> serde_json::Result<()> {
    json.push(b'[');
    for (i, entry) in timeline.entries().iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        match entry.event {
            TimelineEvent::Milestone { milestone } => {
                json.extend_from_slice(b"{\"at\":");
                json.extend_from_slice(itoa::Buffer::new().format(entry.at.0).as_bytes());
                json.extend_from_slice(b",\"entry\":\"milestone\",\"milestone\":\"");
                json.extend_from_slice(milestone_name(milestone).as_bytes());
                json.extend_from_slice(b"\"}");
            }
            _ => serde_json::to_writer(&mut *json, entry)?,
        }
    }
    json.push(b']');
    Ok(())
}

/// The name serde gives a milestone (`rename_all = "snake_case"`).
fn milestone_name(milestone: Milestone) -> &'static str {
    match milestone {
        Milestone::ClientConnected => "client_connected",
        Milestone::ClientTlsEstablished => "client_tls_established",
        Milestone::ServerConnectInitiated => "server_connect_initiated",
        Milestone::ServerTcpConnected => "server_tcp_connected",
        Milestone::ServerTlsEstablished => "server_tls_established",
        Milestone::RequestStarted => "request_started",
        Milestone::RequestComplete => "request_complete",
        Milestone::ResponseStarted => "response_started",
        Milestone::ResponseComplete => "response_complete",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milestone_names_are_the_serde_names() {
        for milestone in Milestone::ALL {
            let serde_name = serde_json::to_string(&milestone).unwrap();
            assert_eq!(serde_name, format!("\"{}\"", milestone_name(milestone)));
        }
    }
}
