//! The console (`periscope` with no subcommand on a terminal), driven in tmux as a
//! person would drive it: flows made by curl through the proxy to the harness
//! Apache appear in the list; Enter and Tab reach the Detail tab with the timing
//! list and, for a flow the server renegotiated, the renegotiation; `f` narrows the
//! list; `?` shows the keys; `w` writes HAR; `q` quits and leaves the terminal as
//! it found it. A request whose response is slow shows in the list at once, marked
//! `pending`, and then as the completed flow. Every wait polls `capture-pane` with a
//! timeout.
//!
//! Acting on flows (`console_intercepts_...`): a request matching `--intercept` waits
//! (marked `at req`) while `e` edits its headers in `$EDITOR` (a script that appends
//! a header) and `a` lets it go, to the recording origin (`fault_origin.py`) and
//! again at the response; `i` clears and sets the intercept filter, `r` replays a
//! flow (the origin sees it twice, the new row is marked `↻`), `x` kills a paused
//! one (the client gets the 502 that says so).

mod support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const WIDTH: u16 = 220;
const HEIGHT: u16 = 50;

/// The console in tmux, with the port it listens on.
struct Console {
    tmux: TmuxConsole,
    port: u16,
    confdir: PathBuf,
}

impl Console {
    /// `periscope --listen-host 127.0.0.1 -p 0 --confdir DIR --upstream-trusted-ca CA
    /// EXTRA...` in a 220x50 tmux window; waits for the listening line on stderr.
    fn start(confdir: &Path, extra: &[OsString]) -> Console {
        Console::start_with_env(confdir, extra, &[])
    }

    /// [`Console::start`] with environment variables for the console (`EDITOR`).
    fn start_with_env(confdir: &Path, extra: &[OsString], env: &[(&str, OsString)]) -> Console {
        let mut args: Vec<OsString> = ["--listen-host", "127.0.0.1", "-p", "0", "--confdir"]
            .iter()
            .map(OsString::from)
            .collect();
        args.push(confdir.into());
        args.push("--upstream-trusted-ca".into());
        args.push(test_pki().ca_cert.clone().into());
        args.extend(extra.iter().cloned());
        let tmux = TmuxConsole::start_with_env(
            Path::new(env!("CARGO_BIN_EXE_periscope")),
            &args,
            env,
            WIDTH,
            HEIGHT,
        );
        let line = tmux.wait_for_stderr(LISTENING_MARKER, Duration::from_secs(30));
        let port = parse_listening_port(&line).expect("port in the listening line");
        Console {
            tmux,
            port,
            confdir: confdir.to_owned(),
        }
    }

    fn curl(&self) -> Curl {
        Curl::new()
            .proxy(format!("http://127.0.0.1:{}", self.port))
            .cacert(self.confdir.join("periscope-ca-cert.pem"))
    }

    /// The list rows (lines with a URL) on the current screen.
    fn rows(screen: &str) -> Vec<&str> {
        screen.lines().filter(|l| l.contains("://")).collect()
    }

    /// Presses `q` at the list: the console must end with status 0 and leave the
    /// terminal settings as they were.
    fn quit(&self) {
        self.tmux.send_keys(&["q"]);
        self.assert_ended_cleanly();
    }

    /// SIGTERM: the same clean end as `q`.
    fn terminate(&self) {
        send_signal(self.tmux.pid(), libc::SIGTERM);
        self.assert_ended_cleanly();
    }

    fn assert_ended_cleanly(&self) {
        let exit = self.tmux.exit_line(Duration::from_secs(10));
        assert!(
            exit.ends_with("status 0"),
            "{exit}\n{}",
            self.tmux.stderr_text()
        );
        let (before, after) = self.tmux.terminal_settings();
        assert!(!before.is_empty(), "no terminal settings recorded");
        assert_eq!(before, after, "the terminal settings changed");
        let screen = self.tmux.capture();
        assert!(
            !screen.contains("[127.0.0.1:"),
            "the console's screen is still shown after quitting:\n{screen}"
        );
    }
}

fn oauth_post(curl: Curl) -> Curl {
    curl.header("Content-Type: application/x-www-form-urlencoded")
        .data("grant_type=client_credentials&client_id=periscope")
}

/// Validates a HAR file with the venv's jsonschema against the HAR 1.2 schema.
fn assert_valid_har(path: &Path) {
    let schema =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/flow/tests/data/har-1.2.schema.json");
    let out = Command::new(python())
        .arg("-c")
        .arg(
            "import json, sys, jsonschema\n\
             schema = json.load(open(sys.argv[1]))\n\
             har = json.load(open(sys.argv[2]))\n\
             jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).validate(har)\n\
             print('valid', len(har['log']['entries']))",
        )
        .arg(&schema)
        .arg(path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{} is not valid HAR 1.2:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn console_lists_flows_shows_the_renegotiation_in_detail_filters_and_quits_cleanly() {
    let apache = Apache::start();
    let confdir = tempfile::tempdir().unwrap();
    let console = Console::start(confdir.path(), &[]);
    let tmux = &console.tmux;
    tmux.wait_for_text("No flows yet");

    // A plain 200, then Apache's 400 answered after a renegotiation (TLS 1.2 vhost).
    let hello = apache.url(Vhost::Tls12, "/hello.txt");
    console.curl().run(&hello).assert_status(200);
    tmux.wait_for("the GET row", SCREEN_TIMEOUT, |s| {
        Console::rows(s)
            .iter()
            .any(|l| l.contains("GET") && l.contains("/hello.txt") && l.contains(" 200 "))
    });

    let oauth = apache.url(Vhost::Tls12, "/vedauth/authorize/oauth");
    let r = oauth_post(console.curl()).run(&oauth);
    assert_eq!((r.exit_code, r.status), (0, 400), "{r:?}");
    let screen = tmux.wait_for("the oauth flow", SCREEN_TIMEOUT, |s| {
        s.contains("[2 flows]")
            && Console::rows(s)
                .iter()
                .any(|l| l.contains("/vedauth/authorize/oauth") && l.contains(" 400 "))
    });
    let row = Console::rows(&screen)
        .into_iter()
        .find(|l| l.contains("/vedauth/authorize/oauth"))
        .unwrap();
    // The marker columns follow the selection column: marked, TLS, error.
    assert_eq!(
        row.chars().nth(2),
        Some('R'),
        "no renegotiation marker: {row}"
    );

    // Enter on the first flow, Tab to Detail: the timing list.
    tmux.send_keys(&["Enter"]);
    tmux.wait_for_text("GET /hello.txt HTTP/1.1");
    tmux.send_keys(&["Tab"]);
    tmux.wait_for_text("HTTP/1.1 200 OK");
    tmux.send_keys(&["Tab"]);
    tmux.wait_for_all(&[
        "Timing",
        "First request byte:",
        "Server conn. TLS handshake:",
        "Response complete:",
        "TLSv1.2",
    ]);

    // Back, down to the renegotiated flow: its Detail shows the renegotiation.
    tmux.send_keys(&["q", "j", "Enter"]);
    tmux.wait_for_text("POST /vedauth/authorize/oauth HTTP/1.1");
    tmux.send_keys(&["Tab"]);
    tmux.wait_for_text("invalid_request");
    tmux.send_keys(&["Tab"]);
    tmux.wait_for_all(&[
        "server leg: HelloRequest received",
        "renegotiation started by server",
        "CertificateRequest",
        "renegotiation completed: TLSv1.2",
        "First request byte:",
        "Server certificate",
    ]);

    // f, ~c 400, Enter: only the 400 is left.
    tmux.send_keys(&["q", "f"]);
    tmux.wait_for_text("Filter:");
    tmux.type_text("~c 400");
    tmux.send_keys(&["Enter"]);
    tmux.wait_for("only the 400 in the list", SCREEN_TIMEOUT, |s| {
        let rows = Console::rows(s);
        s.contains("[1/2 flows] [filter: ~c 400]")
            && rows.len() == 1
            && rows[0].contains("/vedauth/authorize/oauth")
    });

    // ? shows the keys; q closes it.
    tmux.send_keys(&["?"]);
    tmux.wait_for_all(&["set the filter", "Markers in the list"]);
    tmux.send_keys(&["q"]);
    tmux.wait_for_text("[1/2 flows]");

    // w with a .har name exports the shown flows.
    let har = tmux.dir().join("console.har");
    tmux.send_keys(&["w"]);
    tmux.wait_for_text("Save the 1 flows matching ~c 400");
    tmux.type_text(&har.display().to_string());
    tmux.send_keys(&["Enter"]);
    tmux.wait_for_text("Saved 1 flows to");
    assert_valid_har(&har);

    // A resize redraws without trouble.
    tmux.resize(100, 24);
    tmux.wait_for("the list at 100 columns", SCREEN_TIMEOUT, |s| {
        s.lines().any(|l| l.contains("/vedauth/authorize/oauth")) && s.contains("[1/2 flows]")
    });

    console.quit();
}

#[test]
fn console_shows_a_request_in_flight_then_its_response() {
    const DELAY: Duration = Duration::from_secs(3);
    let origin = PythonPeer::start("fault_origin.py", &[]);
    let confdir = tempfile::tempdir().unwrap();
    let console = Console::start(confdir.path(), &[]);
    let tmux = &console.tmux;
    tmux.wait_for_text("No flows yet");

    let url = format!(
        "http://127.0.0.1:{}/slow?seconds={}",
        origin.port,
        DELAY.as_secs()
    );
    let curl = console.curl();
    let sent = Instant::now();
    let request = std::thread::spawn(move || curl.run(&url));
    let in_flight = |s: &str| {
        Console::rows(s)
            .iter()
            .any(|l| l.contains("/slow?seconds=") && l.contains(" … ") && l.contains("pending"))
    };
    // Well before the origin answers.
    let screen = tmux.wait_for("the request in flight", DELAY * 2 / 3, in_flight);
    assert!(
        !request.is_finished() && sent.elapsed() < DELAY,
        "the response came before the pending row showed:\n{screen}"
    );

    let response = request.join().unwrap();
    response.assert_status(200);
    assert!(sent.elapsed() >= DELAY, "the origin did not wait");
    tmux.wait_for("the completed flow in its place", SCREEN_TIMEOUT, |s| {
        let rows = Console::rows(s);
        rows.len() == 1
            && rows[0].contains("/slow?seconds=")
            && rows[0].contains(" 200 ")
            && !rows[0].contains("pending")
            && s.contains("[1 flows]")
    });
    console.quit();
}

#[test]
fn console_opens_a_saved_session_and_adds_new_flows_to_it() {
    let apache = Apache::start();
    let confdir = tempfile::tempdir().unwrap();
    let session = tempfile::tempdir().unwrap();
    let file = session.path().join("saved.periscope");
    {
        // Record one flow with the headless proxy.
        let proxy = PeriscopeBuilder::new()
            .confdir(confdir.path())
            .arg("-w")
            .arg(&file)
            .arg("--upstream-trusted-ca")
            .arg(&test_pki().ca_cert)
            .start();
        Curl::through(&proxy)
            .run(&apache.url(Vhost::Tls12, "/hello.txt"))
            .assert_status(200);
        proxy.wait_for_stdout("/hello.txt 200", Duration::from_secs(20));
        // Printed is not yet saved: wait for the recorder to commit it.
        assert!(
            wait_until(Duration::from_secs(20), || dump_lines(&file).len() == 1),
            "the session never held the flow"
        );
        let mut proxy = proxy;
        proxy.terminate(Duration::from_secs(5));
    }
    let console = Console::start(confdir.path(), &["-r".into(), file.clone().into()]);
    let tmux = &console.tmux;
    tmux.wait_for_text("/hello.txt");
    console
        .curl()
        .run(&apache.url(Vhost::Tls13, "/hello.txt"))
        .assert_status(200);
    tmux.wait_for("two flows", SCREEN_TIMEOUT, |s| s.contains("[2 flows]"));
    // What the console showed before it was told to stop is in the file.
    console.terminate();
    let lines = dump_lines(&file);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("/hello.txt 200"))
            .count(),
        2,
        "{lines:#?}"
    );
}

/// Whether the process is gone (or a zombie waiting to be reaped).
fn is_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The flow lines `periscope dump -r FILE` prints.
fn dump_lines(file: &Path) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .arg("dump")
        .arg("-r")
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn console_killed_with_sigkill_keeps_every_flow_it_recorded() {
    const FLOWS: usize = 6;
    let apache = Apache::start();
    let confdir = tempfile::tempdir().unwrap();
    let session = tempfile::tempdir().unwrap();
    let file = session.path().join("killed.periscope");
    let console = Console::start(confdir.path(), &["-w".into(), file.clone().into()]);
    for i in 0..FLOWS {
        console
            .curl()
            .run(&apache.url(Vhost::Tls12, &format!("/hello.txt?n={i}")))
            .assert_status(200);
    }
    console.tmux.wait_for_text(&format!("[{FLOWS} flows]"));
    assert!(
        wait_until(Duration::from_secs(20), || dump_lines(&file).len() == FLOWS),
        "the session file never held the {FLOWS} flows: {:#?}",
        dump_lines(&file)
    );
    send_signal(console.tmux.pid(), libc::SIGKILL);
    let exit = console.tmux.exit_line(Duration::from_secs(10));
    assert!(exit.ends_with("status 137"), "{exit}");
    drop(console);

    // Opened again with -r: all of them are there.
    let reopened = Console::start(confdir.path(), &["-r".into(), file.clone().into()]);
    let screen = reopened.tmux.wait_for_text(&format!("[{FLOWS} flows]"));
    for i in 0..FLOWS {
        assert!(
            screen.contains(&format!("/hello.txt?n={i} ")),
            "flow {i} missing:\n{screen}"
        );
    }
    reopened.quit();
}

#[test]
fn console_ends_when_its_terminal_goes_away() {
    let confdir = tempfile::tempdir().unwrap();
    let console = Console::start(confdir.path(), &[]);
    console.tmux.wait_for_text("No flows yet");
    let pid = console.tmux.pid();
    // Killing the tmux server closes the terminal under the console.
    drop(console);
    assert!(
        wait_until(Duration::from_secs(10), || is_gone(pid)),
        "the console (pid {pid}) still runs after its terminal went away"
    );
}

/// What the recording origin received, one JSON object per request.
fn recorded(origin: &PythonPeer) -> Vec<serde_json::Value> {
    origin
        .stdout
        .lines()
        .iter()
        .filter_map(|l| l.strip_prefix("recorded: "))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn recorded_header<'a>(recorded: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    recorded["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

/// The row of the list whose URL ends with `path` (followed by a space).
fn row_with<'a>(screen: &'a str, path: &str) -> Option<&'a str> {
    let needle = format!("{path} ");
    Console::rows(screen)
        .into_iter()
        .find(|l| l.contains(&needle))
}

#[test]
fn console_intercepts_edits_in_the_editor_resumes_replays_and_kills() {
    const WAIT: Duration = Duration::from_secs(30);
    let origin = PythonPeer::start("fault_origin.py", &[]);
    let confdir = tempfile::tempdir().unwrap();
    // The "editor": appends a header line to the file it is given.
    let scripts = tempfile::tempdir().unwrap();
    let editor = scripts.path().join("add-header.sh");
    std::fs::write(&editor, "#!/bin/sh\nprintf 'X-Edited: yes\\n' >> \"$1\"\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let console = Console::start_with_env(
        confdir.path(),
        &[
            "--intercept".into(),
            "~u /record/hold".into(),
            "--web-port".into(),
            "0".into(),
        ],
        &[("EDITOR", editor.clone().into())],
    );
    let tmux = &console.tmux;
    tmux.wait_for_all(&["No flows yet", "[intercept: ~u /record/hold]"]);

    // The request waits at the proxy, marked in the list.
    let hold = format!("http://127.0.0.1:{}/record/hold", origin.port);
    let curl = console.curl().max_time(Duration::from_secs(120));
    let request = std::thread::spawn(move || curl.run(&hold));
    tmux.wait_for("the intercepted row", WAIT, |s| {
        row_with(s, "/record/hold").is_some_and(|r| r.contains("at req"))
            && s.contains("[1 intercepted: a resumes]")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !request.is_finished(),
        "curl got an answer while the flow waited"
    );
    assert!(
        recorded(&origin).is_empty(),
        "the origin saw the held request"
    );

    // e, h: the request headers in $EDITOR; the script adds one.
    tmux.send_keys(&["e"]);
    tmux.wait_for_all(&["Edit before it goes on", "request headers"]);
    tmux.send_keys(&["h"]);
    tmux.wait_for_text("Edited the request headers");
    assert!(recorded(&origin).is_empty(), "an edit does not let it go");

    // a: it goes on, edited; the same filter holds it again at the response.
    tmux.send_keys(&["a"]);
    origin
        .stdout
        .wait_for(&"recorded: ", WAIT)
        .expect("the origin received the request");
    let seen = recorded(&origin);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        recorded_header(&seen[0], "x-edited"),
        Some("yes"),
        "{seen:?}"
    );
    tmux.wait_for("the row waiting at the response", WAIT, |s| {
        row_with(s, "/record/hold").is_some_and(|r| r.contains("at resp"))
    });
    assert!(!request.is_finished(), "the response waits too");
    tmux.send_keys(&["a"]);
    let answer = request.join().unwrap();
    answer.assert_status(200);
    assert_eq!(answer.body_text(), "recorded 0 bytes\n");
    tmux.wait_for("the completed flow", WAIT, |s| {
        row_with(s, "/record/hold").is_some_and(|r| r.contains(" 200 ") && !r.contains("at "))
            && !s.contains("intercepted: a resumes")
    });

    // i, cleared: nothing is held any more; r replays the flow.
    tmux.send_keys(&["i"]);
    tmux.wait_for_text("Intercept filter (empty: none): ~u /record/hold");
    tmux.send_keys(&["C-u", "Enter"]);
    tmux.wait_for("the filter gone from the status bar", WAIT, |s| {
        s.contains("Intercept filter cleared") && !s.contains("[intercept:")
    });
    // Counted before the replay: the first request's line is already there.
    let before_replay = origin.stdout.len();
    tmux.send_keys(&["r"]);
    tmux.wait_for_text("Replaying the request");
    origin
        .stdout
        .wait_for_after(before_replay, &"recorded: ", WAIT)
        .expect("the origin received the replay");
    let seen = recorded(&origin);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1]["target"], "/record/hold", "{seen:?}");
    assert_eq!(
        recorded_header(&seen[1], "x-edited"),
        Some("yes"),
        "{seen:?}"
    );
    let screen = tmux.wait_for("the replay's row", WAIT, |s| {
        s.contains("[2 flows]")
            && Console::rows(s)
                .iter()
                .any(|r| r.contains('↻') && r.contains("/record/hold ") && r.contains(" 200 "))
    });
    assert_eq!(Console::rows(&screen).len(), 2, "{screen}");

    // i, a new filter; X kills the flow that waits: the client is told.
    tmux.send_keys(&["i", "C-u"]);
    tmux.type_text("~u /record/kill");
    tmux.send_keys(&["Enter"]);
    tmux.wait_for_text("[intercept: ~u /record/kill]");
    let kill = format!("http://127.0.0.1:{}/record/kill", origin.port);
    let curl = console.curl().max_time(Duration::from_secs(120));
    let request = std::thread::spawn(move || curl.run(&kill));
    tmux.wait_for("the row to kill", WAIT, |s| {
        row_with(s, "/record/kill").is_some_and(|r| r.contains("at req"))
    });
    tmux.send_keys(&["G", "x"]);
    let answer = request.join().unwrap();
    answer.assert_status(502);
    assert!(
        answer.body_text().contains("killed in Periscope"),
        "{answer:?}"
    );
    tmux.wait_for("the killed flow", WAIT, |s| {
        row_with(s, "/record/kill").is_some_and(|r| r.contains(" err ") || r.contains('!'))
    });
    assert_eq!(
        recorded(&origin).len(),
        2,
        "the killed request never reached the origin"
    );
    console.quit();
}

/// `O` sets the running proxy's options from the console: a script given as
/// `scripts=PATH` starts and changes the next request; a refused value keeps the
/// prompt open with the reason.
#[test]
fn console_sets_scripts_and_rules_on_the_running_proxy_with_o() {
    let origin = PythonPeer::start("fault_origin.py", &[]);
    let confdir = tempfile::tempdir().unwrap();
    let script = confdir.path().join("tag.py");
    std::fs::write(
        &script,
        "def request(flow):\n    flow.request.headers['x-console-script'] = 'yes'\n",
    )
    .unwrap();
    let console = Console::start(
        confdir.path(),
        &["--scripts-python".into(), python().into()],
    );
    let tmux = &console.tmux;
    tmux.wait_for_text("No flows yet");
    tmux.send_keys(&["O"]);
    tmux.wait_for_text("Option NAME=VALUE");
    tmux.type_text(&format!("scripts={}", script.display()));
    tmux.send_keys(&["Enter"]);
    tmux.wait_for_text("scripts = [");
    tmux.send_keys(&["O"]);
    tmux.type_text("modify_headers=/~q/x-console-rule/1");
    tmux.send_keys(&["Enter"]);
    tmux.wait_for_text("modify_headers = [");
    console
        .curl()
        .run(&format!("http://127.0.0.1:{}/record/console", origin.port))
        .assert_status(200);
    let seen = recorded(&origin);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(recorded_header(&seen[0], "x-console-script"), Some("yes"));
    assert_eq!(recorded_header(&seen[0], "x-console-rule"), Some("1"));
    tmux.send_keys(&["O"]);
    tmux.type_text("response_timeout=never");
    tmux.send_keys(&["Enter"]);
    tmux.wait_for_text("response_timeout: \"never\"");
    // A lone Escape is told from the start of a key sequence only after a pause: the
    // prompt must be gone before `q` means quit.
    tmux.send_keys(&["Escape"]);
    tmux.wait_for("the prompt closed", SCREEN_TIMEOUT, |s| {
        !s.contains("response_timeout=never")
    });
    console.quit();
}
