//! The rules (mitmproxy's options, in its syntax) with the real binary, real origins
//! and curl:
//!
//! | case | how |
//! |---|---|
//! | headers and bodies changed on both sides, HTTP/1.1 and HTTP/2 to the client | `--modify-headers`, `--modify-body`, the recording origin over TLS |
//! | a gzip body is decoded for `--modify-body` and re-encoded; a rule across the seed's renegotiation | Apache `/zipped.txt`, `/vedauth/` |
//! | map local: files, directories, content types, and nothing outside the directory (`..`, `%2e%2e`, `%2f`, a symlink) | `--map-local`, `curl --path-as-is` |
//! | map remote: another server, over TLS verified as its own | `--map-remote` |
//! | block list (a status, and 444), anticache, anticomp | `--block-list`, recording origin |
//! | server replay: record, stop the origin, answer from the session; extra, reuse, ignored params | `-w`, `--server-replay*` |
//! | the config file and `--set`; errors name the file, line and key | `CONFDIR/config.yaml` |
//! | rules changed at run time through the control API; a bad one refused, nothing changed | `PUT /options` |
//! | each flow says which rule changed it: JSON, `-d 2`, HAR, `~rule` | `dump --json`, `export --har` |

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;

const WAIT: Duration = Duration::from_secs(20);

/// Periscope in `dump --json` with `args`, trusting the test CA upstream.
fn json_proxy(args: &[&str]) -> Periscope {
    let ca = test_pki().ca_cert.to_string_lossy().into_owned();
    let mut all = vec!["--json", "--upstream-trusted-ca", ca.as_str()];
    all.extend_from_slice(args);
    Periscope::start_dump(&all)
}

/// The recording origin over TLS (the test PKI's `localhost` certificate).
fn tls_origin() -> PythonPeer {
    let pki = test_pki();
    PythonPeer::start(
        "fault_origin.py",
        &[
            "--tls",
            "--cert",
            pki.server_cert.to_str().unwrap(),
            "--key",
            pki.server_key.to_str().unwrap(),
        ],
    )
}

fn plain_origin() -> PythonPeer {
    PythonPeer::start("fault_origin.py", &[])
}

/// The first flow printed from line `start` on whose path contains `needle`.
#[track_caller]
fn flow_after(proxy: &Periscope, start: usize, needle: &str) -> Value {
    let needle = needle.to_owned();
    let line = proxy.wait_for_stdout_after(
        start,
        move |line: &str| {
            serde_json::from_str::<Value>(line).is_ok_and(|f| {
                f["request"]["path"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&needle)
            })
        },
        WAIT,
    );
    serde_json::from_str(&line).unwrap()
}

/// `(rule, spec)` of each rule recorded on a flow.
fn rules_of(flow: &Value) -> Vec<(String, String)> {
    flow["rules"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| {
                    (
                        r["rule"].as_str().unwrap_or("").to_owned(),
                        r["spec"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn header_and_body_rules_change_what_each_side_receives_over_http1_and_http2() {
    let origin = tls_origin();
    let h2 = h2_origin(&[]);
    let proxy = json_proxy(&[
        "--modify-headers",
        "/~q/x-added/yes",
        "--modify-headers",
        "/~q/user-agent/",
        "--modify-body",
        "/~q/secret/REDACTED",
        "--modify-headers",
        "/~s/x-from-rule/1",
        "--modify-body",
        // Literal, as in mitmproxy: `\\1` would not be a group reference.
        "/~s & ~u record/recorded/kept",
    ]);
    for (round, http2) in [(1usize, false), (2, true)] {
        // HTTP/2 to the client when the server speaks it (as in mitmproxy).
        let origin = if http2 { &h2 } else { &origin };
        let start = proxy.stdout_lines().len();
        let curl = Curl::through(&proxy).data("a secret, another secret");
        let curl = if http2 { curl.http2() } else { curl.http1_1() };
        let result = curl.run(&format!("https://localhost:{}/record/{round}", origin.port));
        result.assert_status(200);
        assert_eq!(result.header("x-from-rule"), Some("1"), "{result:?}");
        assert_eq!(result.body_text(), "kept 28 bytes\n");
        let seen = recorded_at_least(origin, 1);
        let seen = &seen[0];
        assert_eq!(recorded_header(seen, "x-added"), Some("yes"), "{seen}");
        assert_eq!(recorded_header(seen, "user-agent"), None, "{seen}");
        assert_eq!(seen["body"], "a REDACTED, another REDACTED");
        let flow = flow_after(&proxy, start, &format!("/record/{round}"));
        if http2 {
            assert_eq!(flow["request"]["http_version"], "HTTP/2.0");
        }
        let rules = rules_of(&flow);
        for expected in [
            ("modify_headers", "/~q/x-added/yes"),
            ("modify_headers", "/~q/user-agent/"),
            ("modify_body", "/~q/secret/REDACTED"),
            ("modify_headers", "/~s/x-from-rule/1"),
        ] {
            assert!(
                rules.contains(&(expected.0.to_owned(), expected.1.to_owned())),
                "{expected:?} missing from {rules:?}"
            );
        }
    }
}

#[test]
fn a_compressed_body_is_rewritten_decoded_and_a_rule_survives_a_renegotiation() {
    let zipped = gzip(b"{\"plan\": \"free\", \"note\": \"free for now\"}");
    let apache = Apache::builder()
        .file("zipped.json", zipped)
        .extra_vhost_config(
            "<Location /zipped.json>\n  Header set Content-Encoding gzip\n  Header set Content-Type application/json\n</Location>",
        )
        .start();
    let pki = test_pki();
    let client_pem = pki.client_pem.to_string_lossy().into_owned();
    let proxy = json_proxy(&[
        "--client-certs",
        &client_pem,
        "--modify-body",
        "/~s & ~u zipped/free/paid",
        "--modify-headers",
        "/~s & ~u vedauth/x-seen-by-rule/vedauth",
    ]);

    let start = proxy.stdout_lines().len();
    let result = Curl::through(&proxy)
        .http1_1()
        .run(&apache.url(Vhost::Tls12, "/zipped.json"));
    result.assert_status(200);
    assert_eq!(result.header("content-encoding"), Some("gzip"));
    assert_eq!(
        gunzip(&result.body),
        b"{\"plan\": \"paid\", \"note\": \"paid for now\"}",
        "the client gets the rewritten body, compressed again"
    );
    let flow = flow_after(&proxy, start, "/zipped.json");
    assert_eq!(
        rules_of(&flow),
        [(
            "modify_body".to_owned(),
            "/~s & ~u zipped/free/paid".to_owned()
        )]
    );

    let start = proxy.stdout_lines().len();
    let result = Curl::through(&proxy)
        .http1_1()
        .run(&apache.url(Vhost::Tls12, "/vedauth/ok.txt"));
    result.assert_status(200);
    assert_eq!(result.body_text(), VEDAUTH_BODY);
    assert_eq!(result.header("x-seen-by-rule"), Some("vedauth"));
    let flow = flow_after(&proxy, start, "/vedauth/ok.txt");
    let events = flow["timeline"].to_string();
    assert!(
        events.contains("renegotiation"),
        "the flow shows the renegotiation: {events}"
    );
    assert_eq!(rules_of(&flow).len(), 1, "{flow}");
}

#[test]
fn map_local_serves_files_and_never_leaves_its_directory() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    let root = tempfile::tempdir().unwrap();
    let site = root.path().join("site");
    std::fs::create_dir_all(site.join("sub")).unwrap();
    std::fs::write(site.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(site.join("data.json"), "{\"local\": true}").unwrap();
    std::fs::write(site.join("sub/b.txt"), "b").unwrap();
    std::fs::write(root.path().join("secret.txt"), "parent secret").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), site.join("link.txt")).unwrap();
    let single = root.path().join("single.txt");
    std::fs::write(&single, "one file").unwrap();

    let origin = plain_origin();
    let base = format!("http://127.0.0.1:{}", origin.port);
    let dir_rule = format!("|{base}/static/|{}", site.display());
    let file_rule = format!("|~q|{base}/one$|{}", single.display());
    let proxy = Periscope::start_dump(&[
        "-d",
        "2",
        "--map-local",
        &dir_rule,
        "--map-local",
        &file_rule,
    ]);

    let get = |path: &str| {
        Curl::through(&proxy)
            .arg("--path-as-is")
            .run(&format!("{base}{path}"))
    };
    let home = get("/static/");
    home.assert_status(200);
    assert_eq!(home.body_text(), "<h1>home</h1>");
    assert!(home
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let data = get("/static/data.json");
    data.assert_status(200);
    assert_eq!(data.header("content-type"), Some("application/json"));
    assert_eq!(data.body_text(), "{\"local\": true}");
    get("/static/sub/b.txt").assert_status(200);
    let one = get("/one");
    one.assert_status(200);
    assert_eq!(one.body_text(), "one file");
    for escape in [
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/sub%2f..%2f..%2fsecret.txt",
        "/static/..%5csecret.txt",
        "/static/link.txt",
        "/static/missing.txt",
    ] {
        let answer = get(escape);
        assert_eq!(answer.status, 404, "{escape}: {answer:?}");
        assert!(
            !answer.body_text().contains("parent secret") && answer.body_text() != "secret",
            "{escape} leaked: {}",
            answer.body_text()
        );
        let local = site.parent().unwrap().display().to_string();
        assert!(
            !answer.body_text().contains(&local),
            "{escape}: the answer names local paths: {}",
            answer.body_text()
        );
    }
    assert!(
        !origin.stdout.text().contains("request: "),
        "nothing reached the origin:\n{}",
        origin.stdout.text()
    );
    let line = proxy.wait_for_stdout("rule map_local", WAIT);
    assert!(line.contains(&dir_rule), "{line}");

    // HTTP/2 to the client: the same answers.
    let h2 = h2_origin(&[]);
    let h2_base = format!("https://localhost:{}", h2.port);
    let h2_rule = format!("|{h2_base}/static/|{}", site.display());
    let ca = test_pki().ca_cert.to_string_lossy().into_owned();
    let proxy = Periscope::start_dump(&["--upstream-trusted-ca", &ca, "--map-local", &h2_rule]);
    let get = |path: &str| {
        Curl::through(&proxy)
            .http2()
            .arg("--path-as-is")
            .run(&format!("{h2_base}{path}"))
    };
    let data = get("/static/data.json");
    data.assert_status(200);
    assert_eq!(data.info_str("http_version"), Some("2"), "{data:?}");
    assert_eq!(data.body_text(), "{\"local\": true}");
    for escape in ["/static/%2e%2e/secret.txt", "/static/link.txt"] {
        assert_eq!(get(escape).status, 404, "{escape}");
    }
    assert!(
        !h2.stdout.text().contains("request: "),
        "{}",
        h2.stdout.text()
    );
}

#[test]
fn map_remote_sends_the_request_to_another_server_verified_as_its_own() {
    let first = plain_origin();
    let second = tls_origin();
    let rule = format!(
        "|~q|http://127.0.0.1:{}/record/(\\w+)|https://localhost:{}/record/mapped-\\1",
        first.port, second.port
    );
    let proxy = json_proxy(&["--map-remote", &rule]);
    let result = Curl::through(&proxy).run(&format!("http://127.0.0.1:{}/record/abc", first.port));
    result.assert_status(200);
    let seen = recorded_at_least(&second, 1);
    assert_eq!(seen[0]["target"], "/record/mapped-abc");
    assert_eq!(
        recorded_header(&seen[0], "host"),
        Some(format!("localhost:{}", second.port).as_str())
    );
    assert!(!first.stdout.text().contains("request: "));
    let flow = flow_after(&proxy, 0, "/record/mapped-abc");
    assert_eq!(flow["request"]["scheme"], "https");
    assert_eq!(flow["request"]["port"], second.port);
    assert_eq!(rules_of(&flow), [("map_remote".to_owned(), rule.clone())]);

    // HTTP/2 on both legs: a request to one HTTP/2 server goes to another.
    let (h2_first, h2_second) = (h2_origin(&[]), h2_origin(&[]));
    let h2_rule = format!(
        "|~q|https://localhost:{}/record/(\\w+)|https://localhost:{}/record/mapped-\\1",
        h2_first.port, h2_second.port
    );
    let proxy = json_proxy(&["--map-remote", &h2_rule]);
    let result = Curl::through(&proxy)
        .http2()
        .run(&format!("https://localhost:{}/record/h2", h2_first.port));
    result.assert_status(200);
    assert_eq!(result.info_str("http_version"), Some("2"), "{result:?}");
    let seen = recorded_at_least(&h2_second, 1);
    assert_eq!(seen[0]["target"], "/record/mapped-h2");
    assert!(
        !h2_first.stdout.text().contains("request: "),
        "{}",
        h2_first.stdout.text()
    );

    // Without the test CA the new host's certificate is checked, and refused.
    let strict = Periscope::start_dump(&["--json", "--map-remote", &rule]);
    let refused = Curl::through(&strict).run(&format!("http://127.0.0.1:{}/record/x", first.port));
    assert_eq!(refused.status, 502, "{refused:?}");
    assert!(
        refused.body_text().contains("certificate"),
        "{}",
        refused.body_text()
    );
}

#[test]
fn block_list_anticache_and_anticomp() {
    let origin = plain_origin();
    let base = format!("http://127.0.0.1:{}", origin.port);
    let proxy = json_proxy(&[
        "--block-list",
        "/~u tracker/403",
        "--block-list",
        "/~u silent/444",
        "--anticache",
        "--anticomp",
    ]);
    let blocked = Curl::through(&proxy).run(&format!("{base}/record/tracker"));
    blocked.assert_status(403);
    let closed = Curl::through(&proxy).run(&format!("{base}/record/silent"));
    assert_eq!(closed.status, 0, "444 answers nothing: {closed:?}");
    assert_eq!(closed.exit_code, 52, "curl: empty reply: {}", closed.stderr);
    let passed = Curl::through(&proxy)
        .header("If-None-Match: \"abc\"")
        .header("If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT")
        .header("Accept-Encoding: gzip, br")
        .run(&format!("{base}/record/fine"));
    passed.assert_status(200);
    let seen = recorded_at_least(&origin, 1);
    assert_eq!(
        seen.len(),
        1,
        "blocked requests never reach the origin: {seen:?}"
    );
    assert_eq!(seen[0]["target"], "/record/fine");
    assert_eq!(recorded_header(&seen[0], "if-none-match"), None);
    assert_eq!(recorded_header(&seen[0], "if-modified-since"), None);
    assert_eq!(
        recorded_header(&seen[0], "accept-encoding"),
        Some("identity")
    );
    // HTTP/2: the status as a stream's answer, 444 as a reset of the stream alone.
    let h2 = h2_origin(&[]);
    let h2_base = format!("https://localhost:{}", h2.port);
    let blocked = Curl::through(&proxy)
        .http2()
        .run(&format!("{h2_base}/record/tracker"));
    blocked.assert_status(403);
    assert_eq!(blocked.info_str("http_version"), Some("2"), "{blocked:?}");
    let reset = Curl::through(&proxy)
        .http2()
        .run(&format!("{h2_base}/record/silent"));
    assert_eq!(reset.status, 0, "{reset:?}");
    assert_eq!(
        reset.exit_code, 92,
        "curl: HTTP/2 stream reset: {}",
        reset.stderr
    );
    assert!(!h2.stdout.text().contains("recorded: "));
    // anticache and anticomp on HTTP/2 too.
    let passed = Curl::through(&proxy)
        .http2()
        .header("If-None-Match: \"abc\"")
        .header("If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT")
        .header("Accept-Encoding: gzip, br")
        .run(&format!("{h2_base}/record/fine"));
    passed.assert_status(200);
    assert_eq!(passed.info_str("http_version"), Some("2"), "{passed:?}");
    let seen = recorded_at_least(&h2, 1);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(recorded_header(&seen[0], "if-none-match"), None);
    assert_eq!(recorded_header(&seen[0], "if-modified-since"), None);
    assert_eq!(
        recorded_header(&seen[0], "accept-encoding"),
        Some("identity")
    );
    let flow = flow_after(&proxy, 0, "/record/tracker");
    assert_eq!(
        rules_of(&flow),
        [("block_list".to_owned(), "/~u tracker/403".to_owned())]
    );
    let flow = flow_after(&proxy, 0, "/record/silent");
    assert!(flow["error"]["message"].as_str().is_some(), "{flow}");
}

#[test]
fn server_replay_answers_from_a_recorded_session_with_the_origin_gone() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("recorded.periscope");
    let session_arg = session.to_string_lossy().into_owned();
    let port;
    let h2_port;
    {
        let origin = plain_origin();
        let h2 = h2_origin(&[]);
        port = origin.port;
        h2_port = h2.port;
        let ca = test_pki().ca_cert.to_string_lossy().into_owned();
        let mut recorder =
            Periscope::start_dump(&["-w", &session_arg, "--upstream-trusted-ca", &ca]);
        for path in ["/record/a?x=1&keep=1", "/record/b"] {
            Curl::through(&recorder)
                .run(&format!("http://127.0.0.1:{port}{path}"))
                .assert_status(200);
        }
        Curl::through(&recorder)
            .http2()
            .run(&format!("https://localhost:{h2_port}/record/h2"))
            .assert_status(200);
        Curl::through(&recorder)
            .data("k=1&nonce=5")
            .run(&format!("http://127.0.0.1:{port}/record/form"))
            .assert_status(200);
        recorder.wait_for_stdout("/record/form", WAIT);
        recorder.terminate(WAIT);
    }
    let base = format!("http://127.0.0.1:{port}");

    let replay = json_proxy(&[
        "--server-replay",
        &session_arg,
        "--server-replay-extra",
        "404",
    ]);
    let answer = Curl::through(&replay).run(&format!("{base}/record/a?x=1&keep=1"));
    answer.assert_status(200);
    assert_eq!(answer.body_text(), "recorded 0 bytes\n");
    // Each recorded answer is used once, then the extra behaviour applies.
    Curl::through(&replay)
        .run(&format!("{base}/record/a?x=1&keep=1"))
        .assert_status(404);
    Curl::through(&replay)
        .run(&format!("{base}/record/never"))
        .assert_status(404);
    // A form body with another nonce is another request...
    Curl::through(&replay)
        .data("k=1&nonce=6")
        .run(&format!("{base}/record/form"))
        .assert_status(404);
    // HTTPS with the server gone: the client still gets its recorded answer.
    let h2_answer = Curl::through(&replay)
        .http2()
        .run(&format!("https://localhost:{h2_port}/record/h2"));
    h2_answer.assert_status(200);
    assert_eq!(h2_answer.body_text(), "recorded 0 bytes\n");
    let flow = flow_after(&replay, 0, "/record/a");
    assert_eq!(rules_of(&flow)[0].0, "server_replay");
    assert_eq!(rules_of(&flow)[0].1, session_arg);

    // ...unless the parameter is ignored; reuse answers again and again, and a
    // query parameter can be left out of the match.
    let lenient = json_proxy(&[
        "--server-replay",
        &session_arg,
        "--server-replay-reuse",
        "--server-replay-ignore-params",
        "x",
        "--server-replay-ignore-payload-params",
        "nonce",
        "--server-replay-extra",
        "kill",
    ]);
    for x in ["1", "2", "3"] {
        Curl::through(&lenient)
            .run(&format!("{base}/record/a?x={x}&keep=1"))
            .assert_status(200);
    }
    let form = Curl::through(&lenient)
        .data("k=1&nonce=6")
        .run(&format!("{base}/record/form"));
    form.assert_status(200);
    assert_eq!(form.body_text(), "recorded 11 bytes\n");
    let killed = Curl::through(&lenient).run(&format!("{base}/record/a?x=1&keep=2"));
    assert_eq!(killed.status, 502, "kill: {killed:?}");

    // The other extra behaviours for a request that was never recorded; forward goes
    // to the network, where the origin is gone now.
    for (extra, status) in [("204", 204), ("400", 400), ("500", 500), ("forward", 502)] {
        let proxy = json_proxy(&[
            "--server-replay",
            &session_arg,
            "--server-replay-extra",
            extra,
        ]);
        let answer = Curl::through(&proxy).run(&format!("{base}/record/never"));
        assert_eq!(answer.status, status, "{extra}: {answer:?}");
        if extra == "forward" {
            assert!(answer.body_text().contains("connect"), "{answer:?}");
        }
    }
    // Host, port and body can be left out of the match; a chosen header is part of it.
    let loose = json_proxy(&[
        "--server-replay",
        &session_arg,
        "--server-replay-ignore-host",
        "--server-replay-ignore-port",
        "--server-replay-ignore-content",
        "--server-replay-extra",
        "404",
    ]);
    Curl::through(&loose)
        .run(&format!("http://localhost:{}/record/b", free_port()))
        .assert_status(200);
    Curl::through(&loose)
        .data("entirely=different")
        .run(&format!("{base}/record/form"))
        .assert_status(200);
    let by_header = json_proxy(&[
        "--server-replay",
        &session_arg,
        "--server-replay-use-header",
        "x-user",
        "--server-replay-extra",
        "404",
    ]);
    Curl::through(&by_header)
        .header("x-user: someone")
        .run(&format!("{base}/record/b"))
        .assert_status(404);
    Curl::through(&by_header)
        .run(&format!("{base}/record/b"))
        .assert_status(200);
    // Without the ignore options the other host and body are other requests.
    let strict = json_proxy(&[
        "--server-replay",
        &session_arg,
        "--server-replay-extra",
        "404",
    ]);
    Curl::through(&strict)
        .run(&format!("http://localhost:{}/record/b", free_port()))
        .assert_status(404);
    Curl::through(&strict)
        .data("entirely=different")
        .run(&format!("{base}/record/form"))
        .assert_status(404);
}

#[test]
fn the_config_file_and_set_configure_rules_and_their_errors_name_file_line_and_key() {
    let origin = plain_origin();
    let confdir = tempfile::tempdir().unwrap();
    std::fs::write(
        confdir.path().join("config.yaml"),
        "# rules for the test\nmodify_headers:\n  - /~q/x-from-file/1\nanticomp: true\n",
    )
    .unwrap();
    let proxy = Periscope::builder()
        .confdir(confdir.path())
        .args(["--json", "--set", "modify_headers=/~q/x-from-set/2"])
        .start();
    Curl::through(&proxy)
        .run(&format!("http://127.0.0.1:{}/record/conf", origin.port))
        .assert_status(200);
    let seen = recorded_at_least(&origin, 1);
    assert_eq!(
        recorded_header(&seen[0], "x-from-file"),
        Some("1"),
        "{seen:?}"
    );
    assert_eq!(
        recorded_header(&seen[0], "x-from-set"),
        Some("2"),
        "{seen:?}"
    );
    assert_eq!(
        recorded_header(&seen[0], "accept-encoding"),
        Some("identity")
    );

    let failing = |file: &str, extra: &[&str]| -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.yaml"), file).unwrap();
        let out = Command::new(periscope_binary())
            .arg("--confdir")
            .arg(dir.path())
            .arg("dump")
            .args(["-p", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace(&dir.path().display().to_string(), "CONFDIR")
    };
    assert_eq!(
        failing("listen_port: 0\nmap_locl: [x]\n", &[]),
        "periscope: error: CONFDIR/config.yaml line 2: unknown option \"map_locl\""
    );
    assert_eq!(
        failing("block_list:\n  - /~q/200\n  - /~d ads/teapot\n", &[]),
        "periscope: error: CONFDIR/config.yaml line 3: block_list \"/~d ads/teapot\": at \
         character 9: \"teapot\" is not an HTTP status code"
    );
    let bad_port = failing("\nlisten_port: eighty\n", &[]);
    assert!(
        bad_port.starts_with(
            "periscope: error: CONFDIR/config.yaml line 2: listen_port: invalid value 'eighty'"
        ),
        "{bad_port}"
    );
    assert_eq!(
        failing("", &["--map-local", "|x(|/tmp"]),
        "periscope: error: --map-local \"|x(|/tmp\": at character 2: invalid regular \
         expression \"x(\": unclosed group"
    );
    assert_eq!(
        failing("", &["--set", "server_replay_extra=later"]),
        "periscope: error: --set: server_replay_extra \"later\": \"later\" is not one of \
         forward, kill, 204, 400, 404, 500"
    );
}

#[test]
fn rules_change_at_run_time_through_the_control_api() {
    let origin = plain_origin();
    let proxy = json_proxy(&["--api", "--web-port", "0"]);
    let control = ControlApi::of(&proxy);
    let api = |method: &str, body: Option<&str>| control.send(method, "/options", body);
    let target = format!("http://127.0.0.1:{}/record/live", origin.port);

    let set = api("PUT", Some(r#"{"modify_headers": ["/~q/x-live/1"]}"#));
    set.assert_status(200);
    assert_eq!(set.json()["modify_headers"][0], "/~q/x-live/1");
    Curl::through(&proxy).run(&target).assert_status(200);
    let seen = recorded_at_least(&origin, 1);
    assert_eq!(recorded_header(&seen[0], "x-live"), Some("1"));

    let refused = api(
        "PUT",
        Some(r#"{"modify_headers": ["/~q/x-other/2", "/~bad(/x/1"]}"#),
    );
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(
        refused
            .body_text()
            .contains("--modify-headers \\\"/~bad(/x/1\\\"")
            || refused
                .body_text()
                .contains("--modify-headers \"/~bad(/x/1\""),
        "{}",
        refused.body_text()
    );
    let unknown = api("PUT", Some(r#"{"map_locale": []}"#));
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.body_text().contains("map_locale"),
        "{}",
        unknown.body_text()
    );
    let current = api("GET", None);
    assert_eq!(
        current.json()["modify_headers"],
        serde_json::json!(["/~q/x-live/1"])
    );
    Curl::through(&proxy).run(&target).assert_status(200);
    let seen = recorded_at_least(&origin, 2);
    assert_eq!(
        recorded_header(&seen[1], "x-live"),
        Some("1"),
        "the rules in force stayed"
    );
    assert_eq!(recorded_header(&seen[1], "x-other"), None);
}

#[test]
fn the_rules_on_a_flow_reach_har_and_the_rule_filter() {
    let origin = plain_origin();
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.periscope");
    let session_arg = session.to_string_lossy().into_owned();
    let mut proxy = Periscope::start_dump(&[
        "-w",
        &session_arg,
        "--modify-headers",
        "/~u changed/x-rule/1",
    ]);
    for path in ["/record/changed", "/record/untouched"] {
        Curl::through(&proxy)
            .run(&format!("http://127.0.0.1:{}{path}", origin.port))
            .assert_status(200);
    }
    proxy.wait_for_stdout("/record/untouched", WAIT);
    proxy.terminate(WAIT);

    let har = dir.path().join("out.har");
    let out = Command::new(periscope_binary())
        .args(["export", &session_arg, "--har"])
        .arg(&har)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let har: Value = serde_json::from_slice(&std::fs::read(&har).unwrap()).unwrap();
    let entries = har["log"]["entries"].as_array().unwrap();
    let changed = entries
        .iter()
        .find(|e| e["request"]["url"].as_str().unwrap().ends_with("/changed"))
        .unwrap();
    assert_eq!(changed["_periscopeRules"][0]["rule"], "modify_headers");
    assert_eq!(
        changed["_periscopeRules"][0]["spec"],
        "/~u changed/x-rule/1"
    );
    let untouched = entries
        .iter()
        .find(|e| {
            e["request"]["url"]
                .as_str()
                .unwrap()
                .ends_with("/untouched")
        })
        .unwrap();
    assert!(untouched.get("_periscopeRules").is_none());

    let out = Command::new(periscope_binary())
        .args(["-r", &session_arg, "dump", "~rule", "modify_headers"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("/record/changed"), "{printed}");
    assert!(!printed.contains("/record/untouched"), "{printed}");
}

#[test]
fn rules_change_a_websocket_opening_handshake() {
    let echo = python_websocket_echo_server();
    let proxy = json_proxy(&["--modify-headers", "|~u /chat$|x-ws-rule|on"]);
    let output = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/websocket_client.py"
        ))
        .args(["--proxy", &proxy.addr(), "--url"])
        .arg(format!("ws://127.0.0.1:{}/chat", echo.port))
        .arg("--cacert")
        .arg(proxy.ca_cert_path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = echo.stdout.wait_for(&"handshake: ", WAIT).unwrap();
    assert!(
        line.to_ascii_lowercase()
            .contains("[\"x-ws-rule\", \"on\"]"),
        "{line}"
    );
    let flow = flow_after(&proxy, 0, "/chat");
    let effects: Vec<&str> = flow["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["effect"].as_str().unwrap())
        .collect();
    // Without ~q or ~s the rule applies to both sides, the 101 included.
    assert_eq!(
        effects,
        ["request: set x-ws-rule", "response: set x-ws-rule"]
    );
}

/// The HTTP/2 client of RFC 8441 through `proxy` to `port`'s `/chat`.
fn websocket_over_http2(proxy: &Periscope, port: u16) -> Value {
    let ca = proxy.ca_cert_path().to_string_lossy().into_owned();
    let output = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/h2_websocket_client.py"
        ))
        .args(["--proxy", &proxy.addr(), "--port", &port.to_string()])
        .args(["--host", "localhost", "--path", "/chat", "--cacert", &ca])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn rules_apply_to_a_websocket_over_http2() {
    let origin = h2_origin(&[]);
    let blocking = json_proxy(&["--block-list", "|~u /chat$|403"]);
    let report = websocket_over_http2(&blocking, origin.port);
    assert_eq!(report["status"], 403, "{report}");
    let flow = flow_after(&blocking, 0, "/chat");
    assert_eq!(
        rules_of(&flow),
        [("block_list".to_owned(), "|~u /chat$|403".to_owned())]
    );
    assert!(
        !origin.stdout.text().contains("request: CONNECT /chat"),
        "{}",
        origin.stdout.text()
    );

    let marking = json_proxy(&["--modify-headers", "|~q & ~u /chat$|x-ws-rule|on"]);
    let report = websocket_over_http2(&marking, origin.port);
    assert_eq!(report["status"], 200, "{report}");
    let flow = flow_after(&marking, 0, "/chat");
    assert_eq!(rules_of(&flow).len(), 1, "{flow}");
    assert!(
        flow["request"]["headers"].to_string().contains("x-ws-rule"),
        "{flow}"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    pipe("gzip", &["-c"], data)
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    pipe("gzip", &["-dc"], data)
}

fn pipe(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}
