//! Intercept, edit, resume, kill, replay and export, through the control API of the
//! real binary, with a recording origin (`fault_origin.py` `/record...` prints what it
//! received), curl and Python clients:
//!
//! | case | how |
//! |---|---|
//! | a request paused until resumed, edited on the way (header, body), then its response edited | `--intercept '~u /hold'`, `PUT /flows/{id}`, `POST .../resume` |
//! | killed at the request: the server sees nothing; killed mid-download: both legs close at once | `POST .../kill` |
//! | replay: a second request, a linked flow; `--client-replay` of a saved session, in order | `POST .../replay`, `dump --client-replay` |
//! | the exported curl line sends the same request again | `GET .../export/curl`, `sh -c` |
//! | WebSocket messages held: one edited, one dropped, checked at the echo server's answers | `ws_chat.py`, `.../websocket/decision` |
//! | `--intercept-tls`: the certificate presented in a renegotiation is the user's choice | Apache `/vedauth/`, `.../client-certificate` |
//! | the API refuses a missing token, a cross-origin write, and requests sent through the proxy | curl |

mod support;

use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const WAIT: Duration = Duration::from_secs(20);

/// What these tests ask of the control API besides the support's requests.
impl ControlApi {
    /// `METHOD PATH` on a socket of its own, without a body; the whole answer. For
    /// what must follow a proxied response at once: curl takes longer to start than
    /// the session store's writer to commit.
    fn exchange_at_once(&self, method: &str, path: &str) -> String {
        let port: u16 = self.base.rsplit(':').next().unwrap().parse().unwrap();
        http_exchange(
            port,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Authorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.token
            ),
        )
    }

    /// `GET /flows/count` at once (see `exchange_at_once`): the answer as JSON.
    fn count_at_once(&self) -> Value {
        let counted = self.exchange_at_once("GET", "/flows/count");
        let body = counted.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {counted}"))
    }

    /// The first flow matching `filter` for which `ready` holds, polling the API.
    #[track_caller]
    fn wait_flow(&self, filter: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        let path = format!("/flows?filter={}", encode(filter));
        loop {
            let flows = self.get(&path);
            if let Some(flow) = flows.as_array().unwrap().iter().find(|f| ready(f)) {
                return flow.clone();
            }
            assert!(Instant::now() < deadline, "no flow for {filter}: {flows}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn origin() -> PythonPeer {
    PythonPeer::start("fault_origin.py", &[])
}

fn proxy(extra: &[&str]) -> Periscope {
    let ca = test_pki().ca_cert.to_string_lossy().into_owned();
    PeriscopeBuilder::new()
        .args([
            "--upstream-trusted-ca",
            ca.as_str(),
            "--web-port",
            "0",
            "--api",
        ])
        .args(extra)
        .start()
}

/// Established TCP connections to the proxy's port or to the origin's, by `ss`.
fn connections(proxy_port: u16, origin_port: u16) -> usize {
    let output = Command::new(require_tool("ss"))
        .args(["-tnH", "state", "established"])
        .arg(format!(
            "( dport = :{proxy_port} or dport = :{origin_port} )"
        ))
        .output()
        .expect("ss");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Kills flow `id` through the API; within a second the proxy must have closed its
/// connections to both peers (the client may still be reading what its kernel had
/// buffered).
fn kill_and_see_both_connections_close(
    api: &ControlApi,
    id: &str,
    proxy_port: u16,
    origin_port: u16,
) {
    let killed = Instant::now();
    api.send("POST", &format!("/flows/{id}/kill"), None)
        .assert_status(200);
    assert!(
        wait_until(Duration::from_secs(1), || connections(
            proxy_port,
            origin_port
        ) == 0),
        "{} connections left {:?} after the kill",
        connections(proxy_port, origin_port),
        killed.elapsed()
    );
}

fn spawn_curl(curl: Curl, url: String) -> JoinHandle<CurlResult> {
    std::thread::spawn(move || curl.run(&url))
}

#[test]
fn an_intercepted_request_waits_for_resume_and_goes_on_edited_then_its_response_is_edited() {
    let origin = origin();
    let proxy = proxy(&["--intercept", "~u /record/hold"]);
    let api = ControlApi::of(&proxy);
    let url = format!("http://127.0.0.1:{}/record/hold", origin.port);
    let client = spawn_curl(Curl::through(&proxy).data("original body"), url);
    let paused = api.wait_flow("~u /record/hold", |f| f["intercepted"] == true);
    assert_eq!(paused["intercept"]["at"], "request", "{paused}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !client.is_finished(),
        "the client waits while the flow is paused"
    );
    assert!(
        recorded(&origin).is_empty(),
        "nothing reached the server yet"
    );

    let id = paused["id"].as_str().unwrap().to_owned();
    let mut headers: Vec<Value> = paused["request"]["headers"].as_array().unwrap().clone();
    headers.push(serde_json::json!(["x-edited", "yes"]));
    let edit = serde_json::json!({"request": {"headers": headers, "content": "edited body"}});
    api.send("PUT", &format!("/flows/{id}"), Some(&edit.to_string()))
        .assert_status(200);
    api.send("POST", &format!("/flows/{id}/resume"), None)
        .assert_status(200);

    // Paused again at the response.
    let at_response = api.wait_flow("~u /record/hold", |f| {
        f["intercepted"] == true && f["intercept"]["at"] == "response"
    });
    let seen = recorded_at_least(&origin, 1);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        recorded_header(&seen[0], "x-edited"),
        Some("yes"),
        "{seen:?}"
    );
    assert_eq!(seen[0]["body"], "edited body");
    assert_eq!(at_response["response"]["status_code"], 200);
    let edit = r#"{"response": {"status_code": 203, "content": "edited response"}}"#;
    api.send("PUT", &format!("/flows/{id}"), Some(edit))
        .assert_status(200);
    api.send("POST", &format!("/flows/{id}/resume"), None)
        .assert_status(200);
    let answer = client.join().unwrap();
    answer.assert_status(203);
    assert_eq!(answer.body_text(), "edited response");
}

/// One HTTP/1.1 exchange on a fresh connection, read to the end: fast enough to
/// ask the API within a millisecond of a response (curl's start-up is slower than
/// the store's commit, and would hide what this checks).
fn http_exchange(port: u16, head: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(head.as_bytes()).expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    String::from_utf8_lossy(&answer).into_owned()
}

/// A GET of the origin's `/record/NAME` through the proxy, on a connection of its own
/// that closes with the response.
fn record_through(proxy: &Periscope, origin_port: u16, name: &str) {
    let answer = http_exchange(
        proxy.port(),
        &format!(
            "GET http://127.0.0.1:{origin_port}/record/{name} HTTP/1.1\r\n\
             Host: 127.0.0.1:{origin_port}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_finished_flow_is_listed_at_every_moment_on_its_way_to_the_session_store() {
    // A flow leaves the flows in flight when it finishes and reaches the store when
    // the store's writer commits its batch; a front end that asks in between (the web
    // UI reloads its list right after the last event) used to find it nowhere, and
    // kept showing an empty list. Each count is read right after a response.
    let origin = origin();
    let proxy = proxy(&[]);
    let api = ControlApi::of(&proxy);
    let mut short = Vec::new();
    for number in 1..=40 {
        record_through(&proxy, origin.port, &format!("listed-{number}"));
        let count = api.count_at_once();
        if count["count"].as_u64() != Some(number) {
            short.push(format!("after {number} responses: {count}"));
        }
    }
    assert!(short.is_empty(), "flows missing from the count: {short:?}");
    let listed = api.get("/flows?limit=100");
    assert_eq!(listed.as_array().unwrap().len(), 40, "{listed}");
}

#[test]
fn clear_removes_the_flows_not_yet_in_the_session_store_too() {
    // A flow that just ended waits for the store's writer (its gather and commit);
    // `POST /clear` emptied the store under it, and the writer saved it afterwards:
    // cleared flows came back a few milliseconds later.
    let origin = origin();
    let proxy = proxy(&[]);
    let api = ControlApi::of(&proxy);
    let mut came_back = Vec::new();
    for round in 1..=5 {
        record_through(&proxy, origin.port, &format!("cleared-{round}"));
        let cleared = api.exchange_at_once("POST", "/clear");
        assert!(cleared.starts_with("HTTP/1.1 200"), "{cleared}");
        // Longer than the writer's gather and commit.
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            let count = api.count_at_once()["count"].as_u64();
            if count != Some(0) {
                came_back.push(format!("round {round}: {count:?}"));
                break;
            }
        }
    }
    assert!(
        came_back.is_empty(),
        "cleared flows came back: {came_back:?}"
    );
    let listed = api.get("/flows?limit=100");
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
}

/// `tests/peers/ws_chat.py` through the proxy to the echo server's `/chat`: sends each
/// of `send`, waiting up to `wait` seconds for answers after each; its stdout lines.
fn ws_chat(proxy: &Periscope, echo_port: u16, wait: &str, send: &[&str]) -> (Child, OutputLines) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/ws_chat.py");
    let mut chat = Command::new(python())
        .arg("-u")
        .arg(script)
        .arg("--proxy")
        .arg(proxy.addr())
        .arg("--url")
        .arg(format!("ws://127.0.0.1:{echo_port}/chat"))
        .args(["--wait", wait, "--send"])
        .args(send)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = OutputLines::spawn(chat.stdout.take().unwrap(), "ws_chat", true);
    (chat, lines)
}

#[test]
fn pages_of_the_flow_list_show_an_open_websocket_once_and_skip_nothing() {
    // An open WebSocket flow is stored (its handshake is done) and still in flight
    // (killable): it used to be dropped from the store's page and not added back, so
    // the first page came short and the WebSocket was on no page at all.
    let echo = python_websocket_echo_server();
    let origin = origin();
    let proxy = proxy(&[]);
    let api = ControlApi::of(&proxy);
    let (mut chat, lines) = ws_chat(&proxy, echo.port, "8", &["hello"]);
    lines
        .wait_for(&"received: hello", WAIT)
        .expect("the echo answered");
    let websocket = api.wait_flow("~websocket", |f| f["response"]["status_code"] == 101);
    for n in 1..=5 {
        Curl::through(&proxy)
            .run(&format!("http://127.0.0.1:{}/record/p{n}", origin.port))
            .assert_status(200);
    }
    api.wait_flow("~u /record/p5", |f| f["response"]["status_code"] == 200);
    assert_eq!(api.get("/flows/count")["count"], 6);
    let mut listed = Vec::new();
    for offset in [0, 2, 4] {
        let page = api.get(&format!("/flows?offset={offset}&limit=2"));
        let page = page.as_array().unwrap();
        assert_eq!(page.len(), 2, "page at {offset}: {page:?}");
        listed.extend(page.iter().map(|f| f["id"].as_str().unwrap().to_owned()));
    }
    let distinct: std::collections::HashSet<&String> = listed.iter().collect();
    assert_eq!(distinct.len(), 6, "{listed:?}");
    assert!(
        listed.contains(&websocket["id"].as_str().unwrap().to_owned()),
        "the open WebSocket is listed: {listed:?}"
    );
    let _ = chat.kill();
    let _ = chat.wait();
}

#[test]
fn a_flow_killed_at_the_request_never_reaches_the_server_and_the_client_is_told() {
    let origin = origin();
    let proxy = proxy(&["--intercept", "~u /record/never"]);
    let api = ControlApi::of(&proxy);
    let url = format!("http://127.0.0.1:{}/record/never", origin.port);
    let client = spawn_curl(Curl::through(&proxy), url);
    let paused = api.wait_flow("~u /record/never", |f| f["intercepted"] == true);
    let id = paused["id"].as_str().unwrap();
    api.send("POST", &format!("/flows/{id}/kill"), None)
        .assert_status(200);
    let answer = client.join().unwrap();
    answer.assert_status(502);
    assert!(
        answer.body_text().contains("killed in Periscope"),
        "{answer:?}"
    );
    let flow = api.wait_flow("~u /record/never", |f| !f["error"].is_null());
    assert_eq!(flow["error"]["kind"], "killed", "{flow}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(recorded(&origin).is_empty(), "the server never saw it");
}

/// HTTP/2 has no 502 for one stream that must not go on: the stream is reset.
#[test]
fn an_http2_flow_killed_at_the_request_is_reset_and_never_reaches_the_server() {
    let h2 = h2_origin(&[]);
    let proxy = proxy(&["--intercept", "~u /h2-never"]);
    let api = ControlApi::of(&proxy);
    let curl = Curl::through(&proxy).cacert(proxy.ca_cert_path()).http2();
    let client = spawn_curl(curl, format!("https://localhost:{}/h2-never", h2.port));
    let paused = api.wait_flow("~u /h2-never", |f| f["intercepted"] == true);
    let id = paused["id"].as_str().unwrap();
    api.send("POST", &format!("/flows/{id}/kill"), None)
        .assert_status(200);
    let answer = client.join().unwrap();
    // curl: 92 is "stream error in the HTTP/2 framing layer" (the RST_STREAM).
    assert_eq!(answer.exit_code, 92, "{answer:?}");
    assert_eq!(answer.status, 0, "no response, only the reset: {answer:?}");
    let flow = api.wait_flow("~u /h2-never", |f| !f["error"].is_null());
    assert_eq!(flow["error"]["kind"], "killed", "{flow}");
    assert_eq!(flow["request"]["http_version"], "HTTP/2.0", "{flow}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !h2.stdout.text().contains("/h2-never"),
        "the server never saw it:\n{}",
        h2.stdout.text()
    );
}

#[test]
fn a_flow_deleted_while_paused_is_killed_and_stays_out_of_the_session() {
    let origin = origin();
    let proxy = proxy(&["--intercept", "~u /record/gone"]);
    let api = ControlApi::of(&proxy);
    let url = format!("http://127.0.0.1:{}/record/gone", origin.port);
    let client = spawn_curl(Curl::through(&proxy), url);
    let paused = api.wait_flow("~u /record/gone", |f| f["intercepted"] == true);
    let id = paused["id"].as_str().unwrap();
    api.send("DELETE", &format!("/flows/{id}"), None)
        .assert_status(200);
    let answer = client.join().unwrap();
    answer.assert_status(502);
    // A later flow is recorded: the deleted one, ended before it, would be too.
    Curl::through(&proxy)
        .run(&format!("http://127.0.0.1:{}/record/after", origin.port))
        .assert_status(200);
    api.wait_flow("~u /record/after", |f| !f["response"].is_null());
    std::thread::sleep(Duration::from_millis(300));
    api.send("GET", &format!("/flows/{id}"), None)
        .assert_status(404);
    let listed = api.get(&format!("/flows?filter={}", encode("~u /record/gone")));
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
    assert!(recorded(&origin)
        .iter()
        .all(|r| !r["target"].as_str().unwrap_or("").ends_with("/record/gone")));
}

#[test]
fn killing_a_large_download_closes_both_connections_within_a_second() {
    let origin = origin();
    let proxy = proxy(&[]);
    let api = ControlApi::of(&proxy);
    let url = format!("http://127.0.0.1:{}/big?size=200000000", origin.port);
    let client = spawn_curl(Curl::through(&proxy).arg("--limit-rate").arg("2M"), url);
    let flow = api.wait_flow("~u /big", |f| f["response"]["status_code"] == 200);
    let id = flow["id"].as_str().unwrap();
    kill_and_see_both_connections_close(&api, id, proxy.port(), origin.port);
    origin
        .stdout
        .wait_for(&"send failed after", Duration::from_secs(1))
        .expect("the server's connection closed within a second");
    let answer = client.join().unwrap();
    assert!(
        answer.exit_code != 0,
        "the download did not complete: {answer:?}"
    );
    let ended = api.wait_flow("~u /big", |f| !f["error"].is_null());
    assert_eq!(ended["error"]["kind"], "killed", "{ended}");
}

#[test]
fn killing_a_large_upload_closes_both_connections_within_a_second() {
    let origin = origin();
    let proxy = proxy(&[]);
    let api = ControlApi::of(&proxy);
    let dir = tempfile::tempdir().unwrap();
    let upload = dir.path().join("upload.bin");
    std::fs::File::create(&upload)
        .unwrap()
        .set_len(200_000_000)
        .unwrap();
    let url = format!("http://127.0.0.1:{}/record/upload", origin.port);
    // No Expect: 100-continue, so the body follows the head at once.
    let curl = Curl::through(&proxy)
        .arg("-T")
        .arg(upload.to_str().unwrap())
        .header("Expect:")
        .arg("--limit-rate")
        .arg("2M");
    let client = spawn_curl(curl, url);
    let flow = api.wait_flow("~u /record/upload", |f| f["response"].is_null());
    let id = flow["id"].as_str().unwrap();
    // The head reached the server and the body is on its way before the kill.
    origin
        .stdout
        .wait_for(&"request: PUT /record/upload", WAIT)
        .expect("the request head reached the server");
    std::thread::sleep(Duration::from_millis(300));
    kill_and_see_both_connections_close(&api, id, proxy.port(), origin.port);
    let answer = client.join().unwrap();
    assert!(
        answer.status != 200,
        "the upload did not complete: {answer:?}"
    );
    let ended = api.wait_flow("~u /record/upload", |f| !f["error"].is_null());
    assert_eq!(ended["error"]["kind"], "killed", "{ended}");
    let sent = ended["request"]["size"].as_u64().unwrap_or(0);
    assert!(
        sent > 0 && sent < 200_000_000,
        "killed while the body streamed ({sent} bytes of it had passed): {ended}"
    );
    let message = ended["error"]["msg"].as_str().unwrap_or("");
    assert!(
        message.contains("bytes of the request body"),
        "the error says how far the upload got: {message}"
    );
    assert!(
        recorded(&origin).is_empty(),
        "the server never got a whole request: {:?}",
        recorded(&origin)
    );
}

#[test]
fn a_replay_sends_the_request_again_as_a_linked_flow() {
    let origin = origin();
    let proxy = proxy(&[]);
    let api = ControlApi::of(&proxy);
    Curl::through(&proxy)
        .data("payload")
        .header("x-case: replay")
        .run(&format!("http://127.0.0.1:{}/record/replay", origin.port))
        .assert_status(200);
    let first = api.wait_flow("~u /record/replay", |f| f["response"]["status_code"] == 200);
    let id = first["id"].as_str().unwrap();
    let replayed = api.send("POST", &format!("/flows/{id}/replay"), None);
    replayed.assert_status(200);
    let new_id = replayed.json()["id"].as_str().unwrap().to_owned();
    let copy = api.wait_flow("~u /record/replay", |f| {
        f["id"] == new_id.as_str() && f["response"]["status_code"] == 200
    });
    assert_eq!(copy["replay_of"], id, "{copy}");
    assert_eq!(copy["is_replay"], "request", "{copy}");
    let seen = recorded_at_least(&origin, 2);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1]["method"], "POST");
    assert_eq!(seen[1]["body"], "payload");
    assert_eq!(recorded_header(&seen[1], "x-case"), Some("replay"));
}

/// A replay is an exchange like any other: Apache renegotiates for the client
/// certificate again, and `--client-certs` answers it again.
#[test]
fn a_replayed_request_goes_through_the_servers_renegotiation_as_the_live_one_did() {
    let apache = Apache::start();
    let pki = test_pki();
    let proxy = proxy(&["--client-certs", pki.client_pem.to_str().unwrap()]);
    let api = ControlApi::of(&proxy);
    let before = apache.renegotiation_count();
    Curl::through(&proxy)
        .cacert(proxy.ca_cert_path())
        .run(&apache.url(Vhost::Tls12, "/vedauth/ok.txt"))
        .assert_status(200);
    let first = api.wait_flow("~u /vedauth/ok.txt", |f| !f["response"].is_null());
    let id = first["id"].as_str().unwrap();
    let replayed = api.send("POST", &format!("/flows/{id}/replay"), None);
    replayed.assert_status(200);
    let new_id = replayed.json()["id"].as_str().unwrap().to_owned();
    let copy = api.wait_flow("~u /vedauth/ok.txt", |f| {
        f["id"] == new_id.as_str() && !f["response"].is_null()
    });
    assert_eq!(copy["response"]["status_code"], 200, "{copy}");
    assert_eq!(copy["replay_of"], id, "{copy}");
    let cn = copy["response"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| {
            h[0].as_str()
                .unwrap()
                .eq_ignore_ascii_case("x-client-cert-cn")
        })
        .map(|h| h[1].clone());
    assert_eq!(
        cn.as_ref().and_then(Value::as_str),
        Some(CLIENT_CN),
        "{copy}"
    );
    let timeline = copy["timeline"].to_string();
    assert!(timeline.contains("renegotiation"), "{timeline}");
    assert_eq!(apache.renegotiation_count(), before + 2, "live and replay");
}

#[test]
fn the_exported_curl_line_sends_the_same_request_again() {
    let origin = origin();
    let proxy = proxy(&[]);
    let api = ControlApi::of(&proxy);
    Curl::through(&proxy)
        .method("PUT")
        .data("it's a \"body\" with $dollars")
        .header("x-quoted: a 'single' and \"double\"")
        .run(&format!(
            "http://127.0.0.1:{}/record/export?a=1&b=2",
            origin.port
        ))
        .assert_status(200);
    let flow = api.wait_flow("~u /record/export", |f| f["response"]["status_code"] == 200);
    let id = flow["id"].as_str().unwrap();
    let line = api
        .curl()
        .run(&format!("{}/flows/{id}/export/curl", api.base));
    line.assert_status(200);
    let command = line.body_text();
    let run = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(run.success(), "{command}");
    let seen = recorded_at_least(&origin, 2);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["method"], seen[1]["method"]);
    assert_eq!(seen[0]["target"], seen[1]["target"]);
    assert_eq!(seen[0]["body"], seen[1]["body"]);
    assert_eq!(
        recorded_header(&seen[1], "x-quoted"),
        Some("a 'single' and \"double\""),
        "{command}"
    );
}

#[test]
fn every_flow_of_a_concurrent_client_replay_is_printed_before_the_process_exits() {
    // The printer gathers a few milliseconds of flows per write under load; the exit
    // must not leave the last of them unprinted. (The exit also waits for the session
    // store's last batch, which so far has always given the printer time enough: this
    // passes without `Printer::finish` too; it guards the outcome, not the mechanism.)
    const FLOWS: usize = 40;
    let origin = origin();
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("saved.db");
    {
        let mut recording = PeriscopeBuilder::new().arg("-w").arg(&session).start();
        for n in 1..=FLOWS {
            Curl::through(&recording)
                .run(&format!("http://127.0.0.1:{}/record/c{n}", origin.port))
                .assert_status(200);
        }
        let last = format!("/record/c{FLOWS}");
        recording.wait_for_stdout(last.as_str(), WAIT);
        recording.terminate(Duration::from_secs(5));
    }
    for _ in 0..3 {
        let replay = Command::new(periscope_binary())
            .args(["dump", "--listen-host", "127.0.0.1", "-p", "0", "--confdir"])
            .arg(dir.path().join("conf"))
            .args(["--client-replay-concurrency", "16", "--client-replay"])
            .arg(&session)
            .output()
            .unwrap();
        assert!(replay.status.success(), "{replay:?}");
        let printed = String::from_utf8_lossy(&replay.stdout);
        assert_eq!(
            printed.lines().filter(|l| l.contains("/record/c")).count(),
            FLOWS,
            "{printed}"
        );
    }
}

#[test]
fn client_replay_of_a_saved_session_reproduces_its_requests_in_order_and_exits() {
    let origin = origin();
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("saved.db");
    {
        let mut recording = PeriscopeBuilder::new().arg("-w").arg(&session).start();
        for n in 1..=3 {
            Curl::through(&recording)
                .run(&format!("http://127.0.0.1:{}/record/n{n}", origin.port))
                .assert_status(200);
        }
        recording.wait_for_stdout("/record/n3", WAIT);
        recording.terminate(Duration::from_secs(5));
    }
    let replay = Command::new(periscope_binary())
        .args(["dump", "--listen-host", "127.0.0.1", "-p", "0", "--confdir"])
        .arg(dir.path().join("conf"))
        .arg("--client-replay")
        .arg(&session)
        .output()
        .unwrap();
    assert!(replay.status.success(), "{replay:?}");
    let printed = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(
        printed.lines().filter(|l| l.contains("/record/n")).count(),
        3,
        "{printed}"
    );
    let targets: Vec<String> = recorded_at_least(&origin, 6)
        .iter()
        .map(|r| r["target"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        targets,
        [
            "/record/n1",
            "/record/n2",
            "/record/n3",
            "/record/n1",
            "/record/n2",
            "/record/n3"
        ]
    );
}

#[test]
fn websocket_messages_are_held_one_by_one_edited_and_dropped() {
    let echo = python_websocket_echo_server();
    let proxy = proxy(&["--intercept", "~websocket"]);
    let api = ControlApi::of(&proxy);
    let (mut chat, lines) = ws_chat(&proxy, echo.port, "4", &["one", "two", "three"]);
    // The handshake itself is a flow matching ~websocket: let its request and its
    // response go.
    let handshake = api.wait_flow("~websocket", |f| f["intercept"]["at"] == "request");
    let id = handshake["id"].as_str().unwrap().to_owned();
    api.send("POST", &format!("/flows/{id}/resume"), None)
        .assert_status(200);
    api.wait_flow("~websocket", |f| f["intercept"]["at"] == "response");
    api.send("POST", &format!("/flows/{id}/resume"), None)
        .assert_status(200);
    lines.wait_for(&"open", WAIT).expect("the WebSocket opened");
    let decide = |expected_from_client: bool, expected: &str, decision: &str| {
        let held = api.wait_flow("~websocket", |f| {
            f["id"] == id.as_str()
                && f["intercept"]["at"] == "websocket_message"
                && f["intercept"]["message"]["from_client"] == expected_from_client
        });
        let content = &held["intercept"]["message"]["content"];
        assert_eq!(content, expected, "{held}");
        api.send(
            "POST",
            &format!("/flows/{id}/websocket/decision"),
            Some(decision),
        )
        .assert_status(200);
    };
    // "one" goes on as "ONE"; the echo comes back held too, and goes on unchanged.
    decide(true, "one", r#"{"action": "resume", "content": "ONE"}"#);
    decide(false, "ONE", r#"{"action": "resume"}"#);
    // "two" is dropped: nothing comes back.
    decide(true, "two", r#"{"action": "drop"}"#);
    decide(true, "three", r#"{"action": "resume"}"#);
    decide(false, "three", r#"{"action": "resume"}"#);
    lines.wait_for(&"closed", WAIT).expect("the chat ended");
    let received: Vec<String> = lines
        .lines()
        .iter()
        .filter_map(|l| l.strip_prefix("received: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(received, ["ONE", "three"]);
    let _ = chat.wait();
}

/// A message written by the user into an open WebSocket, to either side.
#[test]
fn a_message_injected_into_a_websocket_reaches_the_side_it_was_written_to() {
    let echo = python_websocket_echo_server();
    let proxy = proxy(&[]);
    let api = ControlApi::of(&proxy);
    let (mut chat, lines) = ws_chat(&proxy, echo.port, "6", &["one"]);
    lines
        .wait_for(&"received: one", WAIT)
        .expect("the echo of the chat's own message");
    let flow = api.wait_flow("~websocket", |f| !f["websocket"].is_null());
    let id = flow["id"].as_str().unwrap().to_owned();
    let inject = |body: &str| {
        api.send("POST", &format!("/flows/{id}/websocket/inject"), Some(body))
            .assert_status(200);
    };
    inject(r#"{"to_client": true, "content": "from-periscope"}"#);
    lines
        .wait_for(&"received: from-periscope", WAIT)
        .expect("the client got the message written to it");
    // Written to the server: the echo server sends it back, so the client sees it.
    inject(r#"{"to_client": false, "content": "to-the-server"}"#);
    lines
        .wait_for(&"received: to-the-server", WAIT)
        .expect("the server got the message written to it (and echoed it)");
    lines.wait_for(&"closed", WAIT).expect("the chat ended");
    let _ = chat.wait();
    let received: Vec<String> = lines
        .lines()
        .iter()
        .filter_map(|l| l.strip_prefix("received: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(received, ["one", "from-periscope", "to-the-server"]);
}

#[test]
fn intercept_tls_lets_the_user_choose_the_certificate_for_a_renegotiation() {
    let apache = Apache::start();
    let pki = test_pki();
    let proxy = proxy(&["--intercept-tls"]);
    let api = ControlApi::of(&proxy);
    let url = apache.url(Vhost::Tls12, "/vedauth/ok.txt");
    for (choice, expected_cn) in [
        (
            format!(
                r#"{{"certificate": "file", "path": "{}"}}"#,
                pki.client_pem.display()
            ),
            CLIENT_CN,
        ),
        (r#"{"certificate": "none"}"#.to_owned(), "(null)"),
    ] {
        let client = spawn_curl(
            Curl::through(&proxy).cacert(proxy.ca_cert_path()),
            url.clone(),
        );
        let held = api.wait_flow("~u /vedauth/ok.txt", |f| {
            f["intercepted"] == true && f["intercept"]["at"] == "client_certificate"
        });
        let id = held["id"].as_str().unwrap();
        api.send(
            "POST",
            &format!("/flows/{id}/client-certificate"),
            Some(&choice),
        )
        .assert_status(200);
        let answer = client.join().unwrap();
        answer.assert_status(200);
        assert_eq!(
            answer.header("x-client-cert-cn"),
            Some(expected_cn),
            "{choice}"
        );
        let flow = api.wait_flow("~u /vedauth/ok.txt", |f| {
            f["id"] == id && !f["response"].is_null()
        });
        let timeline = flow["timeline"].to_string();
        assert!(
            timeline.contains("certificate request held for the user"),
            "{timeline}"
        );
    }
}

#[test]
fn the_api_refuses_missing_tokens_cross_origin_writes_and_requests_through_the_proxy() {
    let proxy = proxy(&[]);
    let api = ControlApi::of(&proxy);
    let anonymous = Curl::new().run(&format!("{}/flows", api.base));
    anonymous.assert_status(401);
    let cross_origin = api
        .curl()
        .method("POST")
        .header("Origin: http://evil.example")
        .run(&format!("{}/flows/resume", api.base));
    cross_origin.assert_status(403);
    // A client of the proxy asking it for the API: refused by the proxy itself.
    let through = Curl::through(&proxy)
        .header(&format!("Authorization: Bearer {}", api.token))
        .run(&format!("{}/flows", api.base));
    through.assert_status(403);
    assert!(through.body_text().contains("control API"), "{through:?}");
}

/// The options page changes how the running proxy treats servers: a client
/// certificate set through `PUT /options` answers Apache's demand for one on the next
/// connection; a file that does not load is refused and changes nothing; without the
/// test CA the server is not trusted until `ssl_insecure`; a shorter response timeout
/// ends a silent server's wait.
#[test]
fn client_certificates_the_upstream_ca_and_timeouts_change_at_run_time() {
    let apache = Apache::start();
    let pki = test_pki();
    let proxy = proxy(&[]);
    let api = ControlApi::of(&proxy);
    let through = || Curl::through(&proxy).cacert(proxy.ca_cert_path());
    let require = apache.url(Vhost::Tls12, "/require/");
    let without = through().run(&require);
    assert_eq!(without.status, 502, "{without:?}");
    assert!(
        without.body_text().contains("--client-certs"),
        "{without:?}"
    );

    let pem = pki.client_pem.to_str().unwrap();
    let set = api.send(
        "PUT",
        "/options",
        Some(&serde_json::json!({ "client_certs": pem }).to_string()),
    );
    set.assert_status(200);
    assert_eq!(set.json()["client_certs"], pem);
    let with = through().run(&require);
    with.assert_status(200);
    assert_eq!(with.header("X-Client-Cert-CN"), Some(CLIENT_CN), "{with:?}");

    let refused = api.send(
        "PUT",
        "/options",
        Some(r#"{"client_certs": "/nonexistent/client.pem", "connect_timeout": "3s"}"#),
    );
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(
        refused.body_text().contains("client_certs"),
        "{}",
        refused.body_text()
    );
    let unchanged = api.get("/options");
    assert_eq!(unchanged["client_certs"], pem, "{unchanged}");
    assert_eq!(unchanged["connect_timeout"], "10s", "{unchanged}");
    through().run(&require).assert_status(200);

    let hello = apache.url(Vhost::Tls12, "/hello.txt");
    api.send("PUT", "/options", Some(r#"{"upstream_trusted_ca": ""}"#))
        .assert_status(200);
    let untrusted = through().run(&hello);
    assert_eq!(untrusted.status, 502, "{untrusted:?}");
    assert!(
        untrusted.body_text().contains("certificate"),
        "{}",
        untrusted.body_text()
    );
    api.send("PUT", "/options", Some(r#"{"ssl_insecure": true}"#))
        .assert_status(200);
    through().run(&hello).assert_status(200);

    // A server that accepts the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/", silent.local_addr().unwrap());
    let set = api.send("PUT", "/options", Some(r#"{"response_timeout": "1s"}"#));
    set.assert_status(200);
    assert_eq!(set.json()["response_timeout"], "1s");
    let started = Instant::now();
    let timed_out = through().run(&silent_url);
    assert_eq!(timed_out.status, 504, "{timed_out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the 1 s limit was used, not the 60 s one: {:?}",
        started.elapsed()
    );
    assert!(
        timed_out.body_text().contains("within 1 s"),
        "{}",
        timed_out.body_text()
    );
    for bad in [
        r#"{"response_timeout": "0s"}"#,
        r#"{"idle_timeout": "soon"}"#,
    ] {
        let refused = api.send("PUT", "/options", Some(bad));
        assert_eq!(refused.status, 400, "{bad}: {refused:?}");
    }
}
