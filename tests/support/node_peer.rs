//! Node.js test peers under `tests/peers/` (`*.mjs`), run with the system `node`: a
//! TLS stack other than OpenSSL's command-line tools, Apache and Python's, with its
//! own defaults (session tickets on, for one).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::output::OutputLines;
use super::pki::test_pki;
use super::tools::require_tool;

/// A running Node.js peer; killed on drop.
pub struct NodePeer {
    child: Child,
    pub port: u16,
    /// What the peer reports (one line per event it was asked to log).
    pub stdout: OutputLines,
    pub stderr: OutputLines,
}

impl NodePeer {
    /// Runs `tests/peers/<script>` with `args` and waits for its `listening on PORT`.
    pub fn start(script: &str, args: &[&str]) -> NodePeer {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/peers")
            .join(script);
        let mut child = Command::new(require_tool("node"))
            .arg(&path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let stdout = OutputLines::spawn(child.stdout.take().expect("stdout"), script, true);
        let stderr = OutputLines::spawn(child.stderr.take().expect("stderr"), script, true);
        let line = stdout
            .wait_for(&"listening on ", Duration::from_secs(20))
            .unwrap_or_else(|e| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{script} did not start ({e:?}); stderr:\n{}", stderr.text())
            });
        let port = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{script}: no port in {line:?}"));
        NodePeer {
            child,
            port,
            stdout,
            stderr,
        }
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }
}

impl Drop for NodePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The renegotiating HTTPS origin (`tests/peers/renegotiating_origin.mjs`): TLS 1.2
/// with the test PKI's `localhost` certificate and session tickets on; under
/// `/optional` and `/required` it renegotiates after reading the request to ask for a
/// certificate from the test client CA. Answers JSON saying what it saw; logs
/// `renegotiation path=... resumed=... client_cert=...` on stdout.
pub fn renegotiating_origin() -> NodePeer {
    let pki = test_pki();
    let cert = pki.server_cert.to_string_lossy().into_owned();
    let key = pki.server_key.to_string_lossy().into_owned();
    let client_ca = pki.client_ca_cert.to_string_lossy().into_owned();
    NodePeer::start(
        "renegotiating_origin.mjs",
        &[
            "--cert",
            cert.as_str(),
            "--key",
            key.as_str(),
            "--client-ca",
            client_ca.as_str(),
        ],
    )
}
