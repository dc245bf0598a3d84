//! Addon scripts (`-s`), end to end: the real binary runs mitmproxy-style Python
//! scripts in its worker (`--scripts-python` is the test venv's interpreter) against a
//! recording origin on loopback (`tests/peers/addon_origin.py`) and Apache's
//! renegotiating location, with curl as the client.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::*;

const WAIT: Duration = Duration::from_secs(20);

fn origin() -> PythonPeer {
    PythonPeer::start("addon_origin.py", &[])
}

/// A directory holding the test's scripts.
struct Scripts(tempfile::TempDir);

impl Scripts {
    fn new() -> Scripts {
        Scripts(
            tempfile::Builder::new()
                .prefix("addons-")
                .tempdir()
                .unwrap(),
        )
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

fn proxy_with(scripts: &[&Path], extra: &[&str]) -> Periscope {
    let mut builder = PeriscopeBuilder::new()
        .arg("--upstream-trusted-ca")
        .arg(&test_pki().ca_cert)
        .arg("--scripts-python")
        .arg(python());
    for script in scripts {
        builder = builder.arg("-s").arg(script);
    }
    builder.args(extra).start()
}

fn url(origin: &PythonPeer, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", origin.port)
}

#[test]
fn a_request_script_adds_a_header_and_a_query_parameter_the_origin_sees() {
    let origin = origin();
    let scripts = Scripts::new();
    let script = scripts.write(
        "add_header.py",
        "from mitmproxy import http\n\
         \n\
         class AddHeader:\n\
         \x20   def __init__(self):\n\
         \x20       self.num = 0\n\
         \n\
         \x20   def request(self, flow: http.HTTPFlow) -> None:\n\
         \x20       self.num += 1\n\
         \x20       flow.request.headers[\"x-count\"] = str(self.num)\n\
         \x20       flow.request.query[\"added\"] = \"yes\"\n\
         \n\
         addons = [AddHeader()]\n",
    );
    let proxy = proxy_with(&[&script], &[]);
    for _ in 0..2 {
        Curl::through(&proxy)
            .run(&url(&origin, "/first?a=1"))
            .assert_status(200);
    }
    let seen = recorded_at_least(&origin, 2);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(recorded_header(&seen[0], "x-count"), Some("1"), "{seen:?}");
    assert_eq!(
        recorded_header(&seen[1], "x-count"),
        Some("2"),
        "state kept: {seen:?}"
    );
    assert_eq!(seen[0]["target"], "/first?a=1&added=yes");
}

/// mitmproxy awaits hooks written as `async def` (its nonblocking example); a
/// coroutine that was never awaited would change nothing.
#[test]
fn async_hooks_are_awaited_and_their_changes_apply() {
    let origin = origin();
    let scripts = Scripts::new();
    let script = scripts.write(
        "async_hooks.py",
        "import asyncio\n\
         \n\
         async def request(flow):\n\
         \x20   await asyncio.sleep(0.01)\n\
         \x20   flow.request.headers[\"x-awaited\"] = \"request\"\n\
         \n\
         async def response(flow):\n\
         \x20   await asyncio.sleep(0.01)\n\
         \x20   flow.response.headers[\"x-awaited\"] = \"response\"\n",
    );
    let proxy = proxy_with(&[&script], &[]);
    let result = Curl::through(&proxy).run(&url(&origin, "/async"));
    result.assert_status(200);
    assert_eq!(result.header("x-awaited"), Some("response"), "{result:?}");
    let seen = recorded_at_least(&origin, 1);
    assert_eq!(
        recorded_header(&seen[0], "x-awaited"),
        Some("request"),
        "{seen:?}"
    );
}

/// mitmproxy's `tls_clienthello`: a script sees what the client asked for and may
/// leave the connection alone; the client then sees the server's own certificate.
#[test]
fn tls_clienthello_sees_the_hello_and_ignore_connection_passes_it_through() {
    let apache = Apache::start();
    let scripts = Scripts::new();
    let script = scripts.write(
        "hello.py",
        "import logging\n\
         from mitmproxy import tls\n\
         \n\
         def tls_clienthello(data: tls.ClientHelloData):\n\
         \x20   hello = data.client_hello\n\
         \x20   logging.info('hello sni=%s alpn=%s server=%s', hello.sni, hello.alpn_protocols, data.context.server.address)\n\
         \x20   if hello.sni == 'localhost':\n\
         \x20       data.ignore_connection = True\n",
    );
    let proxy = proxy_with(&[&script], &["--json"]);
    // localhost: passed through, so the origin's CA verifies and Periscope's does not.
    let ignored = apache.url(Vhost::Tls13, "/hello.txt");
    Curl::new()
        .proxy(proxy.proxy_url())
        .cacert(&test_pki().ca_cert)
        .run(&ignored)
        .assert_status(200);
    let result = Curl::through(&proxy).run(&ignored);
    assert_ne!(
        result.exit_code, 0,
        "Periscope's CA must not verify: {result:?}"
    );
    let port = apache.port(Vhost::Tls13);
    let logged =
        format!("hello sni=localhost alpn=[b'h2', b'http/1.1'] server=('localhost', {port})");
    proxy.wait_for_stderr(logged.as_str(), WAIT);
    proxy.wait_for_stdout("ignored_by_script", WAIT);
    // By IP (no SNI): intercepted as usual.
    Curl::through(&proxy)
        .run(&apache.url_ip(Vhost::Tls13, "/hello.txt"))
        .assert_status(200);
    proxy.wait_for_stderr("hello sni=None", WAIT);
}

#[test]
fn a_response_script_rewrites_a_json_field_and_the_client_gets_it_framed_anew() {
    let origin = origin();
    let scripts = Scripts::new();
    let script = scripts.write(
        "rewrite.py",
        "import json\n\
         \n\
         def response(flow):\n\
         \x20   if flow.request.path.startswith('/json'):\n\
         \x20       data = flow.response.json()\n\
         \x20       data['name'] = 'rewritten by a script'\n\
         \x20       data['items'].append(3)\n\
         \x20       flow.response.text = json.dumps(data)\n\
         \x20       flow.response.headers['x-rewritten'] = 'yes'\n",
    );
    let proxy = proxy_with(&[&script], &[]);
    let result = Curl::through(&proxy).run(&url(&origin, "/json"));
    result.assert_status(200);
    let json = result.json();
    assert_eq!(json["name"], "rewritten by a script", "{json}");
    assert_eq!(json["items"], serde_json::json!([1, 2, 3]));
    assert_eq!(json["count"], 1);
    assert_eq!(result.header("x-rewritten"), Some("yes"));
    let length: usize = result.header("content-length").unwrap().parse().unwrap();
    assert_eq!(length, result.body.len(), "framed from the new body");
    // A script with only `response` does not hold requests back: the origin got the
    // request as sent.
    let seen = recorded_at_least(&origin, 1);
    assert_eq!(recorded_header(&seen[0], "x-rewritten"), None);
}

#[test]
fn a_request_hook_answers_with_response_make_and_the_origin_sees_nothing() {
    let origin = origin();
    let scripts = Scripts::new();
    let script = scripts.write(
        "reply.py",
        "from mitmproxy import http\n\
         \n\
         def request(flow: http.HTTPFlow) -> None:\n\
         \x20   if flow.request.pretty_url.endswith('/path'):\n\
         \x20       flow.response = http.Response.make(\n\
         \x20           203, b'Hello World', {'Content-Type': 'text/html'}\n\
         \x20       )\n",
    );
    let proxy = proxy_with(&[&script], &[]);
    let answered = Curl::through(&proxy).run(&url(&origin, "/path"));
    answered.assert_status(203);
    assert_eq!(answered.body_text(), "Hello World");
    assert_eq!(answered.header("content-type"), Some("text/html"));
    // Another path goes through, so the origin's record is in order.
    Curl::through(&proxy)
        .run(&url(&origin, "/other"))
        .assert_status(200);
    let seen = recorded_at_least(&origin, 1);
    let targets: Vec<_> = seen.iter().map(|r| r["target"].clone()).collect();
    assert_eq!(targets, ["/other"], "the answered request never left");
}

#[test]
fn flow_kill_ends_the_exchange_the_origin_sees_nothing_and_the_flow_says_why() {
    let origin = origin();
    let scripts = Scripts::new();
    let script = scripts.write(
        "kill.py",
        "def request(flow):\n\
         \x20   if 'kill' in flow.request.path:\n\
         \x20       flow.kill()\n",
    );
    let proxy = proxy_with(&[&script], &[]);
    let killed = Curl::through(&proxy).run(&url(&origin, "/kill-me"));
    assert_eq!(killed.status, 502, "{killed:?}");
    Curl::through(&proxy)
        .run(&url(&origin, "/kept"))
        .assert_status(200);
    let seen = recorded_at_least(&origin, 1);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["target"], "/kept");
    proxy.wait_for_stdout("killed by an addon script", WAIT);
}

#[test]
fn a_hook_that_raises_is_logged_with_its_traceback_and_the_flow_goes_on_unchanged() {
    let origin = origin();
    let scripts = Scripts::new();
    let script = scripts.write(
        "raises.py",
        "def request(flow):\n\
         \x20   flow.request.headers['x-half-done'] = 'yes'\n\
         \x20   raise ValueError('script bug ' + flow.request.path)\n",
    );
    let proxy = proxy_with(&[&script], &[]);
    Curl::through(&proxy)
        .run(&url(&origin, "/raising"))
        .assert_status(200);
    let seen = recorded_at_least(&origin, 1);
    assert_eq!(
        recorded_header(&seen[0], "x-half-done"),
        None,
        "the raising hook's change was undone: {seen:?}"
    );
    proxy.wait_for_stderr("raises.py: request raised", WAIT);
    proxy.wait_for_stderr("Traceback (most recent call last)", WAIT);
    proxy.wait_for_stderr("ValueError: script bug /raising", WAIT);
    proxy.wait_for_stdout("note: addon: raises.py: request raised ValueError", WAIT);
}

#[test]
fn a_killed_worker_is_restarted_the_log_says_so_and_scripts_run_again() {
    let origin = origin();
    let scripts = Scripts::new();
    let pid_file = scripts.path().join("worker.pid");
    let script = scripts.write(
        "pid.py",
        &format!(
            "import os\n\
             \n\
             def load(loader):\n\
             \x20   with open({pid_file:?}, 'w') as f:\n\
             \x20       f.write(str(os.getpid()))\n\
             \n\
             def request(flow):\n\
             \x20   flow.request.headers['x-worker'] = str(os.getpid())\n"
        ),
    );
    let proxy = proxy_with(&[&script], &[]);
    Curl::through(&proxy)
        .run(&url(&origin, "/before"))
        .assert_status(200);
    let first: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    send_signal(first, libc::SIGKILL);
    proxy.wait_for_stderr("the addon worker exited", WAIT);
    proxy.wait_for_stderr("the addon worker was restarted", WAIT);
    Curl::through(&proxy)
        .run(&url(&origin, "/after"))
        .assert_status(200);
    let second: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert_ne!(first, second);
    let seen = recorded_at_least(&origin, 2);
    assert_eq!(
        recorded_header(&seen[0], "x-worker"),
        Some(first.to_string().as_str())
    );
    assert_eq!(
        recorded_header(&seen[1], "x-worker"),
        Some(second.to_string().as_str()),
        "the new worker runs the script: {seen:?}"
    );
}

#[test]
fn a_hook_slower_than_the_timeout_is_abandoned_the_flow_records_it_and_others_go_on() {
    let origin = origin();
    let scripts = Scripts::new();
    let script = scripts.write(
        "slow.py",
        "import time\n\
         \n\
         def request(flow):\n\
         \x20   if flow.request.path == '/slow':\n\
         \x20       time.sleep(30)\n\
         \x20   flow.request.headers['x-scripted'] = 'yes'\n",
    );
    let proxy = proxy_with(&[&script], &["--scripts-timeout", "1s"]);
    let started = Instant::now();
    let slow = Curl::through(&proxy).run(&url(&origin, "/slow"));
    slow.assert_status(200);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "abandoned at the timeout: {took:?}"
    );
    proxy.wait_for_stdout("the `request` hook took longer than 1s", WAIT);
    proxy.wait_for_stderr("the addon worker was restarted", WAIT);
    Curl::through(&proxy)
        .run(&url(&origin, "/fast"))
        .assert_status(200);
    let seen = recorded_at_least(&origin, 2);
    assert_eq!(recorded_header(&seen[0], "x-scripted"), None, "{seen:?}");
    assert_eq!(seen[1]["target"], "/fast");
    assert_eq!(
        recorded_header(&seen[1], "x-scripted"),
        Some("yes"),
        "{seen:?}"
    );
}

#[test]
fn a_script_is_reloaded_when_its_file_changes() {
    let origin = origin();
    let scripts = Scripts::new();
    let script = scripts.write(
        "version.py",
        "def request(flow):\n    flow.request.headers['x-version'] = 'one'\n",
    );
    let proxy = proxy_with(&[&script], &[]);
    Curl::through(&proxy)
        .run(&url(&origin, "/v1"))
        .assert_status(200);
    // A different size too, so the change shows whatever the mtime granularity.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(
        &script,
        "def request(flow):\n    flow.request.headers['x-version'] = 'two, reloaded'\n",
    )
    .unwrap();
    proxy.wait_for_stderr("scripts reloaded", WAIT);
    Curl::through(&proxy)
        .run(&url(&origin, "/v2"))
        .assert_status(200);
    let seen = recorded_at_least(&origin, 2);
    assert_eq!(recorded_header(&seen[0], "x-version"), Some("one"));
    assert_eq!(
        recorded_header(&seen[1], "x-version"),
        Some("two, reloaded")
    );
}

#[test]
fn a_script_that_does_not_load_is_an_error_naming_its_file_and_line() {
    let scripts = Scripts::new();
    let script = scripts.write(
        "broken.py",
        "def request(flow):\n    pass\n\nraise RuntimeError('cannot start')\n",
    );
    let output = std::process::Command::new(periscope_binary())
        .args(["dump", "-p", "0", "--confdir"])
        .arg(scripts.path())
        .arg("--scripts-python")
        .arg(python())
        .arg("-s")
        .arg(&script)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("{}:4: RuntimeError: cannot start", script.display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("proxy listening"), "{stderr}");
}

#[test]
fn without_scripts_no_worker_runs() {
    let proxy = PeriscopeBuilder::new().start();
    assert_eq!(
        child_processes(proxy.pid()),
        Vec::<String>::new(),
        "no child process"
    );
    let scripts = Scripts::new();
    let script = scripts.write("noop.py", "def response(flow):\n    pass\n");
    let with = proxy_with(&[&script], &[]);
    let children = child_processes(with.pid());
    assert_eq!(children.len(), 1, "the worker: {children:?}");
}

/// The child processes of `pid`, whichever of its threads started them (the kernel
/// lists a child under the thread that forked it).
fn child_processes(pid: u32) -> Vec<String> {
    let mut children = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let listed = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(listed.split_whitespace().map(str::to_owned));
    }
    children
}

#[test]
fn tls_event_sees_the_renegotiation_of_apache_vedauth() {
    let apache = Apache::start();
    let scripts = Scripts::new();
    let script = scripts.write(
        "tls.py",
        "import logging\n\
         \n\
         def tls_event(flow, event):\n\
         \x20   logging.info('tls_event %s %s %s', flow.request.path, event['leg'], event['type'])\n",
    );
    let proxy = proxy_with(&[&script], &[]);
    let url = apache.url(Vhost::Tls12, "/vedauth/ok.txt");
    let result = Curl::through(&proxy).run(&url);
    result.assert_status(200);
    assert_eq!(result.body_text(), VEDAUTH_BODY);
    proxy.wait_for_stderr("tls_event /vedauth/ok.txt server hello_request", WAIT);
    proxy.wait_for_stderr(
        "tls_event /vedauth/ok.txt server renegotiation_completed",
        WAIT,
    );
}

#[test]
fn the_error_hook_sees_a_failed_flow_and_sys_exit_in_a_hook_does_not_stop_the_scripts() {
    let origin = origin();
    let scripts = Scripts::new();
    let script = scripts.write(
        "errors.py",
        "import logging, sys\n\
         \n\
         def request(flow):\n\
         \x20   if flow.request.path == '/exit':\n\
         \x20       sys.exit(3)\n\
         \x20   flow.request.headers['x-alive'] = 'yes'\n\
         \n\
         def error(flow):\n\
         \x20   logging.error('error hook: %s %s', flow.request.pretty_url, flow.error.msg)\n",
    );
    let proxy = proxy_with(&[&script], &[]);
    let dead = format!("http://127.0.0.1:{}/nobody", free_port());
    let failed = Curl::through(&proxy).run(&dead);
    assert_eq!(failed.status, 502, "{failed:?}");
    proxy.wait_for_stderr(
        |line: &str| line.contains("error hook: ") && line.contains("/nobody"),
        WAIT,
    );
    Curl::through(&proxy)
        .run(&url(&origin, "/exit"))
        .assert_status(200);
    proxy.wait_for_stderr("SystemExit: 3", WAIT);
    Curl::through(&proxy)
        .run(&url(&origin, "/after-exit"))
        .assert_status(200);
    let seen = recorded_at_least(&origin, 2);
    assert_eq!(recorded_header(&seen[0], "x-alive"), None, "{seen:?}");
    assert_eq!(
        recorded_header(&seen[1], "x-alive"),
        Some("yes"),
        "{seen:?}"
    );
    assert!(
        !proxy.stderr_text().contains("addon worker exited"),
        "sys.exit in a hook is the hook's error, not the worker's end"
    );
}

#[test]
fn a_request_script_changes_https_requests_inside_a_connect_tunnel() {
    let apache = Apache::start();
    let scripts = Scripts::new();
    let script = scripts.write(
        "https.py",
        "from mitmproxy import http\n\
         \n\
         def request(flow: http.HTTPFlow) -> None:\n\
         \x20   if flow.request.scheme == 'https' and flow.request.path == '/elsewhere':\n\
         \x20       flow.request.path = '/hello.txt'\n",
    );
    let proxy = proxy_with(&[&script], &[]);
    let result = Curl::through(&proxy).run(&apache.url(Vhost::Tls12, "/elsewhere"));
    result.assert_status(200);
    assert_eq!(result.body_text(), HELLO_BODY);
}

#[test]
fn lifecycle_hooks_run_load_configure_running_and_done_at_shutdown() {
    let scripts = Scripts::new();
    let trace = scripts.path().join("trace.txt");
    let script = scripts.write(
        "life.py",
        &format!(
            "from mitmproxy import ctx\n\
             \n\
             def note(text):\n\
             \x20   with open({trace:?}, 'a') as f:\n\
             \x20       f.write(text + '\\n')\n\
             \n\
             class Life:\n\
             \x20   def load(self, loader):\n\
             \x20       loader.add_option('greeting', str, 'hello', 'a greeting')\n\
             \x20       note('load')\n\
             \n\
             \x20   def configure(self, updated):\n\
             \x20       if 'greeting' in updated:\n\
             \x20           note('configure ' + ctx.options.greeting)\n\
             \n\
             \x20   def running(self):\n\
             \x20       note('running')\n\
             \n\
             \x20   def done(self):\n\
             \x20       note('done')\n\
             \n\
             addons = [Life()]\n"
        ),
    );
    let mut proxy = proxy_with(&[&script], &[]);
    assert_eq!(
        std::fs::read_to_string(&trace).unwrap(),
        "load\nconfigure hello\nrunning\n"
    );
    let status = proxy.terminate(Duration::from_secs(10));
    assert!(status.is_some(), "the proxy exited");
    assert_eq!(
        std::fs::read_to_string(&trace).unwrap(),
        "load\nconfigure hello\nrunning\ndone\n"
    );
}

#[test]
fn flow_intercept_pauses_the_flow_until_the_user_resumes_it_through_the_api() {
    let origin = origin();
    let scripts = Scripts::new();
    let script = scripts.write(
        "hold.py",
        "def request(flow):\n\
         \x20   if flow.request.path == '/hold':\n\
         \x20       flow.intercept()\n",
    );
    let proxy = proxy_with(&[&script], &["--api", "--web-port", "0"]);
    let control = ControlApi::of(&proxy);
    let api = |method: &str, path: &str| control.send(method, path, None);
    let held_url = url(&origin, "/hold");
    let curl = Curl::through(&proxy);
    let client = std::thread::spawn(move || curl.run(&held_url));
    let mut paused = None;
    wait_until(WAIT, || {
        let flows = api("GET", "/flows").json();
        paused = flows
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["intercepted"] == true)
            .cloned();
        paused.is_some()
    });
    let paused = paused.expect("the flow the script intercepted is paused");
    assert_eq!(paused["intercept"]["at"], "request", "{paused}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !client.is_finished(),
        "the client waits while the flow is held"
    );
    assert!(
        recorded(&origin).is_empty(),
        "nothing reached the origin yet"
    );
    let id = paused["id"].as_str().unwrap();
    api("POST", &format!("/flows/{id}/resume")).assert_status(200);
    let answer = client.join().unwrap();
    answer.assert_status(200);
    assert_eq!(recorded_at_least(&origin, 1).len(), 1);
}

#[test]
fn header_hooks_see_no_body_and_change_heads_while_request_and_response_see_bodies() {
    let origin = origin();
    let scripts = Scripts::new();
    let script = scripts.write(
        "heads.py",
        "def requestheaders(flow):\n\
         \x20   flow.request.headers['x-reqheaders'] = repr(flow.request.content)\n\
         \n\
         def request(flow):\n\
         \x20   flow.request.headers['x-request'] = flow.request.get_text()\n\
         \n\
         def responseheaders(flow):\n\
         \x20   flow.response.headers['x-respheaders'] = repr(flow.response.content)\n\
         \n\
         def response(flow):\n\
         \x20   flow.response.headers['x-response'] = str(len(flow.response.content))\n",
    );
    let proxy = proxy_with(&[&script], &[]);
    let result = Curl::through(&proxy)
        .data("the body")
        .run(&url(&origin, "/post"));
    result.assert_status(200);
    assert_eq!(result.header("x-respheaders"), Some("None"));
    let expected_length = "origin saw /post".len().to_string();
    assert_eq!(result.header("x-response"), Some(expected_length.as_str()));
    let seen = recorded_at_least(&origin, 1);
    assert_eq!(
        recorded_header(&seen[0], "x-reqheaders"),
        Some("None"),
        "{seen:?}"
    );
    assert_eq!(
        recorded_header(&seen[0], "x-request"),
        Some("the body"),
        "{seen:?}"
    );
    assert_eq!(seen[0]["body"], "the body");
}

#[test]
fn websocket_start_message_and_end_observe_a_conversation() {
    let server = python_websocket_echo_server();
    let scripts = Scripts::new();
    let script = scripts.write(
        "ws.py",
        "import logging\n\
         \n\
         def websocket_start(flow):\n\
         \x20   logging.info('ws start %s', flow.request.path)\n\
         \n\
         def websocket_message(flow):\n\
         \x20   message = flow.websocket.messages[-1]\n\
         \x20   if message.is_text:\n\
         \x20       side = 'client' if message.from_client else 'server'\n\
         \x20       logging.info('ws message from %s: %s', side, message.text)\n\
         \n\
         def websocket_end(flow):\n\
         \x20   logging.info('ws end %s code %s', flow.request.path, flow.websocket.close_code)\n",
    );
    let proxy = proxy_with(&[&script], &[]);
    let output = std::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/websocket_client.py"
        ))
        .args(["--proxy", &proxy.addr(), "--url"])
        .arg(format!("ws://127.0.0.1:{}/chat", server.port))
        .args(["--big-size", "1000"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    proxy.wait_for_stderr("ws start /chat", WAIT);
    proxy.wait_for_stderr("ws message from client: hello, periscope", WAIT);
    proxy.wait_for_stderr("ws message from server: hello, periscope", WAIT);
    proxy.wait_for_stderr("ws end /chat code 4000", WAIT);
}

#[test]
fn many_flows_in_flight_get_their_own_answers_and_metadata_follows_each_flow() {
    let origin = origin();
    let scripts = Scripts::new();
    let script = scripts.write(
        "meta.py",
        "def request(flow):\n\
         \x20   flow.metadata['asked'] = flow.request.path\n\
         \n\
         def response(flow):\n\
         \x20   flow.response.headers['x-asked'] = flow.metadata.get('asked', 'nothing')\n",
    );
    let proxy = proxy_with(&[&script], &[]);
    let clients: Vec<_> = (0..24)
        .map(|i| {
            let curl = Curl::through(&proxy);
            let target = url(&origin, &format!("/n/{i}"));
            std::thread::spawn(move || (i, curl.run(&target)))
        })
        .collect();
    for client in clients {
        let (i, result) = client.join().unwrap();
        result.assert_status(200);
        let expected = format!("/n/{i}");
        assert_eq!(
            result.header("x-asked"),
            Some(expected.as_str()),
            "{result:?}"
        );
        assert_eq!(result.body_text(), format!("origin saw /n/{i}"));
    }
}

#[test]
fn a_killed_proxys_addon_runtime_is_removed_by_the_next_one() {
    let tmp = tempfile::tempdir().unwrap();
    let scripts = Scripts::new();
    let script = scripts.write("quiet.py", "def response(flow):\n    pass\n");
    let start = || {
        PeriscopeBuilder::new()
            .env("TMPDIR", tmp.path())
            .arg("--scripts-python")
            .arg(python())
            .arg("-s")
            .arg(&script)
            .start()
    };

    let mut killed = start();
    let left = entries_named(tmp.path(), "periscope-addons-");
    assert_eq!(left.len(), 1, "one runtime while running: {left:?}");
    killed.kill();

    let mut next = start();
    assert!(
        wait_until(WAIT, || !left[0].exists()),
        "the killed proxy's addon runtime is still there after {WAIT:?}\n{}",
        next.describe()
    );
    assert_eq!(entries_named(tmp.path(), "periscope-addons-").len(), 1);

    let status = next.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{}", next.describe());
    assert_eq!(
        entries_named(tmp.path(), "periscope-"),
        Vec::<PathBuf>::new(),
        "a proxy that exits removes its directories"
    );
}

/// `scripts` in the options (the web UI's options page, the console's, `PUT /options`)
/// starts, replaces and stops scripts while the proxy runs: the worker starts only
/// when there are scripts, a script that does not load is refused naming its file
/// and line while the running ones stay, and the scripts taken out run their `done`.
#[test]
fn scripts_set_through_the_options_start_change_and_stop_while_the_proxy_runs() {
    let origin = origin();
    let scripts = Scripts::new();
    let trace = scripts.path().join("trace.txt");
    let tagging = |name: &str, tag: &str| {
        scripts.write(
            name,
            &format!(
                "def request(flow):\n\
                 \x20   flow.request.headers['x-script'] = '{tag}'\n\
                 \n\
                 def done():\n\
                 \x20   with open({trace:?}, 'a') as f:\n\
                 \x20       f.write('done {tag}\\n')\n"
            ),
        )
    };
    let first = tagging("first.py", "first");
    let second = tagging("second.py", "second");
    let broken = scripts.write(
        "broken.py",
        "def request(flow):\n    pass\n\nraise RuntimeError('cannot start')\n",
    );
    let proxy = proxy_with(&[], &["--api", "--web-port", "0"]);
    let api = ControlApi::of(&proxy);
    let set = |body: serde_json::Value| api.set_options(&body.to_string());
    // Of every thread: the worker is started by whichever runs the change.
    let children = || child_processes(proxy.pid()).len();
    let tag_seen = |n: usize| {
        Curl::through(&proxy)
            .run(&url(&origin, "/tagged"))
            .assert_status(200);
        let seen = recorded_at_least(&origin, n);
        recorded_header(&seen[n - 1], "x-script").map(str::to_owned)
    };
    assert_eq!(children(), 0, "no scripts, no worker");
    assert_eq!(tag_seen(1), None);

    let answer = set(serde_json::json!({ "scripts": [first] }));
    answer.assert_status(200);
    assert_eq!(answer.json()["scripts"], serde_json::json!([first]));
    assert_eq!(children(), 1, "the worker started");
    assert_eq!(tag_seen(2).as_deref(), Some("first"));

    let refused = set(serde_json::json!({ "scripts": [broken] }));
    assert_eq!(refused.status, 400, "{refused:?}");
    let expected = format!("{}:4: RuntimeError: cannot start", broken.display());
    assert!(
        refused.body_text().contains(&expected),
        "{}",
        refused.body_text()
    );
    assert_eq!(
        tag_seen(3).as_deref(),
        Some("first"),
        "the running script stays"
    );

    set(serde_json::json!({ "scripts": [second] })).assert_status(200);
    assert_eq!(tag_seen(4).as_deref(), Some("second"));
    assert_eq!(std::fs::read_to_string(&trace).unwrap(), "done first\n");

    set(serde_json::json!({ "scripts": [] })).assert_status(200);
    assert_eq!(tag_seen(5), None);
    assert_eq!(
        std::fs::read_to_string(&trace).unwrap(),
        "done first\ndone second\n"
    );
    assert!(
        wait_until(WAIT, || children() == 0),
        "the worker stopped with the last script"
    );
}

/// Bodies go to the worker only when a script reads them: a `response` hook that
/// looks at the head alone lets a slowly streamed body through as it comes (the
/// client has the first half at once), while one that reads `flow.response.text`
/// gets the whole body (and the client waits for it, as under mitmproxy).
#[test]
fn a_response_hook_that_never_reads_the_body_does_not_hold_it() {
    let origin = origin();
    let scripts = Scripts::new();
    let head_only = scripts.write(
        "head_only.py",
        "def response(flow):\n    flow.response.headers['x-head-only'] = 'yes'\n",
    );
    let reads = scripts.write(
        "reads.py",
        "def response(flow):\n\
         \x20   flow.response.headers['x-body-was'] = flow.response.text\n",
    );
    let drip = url(&origin, "/drip");

    let proxy = proxy_with(&[&head_only], &[]);
    let streamed = Curl::through(&proxy).run(&drip);
    streamed.assert_status(200);
    assert_eq!(streamed.body_text(), "first-half-last-half");
    assert_eq!(streamed.header("x-head-only"), Some("yes"));
    let first_byte = streamed.info["time_starttransfer"].as_f64().unwrap();
    assert!(
        first_byte < 1.0 && streamed.time_total >= 2.0,
        "the first half came at {first_byte:.2} s, the whole at {:.2} s",
        streamed.time_total
    );

    let proxy = proxy_with(&[&reads], &[]);
    let read = Curl::through(&proxy).run(&drip);
    read.assert_status(200);
    assert_eq!(read.header("x-body-was"), Some("first-half-last-half"));
    assert_eq!(read.body_text(), "first-half-last-half");
    let first_byte = read.info["time_starttransfer"].as_f64().unwrap();
    assert!(
        first_byte >= 2.0,
        "the script read the body, so the response waited for it: {first_byte:.2} s"
    );
}

/// `--scripts-filter`: flows it does not match never reach the worker (the script
/// records every call it gets); the filter is an option of the running proxy too.
#[test]
fn scripts_filter_gives_the_scripts_only_the_flows_it_matches() {
    let origin = origin();
    let scripts = Scripts::new();
    let trace = scripts.path().join("calls.txt");
    let script = scripts.write(
        "trace.py",
        &format!(
            "def trace(hook, flow):\n\
             \x20   with open({trace:?}, 'a') as f:\n\
             \x20       f.write(hook + ' ' + flow.request.path + '\\n')\n\
             \n\
             def request(flow):\n\
             \x20   trace('request', flow)\n\
             \x20   flow.request.headers['x-script'] = 'yes'\n\
             \n\
             def response(flow):\n\
             \x20   trace('response', flow)\n"
        ),
    );
    let proxy = proxy_with(
        &[&script],
        &["--scripts-filter", "~u /chosen", "--api", "--web-port", "0"],
    );
    for path in ["/chosen", "/other"] {
        Curl::through(&proxy)
            .run(&url(&origin, path))
            .assert_status(200);
    }
    let seen = recorded_at_least(&origin, 2);
    assert_eq!(recorded_header(&seen[0], "x-script"), Some("yes"));
    assert_eq!(recorded_header(&seen[1], "x-script"), None);
    assert_eq!(
        std::fs::read_to_string(&trace).unwrap(),
        "request /chosen\nresponse /chosen\n"
    );

    let api = ControlApi::of(&proxy);
    let set = |body: &str| api.set_options(body);
    let answer = set(r#"{"scripts_filter": "~u /other"}"#);
    answer.assert_status(200);
    assert_eq!(answer.json()["scripts_filter"], "~u /other");
    assert_eq!(set(r#"{"scripts_filter": "~u ("}"#).status, 400);
    Curl::through(&proxy)
        .run(&url(&origin, "/other"))
        .assert_status(200);
    let seen = recorded_at_least(&origin, 3);
    assert_eq!(recorded_header(&seen[2], "x-script"), Some("yes"));
}

/// A flow killed while a script waits for its body: the worker is told there is none
/// (it would otherwise wait for ever, and every scripted flow behind it until the
/// timeout restarted it), so the next flow goes through at once.
#[test]
fn a_flow_killed_while_a_script_waits_for_its_body_does_not_hold_the_worker() {
    use std::io::Write as _;
    let origin = origin();
    let scripts = Scripts::new();
    let script = scripts.write(
        "length.py",
        "def request(flow):\n\
         \x20   flow.request.headers['x-length'] = str(len(flow.request.content or b''))\n",
    );
    let proxy = proxy_with(
        &[&script],
        &["--scripts-timeout", "20s", "--api", "--web-port", "0"],
    );
    let api = ControlApi::of(&proxy);
    let mut upload = std::net::TcpStream::connect(proxy.addr()).unwrap();
    write!(
        upload,
        "POST {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 100000\r\n\r\npartial...",
        url(&origin, "/upload"),
        origin.port
    )
    .unwrap();
    let mut id = None;
    wait_until(WAIT, || {
        let flows = api.get("/flows");
        id = flows.as_array().and_then(|flows| {
            flows
                .iter()
                .find(|f| f["request"]["path"] == "/upload")
                .and_then(|f| f["id"].as_str().map(str::to_owned))
        });
        id.is_some()
    });
    let id = id.expect("the upload's flow is in flight");
    // The worker is inside the hook, waiting for the body the client never finishes.
    std::thread::sleep(Duration::from_millis(300));
    api.send("POST", &format!("/flows/{id}/kill"), None)
        .assert_status(200);
    let started = Instant::now();
    let after = Curl::through(&proxy).run(&url(&origin, "/after"));
    after.assert_status(200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the next scripted flow waited {:?}",
        started.elapsed()
    );
    let seen = recorded_at_least(&origin, 1);
    let after_seen = seen.iter().find(|r| r["target"] == "/after").unwrap();
    assert_eq!(recorded_header(after_seen, "x-length"), Some("0"));
    drop(upload);
}

/// Clients that leave in the middle of their exchanges, while a script reads bodies:
/// whatever the moment (before the worker asks for a body, while it waits for one,
/// after), the worker is never left waiting, and the next client is served at once.
#[test]
fn clients_leaving_mid_exchange_never_leave_the_worker_waiting_for_a_body() {
    use std::io::Write as _;
    let origin = origin();
    let scripts = Scripts::new();
    let script = scripts.write(
        "bodies.py",
        "def request(flow):\n\
         \x20   flow.metadata['n'] = len(flow.request.content or b'')\n\
         \n\
         def response(flow):\n\
         \x20   flow.response.headers['x-body-length'] = str(len(flow.response.content or b''))\n",
    );
    let proxy = proxy_with(&[&script], &["--scripts-timeout", "20s"]);
    let target = url(&origin, "/leave");
    let address = proxy.addr();
    // As a load generator does at its deadline: keep-alive clients busy with requests,
    // all gone at once in the middle of one.
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let leavers: Vec<_> = (0..16)
        .map(|_| {
            let (target, address) = (target.clone(), address.clone());
            std::thread::spawn(move || {
                let Ok(mut socket) = std::net::TcpStream::connect(&address) else {
                    return;
                };
                let mut reader = std::io::BufReader::new(socket.try_clone().unwrap());
                loop {
                    if write!(socket, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").is_err()
                        || Instant::now() >= stop_at
                    {
                        return; // gone with a request in flight
                    }
                    if !read_one_response(&mut reader) {
                        return;
                    }
                }
            })
        })
        .collect();
    for leaver in leavers {
        leaver.join().unwrap();
    }
    for _ in 0..3 {
        let started = Instant::now();
        let answer = Curl::through(&proxy).run(&url(&origin, "/stays"));
        answer.assert_status(200);
        assert_eq!(answer.header("x-body-length"), Some("17"), "{answer:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a client after the ones that left waited {:?}",
            started.elapsed()
        );
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body; false when the connection
/// ended first.
fn read_one_response(reader: &mut impl std::io::BufRead) -> bool {
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).is_ok()
}

/// An HTTP/2 server's body that the response hook's call read in part (it is larger
/// than what goes with the call) reaches an HTTP/1.1 client whole, framed by the
/// length the server announced — not that length plus what was read ahead. (The
/// server speaks HTTP/2 whatever was offered: `--ignore-alpn`.)
#[test]
fn an_http2_body_read_in_part_for_a_script_keeps_its_length() {
    let origin = h2_origin(&["--ignore-alpn"]);
    let scripts = Scripts::new();
    let script = scripts.write(
        "head_only.py",
        "def response(flow):\n    flow.response.headers['x-seen'] = 'yes'\n",
    );
    let proxy = proxy_with(&[&script], &[]);
    let answer = Curl::through(&proxy)
        .http1_1()
        .cacert(proxy.ca_cert_path())
        .run(&format!("https://localhost:{}/20k", origin.port));
    answer.assert_status(200);
    assert_eq!(answer.header("x-seen"), Some("yes"));
    assert_eq!(answer.body.len(), 20_000, "{answer:?}");
    assert_eq!(answer.header("content-length"), Some("20000"), "{answer:?}");
}
