//! The session file as a user relies on it, through the real binary:
//!
//! - `kill -9` in the middle of a session loses none of the flows recorded before
//!   it: `periscope dump -r FILE` afterwards lists every one, and `dump -r FILE -w
//!   COPY FILTER` keeps the flows it prints in a new session;
//! - `periscope export FILE --har OUT.har` of a session holding a flow Apache
//!   renegotiated writes HAR that validates against the HAR 1.2 schema (the venv's
//!   Python `jsonschema`) and carries the request, the response, the timings and
//!   the renegotiation in `_tlsEvents`.
//! - `periscope export` of a flow whose server set cookies with dates that are not
//!   dates (`Expires=a\xff`, bytes that are not UTF-8, and a multi-byte character)
//!   writes the archive, the cookies without an expiry.
//! - the temporary session of a proxy killed with SIGKILL (no `-w`, the control API
//!   serving) is removed by the next proxy that starts with the same `TMPDIR`, which
//!   says so;
//! - a plain `periscope dump` (no `-w`, no API) keeps no session at all, and prints
//!   every flow.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// `periscope dump -w FILE` trusting the test CA.
fn recording_proxy(file: &Path) -> Periscope {
    PeriscopeBuilder::new()
        .arg("-w")
        .arg(file)
        .arg("--upstream-trusted-ca")
        .arg(&test_pki().ca_cert)
        .start()
}

/// `periscope export FILE --har OUT`: the archive as JSON, after asserting success.
fn export_har(file: &Path, har: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .arg("export")
        .arg(file)
        .arg("--har")
        .arg(har)
        .output()
        .expect("run periscope export");
    assert!(
        out.status.success(),
        "export failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(har).unwrap()).expect("the HAR is JSON")
}

/// `periscope dump -r FILE ARGS...` from another process: its flow lines.
fn dump_session(file: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .arg("dump")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("run periscope dump -r");
    assert!(
        out.status.success(),
        "periscope dump -r {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn kill_9_loses_no_flow_recorded_before_it() {
    const FLOWS: usize = 25;
    let apache = Apache::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("killed.periscope");
    let mut proxy = recording_proxy(&file);
    for i in 0..FLOWS {
        let vhost = if i % 2 == 0 {
            Vhost::Tls12
        } else {
            Vhost::Plain
        };
        Curl::through(&proxy)
            .run(&apache.url(vhost, &format!("/hello.txt?n={i}")))
            .assert_status(200);
    }
    // A second process sees them all in the file while the proxy still runs...
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen = dump_session(&file, &[]);
        if seen.len() == FLOWS {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(seen.len(), FLOWS, "before the kill: {seen:#?}");
    // ...then the proxy dies without any chance to checkpoint or close the file.
    proxy.signal(libc::SIGKILL);
    proxy.kill();
    let after = dump_session(&file, &[]);
    assert_eq!(after.len(), FLOWS, "after kill -9: {after:#?}");
    for i in 0..FLOWS {
        let needle = format!("/hello.txt?n={i} 200");
        assert!(
            after.iter().any(|l| l.contains(&needle)),
            "flow {i} is missing after kill -9: {after:#?}"
        );
    }
    // The session is still a working session: filters read it.
    assert_eq!(dump_session(&file, &["~u", "n=1\\b"]).len(), 1);

    // `dump -r IN -w OUT FILTER` prints the matching flows and keeps them in OUT.
    let copy = dir.path().join("filtered.periscope");
    let copy_arg = copy.to_str().unwrap();
    let printed = dump_session(&file, &["-w", copy_arg, "~u", "n=1[0-9]\\b"]);
    assert_eq!(printed.len(), 10, "{printed:#?}");
    let copied = dump_session(&copy, &[]);
    assert_eq!(copied, printed, "the copy holds what was printed");
    // Copying onto the file being read is refused, and the session is untouched.
    let refused = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .args(["dump", "-r"])
        .arg(&file)
        .arg("-w")
        .arg(&file)
        .output()
        .expect("run periscope dump -r -w");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is the session -r reads"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(dump_session(&file, &[]).len(), FLOWS);
}

#[test]
fn har_export_of_a_renegotiated_flow_validates_and_carries_the_tls_events() {
    let apache = Apache::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("session.periscope");
    let mut proxy = recording_proxy(&file);
    let oauth = apache.url(Vhost::Tls12, "/vedauth/authorize/oauth");
    let r = Curl::through(&proxy)
        .header("Content-Type: application/x-www-form-urlencoded")
        .data("grant_type=client_credentials&client_id=periscope")
        .run(&oauth);
    assert_eq!((r.exit_code, r.status), (0, 400), "{r:?}");
    Curl::through(&proxy)
        .run(&apache.url(Vhost::Tls13, "/hello.txt"))
        .assert_status(200);
    assert!(
        wait_until(WAIT, || dump_session(&file, &[]).len() == 2),
        "the session never held both flows: {:#?}",
        dump_session(&file, &[])
    );
    proxy.terminate(Duration::from_secs(5));

    let har_file = dir.path().join("out.har");
    let har = export_har(&file, &har_file);

    // The HAR 1.2 schema, checked by an independent implementation.
    let schema =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/flow/tests/data/har-1.2.schema.json");
    let check = Command::new(python())
        .arg("-c")
        .arg(
            "import json, sys, jsonschema\n\
             schema = json.load(open(sys.argv[1]))\n\
             har = json.load(open(sys.argv[2]))\n\
             jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).validate(har)\n\
             print('valid')",
        )
        .arg(&schema)
        .arg(&har_file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the HAR does not validate:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{har:#}");
    let entry = entries
        .iter()
        .find(|e| e["request"]["url"] == oauth.as_str())
        .unwrap_or_else(|| panic!("no entry for {oauth}: {har:#}"));
    assert_eq!(entry["request"]["method"], "POST");
    assert!(
        entry["request"]["postData"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("grant_type=client_credentials")),
        "{entry:#}"
    );
    assert_eq!(entry["response"]["status"], 400);
    assert!(
        entry["response"]["content"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("invalid_request")),
        "{entry:#}"
    );
    let timings = &entry["timings"];
    for phase in ["send", "wait", "receive"] {
        assert!(
            timings[phase].as_f64().is_some_and(|ms| ms >= 0.0),
            "timings.{phase}: {timings}"
        );
    }
    let events = entry["_tlsEvents"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for kind in [
        "hello_request",
        "renegotiation_started",
        "certificate_requested",
        "renegotiation_completed",
    ] {
        assert!(
            kinds.contains(&kind),
            "no {kind} in _tlsEvents: {events:#?}"
        );
    }
    let completed = events
        .iter()
        .find(|e| e["type"] == "renegotiation_completed")
        .unwrap();
    assert_eq!(completed["leg"], "server");
    assert!(
        completed["text"]
            .as_str()
            .is_some_and(|t| t.contains("renegotiation completed: TLSv1.2")),
        "{completed:#}"
    );
}

#[test]
fn har_export_survives_set_cookie_dates_that_are_not_dates() {
    let origin = PythonPeer::start("fault_origin.py", &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cookies.periscope");
    let mut proxy = recording_proxy(&file);
    let url = format!("http://127.0.0.1:{}/hostile-cookie", origin.port);
    Curl::through(&proxy).run(&url).assert_status(200);
    assert!(
        wait_until(WAIT, || dump_session(&file, &[]).len() == 1),
        "the session never held the flow"
    );
    proxy.terminate(Duration::from_secs(5));

    let har = export_har(&file, &dir.path().join("cookies.har"));
    let response = &har["log"]["entries"][0]["response"];
    let raw: Vec<&str> = response["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| {
            h["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("set-cookie"))
        })
        .filter_map(|h| h["value"].as_str())
        .collect();
    assert_eq!(
        raw,
        ["a=b; Expires=a\u{fffd}", "c=d; Expires=a€; Path=/"],
        "the headers as recorded"
    );
    assert_eq!(
        response["cookies"],
        serde_json::json!([
            {"name": "a", "value": "b", "httpOnly": false, "secure": false},
            {"name": "c", "value": "d", "path": "/", "httpOnly": false, "secure": false},
        ])
    );
}

/// SIGTERM as soon as the proxy says it listens (what a supervisor or a script that
/// starts and stops it does) is a clean shutdown, not death by signal: the handler is
/// in place before the line is printed.
#[test]
fn sigterm_right_after_the_listening_line_is_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let file = dir.path().join(format!("session-{round}.periscope"));
        let mut proxy = recording_proxy(&file);
        let status = proxy.terminate(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "round {round}: {status:?}\n{}",
            proxy.describe()
        );
    }
}

#[test]
fn a_killed_proxys_temporary_session_is_removed_by_the_next_one() {
    let tmp = tempfile::tempdir().unwrap();
    // The control API reads flows back, so the proxy keeps them in a temporary session.
    let temporary_proxy = || {
        PeriscopeBuilder::new()
            .args(["-v", "--api", "--web-port", "0"])
            .env("TMPDIR", tmp.path())
            .start()
    };

    let mut killed = temporary_proxy();
    let left = entries_named(tmp.path(), "periscope-session-");
    assert_eq!(left.len(), 1, "one session while running: {left:?}");
    killed.kill();
    assert!(left[0].exists(), "SIGKILL leaves the session behind");

    let mut next = temporary_proxy();
    assert!(
        wait_until(WAIT, || !left[0].exists()),
        "the killed proxy's session is still there after {WAIT:?}\n{}",
        next.describe()
    );
    next.stderr()
        .wait_for(&"removed 1 abandoned periscope-session-* directory", WAIT)
        .unwrap_or_else(|e| panic!("no line on the removal ({e:?})\n{}", next.describe()));
    let own = entries_named(tmp.path(), "periscope-session-");
    assert_eq!(own.len(), 1, "its own session is kept: {own:?}");
    assert_ne!(own, left);

    let status = next.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{}", next.describe());
    assert_eq!(
        entries_named(tmp.path(), "periscope-session-"),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn a_plain_dump_keeps_no_session_and_prints_every_flow() {
    const FLOWS: usize = 5;
    let apache = Apache::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut proxy = PeriscopeBuilder::new()
        .arg("--upstream-trusted-ca")
        .arg(&test_pki().ca_cert)
        .env("TMPDIR", tmp.path())
        .start();
    for i in 0..FLOWS {
        Curl::through(&proxy)
            .run(&apache.url(Vhost::Tls12, &format!("/hello.txt?plain={i}")))
            .assert_status(200);
    }
    for i in 0..FLOWS {
        proxy
            .stdout()
            .wait_for(&format!("/hello.txt?plain={i} 200"), WAIT)
            .unwrap_or_else(|e| panic!("flow {i} not printed ({e:?})\n{}", proxy.describe()));
    }
    assert_eq!(
        entries_named(tmp.path(), "periscope-session-"),
        Vec::<std::path::PathBuf>::new(),
        "nothing reads a plain dump's flows back, so none are written"
    );
    let status = proxy.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{}", proxy.describe());
}
