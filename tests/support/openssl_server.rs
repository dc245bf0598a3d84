//! `openssl s_server` as a scripted TLS peer, commanded through a FIFO on its stdin.
//!
//! Commands (one line each, only read while a connection is open, DESIGN.md §5):
//! `R` HelloRequest asking for a client certificate, `r` HelloRequest without,
//! `k`/`K` KeyUpdate (not requested / requested), `c` TLS 1.3 CertificateRequest
//! (post-handshake auth). s_server reads stdin only during a connection and handles a
//! command only when the read holds nothing else, so [`OpensslServer::send_command`]
//! waits for its `SSL_do_handshake -> N` answer before returning. That answer comes as
//! soon as the HelloRequest / KeyUpdate / CertificateRequest is written: the rest of a
//! renegotiation happens when s_server next reads the connection, so the client must
//! keep reading (see `TlsClient::pump_until`). Anything else written
//! ([`OpensslServer::send_raw`]) goes to the client as application data; what the
//! client sends appears in the output lines (without `-www`).
//!
//! s_server is started with `-accept 127.0.0.1:0` and prints `ACCEPT 127.0.0.1:PORT`
//! after it listens: that line gives the port, with no race. It runs under
//! `stdbuf -oL` because its command answers use buffered `printf`.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::output::{LineMatcher, OutputLines};
use super::pki::{test_pki, TestPki};
use super::tools::{require_tool, terminate_child};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`OpensslServer::send_command`] waits for s_server's answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Options for `openssl s_server`.
#[derive(Default)]
pub struct OpensslServerBuilder {
    args: Vec<OsString>,
    cert: Option<(PathBuf, PathBuf)>,
    client_ca: Option<PathBuf>,
    pki: Option<TestPki>,
}

impl OpensslServerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Any other s_server argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// `-tls1_2`: TLS 1.2 only.
    pub fn tls1_2(self) -> Self {
        self.arg("-tls1_2")
    }

    /// `-tls1_3`: TLS 1.3 only.
    pub fn tls1_3(self) -> Self {
        self.arg("-tls1_3")
    }

    /// TLS `version` only: `"1.2"` or `"1.3"`.
    pub fn tls_version(self, version: &str) -> Self {
        match version {
            "1.2" => self.tls1_2(),
            "1.3" => self.tls1_3(),
            other => panic!("no s_server flag for TLS {other}"),
        }
    }

    /// `-www`: answer every GET with s_server's status page (commands are not read).
    pub fn www(self) -> Self {
        self.arg("-www")
    }

    /// `-no_ticket -no_cache`: renegotiations are full handshakes (no resumption).
    pub fn no_ticket_no_cache(self) -> Self {
        self.arg("-no_ticket").arg("-no_cache")
    }

    /// `-verify DEPTH`: ask for a client certificate in the first handshake.
    pub fn verify(self, depth: u32) -> Self {
        self.arg("-verify").arg(depth.to_string())
    }

    /// `-Verify DEPTH`: require a client certificate in the first handshake.
    pub fn verify_required(self, depth: u32) -> Self {
        self.arg("-Verify").arg(depth.to_string())
    }

    /// Server certificate and key (default: the PKI's server.pem / server.key).
    pub fn cert(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.cert = Some((cert.as_ref().to_path_buf(), key.as_ref().to_path_buf()));
        self
    }

    /// `-CAfile` (verifies client certificates and names the acceptable CAs in the
    /// CertificateRequest; default: the PKI's client-ca.pem).
    pub fn client_ca(mut self, path: impl AsRef<Path>) -> Self {
        self.client_ca = Some(path.as_ref().to_path_buf());
        self
    }

    pub fn pki(mut self, pki: &TestPki) -> Self {
        self.pki = Some(pki.clone());
        self
    }

    /// Starts s_server and waits for its `ACCEPT` line.
    pub fn start(self) -> OpensslServer {
        let openssl = require_tool("openssl");
        let pki = self.pki.clone().unwrap_or_else(|| test_pki().clone());
        let dir = tempfile::Builder::new()
            .prefix("periscope-s_server-")
            .tempdir()
            .expect("s_server temp dir");
        let fifo = dir.path().join("stdin.fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", fifo.display()));
        // Opening read+write never blocks on Linux and keeps a writer for the FIFO's
        // whole life, so s_server never reads EOF (which would make it quit).
        let writer = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .expect("open FIFO read-write");
        let reader = File::open(&fifo).expect("open FIFO for s_server");

        let (cert, key) = self
            .cert
            .clone()
            .unwrap_or_else(|| (pki.server_cert.clone(), pki.server_key.clone()));
        let client_ca = self
            .client_ca
            .clone()
            .unwrap_or_else(|| pki.client_ca_cert.clone());
        let mut args: Vec<OsString> = vec![
            "s_server".into(),
            "-accept".into(),
            "127.0.0.1:0".into(),
            "-cert".into(),
            cert.into(),
            "-key".into(),
            key.into(),
            "-CAfile".into(),
            client_ca.into(),
        ];
        args.extend(self.args.iter().cloned());

        let stdbuf = ["/usr/bin/stdbuf", "/bin/stdbuf"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let mut cmd = match &stdbuf {
            Some(stdbuf) => {
                let mut c = Command::new(stdbuf);
                c.arg("-oL").arg("-eL").arg(&openssl);
                c
            }
            None => Command::new(&openssl),
        };
        cmd.args(&args)
            .stdin(Stdio::from(reader))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command_line = format!(
            "{} {}",
            openssl.display(),
            args.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn `{command_line}`: {e}"));
        let stdout = OutputLines::spawn(child.stdout.take().unwrap(), "s_server stdout", true);
        let stderr = OutputLines::spawn(child.stderr.take().unwrap(), "s_server stderr", true);
        let mut server = OpensslServer {
            child,
            port: 0,
            writer,
            _dir: dir,
            fifo,
            stdout,
            stderr,
            command_line,
        };
        let line = server
            .stdout
            .wait_for(&"ACCEPT", READY_TIMEOUT)
            .unwrap_or_else(|e| {
                let status = server.child.try_wait();
                panic!(
                    "s_server did not print ACCEPT ({e:?}, status {status:?})\n{}",
                    server.describe()
                )
            });
        server.port = line
            .rsplit_once(':')
            .and_then(|(_, p)| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("cannot parse the port from {line:?}"));
        server
    }
}

/// A running `openssl s_server`; dropping it kills it.
pub struct OpensslServer {
    child: Child,
    port: u16,
    writer: File,
    _dir: tempfile::TempDir,
    fifo: PathBuf,
    stdout: OutputLines,
    stderr: OutputLines,
    command_line: String,
}

impl OpensslServer {
    pub fn builder() -> OpensslServerBuilder {
        OpensslServerBuilder::new()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://localhost:PORT/path`
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The FIFO on s_server's stdin (other processes may write to it too).
    pub fn fifo_path(&self) -> &Path {
        &self.fifo
    }

    /// Sends a one-letter command (`R`, `r`, `k`, `K`, `c`) and waits for s_server's
    /// `SSL_do_handshake -> N` answer (returned; `-> 1` once the message is written, not
    /// when a renegotiation completed). Panics on timeout with the output so far.
    pub fn send_command(&mut self, command: &str) -> String {
        let command = command.trim_end_matches('\n');
        let start = self.stdout.len();
        self.send_raw(format!("{command}\n").as_bytes());
        let matcher = |l: &str| {
            l.contains("SSL_do_handshake -> ") || l.contains("Failed to initiate request")
        };
        self.stdout
            .wait_for_after(start, &matcher, COMMAND_TIMEOUT)
            .unwrap_or_else(|e| {
                panic!(
                    "s_server did not answer command {command:?} ({e:?})\n{}",
                    self.describe()
                )
            })
    }

    /// Writes bytes to s_server's stdin: sent to the client as application data.
    pub fn send_raw(&mut self, data: &[u8]) {
        self.writer.write_all(data).expect("write to s_server FIFO");
        self.writer.flush().expect("flush s_server FIFO");
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

    /// The first stdout line (from the start) matching; panics on timeout.
    pub fn wait_for_output(&self, matcher: impl LineMatcher, timeout: Duration) -> String {
        self.wait_for_output_after(0, matcher, timeout)
    }

    /// The first stdout line with index >= `start` matching; panics on timeout.
    pub fn wait_for_output_after(
        &self,
        start: usize,
        matcher: impl LineMatcher,
        timeout: Duration,
    ) -> String {
        self.stdout
            .wait_for_after(start, &matcher, timeout)
            .unwrap_or_else(|e| {
                panic!(
                    "s_server: no {} after line {start} ({e:?})\n{}",
                    matcher.describe(),
                    self.describe()
                )
            })
    }

    /// The ciphers s_server reported (`CIPHER is X` lines), one per handshake it
    /// completed (initial handshakes only: s_server prints nothing for renegotiations).
    pub fn ciphers(&self) -> Vec<String> {
        self.stdout
            .lines()
            .iter()
            .filter_map(|l| l.strip_prefix("CIPHER is ").map(str::to_string))
            .collect()
    }

    pub fn describe(&self) -> String {
        format!(
            "command: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.command_line,
            self.stdout.text(),
            self.stderr.text()
        )
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        terminate_child(&mut self.child, Duration::from_secs(2));
    }
}
