//! What other TLS stacks, a line-by-line review and hostile input found, each pinned
//! by a process-level test through the real `periscope` binary:
//!
//! | case | peer |
//! |---|---|
//! | a client that leaves before the response: the flow is stored with that error (dump, HAR) | `fault_origin.py` `/slow`, curl `--max-time` |
//! | an upload in one-byte chunks costs memory by bytes, not by frames | raw socket, `fault_origin.py` `/sink` |
//! | a paused `dump` reader holds a bounded amount of flows | `periscope dump --json` with an unread stdout |
//! | an HTTP/2 client's burst of requests leaves a bounded, timed pool of server connections | `h2c_client.py`, `ss` |
//! | a client that stops reading (HTTP/1.1, and an HTTP/2 window that never opens) and a server that stops reading end the exchange with a recorded error | raw sockets, `h2c_client.py --stall`, `/stop-reading` |
//! | a 431 reaches every client still sending a huge head (lingering close) | 20 raw sockets |
//! | a server that ignores ALPN and speaks HTTP/2 | `h2_origin.py --ignore-alpn`, `nghttpd` |
//! | TLS events land on the flow whose exchange they happened in | Apache `/vedauth` after a HEAD on the same connection |

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const WAIT: Duration = Duration::from_secs(20);

/// `periscope dump --json` trusting the test CA upstream, plus `extra`.
fn json_proxy(extra: &[&str]) -> Periscope {
    let ca = test_pki().ca_cert.to_string_lossy().into_owned();
    Periscope::builder()
        .args(["--json", "--upstream-trusted-ca", ca.as_str()])
        .args(extra)
        .start()
}

fn fault_origin() -> PythonPeer {
    PythonPeer::start("fault_origin.py", &[])
}

/// The first flow printed (from line `start` on) whose path starts with `prefix`.
#[track_caller]
fn flow_after(proxy: &Periscope, start: usize, prefix: &str) -> Value {
    let prefix = prefix.to_owned();
    let line = proxy.wait_for_stdout_after(
        start,
        move |line: &str| {
            serde_json::from_str::<Value>(line).is_ok_and(|flow| {
                flow["request"]["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&prefix))
            })
        },
        WAIT,
    );
    serde_json::from_str(&line).unwrap()
}

/// A field of /proc/PID/status in KiB (`VmRSS:`, `VmHWM:`).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Established TCP connections from `pid`'s sockets to `port`, by `ss`.
fn connections_to(port: u16) -> usize {
    let output = Command::new(require_tool("ss"))
        .args(["-tnH", "state", "established"])
        .arg(format!("( dport = :{port} )"))
        .output()
        .expect("ss");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Reads an HTTP/1.1 answer until the peer closes or `limit` passes.
fn read_until_close(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<String>) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (raw, None),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return (raw, Some(e.to_string())),
        }
    }
    (raw, Some("still open".into()))
}

fn status_of(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn h2c_client(
    proxy: &Periscope,
    origin_port: u16,
    args: &[&str],
) -> (std::process::Child, OutputLines) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/h2c_client.py");
    let mut child = Command::new(python())
        .arg("-u")
        .arg(script)
        .arg("--proxy")
        .arg(proxy.addr())
        .arg("--origin")
        .arg(format!("127.0.0.1:{origin_port}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("h2c_client.py");
    let lines = OutputLines::spawn(child.stdout.take().unwrap(), "h2c_client", true);
    (child, lines)
}

// ---------------------------------------------------------------------------------
// Nothing lost
// ---------------------------------------------------------------------------------

#[test]
fn a_client_that_leaves_before_the_response_is_stored_with_that_error_in_dump_and_har() {
    let origin = fault_origin();
    let session = tempfile::tempdir().unwrap();
    let file = session.path().join("session.db");
    let proxy = PeriscopeBuilder::new().arg("-w").arg(&file).start();
    let gone = Curl::through(&proxy)
        .max_time(Duration::from_millis(800))
        .run(&format!("http://127.0.0.1:{}/slow?ms=3000", origin.port));
    assert!(!gone.is_success(), "curl gave up: {gone:?}");
    let line = proxy.wait_for_stdout("/slow?ms=3000", WAIT);
    assert!(line.contains("GET http://127.0.0.1:"), "{line}");
    let error = proxy.wait_for_stdout("error: the client disconnected", WAIT);
    assert!(
        error.contains("after 0 bytes of the response")
            && error.contains("waited for the server's answer"),
        "{error}"
    );
    // The next client is served as usual.
    Curl::through(&proxy)
        .run(&format!("http://127.0.0.1:{}/ok", origin.port))
        .assert_status(200);
    let mut proxy = proxy;
    proxy.terminate(Duration::from_secs(5));

    let har = session.path().join("out.har");
    let export = Command::new(periscope_binary())
        .arg("export")
        .arg(&file)
        .arg("--har")
        .arg(&har)
        .output()
        .unwrap();
    assert!(export.status.success(), "{export:?}");
    let har: Value = serde_json::from_slice(&std::fs::read(&har).unwrap()).unwrap();
    let entry = har["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["request"]["url"].as_str().unwrap().contains("/slow"))
        .expect("the abandoned flow is in the HAR")
        .clone();
    assert_eq!(entry["_errorKind"], "client_disconnected", "{entry}");
    assert!(
        entry["_error"]
            .as_str()
            .unwrap()
            .starts_with("the client disconnected after 0 bytes of the response"),
        "{entry}"
    );
}

#[test]
fn an_http2_client_that_resets_its_stream_before_the_response_leaves_a_flow_with_that_error() {
    let origin = fault_origin();
    let proxy = json_proxy(&[]);
    let (mut client, lines) = h2c_client(
        &proxy,
        origin.port,
        &[
            "--path",
            "/slow?ms=3000",
            "--reset-after",
            "0.5",
            "--hold",
            "3",
        ],
    );
    lines
        .wait_for(&"sent RST_STREAM", WAIT)
        .expect("the client reset its stream");
    let flow = flow_after(&proxy, 0, "/slow");
    assert_eq!(flow["request"]["http_version"], "HTTP/2.0");
    assert_eq!(flow["error"]["kind"], "client_disconnected", "{flow}");
    assert!(
        flow["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the client disconnected after 0 bytes of the response"),
        "{flow}"
    );
    // Its connection is still open: the flow was ended by the stream's reset alone.
    assert!(lines
        .wait_for(&"closed", Duration::from_millis(10))
        .is_err());
    let _ = client.kill();
    let _ = client.wait();
}

// ---------------------------------------------------------------------------------
// Nothing unbounded
// ---------------------------------------------------------------------------------

#[test]
fn an_upload_in_one_byte_chunks_costs_memory_by_bytes_not_by_chunks() {
    const CHUNKS: usize = 2_000_000;
    let origin = fault_origin();
    let proxy = json_proxy(&[]);
    let before = memory_kib(proxy.pid(), "VmRSS:");
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    let head = format!(
        "POST http://127.0.0.1:{}/sink HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nTransfer-Encoding: chunked\r\n\r\n",
        origin.port, origin.port
    );
    stream.write_all(head.as_bytes()).unwrap();
    let block = b"1\r\nx\r\n".repeat(10_000);
    for _ in 0..CHUNKS / 10_000 {
        stream.write_all(&block).unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    // The last write returns while megabytes of one-byte chunks still sit in the
    // socket buffers; a debug build on two busy cores has taken over 20 s to parse
    // them (the flow completed, the test had stopped waiting).
    let (raw, _) = read_until_complete(&mut stream, Duration::from_secs(120));
    assert_eq!(
        status_of(&raw),
        Some(200),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let flow = flow_after(&proxy, 0, "/sink");
    assert_eq!(
        flow["request"]["body"]["size"], CHUNKS,
        "every byte counted"
    );
    let peak = memory_kib(proxy.pid(), "VmHWM:");
    let grew = peak.saturating_sub(before);
    // The body is 2 MB; one entry per chunk would be 2 million of them (64 MB of
    // slices alone, each pinning the read buffer it came in).
    assert!(
        grew < 32 * 1024,
        "peak RSS grew by {grew} KiB for a 2 MB body"
    );
}

/// The bytes of one response (its head and `Content-Length` body), waiting up to
/// `wait` for each read.
fn read_until_complete(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, Option<String>) {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                return (raw, None);
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return (raw, Some("closed".into())),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => return (raw, Some(e.to_string())),
        }
    }
}

#[test]
fn a_paused_dump_reader_holds_a_bounded_amount_of_flows() {
    const FLOWS: usize = 300;
    let origin = fault_origin();
    let confdir = tempfile::tempdir().unwrap();
    // stdout is a pipe nobody reads, as with a paused `periscope dump --json | less`.
    let mut child = Command::new(periscope_binary())
        .args([
            "dump",
            "--json",
            "--listen-host",
            "127.0.0.1",
            "-p",
            "0",
            "--confdir",
        ])
        .arg(confdir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _unread = child.stdout.take().unwrap();
    let stderr = OutputLines::spawn(child.stderr.take().unwrap(), "periscope stderr", true);
    let line = stderr.wait_for(&LISTENING_MARKER, WAIT).expect("listening");
    let port = parse_listening_port(&line).unwrap();
    let pid = child.id();
    let before = memory_kib(pid, "VmRSS:");
    // 300 responses of 1 MiB each, recorded whole: 300 MiB of flows for a printer
    // that cannot print the first one.
    let all = Curl::new()
        .proxy(format!("http://127.0.0.1:{port}"))
        .arg("-o")
        .arg("/dev/null")
        .run(&format!(
            "http://127.0.0.1:{}/big?size=1048576&n=[1-{FLOWS}]",
            origin.port
        ));
    assert_eq!(all.exit_code, 0, "{all:?}");
    // The store keeps up; what stays is the live feed's share.
    std::thread::sleep(Duration::from_secs(1));
    let after = memory_kib(pid, "VmRSS:");
    let grew = after.saturating_sub(before);
    let still = Curl::new()
        .proxy(format!("http://127.0.0.1:{port}"))
        .run(&format!("http://127.0.0.1:{}/ok", origin.port));
    let _ = child.kill();
    let _ = child.wait();
    still.assert_status(200);
    assert!(
        grew < 160 * 1024,
        "RSS grew by {grew} KiB while {FLOWS} flows of 1 MiB waited for a paused reader"
    );
}

#[test]
fn an_http2_clients_burst_leaves_a_bounded_pool_that_empties_after_the_idle_timeout() {
    const STREAMS: usize = 40;
    let origin = fault_origin();
    let proxy = json_proxy(&["--idle-timeout", "3s"]);
    let streams = STREAMS.to_string();
    let (mut client, lines) = h2c_client(
        &proxy,
        origin.port,
        &[
            "--parallel",
            &streams,
            "--path",
            "/slow?ms=700",
            "--hold",
            "12",
        ],
    );
    let done = lines
        .wait_for(&"responses ", WAIT)
        .expect("the burst was answered");
    assert!(
        done.starts_with(&format!("responses {STREAMS} 200")),
        "{done}"
    );
    let burst = origin
        .stdout
        .lines()
        .iter()
        .filter(|l| l.starts_with("connection from"))
        .count();
    assert!(
        burst >= STREAMS / 2,
        "the burst used {burst} server connections"
    );
    let answered = Instant::now();
    // The idle cap applies within one sweep (half the idle timeout)...
    assert!(
        wait_until(Duration::from_secs(3), || connections_to(origin.port) <= 16),
        "{} server connections stay pooled after the burst",
        connections_to(origin.port)
    );
    // ... and the rest go once idle for the timeout, while the client stays connected.
    assert!(
        wait_until(Duration::from_secs(8), || connections_to(origin.port) == 0),
        "{} pooled server connections left {:?} after the burst",
        connections_to(origin.port),
        answered.elapsed()
    );
    assert!(
        lines
            .wait_for(&"closed", Duration::from_millis(10))
            .is_err(),
        "the client was still connected"
    );
    let _ = client.kill();
    let _ = client.wait();
}

// ---------------------------------------------------------------------------------
// Peers that stop reading
// ---------------------------------------------------------------------------------

#[test]
fn a_client_that_stops_reading_a_download_ends_both_legs_after_the_idle_timeout() {
    let origin = fault_origin();
    let proxy = json_proxy(&["--idle-timeout", "2s"]);
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    // A live peer with a shut receive window: it never reads.
    let request = format!(
        "GET http://127.0.0.1:{}/big?size=500000000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        origin.port
    );
    stream.write_all(request.as_bytes()).unwrap();
    let started = Instant::now();
    let flow = flow_after(&proxy, 0, "/big");
    let took = started.elapsed();
    assert_eq!(flow["error"]["kind"], "timeout", "{flow}");
    assert!(
        flow["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the client stopped reading: no progress writing the response for 2 s"),
        "{flow}"
    );
    assert!(took < Duration::from_secs(12), "ended after {took:?}");
    // The server's connection is closed too: its send fails.
    origin
        .stdout
        .wait_for(&"send failed after", WAIT)
        .expect("the origin's connection was closed");
    drop(stream);
}

#[test]
fn an_http2_stream_whose_window_never_opens_is_reset_after_the_idle_timeout() {
    let origin = fault_origin();
    let proxy = json_proxy(&["--idle-timeout", "2s"]);
    let started = Instant::now();
    let (mut client, lines) = h2c_client(
        &proxy,
        origin.port,
        &["--stall", "--path", "/big?size=10000000", "--wait", "20"],
    );
    let outcome = lines
        .wait_for(
            &|l: &str| l.starts_with("reset") || l == "no reset",
            Duration::from_secs(25),
        )
        .unwrap();
    assert_eq!(outcome, "reset CANCEL");
    assert!(started.elapsed() < Duration::from_secs(15));
    let flow = flow_after(&proxy, 0, "/big");
    assert_eq!(flow["error"]["kind"], "timeout", "{flow}");
    assert!(
        flow["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the client stopped reading"),
        "{flow}"
    );
    let _ = client.kill();
    let _ = client.wait();
}

#[test]
fn a_server_that_stops_reading_an_upload_is_a_gateway_error_that_says_so() {
    let origin = fault_origin();
    let proxy = json_proxy(&["--idle-timeout", "2s"]);
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    let size: usize = 300 * 1024 * 1024;
    let head = format!(
        "POST http://127.0.0.1:{}/stop-reading HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n\r\n",
        origin.port
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let upload = std::thread::spawn(move || {
        let block = vec![b'u'; 1 << 20];
        for _ in 0..size / block.len() {
            if writer.write_all(&block).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let (raw, _) = read_until_close(&mut stream, WAIT);
    let text = String::from_utf8_lossy(&raw);
    assert!(matches!(status_of(&raw), Some(502) | Some(504)), "{text}");
    assert!(text.contains("the server stopped reading"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(12));
    drop(stream);
    let _ = upload.join();
    let flow = flow_after(&proxy, 0, "/stop-reading");
    assert!(
        flow["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the server stopped reading"),
        "{flow}"
    );
}

// ---------------------------------------------------------------------------------
// Error responses reach the client
// ---------------------------------------------------------------------------------

#[test]
fn twenty_clients_sending_a_megabyte_of_headers_each_read_their_431() {
    let origin = fault_origin();
    let proxy = json_proxy(&[]);
    let target = format!("http://127.0.0.1:{}/ok", origin.port);
    assert_twenty_clients_read_their_431(&proxy.addr(), &target);
    Curl::through(&proxy).run(&target).assert_status(200);
}

/// The lingering close is the client socket's, whatever the listener's mode: a reverse
/// listener's clients read their 431 as the regular listener's do.
#[test]
fn a_reverse_listeners_clients_sending_a_megabyte_of_headers_read_their_431() {
    let origin = fault_origin();
    let mode = format!("reverse:http://127.0.0.1:{}@0", origin.port);
    let proxy = json_proxy(&["--mode", &mode]);
    let listener = proxy.listener("reverse:");
    assert_twenty_clients_read_their_431(&listener.to_string(), "/ok");
    Curl::new()
        .run(&format!("http://127.0.0.1:{}/ok", listener.port()))
        .assert_status(200);
}

/// Twenty clients at once each send `GET target` with a megabyte of headers to
/// `address`; every one must have written it all and read a 431.
fn assert_twenty_clients_read_their_431(address: &str, target: &str) {
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let (address, target) = (address.to_owned(), target.to_owned());
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(&address).unwrap();
                stream
                    .set_write_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                // Small buffers, as across a real network: the head cannot sit in the
                // kernels' buffers whole, so the client is still sending when the
                // proxy answers and closes.
                rustix::net::sockopt::set_socket_send_buffer_size(&stream, 16 * 1024).unwrap();
                let mut head = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
                let line = format!("X-Filler: {}\r\n", "f".repeat(1000));
                while head.len() < 1024 * 1024 {
                    head.extend_from_slice(line.as_bytes());
                }
                head.extend_from_slice(b"\r\n");
                // The proxy answers long before the head is all sent. A client such
                // as curl stops at a failed write and never reads the answer, so the
                // whole head must be taken (and discarded) before the close.
                let written = stream.write_all(&head).map_err(|e| e.to_string());
                let (raw, error) = read_until_close(&mut stream, Duration::from_secs(10));
                (written, status_of(&raw), error)
            })
        })
        .collect();
    let outcomes: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let answered = outcomes
        .iter()
        .filter(|(written, status, _)| written.is_ok() && *status == Some(431))
        .count();
    assert_eq!(answered, 20, "{outcomes:?}");
}

// ---------------------------------------------------------------------------------
// HTTP/2 servers that ignore ALPN
// ---------------------------------------------------------------------------------

#[test]
fn an_http2_server_that_ignores_alpn_and_sends_its_preface_is_spoken_to_in_http2() {
    let origin = h2_origin(&["--ignore-alpn"]);
    let direct = Curl::new()
        .cacert(&test_pki().ca_cert)
        .http1_1()
        .run(&format!("https://localhost:{}/ok", origin.port));
    assert!(
        !direct.is_success(),
        "the server really speaks only HTTP/2: {direct:?}"
    );
    let proxy = json_proxy(&[]);
    for _ in 0..2 {
        let through = Curl::through(&proxy)
            .cacert(proxy.ca_cert_path())
            .http1_1()
            .run(&format!("https://localhost:{}/ok", origin.port));
        through.assert_status(200);
        assert_eq!(through.body_text(), "ok\n");
    }
    let first = flow_after(&proxy, 0, "/ok");
    assert_eq!(first["request"]["http_version"], "HTTP/1.1");
    assert_eq!(first["response"]["http_version"], "HTTP/2.0", "{first}");
    let timeline = first["timeline"].to_string();
    assert!(timeline.contains("HTTP/2 connection preface"), "{timeline}");
}

#[test]
fn nghttpd_which_closes_clients_that_do_not_offer_h2_is_offered_h2_and_answers() {
    let nghttpd = require_tool("nghttpd");
    let pki = test_pki();
    let docroot = tempfile::tempdir().unwrap();
    std::fs::write(docroot.path().join("hello.txt"), "hello from nghttpd\n").unwrap();
    let port = free_port();
    let mut server = Command::new(nghttpd)
        .arg("-d")
        .arg(docroot.path())
        .arg(port.to_string())
        .arg(&pki.server_key)
        .arg(&pki.server_cert)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(WAIT, || TcpStream::connect(("127.0.0.1", port)).is_ok()),
        "nghttpd did not start"
    );
    let url = format!("https://localhost:{port}/hello.txt");
    let direct = Curl::new().cacert(&pki.ca_cert).http1_1().run(&url);
    assert!(
        !direct.is_success(),
        "nghttpd refuses HTTP/1.1 clients: {direct:?}"
    );
    let proxy = json_proxy(&[]);
    let through = Curl::through(&proxy)
        .cacert(proxy.ca_cert_path())
        .http1_1()
        .run(&url);
    let _ = server.kill();
    let _ = server.wait();
    through.assert_status(200);
    assert_eq!(through.body_text(), "hello from nghttpd\n");
    let flow = flow_after(&proxy, 0, "/hello.txt");
    assert_eq!(flow["response"]["http_version"], "HTTP/2.0", "{flow}");
}

// ---------------------------------------------------------------------------------
// TLS events on the flow that caused them
// ---------------------------------------------------------------------------------

/// One request on a kept-alive connection; the status of its answer. A HEAD answer
/// has a Content-Length but no body.
fn keep_alive(client: &mut TlsClient, method: &str, path: &str) -> u16 {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    client.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let body = if method == "HEAD" { 0 } else { length };
            if raw.len() >= end + 4 + body {
                return status_of(&raw).unwrap_or(0);
            }
        }
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return status_of(&raw).unwrap_or(0),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn tls_events_land_on_the_flow_whose_exchange_caused_them_not_the_one_before() {
    let apache = Apache::start();
    let proxy = json_proxy(&[]);
    let mut client = TlsClient::builder()
        .via_proxy(&proxy.addr())
        .cafile(proxy.ca_cert_path())
        .read_timeout(Duration::from_secs(30))
        .connect(&format!("localhost:{}", apache.port(Vhost::Tls12)));
    // A HEAD answer has no body, so nothing the client reads ends its flow: the flow
    // must still let go of the connection's events when its exchange is over.
    assert_eq!(keep_alive(&mut client, "HEAD", "/hello.txt"), 200);
    assert_eq!(keep_alive(&mut client, "GET", "/vedauth/ok.txt"), 200);
    let head = flow_after(&proxy, 0, "/hello.txt");
    let renegotiated = flow_after(&proxy, 0, "/vedauth/ok.txt");
    assert_eq!(
        head["server"]["id"], renegotiated["server"]["id"],
        "both went on one server connection"
    );
    let tls_events = |flow: &Value| -> Vec<String> {
        flow["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["entry"] == "tls")
            .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert!(tls_events(&head).is_empty(), "{head}");
    let events = tls_events(&renegotiated);
    assert!(
        events.contains(&"renegotiation_started".to_owned())
            && events.contains(&"certificate_requested".to_owned())
            && events.contains(&"renegotiation_completed".to_owned()),
        "{events:?}"
    );
}
