use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::model::{ConnectionInfo, FlowId, Header};
use crate::timeline::Timeline;

// -- helpers ------------------------------------------------------------------

fn headers(pairs: &[(&str, &[u8])]) -> Headers {
    Headers(pairs.iter().map(|&(n, v)| Header::new(n, v)).collect())
}

/// A request with the given head and body, no response.
fn flow_with(method: &str, url: (&str, &str, u16, &str), version: &str, head: Headers) -> Flow {
    let (scheme, host, port, path) = url;
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
        request: Request {
            method: method.into(),
            scheme: scheme.into(),
            host: host.into(),
            port,
            path: path.into(),
            http_version: version.into(),
            stream_id: None,
            headers: head,
            body: Body::default(),
            trailers: None,
        },
        response: None,
        error: None,
        timeline: Timeline::new(),
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

fn with_body(mut flow: Flow, body: &[u8]) -> Flow {
    flow.request.body = Body::complete(Bytes::copy_from_slice(body));
    flow
}

/// Header values a shell would love to interpret, all printable.
const HOSTILE_PRINTABLE: [&str; 8] = [
    r#"it's "quoted""#,
    "$HOME and ${PATH}",
    "`id` and $(id)",
    r"back\slash \\ and trailing \",
    "!event ^caret *glob ?x [a] {b,c} ~user",
    "a;b && c || d | e > f < g & h",
    "# not a comment",
    "unicode: héllo — 日本",
];

/// Every byte, in an order that starts with printable text.
fn all_bytes() -> Vec<u8> {
    let mut bytes: Vec<u8> = b"-leading dash, 100% 'quoted' \\ body\n".to_vec();
    bytes.extend(0..=255u8);
    bytes
}

/// The bytes `printf` prints for `format`, by the system's printf.
fn printf(format: &[u8]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let output = Process::new("printf")
        .arg(std::ffi::OsStr::from_bytes(format))
        .output()
        .expect("printf runs");
    assert!(output.status.success(), "printf {format:?}");
    output.stdout
}

/// A command line as the words a POSIX shell gives the program, by shlex, with the
/// format of a leading `printf '…' |` run to the bytes it prints.
fn shlex_words(line: &str) -> (Option<Vec<u8>>, Vec<String>) {
    let words = shlex::split(line).unwrap_or_else(|| panic!("shlex cannot split {line}"));
    if words.first().map(String::as_str) == Some("printf") {
        assert_eq!(words[2], "|", "{line}");
        (Some(printf(words[1].as_bytes())), words[3..].to_vec())
    } else {
        (None, words)
    }
}

/// Runs `line` in `sh` with the program replaced by a function that writes each
/// argument it got, then its standard input, separated by NUL bytes: what the real
/// shell passes, byte for byte.
fn sh_arguments(program: &str, line: &str) -> (Vec<Vec<u8>>, Vec<u8>) {
    let script = format!(
        "{program}() {{ for a in \"$@\"; do printf '%s\\0' \"$a\"; done; printf 'STDIN\\0'; \
         if [ -t 0 ]; then :; else cat; fi; }}\n{line} </dev/null\n"
    );
    // A pipe's left side gives the function its stdin; without one, /dev/null does.
    let script = if line.contains("| ") {
        script.replace(" </dev/null\n", "\n")
    } else {
        script
    };
    let output = Process::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("sh runs");
    assert!(
        output.status.success(),
        "sh failed on {line}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out = output.stdout;
    let marker = b"STDIN\0";
    let at = out
        .windows(marker.len())
        .rposition(|w| w == marker)
        .expect("the function ran");
    let arguments = out[..at]
        .split(|&b| b == 0)
        .map(<[u8]>::to_vec)
        .collect::<Vec<_>>();
    // The split leaves one empty piece after the last NUL.
    let arguments = arguments[..arguments.len() - 1].to_vec();
    (arguments, out[at + marker.len()..].to_vec())
}

/// What a curl command line asks for.
#[derive(Debug, Default, PartialEq)]
struct CurlRequest {
    flags: Vec<String>,
    method: Option<String>,
    url: String,
    headers: Vec<Vec<u8>>,
    body: Option<Vec<u8>>,
}

fn read_curl(arguments: &[Vec<u8>], stdin: &[u8]) -> CurlRequest {
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
    let mut request = CurlRequest::default();
    let mut words = arguments.iter();
    while let Some(word) = words.next() {
        match word.as_slice() {
            b"-X" => request.method = Some(text(words.next().unwrap())),
            b"-H" => request.headers.push(words.next().unwrap().clone()),
            b"--data-raw" => request.body = Some(words.next().unwrap().clone()),
            b"--data-binary" => {
                assert_eq!(words.next().unwrap(), b"@-");
                request.body = Some(stdin.to_vec());
            }
            b"--request-target" => {
                request.flags.push("--request-target".into());
                request.flags.push(text(words.next().unwrap()));
            }
            flag if flag.starts_with(b"-") => request.flags.push(text(flag)),
            url => {
                assert!(request.url.is_empty(), "two URLs");
                request.url = text(url);
            }
        }
    }
    request
}

fn curl_via_shlex(line: &str) -> CurlRequest {
    let (stdin, words) = shlex_words(line);
    assert_eq!(words[0], "curl", "{line}");
    let arguments: Vec<Vec<u8>> = words[1..].iter().map(|w| w.clone().into_bytes()).collect();
    read_curl(&arguments, &stdin.unwrap_or_default())
}

fn curl_via_sh(line: &str) -> CurlRequest {
    let (arguments, stdin) = sh_arguments("curl", line);
    read_curl(&arguments, &stdin)
}

fn header(name: &str, value: &[u8]) -> Vec<u8> {
    let mut line = format!("{name}: ").into_bytes();
    line.extend_from_slice(value);
    line
}

/// No control character but line breaks and tabs inside quoted text: nothing that
/// a terminal would act on when the line is shown.
#[track_caller]
fn assert_terminal_safe(line: &str) {
    let bad: Vec<char> = line
        .chars()
        .filter(|&c| c.is_control() && c != '\n' && c != '\t')
        .collect();
    assert!(bad.is_empty(), "{bad:?} in {line}");
}

// -- curl ---------------------------------------------------------------------------

#[test]
fn curl_round_trips_through_shlex() {
    let mut pairs: Vec<(String, Vec<u8>)> = vec![("Host".into(), b"api.example".to_vec())];
    for (i, value) in HOSTILE_PRINTABLE.iter().enumerate() {
        pairs.push((format!("X-Hostile-{i}"), value.as_bytes().to_vec()));
    }
    pairs.push(("X-Empty".into(), Vec::new()));
    pairs.push(("Cookie".into(), b"a=1".to_vec()));
    pairs.push(("Cookie".into(), b"b=2".to_vec()));
    let head = Headers(
        pairs
            .iter()
            .map(|(n, v)| Header::new(n, v.clone()))
            .collect(),
    );
    let body = "{\"text\": \"it's $HOME `id` \\\\ \\\"q\\\"\",\n \"tab\":\t1}";
    let flow = with_body(
        flow_with(
            "PUT",
            ("https", "api.example", 8443, "/v1/items?a=1&b=$x"),
            "HTTP/1.1",
            head,
        ),
        body.as_bytes(),
    );
    let line = curl(&flow);
    assert_terminal_safe(&line);
    assert!(line.contains("--data-raw"), "{line}");
    let parsed = curl_via_shlex(&line);
    assert_eq!(parsed, curl_via_sh(&line), "shlex and sh read it alike");
    assert_eq!(parsed.method.as_deref(), Some("PUT"));
    assert_eq!(parsed.url, "https://api.example:8443/v1/items?a=1&b=$x");
    assert_eq!(parsed.flags, ["--http1.1"]);
    let mut expected: Vec<Vec<u8>> = pairs
        .iter()
        .map(|(name, value)| {
            if value.is_empty() {
                format!("{name};").into_bytes()
            } else {
                header(name, value)
            }
        })
        .collect();
    for unset in ["User-Agent:", "Accept:", "Content-Type:"] {
        expected.push(unset.as_bytes().to_vec());
    }
    assert_eq!(parsed.headers, expected);
    assert_eq!(parsed.body.as_deref(), Some(body.as_bytes()));
}

#[test]
fn binary_bodies_go_through_printf_exactly() {
    let body = all_bytes();
    let flow = with_body(
        flow_with(
            "POST",
            ("http", "h.example", 80, "/upload"),
            "HTTP/1.1",
            headers(&[
                ("Host", b"h.example"),
                ("Content-Type", b"application/x-bin"),
            ]),
        ),
        &body,
    );
    let line = curl(&flow);
    assert_terminal_safe(&line);
    assert!(line.starts_with("printf '\\055leading dash"), "{line}");
    let parsed = curl_via_shlex(&line);
    assert_eq!(parsed.body.as_deref(), Some(&body[..]));
    assert_eq!(parsed.method, None, "POST is what curl infers from data");
    assert_eq!(curl_via_sh(&line), parsed);
}

#[test]
fn every_byte_of_a_header_value_survives_a_real_shell() {
    let mut values: Vec<Vec<u8>> = HOSTILE_PRINTABLE
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    values.push(b"line\nbreak and \r return".to_vec());
    values.push(b"escape \x1b[31m red \x07 bell \x7f del".to_vec());
    values.push(vec![b'n', b'o', b't', b' ', 0xff, 0xfe, 0xc3, b'(', 0x80]);
    values.push(b"-starts with a dash \\ 100% 'q'".to_vec());
    values.push((1..=255u8).filter(|&b| b != b'\n').collect());
    let head = Headers(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Header::new(format!("x-{i}"), v.clone()))
            .collect(),
    );
    let body = all_bytes();
    let flow = with_body(
        flow_with("POST", ("https", "h.example", 443, "/"), "HTTP/2.0", head),
        &body,
    );
    for line in [curl(&flow), httpie(&flow)] {
        assert_terminal_safe(&line);
    }
    let parsed = curl_via_sh(&curl(&flow));
    let sent: Vec<Vec<u8>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| header(&format!("x-{i}"), v))
        .collect();
    assert_eq!(parsed.headers[..sent.len()], sent[..]);
    assert_eq!(parsed.body.as_deref(), Some(&body[..]));
    assert_eq!(parsed.flags, ["--http2"]);

    // HTTPie takes every UTF-8 value; the others are left out, and a comment says so.
    let line = httpie(&flow);
    let (arguments, stdin) = sh_arguments("http", &line);
    assert_eq!(stdin, body);
    let mut left_out = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let mut item = format!("x-{i}:").into_bytes();
        item.extend_from_slice(value);
        if std::str::from_utf8(value).is_ok() {
            assert!(arguments.contains(&item), "{i}: {arguments:?}");
        } else {
            assert!(!arguments.contains(&item), "{i}: {arguments:?}");
            left_out.push(format!("x-{i}"));
        }
    }
    assert_eq!(left_out, ["x-10", "x-12"]);
    assert!(line.contains("not UTF-8; left out: x-10, x-12"), "{line}");
}

#[test]
fn curl_leaves_its_own_framing_to_curl() {
    // A body: Content-Length is curl's to compute.
    let flow = with_body(
        flow_with(
            "POST",
            ("http", "h", 80, "/"),
            "HTTP/1.1",
            headers(&[
                ("Host", b"h"),
                ("User-Agent", b"ua"),
                ("Accept", b"*/*"),
                ("Content-Length", b"999"),
                ("Content-Type", b"text/plain"),
            ]),
        ),
        b"abc",
    );
    let parsed = curl_via_shlex(&curl(&flow));
    assert_eq!(
        parsed.headers,
        [
            header("Host", b"h"),
            header("User-Agent", b"ua"),
            header("Accept", b"*/*"),
            header("Content-Type", b"text/plain"),
        ]
    );
    // No body: Content-Length stays as recorded.
    let flow = flow_with(
        "POST",
        ("http", "h", 80, "/"),
        "HTTP/1.1",
        headers(&[("Host", b"h"), ("Content-Length", b"0")]),
    );
    let parsed = curl_via_shlex(&curl(&flow));
    assert_eq!(parsed.method.as_deref(), Some("POST"));
    assert_eq!(parsed.body, None);
    assert_eq!(
        parsed.headers,
        [
            header("Host", b"h"),
            header("Content-Length", b"0"),
            b"User-Agent:".to_vec(),
            b"Accept:".to_vec(),
        ]
    );
    // Chunked: curl chunks what it sends; an empty chunked body is still a body.
    let flow = flow_with(
        "POST",
        ("http", "h", 80, "/"),
        "HTTP/1.1",
        headers(&[("Host", b"h"), ("Transfer-Encoding", b"chunked")]),
    );
    let parsed = curl_via_shlex(&curl(&flow));
    assert_eq!(parsed.body.as_deref(), Some(&b""[..]));
    assert!(parsed
        .headers
        .contains(&header("Transfer-Encoding", b"chunked")));
    // HTTP/2: pseudo-headers are the method and URL; no Host to unset.
    let flow = flow_with(
        "GET",
        ("https", "h", 443, "/"),
        "HTTP/2.0",
        headers(&[
            (":authority", b"h"),
            ("accept", b"*/*"),
            ("user-agent", b"x"),
        ]),
    );
    let parsed = curl_via_shlex(&curl(&flow));
    assert_eq!(
        parsed.headers,
        [header("accept", b"*/*"), header("user-agent", b"x")]
    );
    // HTTP/1.0 without Host: curl must not add one.
    let flow = flow_with(
        "GET",
        ("http", "h", 80, "/"),
        "HTTP/1.0",
        headers(&[("Accept", b"*/*"), ("User-Agent", b"x")]),
    );
    let parsed = curl_via_shlex(&curl(&flow));
    assert_eq!(parsed.flags, ["--http1.0"]);
    assert_eq!(parsed.headers.last().unwrap(), b"Host:");
    // A large body without Expect: curl must not add one.
    let flow = with_body(
        flow_with(
            "PUT",
            ("http", "h", 80, "/"),
            "HTTP/1.1",
            headers(&[("Host", b"h")]),
        ),
        &[b'x'; 2000],
    );
    assert!(curl_via_shlex(&curl(&flow))
        .headers
        .contains(&b"Expect:".to_vec()));
}

#[test]
fn curl_methods_versions_and_targets() {
    let get = |method: &str, url: (&str, &str, u16, &str), version: &str| {
        let flow = flow_with(method, url, version, headers(&[("Host", b"h")]));
        curl_via_shlex(&curl(&flow))
    };
    let plain = get("GET", ("http", "h", 80, "/"), "HTTP/1.1");
    assert_eq!((plain.method, plain.flags.len()), (None, 0));
    assert_eq!(plain.url, "http://h/");
    assert_eq!(
        get("HEAD", ("http", "h", 80, "/"), "HTTP/1.1").flags,
        ["--head"]
    );
    assert_eq!(
        get("DELETE", ("http", "h", 80, "/"), "HTTP/1.1")
            .method
            .as_deref(),
        Some("DELETE")
    );
    let flow = with_body(
        flow_with(
            "GET",
            ("http", "h", 80, "/"),
            "HTTP/1.1",
            Headers::default(),
        ),
        b"x",
    );
    assert_eq!(curl_via_shlex(&curl(&flow)).method.as_deref(), Some("GET"));
    assert_eq!(
        get("GET", ("http", "h", 80, "/"), "HTTP/2.0").flags,
        ["--http2-prior-knowledge"]
    );
    assert_eq!(
        get("GET", ("https", "h", 443, "/"), "HTTP/1.1").flags,
        ["--http1.1"]
    );
    let dots = get("GET", ("http", "h", 80, "/a/../b/./c?x=..#"), "HTTP/1.1");
    assert_eq!(dots.flags, ["--request-target", "/a/../b/./c?x=..#"]);
    assert_eq!(dots.url, "http://h/");
    let dots = get("GET", ("http", "h", 80, "/a/../b/./c?x=.."), "HTTP/1.1");
    assert_eq!(dots.flags, ["--path-as-is"]);
    assert_eq!(dots.url, "http://h/a/../b/./c?x=..");
    let globs = get("GET", ("http", "::1", 8080, "/q?a[0]={x}"), "HTTP/1.1");
    assert_eq!(globs.flags, ["--globoff"]);
    assert_eq!(globs.url, "http://[::1]:8080/q?a[0]={x}");
    let star = get("OPTIONS", ("https", "h", 443, "*"), "HTTP/1.1");
    assert_eq!(star.flags, ["--http1.1", "--request-target", "*"]);
    assert_eq!(star.url, "https://h/");
}

#[test]
fn what_curl_cannot_send_is_said_in_comments() {
    let mut flow = with_body(
        flow_with(
            "POST",
            ("http", "h", 80, "/"),
            "HTTP/1.1",
            headers(&[("Host", b"h")]),
        ),
        b"partial",
    );
    flow.request.body.size = 1_000_000;
    flow.request.body.truncated = true;
    flow.request.trailers = Some(headers(&[("grpc-status", b"0")]));
    let line = curl(&flow);
    let comments: Vec<&str> = line.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(comments.len(), 2, "{line}");
    assert!(comments[0].contains("7 of the request body's 1000000 bytes"));
    assert!(comments[1].contains("trailers: grpc-status"));
    // The comments do not change what the command does.
    assert_eq!(curl_via_sh(&line), curl_via_shlex(&line));
}

// -- HTTPie ---------------------------------------------------------------------------

#[test]
fn httpie_round_trips_through_shlex() {
    let flow = with_body(
        flow_with(
            "PATCH",
            ("https", "api.example", 443, "/v1/x?q=1"),
            "HTTP/1.1",
            headers(&[
                ("Host", b"api.example"),
                ("X-Json-Looking", b"=not json"),
                ("X-File-Looking", b"@/etc/passwd"),
                ("X-Quotes", HOSTILE_PRINTABLE[0].as_bytes()),
                ("X-Colons", b"a:b;c=d@e"),
                ("X-Empty", b""),
                ("Content-Length", b"2"),
                ("Accept", b"application/json"),
            ]),
        ),
        b"-1",
    );
    let line = httpie(&flow);
    let (stdin, words) = shlex_words(&line);
    assert_eq!(stdin, None);
    assert_eq!(
        words,
        [
            "http",
            "--ignore-stdin",
            "--raw=-1",
            "PATCH",
            "https://api.example/v1/x?q=1",
            "Host:api.example",
            "X-Json-Looking:\\=not json",
            "X-File-Looking:\\@/etc/passwd",
            &format!("X-Quotes:{}", HOSTILE_PRINTABLE[0]),
            "X-Colons:a:b;c=d@e",
            "X-Empty;",
            "Accept:application/json",
            "User-Agent:",
            "Accept-Encoding:",
            "Connection:",
            "Content-Type:",
        ]
    );
}

#[test]
fn httpie_says_what_it_cannot_send() {
    let mut flow = flow_with(
        "M-SEARCH",
        ("http", "h", 80, "*"),
        "HTTP/2.0",
        headers(&[("X-Path", b"C:\\:dir"), ("Transfer-Encoding", b"chunked")]),
    );
    flow.request.body = Body::complete(&b"\x00binary"[..]);
    let line = httpie(&flow);
    let comments: Vec<&str> = line.lines().filter(|l| l.starts_with('#')).collect();
    assert!(
        comments
            .iter()
            .any(|c| c.contains("HTTP/1.1 only") || c.contains("HTTPie sends HTTP/1.1")),
        "{line}"
    );
    assert!(
        comments.iter().any(|c| c.contains("only letters")),
        "{line}"
    );
    assert!(
        comments.iter().any(|c| c.contains("request target *")),
        "{line}"
    );
    assert!(comments.iter().any(|c| c.contains("X-Path")), "{line}");
    let (stdin, words) = shlex_words(&line);
    assert_eq!(stdin.as_deref(), Some(&b"\x00binary"[..]));
    assert!(words.contains(&"--chunked".to_owned()), "{words:?}");
    assert!(!words.iter().any(|w| w.starts_with("Transfer-Encoding")));
    assert!(!words.contains(&"--ignore-stdin".to_owned()));
}

// -- raw ----------------------------------------------------------------------------

#[test]
fn a_raw_http1_request_is_as_recorded() {
    let flow = with_body(
        flow_with(
            "POST",
            ("http", "h", 80, "/a?b"),
            "HTTP/1.1",
            headers(&[("Host", b"h"), ("X-Bin", &[0xff]), ("Content-Length", b"3")]),
        ),
        b"a\x00c",
    );
    assert_eq!(
        raw_request(&flow),
        b"POST /a?b HTTP/1.1\r\nHost: h\r\nX-Bin: \xff\r\nContent-Length: 3\r\n\r\na\x00c"
    );
    assert_eq!(raw_response(&flow), None);
    assert_eq!(raw(&flow), raw_request(&flow));
}

#[test]
fn a_chunked_body_is_chunked_again_with_its_trailers() {
    let mut flow = with_body(
        flow_with(
            "POST",
            ("http", "h", 80, "/"),
            "HTTP/1.1",
            headers(&[("Host", b"h"), ("Transfer-Encoding", b"gzip, chunked")]),
        ),
        &[b'z'; 26],
    );
    flow.request.trailers = Some(headers(&[("X-Sum", b"1")]));
    let mut expected =
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1a\r\n".to_vec();
    expected.extend_from_slice(&[b'z'; 26]);
    expected.extend_from_slice(b"\r\n0\r\nX-Sum: 1\r\n\r\n");
    assert_eq!(raw_request(&flow), expected);
}

#[test]
fn http2_messages_become_the_http1_messages_that_mean_the_same() {
    let mut flow = with_body(
        flow_with(
            "POST",
            ("https", "h.example", 8443, "/rpc"),
            "HTTP/2.0",
            headers(&[
                (":authority", b"h.example:8443"),
                ("content-type", b"application/grpc"),
            ]),
        ),
        b"12345",
    );
    assert_eq!(
        raw_request(&flow),
        b"POST /rpc HTTP/1.1\r\nhost: h.example:8443\r\ncontent-type: application/grpc\r\n\
          content-length: 5\r\n\r\n12345"
    );
    flow.response = Some(Response {
        status: 404,
        reason: String::new(),
        http_version: "HTTP/2.0".into(),
        stream_id: Some(1),
        headers: headers(&[("content-type", b"text/plain")]),
        body: Body::complete(&b"nope"[..]),
        trailers: Some(headers(&[("grpc-status", b"5")])),
        generated: false,
    });
    let response = raw_response(&flow).unwrap();
    assert_eq!(
        response,
        b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n\
          4\r\nnope\r\n0\r\ngrpc-status: 5\r\n\r\n"
    );
    let mut both = raw_request(&flow);
    both.extend_from_slice(b"\r\n\r\n");
    both.extend_from_slice(&response);
    assert_eq!(raw(&flow), both);
}

#[test]
fn a_connect_is_written_in_authority_form() {
    let flow = flow_with(
        "CONNECT",
        ("https", "::1", 443, ""),
        "HTTP/1.1",
        headers(&[("Host", b"[::1]:443")]),
    );
    assert!(raw_request(&flow).starts_with(b"CONNECT [::1]:443 HTTP/1.1\r\n"));
    let parsed = curl_via_shlex(&curl(&flow));
    assert_eq!(parsed.method.as_deref(), Some("CONNECT"));
    assert!(parsed
        .flags
        .ends_with(&["--request-target".into(), "[::1]:443".into()]));
}

// -- curl, for real ------------------------------------------------------------------

/// Accepts one connection on 127.0.0.1, reads one request (head, then a body framed
/// by Content-Length or chunked), answers 200 and returns the bytes it read.
fn record_one_request(listener: TcpListener) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut received = Vec::new();
        let mut buffer = [0; 65536];
        let complete = |received: &[u8]| {
            let mut header_slots = [httparse::EMPTY_HEADER; 64];
            let mut head = httparse::Request::new(&mut header_slots);
            let Ok(httparse::Status::Complete(head_len)) = head.parse(received) else {
                return false;
            };
            let value = |name: &str| {
                head.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
            };
            let body = &received[head_len..];
            if value("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
                body.ends_with(b"0\r\n\r\n")
            } else {
                let length = value("content-length").map_or(0, |n| n.trim().parse().unwrap());
                body.len() >= length
            }
        };
        while !complete(&received) {
            let n = socket.read(&mut buffer).unwrap();
            assert!(n > 0, "the client closed early: {received:?}");
            received.extend_from_slice(&buffer[..n]);
        }
        socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        received
    })
}

/// Runs `line` with `sh -c`, as a user would, within 20 seconds.
fn run_in_sh(line: &str) {
    let mut child = Process::new("sh")
        .arg("-c")
        .arg(line)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            assert!(status.success(), "{line}\nfailed: {stderr}");
            return;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{line}\ndid not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_curl_line_sends_the_recorded_request() {
    assert!(
        Path::new("/usr/bin/curl").exists(),
        "this test runs curl, which is missing"
    );
    let check = |flow: Flow| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut flow = flow;
        flow.request.port = port;
        for header in &mut flow.request.headers.0 {
            if header.name.eq_ignore_ascii_case("host") {
                header.value = format!("127.0.0.1:{port}").into_bytes();
            }
        }
        let server = record_one_request(listener);
        let line = curl(&flow);
        run_in_sh(&line);
        let received = server.join().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&received),
            String::from_utf8_lossy(&raw_request(&flow)),
            "{line}"
        );
        assert_eq!(received, raw_request(&flow), "{line}");
    };
    let host = ("Host", &b"127.0.0.1"[..]);

    // Hostile header values, bytes that are not UTF-8, a binary body. curl writes
    // its Content-Length after the headers it was given, so it comes last here.
    let mut head = vec![host];
    let hostile: Vec<String> = HOSTILE_PRINTABLE.iter().map(|v| v.to_string()).collect();
    for value in &hostile {
        head.push(("X-Hostile", value.as_bytes()));
    }
    head.push(("X-Latin1", b"caf\xe9 \xff"));
    head.push(("X-Empty", b""));
    head.push(("Content-Type", b"application/octet-stream"));
    let body = all_bytes();
    let length = body.len().to_string();
    head.push(("Content-Length", length.as_bytes()));
    check(with_body(
        flow_with(
            "POST",
            ("http", "127.0.0.1", 0, "/upload?x=$HOME&y=`id`"),
            "HTTP/1.1",
            headers(&head),
        ),
        &body,
    ));

    // A text body as an argument, a method curl does not infer, dot segments and
    // glob characters, no User-Agent or Accept.
    let text = "{\"a\": \"it's $HOME `id` \\\\\",\n\t\"b\": \"héllo\"}";
    let length = text.len().to_string();
    check(with_body(
        flow_with(
            "PUT",
            ("http", "127.0.0.1", 0, "/a/../b/./c?q[0]={x}"),
            "HTTP/1.1",
            headers(&[
                host,
                ("Content-Type", b"application/json"),
                ("Content-Length", length.as_bytes()),
            ]),
        ),
        text.as_bytes(),
    ));

    // A chunked body, framed by curl as the client did.
    check(with_body(
        flow_with(
            "POST",
            ("http", "127.0.0.1", 0, "/chunked"),
            "HTTP/1.1",
            headers(&[
                host,
                ("User-Agent", b"client/1.0"),
                ("Accept", b"*/*"),
                ("Transfer-Encoding", b"chunked"),
                ("Content-Type", b"text/plain"),
            ]),
        ),
        b"several\nlines\n",
    ));

    // No body, a recorded Content-Length: 0, and OPTIONS *.
    check(flow_with(
        "DELETE",
        ("http", "127.0.0.1", 0, "/item/1"),
        "HTTP/1.1",
        headers(&[host, ("Content-Length", b"0")]),
    ));
    check(flow_with(
        "OPTIONS",
        ("http", "127.0.0.1", 0, "*"),
        "HTTP/1.1",
        headers(&[host, ("Accept", b"*/*")]),
    ));
}
