use std::io::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use flate2::write::GzEncoder;
use serde_json::{json, Value};

use super::*;
use crate::model::{
    ConnectionInfo, FlowError, FlowErrorKind, FlowId, Header, Request, Response, TlsInfo,
};
use crate::timeline::{Direction, Initiator, Timeline, TlsEvent, TlsEventKind};

const SCHEMA: &str = include_str!("../../tests/data/har-1.2.schema.json");

/// 2023-11-14T22:13:20.000Z
const T0: i64 = 1_700_000_000_000_000;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    Headers(pairs.iter().map(|(n, v)| Header::new(*n, *v)).collect())
}

fn connection(id: u64, peer: &str) -> ConnectionInfo {
    ConnectionInfo {
        id,
        peer: Some(addr(peer)),
        local: None,
        target: None,
        tls: None,
    }
}

/// `GET https://example.com/search?q=a+b&lang=en` on a connection opened for it.
fn get_flow() -> Flow {
    let mut timeline = Timeline::new();
    for (milestone, at) in [
        (Milestone::ClientConnected, T0 - 100_000),
        (Milestone::RequestStarted, T0),
        (Milestone::ServerConnectInitiated, T0 + 500),
        (Milestone::ServerTcpConnected, T0 + 2_500),
        (Milestone::ServerTlsEstablished, T0 + 8_500),
        (Milestone::RequestComplete, T0 + 9_000),
        (Milestone::ResponseStarted, T0 + 30_000),
        (Milestone::ResponseComplete, T0 + 31_250),
    ] {
        timeline.mark(milestone, Timestamp(at));
    }
    let mut server = connection(7, "[2001:db8::1]:443");
    server.target = Some("example.com:443".into());
    server.tls = Some(TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_128_GCM_SHA256".into(),
        ..TlsInfo::default()
    });
    Flow {
        id: FlowId::new(),
        client: connection(1, "127.0.0.1:50000"),
        server: Some(server),
        request: Request {
            method: "GET".into(),
            scheme: "https".into(),
            host: "example.com".into(),
            port: 443,
            path: "/search?q=a+b&lang=en%2Dus".into(),
            http_version: "HTTP/1.1".into(),
            stream_id: None,
            headers: headers(&[
                ("Host", "example.com"),
                ("Cookie", "sid=abc; theme=dark"),
                ("Cookie", "flag"),
            ]),
            body: Body::default(),
            trailers: None,
        },
        response: Some(Response {
            status: 200,
            reason: "OK".into(),
            http_version: "HTTP/1.1".into(),
            stream_id: None,
            headers: headers(&[
                ("Content-Type", "text/html; charset=utf-8"),
                (
                    "Set-Cookie",
                    "sid=new; Path=/; Domain=example.com; Expires=Wed, 21 Oct 2015 07:28:00 GMT; Secure; HttpOnly",
                ),
                ("Set-Cookie", "short=1; Max-Age=60; Expires=Thu, 01-Jan-70 00:00:01 GMT"),
            ]),
            body: Body::complete(&b"<html>hello</html>"[..]),
            trailers: None,
            generated: false,
        }),
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

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A form POST on a reused connection, answered with a gzip'd JSON redirect.
fn post_flow() -> Flow {
    let mut flow = get_flow();
    flow.request.method = "POST".into();
    flow.request.path = "/login".into();
    flow.request.headers = headers(&[
        ("Host", "example.com"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ]);
    flow.request.body = Body::complete(&b"user=ann&pass=s%20cret"[..]);
    // The connection was set up for an earlier flow.
    let mut timeline = Timeline::new();
    for (milestone, at) in [
        (Milestone::ServerConnectInitiated, T0 - 60_000),
        (Milestone::ServerTcpConnected, T0 - 58_000),
        (Milestone::ServerTlsEstablished, T0 - 50_000),
        (Milestone::RequestStarted, T0),
        (Milestone::RequestComplete, T0 + 1_000),
        (Milestone::ResponseStarted, T0 + 5_000),
        (Milestone::ResponseComplete, T0 + 6_000),
    ] {
        timeline.mark(milestone, Timestamp(at));
    }
    flow.timeline = timeline;
    let json = br#"{"ok":true,"next":"/home"}"#;
    let compressed = gzip(json);
    let response = flow.response.as_mut().unwrap();
    response.status = 302;
    response.reason = "Found".into();
    response.headers = headers(&[
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
        ("Location", "https://example.com/home"),
    ]);
    response.body = Body::complete(compressed);
    flow
}

/// A binary upload answered with a truncated binary body, headers not UTF-8.
fn binary_flow() -> Flow {
    let mut flow = get_flow();
    flow.request.method = "PUT".into();
    flow.request.scheme = "http".into();
    flow.request.port = 8080;
    flow.request.path = "/blob".into();
    flow.request
        .headers
        .push("X-Raw", vec![b'o', b'k', 0xff, 0xfe]);
    flow.request.body = Body::complete(vec![0u8, 159, 146, 150]);
    let response = flow.response.as_mut().unwrap();
    response.headers = headers(&[("Content-Type", "application/octet-stream")]);
    response.body = Body {
        content: Bytes::from(vec![0xde, 0xad, 0xbe, 0xef]),
        size: 1_048_576,
        truncated: true,
    };
    flow
}

/// A server that renegotiated for a client certificate after the request.
fn renegotiated_flow() -> Flow {
    let mut flow = get_flow();
    flow.request.path = "/vedauth".into();
    flow.timeline = renegotiation_timeline(true);
    flow
}

/// The renegotiation of `renegotiated_flow`, with or without the response after it.
fn renegotiation_timeline(with_response: bool) -> Timeline {
    let server_event = |kind| TlsEvent {
        leg: Leg::Server,
        kind,
    };
    let mut timeline = Timeline::new();
    let mut milestones = vec![
        (Milestone::ClientConnected, T0 - 50_000),
        (Milestone::ClientTlsEstablished, T0 - 40_000),
        (Milestone::RequestStarted, T0),
        (Milestone::ServerConnectInitiated, T0 + 1_000),
        (Milestone::ServerTcpConnected, T0 + 3_000),
        (Milestone::ServerTlsEstablished, T0 + 10_000),
        (Milestone::RequestComplete, T0 + 12_000),
    ];
    if with_response {
        milestones.push((Milestone::ResponseStarted, T0 + 40_000));
        milestones.push((Milestone::ResponseComplete, T0 + 45_500));
    }
    for (milestone, at) in milestones {
        timeline.mark(milestone, Timestamp(at));
    }
    timeline.push_tls(
        Timestamp(T0 + 20_000),
        server_event(TlsEventKind::HelloRequest {
            direction: Direction::Received,
        }),
    );
    timeline.push_tls(
        Timestamp(T0 + 20_100),
        server_event(TlsEventKind::RenegotiationStarted {
            initiator: Initiator::Peer,
        }),
    );
    timeline.push_tls(
        Timestamp(T0 + 20_500),
        server_event(TlsEventKind::CertificateRequested {
            ca_names: vec!["CN=Test CA".into()],
            post_handshake: false,
        }),
    );
    timeline.push_tls(
        Timestamp(T0 + 20_600),
        server_event(TlsEventKind::CertificatePresented {
            direction: Direction::Sent,
            subject: Some("CN=client".into()),
        }),
    );
    timeline.push_tls(
        Timestamp(T0 + 25_000),
        server_event(TlsEventKind::RenegotiationCompleted {
            version: "TLSv1.2".into(),
            cipher: "ECDHE-RSA-AES256-GCM-SHA384".into(),
        }),
    );
    timeline
}

/// The server asked for a client certificate and rejected the empty one: no
/// response from the server, an error at T0 + 26 ms.
fn failed_flow() -> Flow {
    let mut flow = renegotiated_flow();
    flow.timeline = renegotiation_timeline(false);
    flow.response = None;
    flow.error = Some(FlowError {
        kind: FlowErrorKind::ClientCertificateRequired,
        message: "the server required a client certificate".into(),
        at: Timestamp(T0 + 26_000),
    });
    flow
}

fn sample_flows() -> Vec<Flow> {
    vec![
        get_flow(),
        post_flow(),
        binary_flow(),
        renegotiated_flow(),
        failed_flow(),
    ]
}

fn validate(har: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    validator
        .iter_errors(har)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn entry_of(flow: Flow) -> Value {
    to_har([flow], "test")["log"]["entries"][0].clone()
}

#[test]
fn exported_flows_validate_against_the_har_schema() {
    let har = to_har(sample_flows(), "0.1.0");
    let errors = validate(&har);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(har["log"]["entries"].as_array().unwrap().len(), 5);
    assert_eq!(har["log"]["pages"], json!([]));
}

#[test]
fn the_schema_rejects_what_the_spec_forbids() {
    let good = to_har([get_flow()], "0.1.0");
    type Breakage = fn(&mut Value);
    let breakages: [(&str, Breakage); 5] = [
        ("missing redirectURL", |h| {
            h["log"]["entries"][0]["response"]
                .as_object_mut()
                .unwrap()
                .remove("redirectURL");
        }),
        ("negative wait", |h| {
            h["log"]["entries"][0]["timings"]["wait"] = json!(-1)
        }),
        ("custom field without underscore", |h| {
            h["log"]["entries"][0]["tlsEvents"] = json!([])
        }),
        ("headers not an array", |h| {
            h["log"]["entries"][0]["request"]["headers"] = json!({})
        }),
        ("bad date", |h| {
            h["log"]["entries"][0]["startedDateTime"] = json!("yesterday")
        }),
    ];
    for (what, breakage) in breakages {
        let mut har = good.clone();
        breakage(&mut har);
        assert!(!validate(&har).is_empty(), "{what} was accepted");
    }
}

#[test]
fn the_streaming_writer_writes_the_same_archive() {
    let bytes = write_har(Vec::new(), sample_flows(), "0.1.0").unwrap();
    let streamed: Value = serde_json::from_slice(&bytes).unwrap();
    let mut expected = to_har(sample_flows(), "0.1.0");
    // Timestamps and ids are the same; only the writer differs.
    assert_eq!(streamed, expected);
    let empty: Value = serde_json::from_slice(&write_har(Vec::new(), [], "x").unwrap()).unwrap();
    expected["log"]["entries"] = json!([]);
    expected["log"]["creator"]["version"] = json!("x");
    assert_eq!(empty, expected);
    // And it reads back into the typed structs.
    let har: Har = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(har.log.entries.len(), 5);
}

#[test]
fn a_renegotiated_flow_has_its_timings_and_tls_events() {
    let entry = entry_of(renegotiated_flow());
    assert_eq!(entry["startedDateTime"], "2023-11-14T22:13:20.000Z");
    assert_eq!(
        entry["timings"],
        json!({
            "blocked": 1.0,   // first request byte -> connect started
            "dns": -1.0,
            "connect": 9.0,   // TCP 2 ms + TLS 7 ms: HAR's connect includes ssl
            "ssl": 7.0,
            "send": 2.0,      // TLS done -> last request byte
            "wait": 28.0,     // -> first response byte, the renegotiation included
            "receive": 5.5,
        })
    );
    assert_eq!(
        entry["time"],
        json!(45.5),
        "blocked + connect + send + wait + receive"
    );
    assert_eq!(entry["serverIPAddress"], "2001:db8::1");
    assert_eq!(entry["connection"], "7");

    let events = entry["_tlsEvents"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "hello_request",
            "renegotiation_started",
            "certificate_requested",
            "certificate_presented",
            "renegotiation_completed"
        ]
    );
    assert_eq!(
        events[0],
        json!({
            "time": "2023-11-14T22:13:20.020000Z",
            "leg": "server",
            "type": "hello_request",
            "details": {"direction": "received"},
            "text": "server leg: HelloRequest received (renegotiation requested)",
        })
    );
    assert_eq!(events[1]["time"], "2023-11-14T22:13:20.020100Z");
    assert_eq!(
        events[2]["details"],
        json!({"ca_names": ["CN=Test CA"], "post_handshake": false})
    );
    assert_eq!(
        events[4]["details"],
        json!({"version": "TLSv1.2", "cipher": "ECDHE-RSA-AES256-GCM-SHA384"})
    );
    assert!(events[4]["text"]
        .as_str()
        .unwrap()
        .contains("renegotiation completed"));
    assert!(entry.get("_error").is_none());
    assert!(entry.get("_notes").is_none(), "no notes, no field");
}

#[test]
fn timeline_notes_are_exported() {
    let mut flow = get_flow();
    flow.timeline.push_note(
        Timestamp(T0 + 1_500),
        "server answered HTTP_1_1_REQUIRED; retried over HTTP/1.1".into(),
    );
    let har = to_har([flow], "x");
    assert!(validate(&har).is_empty());
    assert_eq!(
        har["log"]["entries"][0]["_notes"],
        json!([{"time": "2023-11-14T22:13:20.001500Z",
                "text": "server answered HTTP_1_1_REQUIRED; retried over HTTP/1.1"}])
    );
}

#[test]
fn a_reused_connection_has_no_connect_time() {
    let entry = entry_of(post_flow());
    assert_eq!(
        entry["timings"],
        json!({"blocked": -1.0, "dns": -1.0, "connect": -1.0, "ssl": -1.0,
               "send": 1.0, "wait": 4.0, "receive": 1.0})
    );
    assert_eq!(entry["time"], json!(6.0));
}

#[test]
fn a_failed_flow_ends_at_its_error() {
    let entry = entry_of(failed_flow());
    assert_eq!(entry["_error"], "the server required a client certificate");
    assert_eq!(entry["_errorKind"], "client_certificate_required");
    let response = &entry["response"];
    assert_eq!(response["status"], 0);
    assert_eq!(
        response["_error"],
        "the server required a client certificate"
    );
    assert_eq!(
        response["content"],
        json!({"size": 0, "mimeType": "x-unknown"})
    );
    let timings = &entry["timings"];
    assert_eq!(timings["send"], json!(2.0));
    assert_eq!(timings["wait"], json!(14.0), "until the error at 26 ms");
    assert_eq!(timings["receive"], json!(0.0));
    assert_eq!(entry["time"], json!(26.0));
    assert_eq!(entry["_tlsEvents"].as_array().unwrap().len(), 5);
}

#[test]
fn a_connect_failure_is_charged_to_connect() {
    let mut flow = get_flow();
    let mut timeline = Timeline::new();
    timeline.mark(Milestone::RequestStarted, Timestamp(T0));
    timeline.mark(Milestone::ServerConnectInitiated, Timestamp(T0 + 1_000));
    flow.timeline = timeline;
    flow.response = None;
    flow.error = Some(FlowError {
        kind: FlowErrorKind::Timeout,
        message: "connect timed out".into(),
        at: Timestamp(T0 + 5_001_000),
    });
    let har = to_har([flow], "x");
    assert!(validate(&har).is_empty());
    let entry = &har["log"]["entries"][0];
    assert_eq!(entry["timings"]["connect"], json!(5000.0));
    assert_eq!(entry["timings"]["ssl"], json!(-1.0));
    assert_eq!(entry["time"], json!(5001.0));
}

#[test]
fn request_fields() {
    let entry = entry_of(get_flow());
    let request = &entry["request"];
    assert_eq!(
        request["url"],
        "https://example.com/search?q=a+b&lang=en%2Dus"
    );
    assert_eq!(request["httpVersion"], "HTTP/1.1");
    assert_eq!(
        request["queryString"],
        json!([{"name": "q", "value": "a b"}, {"name": "lang", "value": "en-us"}])
    );
    assert_eq!(
        request["cookies"],
        json!([
            {"name": "sid", "value": "abc"},
            {"name": "theme", "value": "dark"},
            {"name": "", "value": "flag"}
        ])
    );
    assert_eq!(
        request["headers"][0],
        json!({"name": "Host", "value": "example.com"})
    );
    assert_eq!(request["bodySize"], 0);
    assert_eq!(request["headersSize"], -1);
    assert!(request.get("postData").is_none());

    let post = entry_of(post_flow());
    assert_eq!(
        post["request"]["postData"],
        json!({"mimeType": "application/x-www-form-urlencoded", "text": "user=ann&pass=s%20cret"})
    );
    assert_eq!(post["request"]["bodySize"], 22);
}

#[test]
fn response_fields() {
    let entry = entry_of(get_flow());
    let response = &entry["response"];
    assert_eq!(response["status"], 200);
    assert_eq!(response["statusText"], "OK");
    assert_eq!(
        response["content"],
        json!({"size": 18, "mimeType": "text/html; charset=utf-8", "text": "<html>hello</html>"})
    );
    assert_eq!(response["redirectURL"], "");
    assert_eq!(
        response["cookies"][0],
        json!({
            "name": "sid", "value": "new", "path": "/", "domain": "example.com",
            "expires": "2015-10-21T07:28:00.000Z", "httpOnly": true, "secure": true
        })
    );
    // Max-Age wins over Expires, counted from the first response byte.
    assert_eq!(
        response["cookies"][1],
        json!({"name": "short", "value": "1", "expires": "2023-11-14T22:14:20.030Z",
               "httpOnly": false, "secure": false})
    );
}

#[test]
fn compressed_bodies_are_decoded_and_the_saving_reported() {
    let flow = post_flow();
    let wire = flow.response.as_ref().unwrap().body.size as i64;
    let entry = entry_of(flow);
    let response = &entry["response"];
    assert_eq!(response["redirectURL"], "https://example.com/home");
    let content = &response["content"];
    assert_eq!(content["text"], r#"{"ok":true,"next":"/home"}"#);
    assert_eq!(content["size"], 26);
    assert_eq!(content["compression"], json!(26 - wire));
    assert_eq!(response["bodySize"], json!(wire));
}

#[test]
fn binary_and_truncated_bodies_are_base64_and_say_so() {
    let entry = entry_of(binary_flow());
    let request = &entry["request"];
    assert_eq!(request["url"], "http://example.com:8080/blob");
    assert_eq!(
        request["postData"],
        json!({"mimeType": "", "text": "AJ+Slg==", "encoding": "base64"})
    );
    assert_eq!(
        request["headers"].as_array().unwrap().last().unwrap()["value"],
        "ok\u{fffd}\u{fffd}"
    );
    let content = &entry["response"]["content"];
    assert_eq!(content["text"], "3q2+7w==");
    assert_eq!(content["encoding"], "base64");
    assert_eq!(content["size"], 4);
    assert_eq!(
        content["comment"],
        "truncated: Periscope recorded 4 of 1048576 bytes"
    );
    assert_eq!(entry["response"]["bodySize"], 1_048_576);
}

#[test]
fn an_undecodable_body_is_kept_as_received() {
    let mut flow = get_flow();
    let response = flow.response.as_mut().unwrap();
    response.headers.push("Content-Encoding", "gzip");
    let entry = entry_of(flow);
    let content = &entry["response"]["content"];
    assert_eq!(content["text"], "<html>hello</html>");
    assert!(content.get("compression").is_none());
    assert!(content["comment"]
        .as_str()
        .unwrap()
        .starts_with("not decoded (gzip body is corrupt"));
}

#[test]
fn dates_are_rfc3339_utc() {
    assert_eq!(rfc3339(Timestamp(0), 3), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        rfc3339(Timestamp(951_782_400_123_456), 3),
        "2000-02-29T00:00:00.123Z"
    );
    assert_eq!(
        rfc3339(Timestamp(951_782_400_123_456), 6),
        "2000-02-29T00:00:00.123456Z"
    );
    assert_eq!(rfc3339(Timestamp(-1), 6), "1969-12-31T23:59:59.999999Z");
    assert_eq!(
        rfc3339(Timestamp(4_102_444_800_000_000), 3),
        "2100-01-01T00:00:00.000Z"
    );
}

/// The `expires` HAR writes for `Set-Cookie: a=b; Expires=<date>`.
fn expires_of(date: &str) -> Option<String> {
    set_cookie(&format!("a=b; Expires={date}"), Timestamp(T0))?.expires
}

#[test]
fn cookie_dates_in_every_http_form_parse() {
    let expected = Some("1994-11-06T08:49:37.000Z".to_owned());
    for text in [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "Sun, 06-Nov-1994 08:49:37 GMT",
    ] {
        assert_eq!(expires_of(text), expected, "{text}");
    }
    // RFC 6265 §5.1.1: two-digit years 70-99 are 1970-1999, 0-69 are 2000-2069.
    assert_eq!(
        expires_of("Thursday, 01-Jan-70 00:00:01 GMT").as_deref(),
        Some("1970-01-01T00:00:01.000Z")
    );
    assert_eq!(
        expires_of("Monday, 01-Jan-35 00:00:00 GMT").as_deref(),
        Some("2035-01-01T00:00:00.000Z")
    );
    for text in [
        "",
        "tomorrow",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "06 Nov 1994",
    ] {
        assert_eq!(expires_of(text), None, "{text}");
    }
}

#[test]
fn a_cookie_domain_loses_its_leading_dot() {
    // RFC 6265 §5.2.3: `.example.com` and `example.com` name the same domain; the
    // cookie crate gives the latter.
    let cookie = set_cookie("a=b; Domain=.example.com; Path=/x", Timestamp(T0)).unwrap();
    assert_eq!(cookie.domain.as_deref(), Some("example.com"));
    assert_eq!(cookie.path.as_deref(), Some("/x"));
}

#[test]
fn http2_stream_ids_are_exported_as_custom_fields() {
    let mut flow = get_flow();
    flow.request.http_version = "HTTP/2.0".into();
    flow.request.stream_id = Some(3);
    if let Some(response) = flow.response.as_mut() {
        response.http_version = "HTTP/2.0".into();
        response.stream_id = Some(7);
    }
    let entry = entry_of(flow);
    assert_eq!(entry["request"]["_streamId"], 3);
    assert_eq!(entry["response"]["_streamId"], 7);
    let plain = entry_of(get_flow());
    assert!(plain["request"].get("_streamId").is_none(), "{plain}");
    assert!(plain["response"].get("_streamId").is_none(), "{plain}");
}

/// `get_flow` answered with these `Set-Cookie` values (raw bytes, as recorded).
fn flow_setting_cookies(values: &[&[u8]]) -> Flow {
    let mut flow = get_flow();
    let response = flow.response.as_mut().unwrap();
    response.headers = headers(&[("Content-Type", "text/plain")]);
    for value in values {
        response.headers.push("Set-Cookie", value.to_vec());
    }
    flow
}

#[test]
fn hostile_cookie_dates_are_dropped_without_a_panic() {
    // Read leniently, `a\xff` is `a\u{fffd}`: its fourth byte is inside a
    // character, where the old hand-written date parser sliced it.
    let values: [&[u8]; 6] = [
        b"a=b; Expires=a\xff",
        "a=b; Expires=a\u{fffd}".as_bytes(),
        "a=b; Expires=a€".as_bytes(),
        "a=b; Expires=Sun, 06 N€v 1994 08:49:37 GMT".as_bytes(),
        b"a=b; Expires=\xff\xfe\xfd; Path=/\xff",
        "a=b; Expires=€€€€, 06-€€€-94 08:49:37 GMT; Domain=€".as_bytes(),
    ];
    let har = to_har([flow_setting_cookies(&values)], "x");
    let errors = validate(&har);
    assert!(errors.is_empty(), "{errors:#?}");
    let cookies = har["log"]["entries"][0]["response"]["cookies"]
        .as_array()
        .unwrap();
    assert_eq!(cookies.len(), values.len(), "{cookies:#?}");
    for cookie in cookies {
        assert_eq!(
            (&cookie["name"], &cookie["value"]),
            (&json!("a"), &json!("b"))
        );
        assert!(cookie.get("expires").is_none(), "{cookie}");
    }
}

#[test]
fn hostile_request_cookies_are_kept_as_text() {
    let mut flow = get_flow();
    flow.request.headers = Headers(vec![
        Header::new("Cookie", b"a=\xff; \xfe=b; flag\xff".to_vec()),
        Header::new("Cookie", "€=€; ;;=x".as_bytes().to_vec()),
    ]);
    let har = to_har([flow], "x");
    assert!(validate(&har).is_empty());
    assert_eq!(
        har["log"]["entries"][0]["request"]["cookies"],
        json!([
            {"name": "a", "value": "\u{fffd}"},
            {"name": "\u{fffd}", "value": "b"},
            {"name": "", "value": "flag\u{fffd}"},
            {"name": "€", "value": "€"},
            {"name": "", "value": "x"},
        ])
    );
}

#[test]
fn expiry_times_beyond_rfc3339_years_are_clamped() {
    let mut flow = flow_setting_cookies(&[
        b"far=1; Max-Age=99999999999999999999",
        b"huge=1; Max-Age=9223372036854775807",
    ]);
    flow.timeline
        .mark(Milestone::ResponseStarted, Timestamp(i64::MAX));
    let har = to_har([flow], "x");
    assert!(validate(&har).is_empty(), "{:#?}", validate(&har));
    let cookies = &har["log"]["entries"][0]["response"]["cookies"];
    for cookie in cookies.as_array().unwrap() {
        assert_eq!(cookie["expires"], "9999-12-31T23:59:59.999Z", "{cookie}");
    }
    assert_eq!(rfc3339(Timestamp(i64::MIN), 3), "0000-01-01T00:00:00.000Z");
}
