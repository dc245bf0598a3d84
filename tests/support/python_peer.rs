//! Python test peers under `tests/peers/`, run with the test venv's interpreter.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::output::OutputLines;
use super::tools::python;

/// A running Python peer; killed on drop.
pub struct PythonPeer {
    child: Child,
    pub port: u16,
    pub stdout: OutputLines,
    pub stderr: OutputLines,
}

impl PythonPeer {
    /// Runs `tests/peers/<script>` with `args` and waits for its `listening on PORT`.
    pub fn start(script: &str, args: &[&str]) -> PythonPeer {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/peers")
            .join(script);
        let mut child = Command::new(python())
            .arg("-u")
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
                panic!("{script} did not start ({e:?}); stderr:\n{}", stderr.text())
            });
        let port = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{script}: no port in {line:?}"));
        PythonPeer {
            child,
            port,
            stdout,
            stderr,
        }
    }
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The plain WebSocket echo server (`tests/peers/websocket_echo.py`).
pub fn python_websocket_echo_server() -> PythonPeer {
    PythonPeer::start("websocket_echo.py", &[])
}

/// The origin that reports each connection's key exchange
/// (`tests/peers/key_exchange_origin.py`): TLS 1.3 on the Python venv's OpenSSL (3.5 or
/// newer: it prefers X25519MLKEM768), with the test PKI's `localhost` certificate.
pub fn key_exchange_origin() -> PythonPeer {
    let pki = super::pki::test_pki();
    let cert = pki.server_cert.to_string_lossy().into_owned();
    let key = pki.server_key.to_string_lossy().into_owned();
    PythonPeer::start("key_exchange_origin.py", &["--cert", &cert, "--key", &key])
}

/// The scripted HTTP/2 origin (`tests/peers/h2_origin.py`): TLS with the test PKI's
/// `localhost` certificate, ALPN `h2` (and `http/1.1` for clients that offer only
/// that); the path picks the behaviour. `extra`: e.g. `--h2-only`.
pub fn h2_origin(extra: &[&str]) -> PythonPeer {
    let pki = super::pki::test_pki();
    let cert = pki.server_cert.to_string_lossy().into_owned();
    let key = pki.server_key.to_string_lossy().into_owned();
    let mut args = vec!["--cert", cert.as_str(), "--key", key.as_str()];
    args.extend_from_slice(extra);
    PythonPeer::start("h2_origin.py", &args)
}
