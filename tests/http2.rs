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
    assert!(
        wait_until(Duration::from_secs(15), || proxy.stdout_lines().len()
            >= at_least),
        "expected {at_least} flows, got {}",
        proxy.stdout_lines().len()
    );
    proxy
        .stdout_lines()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
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
