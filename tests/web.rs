//! The web UI (`periscope web`) in a real browser: Debian's Chromium driven by
//! Playwright for Python (`tests/web/ui_checks.py`, one scenario per test), against
//! the real binary, a recording origin (`fault_origin.py`) and Apache's renegotiating
//! location:
//!
//! | test | what the browser checks |
//! |---|---|
//! | `flows_appear_live_and_the_search_is_answered_by_the_server` | curl's flows appear without a reload; search, highlight, sort by the server; columns; j/k/enter; Response (a gzip JSON body decoded, pretty, hex), Timing, Connection tabs |
//! | `a_renegotiated_flow_shows_its_tls_events_and_the_accepted_cas` | the list's R marker; the TLS tab's legs, event timeline with times and CAs; the renegotiation on the waterfall |
//! | `a_request_intercepted_from_the_ui_is_edited_resumed_or_killed` | the intercept box; header and body edited in the UI reach the origin; kill, Kill all and Resume all |
//! | `replay_duplicate_mark_comment_revert_export_delete_and_clear` | each action's effect in the list and the store; the exported curl line runs |
//! | `a_websocket_flow_shows_its_messages_and_its_close` | the WebSocket tab: messages both ways, text and hex, times, the close code |
//! | `websocket_messages_held_in_the_ui_are_edited_and_dropped` | the intercept box on `~websocket`; a held message edited and sent, its echo sent, the next dropped, as the client sees it |
//! | `the_client_certificate_for_a_renegotiation_is_chosen_in_the_ui` | `--intercept-tls`: the held flow lists the accepted CAs; the configured certificate, then none, as Apache reports it |
//! | `without_the_token_the_page_is_a_login_and_writes_from_elsewhere_are_refused` | login form, no data; wrong token; cross-origin and XSRF-less POSTs refused; CSP; the onboarding page and its PEM, DER, P12 (also at `http://periscope/` through the proxy) |
//! | `a_session_of_100000_flows_scrolls_with_a_bounded_number_of_rows` | first paint, rows drawn, scroll jumps, a search, heap (figures printed) |
//! | `open_starts_the_browser_on_the_url_and_nothing_opens_without_it` | `--open` runs `xdg-open` with the tokened URL; nothing opens without it |
//!
//! `PERISCOPE_TEST_CHROMIUM` overrides `/usr/bin/chromium`; `scripts/test.sh` installs
//! it (apt `chromium`) and Playwright (tests/requirements.txt). Screenshots go to
//! `target/tmp/web/`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use periscope_flow::store::FlowStore;
use periscope_flow::{Flow, FlowId};
use serde_json::Value;
use support::*;

const WAIT: Duration = Duration::from_secs(20);
/// The CA Apache's CertificateRequest names.
const CLIENT_CA_CN: &str = "Periscope Test Client CA";

/// `periscope web` on free ports, trusting the test CA for servers, with the test
/// client certificate for renegotiations.
fn periscope_web(extra: &[&str]) -> Periscope {
    let ca = test_pki().ca_cert.display().to_string();
    let client = test_pki().client_pem.display().to_string();
    PeriscopeBuilder::new()
        .subcommand(Some("web"))
        .args(["--web-port", "0", "--upstream-trusted-ca", &ca])
        .args(["--client-certs", &client])
        .args(extra)
        .start()
}

/// The printed `http://127.0.0.1:PORT/?token=...`.
fn ui_url(proxy: &Periscope) -> String {
    let line = proxy.wait_for_stderr("web UI at ", WAIT);
    line.split("web UI at ")
        .nth(1)
        .expect("the UI's URL")
        .trim()
        .to_owned()
}

fn shots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("PERISCOPE_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh, which installs Debian's chromium",
        path.display()
    );
    path
}

/// Runs one scenario of `tests/web/ui_checks.py`; panics with its output when a check
/// fails. Returns what it printed.
fn browser_checks(scenario: &str, proxy: &Periscope, extra: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/ui_checks.py");
    let url = ui_url(proxy);
    let port = proxy.port().to_string();
    let shots = shots_dir().display().to_string();
    let ca = proxy.ca_cert_path().display().to_string();
    let out = Command::new(python())
        .arg(&script)
        .arg(scenario)
        .args(["--url", &url, "--proxy", &port, "--shots", &shots])
        .args(["--cacert", &ca])
        .args(extra)
        .env("PERISCOPE_TEST_CHROMIUM", chromium())
        .output()
        .expect("run the browser checks");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "browser scenario {scenario} failed ({}):\n{stdout}\n{stderr}\n{}",
        out.status,
        proxy.describe()
    );
    stdout
}

fn origin() -> PythonPeer {
    PythonPeer::start("fault_origin.py", &[])
}

fn origin_url(origin: &PythonPeer) -> String {
    format!("http://127.0.0.1:{}", origin.port)
}

#[test]
fn flows_appear_live_and_the_search_is_answered_by_the_server() {
    let origin = origin();
    let proxy = periscope_web(&[]);
    browser_checks("live", &proxy, &["--origin", &origin_url(&origin)]);
}

#[test]
fn a_renegotiated_flow_shows_its_tls_events_and_the_accepted_cas() {
    let apache = Apache::start();
    // A server that sends the test root after its own certificate: the TLS tab shows
    // that chain.
    let chained = OpensslServer::builder()
        .www()
        .arg("-cert_chain")
        .arg(&test_pki().ca_cert)
        .start();
    let proxy = periscope_web(&[]);
    let url = apache.url(Vhost::Tls12, "/renegotiated-only/ok.txt");
    browser_checks(
        "tls",
        &proxy,
        &[
            "--renegotiated",
            &url,
            "--ca-name",
            CLIENT_CA_CN,
            "--chained",
            &chained.url("/chained"),
        ],
    );
}

#[test]
fn a_request_intercepted_from_the_ui_is_edited_resumed_or_killed() {
    let origin = origin();
    let proxy = periscope_web(&[]);
    browser_checks("intercept", &proxy, &["--origin", &origin_url(&origin)]);
    let received = recorded(&origin);
    let held: Vec<&Value> = received
        .iter()
        .filter(|r| r["target"].as_str().is_some_and(|t| t == "/record/held"))
        .collect();
    assert_eq!(
        held.len(),
        1,
        "the origin got the held request once: {received:?}"
    );
    assert_eq!(
        recorded_header(held[0], "x-edited-in-ui"),
        Some("yes"),
        "the header added in the UI reached the origin: {:?}",
        held[0]
    );
    assert_eq!(
        held[0]["body"], "edited-in-the-browser",
        "the body edited in the UI reached the origin"
    );
    assert!(
        !received.iter().any(|r| r["target"]
            .as_str()
            .is_some_and(|t| t.contains("/record/kill"))),
        "the killed requests never reached the origin: {received:?}"
    );
    assert!(
        received
            .iter()
            .any(|r| r["target"].as_str() == Some("/record/held-again")),
        "the request let go with Resume all reached the origin: {received:?}"
    );
}

#[test]
fn replay_duplicate_mark_comment_revert_export_delete_and_clear() {
    let origin = origin();
    let proxy = periscope_web(&[]);
    browser_checks("actions", &proxy, &["--origin", &origin_url(&origin)]);
    let received = recorded(&origin);
    assert_eq!(
        received
            .iter()
            .filter(|r| r["target"].as_str() == Some("/record/one"))
            .count(),
        3,
        "the origin got the request, its replay and the exported curl line: {received:?}"
    );
}

#[test]
fn a_websocket_flow_shows_its_messages_and_its_close() {
    let echo = python_websocket_echo_server();
    let proxy = periscope_web(&[]);
    let url = format!("ws://127.0.0.1:{}/", echo.port);
    browser_checks("websocket", &proxy, &["--websocket", &url]);
}

#[test]
fn websocket_messages_held_in_the_ui_are_edited_and_dropped() {
    let echo = python_websocket_echo_server();
    let proxy = periscope_web(&[]);
    let url = format!("ws://127.0.0.1:{}/", echo.port);
    browser_checks("websocket_held", &proxy, &["--websocket", &url]);
}

#[test]
fn the_client_certificate_for_a_renegotiation_is_chosen_in_the_ui() {
    let apache = Apache::start();
    let proxy = periscope_web(&["--intercept-tls"]);
    let url = apache.url(Vhost::Tls12, "/vedauth/ok.txt");
    browser_checks(
        "certificate",
        &proxy,
        &["--renegotiated", &url, "--ca-name", CLIENT_CA_CN],
    );
}

#[test]
fn without_the_token_the_page_is_a_login_and_writes_from_elsewhere_are_refused() {
    let proxy = periscope_web(&[]);
    browser_checks("login", &proxy, &[]);
    // The onboarding page is also reachable through the proxy, as mitm.it is.
    let page = Curl::through(&proxy).run("http://periscope/");
    page.assert_status(200);
    assert!(page.body_text().contains("keytool"), "{page:?}");
    // Its commands name this proxy's address, not a default port.
    let address = format!("http://{}", proxy.addr());
    assert!(
        page.body_text().contains(&format!("curl -x {address} ")),
        "the page names {address}: {}",
        page.body_text()
    );
    let pem = Curl::through(&proxy).run("http://periscope/cert/pem");
    pem.assert_status(200);
    let ca = std::fs::read_to_string(proxy.ca_cert_path()).expect("the CA file");
    assert_eq!(pem.body_text(), ca, "http://periscope/cert/pem is the CA");
}

/// 100,000 copies of a real flow (a request through the proxy to the recording
/// origin), each under its own id and path, a millisecond apart.
fn big_session(path: &Path, flows: usize) {
    let origin = origin();
    let template_file = path.with_extension("template");
    {
        let mut proxy = PeriscopeBuilder::new()
            .arg("-w")
            .arg(&template_file)
            .start();
        Curl::through(&proxy)
            .run(&format!("{}/record/template", origin_url(&origin)))
            .assert_status(200);
        proxy.wait_for_stdout("/record/template", WAIT);
        // SIGTERM: the store's writer commits what it holds before the exit.
        proxy.terminate(WAIT);
    }
    let template: Flow = {
        let store = FlowStore::open_existing(&template_file).expect("the template session");
        let id = store.ids(None).expect("ids")[0];
        store.get(id).expect("read").expect("the template flow")
    };
    let store = FlowStore::open(path).expect("the big session");
    let mut batch = Vec::with_capacity(1000);
    for i in 0..flows {
        let mut flow = template.clone();
        flow.id = FlowId::new();
        flow.request.path = format!("/page/{i}");
        shift(&mut flow, i as i64);
        batch.push(std::sync::Arc::new(flow));
        if batch.len() == 1000 {
            store.insert_many(&batch).expect("insert");
            batch.clear();
        }
    }
    store.insert_many(&batch).expect("insert");
}

/// Moves the flow's timeline by `ms` milliseconds (through its JSON: the timeline
/// has no public setter, and its times are microseconds).
fn shift(flow: &mut Flow, ms: i64) {
    let mut json = serde_json::to_value(&flow.timeline).expect("timeline JSON");
    for entry in json.as_array_mut().expect("an array of entries") {
        let at = entry["at"].as_i64().expect("a time");
        entry["at"] = (at + ms * 1_000).into();
    }
    flow.timeline = serde_json::from_value(json).expect("the shifted timeline");
}

#[test]
fn a_session_of_100000_flows_scrolls_with_a_bounded_number_of_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("big.periscope");
    big_session(&file, 100_000);
    let proxy = periscope_web(&["-r", file.to_str().unwrap()]);
    let out = browser_checks("big", &proxy, &[]);
    let figures = out
        .lines()
        .find_map(|l| l.strip_prefix("figures: "))
        .expect("the scenario's figures");
    eprintln!("WEB_100K {figures}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-100k.txt");
    let _ = std::fs::write(path, format!("{figures}\n"));
}

/// `--open` hands the printed URL to the desktop's opener (`xdg-open`, here a script
/// that writes down what it got); without it nothing is opened.
#[test]
fn open_starts_the_browser_on_the_url_and_nothing_opens_without_it() {
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().expect("temp dir");
    let record = bin.path().join("opened.txt");
    let opener = bin.path().join("xdg-open");
    std::fs::write(
        &opener,
        format!("#!/bin/sh\necho \"$1\" >> '{}'\n", record.display()),
    )
    .expect("the fake opener");
    std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let quiet = PeriscopeBuilder::new()
        .subcommand(Some("web"))
        .args(["--web-port", "0"])
        .env("PATH", &path)
        .start();
    let _ = ui_url(&quiet);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!record.exists(), "periscope web opened a browser by itself");

    let opening = PeriscopeBuilder::new()
        .subcommand(Some("web"))
        .args(["--web-port", "0", "--open"])
        .env("PATH", &path)
        .start();
    let url = ui_url(&opening);
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(&record)
            .is_ok_and(|text| text.trim() == url)),
        "--open ran the opener with {url}: {:?}",
        std::fs::read_to_string(&record)
    );
}
