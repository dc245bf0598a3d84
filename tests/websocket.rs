//! WebSocket through Periscope with real peers: a Python `websockets` echo server
//! (plain and TLS) and a scripted `websockets` client that reaches it through the
//! proxy with CONNECT (`tests/peers/websocket_client.py`). The conversation has text,
//! binary, ping/pong, a fragmented message, a large message and a close handshake;
//! the tests check what the client got back, what the flow recorded (live `--json`
//! output and the session file), the `~websocket` filter, and `dump -d 2` output.
//! WebSocket over HTTP/2 (RFC 8441) is driven by `tests/peers/h2_websocket_client.py`
//! (the `h2` library), in a TLS tunnel and on the h2c listener.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

const WAIT: Duration = Duration::from_secs(20);
const BIG: usize = 1 << 20;
const TEXT: &str = "hello, periscope";
const PING: &[u8] = b"are you there";
const CLOSE_CODE: u64 = 4000;
const CLOSE_REASON: &str = "client done";

fn tls_echo_server() -> PythonPeer {
    let pki = test_pki();
    PythonPeer::start(
        "websocket_echo.py",
        &[
            "--cert",
            pki.server_cert.to_str().unwrap(),
            "--key",
            pki.server_key.to_str().unwrap(),
        ],
    )
}

fn proxy(extra: &[&str]) -> Periscope {
    let ca = test_pki().ca_cert.to_string_lossy().into_owned();
    let mut args = vec!["--upstream-trusted-ca", ca.as_str()];
    args.extend_from_slice(extra);
    Periscope::start_dump(&args)
}

/// Runs the scripted conversation through `proxy`; returns the client's JSON report.
fn converse(proxy: &Periscope, url: &str, extra: &[&str]) -> Value {
    let output = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/websocket_client.py"
        ))
        .args(["--proxy", &proxy.addr(), "--url", url, "--cacert"])
        .arg(proxy.ca_cert_path())
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "websocket client failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        proxy.describe()
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// What the client must have got back: every echo intact, the pong, the server's
/// answer to the close.
fn assert_client_saw_every_echo(report: &Value) {
    assert_eq!(report["text"], TEXT, "{report}");
    let bytes: String = (0..=255u8).map(|b| format!("{b:02x}")).collect();
    assert_eq!(report["binary_hex"], bytes.as_str());
    assert_eq!(report["pong"], true);
    assert_eq!(report["fragmented"], "frag-ment-ed");
    assert_eq!(report["big_length"], BIG as u64);
    assert_eq!(report["big_sha256"], report["big_sent_sha256"]);
    assert_eq!(report["close_code"], CLOSE_CODE);
    assert_eq!(report["close_reason"], CLOSE_REASON);
}

/// The last JSON line on the proxy's stdout that has a closed WebSocket (live `--json`
/// output prints the flow at its 101 and again when its connection ends).
fn closed_websocket_flow(proxy: &Periscope) -> Value {
    proxy.wait_for_stdout(
        |line: &str| line.contains("\"closed_by_client\":true"),
        WAIT,
    );
    proxy
        .stdout_lines()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .rfind(|flow| flow["websocket"]["closed_by_client"] == true)
        .unwrap()
}

fn content(message: &Value) -> Vec<u8> {
    openssl::base64::decode_block(message["content"].as_str().unwrap()).unwrap()
}

/// The recorded messages of a flow: the whole conversation in order, each with its
/// direction, opcode, size, content, frame count and a time inside the flow.
fn assert_conversation_recorded(flow: &Value) {
    let session = &flow["websocket"];
    let messages = session["messages"].as_array().unwrap();
    let summary: Vec<(bool, &str, u64)> = messages
        .iter()
        .map(|m| {
            (
                m["from_client"].as_bool().unwrap(),
                m["opcode"].as_str().unwrap(),
                m["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let close_size = 2 + CLOSE_REASON.len() as u64;
    assert_eq!(
        summary,
        vec![
            (true, "text", TEXT.len() as u64),
            (false, "text", TEXT.len() as u64),
            (true, "binary", 256),
            (false, "binary", 256),
            (true, "ping", PING.len() as u64),
            (false, "pong", PING.len() as u64),
            (true, "text", 12),
            (false, "text", 12),
            (true, "binary", BIG as u64),
            (false, "binary", BIG as u64),
            (true, "close", close_size),
            (false, "close", close_size),
        ],
        "{session}"
    );
    assert_eq!(content(&messages[0]), TEXT.as_bytes());
    assert_eq!(content(&messages[1]), TEXT.as_bytes());
    assert_eq!(content(&messages[2]), (0..=255u8).collect::<Vec<_>>());
    assert_eq!(content(&messages[4]), PING);
    assert_eq!(content(&messages[5]), PING, "the pong echoes the ping");
    assert_eq!(content(&messages[6]), b"frag-ment-ed");
    // websockets sends each fragment, then an empty final frame.
    assert_eq!(messages[6]["frames"], 4);
    assert_eq!(messages[7]["frames"], 1);
    let big = content(&messages[8]);
    assert_eq!(big.len(), BIG);
    assert_eq!(content(&messages[9]), big, "the echo of the big message");
    assert!(messages.iter().all(|m| m["truncated"] == false));
    let mut close = (CLOSE_CODE as u16).to_be_bytes().to_vec();
    close.extend_from_slice(CLOSE_REASON.as_bytes());
    assert_eq!(content(&messages[10]), close);

    assert_eq!(session["close_code"], CLOSE_CODE);
    assert_eq!(session["close_reason"], CLOSE_REASON);
    assert_eq!(session["closed_by_client"], true);
    assert_eq!(session["dropped_messages"], 0);
    // Times: in order, after the handshake, not after the close.
    let times: Vec<i64> = messages.iter().map(|m| m["at"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let started = flow["timeline"][0]["at"].as_i64().unwrap();
    assert!(times[0] >= started, "{times:?} vs start {started}");
    // The close is dated when the first Close frame passed.
    let closed_at = session["closed_at"].as_i64().unwrap();
    assert!(
        times[9] <= closed_at && closed_at <= times[10],
        "{times:?} {closed_at}"
    );
}

#[test]
fn a_websocket_conversation_is_relayed_and_recorded_with_permessage_deflate() {
    let server = python_websocket_echo_server();
    let proxy = proxy(&["--json"]);
    let report = converse(&proxy, &format!("ws://127.0.0.1:{}/chat", server.port), &[]);
    assert_client_saw_every_echo(&report);
    assert!(
        report["extensions"]
            .as_str()
            .is_some_and(|e| e.starts_with("permessage-deflate")),
        "the peers negotiated compression: {report}"
    );
    let flow = closed_websocket_flow(&proxy);
    assert_eq!(flow["response"]["status"], 101);
    assert_eq!(flow["request"]["path"], "/chat");
    assert!(flow["websocket"]["extensions"]
        .as_str()
        .unwrap()
        .starts_with("permessage-deflate"));
    // Recorded inflated: the sizes and contents are what the applications sent.
    assert_conversation_recorded(&flow);
    assert!(flow["error"].is_null(), "{}", flow["error"]);
}

#[test]
fn a_websocket_over_tls_is_intercepted_and_recorded() {
    let server = tls_echo_server();
    let proxy = proxy(&["--json"]);
    let report = converse(
        &proxy,
        &format!("wss://localhost:{}/secure", server.port),
        &["--no-compression"],
    );
    assert_client_saw_every_echo(&report);
    assert!(report["extensions"].is_null(), "{report}");
    let flow = closed_websocket_flow(&proxy);
    assert_eq!(flow["request"]["scheme"], "https");
    assert_eq!(flow["request"]["path"], "/secure");
    assert!(
        flow["client"]["tls"].is_object(),
        "client leg is TLS: {flow}"
    );
    assert!(
        flow["server"]["tls"].is_object(),
        "server leg is TLS: {flow}"
    );
    assert!(flow["websocket"]["extensions"].is_null());
    assert_conversation_recorded(&flow);
}

#[test]
fn a_message_over_the_body_limit_is_relayed_whole_and_recorded_truncated() {
    let server = python_websocket_echo_server();
    let proxy = proxy(&["--json", "--body-limit", "64KiB"]);
    let report = converse(
        &proxy,
        &format!("ws://127.0.0.1:{}/", server.port),
        &["--no-compression"],
    );
    assert_client_saw_every_echo(&report);
    let flow = closed_websocket_flow(&proxy);
    let messages = flow["websocket"]["messages"].as_array().unwrap();
    let big: Vec<&Value> = messages
        .iter()
        .filter(|m| m["size"] == BIG as u64)
        .collect();
    assert_eq!(big.len(), 2, "{messages:?}");
    // The budget is shared by the whole connection: the first big message takes what
    // the small ones left, the echo gets nothing.
    let kept: usize = messages.iter().map(|m| content(m).len()).sum();
    assert_eq!(kept, 64 * 1024);
    assert!(big.iter().all(|m| m["truncated"] == true));
    assert!(content(big[0]).len() < 64 * 1024 && !content(big[0]).is_empty());
    // The close after it is still seen and its code recorded.
    assert_eq!(flow["websocket"]["close_code"], CLOSE_CODE);
}

/// `periscope dump -r FILE ARGS...`: stdout.
fn dump_session(file: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .arg("dump")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("run periscope dump -r");
    assert!(
        out.status.success(),
        "periscope dump -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An ordinary request to the echo server (it answers 426 without an upgrade): a flow
/// that `~websocket` must not match.
fn plain_request(proxy: &Periscope, port: u16) {
    let result = Curl::through(proxy).run(&format!("http://127.0.0.1:{port}/plain"));
    result.assert_status(426);
}

#[test]
fn the_session_file_keeps_the_messages_and_dump_prints_them_at_detail_2() {
    let server = python_websocket_echo_server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ws.periscope");
    let file_arg = file.to_str().unwrap();
    let proxy = proxy(&["-w", file_arg]);
    plain_request(&proxy, server.port);
    let report = converse(&proxy, &format!("ws://127.0.0.1:{}/chat", server.port), &[]);
    assert_client_saw_every_echo(&report);
    // The update at the close reaches the file shortly after the connection ends.
    let stored = || {
        dump_session(&file, &["--json", "~websocket"])
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(WAIT, || stored()
            .first()
            .is_some_and(|f| f["websocket"]["closed_by_client"] == true)),
        "the closed WebSocket never reached the session file: {:?}",
        stored()
    );
    let flows = stored();
    assert_eq!(flows.len(), 1, "~websocket matches only the upgraded flow");
    assert_conversation_recorded(&flows[0]);

    let others = dump_session(&file, &["!~websocket"]);
    assert_eq!(others.lines().count(), 1, "{others}");
    assert!(others.contains("/plain 426"), "{others}");

    // Detail 2 lists the messages under the flow line, then the close.
    let detailed = dump_session(&file, &["-d", "2", "~websocket"]);
    let lines: Vec<&str> = detailed.lines().collect();
    assert!(lines[0].contains("GET http://127.0.0.1:"), "{detailed}");
    assert!(lines[0].contains("/chat 101"), "{detailed}");
    let ws_lines: Vec<&str> = lines[1..].iter().map(|l| l.trim()).collect();
    assert_eq!(ws_lines.len(), 13, "{detailed}");
    assert!(
        ws_lines[0].starts_with(&format!("ws -> text {TEXT:?}")),
        "{detailed}"
    );
    assert!(
        ws_lines[1].starts_with(&format!("ws <- text {TEXT:?}")),
        "{detailed}"
    );
    assert!(
        ws_lines[2].starts_with("ws -> binary 256 bytes"),
        "{detailed}"
    );
    assert!(ws_lines[4].starts_with("ws -> ping"), "{detailed}");
    assert!(ws_lines[5].starts_with("ws <- pong"), "{detailed}");
    assert!(
        ws_lines[6].starts_with("ws -> text \"frag-ment-ed\""),
        "{detailed}"
    );
    assert!(
        ws_lines[8].starts_with(&format!("ws -> binary {BIG} bytes")),
        "{detailed}"
    );
    assert!(ws_lines[10].starts_with("ws -> close"), "{detailed}");
    assert_eq!(
        ws_lines[12],
        format!("ws closed by client: {CLOSE_CODE} {CLOSE_REASON}")
    );
    // The default detail prints the flow line alone.
    let summary = dump_session(&file, &["~websocket"]);
    assert_eq!(summary.lines().count(), 1, "{summary}");
}

#[test]
fn live_dump_at_detail_2_prints_the_messages_of_websocket_flows_only() {
    let server = python_websocket_echo_server();
    let proxy = proxy(&["-d", "2", "~websocket"]);
    plain_request(&proxy, server.port);
    let report = converse(&proxy, &format!("ws://127.0.0.1:{}/live", server.port), &[]);
    assert_client_saw_every_echo(&report);
    proxy.wait_for_stdout("ws closed by client", WAIT);
    // The close line is printed when the client's Close passes; the server's echo of
    // it may be printed after it.
    wait_until(WAIT, || proxy.stdout_text().lines().count() >= 14);
    let text = proxy.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        14,
        "one flow line, 12 messages, the close: {text}"
    );
    assert!(lines[0].contains("/live 101"), "{text}");
    // By its path: "426" (its status) can be part of a port number.
    assert!(
        !text.contains("/plain"),
        "the filter left the plain flow out: {text}"
    );
    assert!(
        lines[1].trim().starts_with(&format!("ws -> text {TEXT:?}")),
        "{text}"
    );
    assert!(lines[10].trim().starts_with("ws <- binary"), "{text}");
    let closed = format!("ws closed by client: {CLOSE_CODE} {CLOSE_REASON}");
    assert!(
        lines[12..].iter().any(|line| line.trim() == closed),
        "{text}"
    );
}

#[test]
fn dump_help_says_which_detail_level_prints_websocket_messages() {
    let out = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .args(["dump", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let flow_detail = help
        .split("--flow-detail")
        .nth(1)
        .unwrap_or_else(|| panic!("no --flow-detail in:\n{help}"));
    assert!(
        flow_detail.contains("2 also WebSocket messages"),
        "--flow-detail help does not mention WebSocket messages:\n{help}"
    );
}

/// Runs `tests/peers/h2_websocket_client.py` through `proxy`; returns its JSON report.
fn converse_over_http2(proxy: &Periscope, port: u16, extra: &[&str]) -> Value {
    let output = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/h2_websocket_client.py"
        ))
        .args(["--proxy", &proxy.addr(), "--port", &port.to_string()])
        .args(["--path", "/chat", "--text", TEXT])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "HTTP/2 websocket client failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        proxy.describe()
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// What an RFC 8441 client must have got, and what its flow must say: the same
/// messages and close as over HTTP/1.1, and which protocol each leg spoke.
fn assert_http2_websocket_relayed_and_recorded(proxy: &Periscope, report: &Value) {
    assert_eq!(report["enable_connect_protocol"], 1, "{report}");
    assert_eq!(report["status"], 200, "{report}");
    assert_eq!(report["text"], TEXT, "{report}");
    let bytes: String = (0..=255u8).map(|b| format!("{b:02x}")).collect();
    assert_eq!(report["binary_hex"], bytes.as_str(), "{report}");
    assert_eq!(report["close_code"], 1000, "{report}");
    assert_eq!(report["close_reason"], "bye", "{report}");
    assert_eq!(report["stream_ended"], true, "{report}");

    let flow = closed_websocket_flow(proxy);
    assert_eq!(flow["request"]["method"], "CONNECT");
    assert_eq!(flow["request"]["http_version"], "HTTP/2.0");
    assert_eq!(flow["request"]["path"], "/chat");
    assert_eq!(flow["response"]["status"], 101, "the server's answer");
    assert_eq!(flow["response"]["http_version"], "HTTP/1.1");
    let timeline = flow["timeline"].to_string();
    assert!(
        timeline.contains("extended CONNECT (RFC 8441)") && timeline.contains("HTTP/1.1 Upgrade"),
        "{timeline}"
    );
    assert_http2_conversation_recorded(&flow);
}

/// The echo conversation of `h2_websocket_client.py`, message by message, in a flow.
fn assert_http2_conversation_recorded(flow: &Value) {
    let session = &flow["websocket"];
    let messages = session["messages"].as_array().unwrap();
    let summary: Vec<(bool, &str)> = messages
        .iter()
        .map(|m| {
            (
                m["from_client"].as_bool().unwrap(),
                m["opcode"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (true, "text"),
            (false, "text"),
            (true, "binary"),
            (false, "binary"),
            (true, "close"),
            (false, "close"),
        ],
        "{session}"
    );
    assert_eq!(content(&messages[0]), TEXT.as_bytes());
    assert_eq!(content(&messages[1]), TEXT.as_bytes());
    assert_eq!(content(&messages[2]), (0..=255u8).collect::<Vec<_>>());
    assert_eq!(content(&messages[3]), (0..=255u8).collect::<Vec<_>>());
    assert_eq!(session["close_code"], 1000);
    assert_eq!(session["close_reason"], "bye");
    assert!(flow["error"].is_null(), "{}", flow["error"]);
}

#[test]
fn a_websocket_over_http2_extended_connect_is_relayed_to_an_http1_server_and_recorded() {
    let server = tls_echo_server();
    let proxy = proxy(&["--json"]);
    let ca = proxy.ca_cert_path().to_string_lossy().into_owned();
    // The echo server offers no ALPN and the client offers only h2: the client leg
    // is HTTP/2, the server leg HTTP/1.1.
    let report = converse_over_http2(
        &proxy,
        server.port,
        &["--host", "localhost", "--cacert", &ca],
    );
    assert_eq!(report["alpn"], "h2", "{report}");
    assert_http2_websocket_relayed_and_recorded(&proxy, &report);
    let flow = closed_websocket_flow(&proxy);
    assert_eq!(flow["request"]["scheme"], "https");
    assert_eq!(flow["client"]["tls"]["alpn"], "h2");
    assert!(
        flow["server"]["tls"].is_object(),
        "server leg is TLS: {flow}"
    );
}

#[test]
fn a_websocket_over_http2_goes_to_an_http2_server_as_extended_connect() {
    // The scripted origin speaks h2 and allows extended CONNECT (RFC 8441).
    let origin = h2_origin(&[]);
    let proxy = proxy(&["--json"]);
    let ca = proxy.ca_cert_path().to_string_lossy().into_owned();
    let report = converse_over_http2(
        &proxy,
        origin.port,
        &["--host", "localhost", "--cacert", &ca],
    );
    assert_eq!(report["alpn"], "h2", "{report}");
    assert_eq!(report["enable_connect_protocol"], 1, "{report}");
    assert_eq!(report["status"], 200, "{report}");
    assert_eq!(report["text"], TEXT, "{report}");
    assert_eq!(report["close_code"], 1000, "{report}");
    assert_eq!(report["close_reason"], "bye", "{report}");
    assert_eq!(report["stream_ended"], true, "{report}");
    assert!(
        origin
            .stdout
            .wait_for(&"request: CONNECT /chat", WAIT)
            .is_ok(),
        "the server got an extended CONNECT: {}",
        origin.stdout.text()
    );

    let flow = closed_websocket_flow(&proxy);
    assert_eq!(flow["request"]["method"], "CONNECT");
    assert_eq!(flow["request"]["http_version"], "HTTP/2.0");
    assert_eq!(flow["request"]["stream_id"], 1, "{flow}");
    assert_eq!(flow["response"]["status"], 200, "the server's own answer");
    assert_eq!(flow["response"]["http_version"], "HTTP/2.0");
    let server_stream = flow["response"]["stream_id"].as_u64().expect("a stream id");
    assert_eq!(server_stream % 2, 1, "a client-initiated stream: {flow}");
    assert_eq!(flow["server"]["tls"]["alpn"], "h2");
    let timeline = flow["timeline"].to_string();
    assert!(
        timeline.contains("extended CONNECT (RFC 8441) on both legs"),
        "{timeline}"
    );
    assert_http2_conversation_recorded(&flow);
}

#[test]
fn an_http2_server_refusing_extended_connect_is_relayed_with_its_body() {
    let origin = h2_origin(&[]);
    let proxy = proxy(&["--json"]);
    let ca = proxy.ca_cert_path().to_string_lossy().into_owned();
    let report = converse_over_http2(
        &proxy,
        origin.port,
        &[
            "--host",
            "localhost",
            "--cacert",
            &ca,
            "--path",
            "/elsewhere",
        ],
    );
    assert_eq!(report["status"], 403, "{report}");
    let flow = flow_for_path(&proxy, "/elsewhere");
    assert_eq!(flow["response"]["status"], 403);
    assert_eq!(flow["response"]["http_version"], "HTTP/2.0");
    assert_eq!(content(&flow["response"]["body"]), b"no websockets here");
    assert!(flow["websocket"].is_null(), "{flow}");
    assert!(flow["error"].is_null(), "{flow}");
}

#[test]
fn a_websocket_over_h2c_extended_connect_to_the_listener_is_relayed_and_recorded() {
    let server = python_websocket_echo_server();
    let proxy = proxy(&["--json"]);
    let report = converse_over_http2(&proxy, server.port, &["--host", "127.0.0.1", "--h2c"]);
    assert_http2_websocket_relayed_and_recorded(&proxy, &report);
    let flow = closed_websocket_flow(&proxy);
    assert_eq!(flow["request"]["scheme"], "http");
    assert!(flow["server"]["tls"].is_null(), "{flow}");
}

/// The flow whose request path is `path`, once the proxy printed it.
fn flow_for_path(proxy: &Periscope, path: &str) -> Value {
    let needle = format!("\"path\":\"{path}\"");
    proxy.wait_for_stdout(needle.as_str(), WAIT);
    proxy
        .stdout_lines()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .rfind(|flow| flow["request"]["path"] == path)
        .unwrap()
}

#[test]
fn a_server_refusing_an_http2_websocket_is_answered_with_its_refusal_not_200() {
    let origin = PythonPeer::start("fault_origin.py", &[]);
    let proxy = proxy(&["--json"]);
    let refused = converse_over_http2(
        &proxy,
        origin.port,
        &["--host", "127.0.0.1", "--h2c", "--path", "/missing"],
    );
    assert_eq!(
        refused["status"], 404,
        "relayed as the server sent it: {refused}"
    );
    let flow = flow_for_path(&proxy, "/missing");
    assert_eq!(flow["response"]["status"], 404);
    assert!(flow["websocket"].is_null(), "{flow}");

    // A 2xx without the upgrade would tell an HTTP/2 client its WebSocket is open.
    let not_upgraded = converse_over_http2(
        &proxy,
        origin.port,
        &["--host", "127.0.0.1", "--h2c", "--path", "/ok"],
    );
    assert_eq!(not_upgraded["status"], 502, "{not_upgraded}");
    let flow = flow_for_path(&proxy, "/ok");
    assert_eq!(flow["response"]["status"], 502);
    let error = flow["error"]["message"].as_str().unwrap_or_default();
    assert!(
        error.contains("instead of 101 Switching Protocols"),
        "{flow}"
    );
    // What reached the server was an HTTP/1.1 WebSocket handshake.
    assert!(
        origin.stdout.wait_for(&"request: GET /ok", WAIT).is_ok(),
        "{}",
        origin.stdout.text()
    );
}
