//! Starting the real `periscope` binary and reading what it prints.
//!
//! Contract with the binary: once listening it prints to STDERR a line containing
//! `proxy listening at HOST:PORT` (e.g. `periscope: proxy listening at 127.0.0.1:41234`);
//! flow lines (dump mode) go to STDOUT. The global options `--listen-host`, `-p` and
//! `--confdir` are accepted before and after the subcommand.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::output::{LineMatcher, OutputLines, WaitError};
use super::tools::{send_signal, terminate_child};

/// The marker the harness waits for on the proxy's stderr.
pub const LISTENING_MARKER: &str = "proxy listening at ";
/// How long the proxy gets to print [`LISTENING_MARKER`].
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variables that would send the proxy's own upstream traffic, or curl's,
/// somewhere else; removed from every child the harness starts.
pub(crate) const PROXY_ENV_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// The binary under test: cargo's build of this tree, or `$PERISCOPE_TEST_BINARY`
/// (to show that a test fails against an earlier build).
pub fn periscope_binary() -> PathBuf {
    std::env::var_os("PERISCOPE_TEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_periscope")))
}

/// Builder for a [`Periscope`] process.
///
/// Default layout: `periscope dump --listen-host 127.0.0.1 -p 0 --confdir DIR ARGS...`.
/// `.subcommand(None)` puts the fixed options first (`periscope --listen-host ... ARGS`,
/// ARGS may then start with any subcommand); `.raw()` passes ARGS alone.
pub struct PeriscopeBuilder {
    program: PathBuf,
    subcommand: Option<String>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    env_removes: Vec<OsString>,
    confdir: Option<PathBuf>,
    listen_host: String,
    raw: bool,
    ready_timeout: Duration,
    echo: bool,
}

impl Default for PeriscopeBuilder {
    fn default() -> Self {
        PeriscopeBuilder {
            program: periscope_binary(),
            subcommand: Some("dump".to_string()),
            args: Vec::new(),
            envs: Vec::new(),
            env_removes: Vec::new(),
            confdir: None,
            listen_host: "127.0.0.1".to_string(),
            raw: false,
            ready_timeout: READY_TIMEOUT,
            echo: true,
        }
    }
}

impl PeriscopeBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The subcommand placed before the fixed options (default `dump`); `None` puts the
    /// fixed options first and leaves the subcommand, if any, to `.arg()`.
    pub fn subcommand(mut self, subcommand: Option<&str>) -> Self {
        self.subcommand = subcommand.map(str::to_string);
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets an environment variable for the proxy (e.g. `SSLKEYLOGFILE`).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env_removes.push(key.as_ref().to_os_string());
        self
    }

    /// Uses this confdir instead of a fresh temp dir (e.g. to start twice on one CA).
    /// The caller keeps it alive.
    pub fn confdir(mut self, dir: impl AsRef<Path>) -> Self {
        self.confdir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// `--listen-host` value (default 127.0.0.1).
    pub fn listen_host(mut self, host: &str) -> Self {
        self.listen_host = host.to_string();
        self
    }

    /// Passes only `.arg()`s: no subcommand, no `--listen-host`/`-p`/`--confdir`.
    pub fn raw(mut self) -> Self {
        self.raw = true;
        self
    }

    /// Runs another program instead of the periscope binary (used by the harness's own
    /// tests; also handy for wrappers such as `strace`).
    pub fn program(mut self, program: impl AsRef<Path>) -> Self {
        self.program = program.as_ref().to_path_buf();
        self
    }

    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Whether to copy the proxy's output lines to the test's stderr (default on; the
    /// test runner shows them only for failed tests).
    pub fn echo(mut self, echo: bool) -> Self {
        self.echo = echo;
        self
    }

    /// The full argument list the process will get (after the program).
    fn command_args(&self, confdir: &Path) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        if !self.raw {
            if let Some(sub) = &self.subcommand {
                out.push(sub.into());
            }
            out.push("--listen-host".into());
            out.push(self.listen_host.clone().into());
            out.push("-p".into());
            out.push("0".into());
            out.push("--confdir".into());
            out.push(confdir.into());
        }
        out.extend(self.args.iter().cloned());
        out
    }

    /// Starts the process and waits (up to the ready timeout) for the listening line.
    /// Panics with everything the process printed if it exits first or times out.
    pub fn start(self) -> Periscope {
        let (confdir, owned_confdir) = match &self.confdir {
            Some(dir) => (dir.clone(), None),
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("periscope-confdir-")
                    .tempdir()
                    .expect("confdir temp dir");
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        let args = self.command_args(&confdir);
        // The proxy's temporary session goes in a directory of its own, removed after
        // the process is killed: a SIGKILLed proxy cannot remove its session itself.
        let tmpdir = tempfile::Builder::new()
            .prefix("periscope-tmpdir-")
            .tempdir()
            .expect("TMPDIR temp dir");
        let mut cmd = Command::new(&self.program);
        cmd.args(&args)
            .env("TMPDIR", tmpdir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for key in PROXY_ENV_VARS {
            cmd.env_remove(key);
        }
        for key in &self.env_removes {
            cmd.env_remove(key);
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let command_line = format!(
            "{} {}",
            self.program.display(),
            args.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn `{command_line}`: {e}"));
        let stdout =
            OutputLines::spawn(child.stdout.take().unwrap(), "periscope stdout", self.echo);
        let stderr =
            OutputLines::spawn(child.stderr.take().unwrap(), "periscope stderr", self.echo);

        let mut proxy = Periscope {
            child,
            port: 0,
            listen_host: self.listen_host.clone(),
            confdir,
            _owned_confdir: owned_confdir,
            _owned_tmpdir: tmpdir,
            stdout,
            stderr,
            command_line,
        };
        match proxy.stderr.wait_for(&LISTENING_MARKER, self.ready_timeout) {
            Ok(line) => {
                proxy.port = parse_listening_port(&line).unwrap_or_else(|| {
                    panic!(
                        "cannot parse the port from the listening line {line:?}\n{}",
                        proxy.describe()
                    )
                })
            }
            Err(err) => {
                let why = match err {
                    WaitError::Eof => "closed stderr (exited?) before",
                    WaitError::Timeout => "did not print within the ready timeout",
                };
                // Let the exit status and remaining output arrive.
                let status = if err == WaitError::Eof {
                    proxy.stdout.wait_eof(Duration::from_secs(2));
                    proxy.child.wait().ok()
                } else {
                    let _ = proxy.child.kill();
                    proxy.child.wait().ok()
                };
                let status = status.map_or_else(|| "unknown".to_string(), |s| s.to_string());
                panic!(
                    "periscope {why} {LISTENING_MARKER:?}PORT ({status})\n{}",
                    proxy.describe()
                );
            }
        }
        proxy
    }
}

/// Port from a line like `periscope: proxy listening at 127.0.0.1:41234` (IPv6 as
/// `[::1]:41234`).
pub fn parse_listening_port(line: &str) -> Option<u16> {
    let rest = &line[line.find(LISTENING_MARKER)? + LISTENING_MARKER.len()..];
    let addr = rest.split_whitespace().next()?;
    let addr = addr.trim_end_matches([',', ';', '.', ')']);
    addr.rsplit_once(':')?.1.parse().ok()
}

/// The address and mode from a line like
/// `periscope: proxy listening at 127.0.0.1:41234 (socks5)` (the mode is `regular`
/// when the line names none).
pub fn parse_listener(line: &str) -> Option<(std::net::SocketAddr, String)> {
    let rest = &line[line.find(LISTENING_MARKER)? + LISTENING_MARKER.len()..];
    let mut words = rest.split_whitespace();
    let address = words
        .next()?
        .trim_end_matches([',', ';', '.'])
        .parse()
        .ok()?;
    let mode = words
        .next()
        .map(|mode| {
            mode.trim_start_matches('(')
                .trim_end_matches(')')
                .to_owned()
        })
        .unwrap_or_else(|| "regular".to_owned());
    Some((address, mode))
}

/// A running proxy process. Dropping it kills the process.
pub struct Periscope {
    child: Child,
    port: u16,
    listen_host: String,
    confdir: PathBuf,
    _owned_confdir: Option<tempfile::TempDir>,
    /// `TMPDIR` of the process (a test's own `env("TMPDIR", ..)` overrides it).
    _owned_tmpdir: tempfile::TempDir,
    stdout: OutputLines,
    stderr: OutputLines,
    command_line: String,
}

impl Periscope {
    pub fn builder() -> PeriscopeBuilder {
        PeriscopeBuilder::new()
    }

    /// `periscope dump --listen-host 127.0.0.1 -p 0 --confdir DIR EXTRA...`
    pub fn start_dump(extra_args: &[&str]) -> Periscope {
        PeriscopeBuilder::new().args(extra_args).start()
    }

    /// `periscope --listen-host 127.0.0.1 -p 0 --confdir DIR ARGS...`: for layouts where
    /// ARGS names the subcommand (or none).
    pub fn start_with(args: &[&str]) -> Periscope {
        PeriscopeBuilder::new().subcommand(None).args(args).start()
    }

    /// Same as [`Periscope::start_with`]: `args` starts with the subcommand.
    pub fn start(args: &[&str]) -> Periscope {
        Self::start_with(args)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` — for `curl --proxy`.
    pub fn proxy_url(&self) -> String {
        format!("http://{}:{}", self.listen_host, self.port)
    }

    /// The address of the listener whose mode (as printed: `socks5`,
    /// `reverse:https://host:443`, ...) starts with `mode`; waits for its line.
    pub fn listener(&self, mode: &str) -> std::net::SocketAddr {
        let line = self.wait_for_stderr(
            |line: &str| parse_listener(line).is_some_and(|(_, m)| m.starts_with(mode)),
            READY_TIMEOUT,
        );
        parse_listener(&line).map(|(address, _)| address).unwrap()
    }

    /// `HOST:PORT` of the listener.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.listen_host, self.port)
    }

    pub fn confdir(&self) -> &Path {
        &self.confdir
    }

    /// `CONFDIR/periscope-ca-cert.pem`, the CA certificate to hand to clients.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.confdir.join("periscope-ca-cert.pem")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    pub fn stdout(&self) -> &OutputLines {
        &self.stdout
    }

    pub fn stderr(&self) -> &OutputLines {
        &self.stderr
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lines()
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.text()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lines()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }

    /// The flows printed by `dump --json`, one JSON object a stdout line, once at least
    /// `at_least` are there (panics with everything collected after `timeout`).
    pub fn json_flows(&self, at_least: usize, timeout: Duration) -> Vec<serde_json::Value> {
        assert!(
            super::tools::wait_until(timeout, || self.stdout.len() >= at_least),
            "expected {at_least} flows\n{}",
            self.describe()
        );
        self.stdout_lines()
            .iter()
            .map(|line| serde_json::from_str(line).expect("a JSON flow"))
            .collect()
    }

    /// The first stdout line (from the start) that matches a substring or predicate;
    /// panics with everything collected on timeout or when stdout closes.
    pub fn wait_for_stdout(&self, matcher: impl LineMatcher, timeout: Duration) -> String {
        self.wait_for_stdout_after(0, matcher, timeout)
    }

    /// Like [`Periscope::wait_for_stdout`], looking only at lines with index >= `start`
    /// (take `start` from `stdout().len()` before the action).
    pub fn wait_for_stdout_after(
        &self,
        start: usize,
        matcher: impl LineMatcher,
        timeout: Duration,
    ) -> String {
        self.stdout
            .wait_for_after(start, &matcher, timeout)
            .unwrap_or_else(|err| {
                panic!(
                    "periscope stdout: no {} after line {start} ({err:?} after {timeout:?})\n{}",
                    matcher.describe(),
                    self.describe()
                )
            })
    }

    /// The first stderr line that matches; panics like [`Periscope::wait_for_stdout`].
    pub fn wait_for_stderr(&self, matcher: impl LineMatcher, timeout: Duration) -> String {
        self.stderr
            .wait_for(&matcher, timeout)
            .unwrap_or_else(|err| {
                panic!(
                    "periscope stderr: no {} ({err:?} after {timeout:?})\n{}",
                    matcher.describe(),
                    self.describe()
                )
            })
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal (e.g. `libc::SIGINT`) to the process.
    pub fn signal(&self, signal: i32) {
        send_signal(self.child.id(), signal);
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let status = terminate_child(&mut self.child, grace);
        self.stdout.wait_eof(Duration::from_secs(2));
        self.stderr.wait_eof(Duration::from_secs(2));
        status
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Command line, stdout and stderr, for panic messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.command_line,
            self.stdout.text(),
            self.stderr.text()
        )
    }
}

impl Drop for Periscope {
    fn drop(&mut self) {
        self.kill();
    }
}
