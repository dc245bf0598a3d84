//! HTTP/2 through Periscope: ALPN on both legs, translation between HTTP/1.1 and
//! HTTP/2, multiplexed streams as flows, and the HTTP/1.1 fallback an HTTP/2 server
//! demands for client-certificate paths (Apache mod_http2 answers HTTP_1_1_REQUIRED
//! where mod_ssl would renegotiate, as IIS does).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

/// Apache with mod_http2: `h2` and `http/1.1` on its TLS vhosts.
fn h2_apache() -> Apache {
    Apache::builder()
        .pki(test_pki())
        .extra_config(
            "LoadModule http2_module /usr/lib/apache2/modules/mod_http2.so\n\
             Protocols h2 http/1.1\n\
             H2Direct off",
        )
        .start()
}

fn json_proxy(extra: &[&str]) -> Periscope {
    let ca = test_pki().ca_cert.to_string_lossy().into_owned();
    let mut args = vec!["--json", "--upstream-trusted-ca", ca.as_str()];
    args.extend_from_slice(extra);
    Periscope::start_dump(&args)
}

fn flows(proxy: &Periscope, at_least: usize) -> Vec<Value> {
    proxy.json_flows(at_least, Duration::from_secs(15))
}

#[test]
fn http2_end_to_end_when_both_sides_speak_it() {
    let apache = h2_apache();
    let proxy = json_proxy(&[]);
    let result = Curl::through(&proxy)
        .http2()
        .run(&apache.url(Vhost::Tls13, "/hello.txt"));
    result.assert_status(200);
    assert_eq!(
        result.info["http_version"], "2",
        "client leg is HTTP/2: {result:?}"
    );
    assert_eq!(result.body_text(), HELLO_BODY);
    let flow = &flows(&proxy, 1)[0];
    assert_eq!(flow["request"]["http_version"], "HTTP/2.0");
    assert_eq!(flow["response"]["http_version"], "HTTP/2.0");
    assert_eq!(flow["client"]["tls"]["alpn"], "h2");
    assert_eq!(flow["server"]["tls"]["alpn"], "h2");
    // The first stream a client opens is 1 (RFC 9113 §5.1.1), on both connections.
    assert_eq!(flow["request"]["stream_id"], 1, "{flow}");
    assert_eq!(flow["response"]["stream_id"], 1, "{flow}");
}

#[test]
fn an_http1_client_stays_on_http1_when_the_server_offers_both() {
    let apache = h2_apache();
    let proxy = json_proxy(&[]);
    let result = Curl::through(&proxy)
        .http1_1()
        .run(&apache.url(Vhost::Tls13, "/hello.txt"));
    result.assert_status(200);
    assert_eq!(result.info["http_version"], "1.1");
    let flow = &flows(&proxy, 1)[0];
    assert_eq!(flow["response"]["http_version"], "HTTP/1.1");
    assert_eq!(flow["server"]["tls"]["alpn"], "http/1.1");
    assert_eq!(
        flow["request"]["stream_id"],
        Value::Null,
        "no streams in HTTP/1.1"
    );
    assert_eq!(
        flow["response"]["stream_id"],
        Value::Null,
        "no streams in HTTP/1.1"
    );
}

#[test]
fn an_http2_client_is_translated_to_an_http1_only_server() {
    // The default harness Apache has no mod_http2.
    let apache = Apache::builder().pki(test_pki()).start();
    let proxy = json_proxy(&[]);
    // A client that offers only h2 (curl always offers http/1.1 as well).
    let output = std::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/h2_only_client.py"
        ))
        .args(["--proxy", &proxy.addr(), "--cacert"])
        .arg(proxy.ca_cert_path())
        .args(["--host", "localhost", "--port"])
        .arg(apache.port(Vhost::Tls12).to_string())
        .args(["--path", "/big.bin"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["alpn"], "h2", "the client leg speaks HTTP/2");
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["body_sha256"], big_bin_sha256());
    let flows = flows(&proxy, 1);
    let flow = &flows[0];
    assert_eq!(flow["request"]["http_version"], "HTTP/2.0");
    assert_eq!(flow["server"]["tls"]["alpn"], "http/1.1");
    assert_eq!(flow["response"]["http_version"], "HTTP/1.1");
    assert_eq!(flow["request"]["stream_id"], 1, "{flow}");
    assert_eq!(flow["response"]["stream_id"], Value::Null, "{flow}");
}

#[test]
fn an_http1_client_is_translated_to_an_http2_only_server() {
    // The origin refuses a TLS client that offers only http/1.1 (alert
    // no_application_protocol), as Go's HTTP/2-only servers do; Periscope asks again
    // offering h2, and translates.
    let origin = h2_origin(&["--h2-only"]);
    let url = localhost_url(origin.port, "/ok");
    let direct = Curl::new().http1_1().cacert(&test_pki().ca_cert).run(&url);
    assert_ne!(
        direct.exit_code, 0,
        "the origin must refuse HTTP/1.1 for this test to mean anything: {direct:?}"
    );
    let proxy = json_proxy(&[]);
    let result = Curl::through(&proxy).http1_1().run(&url);
    result.assert_status(200);
    assert_eq!(result.info["http_version"], "1.1", "{result:?}");
    assert_eq!(result.body_text(), "ok\n");
    let flow = &flows(&proxy, 1)[0];
    assert_eq!(flow["request"]["http_version"], "HTTP/1.1");
    assert_eq!(flow["request"]["stream_id"], Value::Null);
    assert_eq!(flow["response"]["http_version"], "HTTP/2.0");
    assert_eq!(flow["response"]["stream_id"], 1, "{flow}");
    assert_eq!(flow["server"]["tls"]["alpn"], "h2");
    assert!(
        origin
            .stdout
            .wait_for(
                &"refused a client that does not offer h2",
                Duration::from_secs(10)
            )
            .is_ok(),
        "{}",
        origin.stdout.text()
    );
}

#[test]
fn head_and_uploads_from_an_http2_client_reach_both_kinds_of_server() {
    let h2 = h2_apache();
    let h1 = Apache::builder().pki(test_pki()).start();
    let proxy = json_proxy(&[]);
    // curl offers h2 and http/1.1: the client leg takes the server's choice.
    for (apache, client_version) in [(&h2, "2"), (&h1, "1.1")] {
        let head = Curl::through(&proxy)
            .http2()
            .arg("--head")
            .run(&apache.url(Vhost::Tls13, "/hello.txt"));
        head.assert_status(200);
        assert_eq!(head.info["http_version"], client_version, "{head:?}");
        assert_eq!(
            head.header("content-length"),
            Some(HELLO_BODY.len().to_string().as_str()),
            "HEAD keeps the length of the body it does not send: {head:?}"
        );
    }
    let flows_so_far = flows(&proxy, 2);
    for flow in &flows_so_far {
        assert_eq!(flow["request"]["method"], "HEAD");
        assert_eq!(flow["response"]["body"]["size"], 0, "{flow}");
        assert!(flow["error"].is_null(), "{flow}");
    }

    // Uploads larger than any initial flow-control window. (Apache's mod_reflector
    // cannot echo a large body over HTTP/2 even without a proxy — it answers an empty
    // 200 and resets the stream — so the HTTP/2 server here is the scripted origin,
    // which answers with the length it read.)
    let upload: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let origin = h2_origin(&[]);
    let counted = Curl::through(&proxy)
        .http2()
        .data(&upload)
        .run(&localhost_url(origin.port, "/trailers"));
    counted.assert_status(200);
    assert_eq!(counted.json()["body_length"], upload.len(), "{counted:?}");
    // A client that offers only h2, to the HTTP/1.1-only server (the scripted client
    // sends its body in one go, so it stays inside HTTP/2's initial 64 KiB window).
    let text = "0123456789".repeat(6_000);
    let echoed = h2_client(
        &proxy,
        h1.port(Vhost::Tls13),
        "/echo",
        &["--data", text.as_str()],
    );
    assert_eq!(echoed["alpn"], "h2", "{echoed}");
    assert_eq!(echoed["status"], 200, "{echoed}");
    assert_eq!(echoed["body_length"], text.len(), "{echoed}");

    let flows = flows(&proxy, 4);
    for (path, server_version, size) in [
        ("/trailers", "HTTP/2.0", upload.len()),
        ("/echo", "HTTP/1.1", text.len()),
    ] {
        let flow = flows.iter().find(|f| f["request"]["path"] == path).unwrap();
        assert_eq!(flow["request"]["http_version"], "HTTP/2.0");
        assert_eq!(flow["response"]["http_version"], server_version);
        assert_eq!(flow["request"]["body"]["size"], size, "{path}");
        assert!(flow["error"].is_null(), "{flow}");
    }
}

#[test]
fn a_hundred_concurrent_streams_on_one_connection_each_become_a_flow() {
    let apache = h2_apache();
    let proxy = json_proxy(&[]);
    let url = apache.url(Vhost::Tls13, "/hello.txt");
    let mut curl = Curl::through(&proxy)
        .http2()
        .arg("--parallel")
        .arg("--parallel-max")
        .arg("100");
    for i in 0..99 {
        curl = curl.arg(format!("{url}?n={i}")).arg("-o").arg("/dev/null");
    }
    let result = curl.run(&format!("{url}?n=99"));
    assert_eq!(result.exit_code, 0, "{result:?}");
    let flows = flows(&proxy, 100);
    let client_connections: std::collections::HashSet<_> =
        flows.iter().map(|f| f["client"]["id"].as_u64()).collect();
    let server_connections: std::collections::HashSet<_> =
        flows.iter().map(|f| f["server"]["id"].as_u64()).collect();
    assert!(flows.iter().all(|f| f["response"]["status"] == 200));
    assert_eq!(client_connections.len(), 1, "one client connection");
    assert_eq!(
        server_connections.len(),
        1,
        "one multiplexed upstream connection"
    );
    // Each flow names its own stream on each connection: the client's are the 100
    // odd numbers it used, in whatever order the streams finished; the proxy's own
    // streams to the server are 100 distinct odd numbers too.
    let stream_ids = |side: &str| -> std::collections::BTreeSet<u64> {
        flows
            .iter()
            .map(|f| f[side]["stream_id"].as_u64().expect("an HTTP/2 stream id"))
            .collect()
    };
    let expected: std::collections::BTreeSet<u64> = (0..100).map(|i| 2 * i + 1).collect();
    assert_eq!(stream_ids("request"), expected);
    let server_streams = stream_ids("response");
    assert_eq!(server_streams.len(), 100, "{server_streams:?}");
    assert!(
        server_streams.iter().all(|id| id % 2 == 1),
        "{server_streams:?}"
    );
    // And a flow's stream is the one its request used: curl's n-th URL goes on stream
    // 2n+1 of the connection it multiplexes.
    for flow in &flows {
        let path = flow["request"]["path"].as_str().unwrap();
        let n: u64 = path.rsplit('=').next().unwrap().parse().unwrap();
        assert_eq!(flow["request"]["stream_id"], 2 * n + 1, "{path}");
    }
}

#[test]
fn an_http2_server_demanding_http1_for_a_client_certificate_path_is_retried_over_http1() {
    let apache = h2_apache();
    let pki = test_pki();
    let proxy = json_proxy(&["--client-certs", pki.client_pem.to_str().unwrap()]);
    let result = Curl::through(&proxy)
        .http2()
        .run(&apache.url(Vhost::Tls12, "/require/ok.txt"));
    result.assert_status(200);
    assert_eq!(result.body_text(), REQUIRE_BODY);
    assert_eq!(result.header("x-client-cert-cn"), Some(CLIENT_CN));
    let flow = &flows(&proxy, 1)[0];
    let notes: Vec<&str> = flow["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["entry"] == "note")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("HTTP_1_1_REQUIRED")),
        "the fallback is recorded: {flow}"
    );
    assert_eq!(flow["response"]["http_version"], "HTTP/1.1");
    // The host is remembered: the next request goes straight to HTTP/1.1.
    let again = Curl::through(&proxy)
        .http2()
        .run(&apache.url(Vhost::Tls12, "/require/ok.txt"));
    again.assert_status(200);
}

/// `VmRSS` or `VmHWM` (the peak) of a process, KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn a_slow_http2_reader_of_a_large_download_keeps_the_proxy_memory_bounded() {
    const SIZE: u64 = 200 * 1024 * 1024;
    let apache = h2_apache();
    // A sparse file: large on the wire, nothing on disk.
    let big = std::fs::File::create(apache.docroot().join("huge.bin")).unwrap();
    big.set_len(SIZE).unwrap();
    let proxy = json_proxy(&["--body-limit", "64KiB"]);
    // Warm up (CA, leaf certificate, upstream connection) before the baseline.
    Curl::through(&proxy)
        .http2()
        .run(&apache.url(Vhost::Tls13, "/hello.txt"))
        .assert_status(200);
    let baseline = memory_kib(proxy.pid(), "VmRSS:");
    // The client opens 2 GiB windows and reads at 2 MiB/s for 3 s, then drains: a
    // proxy that kept reading from Apache at loopback speed would hold most of the
    // file by the time the client speeds up.
    let output = std::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/h2_only_client.py"
        ))
        .args(["--proxy", &proxy.addr(), "--cacert"])
        .arg(proxy.ca_cert_path())
        .args(["--host", "localhost", "--port"])
        .arg(apache.port(Vhost::Tls13).to_string())
        .args(["--path", "/huge.bin", "--slow-seconds", "3"])
        .args(["--slow-rate", &(2 << 20).to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["alpn"], "h2");
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["body_length"], SIZE, "{answer}");
    let peak = memory_kib(proxy.pid(), "VmHWM:");
    eprintln!(
        "proxy RSS: {baseline} KiB before, peak {peak} KiB after a {} MiB slow download",
        SIZE >> 20
    );
    let flows = flows(&proxy, 2);
    let flow = &flows[1];
    assert_eq!(flow["request"]["path"], "/huge.bin");
    assert_eq!(flow["request"]["http_version"], "HTTP/2.0");
    assert_eq!(flow["server"]["tls"]["alpn"], "h2");
    assert_eq!(flow["response"]["http_version"], "HTTP/2.0");
    assert_eq!(flow["response"]["body"]["size"], SIZE);
    assert!(
        peak.saturating_sub(baseline) < 100 * 1024,
        "the proxy grew from {baseline} KiB to a peak of {peak} KiB"
    );
}

// ---------------------------------------------------------------------------------
// Trailers, RST_STREAM and GOAWAY from a scripted HTTP/2 origin
// ---------------------------------------------------------------------------------

/// One request with `tests/peers/h2_only_client.py` (HTTP/2 only on the client leg);
/// its JSON answer.
fn h2_client(proxy: &Periscope, port: u16, path: &str, extra: &[&str]) -> Value {
    let output = std::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/h2_only_client.py"
        ))
        .args(["--proxy", &proxy.addr(), "--cacert"])
        .arg(proxy.ca_cert_path())
        .args(["--host", "localhost", "--port", &port.to_string()])
        .args(["--path", path])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A recorded header list (`[{"name", "value"}]`) as `name: value` lines, sorted.
fn recorded_headers(headers: &Value) -> Vec<String> {
    let mut lines: Vec<String> = headers
        .as_array()
        .unwrap_or_else(|| panic!("not a header list: {headers}"))
        .iter()
        .map(|h| {
            format!(
                "{}: {}",
                h["name"].as_str().unwrap(),
                h["value"].as_str().unwrap()
            )
        })
        .collect();
    lines.sort();
    lines
}

fn localhost_url(port: u16, path: &str) -> String {
    format!("https://localhost:{port}{path}")
}

#[test]
fn http2_trailers_pass_both_ways_and_are_recorded() {
    let origin = h2_origin(&[]);
    let proxy = json_proxy(&[]);
    let answer = h2_client(
        &proxy,
        origin.port,
        "/trailers",
        &[
            "--data",
            "hello",
            "--trailer",
            "x-request-checksum=abc123",
            "--trailer",
            "x-client=periscope-test",
        ],
    );
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["reset"], Value::Null, "{answer}");
    let body = answer["body_text"].as_str().unwrap();
    let seen: Value = serde_json::from_str(body).unwrap();
    assert_eq!(seen["body_length"], 5, "{seen}");
    assert_eq!(
        seen["trailers"],
        serde_json::json!({"x-request-checksum": "abc123", "x-client": "periscope-test"}),
        "the request trailers reach the server: {seen}"
    );
    // gRPC servers refuse requests without it: the proxy relays trailers, so it may
    // pass the client's promise to accept them on.
    assert_eq!(seen["te"], "trailers", "{seen}");
    assert_eq!(
        answer["trailers"],
        serde_json::json!({"grpc-status": "0", "x-checksum": sha256_hex(body.as_bytes())}),
        "the response trailers reach the client: {answer}"
    );

    let flow = &flows(&proxy, 1)[0];
    assert_eq!(flow["error"], Value::Null, "{flow}");
    assert_eq!(
        recorded_headers(&flow["request"]["trailers"]),
        ["x-client: periscope-test", "x-request-checksum: abc123"],
        "{flow}"
    );
    assert_eq!(
        recorded_headers(&flow["response"]["trailers"]),
        [
            "grpc-status: 0".to_string(),
            format!("x-checksum: {}", sha256_hex(body.as_bytes()))
        ],
        "{flow}"
    );
    assert_eq!(flow["request"]["body"]["size"], 5);
}

#[test]
fn an_http1_client_gets_response_trailers_after_the_last_chunk() {
    let origin = h2_origin(&[]);
    let proxy = json_proxy(&[]);
    let result = Curl::through(&proxy)
        .http1_1()
        .header("TE: trailers")
        .run(&localhost_url(origin.port, "/trailers"));
    result.assert_status(200);
    assert_eq!(result.info["http_version"], "1.1");
    let checksum = format!("x-checksum: {}", sha256_hex(&result.body));
    // curl writes trailers to the -D file after the header block, as their own block.
    let after_head: Vec<String> = result
        .header_blocks
        .iter()
        .skip_while(|block| block.first().map(|(n, _)| n.as_str()) != Some(":status-line"))
        .skip(1)
        .flatten()
        .map(|(name, value)| format!("{}: {value}", name.to_ascii_lowercase()))
        .collect();
    assert!(
        after_head.contains(&"grpc-status: 0".to_string()) && after_head.contains(&checksum),
        "trailers after the chunked body: {:?}",
        result.header_blocks
    );
    assert_eq!(
        result.header("transfer-encoding").or_else(|| result
            .header_blocks
            .iter()
            .flatten()
            .find(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
            .map(|(_, v)| v.as_str())),
        Some("chunked")
    );
    let seen: Value = serde_json::from_slice(&result.body).unwrap();
    assert_eq!(seen["te"], "trailers", "{seen}");
    let flow = &flows(&proxy, 1)[0];
    assert_eq!(flow["response"]["http_version"], "HTTP/1.1");
    assert_eq!(
        recorded_headers(&flow["response"]["trailers"]),
        ["grpc-status: 0".to_string(), checksum],
        "{flow}"
    );
}

/// The flow error of the flow for `path`.
fn flow_error<'a>(flows: &'a [Value], path: &str) -> &'a Value {
    let flow = flows
        .iter()
        .find(|f| f["request"]["path"] == path)
        .unwrap_or_else(|| panic!("no flow for {path}: {flows:?}"));
    &flow["error"]
}

#[test]
fn an_http2_stream_reset_mid_body_is_a_flow_error_and_reaches_the_client() {
    let origin = h2_origin(&[]);
    let proxy = json_proxy(&[]);
    let answer = h2_client(&proxy, origin.port, "/rst-mid-body", &[]);
    // The reset can overtake the head and the first bytes: h2 drops a stream's queued
    // frames when it resets it, and the server's frames reach Periscope all at once.
    assert_eq!(
        answer["reset"], "INTERNAL_ERROR",
        "the client's stream is reset, not ended: {answer}"
    );
    assert!(answer["body_length"].as_u64().unwrap() <= 1000, "{answer}");

    // The proxy and the upstream connection still serve.
    let ok = h2_client(&proxy, origin.port, "/ok", &[]);
    assert_eq!(ok["status"], 200, "{ok}");
    assert_eq!(ok["body_text"], "ok\n");

    let flows = flows(&proxy, 2);
    let flow = flows
        .iter()
        .find(|f| f["request"]["path"] == "/rst-mid-body")
        .unwrap();
    let error = &flow["error"];
    assert_eq!(error["kind"], "upstream_protocol", "{flow}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(
            "the server's response body failed after 1000 bytes: stream reset by the peer \
             with RST_STREAM INTERNAL_ERROR"
        ),
        "the message names the reset: {message}"
    );
    assert_eq!(flow["response"]["status"], 200);
    assert_eq!(flow["response"]["body"]["size"], 1000, "{flow}");
    assert_eq!(flow_error(&flows, "/ok"), &Value::Null);
}

/// A retried request is sent twice but recorded once: its body is the one the
/// client sent, whole, not the bytes of both attempts.
#[test]
fn a_post_retried_after_a_goaway_is_recorded_with_its_body_once() {
    let origin = h2_origin(&[]);
    let proxy = json_proxy(&[]);
    let result = Curl::through(&proxy)
        .http2()
        .data("twelve bytes")
        .run(&localhost_url(origin.port, "/goaway-refuse-once"));
    result.assert_status(200);
    let flow = &flows(&proxy, 1)[0];
    assert_eq!(flow["request"]["body"]["size"], 12, "{flow}");
    assert_eq!(flow["request"]["body"]["truncated"], false, "{flow}");
    // base64 of "twelve bytes"
    assert_eq!(
        flow["request"]["body"]["content"], "dHdlbHZlIGJ5dGVz",
        "{flow}"
    );
}

#[test]
fn an_http2_goaway_refusing_a_request_is_retried_on_a_new_connection() {
    let origin = h2_origin(&[]);
    let proxy = json_proxy(&[]);
    let answer = h2_client(&proxy, origin.port, "/goaway-refuse-once", &[]);
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body_text"], "ok\n");
    let flows = flows(&proxy, 1);
    let flow = &flows[0];
    assert_eq!(flow["error"], Value::Null, "{flow}");
    let notes: Vec<&str> = flow["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["entry"] == "note")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("answered GOAWAY NO_ERROR without processing the request")),
        "the retry is recorded: {flow}"
    );
    // The origin's reader thread may lag behind the response: wait for the second line.
    let connections = || {
        origin
            .stdout
            .lines()
            .iter()
            .filter(|l| l.trim() == "connection")
            .count()
    };
    wait_until(Duration::from_secs(10), || connections() >= 2);
    assert_eq!(connections(), 2, "{:?}", origin.stdout.lines());
}

#[test]
fn an_http2_server_that_keeps_refusing_with_goaway_gets_a_502_that_says_so() {
    let origin = h2_origin(&[]);
    let proxy = json_proxy(&[]);
    let started = std::time::Instant::now();
    let result = Curl::through(&proxy)
        .http2()
        .max_time(Duration::from_secs(20))
        .run(&localhost_url(origin.port, "/goaway-refuse"));
    result.assert_status(502);
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");
    assert!(
        result
            .body_text()
            .contains("answered GOAWAY NO_ERROR without processing the request, after 3 attempts"),
        "the client is told why: {}",
        result.body_text()
    );
    let ok = h2_client(&proxy, origin.port, "/ok", &[]);
    assert_eq!(ok["status"], 200, "{ok}");
    let flows = flows(&proxy, 2);
    let error = flow_error(&flows, "/goaway-refuse");
    assert_eq!(error["kind"], "upstream_protocol", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("GOAWAY NO_ERROR"), "{message}");
    let connections = origin
        .stdout
        .lines()
        .iter()
        .filter(|l| l.trim() == "connection")
        .count();
    assert_eq!(
        connections, 4,
        "three attempts, then /ok on a fresh connection"
    );
}

/// A GOAWAY naming the stream lets it continue; the connection closing under it is what
/// fails it. (h2 keeps the GOAWAY's error code for the connection, not the stream, so
/// the flow cannot name it.)
#[test]
fn an_http2_connection_closed_by_goaway_mid_body_is_a_flow_error() {
    let origin = h2_origin(&[]);
    let proxy = json_proxy(&[]);
    let answer = h2_client(&proxy, origin.port, "/goaway-mid-body", &[]);
    assert!(
        answer["reset"].is_string(),
        "the client's stream is reset, not ended: {answer}"
    );
    let ok = h2_client(&proxy, origin.port, "/ok", &[]);
    assert_eq!(ok["status"], 200, "{ok}");
    let flows = flows(&proxy, 2);
    let error = flow_error(&flows, "/goaway-mid-body");
    assert_eq!(error["kind"], "upstream_protocol", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(
            "the server's response body failed after 1000 bytes: the HTTP/2 connection \
             closed before the stream ended"
        ),
        "{message}"
    );
}
