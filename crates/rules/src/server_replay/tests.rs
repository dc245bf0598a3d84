//! The cases of mitmproxy's `test_serverplayback.py`, written for this code.

use super::*;
use periscope_flow::{Body, ConnectionInfo, FlowId, Headers, Timeline};

fn request(method: &str, url_path: &str, body: &[u8], headers: &[(&str, &str)]) -> Request {
    let mut h = Headers::default();
    for (n, v) in headers {
        h.push(*n, v.as_bytes().to_vec());
    }
    Request {
        method: method.into(),
        scheme: "http".into(),
        host: "address".into(),
        port: 22,
        path: url_path.into(),
        http_version: "HTTP/1.1".into(),
        stream_id: None,
        headers: h,
        body: Body::complete(Bytes::copy_from_slice(body)),
        trailers: None,
    }
}

fn flow(request: Request, status: u16, body: &str) -> Flow {
    let mut response = empty_response(status);
    response.body = Body::complete(Bytes::copy_from_slice(body.as_bytes()));
    let mut timeline = Timeline::new();
    timeline.mark(Milestone::RequestStarted, Timestamp::now());
    Flow {
        id: FlowId::new(),
        client: ConnectionInfo {
            id: 1,
            peer: None,
            local: None,
            target: None,
            tls: None,
        },
        server: None,
        request,
        response: Some(response),
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

fn replay(matching: MatchOptions, reuse: bool, flows: Vec<Flow>) -> ServerReplay {
    let mut replay = ServerReplay {
        files: Vec::new(),
        matching,
        extra: Extra::Forward,
        reuse,
        refresh: false,
        flows: Mutex::new(HashMap::new()),
        skipped: Vec::new(),
    };
    replay.add(flows);
    replay
}

fn answered_with(replay: &ServerReplay, request: &Request) -> Option<String> {
    match replay.answer(request) {
        Outcome::Replayed { response, .. } => {
            Some(String::from_utf8_lossy(&response.body.content).into_owned())
        }
        Outcome::NoMatch(_) => None,
    }
}

fn get(path: &str) -> Request {
    request("GET", path, b"", &[])
}

#[test]
fn answers_in_recording_order_and_each_answer_once() {
    let r = replay(
        MatchOptions::default(),
        false,
        vec![
            flow(get("/a"), 200, "first"),
            flow(get("/a"), 200, "second"),
            flow(get("/b"), 200, "b"),
        ],
    );
    assert_eq!(r.remaining(), 3);
    assert_eq!(answered_with(&r, &get("/a")).as_deref(), Some("first"));
    assert_eq!(answered_with(&r, &get("/a")).as_deref(), Some("second"));
    assert_eq!(answered_with(&r, &get("/a")), None);
    assert_eq!(answered_with(&r, &get("/b")).as_deref(), Some("b"));
    assert_eq!(r.remaining(), 0);
}

#[test]
fn reuse_keeps_answering_with_the_first() {
    let r = replay(
        MatchOptions::default(),
        true,
        vec![
            flow(get("/a"), 200, "first"),
            flow(get("/a"), 200, "second"),
        ],
    );
    for _ in 0..3 {
        assert_eq!(answered_with(&r, &get("/a")).as_deref(), Some("first"));
    }
}

#[test]
fn the_path_method_and_scheme_must_match() {
    let r = replay(
        MatchOptions::default(),
        true,
        vec![flow(get("/a"), 200, "a")],
    );
    assert_eq!(answered_with(&r, &get("/b")), None);
    assert_eq!(answered_with(&r, &request("POST", "/a", b"", &[])), None);
    let mut https = get("/a");
    https.scheme = "https".into();
    assert_eq!(answered_with(&r, &https), None);
}

#[test]
fn host_and_port_can_be_ignored() {
    let recorded = vec![flow(get("/a"), 200, "a")];
    let mut other_host = get("/a");
    other_host.host = "other".into();
    let mut other_port = get("/a");
    other_port.port = 8080;
    let strict = replay(MatchOptions::default(), true, recorded.clone());
    assert_eq!(answered_with(&strict, &other_host), None);
    assert_eq!(answered_with(&strict, &other_port), None);
    let loose = replay(
        MatchOptions {
            ignore_host: true,
            ignore_port: true,
            ..Default::default()
        },
        true,
        recorded,
    );
    assert!(answered_with(&loose, &other_host).is_some());
    assert!(answered_with(&loose, &other_port).is_some());
}

#[test]
fn content_matches_unless_ignored() {
    let recorded = vec![flow(request("POST", "/a", b"foo", &[]), 200, "a")];
    let strict = replay(MatchOptions::default(), true, recorded.clone());
    assert!(answered_with(&strict, &request("POST", "/a", b"foo", &[])).is_some());
    assert_eq!(
        answered_with(&strict, &request("POST", "/a", b"bar", &[])),
        None
    );
    let loose = replay(
        MatchOptions {
            ignore_content: true,
            ..Default::default()
        },
        true,
        recorded,
    );
    assert!(answered_with(&loose, &request("POST", "/a", b"bar", &[])).is_some());
    assert!(answered_with(&loose, &request("POST", "/a", b"", &[])).is_some());
}

#[test]
fn ignoring_content_wins_over_ignoring_payload_params() {
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = replay(
        MatchOptions {
            ignore_content: true,
            ignore_payload_params: vec!["param1".into(), "param2".into()],
            ..Default::default()
        },
        true,
        vec![flow(request("POST", "/a", b"paramx=x", &form), 200, "a")],
    );
    assert!(answered_with(&r, &request("POST", "/a", b"paramx=y", &form)).is_some());
}

#[test]
fn payload_params_are_ignored_in_urlencoded_and_multipart_forms() {
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let options = MatchOptions {
        ignore_payload_params: vec!["param1".into(), "param2".into()],
        ..Default::default()
    };
    let r = replay(
        options.clone(),
        true,
        vec![flow(
            request("POST", "/a", b"paramx=x&param1=1", &form),
            200,
            "a",
        )],
    );
    assert!(answered_with(&r, &request("POST", "/a", b"paramx=x&param1=2", &form)).is_some());
    assert!(answered_with(
        &r,
        &request("POST", "/a", b"paramx=x&param1=2&param2=3", &form)
    )
    .is_some());
    assert_eq!(
        answered_with(&r, &request("POST", "/a", b"paramx=y&param1=1", &form)),
        None
    );

    let multipart = [(
        "content-type",
        "multipart/form-data; boundary=somefancyboundary",
    )];
    let body = |p1: &str| {
        format!(
            "--somefancyboundary\r\nContent-Disposition: form-data; name=\"param1\"\r\n\r\n{p1}\r\n\
             --somefancyboundary\r\nContent-Disposition: form-data; name=\"paramx\"\r\n\r\nx\r\n\
             --somefancyboundary--\r\n"
        )
    };
    let r = replay(
        options,
        true,
        vec![flow(
            request("POST", "/a", body("1").as_bytes(), &multipart),
            200,
            "m",
        )],
    );
    assert!(answered_with(&r, &request("POST", "/a", body("2").as_bytes(), &multipart)).is_some());
}

#[test]
fn payload_params_of_another_content_type_leave_the_body_in_the_match() {
    let json = [("content-type", "application/json")];
    let r = replay(
        MatchOptions {
            ignore_payload_params: vec!["param1".into()],
            ..Default::default()
        },
        true,
        vec![flow(request("POST", "/a", b"param1=1", &json), 200, "a")],
    );
    assert_eq!(
        answered_with(&r, &request("POST", "/a", b"param1=2", &json)),
        None
    );
    assert!(answered_with(&r, &request("POST", "/a", b"param1=1", &json)).is_some());
}

#[test]
fn query_params_match_in_order_unless_ignored() {
    let r = replay(
        MatchOptions::default(),
        true,
        vec![flow(get("/a?x=1&y=2"), 200, "a")],
    );
    assert!(answered_with(&r, &get("/a?x=1&y=2")).is_some());
    assert_eq!(answered_with(&r, &get("/a?x=1&y=3")), None);
    let r = replay(
        MatchOptions {
            ignore_params: vec!["param1".into(), "param2".into()],
            ..Default::default()
        },
        true,
        vec![flow(get("/a?param1=1&paramx=x"), 200, "a")],
    );
    assert!(answered_with(&r, &get("/a?param1=2&paramx=x")).is_some());
    assert!(answered_with(&r, &get("/a?paramx=x&param2=7")).is_some());
    assert_eq!(answered_with(&r, &get("/a?param1=1&paramx=y")), None);
}

#[test]
fn chosen_headers_must_match() {
    let r = replay(
        MatchOptions {
            use_headers: vec!["foo".into()],
            ..Default::default()
        },
        true,
        vec![flow(request("GET", "/a", b"", &[("foo", "bar")]), 200, "a")],
    );
    assert!(answered_with(&r, &request("GET", "/a", b"", &[("Foo", "bar")])).is_some());
    assert_eq!(
        answered_with(&r, &request("GET", "/a", b"", &[("foo", "baz")])),
        None
    );
    assert_eq!(answered_with(&r, &get("/a")), None);
    // Other headers do not matter.
    assert!(answered_with(
        &r,
        &request("GET", "/a", b"", &[("foo", "bar"), ("x", "y")])
    )
    .is_some());
}

#[test]
fn partly_recorded_flows_and_flows_without_a_response_are_left_out() {
    let mut partial = flow(get("/big"), 200, "part");
    partial.response.as_mut().unwrap().body.truncated = true;
    let mut unanswered = flow(get("/none"), 200, "");
    unanswered.response = None;
    let r = replay(MatchOptions::default(), true, vec![partial, unanswered]);
    assert_eq!(r.remaining(), 0);
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
}

#[test]
fn refresh_moves_dates_and_cookie_expiry_forward() {
    let mut response = empty_response(200);
    response
        .headers
        .push("Date", b"Sat, 01 Jan 2000 00:00:00 GMT".to_vec());
    response
        .headers
        .push("Expires", b"Sat, 01 Jan 2000 01:00:00 GMT".to_vec());
    response.headers.push(
        "Set-Cookie",
        b"sid=1; Expires=Sat, 01 Jan 2000 02:00:00 GMT; Path=/".to_vec(),
    );
    response
        .headers
        .push("X-Other", b"Sat, 01 Jan 2000 00:00:00 GMT".to_vec());
    refresh(&mut response, 86_400);
    let get = |name: &str| response.headers.get_str(name).unwrap().into_owned();
    assert_eq!(get("date"), "Sun, 02 Jan 2000 00:00:00 GMT");
    assert_eq!(get("expires"), "Sun, 02 Jan 2000 01:00:00 GMT");
    assert!(
        get("set-cookie").contains("Sun, 02 Jan 2000 02:00:00 GMT"),
        "{}",
        get("set-cookie")
    );
    assert_eq!(get("x-other"), "Sat, 01 Jan 2000 00:00:00 GMT");
}

#[test]
fn extra_parses_mitmproxys_choices() {
    assert_eq!(Extra::parse("forward").unwrap(), Extra::Forward);
    assert_eq!(Extra::parse("kill").unwrap(), Extra::Kill);
    assert_eq!(Extra::parse("404").unwrap(), Extra::Status(404));
    assert!(Extra::parse("418").is_err());
}
