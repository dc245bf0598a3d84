//! The proxy core as a user meets it: curl through Periscope to real servers (Apache
//! httpd with TLS 1.2 and TLS 1.3 vhosts, `openssl s_server`, small Python servers),
//! the client verifying Periscope's CA, and what `periscope dump` prints.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use serde_json::Value;
use support::*;

fn apache() -> Apache {
    Apache::builder().pki(test_pki()).start()
}

/// Periscope in `dump --json` mode, trusting the test CA upstream.
fn json_proxy(extra: &[&str]) -> Periscope {
    let ca = test_pki().ca_cert.to_string_lossy().into_owned();
    let mut args = vec!["--json", "--upstream-trusted-ca", ca.as_str()];
    args.extend_from_slice(extra);
    Periscope::start_dump(&args)
}

/// Periscope in plain `dump` mode, trusting the test CA upstream.
fn text_proxy(extra: &[&str]) -> Periscope {
    let ca = test_pki().ca_cert.to_string_lossy().into_owned();
    let mut args = vec!["--upstream-trusted-ca", ca.as_str()];
    args.extend_from_slice(extra);
    Periscope::start_dump(&args)
}

/// The first flow printed (as JSON) whose path ends with `path_suffix`.
fn flow_for(proxy: &Periscope, path_suffix: &str) -> Value {
    flow_after(proxy, 0, path_suffix)
}

/// Like [`flow_for`], among the lines printed from index `start` on.
fn flow_after(proxy: &Periscope, start: usize, path_suffix: &str) -> Value {
    let suffix = path_suffix.to_owned();
    let line = proxy.wait_for_stdout_after(
        start,
        move |line: &str| {
            serde_json::from_str::<Value>(line)
                .map(|flow| {
                    flow["request"]["path"]
                        .as_str()
                        .unwrap_or("")
                        .ends_with(&suffix)
                })
                .unwrap_or(false)
        },
        Duration::from_secs(10),
    );
    serde_json::from_str(&line).unwrap()
}

fn milestone(flow: &Value, name: &str) -> Option<i64> {
    flow["timeline"]
        .as_array()?
        .iter()
        .find(|entry| entry["entry"] == "milestone" && entry["milestone"] == name)
        .and_then(|entry| entry["at"].as_i64())
}

#[test]
fn https_through_the_proxy_to_tls12_and_tls13_servers_verifies_periscopes_ca() {
    let apache = apache();
    let proxy = json_proxy(&[]);
    for (vhost, version) in [(Vhost::Tls12, "TLSv1.2"), (Vhost::Tls13, "TLSv1.3")] {
        let printed = proxy.stdout().len();
        let result = Curl::through(&proxy).run(&apache.url(vhost, "/hello.txt"));
        result.assert_status(200);
        assert_eq!(result.body_text(), HELLO_BODY, "{result:?}");
        assert_eq!(
            result.info["ssl_verify_result"], 0,
            "curl verified Periscope's certificate without -k"
        );
        let flow = flow_after(&proxy, printed, "/hello.txt");
        assert_eq!(flow["response"]["status"], 200);
        assert_eq!(flow["server"]["tls"]["version"], version, "{flow}");
        assert_eq!(flow["client"]["tls"]["sni"], "localhost");
        assert!(flow["server"]["tls"]["peer_certificate"]["subject"]
            .as_str()
            .unwrap()
            .contains("localhost"));
    }
}

#[test]
fn an_ip_address_host_gets_a_certificate_for_that_ip() {
    let apache = apache();
    let proxy = json_proxy(&[]);
    let result = Curl::through(&proxy).run(&apache.url_ip(Vhost::Tls13, "/hello.txt"));
    result.assert_status(200);
    assert_eq!(result.info["ssl_verify_result"], 0);
    let flow = flow_for(&proxy, "/hello.txt");
    assert_eq!(flow["request"]["host"], "127.0.0.1");
    assert!(
        flow["client"]["tls"]["sni"].is_null(),
        "curl sends no SNI for an IP"
    );
}

#[test]
fn plain_http_is_proxied_and_printed() {
    let apache = apache();
    let proxy = text_proxy(&[]);
    let url = apache.url(Vhost::Plain, "/hello.txt");
    let result = Curl::through(&proxy).run(&url);
    result.assert_status(200);
    assert_eq!(result.body_text(), HELLO_BODY);
    let line = proxy.wait_for_stdout(url.as_str(), Duration::from_secs(10));
    // client address, method, URL, status, size, duration
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(fields[0].starts_with("127.0.0.1:"), "{line}");
    assert_eq!(fields[1], "GET", "{line}");
    assert_eq!(fields[2], url, "{line}");
    assert_eq!(fields[3], "200", "{line}");
    assert!(line.contains(&format!("{}b", HELLO_BODY.len())), "{line}");
    assert!(
        fields.last().unwrap().ends_with("ms") || fields.last().unwrap().ends_with("µs"),
        "{line}"
    );
}

#[test]
fn a_multi_megabyte_download_and_upload_arrive_byte_for_byte() {
    let apache = apache();
    let proxy = json_proxy(&["--body-limit", "1MiB"]);
    let download = Curl::through(&proxy).run(&apache.url(Vhost::Tls12, "/big.bin"));
    download.assert_status(200);
    assert_eq!(sha256_hex(&download.body), big_bin_sha256());
    let flow = flow_for(&proxy, "/big.bin");
    let body = &flow["response"]["body"];
    assert_eq!(body["size"], big_bin().len() as u64);
    assert_eq!(
        body["truncated"], true,
        "the flow keeps at most --body-limit"
    );

    let upload_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(upload_file.path(), big_bin()).unwrap();
    let echoed = Curl::through(&proxy)
        .data_binary_file(upload_file.path())
        .header("Content-Type: application/octet-stream")
        .run(&apache.url(Vhost::Tls13, "/echo"));
    echoed.assert_status(200);
    assert_eq!(
        sha256_hex(&echoed.body),
        big_bin_sha256(),
        "mod_reflector echoed the upload"
    );
    let flow = flow_for(&proxy, "/echo");
    assert_eq!(flow["request"]["body"]["size"], big_bin().len() as u64);
}

#[test]
fn chunked_uploads_head_and_expect_continue_work() {
    let apache = apache();
    let proxy = json_proxy(&[]);
    let chunked = Curl::through(&proxy)
        .header("Transfer-Encoding: chunked")
        .data("a chunked body")
        .run(&apache.url(Vhost::Tls12, "/echo"));
    chunked.assert_status(200);
    assert_eq!(chunked.body_text(), "a chunked body");

    let head = Curl::through(&proxy)
        .arg("-I")
        .run(&apache.url(Vhost::Tls12, "/big.bin"));
    head.assert_status(200);
    assert_eq!(
        head.header("content-length"),
        Some(big_bin().len().to_string().as_str())
    );
    let flow = flow_for(&proxy, "/big.bin");
    assert_eq!(flow["request"]["method"], "HEAD");
    assert!(flow["error"].is_null(), "{flow}");

    let expect = Curl::through(&proxy)
        .header("Expect: 100-continue")
        .data(vec![b'x'; 4096])
        .run(&apache.url(Vhost::Plain, "/echo"));
    expect.assert_status(200);
    assert_eq!(expect.body.len(), 4096);
}

/// Runs the Python `script` with the proxy's URL, its CA file and `args` as
/// arguments; what it printed, once it exited successfully.
fn python_client(script: &str, proxy: &Periscope, args: &[&str]) -> String {
    let output = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(proxy.proxy_url())
        .arg(proxy.ca_cert_path())
        .args(args)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{printed} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    printed
}

#[test]
fn fifty_keep_alive_requests_share_one_upstream_connection() {
    let apache = apache();
    let proxy = json_proxy(&[]);
    let url = apache.url(Vhost::Tls13, "/hello.txt");
    // A real keep-alive client: one requests.Session, one tunnel, 50 requests.
    let script = r#"
import sys, requests
proxy, ca, url = sys.argv[1:4]
session = requests.Session()
session.proxies = {"https": proxy}
statuses = [session.get(url, verify=ca).status_code for _ in range(50)]
print(",".join(map(str, statuses)))
"#;
    let printed = python_client(script, &proxy, &[&url]);
    assert_eq!(printed.trim(), vec!["200"; 50].join(","));
    assert!(
        wait_until(Duration::from_secs(10), || proxy.stdout_lines().len() >= 50),
        "50 flows printed"
    );
    let mut server_connections = std::collections::HashSet::new();
    let mut client_connections = std::collections::HashSet::new();
    for line in proxy.stdout_lines() {
        let flow: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(flow["response"]["status"], 200);
        server_connections.insert(flow["server"]["id"].as_u64().unwrap());
        client_connections.insert(flow["client"]["id"].as_u64().unwrap());
    }
    assert_eq!(
        client_connections.len(),
        1,
        "the client kept its connection"
    );
    assert_eq!(
        server_connections.len(),
        1,
        "one upstream connection for 50 requests"
    );
}

/// CPU time (ns) and name of each thread of `pid` whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> Vec<(String, u64)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let name = name.trim().to_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let schedstat = std::fs::read_to_string(task.path().join("schedstat")).unwrap();
        let on_cpu = schedstat
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        threads.push((name, on_cpu));
    }
    threads.sort();
    threads
}

#[test]
fn clients_are_served_on_one_connection_thread_per_core() {
    let apache = apache();
    let proxy = json_proxy(&[]);
    let cores = std::thread::available_parallelism().unwrap().get();
    let url = apache.url(Vhost::Tls13, "/hello.txt");
    // Sixteen clients at once, each with its own tunnel, spread over the threads.
    let script = r#"
import sys, requests, concurrent.futures
proxy, ca, url = sys.argv[1:4]
def client(_):
    session = requests.Session()
    session.proxies = {"https": proxy}
    return [session.get(url, verify=ca).status_code for _ in range(5)]
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    statuses = [s for c in pool.map(client, range(16)) for s in c]
print(",".join(map(str, statuses)))
"#;
    let printed = python_client(script, &proxy, &[&url]);
    assert_eq!(printed.trim(), vec!["200"; 80].join(","));

    let threads = threads_named(proxy.pid(), "connections-");
    let names: Vec<&str> = threads.iter().map(|(name, _)| name.as_str()).collect();
    let expected: Vec<String> = (0..cores).map(|i| format!("connections-{i}")).collect();
    assert_eq!(names, expected, "one connection thread per core");
    // Each did TLS work: a handshake pair alone is about a millisecond of CPU.
    for (name, on_cpu) in &threads {
        assert!(
            *on_cpu >= 1_000_000,
            "{name} ran {on_cpu} ns: it served no client ({threads:?})"
        );
    }
}

#[test]
fn the_timeline_has_every_milestone_in_order() {
    let apache = apache();
    let proxy = json_proxy(&[]);
    Curl::through(&proxy)
        .data("ping")
        .run(&apache.url(Vhost::Tls12, "/echo"))
        .assert_status(200);
    let flow = flow_for(&proxy, "/echo");
    let names = [
        "client_connected",
        "client_tls_established",
        "server_connect_initiated",
        "server_tcp_connected",
        "server_tls_established",
        "request_started",
        "request_complete",
        "response_started",
        "response_complete",
    ];
    let times: Vec<i64> = names
        .iter()
        .map(|name| milestone(&flow, name).unwrap_or_else(|| panic!("{name} missing: {flow}")))
        .collect();
    // The upstream connection is made while the client's handshake is still open.
    assert!(times[0] <= times[2], "{names:?} {times:?}");
    assert!(times[2] <= times[3] && times[3] <= times[4], "{times:?}");
    assert!(
        times[4] <= times[1],
        "upstream TLS before the client's: {times:?}"
    );
    assert!(times[1] <= times[5], "{times:?}");
    assert!(times[5] <= times[7] && times[7] <= times[8], "{times:?}");
}

/// The certificates a server sends with its own are on the flow, in order (here the
/// test root, which `s_server -cert_chain` sends after the leaf).
#[test]
fn the_certificates_a_server_sends_with_its_own_are_recorded_as_its_chain() {
    let pki = test_pki();
    let ca = pki.ca_cert.to_string_lossy().into_owned();
    let with_chain = OpensslServer::builder()
        .www()
        .arg("-cert_chain")
        .arg(&ca)
        .start();
    let alone = OpensslServer::builder().www().start();
    let proxy = json_proxy(&[]);
    Curl::through(&proxy)
        .run(&with_chain.url("/chain"))
        .assert_status(200);
    let flow = flow_for(&proxy, "/chain");
    let tls = &flow["server"]["tls"];
    assert_eq!(
        tls["peer_certificate"]["subject"]
            .as_str()
            .map(|s| s.contains("localhost")),
        Some(true),
        "{flow}"
    );
    let chain = tls["peer_chain"].as_array().cloned().unwrap_or_default();
    assert_eq!(chain.len(), 1, "{flow}");
    assert!(
        chain[0]["subject"]
            .as_str()
            .unwrap()
            .contains("Periscope Test Root"),
        "{flow}"
    );
    let printed = proxy.stdout().len();
    Curl::through(&proxy)
        .run(&alone.url("/alone"))
        .assert_status(200);
    let flow = flow_after(&proxy, printed, "/alone");
    assert!(
        flow["server"]["tls"]["peer_chain"].is_null(),
        "only its own certificate: {flow}"
    );
}

#[test]
fn an_untrusted_server_certificate_is_a_502_that_names_the_problem() {
    let pki = test_pki();
    let server = OpensslServer::builder()
        .tls1_2()
        .www()
        .cert(&pki.untrusted_cert, &pki.untrusted_key)
        .start();
    let proxy = text_proxy(&[]);
    let result = Curl::through(&proxy).run(&server.url("/"));
    result.assert_status(502);
    let body = result.body_text();
    assert!(
        body.contains(&format!("localhost:{}", server.port())),
        "names the server: {body}"
    );
    assert!(
        body.contains("self-signed certificate"),
        "names the verification error: {body}"
    );
    assert!(
        body.contains("--upstream-trusted-ca"),
        "says how to fix it: {body}"
    );
    assert_eq!(result.header("x-periscope-error"), Some("1"));
    let line = proxy.wait_for_stdout("error:", Duration::from_secs(10));
    assert!(line.contains("self-signed"), "{line}");
}

#[test]
fn an_expired_server_certificate_is_a_502_that_says_expired() {
    let pki = test_pki();
    let server = OpensslServer::builder()
        .tls1_2()
        .www()
        .cert(&pki.expired_cert, &pki.expired_key)
        .start();
    let proxy = text_proxy(&[]);
    let result = Curl::through(&proxy).run(&server.url("/"));
    result.assert_status(502);
    assert!(
        result.body_text().contains("expired"),
        "{}",
        result.body_text()
    );
}

#[test]
fn insecure_mode_skips_upstream_verification() {
    let pki = test_pki();
    let server = OpensslServer::builder()
        .tls1_2()
        .www()
        .cert(&pki.untrusted_cert, &pki.untrusted_key)
        .start();
    let proxy = text_proxy(&["-k"]);
    Curl::through(&proxy)
        .run(&server.url("/"))
        .assert_status(200);
}

#[test]
fn a_client_that_does_not_trust_periscopes_ca_is_told_which_file_to_install() {
    let pki = test_pki();
    let server = OpensslServer::builder().tls1_2().www().start();
    let proxy = text_proxy(&[]);
    // Trusting the servers' CA, not Periscope's: curl refuses the leaf (unknown_ca).
    let result = Curl::new()
        .proxy(proxy.proxy_url())
        .cacert(&pki.ca_cert)
        .run(&server.url("/"));
    assert_eq!(result.exit_code, 60, "{result:?}");
    let line = proxy.wait_for_stderr(
        "the client rejected Periscope's certificate",
        Duration::from_secs(10),
    );
    assert!(line.contains("unknown CA"), "{line}");
    let ca = proxy.ca_cert_path();
    assert!(
        line.contains(&format!("install {}", ca.display())),
        "{line}"
    );
}

fn closed_port() -> u16 {
    // Bound and dropped: nothing listens there.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_closed_port_is_a_fast_502_for_http_and_for_connect() {
    let proxy = text_proxy(&[]);
    let port = closed_port();
    let plain = Curl::through(&proxy).run(&format!("http://127.0.0.1:{port}/"));
    plain.assert_status(502);
    assert!(plain.time_total < 1.0, "took {} s", plain.time_total);
    assert!(
        plain.body_text().contains("Connection refused"),
        "{}",
        plain.body_text()
    );

    let tunnel = Curl::through(&proxy).run(&format!("https://127.0.0.1:{port}/"));
    assert!(tunnel.time_total < 1.0, "took {} s", tunnel.time_total);
    assert_eq!(
        tunnel.info["http_connect"], 502,
        "the CONNECT itself is refused: {tunnel:?}"
    );
    let line = proxy.wait_for_stdout("CONNECT", Duration::from_secs(10));
    assert!(
        line.contains("502") && line.contains(&port.to_string()),
        "{line}"
    );
}

/// A server that accepts connections and reads, but never answers.
fn silent_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        }
    });
    (port, handle)
}

#[test]
fn a_server_that_never_answers_is_a_504_after_the_response_timeout() {
    let (port, _server) = silent_server();
    let proxy = text_proxy(&["--response-timeout", "1s"]);
    let result = Curl::through(&proxy).run(&format!("http://127.0.0.1:{port}/slow"));
    result.assert_status(504);
    assert!(
        result.time_total >= 0.9 && result.time_total < 5.0,
        "{}",
        result.time_total
    );
    assert!(
        result
            .body_text()
            .contains("did not send a response within 1 s"),
        "{}",
        result.body_text()
    );
}

/// Sends `request` on a new connection to the proxy; returns the response head and
/// the stream, with any bytes read past the head pushed back in front of it.
fn raw_exchange(
    proxy: &Periscope,
    request: &[u8],
) -> (String, std::io::Chain<std::io::Cursor<Vec<u8>>, TcpStream>) {
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buffer[..n]);
                if response.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(e) => panic!(
                "no answer from the proxy: {e}; got {:?}",
                String::from_utf8_lossy(&response)
            ),
        }
    }
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |p| p + 4);
    let rest = response.split_off(end);
    (
        String::from_utf8_lossy(&response).into_owned(),
        std::io::Cursor::new(rest).chain(stream),
    )
}

#[test]
fn garbage_gets_a_400_and_the_next_request_is_served() {
    let apache = apache();
    let proxy = text_proxy(&[]);
    let (answer, mut stream) = raw_exchange(&proxy, b"\x16\x03garbage that is not HTTP\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    // ... and the connection is closed after it.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let (answer, _) = raw_exchange(&proxy, b"GET http://[bad/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "an invalid URL is rejected too: {answer:?}"
    );
    Curl::through(&proxy)
        .run(&apache.url(Vhost::Tls13, "/hello.txt"))
        .assert_status(200);
}

#[test]
fn an_invalid_connect_target_is_a_400() {
    let proxy = text_proxy(&[]);
    let (answer, _) = raw_exchange(&proxy, b"CONNECT nowhere HTTP/1.1\r\nHost: nowhere\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
}

#[test]
fn a_non_tls_connect_tunnel_is_relayed_as_raw_tcp() {
    // An echo server speaking a line protocol, not TLS.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buffer = [0u8; 64];
        let n = stream.read(&mut buffer).unwrap();
        stream.write_all(&buffer[..n]).unwrap();
    });
    let proxy = text_proxy(&[]);
    let (answer, mut stream) = raw_exchange(
        &proxy,
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    stream.get_mut().1.write_all(b"hello, raw world\n").unwrap();
    let mut echo = [0u8; 17];
    stream.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"hello, raw world\n");
}

#[test]
fn a_server_that_speaks_first_through_connect_is_relayed() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(b"220 smtp ready\r\n").unwrap();
        let mut buffer = [0u8; 64];
        let _ = stream.read(&mut buffer);
    });
    let proxy = text_proxy(&[]);
    let (answer, mut stream) = raw_exchange(
        &proxy,
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let mut greeting = [0u8; 16];
    stream.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"220 smtp ready\r\n");

    // A raw tunnel may stay silent for hours, so it has no idle timeout; TCP keepalive
    // on both of the proxy's sockets notices a peer that vanished without closing.
    let client_port = stream.get_ref().1.local_addr().unwrap().port();
    for (leg, filter) in [
        (
            "client",
            format!("( sport = :{} and dport = :{client_port} )", proxy.port()),
        ),
        ("server", format!("( dport = :{port} )")),
    ] {
        let out = std::process::Command::new("ss")
            .args(["-tnoH", "state", "established", &filter])
            .output()
            .expect("run ss (iproute2)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines().count() == 1 && text.contains("timer:(keepalive,"),
            "the proxy's {leg} socket of the tunnel has a keepalive timer: {text:?} (ss {filter})"
        );
    }
}

#[test]
fn a_connection_upgrade_is_relayed_both_ways() {
    let server = support::python_websocket_echo_server();
    let proxy = text_proxy(&[]);
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let request = format!(
        "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: {key}\r\n\r\n",
        port = server.port
    );
    let (answer, mut stream) = raw_exchange(&proxy, request.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer:?}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{answer:?}"
    );
    // A masked text frame "hi"; the echo comes back unmasked.
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend(b"hi".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.get_mut().1.write_all(&frame).unwrap();
    let mut echo = [0u8; 4];
    stream.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, &[0x81, 2, b'h', b'i']);
}

#[test]
fn the_ca_is_created_on_first_start_with_private_key_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let proxy = text_proxy(&[]);
    let dir = proxy.confdir();
    for file in [
        "periscope-ca.pem",
        "periscope-ca-cert.pem",
        "periscope-ca-cert.cer",
        "periscope-ca-cert.p12",
    ] {
        assert!(dir.join(file).exists(), "{file} missing");
    }
    let mode = std::fs::metadata(dir.join("periscope-ca.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn downloads_stream_with_bounded_memory() {
    const SIZE: u64 = 256 * 1024 * 1024;
    let apache = apache();
    // A sparse file: large on the wire, nothing on disk.
    let big = std::fs::File::create(apache.docroot().join("huge.bin")).unwrap();
    big.set_len(SIZE).unwrap();
    let proxy = text_proxy(&[]);
    let result = Curl::through(&proxy)
        .arg("-o")
        .arg("/dev/null")
        .max_time(Duration::from_secs(120))
        .run(&apache.url(Vhost::Tls12, "/huge.bin"));
    assert_eq!(
        result.info["size_download"].as_u64(),
        Some(SIZE),
        "{result:?}"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    eprintln!(
        "peak RSS after a {} MiB download: {} KiB",
        SIZE >> 20,
        peak_kib
    );
    assert!(peak_kib < 64 * 1024, "peak RSS {peak_kib} KiB");
}

/// The key-exchange groups in the first ClientHello that arrives at a listener (which
/// then closes: only the hello matters), as IANA numbers.
fn offered_groups(listener: TcpListener) -> std::thread::JoinHandle<Vec<u16>> {
    std::thread::spawn(move || {
        let (mut server, _) = listener.accept().expect("the proxy connects");
        server
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut data = Vec::new();
        let mut buffer = [0u8; 16384];
        // The record header's length says when the hello is whole (one record).
        while data.len() < 5 || data.len() < 5 + usize::from(u16::from_be_bytes([data[3], data[4]]))
        {
            let n = server.read(&mut buffer).expect("the ClientHello");
            assert!(n > 0, "closed before a whole ClientHello: {data:?}");
            data.extend_from_slice(&buffer[..n]);
        }
        let hello = &data[5 + 4..];
        let u16_at = |at: usize| usize::from(u16::from_be_bytes([hello[at], hello[at + 1]]));
        let mut at = 2 + 32; // version, random
        at += 1 + usize::from(hello[at]); // session id
        at += 2 + u16_at(at); // cipher suites
        at += 1 + usize::from(hello[at]); // compression methods
        let end = at + 2 + u16_at(at);
        at += 2;
        while at < end {
            let (kind, length) = (u16_at(at), u16_at(at + 2));
            if kind == 0x000a {
                let list = &hello[at + 6..at + 4 + length];
                return list
                    .chunks(2)
                    .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                    .collect();
            }
            at += 4 + length;
        }
        panic!("no supported_groups extension");
    })
}

#[test]
fn the_server_is_offered_post_quantum_key_exchange_only_when_the_client_offered_it() {
    const X25519_MLKEM768: u16 = 0x11ec;
    let proxy = text_proxy(&[]);

    // curl on this system's OpenSSL 3.0 offers classic groups only: so does Periscope,
    // though its own OpenSSL would offer X25519MLKEM768 by default.
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = origin.local_addr().unwrap().port();
    let seen = offered_groups(origin);
    let _ = Curl::through(&proxy)
        .max_time(Duration::from_secs(20))
        .run(&format!("https://localhost:{port}/"));
    let groups = seen.join().unwrap();
    assert!(
        !groups.is_empty() && !groups.contains(&X25519_MLKEM768),
        "{groups:x?}"
    );

    // A client whose OpenSSL offers X25519MLKEM768 (3.5 on, the default build's) gets
    // it offered to the server too, when Periscope's OpenSSL has it (the same library).
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = origin.local_addr().unwrap().port();
    let seen = offered_groups(origin);
    let _ = TlsClient::builder()
        .cafile(proxy.ca_cert_path())
        .via_proxy(&proxy.addr())
        .try_connect(&format!("localhost:{port}"));
    let groups = seen.join().unwrap();
    let library_has_it = library_has_ml_kem();
    assert_eq!(
        groups.contains(&X25519_MLKEM768),
        library_has_it,
        "{groups:x?} (OpenSSL {})",
        openssl::version::version()
    );

    // Pure ML-KEM counts as post-quantum too: a client offering MLKEM768 and X25519
    // gets the library's defaults offered to the server, not classic groups only.
    if library_has_it {
        let origin = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = origin.local_addr().unwrap().port();
        let seen = offered_groups(origin);
        let _ = TlsClient::builder()
            .cafile(proxy.ca_cert_path())
            .groups("MLKEM768:X25519")
            .via_proxy(&proxy.addr())
            .try_connect(&format!("localhost:{port}"));
        let groups = seen.join().unwrap();
        assert!(groups.contains(&X25519_MLKEM768), "{groups:x?}");
    }
}

const X25519_MLKEM768: &str = "X25519MLKEM768";

/// Whether the OpenSSL Periscope and these tests link has ML-KEM (3.5 on: the default
/// build's).
fn library_has_ml_kem() -> bool {
    openssl::version::number() >= 0x3050_0000
}

/// A client on that same OpenSSL (which offers X25519MLKEM768 when it has it), through
/// `proxy` to `localhost:port`.
fn client_through(proxy: &Periscope, port: u16) -> TlsClient {
    TlsClient::builder()
        .cafile(proxy.ca_cert_path())
        .via_proxy(&proxy.addr())
        .connect(&format!("localhost:{port}"))
}

/// The flow records `group` as the key exchange of its server leg and of its client
/// leg.
fn assert_both_legs_agreed_on(flow: &Value, group: &str) {
    assert_eq!(flow["server"]["tls"]["key_exchange"], group, "{flow}");
    assert_eq!(flow["client"]["tls"]["key_exchange"], group, "{flow}");
}

/// What `key_exchange_origin.py` answered: the group agreed on with Periscope, and
/// whether Periscope's ClientHello listed X25519MLKEM768.
fn origin_key_exchange(body: &[u8]) -> (String, bool) {
    let seen: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
    (
        seen["group"].as_str().unwrap_or_default().to_owned(),
        seen["offered_post_quantum"].as_bool().unwrap(),
    )
}

#[test]
fn each_leg_agrees_on_the_kind_of_key_exchange_its_peer_would_have_had_directly() {
    // Periscope's own OpenSSL is the one the post-quantum client below runs on.
    let library_has_it = library_has_ml_kem();
    let origin = key_exchange_origin();
    let proxy = json_proxy(&[]);

    // A post-quantum client and a post-quantum server: the hybrid on both legs.
    let mut client = client_through(&proxy, origin.port);
    let response = client.get("/pq-client");
    assert_eq!(response.status, 200, "{response:?}");
    let (group, offered) = origin_key_exchange(&response.body);
    assert_eq!(offered, library_has_it);
    let flow = flow_for(&proxy, "/pq-client");
    if library_has_it {
        assert_eq!(group, X25519_MLKEM768);
        assert_both_legs_agreed_on(&flow, X25519_MLKEM768);
    }

    // A classic client (curl on the system's OpenSSL 3.0) of the same server: the
    // server is offered no ML-KEM group, and both legs agree on X25519.
    let result = Curl::through(&proxy)
        .max_time(Duration::from_secs(20))
        .run(&format!("https://localhost:{}/classic-client", origin.port));
    assert_eq!(result.status, 200, "{result:?}");
    assert_eq!(
        origin_key_exchange(&result.body),
        ("x25519".to_owned(), false)
    );
    let flow = flow_for(&proxy, "/classic-client");
    assert_both_legs_agreed_on(&flow, "x25519");

    // The post-quantum client again: the server is still offered the hybrid (a
    // classic client's connection says nothing about what the server prefers).
    let mut client = client_through(&proxy, origin.port);
    let response = client.get("/pq-client-again");
    assert_eq!(origin_key_exchange(&response.body).1, library_has_it);
}

/// The supported_groups of each ClientHello `openssl s_server -trace` printed, as
/// the names it prints (`ecdh_x25519 (29)`, `UNKNOWN (4588)`).
fn groups_offered_to(server: &OpensslServer) -> Vec<Vec<String>> {
    let mut hellos = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in server.stdout_lines() {
        if line.contains("extension_type=supported_groups") {
            current = Some(Vec::new());
        } else if line.contains("extension_type=") {
            hellos.extend(current.take());
        } else if let Some(groups) = current.as_mut() {
            groups.push(line.trim().to_owned());
        }
    }
    hellos.extend(current);
    hellos
}

#[test]
fn a_server_that_answered_post_quantum_with_a_classic_group_is_offered_classic_groups_next() {
    let library_has_it = library_has_ml_kem();
    // The system's OpenSSL 3.0: no ML-KEM, so it picks X25519 from the hybrid offer.
    let server = OpensslServer::builder()
        .tls1_3()
        .www()
        .arg("-trace")
        .start();
    let proxy = json_proxy(&[]);
    for path in ["/first", "/second"] {
        let mut client = client_through(&proxy, server.port());
        let response = client.get(path);
        assert_eq!(response.status, 200, "{response:?}");
        let flow = flow_for(&proxy, path);
        // The client offered the hybrid, and gets what the server chose.
        assert_both_legs_agreed_on(&flow, "x25519");
    }
    let offers = groups_offered_to(&server);
    assert_eq!(offers.len(), 2, "{}", server.describe());
    let hybrid = "UNKNOWN (4588)".to_owned();
    assert_eq!(offers[0].contains(&hybrid), library_has_it, "{offers:?}");
    assert!(!offers[1].contains(&hybrid), "{offers:?}");
    assert!(offers[1].iter().any(|g| g.contains("x25519")), "{offers:?}");
}

/// An HTTPS server on a thread, on the OpenSSL Periscope links, whose `i`-th
/// connection accepts only the key-exchange groups `groups[i]` and answers one request
/// if its handshake completed. Says, per connection, whether it did (`false` too for a
/// connection that never came within 20 s).
fn https_server_changing_groups(
    groups: &'static [&'static str],
) -> (u16, std::thread::JoinHandle<Vec<bool>>) {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVersion};
    let pki = test_pki();
    let (cert, key) = (pki.server_cert.clone(), pki.server_key.clone());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let accept = || {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if let Ok((tcp, _)) = listener.accept() {
                    tcp.set_nonblocking(false).unwrap();
                    return Some(tcp);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        };
        groups
            .iter()
            .map(|groups| {
                let mut builder =
                    SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
                builder.set_certificate_chain_file(&cert).unwrap();
                builder
                    .set_private_key_file(&key, SslFiletype::PEM)
                    .unwrap();
                builder
                    .set_min_proto_version(Some(SslVersion::TLS1_3))
                    .unwrap();
                builder.set_groups_list(groups).unwrap();
                let Some(tcp) = accept() else {
                    return false;
                };
                tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let Ok(mut tls) = builder.build().accept(tcp) else {
                    return false;
                };
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buffer) {
                        Ok(n) if n > 0 => head.extend_from_slice(&buffer[..n]),
                        _ => return false,
                    }
                }
                tls.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                )
                .unwrap();
                let _ = tls.shutdown();
                true
            })
            .collect()
    });
    (port, handle)
}

#[test]
fn a_server_that_stops_accepting_classic_groups_is_asked_again_with_the_clients_groups() {
    if !library_has_ml_kem() {
        // Built against a library without ML-KEM (`--no-default-features` on
        // Debian 12): no server here can ask for it, and Periscope never offers it.
        let mut builder = openssl::ssl::SslAcceptor::mozilla_intermediate_v5(
            openssl::ssl::SslMethod::tls_server(),
        )
        .unwrap();
        assert!(builder.set_groups_list("X25519MLKEM768").is_err());
        return;
    }
    // The server accepts X25519 at first, then only the hybrid.
    let (port, server) =
        https_server_changing_groups(&["X25519", "X25519MLKEM768", "X25519MLKEM768"]);
    let proxy = json_proxy(&[]);
    for path in ["/classic", "/post-quantum-only"] {
        let mut client = client_through(&proxy, port);
        let response = client.get(path);
        assert_eq!(response.status, 200, "{path}: {response:?}");
    }
    // The second request's first connection offered classic groups only (the server
    // had chosen X25519), which the server refused; Periscope asked again at once
    // with the client's groups.
    assert_eq!(server.join().unwrap(), [true, false, true]);
    let flow = flow_for(&proxy, "/post-quantum-only");
    assert_both_legs_agreed_on(&flow, X25519_MLKEM768);
}

/// A keep-alive client that waits between its requests, through a proxy logging at
/// debug level: each `pause` in `steps` is slept, each path is fetched (`POST ` before
/// a path sends a body to it). Prints one status line per request.
fn pausing_client(proxy: &Periscope, base: &str, steps: &[&str]) -> Vec<String> {
    let script = r#"
import sys, time, requests
proxy, ca, base = sys.argv[1:4]
session = requests.Session()
session.proxies = {"https": proxy}
for step in sys.argv[4:]:
    if step.startswith("sleep "):
        time.sleep(float(step[6:]))
    elif step.startswith("POST "):
        r = session.post(base + step[5:], data=b"x" * 100000, verify=ca, timeout=20)
        print(r.status_code, len(r.content))
    else:
        r = session.get(base + step, verify=ca, timeout=20)
        print(r.status_code, r.text.strip()[:40])
"#;
    let args: Vec<&str> = std::iter::once(base).chain(steps.iter().copied()).collect();
    python_client(script, proxy, &args)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn debug_proxy() -> Periscope {
    let ca = test_pki().ca_cert.to_string_lossy().into_owned();
    Periscope::builder()
        .subcommand(Some("dump"))
        .args(["--json", "--upstream-trusted-ca", ca.as_str()])
        .env("PERISCOPE_LOG", "periscope_proxy=debug")
        .start()
}

/// Lines of the proxy's log that contain every one of `needles`.
fn log_count(proxy: &Periscope, needles: &[&str]) -> usize {
    proxy
        .stderr_lines()
        .iter()
        .filter(|line| needles.iter().all(|needle| line.contains(needle)))
        .count()
}

/// An idle HTTP/1.1 connection leaves hyper after a second (its TLS streams stay
/// open, hyper's buffers go) and comes back when its client speaks: the requests after
/// each pause, a 100 kB upload among them, go on the same client and server
/// connections.
#[test]
fn an_idle_keep_alive_connection_is_parked_and_serves_its_next_requests() {
    let apache = apache();
    let proxy = debug_proxy();
    let base = apache.url(Vhost::Tls13, "");
    let printed = pausing_client(
        &proxy,
        &base,
        &[
            "/hello.txt",
            "sleep 1.6",
            "/hello.txt",
            "sleep 1.6",
            "POST /echo",
            "/hello.txt",
        ],
    );
    assert_eq!(printed.len(), 4, "{printed:?}");
    assert!(
        printed.iter().all(|line| line.starts_with("200 ")),
        "{printed:?}"
    );
    assert_eq!(printed[2], "200 100000");
    let flows = proxy.json_flows(4, Duration::from_secs(10));
    let clients: std::collections::HashSet<u64> = flows
        .iter()
        .map(|flow| flow["client"]["id"].as_u64().unwrap())
        .collect();
    let servers: std::collections::HashSet<u64> = flows
        .iter()
        .map(|flow| flow["server"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(clients.len(), 1, "one client connection: {flows:?}");
    assert_eq!(
        servers.len(),
        1,
        "the server connection outlived both pauses"
    );
    assert!(
        wait_until(Duration::from_secs(5), || log_count(
            &proxy,
            &["parked connection resumed", "servers=1"]
        ) >= 2),
        "{}",
        proxy.stderr_text()
    );
    assert_eq!(
        log_count(&proxy, &["idle connection parked", "servers=1"]),
        2,
        "{}",
        proxy.stderr_text()
    );
}

/// A server that closes a keep-alive connection while it is parked (Apache after its
/// KeepAliveTimeout) is noticed and let go: the next request opens a new one instead
/// of failing on the dead one.
#[test]
fn a_server_that_closes_a_parked_connection_is_let_go_and_the_next_request_reconnects() {
    let apache = Apache::builder()
        .pki(test_pki())
        .extra_config("KeepAliveTimeout 2")
        .start();
    let proxy = debug_proxy();
    let base = apache.url(Vhost::Tls12, "");
    let printed = pausing_client(&proxy, &base, &["/hello.txt", "sleep 3.5", "/hello.txt"]);
    assert_eq!(printed.len(), 2, "{printed:?}");
    assert!(
        printed.iter().all(|line| line.starts_with("200 ")),
        "{printed:?}"
    );
    let flows = proxy.json_flows(2, Duration::from_secs(10));
    assert!(
        flows.iter().all(|flow| flow["error"].is_null()),
        "{flows:?}"
    );
    assert_ne!(
        flows[0]["server"]["id"], flows[1]["server"]["id"],
        "a new server connection after Apache closed the first"
    );
    assert_eq!(
        flows[0]["client"]["id"], flows[1]["client"]["id"],
        "the client's connection stayed"
    );
    assert!(
        log_count(&proxy, &["parked connection resumed", "servers=0"]) >= 1,
        "{}",
        proxy.stderr_text()
    );
}

/// The story Periscope exists for, after a pause: a kept connection that was parked
/// asks IIS-style for a client certificate by TLS 1.2 renegotiation after its next
/// request, and the renegotiation is driven on the resumed connection.
#[test]
fn a_renegotiation_after_the_request_works_on_a_connection_that_was_parked() {
    let apache = apache();
    let proxy = debug_proxy();
    let base = apache.url(Vhost::Tls12, "");
    let printed = pausing_client(
        &proxy,
        &base,
        &[
            "/hello.txt",
            "sleep 1.6",
            "/vedauth/ok.txt",
            "sleep 1.6",
            "/vedauth/ok.txt",
        ],
    );
    assert_eq!(printed.len(), 3, "{printed:?}");
    assert!(printed[0].starts_with("200 "), "{printed:?}");
    assert_eq!(printed[1], format!("200 {}", VEDAUTH_BODY.trim()));
    assert_eq!(printed[2], format!("200 {}", VEDAUTH_BODY.trim()));
    assert!(apache.renegotiation_count() >= 1, "{}", apache.logs());
    assert!(
        log_count(&proxy, &["parked connection resumed", "servers=1"]) >= 2,
        "{}",
        proxy.stderr_text()
    );
}
