//! Reading flows: the list with filters and pages, counts, one flow, bodies, events.

use std::io::Write;

use http::{Method, StatusCode};
use periscope_model::{Body, LogEntry, LogLevel};
use serde_json::Value;

use crate::support::{intercepted_flow, sample_flow, TestApi};

fn ids(reply: &Value) -> Vec<String> {
    reply
        .as_array()
        .unwrap()
        .iter()
        .map(|flow| flow["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_list_shows_stored_flows_then_flows_in_flight_in_mitmwebs_shape() {
    let api = TestApi::start().await;
    let stored = [
        sample_flow("a.example", "/one", 200, 1),
        sample_flow("b.example", "/two?x=1", 404, 2),
    ];
    api.record(&stored);
    let paused = intercepted_flow("c.example", 3);
    api.control.in_flight.lock().unwrap().push(paused.clone());

    let reply = api.get("/flows").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let flows = reply.json();
    assert_eq!(
        ids(&flows),
        vec![
            stored[0].id.to_string(),
            stored[1].id.to_string(),
            paused.id.to_string()
        ]
    );

    let first = &flows[0];
    assert_eq!(first["type"], "http");
    assert_eq!(first["intercepted"], false);
    assert_eq!(first["marked"], false);
    assert_eq!(first["comment"], "");
    assert_eq!(first["is_replay"], Value::Null);
    assert_eq!(
        first["timestamp_created"], 1_700_000_001.0,
        "the first request byte"
    );
    let request = &first["request"];
    assert_eq!(request["method"], "GET");
    assert_eq!(request["scheme"], "https");
    assert_eq!(request["host"], "a.example");
    assert_eq!(request["port"], 443);
    assert_eq!(request["path"], "/one");
    assert_eq!(request["http_version"], "HTTP/1.1");
    assert_eq!(
        request["headers"][0],
        serde_json::json!(["Host", "a.example"])
    );
    assert_eq!(request["contentLength"], 0);
    assert!(request["timestamp_start"].as_f64().unwrap() > 1.7e9);
    let response = &first["response"];
    assert_eq!(response["status_code"], 200);
    assert_eq!(response["reason"], "OK");
    assert_eq!(response["contentLength"], 25);
    assert_eq!(
        response["headers"][0],
        serde_json::json!(["Content-Type", "text/html; charset=utf-8"])
    );
    assert_eq!(first["server_conn"]["tls_version"], "TLSv1.2");
    assert_eq!(
        first["server_conn"]["address"],
        serde_json::json!(["a.example", 443])
    );
    assert_eq!(
        first["client_conn"]["peername"],
        serde_json::json!(["127.0.0.1", 50000])
    );

    let in_flight = &flows[2];
    assert_eq!(in_flight["intercepted"], true);
    assert_eq!(in_flight["intercept"]["at"], "request");
    assert!(in_flight.get("response").is_none(), "{in_flight}");
    let tls: Vec<&Value> = in_flight["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["entry"] == "tls")
        .collect();
    assert_eq!(tls.len(), 1, "{in_flight}");
    assert_eq!(tls[0]["type"], "hello_request");
    assert_eq!(tls[0]["leg"], "server");
    assert!(tls[0]["text"].as_str().unwrap().contains("HelloRequest"));
}

#[tokio::test]
async fn filters_are_evaluated_on_the_server_and_pages_run_across_store_and_flights() {
    let api = TestApi::start().await;
    let stored: Vec<_> = (0..5)
        .map(|n| {
            let host = if n % 2 == 0 {
                "even.example"
            } else {
                "odd.example"
            };
            sample_flow(host, &format!("/{n}"), 200 + n as u16, n)
        })
        .collect();
    api.record(&stored);
    let paused = intercepted_flow("even.example", 10);
    api.control.in_flight.lock().unwrap().push(paused.clone());
    let id = |n: usize| stored[n].id.to_string();

    let even = api.get("/flows?filter=~d%20even").await.json();
    assert_eq!(ids(&even), vec![id(0), id(2), id(4), paused.id.to_string()]);
    let status = api.get("/flows?filter=~c%20203").await.json();
    assert_eq!(ids(&status), vec![id(3)]);

    let first_page = api.get("/flows?limit=2").await.json();
    assert_eq!(ids(&first_page), vec![id(0), id(1)]);
    let across = api.get("/flows?offset=4&limit=2").await.json();
    assert_eq!(ids(&across), vec![id(4), paused.id.to_string()]);
    let past_store = api.get("/flows?offset=5&limit=10").await.json();
    assert_eq!(ids(&past_store), vec![paused.id.to_string()]);
    let filtered_page = api
        .get("/flows?filter=~d%20even&offset=1&limit=2")
        .await
        .json();
    assert_eq!(ids(&filtered_page), vec![id(2), id(4)]);
    let beyond = api.get("/flows?offset=100").await.json();
    assert_eq!(ids(&beyond), Vec::<String>::new());

    let count = api.get("/flows/count?filter=~d%20even").await.json();
    assert_eq!(
        count,
        serde_json::json!({"count": 4, "stored": 3, "in_flight": 1})
    );
    let all = api.get("/flows/count").await.json();
    assert_eq!(all["count"], 6);

    let bad = api.get("/flows?filter=~zz").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.error().contains("unknown filter ~zz"),
        "{}",
        bad.error()
    );
    let bad_count = api.get("/flows/count?filter=(~q").await;
    assert_eq!(bad_count.status, StatusCode::BAD_REQUEST);
    let bad_number = api.get("/flows?limit=many").await;
    assert_eq!(bad_number.status, StatusCode::BAD_REQUEST);
    assert!(bad_number
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
}

#[tokio::test]
async fn one_flow_comes_from_the_flights_or_the_store_and_unknown_ids_are_404() {
    let api = TestApi::start().await;
    let mut stored = sample_flow("a.example", "/", 200, 1);
    stored.annotations.comment = "look here".into();
    stored.marked = true;
    api.record(std::slice::from_ref(&stored));
    let paused = intercepted_flow("b.example", 2);
    api.control.in_flight.lock().unwrap().push(paused.clone());

    let reply = api.get(&format!("/flows/{}", stored.id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let flow = reply.json();
    assert_eq!(flow["comment"], "look here");
    assert_eq!(flow["marked"], true);
    let reply = api.get(&format!("/flows/{}", paused.id)).await.json();
    assert_eq!(reply["intercepted"], true);

    let unknown = api
        .get(&format!("/flows/{}", periscope_model::FlowId::new()))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(
        unknown.error().starts_with("no flow"),
        "{}",
        unknown.error()
    );
    let malformed = api.get("/flows/not-an-id").await;
    assert_eq!(malformed.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn content_data_is_the_recorded_bytes_with_their_type_and_decodes_on_request() {
    let api = TestApi::start().await;
    let mut flow = sample_flow("a.example", "/", 200, 1);
    let mut gzip = flate2_free_gzip(b"the decoded body");
    let response = flow.response.as_mut().unwrap();
    response.headers.push("Content-Encoding", "gzip");
    response.body = Body::complete(std::mem::take(&mut gzip));
    flow.request.body = Body {
        content: bytes::Bytes::from_static(b"a=1"),
        size: 10,
        truncated: true,
    };
    flow.request
        .headers
        .push("Content-Type", "application/x-www-form-urlencoded");
    let bare = sample_flow("b.example", "/", 0, 2);
    api.record(&[flow.clone(), bare.clone()]);

    let raw = api
        .get(&format!("/flows/{}/response/content.data", flow.id))
        .await;
    assert_eq!(raw.status, StatusCode::OK);
    assert_eq!(raw.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        raw.header("content-encoding"),
        None,
        "served as recorded, not for the client to decode"
    );
    assert_eq!(raw.body, flow.response.as_ref().unwrap().body.content);
    // An HTML body must not run as a page of the API's origin.
    assert!(raw
        .header("content-security-policy")
        .unwrap()
        .starts_with("sandbox"));
    assert_eq!(raw.header("x-content-type-options"), Some("nosniff"));

    let decoded = api
        .get(&format!(
            "/flows/{}/response/content.data?decode=true",
            flow.id
        ))
        .await;
    assert_eq!(decoded.status, StatusCode::OK);
    assert_eq!(&decoded.body[..], b"the decoded body");

    let request = api
        .get(&format!("/flows/{}/request/content.data", flow.id))
        .await;
    assert_eq!(&request.body[..], b"a=1");
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(request.header("x-periscope-truncated"), Some("true"));
    assert_eq!(request.header("x-periscope-body-size"), Some("10"));

    let none = api
        .get(&format!("/flows/{}/response/content.data", bare.id))
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert!(none.error().contains("no response"), "{}", none.error());
    let empty = api
        .get(&format!("/flows/{}/request/content.data", bare.id))
        .await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.is_empty());
    assert_eq!(
        empty.header("content-type"),
        Some("application/octet-stream")
    );

    let nothing_to_undo = api
        .get(&format!(
            "/flows/{}/request/content.data?decode=true",
            bare.id
        ))
        .await;
    assert_eq!(nothing_to_undo.status, StatusCode::OK);

    let mut corrupt = sample_flow("c.example", "/", 200, 3);
    let response = corrupt.response.as_mut().unwrap();
    response.headers.push("Content-Encoding", "gzip");
    api.record(std::slice::from_ref(&corrupt));
    let refused = api
        .get(&format!(
            "/flows/{}/response/content.data?decode=true",
            corrupt.id
        ))
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.error().contains("gzip"), "{}", refused.error());
}

/// A gzip member with stored (uncompressed) deflate blocks: valid gzip without a
/// compression library in the tests.
fn flate2_free_gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    // One final stored block: BFINAL=1, BTYPE=00, then LEN and NLEN.
    out.push(1);
    let len = data.len() as u16;
    out.write_all(&len.to_le_bytes()).unwrap();
    out.write_all(&(!len).to_le_bytes()).unwrap();
    out.write_all(data).unwrap();
    out.write_all(&crc32(data).to_le_bytes()).unwrap();
    out.write_all(&(data.len() as u32).to_le_bytes()).unwrap();
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test]
async fn the_event_log_reads_like_mitmwebs() {
    let api = TestApi::start().await;
    api.store
        .append_log(&LogEntry::new(LogLevel::Warn, "renegotiation refused"))
        .unwrap();
    let reply = api.get("/events").await;
    assert_eq!(reply.status, StatusCode::OK);
    let events = reply.json();
    assert_eq!(events[0]["message"], "renegotiation refused");
    assert_eq!(events[0]["level"], "warn");
    assert!(events[0]["id"].is_u64());
}

#[tokio::test]
async fn unknown_endpoints_and_methods_answer_json() {
    let api = TestApi::start().await;
    let missing = api.get("/nothing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error(), "no such endpoint");
    let wrong = api
        .send(api.request(Method::POST, "/flows/count"), "")
        .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(!wrong.error().is_empty());
}

#[tokio::test]
async fn the_server_sorts_pages_and_says_which_flows_the_highlight_matches() {
    let api = TestApi::start().await;
    let stored = [
        sample_flow("a.example", "/one", 404, 1),
        sample_flow("b.example", "/two", 200, 2),
        sample_flow("c.example", "/three", 500, 3),
    ];
    api.record(&stored);
    let paused = intercepted_flow("d.example", 4);
    api.control.in_flight.lock().unwrap().push(paused.clone());

    let by_status = api.get("/flows?sort=status&order=desc").await.json();
    assert_eq!(
        ids(&by_status),
        vec![
            stored[2].id.to_string(),
            stored[0].id.to_string(),
            stored[1].id.to_string(),
            // Flows in flight follow the stored ones whatever the sort.
            paused.id.to_string(),
        ]
    );
    let page = api
        .get("/flows?sort=status&order=asc&offset=1&limit=1")
        .await
        .json();
    assert_eq!(ids(&page), vec![stored[0].id.to_string()]);
    let filtered = api
        .get("/flows?sort=url&order=desc&filter=~d%20%5B%61%62%5D.example")
        .await
        .json();
    assert_eq!(
        ids(&filtered),
        vec![stored[1].id.to_string(), stored[0].id.to_string()]
    );

    let highlighted = api.get("/flows?highlight=~c%20500").await.json();
    let marks: Vec<bool> = highlighted
        .as_array()
        .unwrap()
        .iter()
        .map(|flow| flow["highlighted"].as_bool().unwrap())
        .collect();
    assert_eq!(marks, vec![false, false, true, false]);
    let plain = api.get("/flows").await.json();
    assert!(
        plain[0].get("highlighted").is_none(),
        "no highlight asked for, none given"
    );

    for bad in [
        "/flows?sort=colour",
        "/flows?order=sideways",
        "/flows?highlight=~zz",
    ] {
        let reply = api.get(bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(!reply.error().is_empty());
    }
}
