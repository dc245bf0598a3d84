//! The proxy modes with real peers: reverse in front of Apache (its renegotiating
//! location included), upstream through tinyproxy and microsocks, the SOCKS5 listener
//! with curl and Python `requests`, transparent interception between network
//! namespaces with an iptables REDIRECT, hosts passed through untouched, and SOCKS5
//! input that is not SOCKS5.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;

const WAIT: Duration = Duration::from_secs(15);

/// Periscope in `dump --json` with `args`, trusting the test CA upstream.
fn json_proxy(args: &[&str]) -> Periscope {
    let ca = test_pki().ca_cert.to_string_lossy().into_owned();
    let mut all = vec!["--json", "--upstream-trusted-ca", ca.as_str()];
    all.extend_from_slice(args);
    Periscope::start_dump(&all)
}

/// The first flow printed from line `start` on whose URL or TCP target contains
/// `needle`.
fn flow_after(proxy: &Periscope, start: usize, needle: &str) -> Value {
    let needle = needle.to_owned();
    let line = proxy.wait_for_stdout_after(
        start,
        move |line: &str| {
            serde_json::from_str::<Value>(line).is_ok_and(|flow| {
                let request = &flow["request"];
                let target = format!(
                    "{}://{}:{}{}",
                    request["scheme"].as_str().unwrap_or(""),
                    request["host"].as_str().unwrap_or(""),
                    request["port"],
                    request["path"].as_str().unwrap_or("")
                );
                target.contains(&needle)
            })
        },
        WAIT,
    );
    serde_json::from_str(&line).unwrap()
}

/// A peer program, killed (by its pid) when dropped.
struct Daemon {
    child: Child,
    name: String,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Runs `program args` with `hosts` as its /etc/hosts (a private mount
    /// namespace), so that names only it can resolve prove who resolved them.
    fn start(program: &str, args: &[String], hosts: &str, port: u16) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let hosts_file = dir.path().join("hosts");
        std::fs::write(&hosts_file, hosts).unwrap();
        let log = dir.path().join("output.log");
        let program_path = require_tool(program);
        let script = format!(
            "mount --bind {} /etc/hosts && exec \"$0\" \"$@\"",
            hosts_file.display()
        );
        let child = Command::new(require_tool("unshare"))
            .arg("--mount")
            .arg("sh")
            .arg("-c")
            .arg(script)
            .arg(&program_path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let mut daemon = Daemon {
            child,
            name: program.to_owned(),
            _dir: dir,
        };
        let up = wait_until(WAIT, || TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(
            up,
            "{program} did not listen on {port}: {}",
            daemon.output()
        );
        assert!(
            daemon.child.try_wait().unwrap().is_none(),
            "{}",
            daemon.output()
        );
        daemon
    }

    fn dir(&self) -> &Path {
        self._dir.path()
    }

    fn output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir().join(name)).unwrap_or_default();
        format!(
            "{} stdout:\n{}\nstderr:\n{}",
            self.name,
            read("output.log"),
            read("stderr.log")
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `socks-only.test` resolves for the peers started with this, and nowhere else.
const PEER_HOSTS: &str = "127.0.0.1 localhost\n127.0.0.1 socks-only.test\n::1 localhost\n";

// ---------------------------------------------------------------------------------
// reverse
// ---------------------------------------------------------------------------------

#[test]
fn reverse_mode_reaches_apache_over_tls_and_answers_its_renegotiation() {
    let apache = Apache::start();
    let port = apache.port(Vhost::Tls12);
    let mode = format!("reverse:https://localhost:{port}@0");
    let proxy = json_proxy(&["--mode", &mode]);
    let listener = proxy.listener("reverse:");
    let url = format!("https://localhost:{}/vedauth/ok.txt", listener.port());
    let before = apache.renegotiation_count();
    let result = Curl::new()
        .cacert(proxy.ca_cert_path())
        .arg("--resolve")
        .arg(format!("localhost:{}:127.0.0.1", listener.port()))
        .run(&url);
    result.assert_status(200);
    assert_eq!(result.body_text(), VEDAUTH_BODY, "{result:?}");
    assert_eq!(
        result.info["ssl_verify_result"], 0,
        "Periscope's leaf, trusted"
    );
    assert_eq!(
        apache.renegotiation_count(),
        before + 1,
        "{}",
        apache.logs()
    );
    let flow = flow_after(&proxy, 0, "/vedauth/ok.txt");
    assert_eq!(flow["request"]["host"], "localhost");
    assert_eq!(
        flow["request"]["port"], port,
        "the flow names the server: {flow}"
    );
    assert_eq!(
        flow["listener"]["mode"],
        format!("reverse:https://localhost:{port}")
    );
    let events = flow["timeline"].to_string();
    assert!(events.contains("renegotiation"), "{flow}");
    // The Host header the server saw is its own name, not Periscope's address.
    let host = flow["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"].as_str().unwrap().eq_ignore_ascii_case("host"))
        .map(|h| h["value"].as_str().unwrap().to_owned());
    assert_eq!(host.as_deref(), Some(format!("localhost:{port}").as_str()));
}

#[test]
fn reverse_mode_serves_plain_http_clients_and_reports_a_dead_server() {
    let apache = Apache::start();
    let port = apache.port(Vhost::Tls13);
    let dead = free_port();
    let proxy = json_proxy(&[
        "--mode",
        &format!("reverse:https://localhost:{port}@0"),
        "--mode",
        &format!("reverse:http://127.0.0.1:{dead}@0"),
    ]);
    let live = proxy.listener(&format!("reverse:https://localhost:{port}"));
    let result = Curl::new().run(&format!("http://127.0.0.1:{}/hello.txt", live.port()));
    result.assert_status(200);
    assert_eq!(result.body_text(), HELLO_BODY);
    let flow = flow_after(&proxy, 0, "/hello.txt");
    assert_eq!(flow["request"]["scheme"], "https", "{flow}");
    assert_eq!(flow["server"]["tls"]["version"], "TLSv1.3");

    let gone = proxy.listener(&format!("reverse:http://127.0.0.1:{dead}"));
    let result = Curl::new().run(&format!("http://127.0.0.1:{}/x", gone.port()));
    result.assert_status(502);
    assert!(result.body_text().contains("connect"), "{result:?}");
}

/// The server sees its own name in Host, or the name the client used with
/// `--keep-host-header` (a virtual host behind the reverse proxy).
#[test]
fn reverse_mode_rewrites_host_unless_keep_host_header_is_given() {
    let origin = PythonPeer::start("fault_origin.py", &[]);
    let mode = format!("reverse:http://127.0.0.1:{}@0", origin.port);
    for (extra, expected) in [
        (None, format!("127.0.0.1:{}", origin.port)),
        (Some("--keep-host-header"), "app.example:8443".to_owned()),
    ] {
        let mut args = vec!["--mode", mode.as_str()];
        args.extend(extra);
        let proxy = json_proxy(&args);
        let listener = proxy.listener("reverse:");
        let before = recorded(&origin).len();
        Curl::new()
            .header("Host: app.example:8443")
            .run(&format!("http://127.0.0.1:{}/record/host", listener.port()))
            .assert_status(200);
        let seen = recorded_at_least(&origin, before + 1);
        assert_eq!(
            recorded_header(&seen[before], "host"),
            Some(expected.as_str()),
            "{extra:?}: {seen:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// upstream
// ---------------------------------------------------------------------------------

fn tinyproxy(auth: Option<(&str, &str)>) -> (Daemon, u16) {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tinyproxy.log");
    let mut config = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Info\n\
         MaxClients 50\nAllow 127.0.0.1\n",
        log.display()
    );
    if let Some((user, pass)) = auth {
        config.push_str(&format!("BasicAuth {user} {pass}\n"));
    }
    let conf = dir.path().join("tinyproxy.conf");
    std::fs::write(&conf, config).unwrap();
    let args = vec!["-d".to_owned(), "-c".to_owned(), conf.display().to_string()];
    let daemon = Daemon::start("tinyproxy", &args, PEER_HOSTS, port);
    // The config and log live as long as the daemon's own temp dir.
    std::fs::rename(dir.path(), daemon.dir().join("config")).unwrap();
    (daemon, port)
}

fn tinyproxy_log(daemon: &Daemon) -> String {
    std::fs::read_to_string(daemon.dir().join("config/tinyproxy.log")).unwrap_or_default()
}

/// tinyproxy's log, once it shows a CONNECT to localhost:`port`.
fn assert_tinyproxy_saw_connect(daemon: &Daemon, port: u16) -> String {
    let log = tinyproxy_log(daemon);
    assert!(
        log.contains(&format!("CONNECT localhost:{port} HTTP/1.1")),
        "tinyproxy saw no CONNECT to localhost:{port}:\n{log}"
    );
    log
}

#[test]
fn upstream_http_mode_sends_connect_and_absolute_form_through_tinyproxy_with_credentials() {
    let apache = Apache::start();
    let (tinyproxy, tiny_port) = tinyproxy(Some(("scout", "s3cret")));
    let mode = format!("upstream:http://127.0.0.1:{tiny_port}");
    let proxy = json_proxy(&["--mode", &mode, "--upstream-auth", "scout:s3cret"]);

    let https = apache.url(Vhost::Tls13, "/hello.txt");
    let result = Curl::through(&proxy).run(&https);
    result.assert_status(200);
    assert_eq!(result.body_text(), HELLO_BODY);
    // A name only the upstream proxy can resolve: Periscope sent it as it was.
    let plain = format!(
        "http://socks-only.test:{}/hello.txt",
        apache.port(Vhost::Plain)
    );
    let result = Curl::through(&proxy).run(&plain);
    result.assert_status(200);
    assert_eq!(result.body_text(), HELLO_BODY);

    let log = assert_tinyproxy_saw_connect(&tinyproxy, apache.port(Vhost::Tls13));
    assert!(
        log.contains(&format!("GET {plain} HTTP/1.1")),
        "tinyproxy saw no absolute-form GET:\n{log}"
    );
    let flow = flow_after(&proxy, 0, "socks-only.test");
    assert_eq!(flow["listener"]["mode"], mode);
    assert_eq!(
        flow["server"]["peer"],
        format!("127.0.0.1:{tiny_port}"),
        "the server connection is the upstream proxy's: {flow}"
    );
    assert!(
        !flow.to_string().contains("s3cret"),
        "the credentials stay out of the flow"
    );
}

#[test]
fn upstream_http_mode_without_the_proxys_credentials_fails_with_its_answer() {
    let apache = Apache::start();
    let (_tinyproxy, tiny_port) = tinyproxy(Some(("scout", "s3cret")));
    let proxy = json_proxy(&["--mode", &format!("upstream:http://127.0.0.1:{tiny_port}")]);
    let result = Curl::through(&proxy).run(&apache.url(Vhost::Tls13, "/hello.txt"));
    assert_ne!(result.status, 200, "{result:?}");
    let flow = flow_after(&proxy, 0, "localhost");
    let error = flow["error"]["message"].as_str().unwrap_or_default();
    assert!(error.contains("407"), "{flow}");
    assert!(error.contains("--upstream-auth"), "{flow}");
}

/// stunnel in front of `port`: a proxy spoken to over TLS (the test PKI's
/// localhost certificate), as an `upstream:https://` proxy is.
fn stunnel_in_front_of(port: u16) -> (Daemon, u16) {
    let pki = test_pki();
    let tls_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("stunnel.conf");
    std::fs::write(
        &conf,
        format!(
            "foreground = yes\npid =\n[proxy]\naccept = 127.0.0.1:{tls_port}\n\
             connect = 127.0.0.1:{port}\ncert = {}\nkey = {}\n",
            pki.server_cert.display(),
            pki.server_key.display()
        ),
    )
    .unwrap();
    let args = vec![conf.display().to_string()];
    let daemon = Daemon::start("stunnel4", &args, PEER_HOSTS, tls_port);
    std::fs::rename(dir.path(), daemon.dir().join("config")).unwrap();
    (daemon, tls_port)
}

#[test]
fn upstream_https_mode_speaks_tls_to_the_upstream_proxy() {
    let apache = Apache::start();
    let (tinyproxy, tiny_port) = tinyproxy(None);
    let (_stunnel, tls_port) = stunnel_in_front_of(tiny_port);
    let mode = format!("upstream:https://localhost:{tls_port}");
    let proxy = json_proxy(&["--mode", &mode]);
    let result = Curl::through(&proxy).run(&apache.url(Vhost::Tls13, "/hello.txt"));
    result.assert_status(200);
    assert_eq!(result.body_text(), HELLO_BODY);
    // The CONNECT reached the proxy behind the TLS listener.
    assert_tinyproxy_saw_connect(&tinyproxy, apache.port(Vhost::Tls13));
    let flow = flow_after(&proxy, 0, "localhost");
    assert_eq!(
        flow["server"]["peer"],
        format!("127.0.0.1:{tls_port}"),
        "{flow}"
    );
    // Plain TCP to the TLS port is no proxy: nothing gets through without TLS.
    let plain = json_proxy(&["--mode", &format!("upstream:http://localhost:{tls_port}")]);
    let refused = Curl::through(&plain).run(&apache.url(Vhost::Tls13, "/hello.txt"));
    assert_ne!(refused.status, 200, "{refused:?}");
}

fn microsocks(credentials: Option<(&str, &str)>) -> (Daemon, u16) {
    let port = free_port();
    let mut args = vec![
        "-i".to_owned(),
        "127.0.0.1".to_owned(),
        "-p".to_owned(),
        port.to_string(),
    ];
    if let Some((user, pass)) = credentials {
        args.extend(["-u".into(), user.into(), "-P".into(), pass.into()]);
    }
    (Daemon::start("microsocks", &args, PEER_HOSTS, port), port)
}

#[test]
fn upstream_socks5_mode_lets_the_socks_server_resolve_names_with_and_without_credentials() {
    let apache = Apache::start();
    for credentials in [None, Some(("scout", "s3cret"))] {
        let (_socks, socks_port) = microsocks(credentials);
        let mode = match credentials {
            Some((user, pass)) => format!("upstream:socks5://{user}:{pass}@127.0.0.1:{socks_port}"),
            None => format!("upstream:socks5://127.0.0.1:{socks_port}"),
        };
        let proxy = json_proxy(&["--mode", &mode, "-k"]);
        // socks-only.test resolves only for the SOCKS server: it must be the one that
        // resolved it.
        for (vhost, scheme) in [(Vhost::Plain, "http"), (Vhost::Tls13, "https")] {
            let url = format!(
                "{scheme}://socks-only.test:{}/hello.txt",
                apache.port(vhost)
            );
            let result = Curl::through(&proxy).run(&url);
            result.assert_status(200);
            assert_eq!(result.body_text(), HELLO_BODY, "{credentials:?} {url}");
        }
        let flow = flow_after(&proxy, 0, "https://socks-only.test");
        assert_eq!(flow["server"]["peer"], format!("127.0.0.1:{socks_port}"));
        assert!(!flow["listener"]["mode"]
            .as_str()
            .unwrap()
            .contains("s3cret"));
    }
    // Wrong credentials: the SOCKS server's refusal, in the flow.
    let (_socks, socks_port) = microsocks(Some(("scout", "s3cret")));
    let mode = format!("upstream:socks5://scout:wrong@127.0.0.1:{socks_port}");
    let proxy = json_proxy(&["--mode", &mode]);
    let result = Curl::through(&proxy).run(&apache.url(Vhost::Tls13, "/hello.txt"));
    assert_ne!(result.status, 200);
    let flow = flow_after(&proxy, 0, "localhost");
    assert!(
        flow["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("upstream proxy"),
        "{flow}"
    );
}

// ---------------------------------------------------------------------------------
// socks5 listener
// ---------------------------------------------------------------------------------

#[test]
fn socks5_mode_serves_curl_to_http_and_https_origins_and_records_the_mode() {
    let apache = Apache::start();
    let proxy = json_proxy(&["--mode", "socks5@0"]);
    let socks = proxy.listener("socks5");
    for vhost in [Vhost::Plain, Vhost::Tls12] {
        let url = apache.url(vhost, "/hello.txt");
        let result = Curl::new()
            .cacert(proxy.ca_cert_path())
            .arg("--socks5-hostname")
            .arg(socks.to_string())
            .run(&url);
        result.assert_status(200);
        assert_eq!(result.body_text(), HELLO_BODY, "{url}");
    }
    let flow = flow_after(&proxy, 0, "https://localhost");
    assert_eq!(flow["listener"]["mode"], "socks5");
    assert_eq!(
        flow["client"]["tls"]["sni"], "localhost",
        "TLS intercepted: {flow}"
    );
    // The renegotiating location works the same through SOCKS5.
    let before = apache.renegotiation_count();
    let result = Curl::new()
        .cacert(proxy.ca_cert_path())
        .arg("--socks5-hostname")
        .arg(socks.to_string())
        .run(&apache.url(Vhost::Tls12, "/vedauth/ok.txt"));
    result.assert_status(200);
    assert_eq!(apache.renegotiation_count(), before + 1);
}

#[test]
fn socks5_mode_with_proxyauth_serves_python_requests_over_socks5h() {
    let apache = Apache::start();
    let proxy = json_proxy(&["--mode", "socks5@0", "--proxyauth", "scout:s3cret"]);
    let socks = proxy.listener("socks5");
    let script = r#"
import sys, requests
socks, ca, plain, tls, good = sys.argv[1:6]
proxies = {"http": socks, "https": socks}
for url in (plain, tls):
    r = requests.get(url, proxies=proxies, verify=ca, timeout=20)
    print(r.status_code, r.text.strip())
bad = socks.replace(good, "scout:wrong")
try:
    requests.get(plain, proxies={"http": bad}, timeout=20)
    print("bad credentials accepted")
except requests.exceptions.ConnectionError as error:
    print("refused:", type(error).__name__)
"#;
    let good = "scout:s3cret";
    let output = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(format!("socks5h://{good}@{socks}"))
        .arg(proxy.ca_cert_path())
        .arg(apache.url(Vhost::Plain, "/hello.txt"))
        .arg(apache.url(Vhost::Tls13, "/hello.txt"))
        .arg(good)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let hello = HELLO_BODY.trim();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            format!("200 {hello}").as_str(),
            format!("200 {hello}").as_str(),
            "refused: ConnectionError"
        ],
        "{}\n{}",
        text,
        String::from_utf8_lossy(&output.stderr)
    );
    flow_after(&proxy, 0, "https://localhost");
}

/// A TCP echo server on loopback, for the relay of what is neither TLS nor HTTP.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

/// Opens a SOCKS5 CONNECT to `target` (by domain name) without credentials.
fn socks_connect(socks: SocketAddr, host: &str, port: u16) -> (TcpStream, [u8; 10]) {
    let mut stream = TcpStream::connect(socks).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(&[5, 1, 0]).unwrap();
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).unwrap();
    assert_eq!(choice, [5, 0]);
    let mut request = vec![5, 1, 0, 3, host.len() as u8];
    request.extend_from_slice(host.as_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).unwrap();
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).unwrap();
    (stream, reply)
}

#[test]
fn socks5_mode_relays_a_tcp_echo_service_and_records_a_tcp_flow() {
    let echo = echo_server();
    let proxy = json_proxy(&["--mode", "socks5@0"]);
    let socks = proxy.listener("socks5");
    let (mut stream, reply) = socks_connect(socks, "localhost", echo.port());
    assert_eq!(reply[1], 0, "succeeded: {reply:?}");
    stream.write_all(b"ping over socks\n").unwrap();
    let mut echoed = [0u8; 16];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping over socks\n");
    drop(stream);
    let flow = flow_after(&proxy, 0, &format!("tcp://localhost:{}", echo.port()));
    assert_eq!(flow["tcp"]["reason"], "not_http", "{flow}");
    assert_eq!(flow["tcp"]["from_client"]["size"], 16);
    assert_eq!(flow["tcp"]["from_server"]["size"], 16);
    assert_eq!(flow["listener"]["mode"], "socks5");
}

#[test]
fn malformed_socks5_input_gets_the_right_reply_or_a_closed_connection() {
    let proxy = json_proxy(&["--mode", "socks5@0", "--proxyauth", "scout:s3cret"]);
    let socks = proxy.listener("socks5");
    let exchange = |input: &[u8]| -> Vec<u8> {
        let mut stream = TcpStream::connect(socks).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.write_all(input).unwrap();
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        answer
    };
    // SOCKS4: not our version, closed without a word.
    assert_eq!(exchange(&[4, 1, 0, 80, 127, 0, 0, 1, 0]), b"");
    // No acceptable method (only "no authentication", credentials are required).
    assert_eq!(exchange(&[5, 1, 0]), [5, 0xff]);
    // Wrong password: RFC 1929 failure status.
    let mut wrong = vec![5, 1, 2, 1, 5];
    wrong.extend_from_slice(b"scout");
    wrong.push(5);
    wrong.extend_from_slice(b"wrong");
    let answer = exchange(&wrong);
    assert_eq!(answer[..2], [5, 2], "{answer:?}");
    assert_eq!(answer[2], 1, "{answer:?}");
    assert_ne!(answer[3], 0, "authentication must fail: {answer:?}");
    let authenticated = |rest: &[u8]| {
        let mut input = vec![5, 1, 2, 1, 5];
        input.extend_from_slice(b"scout");
        input.push(6);
        input.extend_from_slice(b"s3cret");
        input.extend_from_slice(rest);
        let answer = exchange(&input);
        assert_eq!(answer[..4], [5, 2, 1, 0], "{answer:?}");
        answer[4..].to_vec()
    };
    // BIND: command not supported (7).
    let answer = authenticated(&[5, 2, 0, 1, 127, 0, 0, 1, 0, 80]);
    assert_eq!(answer[..2], [5, 7], "{answer:?}");
    // Address type 9: address type not supported (8).
    let answer = authenticated(&[5, 1, 0, 9, 1, 2, 3, 4, 0, 80]);
    assert_eq!(answer[..2], [5, 8], "{answer:?}");
    // Nothing listens there: connection refused (5).
    let closed = free_port().to_be_bytes();
    let answer = authenticated(&[5, 1, 0, 1, 127, 0, 0, 1, closed[0], closed[1]]);
    assert_eq!(answer[..2], [5, 5], "{answer:?}");
    // Periscope itself: not allowed (2).
    let own = socks.port().to_be_bytes();
    let answer = authenticated(&[5, 1, 0, 1, 127, 0, 0, 1, own[0], own[1]]);
    assert_eq!(answer[..2], [5, 2], "{answer:?}");
    // A truncated request: closed.
    assert_eq!(exchange(&[5, 1]), b"");
    // And it still serves.
    let echo = echo_server();
    let mut input = vec![5, 1, 2, 1, 5];
    input.extend_from_slice(b"scout");
    input.push(6);
    input.extend_from_slice(b"s3cret");
    input.extend_from_slice(&[5, 1, 0, 1, 127, 0, 0, 1]);
    input.extend_from_slice(&echo.port().to_be_bytes());
    let mut stream = TcpStream::connect(socks).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(&input).unwrap();
    let mut answer = [0u8; 14];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(answer[4..6], [5, 0], "{answer:?}");
}

// ---------------------------------------------------------------------------------
// ignore / allow hosts
// ---------------------------------------------------------------------------------

#[test]
fn ignored_hosts_show_the_origins_certificate_and_the_rest_periscopes() {
    let apache = Apache::start();
    let port = apache.port(Vhost::Tls13);
    let proxy = json_proxy(&["--ignore-hosts", "^localhost:"]);
    // Ignored: verifying with the origin's CA works, with Periscope's it fails.
    let ignored = apache.url(Vhost::Tls13, "/hello.txt");
    let result = Curl::new()
        .proxy(proxy.proxy_url())
        .cacert(&test_pki().ca_cert)
        .run(&ignored);
    result.assert_status(200);
    let result = Curl::through(&proxy).run(&ignored);
    assert_ne!(
        result.exit_code, 0,
        "Periscope's CA must not verify: {result:?}"
    );
    let flow = flow_after(&proxy, 0, &format!("tcp://localhost:{port}"));
    assert_eq!(flow["tcp"]["reason"], "ignored_host");
    assert_eq!(flow["tcp"]["sni"], "localhost");
    assert!(
        flow["tcp"]["from_server"]["size"].as_u64().unwrap() > 1000,
        "{flow}"
    );
    assert_eq!(
        flow["tcp"]["from_server"]["content"], "",
        "ciphertext is not kept"
    );
    // Not ignored (asked for by IP): Periscope's certificate.
    let intercepted = apache.url_ip(Vhost::Tls13, "/hello.txt");
    Curl::through(&proxy).run(&intercepted).assert_status(200);
    let result = Curl::new()
        .proxy(proxy.proxy_url())
        .cacert(&test_pki().ca_cert)
        .run(&intercepted);
    assert_ne!(
        result.exit_code, 0,
        "the origin's CA must not verify: {result:?}"
    );

    // --allow-hosts: only localhost is intercepted, the IP (whose connection has no
    // name that matches) passes through.
    let proxy = json_proxy(&["--allow-hosts", "^localhost:"]);
    Curl::through(&proxy).run(&ignored).assert_status(200);
    Curl::new()
        .proxy(proxy.proxy_url())
        .cacert(&test_pki().ca_cert)
        .run(&intercepted)
        .assert_status(200);
}

#[test]
fn tcp_hosts_are_intercepted_at_tls_and_relayed_as_bytes() {
    // `s_server -rev` answers each line reversed: a protocol that is not HTTP.
    let server = OpensslServer::builder().pki(test_pki()).arg("-rev").start();
    let proxy = json_proxy(&["--tcp-hosts", "^localhost:"]);
    let script = r#"
import socket, ssl, sys
proxy_port, port, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
raw = socket.create_connection(("127.0.0.1", proxy_port), timeout=15)
raw.sendall(f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += raw.recv(1)
tls = ssl.create_default_context(cafile=ca).wrap_socket(raw, server_hostname="localhost")
tls.sendall(b"periscope\n")
answer = b""
while not answer.endswith(b"\n"):
    answer += tls.recv(100)
print(answer.decode().strip())
"#;
    let output = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(proxy.port().to_string())
        .arg(server.port().to_string())
        .arg(proxy.ca_cert_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        text.trim(),
        "epocsirep",
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        proxy.describe()
    );
    let flow = flow_after(&proxy, 0, &format!("tcp://localhost:{}", server.port()));
    assert_eq!(flow["tcp"]["reason"], "tcp_host");
    assert!(flow["intercepted_tls"].as_bool().unwrap(), "{flow}");
    assert_eq!(flow["client"]["tls"]["sni"], "localhost");
    assert_eq!(flow["tcp"]["from_client"]["size"], 10);
}

// ---------------------------------------------------------------------------------
// transparent
// ---------------------------------------------------------------------------------

/// Three network namespaces, client → Periscope → server, on two veth links; the
/// Periscope namespace redirects every TCP connection from the client to `port`.
/// Removed on drop, failed test or not.
struct Namespaces {
    names: [String; 3],
    children: Vec<Child>,
}

const CLIENT_IP: &str = "10.199.1.2";
const GATEWAY_CLIENT_SIDE: &str = "10.199.1.1";
const GATEWAY_SERVER_SIDE: &str = "10.199.2.1";
const SERVER_IP: &str = "10.199.2.2";
const CLIENT_IP6: &str = "fd99:1::2";
const GATEWAY_CLIENT_SIDE6: &str = "fd99:1::1";
const GATEWAY_SERVER_SIDE6: &str = "fd99:2::1";
const SERVER_IP6: &str = "fd99:2::2";

impl Namespaces {
    fn create(redirect_port: u16) -> Namespaces {
        let ip = require_tool("ip");
        require_tool("iptables");
        require_tool("ip6tables");
        let tag = std::process::id() % 100_000;
        let names = [
            format!("psc{tag}c"),
            format!("psc{tag}m"),
            format!("psc{tag}s"),
        ];
        let namespaces = Namespaces {
            names: names.clone(),
            children: Vec::new(),
        };
        let [client, middle, server] = &names;
        let run = |args: &[&str]| {
            let output = Command::new(&ip).args(args).output().unwrap();
            assert!(
                output.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        };
        for name in &names {
            run(&["netns", "add", name]);
            run(&["-n", name, "link", "set", "lo", "up"]);
        }
        let (c, mc, ms, s) = (
            format!("v{tag}c"),
            format!("v{tag}mc"),
            format!("v{tag}ms"),
            format!("v{tag}s"),
        );
        run(&[
            "link", "add", &c, "netns", client, "type", "veth", "peer", "name", &mc, "netns",
            middle,
        ]);
        run(&[
            "link", "add", &ms, "netns", middle, "type", "veth", "peer", "name", &s, "netns",
            server,
        ]);
        for (ns, dev, address, address6) in [
            (client, &c, CLIENT_IP, CLIENT_IP6),
            (middle, &mc, GATEWAY_CLIENT_SIDE, GATEWAY_CLIENT_SIDE6),
            (middle, &ms, GATEWAY_SERVER_SIDE, GATEWAY_SERVER_SIDE6),
            (server, &s, SERVER_IP, SERVER_IP6),
        ] {
            run(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                dev,
            ]);
            // nodad: usable at once, not after duplicate address detection.
            let address6 = format!("{address6}/64");
            run(&[
                "-n", ns, "-6", "addr", "add", &address6, "dev", dev, "nodad",
            ]);
            run(&["-n", ns, "link", "set", dev, "up"]);
        }
        run(&[
            "-n",
            client,
            "-6",
            "route",
            "add",
            "default",
            "via",
            GATEWAY_CLIENT_SIDE6,
        ]);
        run(&[
            "-n",
            server,
            "-6",
            "route",
            "add",
            "default",
            "via",
            GATEWAY_SERVER_SIDE6,
        ]);
        run(&[
            "-n",
            client,
            "route",
            "add",
            "default",
            "via",
            GATEWAY_CLIENT_SIDE,
        ]);
        run(&[
            "-n",
            server,
            "route",
            "add",
            "default",
            "via",
            GATEWAY_SERVER_SIDE,
        ]);
        namespaces.exec(
            middle,
            &[
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                // Periscope's [::] listener must take IPv4 too without the default.
                "net.ipv6.bindv6only=1",
            ],
        );
        for iptables in ["iptables", "ip6tables"] {
            namespaces.exec(
                middle,
                &[
                    iptables,
                    "-t",
                    "nat",
                    "-A",
                    "PREROUTING",
                    "-i",
                    &mc,
                    "-p",
                    "tcp",
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    &redirect_port.to_string(),
                ],
            );
        }
        namespaces
    }

    fn client(&self) -> &str {
        &self.names[0]
    }
    fn middle(&self) -> &str {
        &self.names[1]
    }
    fn server(&self) -> &str {
        &self.names[2]
    }

    fn exec(&self, ns: &str, command: &[&str]) -> std::process::Output {
        let output = Command::new(require_tool("ip"))
            .args(["netns", "exec", ns])
            .args(command)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            command.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// A program in `ns`, killed before the namespaces go.
    fn spawn(&mut self, ns: &str, command: &[&str]) {
        let child = Command::new(require_tool("ip"))
            .args(["netns", "exec", ns])
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

#[test]
fn transparent_mode_intercepts_redirected_http_and_https_and_records_the_original_destination() {
    const PORT: u16 = 18080;
    let pki = test_pki();
    let mut namespaces = Namespaces::create(PORT);
    let server_ns = namespaces.server().to_owned();
    let cert = pki.server_cert.display().to_string();
    let key = pki.server_key.display().to_string();
    namespaces.spawn(
        &server_ns,
        &[
            "openssl", "s_server", "-quiet", "-www", "-accept", "443", "-cert", &cert, "-key", &key,
        ],
    );
    namespaces.spawn(
        &server_ns,
        // `::`: one dual-stack socket for the IPv4 and the IPv6 client.
        &["python3", "-m", "http.server", "80", "--bind", "::"],
    );
    let confdir = tempfile::tempdir().unwrap();
    let ca = pki.ca_cert.display().to_string();
    let proxy = Periscope::builder()
        .program(require_tool("ip"))
        .raw()
        .confdir(confdir.path())
        .args(["netns", "exec", namespaces.middle()])
        .arg(periscope_binary())
        .args(["dump", "--json", "--confdir"])
        .arg(confdir.path())
        .args(["--upstream-trusted-ca", &ca])
        // One dual-stack listener: IPv4 clients arrive at IPv4-mapped addresses, whose
        // original destination the kernel keeps as IPv4.
        .args(["--mode", &format!("transparent@[::]:{PORT}")])
        .start();
    // The servers start in their own time: wait until both answer through Periscope.
    let server_up = wait_until(WAIT, || {
        let probe = |url: &str| {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    namespaces.client(),
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                ])
                .args(["--max-time", "2", "-k", "-f", "--resolve"])
                .arg(format!("localhost:443:{SERVER_IP}"))
                .arg(url)
                .status()
                .is_ok_and(|s| s.success())
        };
        probe(&format!("http://{SERVER_IP}/"))
            && probe("https://localhost/")
            && probe(&format!("http://[{SERVER_IP6}]/"))
    });
    assert!(
        server_up,
        "servers did not answer through the redirect\n{}",
        proxy.describe()
    );
    let printed = proxy.stdout().len();
    let client = namespaces.client().to_owned();
    let curl = |args: &[&str]| {
        let output = namespaces.exec(
            &client,
            &[
                &[
                    "curl",
                    "-s",
                    "--max-time",
                    "10",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                ],
                args,
            ]
            .concat(),
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let periscope_ca = proxy.ca_cert_path().display().to_string();
    let resolve = format!("localhost:443:{SERVER_IP}");
    assert_eq!(
        curl(&[
            "--cacert",
            &periscope_ca,
            "--resolve",
            &resolve,
            "https://localhost/transparent"
        ]),
        "200"
    );
    assert_eq!(curl(&[&format!("http://{SERVER_IP}/")]), "200");
    let flow = flow_after(&proxy, printed, "https://localhost:443/transparent");
    assert_eq!(flow["listener"]["mode"], "transparent");
    assert_eq!(flow["server"]["peer"], format!("{SERVER_IP}:443"), "{flow}");
    assert_eq!(flow["client"]["tls"]["sni"], "localhost");
    let flow = flow_after(&proxy, printed, &format!("http://{SERVER_IP}:80/"));
    assert_eq!(flow["server"]["peer"], format!("{SERVER_IP}:80"), "{flow}");
    assert_eq!(
        flow["client"]["peer"]
            .as_str()
            .map(|p| p.split(':').next().unwrap()),
        Some(CLIENT_IP),
        "{flow}"
    );
    // IPv6: the same listener, the original destination from IP6T_SO_ORIGINAL_DST.
    assert_eq!(curl(&["-g", &format!("http://[{SERVER_IP6}]/v6")]), "404");
    let flow = flow_after(&proxy, printed, "/v6");
    assert_eq!(
        flow["server"]["peer"],
        format!("[{SERVER_IP6}]:80"),
        "{flow}"
    );
    assert_eq!(flow["listener"]["mode"], "transparent");
}
