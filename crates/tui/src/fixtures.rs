//! Flows and screen helpers for the unit tests.

use periscope_flow::{
    Body, CertificateSummary, ConnectionInfo, Flow, FlowId, Headers, Milestone, Request, Response,
    Timeline, Timestamp, TlsInfo,
};
use ratatui::buffer::Buffer;

/// Base time of the fixtures: 1 s after the epoch, in microseconds.
const BASE: i64 = 1_000_000;

/// A complete HTTPS flow (a form POST or a GET) with both connections, a server
/// certificate and every milestone; `status` `None` leaves it without a response.
pub fn flow(method: &str, host: &str, path: &str, status: Option<u16>) -> Flow {
    flow_at(method, host, path, status, 0)
}

/// [`flow`], started `seconds` after the base time (the list's order).
pub fn flow_at(method: &str, host: &str, path: &str, status: Option<u16>, seconds: i64) -> Flow {
    let start = BASE + seconds * 1_000_000;
    let mut timeline = Timeline::new();
    for (i, milestone) in Milestone::ALL.iter().enumerate() {
        if status.is_none() && i >= 7 {
            break;
        }
        timeline.mark(*milestone, Timestamp(start - 1000 + i as i64 * 500));
    }
    let mut request_headers = Headers::default();
    request_headers.push("host", host);
    let request_body = if method == "POST" {
        request_headers.push("content-type", "application/x-www-form-urlencoded");
        Body::complete(&b"user=alice&password=secret"[..])
    } else {
        Body::default()
    };
    let response = status.map(|status| {
        let mut headers = Headers::default();
        headers.push("content-type", "text/plain");
        Response {
            status,
            reason: match status {
                200 => "OK",
                302 => "Found",
                400 => "Bad Request",
                _ => "",
            }
            .into(),
            http_version: "HTTP/1.1".into(),
            stream_id: None,
            headers,
            body: Body::complete(&b"hello\n"[..]),
            trailers: None,
            generated: false,
        }
    });
    Flow {
        id: FlowId::new(),
        client: ConnectionInfo {
            id: 1,
            peer: Some("127.0.0.1:50000".parse().unwrap()),
            local: Some("127.0.0.1:8080".parse().unwrap()),
            target: None,
            tls: Some(TlsInfo {
                version: "TLSv1.3".into(),
                cipher: "TLS_AES_128_GCM_SHA256".into(),
                sni: Some(host.into()),
                alpn: Some("http/1.1".into()),
                peer_chain: Vec::new(),
                peer_certificate: None,
                resumed: false,
                key_exchange: Some("x25519".into()),
            }),
        },
        server: Some(ConnectionInfo {
            id: 2,
            peer: Some("127.0.0.1:443".parse().unwrap()),
            local: Some("127.0.0.1:50001".parse().unwrap()),
            target: Some(format!("{host}:443")),
            tls: Some(TlsInfo {
                version: "TLSv1.3".into(),
                cipher: "TLS_AES_128_GCM_SHA256".into(),
                sni: Some(host.into()),
                alpn: Some("http/1.1".into()),
                peer_chain: Vec::new(),
                peer_certificate: Some(CertificateSummary {
                    subject: format!("CN={host}"),
                    issuer: "CN=Test CA".into(),
                    subject_alt_names: vec![format!("DNS:{host}")],
                    not_before: "Jan  1 00:00:00 2025 GMT".into(),
                    not_after: "Jan  1 00:00:00 2035 GMT".into(),
                    serial: "01".into(),
                    sha256_fingerprint: "AB:CD".into(),
                }),
                resumed: false,
                key_exchange: Some("x25519".into()),
            }),
        }),
        request: Request {
            method: method.into(),
            scheme: "https".into(),
            host: host.into(),
            port: 443,
            path: path.into(),
            http_version: "HTTP/1.1".into(),
            stream_id: None,
            headers: request_headers,
            body: request_body,
            trailers: None,
        },
        response,
        error: None,
        timeline,
        marked: false,
        intercepted_tls: true,
        websocket: None,
        intercepted: None,
        annotations: Default::default(),
        listener: None,
        tcp: None,
        rules: Vec::new(),
    }
}

/// A text WebSocket message.
pub fn websocket_text(from_client: bool, text: &str) -> periscope_flow::WebSocketMessage {
    periscope_flow::WebSocketMessage {
        from_client,
        opcode: periscope_flow::WebSocketOpcode::Text,
        content: bytes::Bytes::copy_from_slice(text.as_bytes()),
        size: text.len() as u64,
        truncated: false,
        frames: 1,
        at: Timestamp(BASE),
        fate: Default::default(),
    }
}

/// The buffer's text, one line per row.
pub fn buffer_text(buffer: &Buffer) -> String {
    let area = buffer.area;
    let mut out = String::new();
    for y in area.y..area.y + area.height {
        for x in area.x..area.x + area.width {
            out.push_str(buffer[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}
