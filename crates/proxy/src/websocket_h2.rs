//! WebSocket over HTTP/2 (RFC 8441) from a client. When the server's HTTP/2
//! connection allows extended CONNECT, the request goes on to it as one; otherwise it
//! becomes an HTTP/1.1 Upgrade (RFC 6455), whose 101 becomes the client's 200. Either
//! way the streams are then relayed frame by frame — RFC 8441 keeps RFC 6455 framing,
//! masks included, so the relay and recorder of HTTP/1.1 WebSockets serve unchanged.

use std::sync::Arc;

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use periscope_flow::{Body, Timestamp};

use crate::body::{IncomingBody, ProxyBody, RequestBody};
use crate::destination::{host_header_value, Destination};
use crate::error::UpstreamError;
use crate::exchange::{
    answered_by_hook, deliver, fail, killed, record_response_head, recorded_request_body,
    relay_response, upgrades_to,
};
use crate::headers::{strip_hop_by_hop, NextHop};
use crate::hooks::{RequestVerdict, StageBody};
use crate::http2::ConnectAnswer;
use crate::pages::error_response;
use crate::pool::ConnectionKind;
use crate::recorder::{FlowRecorder, Side};
use crate::session::{ClientResponse, ClientSession};
use crate::upgrade::PendingUpgrade;
use crate::upstream::{UpstreamConnection, UpstreamKey, ALPN_HTTP11};

pub async fn run(
    session: &ClientSession,
    mut request: Request<IncomingBody>,
    started: Timestamp,
) -> ClientResponse {
    if !session.in_tunnel() && request.uri().host().is_none() {
        // Not the proxy-info page the destination would answer: a 2xx to a CONNECT
        // would open the stream as a tunnel.
        return error_response(
            StatusCode::BAD_REQUEST,
            "Invalid extended CONNECT.",
            "A WebSocket over HTTP/2 sent to the proxy needs :scheme, :authority and :path.",
        );
    }
    let mut destination = match session.destination_of(&request) {
        Ok(destination) => destination,
        Err(answer) => return *answer,
    };
    let recorder = session.begin_flow(
        &request,
        (
            destination.scheme,
            destination.host.clone(),
            destination.port,
        ),
        started,
    );
    recorder.publish_request();
    // The hooks see the opening handshake as they see an HTTP/1.1 Upgrade.
    if !session.core().hooks.is_empty() {
        let (mut head, body) = request.into_parts();
        let mut body = StageBody::new(body);
        match session
            .core()
            .hooks
            .request_head(&recorder, &mut head, &mut body)
            .await
        {
            RequestVerdict::Continue => {}
            // A 2xx to an extended CONNECT would open the stream as a WebSocket.
            RequestVerdict::Answer(answer) if answer.status().is_success() => {
                return killed(
                    &recorder,
                    "a hook answered a WebSocket handshake with a success status",
                );
            }
            RequestVerdict::Answer(answer) => return answered_by_hook(&recorder, answer),
            // HTTP/2: the stream is reset either way.
            RequestVerdict::Kill(reason) | RequestVerdict::Close(reason) => {
                return killed(&recorder, &reason)
            }
        }
        if let Some(moved) = recorder
            .read(|flow| destination.moved_to(&flow.request))
            .flatten()
        {
            destination = moved;
        }
        request = Request::from_parts(head, body.into_body());
    }
    if let Some(connection) = session
        .pool()
        .extended_connect(session.core(), destination.key())
        .await
    {
        recorder
            .push_note("WebSocket over HTTP/2 extended CONNECT (RFC 8441) on both legs".to_owned());
        return extended_connect(session, request, &destination, recorder, connection).await;
    }
    if let Some(tls) = destination.pool.tls.as_mut() {
        tls.alpn = vec![ALPN_HTTP11.to_vec()];
    }
    recorder.push_note(
        "WebSocket over HTTP/2 extended CONNECT (RFC 8441) on the client leg, relayed \
         as an HTTP/1.1 Upgrade (RFC 6455) on the server leg"
            .to_owned(),
    );
    let client_upgrade = PendingUpgrade::of_request(&mut request);
    let label = destination.key().label();
    let key = match crate::websocket::handshake_key() {
        Ok(key) => key,
        Err(error) => {
            let error = UpstreamError::exchange(format!(
                "no random bytes for a Sec-WebSocket-Key: {error}"
            ));
            return fail(&recorder, &label, error);
        }
    };
    let upgrade = upgrade_request(session, &request, &destination, &key, &recorder);
    let (response, connection) = match deliver(
        session,
        &destination,
        &recorder,
        upgrade,
        ConnectionKind::Http1Only,
    )
    .await
    {
        Ok(delivered) => delivered,
        Err(answer) => return answer,
    };
    let status = response.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        if status.is_success() {
            // Relayed as is, a 2xx would tell the client its WebSocket is open.
            let error = UpstreamError::exchange(format!(
                "{label} answered the WebSocket handshake with {status} instead of \
                 101 Switching Protocols"
            ));
            return fail(&recorder, &label, error);
        }
        session.pool().checkin(destination.key(), connection).await;
        let (parts, body) = response.into_parts();
        record_response_head(&recorder, &parts);
        return relay_response(session.core(), recorder, parts, body, None);
    }
    let (mut parts, _) = response.into_parts();
    record_response_head(&recorder, &parts);
    let accept = parts
        .headers
        .get(http::header::SEC_WEBSOCKET_ACCEPT)
        .map(HeaderValue::as_bytes);
    let expected = crate::websocket::accept_key(&key);
    if !upgrades_to(&parts.headers, "websocket") || accept != Some(expected.as_bytes()) {
        let error = UpstreamError::exchange(format!(
            "{label} answered 101 Switching Protocols without accepting the WebSocket \
             handshake (Upgrade: websocket and a Sec-WebSocket-Accept for the key sent)"
        ));
        return fail(&recorder, &label, error);
    }
    let Some(server_upgrade) = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .map(PendingUpgrade::http1)
    else {
        let error =
            UpstreamError::exchange(format!("the connection to {label} cannot be upgraded"));
        return fail(&recorder, &label, error);
    };
    drop(connection);
    crate::websocket::start_session(&recorder, &parts.headers);
    recorder.push_note(
        "answered the HTTP/2 client 200 for the server's 101 Switching Protocols".to_owned(),
    );
    recorder.set_body(Side::Response, Body::default(), None);
    recorder.finish();
    crate::websocket::relay_upgraded(session.core(), &recorder, server_upgrade, client_upgrade);
    // The server's chosen subprotocol and extensions, and any other end-to-end
    // header (a cookie); the handshake headers belong to the HTTP/1.1 leg.
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(
        &mut headers,
        NextHop::Http1 {
            keep_upgrade: false,
        },
    );
    for name in [
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        http::header::SEC_WEBSOCKET_ACCEPT,
    ] {
        headers.remove(name);
    }
    let mut answer = Response::new(ProxyBody::generated(""));
    *answer.headers_mut() = headers;
    answer
}

/// Relays an RFC 8441 WebSocket to a server that speaks it: the client's extended
/// CONNECT goes on as one, and the server's answer comes back as it is.
async fn extended_connect(
    session: &ClientSession,
    mut request: Request<IncomingBody>,
    destination: &Destination,
    recorder: Arc<FlowRecorder>,
    mut connection: UpstreamConnection,
) -> ClientResponse {
    let label = destination.key().label();
    recorder.set_server(
        connection.info.clone(),
        &connection.milestones,
        connection.tls.clone(),
    );
    let client_upgrade = PendingUpgrade::of_request(&mut request);
    let head = extended_connect_request(&request, destination.key());
    let response_timeout = session.core().timeouts().response;
    let answer = match tokio::time::timeout(
        response_timeout,
        connection.sender.extended_connect(head),
    )
    .await
    {
        Err(_) => {
            let error = UpstreamError::ResponseTimeout {
                target: label.clone(),
                timeout: response_timeout,
            };
            return fail(&recorder, &label, error);
        }
        Ok(Err(error)) => {
            let error =
                UpstreamError::from_exchange(&label, error.as_ref(), connection.tls.as_deref());
            return fail(&recorder, &label, error);
        }
        Ok(Ok(answer)) => answer,
    };
    let (response, stream) = match answer {
        ConnectAnswer::Refused(response) => {
            let (parts, body) = response.into_parts();
            record_response_head(&recorder, &parts);
            return relay_response(
                session.core(),
                recorder,
                parts,
                IncomingBody::Http2(body),
                None,
            );
        }
        ConnectAnswer::Open(response, stream) => (response, stream),
    };
    let (mut parts, ()) = response.into_parts();
    record_response_head(&recorder, &parts);
    crate::websocket::start_session(&recorder, &parts.headers);
    recorder.set_body(Side::Response, Body::default(), None);
    recorder.finish();
    crate::websocket::relay_upgraded(
        session.core(),
        &recorder,
        PendingUpgrade::ready(stream),
        client_upgrade,
    );
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(
        &mut headers,
        NextHop::Http1 {
            keep_upgrade: false,
        },
    );
    headers.remove(CONTENT_LENGTH);
    let mut answer = Response::new(ProxyBody::generated(""));
    *answer.status_mut() = parts.status;
    *answer.headers_mut() = headers;
    answer
}

/// The HTTP/1.1 Upgrade request (RFC 6455 §4.1) that stands for an HTTP/2 client's
/// extended CONNECT: its end-to-end headers (subprotocols, extensions, origin,
/// cookies) go along; the handshake headers are Periscope's own, since an HTTP/2
/// client sends no key and expects no accept.
fn upgrade_request(
    session: &ClientSession,
    client: &Request<IncomingBody>,
    destination: &Destination,
    key: &str,
    recorder: &Arc<FlowRecorder>,
) -> Request<RequestBody> {
    let path = client.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let authority = client
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| host_header_value(destination.key()));
    let mut headers = client.headers().clone();
    strip_hop_by_hop(
        &mut headers,
        NextHop::Http1 {
            keep_upgrade: false,
        },
    );
    for name in [
        HOST,
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        http::header::SEC_WEBSOCKET_KEY,
        http::header::SEC_WEBSOCKET_ACCEPT,
        http::header::SEC_WEBSOCKET_VERSION,
    ] {
        headers.remove(name);
    }
    if let Ok(value) = HeaderValue::from_str(&authority) {
        headers.insert(HOST, value);
    }
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        http::header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    if let Ok(value) = HeaderValue::from_str(key) {
        headers.insert(http::header::SEC_WEBSOCKET_KEY, value);
    }
    let body = IncomingBody::Replayed(http_body_util::Full::new(bytes::Bytes::new()));
    let mut request = Request::new(recorded_request_body(session.core(), body, recorder));
    *request.method_mut() = Method::GET;
    *request.uri_mut() = path
        .parse::<Uri>()
        .unwrap_or_else(|_| Uri::from_static("/"));
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request
}

/// The client's extended CONNECT as it goes to an HTTP/2 server: its end-to-end
/// headers (version, subprotocols, extensions, origin, cookies) and `:protocol`.
fn extended_connect_request(request: &Request<IncomingBody>, key: &UpstreamKey) -> Request<()> {
    let mut headers: HeaderMap = request.headers().clone();
    strip_hop_by_hop(&mut headers, NextHop::Http2Request);
    headers.remove(HOST);
    headers.remove(CONTENT_LENGTH);
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| host_header_value(key));
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let scheme = if key.tls { "https" } else { "http" };
    let mut head = Request::new(());
    *head.method_mut() = Method::CONNECT;
    *head.uri_mut() = format!("{scheme}://{authority}{path}")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    *head.version_mut() = Version::HTTP_2;
    *head.headers_mut() = headers;
    head.extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    head
}
