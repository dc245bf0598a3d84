//! Faults, bad input and hostile peers on both legs: the proxy answers with a clear
//! error or closes the connection, records a flow error where a flow exists, logs a
//! line where none does — and serves the next normal request as if nothing happened.
//!
//! The misbehaving peers are real sockets: `tests/peers/fault_origin.py` (a scripted
//! raw-TCP / TLS origin whose behaviour is picked by request path or `--mode`), raw
//! client sockets written here, curl, `openssl s_server`, and OpenSSL clients that
//! stop halfway. Every test ends by checking that a normal request still works.
//!
//! Cases covered elsewhere and not repeated here: closed port and silent server
//! (tests/proxy_core.rs), untrusted and expired certificates (proxy_core.rs), a
//! renegotiation the server never completes (tests/renegotiation.rs, IIS `stall` mode).

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// `--idle-timeout` and `--handshake-timeout` of the proxies here, so the timeout
/// cases take seconds.
const SHORT_TIMEOUT: &str = "2s";
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------
// Peers and helpers
// ---------------------------------------------------------------------------------

/// `tests/peers/fault_origin.py` speaking plain HTTP; the path picks the behaviour.
fn origin() -> PythonPeer {
    PythonPeer::start("fault_origin.py", &[])
}

/// The same origin behind TLS with the test PKI's `localhost` certificate.
fn tls_origin() -> PythonPeer {
    let pki = test_pki();
    let cert = pki.server_cert.to_string_lossy().into_owned();
    let key = pki.server_key.to_string_lossy().into_owned();
    PythonPeer::start(
        "fault_origin.py",
        &["--tls", "--cert", cert.as_str(), "--key", key.as_str()],
    )
}

/// An origin with a connection-level `--mode` (stall-handshake, alert, ...).
fn origin_in_mode(mode: &str, extra: &[&str]) -> PythonPeer {
    let mut args = vec!["--mode", mode];
    args.extend_from_slice(extra);
    PythonPeer::start("fault_origin.py", &args)
}

/// `periscope dump --json` trusting the test CA upstream, with 2 s idle and handshake
/// timeouts.
fn proxy(extra: &[&str]) -> Periscope {
    proxy_builder(extra).start()
}

fn proxy_builder(extra: &[&str]) -> PeriscopeBuilder {
    let ca = test_pki().ca_cert.to_string_lossy().into_owned();
    Periscope::builder()
        .args([
            "--json",
            "--upstream-trusted-ca",
            ca.as_str(),
            "--idle-timeout",
            SHORT_TIMEOUT,
            "--handshake-timeout",
            SHORT_TIMEOUT,
        ])
        .args(extra)
}

/// Lines the origin printed as `request: METHOD TARGET VERSION`.
fn requests_seen(origin: &PythonPeer) -> Vec<String> {
    origin
        .stdout
        .lines()
        .into_iter()
        .filter_map(|l| l.strip_prefix("request: ").map(str::to_owned))
        .collect()
}

/// A plain GET through the proxy to the origin's `/ok` works.
#[track_caller]
fn assert_still_serves(proxy: &Periscope, origin: &PythonPeer) {
    let result = Curl::through(proxy)
        .max_time(Duration::from_secs(10))
        .run(&format!("http://127.0.0.1:{}/ok", origin.port));
    result.assert_status(200);
    assert_eq!(result.body_text(), "ok\n", "{result:?}");
}

/// An HTTPS GET through the proxy (CONNECT, intercepted) to a TLS origin's `/ok` works.
#[track_caller]
fn assert_still_serves_https(proxy: &Periscope, tls_origin: &PythonPeer) {
    let result = Curl::through(proxy)
        .max_time(Duration::from_secs(10))
        .run(&format!("https://localhost:{}/ok", tls_origin.port));
    result.assert_status(200);
    assert_eq!(result.body_text(), "ok\n", "{result:?}");
}

/// What came back on a raw connection.
struct Answer {
    raw: Vec<u8>,
    /// The proxy closed the connection (EOF or reset) — before the idle timeout.
    closed: bool,
    elapsed: Duration,
}

impl Answer {
    fn head(&self) -> String {
        let end = find(&self.raw, b"\r\n\r\n").map_or(self.raw.len(), |p| p + 4);
        String::from_utf8_lossy(&self.raw[..end]).into_owned()
    }

    fn body(&self) -> &[u8] {
        find(&self.raw, b"\r\n\r\n").map_or(&[][..], |p| &self.raw[p + 4..])
    }

    fn status(&self) -> Option<u16> {
        let head = self.head();
        let mut words = head.split_whitespace();
        let version = words.next()?;
        if !version.starts_with("HTTP/") {
            return None;
        }
        words.next()?.parse().ok()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head().lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// Head and body are all there (by Content-Length; chunked: by its last chunk).
    fn complete(&self) -> bool {
        let Some(start) = find(&self.raw, b"\r\n\r\n").map(|p| p + 4) else {
            return false;
        };
        let body = &self.raw[start..];
        if let Some(length) = self.header("content-length") {
            return length.parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if self
            .header("transfer-encoding")
            .is_some_and(|te| te.contains("chunked"))
        {
            return body.ends_with(b"0\r\n\r\n");
        }
        false
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.raw.len().min(800);
        f.debug_struct("Answer")
            .field("closed", &self.closed)
            .field("elapsed", &self.elapsed)
            .field("raw", &String::from_utf8_lossy(&self.raw[..shown]))
            .finish()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `data` on a new connection to the proxy and reads until the proxy closes the
/// connection, or a complete response has arrived and 300 ms passed without more, or
/// `limit` passed. `closed` tells whether the proxy closed it.
fn send_raw(proxy: &Periscope, data: &[u8], limit: Duration) -> Answer {
    let mut stream = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
    let start = Instant::now();
    // The proxy may answer and close before reading everything: a failed write is
    // fine, the answer is what counts.
    let _ = stream.write_all(data);
    read_answer(&mut stream, start, limit)
}

fn read_answer(stream: &mut TcpStream, start: Instant, limit: Duration) -> Answer {
    let mut answer = Answer {
        raw: Vec::new(),
        closed: false,
        elapsed: Duration::ZERO,
    };
    let mut buffer = [0u8; 65536];
    let mut complete_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= start + limit {
            break;
        }
        if complete_at.is_some_and(|at| now >= at + Duration::from_millis(300)) {
            break;
        }
        let slice = Duration::from_millis(50).min(start + limit - now);
        stream.set_read_timeout(Some(slice)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => {
                answer.closed = true;
                break;
            }
            Ok(n) => {
                answer.raw.extend_from_slice(&buffer[..n]);
                if complete_at.is_none() && answer.complete() {
                    complete_at = Some(Instant::now());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                answer.closed = true;
                break;
            }
        }
    }
    answer.elapsed = start.elapsed();
    answer
}

/// The first flow printed from line `start` on whose request path starts with
/// `path_prefix` (or whose method is CONNECT and host:port matches, for `CONNECT x`).
fn flow_after(proxy: &Periscope, start: usize, path_prefix: &str) -> Value {
    let prefix = path_prefix.to_owned();
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

/// Waits for a stderr line containing all of `words`, among lines from `start` on.
#[track_caller]
fn wait_log(proxy: &Periscope, start: usize, words: &[&str]) -> String {
    let wanted: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
    proxy
        .stderr()
        .wait_for_after(
            start,
            &move |line: &str| wanted.iter().all(|w| line.contains(w.as_str())),
            WAIT,
        )
        .unwrap_or_else(|e| {
            panic!(
                "no stderr line with {words:?} ({e:?})\n{}",
                proxy.describe()
            )
        })
}

/// A complete ClientHello as OpenSSL sends it (SNI `localhost`, ALPN http/1.1),
/// captured on a local socket.
fn real_client_hello() -> Vec<u8> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
        builder.set_verify(SslVerifyMode::NONE);
        builder.set_alpn_protos(b"\x08http/1.1").unwrap();
        let stream = TcpStream::connect(address).unwrap();
        // Fails once the listener side closes; only the hello matters.
        let _ = builder.build().connect("localhost", stream);
    });
    let (mut server, _) = listener.accept().unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut hello = Vec::new();
    let mut buffer = [0u8; 16384];
    while !matches!(periscope_proxy::parse_client_hello(&hello), Ok(Some(_))) {
        let n = server.read(&mut buffer).expect("read the ClientHello");
        assert!(n > 0, "the client closed before its ClientHello");
        hello.extend_from_slice(&buffer[..n]);
    }
    drop(server);
    client.join().unwrap();
    hello
}

/// A CONNECT tunnel through the proxy to `localhost:port`, right after its `200`.
fn open_tunnel(proxy: &Periscope, port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    write!(
        stream,
        "CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Byte by byte up to the blank line: nothing of the tunnel may be read here.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "no CONNECT answer ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Reads from `stream` until the peer closes it or `limit` passes; returns when it
/// closed (None: still open at the limit) and the bytes received.
fn wait_closed(stream: &mut TcpStream, limit: Duration) -> (Option<Duration>, Vec<u8>) {
    let answer = read_answer_until_close(stream, limit);
    (answer.closed.then_some(answer.elapsed), answer.raw)
}

fn read_answer_until_close(stream: &mut TcpStream, limit: Duration) -> Answer {
    let start = Instant::now();
    let mut answer = Answer {
        raw: Vec::new(),
        closed: false,
        elapsed: Duration::ZERO,
    };
    let mut buffer = [0u8; 65536];
    while start.elapsed() < limit {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => {
                answer.closed = true;
                break;
            }
            Ok(n) => answer.raw.extend_from_slice(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                answer.closed = true;
                break;
            }
        }
    }
    answer.elapsed = start.elapsed();
    answer
}

// ---------------------------------------------------------------------------------
// Bad input from clients
// ---------------------------------------------------------------------------------

mod client_input {
    use super::*;

    /// Each shape is answered 400 on the spot, the connection is closed, nothing reaches
    /// the origin, and the proxy logs why.
    #[test]
    fn malformed_request_lines_and_headers_get_400_and_a_closed_connection() {
        let origin = origin();
        let proxy = proxy(&[]);
        let target = format!("http://127.0.0.1:{}/echo-head", origin.port);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "bad characters in the method",
                format!("G@T {target} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            ),
            (
                "no HTTP version",
                format!("GET {target}\r\nHost: x\r\n\r\n").into_bytes(),
            ),
            (
                "unknown HTTP version",
                format!("GET {target} HTTP/9.9\r\nHost: x\r\n\r\n").into_bytes(),
            ),
            (
                "a space inside the target",
                format!("GET {target}/a b HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            ),
            (
                "a control character inside the target",
                format!("GET {target}/a\x01b HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            ),
            (
                "obs-fold (a header continued on the next line)",
                format!("GET {target} HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n")
                    .into_bytes(),
            ),
            (
                "NUL in a header value",
                format!("GET {target} HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n").into_bytes(),
            ),
            (
                "a header line without a colon",
                format!("GET {target} HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n").into_bytes(),
            ),
            (
                "whitespace between the header name and the colon",
                format!("GET {target} HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n").into_bytes(),
            ),
            (
                "a negative Content-Length",
                format!("POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello")
                    .into_bytes(),
            ),
            (
                "a Content-Length with a sign",
                format!("POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello")
                    .into_bytes(),
            ),
            (
                "Transfer-Encoding in an HTTP/1.0 request",
                format!(
                    "POST {target} HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                )
                .into_bytes(),
            ),
            (
                "whitespace before the colon of Transfer-Encoding",
                format!(
                    "POST {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"
                )
                .into_bytes(),
            ),
            ("an HTTP/0.9 request", b"GET /\r\n\r\n".to_vec()),
        ];
        for (what, request) in &cases {
            let logged = proxy.stderr().len();
            let answer = send_raw(&proxy, request, Duration::from_secs(5));
            assert_eq!(answer.status(), Some(400), "{what}: {answer:?}");
            assert!(
                answer.closed && answer.elapsed < Duration::from_millis(1500),
                "{what}: the connection is closed after the 400: {answer:?}"
            );
            wait_log(&proxy, logged, &["invalid HTTP request"]);
        }
        assert!(
            requests_seen(&origin).is_empty(),
            "nothing reached the origin: {:?}",
            requests_seen(&origin)
        );
        assert_still_serves(&proxy, &origin);
    }

    #[test]
    fn request_heads_over_the_limit_get_431_and_those_under_it_pass() {
        let origin = origin();
        let proxy = proxy(&[]);
        let target = format!("http://127.0.0.1:{}/ok", origin.port);
        let mut too_many = format!("GET {target} HTTP/1.1\r\nHost: x\r\n");
        for i in 0..200 {
            too_many.push_str(&format!("X-Header-{i}: v\r\n"));
        }
        too_many.push_str("\r\n");
        let huge = format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(70 * 1024)
        );
        for (what, request) in [("200 header lines", too_many), ("a 70 KiB header", huge)] {
            let logged = proxy.stderr().len();
            let answer = send_raw(&proxy, request.as_bytes(), Duration::from_secs(5));
            assert_eq!(answer.status(), Some(431), "{what}: {answer:?}");
            assert!(answer.closed, "{what}: closed after the 431: {answer:?}");
            wait_log(&proxy, logged, &["too large"]);
        }
        assert!(
            requests_seen(&origin).is_empty(),
            "{:?}",
            requests_seen(&origin)
        );

        // Big but legal heads still pass.
        let big = format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(60 * 1024)
        );
        let answer = send_raw(&proxy, big.as_bytes(), Duration::from_secs(5));
        assert_eq!(
            answer.status(),
            Some(200),
            "a 60 KiB header passes: {answer:?}"
        );
        let mut ninety = format!("GET {target} HTTP/1.1\r\nHost: x\r\n");
        for i in 0..90 {
            ninety.push_str(&format!("X-Header-{i}: v\r\n"));
        }
        ninety.push_str("\r\n");
        let answer = send_raw(&proxy, ninety.as_bytes(), Duration::from_secs(5));
        assert_eq!(
            answer.status(),
            Some(200),
            "90 header lines pass: {answer:?}"
        );
        assert_still_serves(&proxy, &origin);
    }

    /// The log says what the client got (it once read "answered 400" after a 431).
    #[test]
    fn the_log_line_for_an_oversized_request_head_names_the_431_it_answered() {
        let proxy = proxy(&[]);
        let request = format!(
            "GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(70 * 1024)
        );
        let answer = send_raw(&proxy, request.as_bytes(), Duration::from_secs(5));
        assert_eq!(answer.status(), Some(431), "{answer:?}");
        let line = wait_log(&proxy, 0, &["too large"]);
        assert!(
            line.contains("431") && !line.contains("answered 400"),
            "the log line names the status sent (431): {line}"
        );
    }

    /// RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; the message is read
    /// as chunked and the connection closed after it. What the origin gets must be
    /// unambiguous (chunked only), and bytes after the chunked body — a smuggled second
    /// request — must never be forwarded.
    #[test]
    fn content_length_with_transfer_encoding_is_never_forwarded_ambiguously() {
        let origin = origin();
        let proxy = proxy(&[]);
        let printed = proxy.stdout().len();
        let request = format!(
            "POST http://127.0.0.1:{port}/echo-head HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
             GET http://127.0.0.1:{port}/smuggled HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n",
            port = origin.port
        );
        let answer = send_raw(&proxy, request.as_bytes(), Duration::from_secs(5));
        match answer.status() {
            Some(400) => {}
            Some(200) => {
                let forwarded = String::from_utf8_lossy(answer.body()).to_ascii_lowercase();
                assert!(
                    forwarded.contains("transfer-encoding: chunked")
                        && !forwarded.contains("content-length"),
                    "forwarded with one framing only: {forwarded}"
                );
                assert!(
                    answer.closed,
                    "the client connection is closed after a CL+TE request: {answer:?}"
                );
                let flow = flow_after(&proxy, printed, "/echo-head");
                assert_eq!(flow["response"]["status"], 200);
            }
            other => panic!("expected 400 or the request forwarded chunked, got {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(300));
        let seen = requests_seen(&origin);
        assert!(
            seen.iter().all(|r| !r.contains("smuggled")),
            "the smuggled request reached the origin: {seen:?}"
        );
        assert_still_serves(&proxy, &origin);
    }

    #[test]
    fn transfer_encodings_other_than_chunked_are_refused_and_not_forwarded() {
        let origin = origin();
        let proxy = proxy(&[]);
        let target = format!("http://127.0.0.1:{}/drain", origin.port);
        for coding in ["gzip, chunked", "chunked, chunked", "deflate", "identity"] {
            let printed = proxy.stdout().len();
            let request = format!(
                "POST {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {coding}\r\n\r\n0\r\n\r\n"
            );
            let answer = send_raw(&proxy, request.as_bytes(), Duration::from_secs(5));
            let status = answer.status();
            assert!(
                matches!(status, Some(400 | 501)),
                "Transfer-Encoding: {coding}: {answer:?}"
            );
            assert!(answer.closed, "{coding}: connection closed: {answer:?}");
            if status == Some(501) {
                // Periscope's own refusal: explained, and recorded as a flow.
                assert!(
                    answer.text().contains("Transfer-Encoding"),
                    "{coding}: {answer:?}"
                );
                assert_eq!(answer.header("x-periscope-error").as_deref(), Some("1"));
                let flow = flow_after(&proxy, printed, "/drain");
                assert_eq!(flow["error"]["kind"], "bad_request", "{flow}");
                assert_eq!(flow["response"]["status"], 501, "{flow}");
            }
        }
        assert!(
            requests_seen(&origin).is_empty(),
            "{:?}",
            requests_seen(&origin)
        );
        assert_still_serves(&proxy, &origin);
    }

    #[test]
    fn conflicting_content_lengths_get_400_and_identical_ones_are_forwarded_once() {
        let origin = origin();
        let proxy = proxy(&[]);
        let target = format!("http://127.0.0.1:{}/echo-head", origin.port);
        for (what, headers) in [
            (
                "two different",
                "Content-Length: 5\r\nContent-Length: 6\r\n",
            ),
            ("a list of two", "Content-Length: 5, 6\r\n"),
        ] {
            let request = format!("POST {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\nhello!");
            let answer = send_raw(&proxy, request.as_bytes(), Duration::from_secs(5));
            assert_eq!(answer.status(), Some(400), "{what}: {answer:?}");
            assert!(answer.closed, "{what}: {answer:?}");
        }
        assert!(
            requests_seen(&origin).is_empty(),
            "{:?}",
            requests_seen(&origin)
        );

        let request = format!(
            "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
        );
        let answer = send_raw(&proxy, request.as_bytes(), Duration::from_secs(5));
        assert_eq!(answer.status(), Some(200), "{answer:?}");
        let forwarded = String::from_utf8_lossy(answer.body()).to_ascii_lowercase();
        assert_eq!(
            str::matches(forwarded.as_str(), "content-length").count(),
            1,
            "one Content-Length upstream: {forwarded}"
        );
        assert_still_serves(&proxy, &origin);
    }

    /// RFC 9112 §3.2: a request with more than one Host line gets 400; forwarding
    /// one of them would let the origin and anything that logged the request disagree
    /// on the host.
    #[test]
    fn two_host_headers_get_400() {
        let origin = origin();
        let proxy = proxy(&[]);
        let request = format!(
            "GET http://127.0.0.1:{}/echo-head HTTP/1.1\r\nHost: one.example\r\nHost: two.example\r\n\r\n",
            origin.port
        );
        let answer = send_raw(&proxy, request.as_bytes(), Duration::from_secs(5));
        assert_eq!(answer.status(), Some(400), "{answer:?}");
        assert!(
            requests_seen(&origin).is_empty(),
            "{:?}",
            requests_seen(&origin)
        );
        assert_still_serves(&proxy, &origin);
    }

    /// A request body the client breaks is the client's fault: 400 for an invalid
    /// chunk (not a 502 blaming the server), and the flow records the answer the
    /// client got.
    #[test]
    fn a_malformed_chunked_request_body_is_a_400_not_a_502() {
        let origin = origin();
        let proxy = proxy(&[]);
        let printed = proxy.stdout().len();
        let request = format!(
            "POST http://127.0.0.1:{}/drain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
             zz\r\nhello\r\n0\r\n\r\n",
            origin.port
        );
        let answer = send_raw(&proxy, request.as_bytes(), Duration::from_secs(5));
        let flow = flow_after(&proxy, printed, "/drain");
        assert_eq!(answer.status(), Some(400), "{answer:?}\nflow: {flow}");
        assert_eq!(flow["error"]["kind"], "bad_request", "{flow}");
        assert_eq!(
            flow["response"]["status"], 400,
            "the flow records what the client got: {flow}"
        );
        assert_still_serves(&proxy, &origin);
    }

    /// A client that stops sending its body: after --idle-timeout the flow has a
    /// timeout error and the client a 408 (its request timed out, not the server).
    #[test]
    fn a_request_body_that_stalls_is_a_408_after_the_idle_timeout() {
        let origin = origin();
        let proxy = proxy(&[]);
        let printed = proxy.stdout().len();
        let request = format!(
            "POST http://127.0.0.1:{}/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
            origin.port
        );
        let answer = send_raw(&proxy, request.as_bytes(), Duration::from_secs(8));
        let flow = flow_after(&proxy, printed, "/drain");
        assert!(
            answer.elapsed >= Duration::from_millis(1500),
            "waited for the idle timeout: {answer:?}"
        );
        assert_eq!(flow["error"]["kind"], "timeout", "{flow}");
        assert!(
            flow["error"]["message"]
                .as_str()
                .unwrap()
                .contains("request body stalled"),
            "{flow}"
        );
        assert_eq!(answer.status(), Some(408), "{answer:?}\nflow: {flow}");
        assert_eq!(flow["response"]["status"], 408, "{flow}");
        assert_still_serves(&proxy, &origin);
    }

    #[test]
    fn invalid_connect_targets_get_400() {
        let origin = origin();
        let proxy = proxy(&[]);
        for target in [
            "example.com",
            "::1:443",
            "%%%:443",
            "exa mple.com:443",
            ":443",
            "127.0.0.1:99999",
            "127.0.0.1:http",
            "[::1]",
            "[::1:443",
            "127.0.0.1:-1",
        ] {
            let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
            let answer = send_raw(&proxy, request.as_bytes(), Duration::from_secs(3));
            assert_eq!(answer.status(), Some(400), "CONNECT {target}: {answer:?}");
        }
        assert!(requests_seen(&origin).is_empty());
        assert_still_serves(&proxy, &origin);
    }

    /// Port 0 is not a target, whatever port the proxy listens on — also with `-p 0`,
    /// where a loop check against the configured port would answer 508.
    #[test]
    fn connect_to_port_zero_is_an_invalid_target_not_a_loop() {
        let proxy = proxy(&[]);
        let answer = send_raw(
            &proxy,
            b"CONNECT 127.0.0.1:0 HTTP/1.1\r\nHost: 127.0.0.1:0\r\n\r\n",
            Duration::from_secs(3),
        );
        assert_eq!(answer.status(), Some(400), "{answer:?}");
    }

    /// A CONNECT target is authority-form: `host:port` and nothing else (RFC 9112
    /// §3.2.3), and brackets hold an IPv6 address (RFC 3986 IP-literal). Userinfo
    /// (`user@host:port`), an absolute URL (`http://host:port/`) and a bracketed name
    /// (`[localhost]:port`, found by the connect_authority fuzz target) were once
    /// tunnelled with the extra parts dropped silently.
    #[test]
    fn connect_targets_that_are_not_plain_host_port_are_refused() {
        let origin = origin();
        let proxy = proxy(&[]);
        for target in [
            format!("user@127.0.0.1:{}", origin.port),
            format!("http://127.0.0.1:{}/", origin.port),
            format!("[localhost]:{}", origin.port),
            format!("[127.0.0.1]:{}", origin.port),
        ] {
            let request = format!("CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            let answer = send_raw(&proxy, request.as_bytes(), Duration::from_secs(3));
            assert_eq!(answer.status(), Some(400), "CONNECT {target}: {answer:?}");
        }
    }

    #[test]
    fn bytes_that_are_neither_http_nor_tls_get_400_or_a_closed_connection() {
        let origin = origin();
        let proxy = proxy(&[]);
        let binary: Vec<u8> = (0..=255u8).collect();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("an SSH banner", b"SSH-2.0-OpenSSH_9.2p1\r\n".to_vec()),
            ("every byte value", binary),
            ("an SMTP command", b"EHLO example.com\r\n\r\n".to_vec()),
            (
                "an HTTP/2 preface followed by garbage",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
            ),
            (
                "a TLS ClientHello sent to the proxy port",
                real_client_hello(),
            ),
        ];
        for (what, bytes) in &cases {
            let answer = send_raw(&proxy, bytes, Duration::from_secs(5));
            assert!(
                answer.closed && answer.elapsed < Duration::from_millis(1500),
                "{what}: the proxy closes the connection: {answer:?}"
            );
            assert!(
                answer.raw.is_empty()
                    || answer.status() == Some(400)
                    || answer.raw.starts_with(b"\x00\x00"),
                "{what}: a 400, an HTTP/2 GOAWAY or nothing: {answer:?}"
            );
        }
        // A client that connects and leaves at once.
        drop(TcpStream::connect(proxy.addr()).unwrap());
        // A client that sends half a request line and leaves.
        let mut half = TcpStream::connect(proxy.addr()).unwrap();
        half.write_all(b"GET http://127.0.0.1/").unwrap();
        half.shutdown(Shutdown::Write).unwrap();
        let (closed, _) = wait_closed(&mut half, Duration::from_secs(5));
        assert!(closed.is_some(), "closed after a half request");
        assert!(requests_seen(&origin).is_empty());
        assert_still_serves(&proxy, &origin);
    }

    #[test]
    fn truncated_client_hellos_in_a_tunnel_close_it_with_a_log_line() {
        let tls = tls_origin();
        let proxy = proxy(&[]);
        let hello = real_client_hello();

        // The client sends part of its hello and closes its side.
        let logged = proxy.stderr().len();
        let mut tunnel = open_tunnel(&proxy, tls.port);
        tunnel.write_all(&hello[..40]).unwrap();
        tunnel.shutdown(Shutdown::Write).unwrap();
        let (closed, _) = wait_closed(&mut tunnel, Duration::from_secs(5));
        assert!(closed.is_some(), "the tunnel is closed");
        wait_log(&proxy, logged, &["before sending a complete ClientHello"]);

        // The client sends part of its hello and waits: closed after the handshake
        // timeout, while a normal HTTPS request goes through meanwhile.
        let logged = proxy.stderr().len();
        let mut tunnel = open_tunnel(&proxy, tls.port);
        tunnel.write_all(&hello[..hello.len() / 2]).unwrap();
        let started = Instant::now();
        assert_still_serves_https(&proxy, &tls);
        let (closed, _) = wait_closed(&mut tunnel, Duration::from_secs(8));
        let closed_after = started.elapsed();
        assert!(closed.is_some(), "the stalled tunnel is closed");
        assert!(
            closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(6),
            "closed after the 2 s handshake timeout, not {closed_after:?}"
        );
        wait_log(&proxy, logged, &["no complete ClientHello within 2 s"]);
        assert_still_serves_https(&proxy, &tls);
    }

    #[test]
    fn garbage_after_a_handshake_byte_in_a_tunnel_closes_it_with_a_log_line() {
        let tls = tls_origin();
        let proxy = proxy(&[]);
        let mut oversized = Vec::new();
        // Handshake records that add up to more than any ClientHello may be.
        for _ in 0..5 {
            oversized.extend_from_slice(&[0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x01, 0x00, 0x00]);
            oversized.extend(std::iter::repeat_n(0x41, 0x4000 - 4));
        }
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "text after 0x16",
                b"\x16 this is not TLS at all\r\n".to_vec(),
                "not a TLS ClientHello",
            ),
            (
                "a handshake record that is not a ClientHello",
                b"\x16\x03\x01\x00\x08\x05\x00\x00\x04abcd".to_vec(),
                "instead of ClientHello",
            ),
            (
                "an empty handshake record",
                b"\x16\x03\x01\x00\x00".to_vec(),
                "empty handshake record",
            ),
            (
                "a ClientHello whose body is garbage",
                b"\x16\x03\x01\x00\x0c\x01\x00\x00\x08\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
                "ClientHello",
            ),
            (
                "more than 64 KiB of handshake records",
                oversized,
                "larger than",
            ),
        ];
        for (what, bytes, logged_words) in &cases {
            let logged = proxy.stderr().len();
            let mut tunnel = open_tunnel(&proxy, tls.port);
            let _ = tunnel.write_all(bytes);
            let (closed, _) = wait_closed(&mut tunnel, Duration::from_secs(5));
            assert!(
                closed.is_some_and(|after| after < Duration::from_millis(1500)),
                "{what}: the tunnel is closed at once ({closed:?})"
            );
            wait_log(&proxy, logged, &["tunnel to", logged_words]);
        }
        assert_still_serves_https(&proxy, &tls);
    }

    #[test]
    fn a_client_that_stops_mid_handshake_is_closed_after_the_handshake_timeout() {
        let tls = tls_origin();
        let proxy = proxy(&[]);
        let logged = proxy.stderr().len();
        let mut tunnel = open_tunnel(&proxy, tls.port);
        // A whole ClientHello; the proxy answers with its flight and then waits for the
        // client's Finished, which never comes.
        tunnel.write_all(&real_client_hello()).unwrap();
        let started = Instant::now();
        assert_still_serves_https(&proxy, &tls);
        let (closed, received) = wait_closed(&mut tunnel, Duration::from_secs(8));
        let closed_after = started.elapsed();
        assert!(
            received.first() == Some(&0x16),
            "the proxy answered the hello with a handshake record"
        );
        assert!(closed.is_some(), "the connection is closed");
        assert!(
            closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(6),
            "closed after the 2 s handshake timeout, not {closed_after:?}"
        );
        wait_log(
            &proxy,
            logged,
            &[
                "TLS handshake with the client",
                "did not complete within 2 s",
            ],
        );
        assert_still_serves_https(&proxy, &tls);
    }

    /// Slowloris: a request head one byte a second never completes; the proxy closes
    /// the connection after --idle-timeout (2 s here) and logs it, and serves others
    /// meanwhile.
    #[test]
    fn a_request_head_sent_one_byte_a_second_is_closed_after_the_idle_timeout() {
        let origin = origin();
        let proxy = proxy(&[]);
        let logged = proxy.stderr().len();
        let head = format!(
            "GET http://127.0.0.1:{}/ok HTTP/1.1\r\nHost: x\r\nX-Slow: {}",
            origin.port,
            "a".repeat(40)
        );
        let address = proxy.addr();
        let drip = std::thread::spawn(move || drip_bytes(&address, &head));
        std::thread::sleep(Duration::from_millis(500));
        let during = Instant::now();
        assert_still_serves(&proxy, &origin);
        assert!(
            during.elapsed() < Duration::from_secs(1),
            "others are not slowed down"
        );
        let (closed_after, sent) = drip.join().unwrap();
        let closed_after = closed_after.expect("the proxy closed the slow connection");
        assert!(
            closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(5),
            "closed after the 2 s idle timeout, not {closed_after:?} ({sent} bytes sent)"
        );
        wait_log(&proxy, logged, &["closed an idle client connection"]);
        assert!(requests_seen(&origin).iter().all(|r| r.contains("/ok")));
        assert_still_serves(&proxy, &origin);
    }

    /// `--idle-timeout` also covers "a client that connects but sends no request"
    /// (hyper's header timer starts at the first byte): otherwise each such client
    /// holds a socket and a task for as long as it likes, and idle sockets alone could
    /// exhaust the descriptors.
    #[test]
    fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
        let origin = origin();
        let proxy = proxy(&[]);
        let logged = proxy.stderr().len();
        let mut silent = TcpStream::connect(proxy.addr()).unwrap();
        let (closed, _) = wait_closed(&mut silent, Duration::from_secs(8));
        let closed = closed.expect("a connection that sends nothing is closed within 8 s");
        assert!(closed >= Duration::from_millis(1500), "{closed:?}");
        wait_log(&proxy, logged, &["closed an idle client connection"]);
        assert_still_serves(&proxy, &origin);
    }

    /// Writes `text` one byte a second to the proxy at `address` until the proxy
    /// closes the connection or 12 s pass; returns when it closed and how many bytes
    /// were sent by then.
    fn drip_bytes(address: &str, text: &str) -> (Option<Duration>, usize) {
        let mut stream = TcpStream::connect(address).unwrap();
        let started = Instant::now();
        let mut buffer = [0u8; 1024];
        for (sent, byte) in text.bytes().enumerate() {
            if stream.write_all(&[byte]).is_err() {
                return (Some(started.elapsed()), sent);
            }
            stream
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            match stream.read(&mut buffer) {
                // An answer or EOF: either way the proxy gave up on this request.
                Ok(_) => return (Some(started.elapsed()), sent + 1),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return (Some(started.elapsed()), sent + 1),
            }
            if started.elapsed() > Duration::from_secs(12) {
                return (None, sent + 1);
            }
        }
        (None, text.len())
    }

    #[test]
    fn a_request_head_dripped_inside_an_intercepted_tunnel_is_closed_after_the_idle_timeout() {
        let tls = tls_origin();
        let proxy = proxy(&[]);
        let mut client = TlsClient::builder()
            .cafile(proxy.ca_cert_path())
            .via_proxy(&proxy.addr())
            .connect(&format!("localhost:{}", tls.port));
        let logged = proxy.stderr().len();
        let head = b"GET /ok HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa";
        let started = Instant::now();
        let mut closed_after = None;
        let mut buffer = [0u8; 1024];
        for byte in head {
            if client.write_all(&[*byte]).is_err() {
                closed_after = Some(started.elapsed());
                break;
            }
            client.set_read_timeout(Some(Duration::from_secs(1)));
            match client.read(&mut buffer) {
                Ok(_) => {
                    closed_after = Some(started.elapsed());
                    break;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => {
                    closed_after = Some(started.elapsed());
                    break;
                }
            }
            if started.elapsed() > Duration::from_secs(12) {
                break;
            }
        }
        let closed_after = closed_after.expect("the proxy closed the slow tunnel");
        assert!(
            closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(5),
            "closed after the 2 s idle timeout, not {closed_after:?}"
        );
        wait_log(&proxy, logged, &["closed an idle client connection"]);
        assert_still_serves_https(&proxy, &tls);
    }
}

// ---------------------------------------------------------------------------------
// Bad behaviour from servers
// ---------------------------------------------------------------------------------

mod upstream {
    use super::*;

    /// `--response-timeout` is the server's time to answer after the request was sent:
    /// an upload that keeps moving for longer than that is not a silent server (it
    /// once got a 504 while still uploading).
    #[test]
    fn a_slow_upload_longer_than_the_response_timeout_is_not_a_504() {
        let origin = origin();
        let proxy = proxy(&["--response-timeout", "2s"]);
        let mut stream = TcpStream::connect(proxy.addr()).unwrap();
        let start = Instant::now();
        let head = format!(
            "POST http://127.0.0.1:{}/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n",
            origin.port
        );
        stream.write_all(head.as_bytes()).unwrap();
        // 3.2 s of upload in all, each pause well inside the 2 s body idle timeout.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(800));
            stream.write_all(&[b'x'; 10]).unwrap();
        }
        let answer = read_answer(&mut stream, start, Duration::from_secs(10));
        assert!(answer.elapsed >= Duration::from_secs(3), "{answer:?}");
        assert_eq!(answer.status(), Some(200), "{answer:?}");
        assert_still_serves(&proxy, &origin);
    }

    /// Each answer is a 502 from Periscope that names the server and what was wrong,
    /// recorded as an `upstream_protocol` flow error.
    #[test]
    fn invalid_responses_are_502s_that_name_the_problem() {
        let origin = origin();
        let proxy = proxy(&[]);
        let label = format!("127.0.0.1:{}", origin.port);
        for (path, words) in [
            ("/invalid-status", &["invalid HTTP response", "status"][..]),
            ("/garbage-response", &["invalid HTTP response"][..]),
            ("/huge-header", &["invalid HTTP response", "too large"][..]),
            (
                "/close-without-response",
                &["closed the connection before sending a complete response"][..],
            ),
        ] {
            let printed = proxy.stdout().len();
            let result = Curl::through(&proxy)
                .max_time(Duration::from_secs(10))
                .run(&format!("http://{label}{path}"));
            result.assert_status(502);
            assert_eq!(result.header("x-periscope-error"), Some("1"), "{result:?}");
            let body = result.body_text();
            assert!(body.contains(&label), "{path}: names the server: {body}");
            for word in words {
                assert!(body.contains(word), "{path}: says {word:?}: {body}");
            }
            let flow = flow_after(&proxy, printed, path);
            assert_eq!(flow["error"]["kind"], "upstream_protocol", "{flow}");
            assert_eq!(flow["response"]["status"], 502, "{flow}");
        }
        assert_still_serves(&proxy, &origin);
    }

    /// The server promises 1000 bytes, sends 10 and closes: the client gets the 10
    /// bytes and then a closed connection (never a complete-looking response), and the
    /// flow says the body failed.
    #[test]
    fn a_body_shorter_than_its_content_length_reaches_the_client_truncated() {
        let origin = origin();
        let proxy = proxy(&[]);
        let printed = proxy.stdout().len();
        let request = format!(
            "GET http://127.0.0.1:{}/short-body HTTP/1.1\r\nHost: x\r\n\r\n",
            origin.port
        );
        let answer = send_raw(&proxy, request.as_bytes(), Duration::from_secs(5));
        assert_eq!(answer.status(), Some(200), "{answer:?}");
        assert_eq!(answer.header("content-length").as_deref(), Some("1000"));
        assert_eq!(answer.body(), b"0123456789", "{answer:?}");
        assert!(answer.closed, "the connection is closed: {answer:?}");
        let flow = flow_after(&proxy, printed, "/short-body");
        assert_eq!(flow["error"]["kind"], "upstream_protocol", "{flow}");
        assert!(
            flow["error"]["message"]
                .as_str()
                .unwrap()
                .contains("after 10 bytes"),
            "{flow}"
        );
        assert_eq!(flow["response"]["body"]["size"], 10, "{flow}");

        let curl =
            Curl::through(&proxy).run(&format!("http://127.0.0.1:{}/short-body", origin.port));
        assert_eq!(curl.exit_code, 18, "curl sees a partial file: {curl:?}");
        assert_still_serves(&proxy, &origin);
    }

    /// A chunked body cut off mid-chunk must not be relayed with the last-chunk marker
    /// (which would make it look complete).
    #[test]
    fn a_truncated_chunked_body_is_not_completed_for_the_client() {
        let origin = origin();
        let proxy = proxy(&[]);
        let printed = proxy.stdout().len();
        let request = format!(
            "GET http://127.0.0.1:{}/truncated-chunked HTTP/1.1\r\nHost: x\r\n\r\n",
            origin.port
        );
        let answer = send_raw(&proxy, request.as_bytes(), Duration::from_secs(5));
        assert_eq!(answer.status(), Some(200), "{answer:?}");
        assert!(answer.closed, "the connection is closed: {answer:?}");
        assert!(
            !answer.body().ends_with(b"0\r\n\r\n"),
            "the truncated body must not end with the last chunk: {answer:?}"
        );
        assert!(find(answer.body(), b"0123456789").is_some(), "{answer:?}");
        let flow = flow_after(&proxy, printed, "/truncated-chunked");
        assert_eq!(flow["error"]["kind"], "upstream_protocol", "{flow}");
        let curl = Curl::through(&proxy).run(&format!(
            "http://127.0.0.1:{}/truncated-chunked",
            origin.port
        ));
        assert_ne!(
            curl.exit_code, 0,
            "curl sees a truncated transfer: {curl:?}"
        );
        assert_still_serves(&proxy, &origin);
    }

    #[test]
    fn a_server_reset_mid_body_truncates_the_response_and_closes_the_connection() {
        let origin = origin();
        let proxy = proxy(&[]);
        let printed = proxy.stdout().len();
        let request = format!(
            "GET http://127.0.0.1:{}/reset-mid-body HTTP/1.1\r\nHost: x\r\n\r\n",
            origin.port
        );
        let answer = send_raw(&proxy, request.as_bytes(), Duration::from_secs(5));
        assert_eq!(answer.status(), Some(200), "{answer:?}");
        assert!(answer.closed, "the connection is closed: {answer:?}");
        assert_eq!(answer.body().len(), 1000, "the bytes before the reset");
        let flow = flow_after(&proxy, printed, "/reset-mid-body");
        assert_eq!(flow["error"]["kind"], "upstream_protocol", "{flow}");
        let message = flow["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(
            message.contains("reset") && message.contains("after 1000 bytes"),
            "{flow}"
        );
        assert_still_serves(&proxy, &origin);
    }

    /// The same three truncations inside an intercepted HTTPS tunnel: the client's TLS
    /// connection ends without the rest, and the flows record the failures.
    #[test]
    fn truncated_responses_inside_an_intercepted_tunnel_reach_the_client_truncated() {
        let tls = tls_origin();
        let proxy = proxy(&[]);
        for (path, kept) in [
            ("/short-body", 10),
            ("/truncated-chunked", 39),
            ("/reset-mid-body", 1000),
        ] {
            let printed = proxy.stdout().len();
            let result = Curl::through(&proxy)
                .max_time(Duration::from_secs(10))
                .run(&format!("https://localhost:{}{path}", tls.port));
            assert_eq!(result.status, 200, "{path}: {result:?}");
            assert!(
                matches!(result.exit_code, 18 | 56 | 92),
                "{path}: curl reports a truncated transfer: {result:?}"
            );
            assert_eq!(result.body.len(), kept, "{path}: {result:?}");
            let flow = flow_after(&proxy, printed, path);
            assert_eq!(flow["error"]["kind"], "upstream_protocol", "{path}: {flow}");
        }
        assert_still_serves_https(&proxy, &tls);
    }

    /// A server that takes the ClientHello and then says nothing (or half a record):
    /// 504 after --handshake-timeout, saying which wait ran out.
    #[test]
    fn a_server_that_stalls_the_tls_handshake_is_a_504_after_the_handshake_timeout() {
        let tls = tls_origin();
        let proxy = proxy(&[]);
        for mode in ["stall-handshake", "partial-hello"] {
            let server = origin_in_mode(mode, &[]);
            let printed = proxy.stdout().len();
            let result = Curl::through(&proxy)
                .max_time(Duration::from_secs(15))
                .run(&format!("https://localhost:{}/", server.port));
            result.assert_status(504);
            assert!(
                result.time_total >= 1.5 && result.time_total < 6.0,
                "{mode}: answered after the 2 s handshake timeout: {result:?}"
            );
            let body = result.body_text();
            assert!(
                body.contains("TLS handshake") && body.contains("did not complete within 2 s"),
                "{mode}: {body}"
            );
            let flow = flow_after(&proxy, printed, "/");
            assert_eq!(flow["error"]["kind"], "timeout", "{mode}: {flow}");
        }
        assert_still_serves_https(&proxy, &tls);
    }

    #[test]
    fn a_fatal_alert_during_the_handshake_is_a_502_naming_the_alert() {
        let tls = tls_origin();
        let proxy = proxy(&[]);
        for (code, name) in [("40", "handshake failure"), ("70", "protocol version")] {
            let server = origin_in_mode("alert", &["--alert", code]);
            let printed = proxy.stdout().len();
            let result = Curl::through(&proxy).run(&format!("https://localhost:{}/", server.port));
            result.assert_status(502);
            assert!(result.time_total < 2.0, "{result:?}");
            let body = result.body_text();
            assert!(
                body.contains("alert") && body.contains(name),
                "alert {code}: names the alert: {body}"
            );
            let flow = flow_after(&proxy, printed, "/");
            assert_eq!(flow["error"]["kind"], "upstream_tls", "{flow}");
        }
        // A server that reads the hello and closes without a word.
        let server = origin_in_mode("silent-close", &[]);
        let result = Curl::through(&proxy).run(&format!("https://localhost:{}/", server.port));
        result.assert_status(502);
        assert!(
            result.body_text().contains("TLS handshake"),
            "{}",
            result.body_text()
        );
        assert_still_serves_https(&proxy, &tls);
    }

    #[test]
    fn a_certificate_for_another_host_is_a_502_naming_the_hostname_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = certificate_for("wrong.example", dir.path());
        let server = OpensslServer::builder().www().cert(&cert, &key).start();
        let tls = tls_origin();
        let proxy = proxy(&[]);
        let printed = proxy.stdout().len();
        let result = Curl::through(&proxy).run(&server.url("/"));
        result.assert_status(502);
        let body = result.body_text();
        assert!(body.contains("hostname mismatch"), "{body}");
        assert!(
            body.contains(&format!("localhost:{}", server.port())),
            "{body}"
        );
        let flow = flow_after(&proxy, printed, "/");
        assert_eq!(flow["error"]["kind"], "upstream_tls", "{flow}");
        assert_still_serves_https(&proxy, &tls);
    }

    /// A certificate and key for `name` (DNS SAN), signed by the test CA, written to
    /// `dir`.
    fn certificate_for(name: &str, dir: &Path) -> (PathBuf, PathBuf) {
        use openssl::asn1::Asn1Time;
        use openssl::bn::{BigNum, MsbOption};
        use openssl::hash::MessageDigest;
        use openssl::pkey::PKey;
        use openssl::rsa::Rsa;
        use openssl::x509::extension::{ExtendedKeyUsage, SubjectAlternativeName};
        use openssl::x509::{X509Builder, X509NameBuilder};

        let pki = test_pki();
        let ca = TestPki::load_cert(&pki.ca_cert);
        let ca_key = PKey::private_key_from_pem(&std::fs::read(&pki.ca_key).unwrap()).unwrap();
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut subject = X509NameBuilder::new().unwrap();
        subject.append_entry_by_text("CN", name).unwrap();
        let subject = subject.build();
        let mut builder = X509Builder::new().unwrap();
        builder.set_version(2).unwrap();
        let mut serial = BigNum::new().unwrap();
        serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
        builder
            .set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        builder.set_subject_name(&subject).unwrap();
        builder.set_issuer_name(ca.subject_name()).unwrap();
        builder.set_pubkey(&key).unwrap();
        builder
            .set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        builder
            .set_not_after(&Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .dns(name)
            .build(&builder.x509v3_context(Some(&ca), None))
            .unwrap();
        builder.append_extension(san).unwrap();
        builder
            .append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
            .unwrap();
        builder.sign(&ca_key, MessageDigest::sha256()).unwrap();
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, builder.build().to_pem().unwrap()).unwrap();
        std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        (cert_path, key_path)
    }
}

// ---------------------------------------------------------------------------------
// Security defaults
// ---------------------------------------------------------------------------------

mod security {
    use super::*;

    #[test]
    fn proxyauth_answers_407_to_missing_and_wrong_credentials_and_relays_the_right_ones() {
        let origin = origin();
        let tls = tls_origin();
        let proxy = proxy(&["--proxyauth", "alice:s3cret:with:colons"]);
        let url = format!("http://127.0.0.1:{}/echo-head", origin.port);
        let https = format!("https://localhost:{}/ok", tls.port);

        let missing = Curl::through(&proxy).run(&url);
        missing.assert_status(407);
        assert!(
            missing
                .header("proxy-authenticate")
                .is_some_and(|v| v.to_ascii_lowercase().starts_with("basic")),
            "{missing:?}"
        );
        for wrong in [
            "alice:guess",
            "alice:s3cret",
            "bob:s3cret:with:colons",
            "alice:",
        ] {
            let result = Curl::through(&proxy)
                .arg("--proxy-user")
                .arg(wrong)
                .run(&url);
            result.assert_status(407);
        }
        let tunnel = Curl::through(&proxy).run(&https);
        assert_eq!(tunnel.info["http_connect"], 407, "CONNECT too: {tunnel:?}");
        let garbage = send_raw(
            &proxy,
            format!("GET {url} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic !!!\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(3),
        );
        assert_eq!(garbage.status(), Some(407), "{garbage:?}");
        assert!(
            requests_seen(&origin).is_empty(),
            "{:?}",
            requests_seen(&origin)
        );

        let right = Curl::through(&proxy)
            .arg("--proxy-user")
            .arg("alice:s3cret:with:colons")
            .run(&url);
        right.assert_status(200);
        assert!(
            !right
                .body_text()
                .to_ascii_lowercase()
                .contains("proxy-authorization"),
            "the proxy's credentials are not forwarded: {}",
            right.body_text()
        );
        Curl::through(&proxy)
            .arg("--proxy-user")
            .arg("alice:s3cret:with:colons")
            .run(&https)
            .assert_status(200);
    }

    #[test]
    fn listening_beyond_loopback_without_proxyauth_prints_a_warning() {
        let open = proxy_builder(&[]).listen_host("0.0.0.0").start();
        let line = open.wait_for_stderr("warning", WAIT);
        assert!(
            line.contains("0.0.0.0") && line.contains("--proxyauth"),
            "{line}"
        );
        let guarded = proxy_builder(&["--proxyauth", "u:p"])
            .listen_host("0.0.0.0")
            .start();
        // The announcement lines are printed together; give stragglers a moment.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !guarded.stderr_text().contains("--proxyauth"),
            "{}",
            guarded.describe()
        );
        let local = proxy(&[]);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !local.stderr_text().contains("warning"),
            "{}",
            local.describe()
        );
    }

    #[test]
    fn the_default_listen_address_is_loopback() {
        let confdir = tempfile::tempdir().unwrap();
        let proxy = Periscope::builder()
            .raw()
            .arg("dump")
            .arg("-p")
            .arg("0")
            .arg("--confdir")
            .arg(confdir.path())
            .start();
        let line = proxy.wait_for_stderr(LISTENING_MARKER, WAIT);
        assert!(line.contains("127.0.0.1:"), "{line}");
    }

    /// The CA key and the session (with its WAL and shared-memory files) hold secrets:
    /// 0600 even when the user's umask would allow more.
    #[test]
    fn private_files_are_0600_even_under_umask_000() {
        let origin = origin();
        let dir = tempfile::tempdir().unwrap();
        let confdir = dir.path().join("conf");
        let session = dir.path().join("session.periscope");
        let proxy = Periscope::builder()
            .program("/bin/sh")
            .raw()
            .arg("-c")
            .arg("umask 000; exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_periscope"))
            .args(["dump", "--listen-host", "127.0.0.1", "-p", "0", "--confdir"])
            .arg(&confdir)
            .arg("-w")
            .arg(&session)
            .start();
        let port = parse_listening_port(&proxy.wait_for_stderr(LISTENING_MARKER, WAIT)).unwrap();
        let result = Curl::new()
            .proxy(format!("http://127.0.0.1:{port}"))
            .run(&format!("http://127.0.0.1:{}/ok", origin.port));
        result.assert_status(200);
        let wal = dir.path().join("session.periscope-wal");
        let shm = dir.path().join("session.periscope-shm");
        assert!(
            wait_until(WAIT, || wal.exists() && shm.exists()),
            "the session was written"
        );
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .permissions()
                .mode()
                & 0o777
        };
        for private in [confdir.join("periscope-ca.pem"), session.clone(), wal, shm] {
            assert_eq!(mode(&private), 0o600, "{}", private.display());
        }
        assert_eq!(
            mode(&confdir) & 0o022,
            0,
            "nobody else may write into the confdir"
        );
    }

    /// A proxy on a fixed port recognises requests to itself (absolute-form and
    /// CONNECT, by IP and by name) and answers 508 instead of relaying them.
    #[test]
    fn requests_to_the_proxys_own_address_get_508() {
        let origin = origin();
        let port = free_port();
        let confdir = tempfile::tempdir().unwrap();
        let proxy = Periscope::builder()
            .raw()
            .args(["dump", "--json", "--listen-host", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .arg("--confdir")
            .arg(confdir.path())
            .start();
        assert_loops_refused(&proxy, port);
        assert_still_serves(&proxy, &origin);
    }

    /// The same with `-p 0`, the way the tests and many scripts start it: the loop
    /// check must compare with the bound port, not the configured 0.
    #[test]
    fn requests_to_the_proxys_own_address_get_508_when_the_system_picked_the_port() {
        let origin = origin();
        let proxy = proxy(&[]);
        assert_loops_refused(&proxy, proxy.port());
        assert_still_serves(&proxy, &origin);
    }

    fn assert_loops_refused(proxy: &Periscope, port: u16) {
        for request in [
            format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"),
            format!("GET http://localhost:{port}/x HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"),
            format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"),
        ] {
            let answer = send_raw(proxy, request.as_bytes(), Duration::from_secs(3));
            assert_eq!(
                answer.status(),
                Some(508),
                "{}: {answer:?}",
                request.lines().next().unwrap()
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// The session store under kill -9 and a full disk
// ---------------------------------------------------------------------------------

mod store {
    use super::*;

    /// Flows `periscope dump -r FILE --json` reads from a session file.
    fn saved_flows(session: &Path) -> Vec<Value> {
        let output = Command::new(env!("CARGO_BIN_EXE_periscope"))
            .arg("dump")
            .arg("-r")
            .arg(session)
            .arg("--json")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "dump -r failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_session_killed_with_kill_9_keeps_its_flows_and_can_be_recorded_into_again() {
        let origin = origin();
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("killed.periscope");
        let session_arg = session.to_string_lossy().into_owned();
        let mut proxy = proxy(&["-w", session_arg.as_str()]);
        for i in 0..20 {
            Curl::through(&proxy)
                .run(&format!(
                    "http://127.0.0.1:{}/big?size={}",
                    origin.port,
                    1000 + i
                ))
                .assert_status(200);
        }
        assert!(
            wait_until(WAIT, || saved_flows(&session).len() == 20),
            "20 flows committed (WAL) while the proxy runs"
        );
        proxy.signal(libc::SIGKILL);
        proxy.kill();
        let flows = saved_flows(&session);
        assert_eq!(flows.len(), 20, "every committed flow survives kill -9");
        assert!(flows.iter().all(|f| f["response"]["status"] == 200));
        // The file is usable for recording again.
        let proxy = proxy_builder(&["-w", session_arg.as_str()]).start();
        Curl::through(&proxy)
            .run(&format!("http://127.0.0.1:{}/ok", origin.port))
            .assert_status(200);
        assert!(wait_until(WAIT, || saved_flows(&session).len() == 21));
    }

    /// A 1 MiB tmpfs (mounted here: the tests run as root) fills up after a few flows:
    /// the proxy says so once and keeps serving.
    #[test]
    fn a_full_disk_is_reported_once_and_the_proxy_keeps_serving() {
        let origin = origin();
        let mount = TinyFilesystem::mount("1m");
        let session = mount.path().join("session.periscope");
        let session_arg = session.to_string_lossy().into_owned();
        let proxy = proxy(&["-w", session_arg.as_str()]);
        for _ in 0..25 {
            let result = Curl::through(&proxy)
                .run(&format!("http://127.0.0.1:{}/big?size=200000", origin.port));
            result.assert_status(200);
            assert_eq!(result.body.len(), 200_000);
        }
        let line = wait_log(&proxy, 0, &["disk is full"]);
        assert!(line.contains("keeps running"), "{line}");
        // More flows that cannot be saved either: no new report for each. (A small
        // flow that still fits would count as "saving works again" and a later failure
        // would be reported anew, by design.)
        for _ in 0..10 {
            let result = Curl::through(&proxy)
                .run(&format!("http://127.0.0.1:{}/big?size=200000", origin.port));
            result.assert_status(200);
        }
        std::thread::sleep(Duration::from_millis(500));
        let reports = proxy
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("disk is full"))
            .count();
        assert_eq!(reports, 1, "reported once:\n{}", proxy.stderr_text());
        assert!(
            wait_until(WAIT, || proxy.stdout_lines().len() >= 35),
            "every flow was still printed"
        );
        assert_still_serves(&proxy, &origin);
    }

    /// A size-limited tmpfs, unmounted on drop.
    struct TinyFilesystem {
        dir: tempfile::TempDir,
    }

    impl TinyFilesystem {
        fn mount(size: &str) -> TinyFilesystem {
            let dir = tempfile::tempdir().unwrap();
            let output = Command::new(require_tool("mount"))
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "mounting a {size} tmpfs needs root (the tests run as root in CI): {}",
                String::from_utf8_lossy(&output.stderr)
            );
            TinyFilesystem { dir }
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }
    }

    impl Drop for TinyFilesystem {
        fn drop(&mut self) {
            let _ = Command::new(require_tool("umount"))
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

// ---------------------------------------------------------------------------------
// Open file limits
// ---------------------------------------------------------------------------------

mod resources {
    use super::*;

    /// `periscope` under `sh -c 'SHELL-COMMANDS; exec periscope dump ...'`.
    fn proxy_after_shell(shell: &str, confdir: &Path) -> Periscope {
        let ca = test_pki().ca_cert.to_string_lossy().into_owned();
        Periscope::builder()
            .program("/bin/sh")
            .raw()
            .arg("-c")
            .arg(format!("{shell}; exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_periscope"))
            .args(["dump", "--listen-host", "127.0.0.1", "-p", "0", "--confdir"])
            .arg(confdir)
            .args(["--upstream-trusted-ca", ca.as_str()])
            .start()
    }

    fn open_file_limits(pid: u32) -> (u64, u64) {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_owned();
        let numbers: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (numbers[0], numbers[1])
    }

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit_at_start() {
        let confdir = tempfile::tempdir().unwrap();
        let proxy = proxy_after_shell("ulimit -Sn 256 && ulimit -Hn 4096", confdir.path());
        assert_eq!(open_file_limits(proxy.pid()), (4096, 4096));
    }

    /// With a hard limit of 64 descriptors, 100 idle clients exhaust them: the proxy
    /// says why it cannot accept more, keeps running, and serves again once they leave.
    #[test]
    fn running_out_of_file_descriptors_is_logged_and_the_proxy_recovers() {
        let origin = origin();
        let confdir = tempfile::tempdir().unwrap();
        let proxy = proxy_after_shell("ulimit -n 64", confdir.path());
        assert_eq!(open_file_limits(proxy.pid()), (64, 64));
        let mut clients = Vec::new();
        for _ in 0..100 {
            // The kernel completes the handshakes (backlog) even when accept fails.
            if let Ok(stream) = TcpStream::connect(proxy.addr()) {
                clients.push(stream);
            }
        }
        let line = wait_log(&proxy, 0, &["cannot accept a client connection"]);
        assert!(
            line.contains("open file limit") || line.contains("Too many open files"),
            "{line}"
        );
        drop(clients);
        // The idle clients are gone; their sockets close as the proxy notices.
        let started = Instant::now();
        let result = loop {
            let result = Curl::through(&proxy)
                .max_time(Duration::from_secs(5))
                .run(&format!("http://127.0.0.1:{}/ok", origin.port));
            if result.status == 200 || started.elapsed() > Duration::from_secs(15) {
                break result;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        result.assert_status(200);
        let mut proxy = proxy;
        assert!(proxy.is_running(), "{}", proxy.describe());
        let complaints = proxy
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("cannot accept"))
            .count();
        assert!(
            complaints < 200,
            "the log is not flooded: {complaints} lines in {:?}",
            started.elapsed()
        );
    }
}
