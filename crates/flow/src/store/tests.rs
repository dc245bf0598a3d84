use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::*;
use crate::model::{
    Annotations, Body, CertificateSummary, ConnectionInfo, FlowError, FlowErrorKind, Headers,
    Request, Response, TlsInfo,
};
use crate::timeline::{Direction, Initiator, Leg, Milestone, Timeline, TlsEvent, TlsEventKind};
use tempfile::TempDir;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// A small, ordinary flow: `GET http://host/path` answered 200.
fn flow_at(host: &str, path: &str, started: i64) -> Flow {
    let mut timeline = Timeline::new();
    timeline.mark(Milestone::RequestStarted, Timestamp(started));
    timeline.mark(Milestone::ResponseComplete, Timestamp(started + 1_500));
    let mut request_headers = Headers::default();
    request_headers.push("Host", host);
    let mut response_headers = Headers::default();
    response_headers.push("Content-Type", "text/plain");
    Flow {
        id: FlowId::new(),
        client: ConnectionInfo {
            id: 1,
            peer: Some(addr("127.0.0.1:50000")),
            local: Some(addr("127.0.0.1:8080")),
            target: None,
            tls: None,
        },
        server: Some(ConnectionInfo {
            id: 2,
            peer: Some(addr("93.184.216.34:80")),
            local: None,
            target: Some(format!("{host}:80")),
            tls: None,
        }),
        request: Request {
            method: "GET".into(),
            scheme: "http".into(),
            host: host.into(),
            port: 80,
            path: path.into(),
            http_version: "HTTP/1.1".into(),
            stream_id: None,
            headers: request_headers,
            body: Body::default(),
            trailers: None,
        },
        response: Some(Response {
            status: 200,
            reason: "OK".into(),
            http_version: "HTTP/1.1".into(),
            stream_id: None,
            headers: response_headers,
            body: Body::complete(&b"hello"[..]),
            trailers: None,
            generated: false,
        }),
        error: None,
        timeline,
        marked: false,
        intercepted_tls: false,
        websocket: None,
        intercepted: None,
        annotations: Default::default(),
        listener: None,
        tcp: None,
        rules: Vec::new(),
    }
}

/// A flow that uses every corner of the model: TLS on both legs with a
/// certificate, a renegotiation, non-UTF-8 header values, binary and truncated
/// bodies, trailers, an IPv6 peer and an error.
fn rich_flow() -> Flow {
    let mut flow = flow_at("vedauth.example", "/vedauth?x=1", 1_700_000_000_000_000);
    flow.request.scheme = "https".into();
    flow.request.port = 8443;
    flow.request.method = "POST".into();
    flow.request
        .headers
        .push("X-Binary", vec![0xff, 0xfe, 0x00, b'a']);
    flow.request.headers.push("Cookie", "a=1; b=2");
    flow.request.body = Body {
        content: Bytes::from_static(&[0u8, 159, 146, 150, 255, 1, 2, 3]),
        size: 8,
        truncated: false,
    };
    flow.request.trailers = Some(Headers(vec![crate::model::Header::new(
        "x-checksum",
        "abc",
    )]));
    flow.client.peer = Some(addr("[::1]:51000"));
    flow.client.tls = Some(TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_128_GCM_SHA256".into(),
        sni: Some("vedauth.example".into()),
        alpn: Some("http/1.1".into()),
        peer_chain: Vec::new(),
        peer_certificate: None,
        resumed: false,
        key_exchange: Some("X25519MLKEM768".into()),
    });
    let server = flow.server.as_mut().unwrap();
    server.target = Some("vedauth.example:8443".into());
    server.peer = Some(addr("[2001:db8::1]:8443"));
    server.tls = Some(TlsInfo {
        version: "TLSv1.2".into(),
        cipher: "ECDHE-RSA-AES128-GCM-SHA256".into(),
        sni: Some("vedauth.example".into()),
        alpn: None,
        peer_chain: Vec::new(),
        peer_certificate: Some(CertificateSummary {
            subject: "CN=vedauth.example".into(),
            issuer: "CN=Test CA".into(),
            subject_alt_names: vec!["DNS:vedauth.example".into()],
            not_before: "2024-01-01T00:00:00Z".into(),
            not_after: "2034-01-01T00:00:00Z".into(),
            serial: "01".into(),
            sha256_fingerprint: "AA:BB".into(),
        }),
        resumed: true,
        key_exchange: Some("x25519".into()),
    });
    let response = flow.response.as_mut().unwrap();
    response.status = 403;
    response.reason = "Forbidden".into();
    response
        .headers
        .push("X-Latin1", vec![b'c', b'a', b'f', 0xe9]);
    response.body = Body {
        content: Bytes::from(vec![0x1f, 0x8b, 0x08, 0x00, 0xde, 0xad]),
        size: 1_000_000,
        truncated: true,
    };
    response.generated = true;
    let t = flow.started_at().unwrap().0;
    flow.timeline
        .mark(Milestone::ServerConnectInitiated, Timestamp(t + 10));
    flow.timeline.push_tls(
        Timestamp(t + 200),
        TlsEvent {
            leg: Leg::Server,
            kind: TlsEventKind::HelloRequest {
                direction: Direction::Received,
            },
        },
    );
    flow.timeline.push_tls(
        Timestamp(t + 210),
        TlsEvent {
            leg: Leg::Server,
            kind: TlsEventKind::RenegotiationStarted {
                initiator: Initiator::Peer,
            },
        },
    );
    flow.timeline.push_tls(
        Timestamp(t + 220),
        TlsEvent {
            leg: Leg::Server,
            kind: TlsEventKind::CertificateRequested {
                ca_names: vec!["CN=Test CA".into(), "CN=Other, O=Ünïcode".into()],
                post_handshake: false,
            },
        },
    );
    flow.timeline.push_tls(
        Timestamp(t + 230),
        TlsEvent {
            leg: Leg::Server,
            kind: TlsEventKind::CertificatePresented {
                direction: Direction::Sent,
                subject: None,
            },
        },
    );
    flow.error = Some(FlowError {
        kind: FlowErrorKind::ClientCertificateRequired,
        message: "the server required a client certificate".into(),
        at: Timestamp(t + 1_000),
    });
    flow.marked = true;
    flow.intercepted_tls = true;
    flow
}

/// A flow like the proxy records: about ten headers each way, `body_len`-byte
/// bodies, every milestone.
fn realistic_flow(i: usize, body_len: usize) -> Flow {
    let host = if i.is_multiple_of(4) {
        format!("cdn{}.other.org", i % 7)
    } else {
        format!("api{}.example.com", i % 50)
    };
    let t = 1_700_000_000_000_000 + i as i64 * 1_000;
    let mut flow = flow_at(&host, &format!("/v1/items/{i}?page={}", i % 10), t);
    for milestone in Milestone::ALL {
        flow.timeline.mark(milestone, Timestamp(t + 100));
    }
    flow.request.headers = Headers::default();
    for (name, value) in [
        ("Host", host.as_str()),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) Periscope-bench/1.0",
        ),
        ("Accept", "application/json, text/plain, */*"),
        ("Accept-Language", "en-US,en;q=0.9"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Connection", "keep-alive"),
        ("Cookie", "session=0123456789abcdef; theme=dark"),
        ("Referer", "https://app.example.com/dashboard"),
        ("X-Request-Id", "5d1f3c2a-8e4b-4f7a-9c6d-2b1e0f3a4c5d"),
        ("Content-Type", "application/json"),
    ] {
        flow.request.headers.push(name, value);
    }
    let mut body = vec![b'x'; body_len];
    if i % 100 == 7 && body_len >= 3 {
        body[..3].copy_from_slice(b"foo");
    }
    flow.request.body = Body::complete(body.clone());
    let response = flow.response.as_mut().unwrap();
    response.headers = Headers::default();
    for (name, value) in [
        ("Date", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ("Content-Type", "application/json; charset=utf-8"),
        ("Cache-Control", "no-cache"),
        ("Server", "nginx/1.25.3"),
        ("Vary", "Accept-Encoding"),
        ("X-Frame-Options", "DENY"),
        ("Strict-Transport-Security", "max-age=31536000"),
        ("Set-Cookie", "session=0123456789abcdef; Path=/; HttpOnly"),
        ("ETag", "\"33a64df551425fcc55e4d42a148795d9f25f89d4\""),
        ("Content-Length", "1024"),
    ] {
        response.headers.push(name, value);
    }
    response.body = Body::complete(body);
    if i % 10 == 3 {
        flow.timeline.push_tls(
            Timestamp(t + 50),
            TlsEvent {
                leg: Leg::Server,
                kind: TlsEventKind::KeyUpdate {
                    direction: Direction::Received,
                    update_requested: false,
                },
            },
        );
    }
    flow
}

/// Gives some of `flows` the user's annotations (which must be at least 30).
fn annotate(flows: &mut [Flow]) {
    flows[11].annotations.comment = "look at this".into();
    flows[12].annotations.comment = "first line\nsecond line".into();
    flows[13].annotations.replay_of = Some(flows[2].id);
    flows[13].annotations.comment = "replayed to look again".into();
    flows[14].annotations.duplicate_of = Some(flows[2].id);
    flows[15].annotations.modified = true;
    flows[21].annotations.replay_of = Some(flows[3].id);
}

fn filter(text: &str) -> Filter {
    Filter::parse(text).unwrap()
}

fn temp_path() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session.periscope");
    (dir, path)
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FlowStore>();
}

#[test]
fn a_rich_flow_comes_back_equal() {
    let store = FlowStore::temporary().unwrap();
    let flow = rich_flow();
    store.insert(&flow).unwrap();
    let back = store.get(flow.id).unwrap().expect("stored");
    assert_eq!(back, flow);
    assert_eq!(store.get(FlowId::new()).unwrap(), None);
}

#[test]
fn bodies_are_blobs_not_base64() {
    let store = FlowStore::temporary().unwrap();
    let flow = rich_flow();
    store.insert(&flow).unwrap();
    let conn = store.writer();
    let (head, request): (String, Vec<u8>) = conn
        .query_row(
            "SELECT h.head, b.request FROM flow_heads h JOIN flow_bodies b USING (seq)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(request, flow.request.body.content);
    assert!(head.contains(r#""content":"""#), "{head}");
    assert!(head.contains(r#""truncated":true"#), "{head}");
}

#[test]
fn the_head_is_the_flow_json_with_empty_bodies() {
    let mut http2 = rich_flow();
    http2.request.stream_id = Some(5);
    if let Some(response) = &mut http2.response {
        response.stream_id = Some(9);
    }
    for flow in [
        rich_flow(),
        realistic_flow(3, 100),
        flow_at("a", "/", 1),
        http2,
    ] {
        let mut without_bodies = flow.clone();
        without_bodies.request.body.content = Bytes::new();
        if let Some(response) = &mut without_bodies.response {
            response.body.content = Bytes::new();
        }
        let expected = serde_json::to_string(&without_bodies).unwrap();
        assert_eq!(head::to_json(&flow).unwrap(), expected);
    }
}

#[test]
fn summaries_match_the_flows() {
    let store = FlowStore::temporary().unwrap();
    let flow = rich_flow();
    store.insert(&flow).unwrap();
    let summaries = store.summaries(None, 0, 10).unwrap();
    assert_eq!(summaries, vec![FlowSummary::of(&flow)]);
    let summary = &summaries[0];
    assert_eq!(summary.status, Some(403));
    assert_eq!(summary.response_size, Some(1_000_000));
    assert!(summary.has_tls_events && summary.has_renegotiation && summary.has_error);
    assert!(summary.marked);
    assert_eq!(summary.content_type.as_deref(), Some("text/plain"));
    assert_eq!(summary.duration_ms, Some(1.5));
}

#[test]
fn count_except_leaves_out_the_flows_counted_elsewhere_with_and_without_a_filter() {
    let store = FlowStore::temporary().unwrap();
    let flows = [
        flow_at("a.example", "/", 1_000),
        flow_at("b.example", "/", 2_000),
        flow_at("a.example", "/x", 3_000),
    ];
    for flow in &flows {
        store.insert(flow).unwrap();
    }
    let in_flight: HashSet<FlowId> = [flows[0].id, FlowId::new()].into_iter().collect();
    assert_eq!(store.count_except(None, &HashSet::new()).unwrap(), 3);
    assert_eq!(store.count_except(None, &in_flight).unwrap(), 2);
    let host_a = filter("~d a.example");
    assert_eq!(store.count_except(Some(&host_a), &in_flight).unwrap(), 1);
    assert_eq!(
        store.count_except(Some(&host_a), &HashSet::new()).unwrap(),
        2
    );
}

#[test]
fn upsert_replaces_the_flow_and_keeps_its_place() {
    let store = FlowStore::temporary().unwrap();
    let first = flow_at("a.example", "/", 1_000);
    let mut second = flow_at("b.example", "/", 2_000);
    let pending = second.response.take();
    store
        .insert_many(&[Arc::new(first.clone()), Arc::new(second.clone())])
        .unwrap();
    assert_eq!(store.summaries(None, 0, 10).unwrap()[1].status, None);

    second.response = pending;
    second.request.body = Body::complete(&b"now with a body"[..]);
    store.insert(&second).unwrap();
    assert_eq!(store.count(None).unwrap(), 2);
    assert_eq!(store.get(second.id).unwrap().unwrap(), second);
    let ids = store.ids(None).unwrap();
    assert_eq!(ids, vec![first.id, second.id]);
    assert_eq!(store.summaries(None, 0, 10).unwrap()[1].status, Some(200));
}

#[test]
fn a_mark_set_in_the_store_survives_the_proxy_updating_the_flow() {
    let store = FlowStore::temporary().unwrap();
    let flow = flow_at("a.example", "/", 1_000);
    store.insert(&flow).unwrap();
    assert!(store.set_marked(flow.id, true).unwrap());
    store.insert(&flow).unwrap(); // the proxy's copy has marked = false
    assert!(store.get(flow.id).unwrap().unwrap().marked);
    assert!(store.set_marked(flow.id, false).unwrap());
    assert!(!store.get(flow.id).unwrap().unwrap().marked);
    assert!(!store.set_marked(FlowId::new(), true).unwrap());
}

#[test]
fn flows_are_listed_in_time_order_whatever_the_insert_order() {
    let store = FlowStore::temporary().unwrap();
    let times = [5_000, 1_000, 3_000, 2_000, 4_000, 3_000];
    let flows: Vec<Flow> = times
        .iter()
        .enumerate()
        .map(|(i, &t)| flow_at("a.example", &format!("/{i}"), t))
        .collect();
    for flow in &flows {
        store.insert(flow).unwrap();
    }
    let paths: Vec<String> = store
        .summaries(None, 0, 100)
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect();
    // Equal times keep insert order.
    assert_eq!(paths, ["/1", "/3", "/2", "/5", "/4", "/0"]);
    let page: Vec<String> = store
        .summaries(None, 2, 3)
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(page, ["/2", "/5", "/4"]);
    assert!(store.summaries(None, 6, 3).unwrap().is_empty());
    assert!(store.summaries(None, 0, 0).unwrap().is_empty());
    let mut seen = Vec::new();
    store
        .for_each(None, |flow| seen.push(flow.request.path))
        .unwrap();
    assert_eq!(seen, paths);
}

#[test]
fn filters_select_the_same_flows_as_in_memory() {
    let store = FlowStore::temporary().unwrap();
    let mut flows: Vec<Flow> = (0..200).map(|i| realistic_flow(i, 64)).collect();
    flows[5].error = Some(FlowError {
        kind: FlowErrorKind::Timeout,
        message: "renegotiation timed out".into(),
        at: Timestamp(1),
    });
    flows[6].response = None;
    flows[8].marked = true;
    flows[9].server = None;
    flows.push(rich_flow());
    annotate(&mut flows);
    let shared: Vec<Arc<Flow>> = flows.iter().cloned().map(Arc::new).collect();
    store.insert_many(&shared).unwrap();
    for text in [
        "~d example",
        "~d other & ~m GET",
        "~b foo",
        "~bq foo | ~e",
        "~h x-binary",
        "~tls",
        "~tls renegotiation",
        "~q",
        "!~s | ~marked",
        "~c 403",
        "~src ::1",
        "~dst 2001:db8 | ~dst cdn3",
        "~u page=3 & !~d api1",
        "~t json & ~d api2",
        "~a",
        "~all",
        "~comment look",
        "~replay | ~marked",
        "~replayq & ~comment .",
    ] {
        let filter = filter(text);
        let expected: Vec<FlowId> = flows
            .iter()
            .filter(|f| filter.matches(f))
            .map(|f| f.id)
            .collect();
        let mut expected_in_time_order = expected.clone();
        let order = store.ids(None).unwrap();
        expected_in_time_order.sort_by_key(|id| order.iter().position(|o| o == id));
        assert_eq!(
            store.ids(Some(&filter)).unwrap(),
            expected_in_time_order,
            "{text}"
        );
        assert_eq!(
            store.count(Some(&filter)).unwrap(),
            expected.len(),
            "{text}"
        );
        let page: Vec<FlowId> = store
            .summaries(Some(&filter), 1, 3)
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        let want: Vec<FlowId> = expected_in_time_order
            .iter()
            .skip(1)
            .take(3)
            .copied()
            .collect();
        assert_eq!(page, want, "{text}");
        let mut streamed = Vec::new();
        store
            .for_each(Some(&filter), |flow| {
                assert!(filter.matches(&flow), "{text}");
                streamed.push(flow);
            })
            .unwrap();
        assert_eq!(streamed.len(), expected.len(), "{text}");
        for flow in streamed {
            // Streamed flows are whole, bodies included, whichever plan found them.
            let original = flows.iter().find(|f| f.id == flow.id).unwrap();
            assert_eq!(&flow, original, "{text}");
        }
    }
}

#[test]
fn the_column_skeleton_answers_column_filters_like_the_flow() {
    let mut flows: Vec<Flow> = (0..40).map(|i| realistic_flow(i, 16)).collect();
    flows.push(rich_flow());
    annotate(&mut flows);
    flows[3].response = None;
    flows[4].server.as_mut().unwrap().target = None;
    flows[5].server.as_mut().unwrap().peer = None;
    flows[6].client.peer = None;
    for text in [
        "~d api1",
        "~m post",
        "~u https",
        "~u :8443/",
        "~c 200",
        "~q",
        "~s",
        "~e",
        "~marked",
        "~src ::1",
        "~src 127",
        "~dst :80",
        "~dst 2001",
        "~all",
        "~dst vedauth.example:8443",
        "!~u items/1 & ~d api",
        "~comment look",
        "~comment '^second line$'",
        "~replay",
        "!~replayq & ~d api",
    ] {
        let filter = filter(text);
        assert_eq!(plan::need(&filter), Need::Columns, "{text}");
        for flow in &flows {
            let row = FlowRow::new(flow).unwrap();
            let columns = Columns {
                method: row.summary.method.clone(),
                scheme: row.summary.scheme.clone(),
                host: row.summary.host.clone(),
                port: row.summary.port,
                path: row.summary.path.clone(),
                status: row.summary.status,
                has_error: row.summary.has_error,
                marked: row.summary.marked,
                client_peer: row.client_peer.clone(),
                server_target: row.server_target.clone(),
                server_peer: row.server_peer.clone(),
                annotations: Annotations {
                    comment: row.comment.clone(),
                    modified: row.summary.modified,
                    replay_of: row.summary.replay_of,
                    duplicate_of: row.summary.duplicate_of,
                },
            };
            assert_eq!(
                filter.matches(&columns.skeleton()),
                filter.matches(flow),
                "{text} on {}",
                flow.request.url()
            );
        }
    }
}

#[test]
fn scans_walk_the_time_index_without_sorting() {
    let store = FlowStore::temporary().unwrap();
    let conn = store.writer();
    for need in [Need::Columns, Need::Head, Need::Bodies] {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", scan_sql(need)))
            .unwrap();
        let plan: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("flows_by_time"), "{need:?}: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{need:?}: {plan}");
    }
}

#[test]
fn delete_and_clear() {
    let store = FlowStore::temporary().unwrap();
    let a = flow_at("a.example", "/", 1);
    let b = flow_at("b.example", "/", 2);
    store.insert(&a).unwrap();
    store.insert(&b).unwrap();
    store
        .append_log(&LogEntry::new(LogLevel::Info, "kept"))
        .unwrap();
    assert!(store.delete(a.id).unwrap());
    assert!(!store.delete(a.id).unwrap());
    assert_eq!(store.get(a.id).unwrap(), None);
    assert_eq!(store.ids(None).unwrap(), vec![b.id]);
    store.clear().unwrap();
    assert_eq!(store.count(None).unwrap(), 0);
    assert_eq!(store.get(b.id).unwrap(), None);
    assert_eq!(
        store.log_entries(10).unwrap().len(),
        1,
        "clear keeps the log"
    );
    // Nothing of the deleted flows is left behind.
    let conn = store.writer();
    for table in ["flow_heads", "flow_bodies"] {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
}

#[test]
fn the_event_log_is_persisted_and_read_newest_last() {
    let (_dir, path) = temp_path();
    {
        let store = FlowStore::open(&path).unwrap();
        for i in 0..5 {
            let level = if i == 3 {
                LogLevel::Warn
            } else {
                LogLevel::Info
            };
            store
                .append_log(&LogEntry {
                    at: Timestamp(i),
                    level,
                    message: format!("entry {i}"),
                })
                .unwrap();
        }
    }
    let store = FlowStore::open(&path).unwrap();
    let last = store.log_entries(3).unwrap();
    let messages: Vec<&str> = last.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["entry 2", "entry 3", "entry 4"]);
    assert_eq!(last[1].level, LogLevel::Warn);
    assert_eq!(last[2].at, Timestamp(4));
    assert_eq!(store.log_entries(100).unwrap().len(), 5);
}

#[test]
fn flows_survive_closing_and_reopening() {
    let (_dir, path) = temp_path();
    let flow = rich_flow();
    {
        let store = FlowStore::open(&path).unwrap();
        store.insert(&flow).unwrap();
        assert_eq!(store.path(), path);
    }
    let store = FlowStore::open(&path).unwrap();
    assert_eq!(store.get(flow.id).unwrap(), Some(flow));
}

#[test]
fn a_session_made_with_smaller_pages_keeps_them_and_works() {
    let (_dir, path) = temp_path();
    {
        // As an earlier Periscope made them: 8 KiB pages, nothing written yet.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "page_size", 8192).unwrap();
        conn.execute_batch("VACUUM").unwrap();
    }
    let flows: Vec<Flow> = (0..50).map(|i| realistic_flow(i, 3000)).collect();
    {
        let store = FlowStore::open(&path).unwrap();
        for flow in &flows {
            store.insert(flow).unwrap();
        }
    }
    let store = FlowStore::open(&path).unwrap();
    let page_size: i64 = store
        .writer()
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap();
    assert_eq!(page_size, 8192);
    assert_ne!(page_size, PAGE_SIZE, "new files take the larger pages");
    for flow in &flows {
        assert_eq!(store.get(flow.id).unwrap().as_ref(), Some(flow));
    }
}

#[test]
fn an_empty_file_is_a_new_session() {
    let (_dir, path) = temp_path();
    std::fs::write(&path, b"").unwrap();
    let store = FlowStore::open(&path).unwrap();
    let version: i64 = store
        .writer()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = store
        .writer()
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let page_size: i64 = store
        .writer()
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap();
    assert_eq!(page_size, PAGE_SIZE);
}

/// A stand-in for a future layout change, to show the runner applies only the
/// missing steps, in order, and keeps the data.
fn add_a_note_column(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE flows ADD COLUMN note TEXT NOT NULL DEFAULT '';
         UPDATE flows SET note = 'migrated';",
    )
}

#[test]
fn an_older_layout_is_migrated_step_by_step() {
    let (_dir, path) = temp_path();
    let flow = rich_flow();
    {
        // A session at this build's version.
        let store = FlowStore::open_with(&path, schema::MIGRATIONS, None).unwrap();
        store.insert(&flow).unwrap();
    }
    let mut migrations = schema::MIGRATIONS.to_vec();
    migrations.push(add_a_note_column);
    let upgraded = FlowStore::open_with(&path, &migrations, None).unwrap();
    let (version, note): (i64, String) = {
        let conn = upgraded.writer();
        (
            conn.pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap(),
            conn.query_row("SELECT note FROM flows", [], |r| r.get(0))
                .unwrap(),
        )
    };
    assert_eq!(version, SCHEMA_VERSION + 1);
    assert_eq!(note, "migrated");
    assert_eq!(upgraded.get(flow.id).unwrap(), Some(flow));
    drop(upgraded);

    // Reopening runs nothing again (the ALTER would fail if it did) ...
    FlowStore::open_with(&path, &migrations, None).unwrap();
    // ... and this build refuses the newer layout rather than misreading it.
    match FlowStore::open(&path) {
        Err(StoreError::NewerFormat {
            found, supported, ..
        }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected NewerFormat, got {other:?}"),
    }
}

#[test]
fn other_files_are_not_sessions() {
    let (dir, path) = temp_path();
    std::fs::write(
        &path,
        "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".repeat(50),
    )
    .unwrap();
    let error = FlowStore::open(&path).unwrap_err();
    assert!(matches!(error, StoreError::NotASession { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("session.periscope"), "{message}");
    assert!(message.contains("not a Periscope session"), "{message}");
    assert_eq!(
        std::fs::read(&path).unwrap().len(),
        50 * 37,
        "the file is left alone"
    );

    let other = dir.path().join("places.sqlite");
    {
        let conn = Connection::open(&other).unwrap();
        conn.execute_batch("CREATE TABLE bookmarks (url TEXT)")
            .unwrap();
    }
    let error = FlowStore::open(&other).unwrap_err();
    assert!(
        matches!(&error, StoreError::NotASession { reason, .. } if reason.contains("another program")),
        "{error:?}"
    );

    let error = FlowStore::open(dir.path()).unwrap_err();
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
}

#[test]
fn a_saved_session_that_is_missing_is_not_created() {
    let (_dir, path) = temp_path();
    let error = FlowStore::open_existing(&path).unwrap_err();
    assert!(
        matches!(&error, StoreError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{error:?}"
    );
    assert!(!path.exists(), "open_existing created {}", path.display());
    FlowStore::open(&path).unwrap();
    FlowStore::open_existing(&path).unwrap();
}

#[cfg(unix)]
#[test]
fn the_session_and_its_wal_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = temp_path();
    let store = FlowStore::open(&path).unwrap();
    store.insert(&rich_flow()).unwrap();
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    for file in [path.as_os_str(), wal.as_os_str()] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", Path::new(file).display());
    }
}

#[test]
fn a_full_disk_is_its_own_error() {
    let store = FlowStore::temporary().unwrap();
    store.insert(&realistic_flow(0, 100)).unwrap();
    {
        // SQLite answers SQLITE_FULL past max_page_count, as it does for ENOSPC.
        let conn = store.writer();
        let pages: i64 = conn
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages + 2)
            .unwrap();
    }
    let kept = store.count(None).unwrap();
    let error = (1..1000)
        .find_map(|i| store.insert(&realistic_flow(i, 4096)).err())
        .expect("the file fills up");
    assert!(matches!(error, StoreError::DiskFull { .. }), "{error:?}");
    assert!(error.to_string().contains("disk is full"), "{error}");
    assert!(store.count(None).unwrap() >= kept, "committed flows stay");
}

#[test]
fn readers_and_a_writer_share_the_store_across_threads() {
    let store = Arc::new(FlowStore::temporary().unwrap());
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for batch in 0..20 {
                let flows: Vec<Arc<Flow>> = (0..25)
                    .map(|i| Arc::new(realistic_flow(batch * 25 + i, 32)))
                    .collect();
                store.insert_many(&flows).unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let filter = filter("~d example");
                let mut last = 0;
                for _ in 0..20 {
                    let n = store.count(None).unwrap();
                    assert!(n >= last, "counts never go back");
                    last = n;
                    store.summaries(Some(&filter), 0, 10).unwrap();
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for reader in readers {
        reader.join().unwrap();
    }
    assert_eq!(store.count(None).unwrap(), 500);
}

#[test]
fn a_temporary_session_is_removed_on_drop() {
    let store = FlowStore::temporary().unwrap();
    store.insert(&rich_flow()).unwrap();
    let dir = store.path().parent().unwrap().to_owned();
    assert!(dir.exists());
    drop(store);
    assert!(!dir.exists());
}

// ---------------------------------------------------------------------------
// Durability: a child process writes until it is killed with SIGKILL.

const CHILD_SESSION_ENV: &str = "PERISCOPE_STORE_KILL_TEST_SESSION";
const CHILD_TEST_NAME: &str = "store::tests::kill_test_child_writes_until_killed";

/// The child half of `committed_flows_survive_sigkill`; a no-op in a normal run.
#[test]
fn kill_test_child_writes_until_killed() {
    let Some(path) = std::env::var_os(CHILD_SESSION_ENV) else {
        return;
    };
    let store = FlowStore::open(Path::new(&path)).unwrap();
    let mut out = std::io::stdout().lock();
    let deadline = Instant::now() + Duration::from_secs(60);
    for batch in 0.. {
        if Instant::now() > deadline {
            break; // orphaned: the parent is gone
        }
        let flows: Vec<Arc<Flow>> = (0..10)
            .map(|i| Arc::new(realistic_flow(batch * 10 + i, 512)))
            .collect();
        store.insert_many(&flows).unwrap();
        for flow in &flows {
            writeln!(out, "committed {}", flow.id).unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn committed_flows_survive_sigkill() {
    let (_dir, path) = temp_path();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            CHILD_TEST_NAME,
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_SESSION_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut committed = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("committed ") {
            committed.push(FlowId(id.parse().unwrap()));
            if committed.len() >= 3_000 {
                break;
            }
        }
    }
    // SIGKILL, very likely in the middle of the next transaction.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(committed.len(), 3_000, "the child wrote too little");

    let store = FlowStore::open(&path).unwrap();
    for id in &committed {
        let flow = store.get(*id).unwrap();
        assert!(
            flow.is_some(),
            "flow {id} was reported committed but is gone"
        );
    }
    assert!(store.count(None).unwrap() >= committed.len());
}

// -- annotations, edits, revert, duplicates --------------------------------------

fn count_rows(store: &FlowStore, table: &str) -> i64 {
    store
        .writer()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_version_1_session_written_by_the_old_code_reads_every_flow() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sessions");
    let (_dir, path) = temp_path();
    // A copy: opening upgrades the file in place.
    std::fs::copy(data.join("version-1.periscope"), &path).unwrap();
    let expected: Vec<Flow> =
        serde_json::from_slice(&std::fs::read(data.join("version-1.flows.json")).unwrap()).unwrap();
    assert_eq!(expected.len(), 5);

    let store = FlowStore::open(&path).unwrap();
    let version: i64 = store
        .writer()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 2);
    assert_eq!(count_rows(&store, "flow_originals"), 0);
    for flow in &expected {
        assert_eq!(store.get(flow.id).unwrap().as_ref(), Some(flow));
    }
    let mut streamed = Vec::new();
    store.for_each(None, |flow| streamed.push(flow)).unwrap();
    assert_eq!(streamed.len(), expected.len());
    let summaries = store.summaries(None, 0, 10).unwrap();
    for flow in &expected {
        let summary = summaries.iter().find(|s| s.id == flow.id).unwrap();
        assert_eq!(summary, &FlowSummary::of(flow));
    }
    // The annotations version 1 kept only in a flow's JSON are in the new columns.
    let annotated = &expected[4];
    assert_eq!(annotated.annotations.comment, "looked at this one");
    let summary = summaries.iter().find(|s| s.id == annotated.id).unwrap();
    assert!(summary.has_comment && summary.modified);
    assert_eq!(summary.replay_of, Some(expected[1].id));
    assert_eq!(summary.duplicate_of, Some(expected[2].id));
    for text in [
        "~comment looked",
        "~replay",
        "~marked",
        "~marked | ~comment .",
    ] {
        let filter = filter(text);
        let mut matching: Vec<FlowId> = expected
            .iter()
            .filter(|f| filter.matches(f))
            .map(|f| f.id)
            .collect();
        matching.sort_by_key(|id| summaries.iter().position(|s| s.id == *id));
        assert!(!matching.is_empty(), "{text}");
        assert_eq!(store.ids(Some(&filter)).unwrap(), matching, "{text}");
    }
    assert_eq!(
        store.log_entries(10).unwrap()[0].message,
        "written by version 1"
    );
    // The upgraded file works like a new one.
    assert!(store
        .set_comment(expected[0].id, "after the upgrade")
        .unwrap());
    let mut edited = expected[0].clone();
    edited.request.method = "PUT".into();
    store.replace_edited(&edited).unwrap().unwrap();
    assert_eq!(
        store.original(edited.id).unwrap().unwrap().request.method,
        "POST"
    );
}

#[test]
fn summaries_show_the_annotations() {
    let store = FlowStore::temporary().unwrap();
    let mut flows: Vec<Flow> = (0..30).map(|i| realistic_flow(i, 8)).collect();
    annotate(&mut flows);
    let shared: Vec<Arc<Flow>> = flows.iter().cloned().map(Arc::new).collect();
    store.insert_many(&shared).unwrap();
    let summaries = store.summaries(None, 0, 100).unwrap();
    let expected: Vec<FlowSummary> = flows.iter().map(FlowSummary::of).collect();
    assert_eq!(summaries, expected);
    assert!(summaries[11].has_comment && !summaries[10].has_comment);
    assert_eq!(summaries[13].replay_of, Some(flows[2].id));
    assert_eq!(summaries[14].duplicate_of, Some(flows[2].id));
    assert!(summaries[15].modified);
    // Filtered lists read the same columns.
    let replays = store.summaries(Some(&filter("~replay")), 0, 100).unwrap();
    assert_eq!(replays, vec![expected[13].clone(), expected[21].clone()]);
}

#[test]
fn a_comment_is_set_cleared_and_survives_the_proxy_updating_the_flow() {
    let store = FlowStore::temporary().unwrap();
    let flow = flow_at("a.example", "/", 1_000);
    store.insert(&flow).unwrap();
    assert!(store.set_comment(flow.id, "the slow one").unwrap());
    assert_eq!(
        store.get(flow.id).unwrap().unwrap().annotations.comment,
        "the slow one"
    );
    assert!(store.summaries(None, 0, 1).unwrap()[0].has_comment);
    assert_eq!(
        store.ids(Some(&filter("~comment slow"))).unwrap(),
        vec![flow.id]
    );
    // Filters that read the JSON or the bodies see the column's comment too.
    assert_eq!(
        store
            .ids(Some(&filter("~comment slow & ~h host & ~bs hello")))
            .unwrap(),
        vec![flow.id]
    );

    store.insert(&flow).unwrap(); // the proxy's copy has no comment
    assert_eq!(
        store.get(flow.id).unwrap().unwrap().annotations.comment,
        "the slow one"
    );
    let mut commented_in_flight = flow.clone();
    commented_in_flight.annotations.comment = "from the proxy".into();
    store.insert(&commented_in_flight).unwrap();
    assert_eq!(
        store.get(flow.id).unwrap().unwrap().annotations.comment,
        "from the proxy"
    );

    assert!(store.set_comment(flow.id, "").unwrap());
    assert_eq!(store.get(flow.id).unwrap().unwrap(), flow);
    assert!(!store.summaries(None, 0, 1).unwrap()[0].has_comment);
    assert!(!store.set_comment(FlowId::new(), "nobody").unwrap());
}

#[test]
fn an_edit_keeps_the_recorded_flow_until_revert() {
    let store = FlowStore::temporary().unwrap();
    let recorded = rich_flow();
    let other = flow_at("other.example", "/", 1);
    store.insert(&recorded).unwrap();
    store.insert(&other).unwrap();
    assert_eq!(store.original(recorded.id).unwrap(), None);

    let mut edit = recorded.clone();
    edit.request.method = "PUT".into();
    edit.request.body = Body::complete(&b"edited body"[..]);
    edit.response.as_mut().unwrap().status = 200;
    let stored = store.replace_edited(&edit).unwrap().unwrap();
    assert!(stored.annotations.modified);
    assert_eq!(store.get(recorded.id).unwrap().as_ref(), Some(&stored));
    assert_eq!(
        store.original(recorded.id).unwrap().as_ref(),
        Some(&recorded)
    );
    let summary = &store.summaries(Some(&filter("~d vedauth")), 0, 1).unwrap()[0];
    assert!(summary.modified);
    assert_eq!(
        (summary.method.as_str(), summary.status),
        ("PUT", Some(200))
    );
    assert_eq!(store.ids(Some(&filter("~c 403"))).unwrap(), vec![]);

    // A second edit replaces the edit; the recorded flow stays the first one.
    let mut second = stored.clone();
    second.request.path = "/second".into();
    store.replace_edited(&second).unwrap().unwrap();
    assert_eq!(
        store.get(recorded.id).unwrap().unwrap().request.path,
        "/second"
    );
    assert_eq!(
        store.original(recorded.id).unwrap().as_ref(),
        Some(&recorded)
    );

    // The user's mark and comment are not part of the recording: revert keeps them.
    store.set_marked(recorded.id, false).unwrap();
    store
        .set_comment(recorded.id, "edited, then reverted")
        .unwrap();
    let reverted = store.revert(recorded.id).unwrap().unwrap();
    let mut expected = recorded.clone();
    expected.marked = false;
    expected.annotations.comment = "edited, then reverted".into();
    assert_eq!(reverted, expected);
    assert_eq!(store.get(recorded.id).unwrap().as_ref(), Some(&expected));
    assert_eq!(store.original(recorded.id).unwrap(), None);
    assert_eq!(count_rows(&store, "flow_originals"), 0);
    assert_eq!(
        store.summaries(Some(&filter("~d vedauth")), 0, 1).unwrap()[0],
        FlowSummary::of(&expected)
    );
    assert_eq!(
        store.ids(None).unwrap(),
        vec![other.id, recorded.id],
        "same place"
    );

    // Nothing to revert: the flow as it is; no such flow: None.
    assert_eq!(store.revert(other.id).unwrap().as_ref(), Some(&other));
    assert_eq!(store.revert(FlowId::new()).unwrap(), None);
}

#[test]
fn an_edit_of_a_flow_that_is_not_stored_writes_nothing() {
    let store = FlowStore::temporary().unwrap();
    assert_eq!(store.replace_edited(&rich_flow()).unwrap(), None);
    assert_eq!(store.count(None).unwrap(), 0);
    assert_eq!(count_rows(&store, "flow_originals"), 0);
}

#[test]
fn the_proxy_updating_an_edited_flow_updates_what_revert_puts_back() {
    let store = FlowStore::temporary().unwrap();
    let mut recorded = flow_at("ws.example", "/socket", 1_000);
    store.insert(&recorded).unwrap();
    let mut edit = recorded.clone();
    edit.request.path = "/edited".into();
    let stored = store.replace_edited(&edit).unwrap().unwrap();

    // The WebSocket closed: the proxy saves its (unedited) flow again.
    recorded.response.as_mut().unwrap().body = Body::complete(&b"closed"[..]);
    store.insert(&recorded).unwrap();
    assert_eq!(store.get(recorded.id).unwrap().as_ref(), Some(&stored));
    assert_eq!(
        store.original(recorded.id).unwrap().as_ref(),
        Some(&recorded)
    );
    assert_eq!(store.revert(recorded.id).unwrap().as_ref(), Some(&recorded));
}

#[test]
fn delete_and_clear_forget_the_recorded_versions() {
    let store = FlowStore::temporary().unwrap();
    let a = flow_at("a.example", "/", 1);
    let b = flow_at("b.example", "/", 2);
    store.insert(&a).unwrap();
    store.insert(&b).unwrap();
    for flow in [&a, &b] {
        let mut edit = flow.clone();
        edit.request.path = "/edited".into();
        store.replace_edited(&edit).unwrap().unwrap();
    }
    assert_eq!(count_rows(&store, "flow_originals"), 2);
    assert!(store.delete(a.id).unwrap());
    assert_eq!(count_rows(&store, "flow_originals"), 1);
    assert_eq!(store.original(a.id).unwrap(), None);
    // A flow saved again under the deleted id starts unedited.
    store.insert(&a).unwrap();
    assert_eq!(store.original(a.id).unwrap(), None);
    assert_eq!(store.revert(a.id).unwrap().as_ref(), Some(&a));
    store.clear().unwrap();
    assert_eq!(count_rows(&store, "flow_originals"), 0);
}

#[test]
fn a_duplicate_is_a_new_flow_next_to_its_source() {
    let store = FlowStore::temporary().unwrap();
    let first = flow_at("a.example", "/", 1_000);
    let source = rich_flow();
    let last = flow_at("z.example", "/", i64::MAX / 2);
    for flow in [&first, &source, &last] {
        store.insert(flow).unwrap();
    }
    let mut edit = source.clone();
    edit.request.path = "/edited".into();
    let edited = store.replace_edited(&edit).unwrap().unwrap();
    store.set_comment(source.id, "copy me").unwrap();

    let copy = store.duplicate(source.id).unwrap().unwrap();
    assert_ne!(copy.id, source.id);
    assert_eq!(copy.id.0.get_version_num(), 7, "time-ordered");
    assert!(copy.id > source.id);
    let mut expected = edited.clone();
    expected.id = copy.id;
    expected.annotations = Annotations {
        comment: "copy me".into(),
        modified: false,
        replay_of: None,
        duplicate_of: Some(source.id),
    };
    assert_eq!(copy, expected);
    assert_eq!(store.get(copy.id).unwrap().as_ref(), Some(&copy));
    // Nothing to revert the copy to; the source is untouched.
    assert_eq!(store.original(copy.id).unwrap(), None);
    assert_eq!(store.revert(copy.id).unwrap().as_ref(), Some(&copy));
    assert!(store.original(source.id).unwrap().is_some());
    assert_eq!(
        store.ids(None).unwrap(),
        vec![first.id, source.id, copy.id, last.id]
    );
    let summary = &store.summaries(None, 2, 1).unwrap()[0];
    assert_eq!(summary.duplicate_of, Some(source.id));
    assert_eq!(store.duplicate(FlowId::new()).unwrap(), None);
    assert_eq!(store.count(None).unwrap(), 4);
}

#[test]
fn pages_leave_out_the_excluded_flows_before_they_are_cut() {
    let store = FlowStore::temporary().unwrap();
    let flows: Vec<Flow> = (0..6)
        .map(|i| flow_at("a.example", &format!("/{i}"), 1_000 + i))
        .collect();
    for flow in &flows {
        store.insert(flow).unwrap();
    }
    // The second flow is listed elsewhere (in flight): pages of two cover the other
    // five, each once, with and without a filter, in time and in another order.
    let except: HashSet<FlowId> = [flows[1].id].into_iter().collect();
    let everything = filter("~d a.example");
    let by_status = ListOrder {
        by: SortBy::Status,
        descending: false,
    };
    for (filter, order) in [
        (None, ListOrder::default()),
        (Some(&everything), ListOrder::default()),
        (None, by_status),
        (Some(&everything), by_status),
    ] {
        let mut seen = Vec::new();
        for offset in [0, 2, 4] {
            let page = store
                .summaries_sorted(filter, order, offset, 2, &except)
                .unwrap();
            assert_eq!(page.len(), if offset == 4 { 1 } else { 2 });
            seen.extend(page.iter().map(|s| s.id));
        }
        let expected: Vec<FlowId> = flows
            .iter()
            .map(|f| f.id)
            .filter(|id| !except.contains(id))
            .collect();
        assert_eq!(seen, expected, "{filter:?} {order:?}");
    }
}

#[test]
fn sorted_pages_agree_with_and_without_a_filter() {
    let store = FlowStore::temporary().unwrap();
    let none = HashSet::new();
    let mut flows = Vec::new();
    for (i, status) in [404u16, 200, 500, 200, 302].into_iter().enumerate() {
        let mut flow = flow_at("a.example", &format!("/{i}"), 1_000 + i as i64);
        flow.response.as_mut().unwrap().status = status;
        store.insert(&flow).unwrap();
        flows.push(flow);
    }
    let by_status = ListOrder {
        by: SortBy::Status,
        descending: false,
    };
    let statuses =
        |page: Vec<FlowSummary>| page.iter().map(|s| s.status.unwrap()).collect::<Vec<_>>();
    let unfiltered = store
        .summaries_sorted(None, by_status, 0, 10, &none)
        .unwrap();
    assert_eq!(statuses(unfiltered), [200, 200, 302, 404, 500]);
    // Equal statuses stay in time order.
    let page = store
        .summaries_sorted(None, by_status, 0, 2, &none)
        .unwrap();
    assert_eq!(page[0].id, flows[1].id);
    assert_eq!(page[1].id, flows[3].id);
    let everything = filter("~d a.example");
    let filtered = store
        .summaries_sorted(Some(&everything), by_status, 1, 3, &none)
        .unwrap();
    assert_eq!(statuses(filtered), [200, 302, 404]);
    let descending = ListOrder {
        by: SortBy::Status,
        descending: true,
    };
    let sql = store
        .summaries_sorted(None, descending, 0, 10, &none)
        .unwrap();
    let memory = store
        .summaries_sorted(Some(&everything), descending, 0, 10, &none)
        .unwrap();
    assert_eq!(statuses(sql.clone()), [500, 404, 302, 200, 200]);
    assert_eq!(sql, memory);
    assert_eq!(SortBy::parse("size"), Some(SortBy::Size));
    assert_eq!(SortBy::parse("nope"), None);
}

#[test]
fn only_a_temporary_session_skips_the_fsyncs() {
    let synchronous = |store: &FlowStore| -> i64 {
        store
            .writer()
            .query_row("PRAGMA synchronous", [], |row| row.get(0))
            .unwrap()
    };
    let (_dir, path) = temp_path();
    assert_eq!(synchronous(&FlowStore::open(&path).unwrap()), 1, "NORMAL");
    assert_eq!(synchronous(&FlowStore::temporary().unwrap()), 0, "OFF");
}
