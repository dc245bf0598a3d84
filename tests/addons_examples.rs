//! mitmproxy's published example addons, run unchanged (`-s FILE`) through the real
//! binary against a recording origin (`tests/peers/addon_origin.py`), with curl as the
//! client. The examples are not in this repository: `scripts/test.sh` unpacks them from
//! Debian's `mitmproxy` package (8.1.1) into `target/peers/mitmproxy-examples` and
//! exports `PERISCOPE_TEST_MITMPROXY_EXAMPLES`; a test without them fails, naming it.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(20);

/// The path of one of mitmproxy's examples (`examples/addons/NAME`), or a panic telling
/// how to get them.
fn example(name: &str) -> PathBuf {
    let Some(dir) = std::env::var_os("PERISCOPE_TEST_MITMPROXY_EXAMPLES") else {
        panic!(
            "PERISCOPE_TEST_MITMPROXY_EXAMPLES is not set: run `scripts/test.sh` once (it \
             unpacks Debian's mitmproxy package into target/peers/mitmproxy-examples and \
             exports it), or export PERISCOPE_TEST_MITMPROXY_EXAMPLES=$REPO/target/peers/\
             mitmproxy-examples/usr/share/doc/mitmproxy/examples/addons after running it"
        );
    };
    let path = PathBuf::from(dir).join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `scripts/test.sh` to fetch mitmproxy's examples",
        path.display()
    );
    path
}

fn origin() -> PythonPeer {
    PythonPeer::start("addon_origin.py", &[])
}

fn proxy_with(name: &str, extra: &[&str]) -> Periscope {
    PeriscopeBuilder::new()
        .arg("--scripts-python")
        .arg(python())
        .arg("-s")
        .arg(example(name))
        .args(extra)
        .start()
}

fn url(origin: &PythonPeer, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", origin.port)
}

#[test]
fn anatomy_counts_the_flows_in_the_event_log() {
    let origin = origin();
    let proxy = proxy_with("anatomy.py", &[]);
    for _ in 0..2 {
        Curl::through(&proxy)
            .run(&url(&origin, "/counted"))
            .assert_status(200);
    }
    proxy.wait_for_stderr("We've seen 1 flows", WAIT);
    proxy.wait_for_stderr("We've seen 2 flows", WAIT);
    assert_eq!(recorded_at_least(&origin, 2).len(), 2);
}

#[test]
fn anatomy2_adds_myheader_to_every_request() {
    let origin = origin();
    let proxy = proxy_with("anatomy2.py", &[]);
    Curl::through(&proxy)
        .run(&url(&origin, "/a"))
        .assert_status(200);
    let seen = recorded_at_least(&origin, 1);
    assert_eq!(
        recorded_header(&seen[0], "myheader"),
        Some("value"),
        "{seen:?}"
    );
}

#[test]
fn http_add_header_counts_the_responses_in_a_header() {
    let origin = origin();
    let proxy = proxy_with("http-add-header.py", &[]);
    for expected in ["1", "2"] {
        let result = Curl::through(&proxy).run(&url(&origin, "/r"));
        result.assert_status(200);
        assert_eq!(result.header("count"), Some(expected), "{result:?}");
        assert_eq!(result.body_text(), "origin saw /r");
    }
    let seen = recorded_at_least(&origin, 2);
    assert_eq!(
        recorded_header(&seen[0], "count"),
        None,
        "a response header only"
    );
}

#[test]
fn http_modify_query_string_adds_mitmproxy_rocks() {
    let origin = origin();
    let proxy = proxy_with("http-modify-query-string.py", &[]);
    for path in ["/q?a=1", "/plain"] {
        Curl::through(&proxy)
            .run(&url(&origin, path))
            .assert_status(200);
    }
    let seen = recorded_at_least(&origin, 2);
    assert_eq!(seen[0]["target"], "/q?a=1&mitmproxy=rocks", "{seen:?}");
    assert_eq!(seen[1]["target"], "/plain?mitmproxy=rocks", "{seen:?}");
}

#[test]
fn http_modify_form_adds_to_a_form_and_sets_one_where_there_is_none() {
    let origin = origin();
    let proxy = proxy_with("http-modify-form.py", &[]);
    Curl::through(&proxy)
        .data("name=periscope&x=1")
        .run(&url(&origin, "/form"))
        .assert_status(200);
    Curl::through(&proxy)
        .run(&url(&origin, "/no-form"))
        .assert_status(200);
    let seen = recorded_at_least(&origin, 2);
    assert_eq!(seen[0]["method"], "POST");
    assert_eq!(
        seen[0]["body"], "name=periscope&x=1&mitmproxy=rocks",
        "{seen:?}"
    );
    assert_eq!(seen[1]["target"], "/no-form");
    assert_eq!(seen[1]["body"], "foo=bar", "{seen:?}");
    assert_eq!(
        recorded_header(&seen[1], "content-type"),
        Some("application/x-www-form-urlencoded"),
        "{seen:?}"
    );
    assert_eq!(
        recorded_header(&seen[1], "content-length"),
        Some("7"),
        "{seen:?}"
    );
}

#[test]
fn http_reply_from_proxy_answers_example_com_path_without_a_server() {
    let origin = origin();
    let proxy = proxy_with("http-reply-from-proxy.py", &[]);
    // example.com is never connected to: the proxy answers before any upstream.
    let answered = Curl::through(&proxy).run("http://example.com/path");
    answered.assert_status(200);
    assert_eq!(answered.body_text(), "Hello World");
    assert_eq!(answered.header("content-type"), Some("text/html"));
    // Any other URL goes through.
    Curl::through(&proxy)
        .run(&url(&origin, "/path"))
        .assert_status(200);
    let seen = recorded_at_least(&origin, 1);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["target"], "/path");
}

#[test]
fn http_redirect_requests_sends_example_org_to_mitmproxy_org() {
    // The origin stands in as Periscope's upstream proxy, so it records the absolute
    // URL each request was sent to: which host the script sent it to, with no DNS.
    let origin = origin();
    let upstream = format!("upstream:http://127.0.0.1:{}", origin.port);
    let proxy = proxy_with("http-redirect-requests.py", &["--mode", &upstream]);
    Curl::through(&proxy)
        .run("http://example.org/page?x=1")
        .assert_status(200);
    Curl::through(&proxy)
        .run("http://example.net/other")
        .assert_status(200);
    let seen = recorded_at_least(&origin, 2);
    assert_eq!(
        seen[0]["target"], "http://mitmproxy.org/page?x=1",
        "{seen:?}"
    );
    assert_eq!(
        recorded_header(&seen[0], "host"),
        Some("mitmproxy.org"),
        "{seen:?}"
    );
    assert_eq!(seen[1]["target"], "http://example.net/other", "{seen:?}");
    assert_eq!(
        recorded_header(&seen[1], "host"),
        Some("example.net"),
        "{seen:?}"
    );
}

#[test]
fn filter_flows_with_its_default_empty_filter_logs_every_response() {
    let origin = origin();
    let proxy = proxy_with("filter-flows.py", &[]);
    Curl::through(&proxy)
        .run(&url(&origin, "/filtered"))
        .assert_status(200);
    proxy.wait_for_stderr("Flow matches filter:", WAIT);
    proxy.wait_for_stderr("/filtered", WAIT);
}

#[test]
fn log_events_posts_info_warning_and_error_at_load() {
    let proxy = proxy_with("log-events.py", &[]);
    proxy.wait_for_stderr("This is some informative text.", WAIT);
    proxy.wait_for_stderr("This is a warning.", WAIT);
    proxy.wait_for_stderr("This is an error.", WAIT);
}

#[test]
fn options_simple_adds_the_count_header_when_its_option_is_set() {
    let origin = origin();
    let proxy = proxy_with("options-simple.py", &[]);
    let result = Curl::through(&proxy).run(&url(&origin, "/o"));
    result.assert_status(200);
    assert_eq!(result.header("count"), None, "addheader defaults to false");
    // As its docstring says: `--set addheader true` (Periscope writes NAME=VALUE).
    let proxy = proxy_with("options-simple.py", &["--set", "addheader=true"]);
    for expected in ["1", "2"] {
        let result = Curl::through(&proxy).run(&url(&origin, "/o"));
        result.assert_status(200);
        assert_eq!(result.header("count"), Some(expected));
    }
}

#[test]
fn options_configure_sets_its_header_and_refuses_a_value_over_100_at_start() {
    let origin = origin();
    let proxy = proxy_with("options-configure.py", &[]);
    let result = Curl::through(&proxy).run(&url(&origin, "/o"));
    result.assert_status(200);
    assert_eq!(
        result.header("addheader"),
        None,
        "addheader defaults to None"
    );
    let proxy = proxy_with("options-configure.py", &["--set", "addheader=42"]);
    let result = Curl::through(&proxy).run(&url(&origin, "/o"));
    result.assert_status(200);
    assert_eq!(result.header("addheader"), Some("42"));
    // configure raises OptionsError: as in mitmproxy, the start fails with it.
    let stderr = failed_start("options-configure.py", &["--set", "addheader=101"]);
    assert!(stderr.contains("addheader must be <= 100"), "{stderr}");
    let stderr = failed_start("options-configure.py", &["--set", "addheader=many"]);
    assert!(stderr.contains("'many' is not an integer"), "{stderr}");
}

#[test]
fn filter_flows_logs_only_the_flows_its_filter_option_matches() {
    let origin = origin();
    let proxy = proxy_with("filter-flows.py", &["--set", "flowfilter=~u /wanted"]);
    Curl::through(&proxy)
        .run(&url(&origin, "/unwanted-first"))
        .assert_status(200);
    Curl::through(&proxy)
        .run(&url(&origin, "/wanted"))
        .assert_status(200);
    proxy.wait_for_stderr("/wanted", WAIT);
    assert!(
        !proxy.stderr_text().contains("/unwanted-first"),
        "{}",
        proxy.stderr_text()
    );
}

/// A name that is none of Periscope's options and that no script adds is refused
/// at start, with or without scripts.
#[test]
fn an_option_no_script_adds_is_refused_at_start() {
    let stderr = failed_start("options-simple.py", &["--set", "addheadr=true"]);
    assert!(
        stderr.contains("unknown option 'addheadr': no script adds it"),
        "{stderr}"
    );
    let output = std::process::Command::new(periscope_binary())
        .args(["dump", "--listen-host", "127.0.0.1", "-p", "0"])
        .args(["--set", "addheader=true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--set: unknown option \"addheader\""),
        "{stderr}"
    );
}

/// Runs `example_name` with `extra` and returns the stderr of a start that must fail.
fn failed_start(example_name: &str, extra: &[&str]) -> String {
    let output = std::process::Command::new(periscope_binary())
        .args(["dump", "--listen-host", "127.0.0.1", "-p", "0"])
        .arg("--scripts-python")
        .arg(python())
        .arg("-s")
        .arg(example(example_name))
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "{example_name} {extra:?}: {stderr}"
    );
    stderr
}
