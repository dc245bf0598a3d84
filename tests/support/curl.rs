//! Running the system `curl` and parsing what it did.
//!
//! The body goes to a file (`-o`), the response headers to another (`-D`), and
//! `-w '%{json}'` writes curl's variables (http_code, time_total, exitcode, ...) as one
//! JSON object to stdout, so nothing needs to be told apart in one stream.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::periscope::{Periscope, PROXY_ENV_VARS};
use super::tools::require_tool;

/// Default `--max-time`: above Apache's `Timeout` (30 s) so that a test can observe it.
pub const DEFAULT_MAX_TIME: Duration = Duration::from_secs(60);

#[derive(Clone)]
enum Data {
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// Builder for one curl run: `Curl::new().proxy(..).cacert(..).run(url)`.
#[derive(Clone)]
pub struct Curl {
    args: Vec<OsString>,
    data: Option<Data>,
    max_time: Duration,
    envs: Vec<(OsString, OsString)>,
}

impl Default for Curl {
    fn default() -> Self {
        Curl {
            args: Vec::new(),
            data: None,
            max_time: DEFAULT_MAX_TIME,
            envs: Vec::new(),
        }
    }
}

impl Curl {
    pub fn new() -> Self {
        Self::default()
    }

    /// Through a running proxy, trusting its CA: `--proxy URL --cacert CONFDIR/ca`.
    pub fn through(proxy: &Periscope) -> Self {
        Self::new()
            .proxy(proxy.proxy_url())
            .cacert(proxy.ca_cert_path())
    }

    /// Any other curl argument.
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

    /// `--proxy URL`
    pub fn proxy(self, url: impl AsRef<OsStr>) -> Self {
        self.arg("--proxy").arg(url)
    }

    /// `--cacert PATH`
    pub fn cacert(self, path: impl AsRef<Path>) -> Self {
        self.arg("--cacert").arg(path.as_ref())
    }

    /// `--insecure`
    pub fn insecure(self) -> Self {
        self.arg("--insecure")
    }

    /// `--cert PATH` (a PEM file with certificate and key, like the PKI's client.pem).
    pub fn cert(self, path: impl AsRef<Path>) -> Self {
        self.arg("--cert").arg(path.as_ref())
    }

    /// `-H "Name: value"`
    pub fn header(self, header: &str) -> Self {
        self.arg("-H").arg(header)
    }

    /// Request body sent verbatim (`--data-binary @file`; makes it a POST unless
    /// `.method()` says otherwise).
    pub fn data(mut self, body: impl AsRef<[u8]>) -> Self {
        self.data = Some(Data::Bytes(body.as_ref().to_vec()));
        self
    }

    /// `--data-binary @PATH`
    pub fn data_binary_file(mut self, path: impl AsRef<Path>) -> Self {
        self.data = Some(Data::File(path.as_ref().to_path_buf()));
        self
    }

    /// `-X METHOD`
    pub fn method(self, method: &str) -> Self {
        self.arg("-X").arg(method)
    }

    /// `--http1.1`
    pub fn http1_1(self) -> Self {
        self.arg("--http1.1")
    }

    /// `--http2`
    pub fn http2(self) -> Self {
        self.arg("--http2")
    }

    /// Exactly TLS 1.2: `--tlsv1.2 --tls-max 1.2`.
    pub fn tlsv1_2(self) -> Self {
        self.arg("--tlsv1.2").arg("--tls-max").arg("1.2")
    }

    /// Exactly TLS 1.3: `--tlsv1.3`.
    pub fn tlsv1_3(self) -> Self {
        self.arg("--tlsv1.3")
    }

    /// `--tls-max VERSION` (e.g. "1.2").
    pub fn tls_max(self, version: &str) -> Self {
        self.arg("--tls-max").arg(version)
    }

    /// `-v` (the trace lands in `CurlResult::stderr`).
    pub fn verbose(self) -> Self {
        self.arg("-v")
    }

    /// `--max-time` (default [`DEFAULT_MAX_TIME`]).
    pub fn max_time(mut self, max_time: Duration) -> Self {
        self.max_time = max_time;
        self
    }

    /// An environment variable for curl (e.g. `SSLKEYLOGFILE`).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Runs `curl -q -sS --max-time N ... URL` and collects the outcome. Never panics on
    /// an HTTP or transport failure: look at `status` and `exit_code`.
    pub fn run(&self, url: &str) -> CurlResult {
        let curl = require_tool("curl");
        let work = tempfile::Builder::new()
            .prefix("periscope-curl-")
            .tempdir()
            .expect("curl temp dir");
        let body_path = work.path().join("body");
        let headers_path = work.path().join("headers");

        let mut cmd = Command::new(curl);
        // -q must come first: ignore ~/.curlrc.
        cmd.arg("-q")
            .arg("-sS")
            .arg("--max-time")
            .arg(format!("{:.3}", self.max_time.as_secs_f64()))
            .arg("-o")
            .arg(&body_path)
            .arg("-D")
            .arg(&headers_path)
            .arg("-w")
            .arg("%{json}");
        match &self.data {
            Some(Data::Bytes(bytes)) => {
                let data_path = work.path().join("request-body");
                std::fs::write(&data_path, bytes).expect("write request body");
                let mut arg = OsString::from("@");
                arg.push(&data_path);
                cmd.arg("--data-binary").arg(arg);
            }
            Some(Data::File(path)) => {
                let mut arg = OsString::from("@");
                arg.push(path);
                cmd.arg("--data-binary").arg(arg);
            }
            None => {}
        }
        cmd.args(&self.args).arg(url);
        for key in PROXY_ENV_VARS {
            cmd.env_remove(key);
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let command_line = format!("{cmd:?}");
        let output = cmd.output().expect("run curl");

        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let info: serde_json::Value =
            serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
        let body = std::fs::read(&body_path).unwrap_or_default();
        let raw_headers = std::fs::read(&headers_path).unwrap_or_default();
        let header_blocks = parse_header_blocks(&String::from_utf8_lossy(&raw_headers));
        let status = info
            .get("response_code")
            .or_else(|| info.get("http_code"))
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as u16;
        let time_total = info
            .get("time_total")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        CurlResult {
            status,
            body,
            headers: header_blocks.last().cloned().unwrap_or_default(),
            header_blocks,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            exit_code: output.status.code().unwrap_or(-1),
            time_total,
            info,
            command_line,
        }
    }
}

/// Splits `-D` output into header blocks (one per response: a proxy's CONNECT answer,
/// 100 Continue, redirects, the final response). Status lines are kept as the
/// `(":status-line", line)` first entry of each block.
fn parse_header_blocks(raw: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in raw.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with("HTTP/") {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
            current.push((":status-line".to_string(), line.to_string()));
        } else if let Some((name, value)) = line.split_once(':') {
            current.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    blocks
}

/// What one curl run did.
pub struct CurlResult {
    /// HTTP status of the last response (0 when there was none).
    pub status: u16,
    pub body: Vec<u8>,
    /// Headers of the last response, in order (first entry `:status-line`).
    pub headers: Vec<(String, String)>,
    /// Every response's headers (e.g. the proxy's CONNECT answer first).
    pub header_blocks: Vec<Vec<(String, String)>>,
    pub stderr: String,
    /// curl's exit code (0 ok, 7 connect failed, 28 timeout, 35/56/60 TLS, ...).
    pub exit_code: i32,
    /// Seconds, from `%{time_total}`.
    pub time_total: f64,
    /// Everything `-w '%{json}'` printed (`null` if it printed nothing parsable).
    pub info: serde_json::Value,
    pub command_line: String,
}

impl CurlResult {
    /// First value of a header of the last response (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics (with the response) when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self:?}"))
    }

    /// A string variable from `-w '%{json}'` (e.g. "remote_ip", "errormsg").
    pub fn info_str(&self, key: &str) -> Option<&str> {
        self.info.get(key).and_then(|v| v.as_str())
    }

    /// Exit code 0 and a 2xx status.
    pub fn is_success(&self) -> bool {
        self.exit_code == 0 && (200..300).contains(&self.status)
    }

    /// Panics with the whole result unless curl exited 0 with `status`.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert!(
            self.exit_code == 0 && self.status == status,
            "expected exit 0 and HTTP {status}, got: {self:?}"
        );
        self
    }
}

impl fmt::Debug for CurlResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let preview_len = self.body.len().min(600);
        f.debug_struct("CurlResult")
            .field("status", &self.status)
            .field("exit_code", &self.exit_code)
            .field("time_total", &self.time_total)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field(
                "body_start",
                &String::from_utf8_lossy(&self.body[..preview_len]),
            )
            .field("stderr", &self.stderr)
            .field("command", &self.command_line)
            .finish()
    }
}
