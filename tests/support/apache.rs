//! Apache httpd + mod_ssl as the renegotiating origin (DESIGN.md §5).
//!
//! One instance per test, in the foreground (`apache2 -f CONF -DFOREGROUND`) with its
//! config, pid file, logs, mutexes and docroot in its own temp dir. Three listeners on
//! 127.0.0.1 (and [::1] when present): plain HTTP, a TLS 1.2-only vhost and a TLS 1.2 +
//! 1.3 vhost. The same locations on every vhost:
//!
//! | path | behaviour |
//! |---|---|
//! | `/`, `/hello.txt` | [`HELLO_BODY`] |
//! | `/big.bin` | 5 MiB of deterministic bytes ([`big_bin`], [`big_bin_sha256`]) |
//! | `/echo` (POST) | mod_reflector: the request body back, same Content-Type |
//! | `/vedauth/...` | `SSLVerifyClient optional`: TLS 1.2 renegotiation / TLS 1.3 PHA after the request; `ok.txt` and `/vedauth/` → [`VEDAUTH_BODY`]; `/vedauth/echo` echoes (bodies up to 1 MiB survive the renegotiation: `SSLRenegBufferSize`) |
//! | `/vedauth/authorize/oauth` | 400 with [`OAUTH400_JSON`] (application/json), answered after the renegotiation |
//! | `/renegotiated-only/` | TLS 1.2: renegotiates to [`RENEGOTIATED_TLS12_CIPHER`]; 403 if the renegotiation did not complete. TLS 1.3: like /vedauth (PHA; no cipher change possible) |
//! | `/require/` | `SSLVerifyClient require`: 200 [`REQUIRE_BODY`] with a client certificate, TLS alert without |
//!
//! Every TLS response carries `X-Client-Cert-CN`, `X-Client-Verify`, `X-TLS-Protocol` and
//! `X-TLS-Cipher` (mod_ssl variables at response time: after any renegotiation; the
//! value `(null)` when unset). The access log records protocol, cipher, client CN and
//! the duration in microseconds.
//!
//! Quirk (verified by the harness self-tests): when a renegotiation or PHA never
//! completes, Apache waits `Timeout` and then serves `SSLVerifyClient optional`
//! locations anyway (200, no cert). `/renegotiated-only/` (TLS 1.2) and `/require/`
//! then answer 403 instead; on TLS 1.3 only `/require/` fails closed, so assert the
//! latency (well under [`APACHE_TIMEOUT_SECS`]) there.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::pki::{test_pki, TestPki, CLIENT_CERT_CN};
use super::tools::{
    free_ports, ipv6_loopback_available, require_tool, sha256_hex, terminate_child,
    world_readable_tempdir, write_file,
};

/// Apache's `Timeout` (seconds): how long it waits for a renegotiation that never
/// completes. Tests assert latencies well under it.
pub const APACHE_TIMEOUT_SECS: u64 = 30;
pub const HELLO_BODY: &str = "hello from the periscope test origin\n";
pub const VEDAUTH_BODY: &str = "vedauth ok\n";
pub const RENEGOTIATED_ONLY_BODY: &str = "renegotiated ok\n";
pub const REQUIRE_BODY: &str = "require ok\n";
pub const OAUTH400_JSON: &str = "{\"error\":\"invalid_request\",\"error_description\":\"periscope test origin: the oauth endpoint answers 400 after the client-certificate renegotiation\"}\n";
/// CN of the PKI's client certificate, as `X-Client-Cert-CN` shows it.
pub const CLIENT_CN: &str = CLIENT_CERT_CN;
/// The cipher the first TLS 1.2 handshake picks (server order).
pub const INITIAL_TLS12_CIPHER: &str = "ECDHE-RSA-AES256-GCM-SHA384";
/// The only cipher `/renegotiated-only/` accepts: reached only by a completed
/// renegotiation.
pub const RENEGOTIATED_TLS12_CIPHER: &str = "ECDHE-RSA-AES128-GCM-SHA256";
/// Size of `/big.bin`.
pub const BIG_BIN_LEN: usize = 5 * 1024 * 1024;

const MODULE_DIR: &str = "/usr/lib/apache2/modules";
const MODULES: &[(&str, &str)] = &[
    ("mpm_event_module", "mod_mpm_event.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("authz_host_module", "mod_authz_host.so"),
    ("ssl_module", "mod_ssl.so"),
    ("socache_shmcb_module", "mod_socache_shmcb.so"),
    ("rewrite_module", "mod_rewrite.so"),
    ("headers_module", "mod_headers.so"),
    ("mime_module", "mod_mime.so"),
    ("dir_module", "mod_dir.so"),
    ("alias_module", "mod_alias.so"),
    ("env_module", "mod_env.so"),
    ("setenvif_module", "mod_setenvif.so"),
    ("filter_module", "mod_filter.so"),
    ("reflector_module", "mod_reflector.so"),
];

/// The 5 MiB served as `/big.bin` (xorshift64* from a fixed seed: same bytes every run).
pub fn big_bin() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let mut state: u64 = 0x5045_5249_5343_4f50; // "PERISCOP"
        let mut out = Vec::with_capacity(BIG_BIN_LEN);
        while out.len() < BIG_BIN_LEN {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let word = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.truncate(BIG_BIN_LEN);
        out
    })
}

/// Lowercase hex SHA-256 of [`big_bin`].
pub fn big_bin_sha256() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| sha256_hex(big_bin()))
}

/// Which listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vhost {
    Plain,
    /// `SSLProtocol -all +TLSv1.2`
    Tls12,
    /// `SSLProtocol -all +TLSv1.2 +TLSv1.3`
    Tls13,
}

/// Options for an [`Apache`] instance.
pub struct ApacheBuilder {
    timeout_secs: u64,
    extra_config: String,
    extra_vhost_config: String,
    files: Vec<(PathBuf, Vec<u8>)>,
    pki: Option<TestPki>,
}

impl Default for ApacheBuilder {
    fn default() -> Self {
        ApacheBuilder {
            timeout_secs: APACHE_TIMEOUT_SECS,
            extra_config: String::new(),
            extra_vhost_config: String::new(),
            files: Vec::new(),
            pki: None,
        }
    }
}

impl ApacheBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Apache's `Timeout` in seconds (default [`APACHE_TIMEOUT_SECS`]); a short one
    /// makes tests of a never-completing renegotiation quick.
    pub fn timeout_secs(mut self, secs: u64) -> Self {
        self.timeout_secs = secs;
        self
    }

    /// Lines appended to the server config (outside the vhosts).
    pub fn extra_config(mut self, text: &str) -> Self {
        self.extra_config.push_str(text);
        self.extra_config.push('\n');
        self
    }

    /// Lines added inside every vhost (plain and TLS), e.g. another `<Location>`.
    pub fn extra_vhost_config(mut self, text: &str) -> Self {
        self.extra_vhost_config.push_str(text);
        self.extra_vhost_config.push('\n');
        self
    }

    /// An extra file under the docroot (`rel` like "dir/file.txt").
    pub fn file(mut self, rel: &str, contents: impl AsRef<[u8]>) -> Self {
        self.files
            .push((PathBuf::from(rel), contents.as_ref().to_vec()));
        self
    }

    /// Uses another PKI (default: [`test_pki`]).
    pub fn pki(mut self, pki: &TestPki) -> Self {
        self.pki = Some(pki.clone());
        self
    }

    /// Starts Apache and waits until every port accepts connections (20 s at most).
    /// Retries with new ports if one was taken in between. Panics with the error log.
    pub fn start(self) -> Apache {
        let apache2 = require_tool("apache2");
        let pki = self.pki.clone().unwrap_or_else(|| test_pki().clone());
        let dir = world_readable_tempdir("periscope-apache-");
        let docroot = dir.path().join("htdocs");
        self.write_docroot(&docroot);
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(&run_dir).expect("create run dir");
        let ipv6 = ipv6_loopback_available();

        let mut last_failure = String::new();
        for _attempt in 0..5 {
            let ports = free_ports(3, ipv6);
            let (http_port, tls12_port, tls13_port) = (ports[0], ports[1], ports[2]);
            let conf_path = dir.path().join("httpd.conf");
            let conf = self.config(
                dir.path(),
                &docroot,
                &pki,
                ipv6,
                [http_port, tls12_port, tls13_port],
            );
            write_file(&conf_path, conf);
            for log in ["error.log", "access.log", "console.log"] {
                let _ = std::fs::remove_file(dir.path().join(log));
            }
            let console = File::create(dir.path().join("console.log")).expect("console log");
            let mut child = Command::new(&apache2)
                .arg("-f")
                .arg(&conf_path)
                .arg("-DFOREGROUND")
                .env("LANG", "C")
                .stdin(Stdio::null())
                .stdout(Stdio::from(console.try_clone().unwrap()))
                .stderr(Stdio::from(console))
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", apache2.display()));

            let mut addrs: Vec<SocketAddr> = ports
                .iter()
                .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
                .collect();
            if ipv6 {
                addrs.extend(
                    ports
                        .iter()
                        .map(|p| SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, *p))),
                );
            }
            match wait_listening(
                &mut child,
                &dir.path().join("error.log"),
                &addrs,
                Duration::from_secs(20),
            ) {
                Ok(()) => {
                    return Apache {
                        child: Some(child),
                        dir,
                        docroot,
                        http_port,
                        tls12_port,
                        tls13_port,
                        timeout_secs: self.timeout_secs,
                    }
                }
                Err(why) => {
                    let _ = terminate_child(&mut child, Duration::from_secs(5));
                    let logs = read_logs(dir.path());
                    let port_taken =
                        logs.contains("could not bind") || logs.contains("Address already in use");
                    last_failure = format!("{why}\n{logs}");
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        panic!("Apache did not start: {last_failure}");
    }

    fn write_docroot(&self, docroot: &Path) {
        write_file(&docroot.join("index.txt"), HELLO_BODY);
        write_file(&docroot.join("hello.txt"), HELLO_BODY);
        write_file(&docroot.join("big.bin"), big_bin());
        write_file(&docroot.join("vedauth/index.txt"), VEDAUTH_BODY);
        write_file(&docroot.join("vedauth/ok.txt"), VEDAUTH_BODY);
        write_file(&docroot.join("errors/oauth400.json"), OAUTH400_JSON);
        write_file(
            &docroot.join("renegotiated-only/index.txt"),
            RENEGOTIATED_ONLY_BODY,
        );
        write_file(
            &docroot.join("renegotiated-only/ok.txt"),
            RENEGOTIATED_ONLY_BODY,
        );
        write_file(&docroot.join("require/index.txt"), REQUIRE_BODY);
        write_file(&docroot.join("require/ok.txt"), REQUIRE_BODY);
        for (rel, contents) in &self.files {
            write_file(&docroot.join(rel), contents);
        }
    }

    fn config(
        &self,
        dir: &Path,
        docroot: &Path,
        pki: &TestPki,
        ipv6: bool,
        ports: [u16; 3],
    ) -> String {
        let d = dir.display();
        let docroot = docroot.display();
        let [http_port, tls12_port, tls13_port] = ports;
        let mut c = String::new();
        let mut line = |s: &str| {
            c.push_str(s);
            c.push('\n');
        };
        line(&format!(
            "# Periscope test origin (generated by tests/support/apache.rs)\nServerRoot \"{d}\""
        ));
        line("ServerName localhost");
        for (name, file) in MODULES {
            line(&format!("LoadModule {name} {MODULE_DIR}/{file}"));
        }
        if rustix::process::geteuid().is_root() {
            line("User www-data\nGroup www-data");
        }
        line(&format!(
            "PidFile \"{d}/run/apache.pid\"\nDefaultRuntimeDir \"{d}/run\"\nMutex file:{d}/run default"
        ));
        line(&format!(
            "ErrorLog \"{d}/error.log\"\nLogLevel info ssl:debug"
        ));
        line("LogFormat \"%h %{remote}p \\\"%r\\\" %>s %b %Dus %{SSL_PROTOCOL}x %{SSL_CIPHER}x cn=%{SSL_CLIENT_S_DN_CN}x verify=%{SSL_CLIENT_VERIFY}x\" periscope");
        line(&format!("CustomLog \"{d}/access.log\" periscope"));
        line(&format!("Timeout {}", self.timeout_secs));
        line("KeepAlive On\nKeepAliveTimeout 5\nMaxKeepAliveRequests 1000");
        line("StartServers 1\nServerLimit 2\nThreadLimit 32\nThreadsPerChild 32\nMaxRequestWorkers 64\nMinSpareThreads 8\nMaxSpareThreads 64");
        line("TypesConfig /dev/null\nAddType text/plain .txt\nAddType application/json .json\nAddType application/octet-stream .bin");
        line("EnableSendfile Off");
        line(&format!(
            "DocumentRoot \"{docroot}\"\nDirectoryIndex index.txt"
        ));
        line("<Directory />\n  AllowOverride None\n  Require all denied\n</Directory>");
        // mod_rewrite refuses per-directory rules without FollowSymLinks.
        line(&format!(
            "<Directory \"{docroot}\">\n  Options FollowSymLinks\n  AllowOverride None\n  Require all granted\n</Directory>"
        ));
        line(&format!(
            "SSLSessionCache \"shmcb:{d}/run/ssl_scache(512000)\""
        ));
        line("SSLSessionCacheTimeout 300");
        line(&self.extra_config);

        let hosts = |port: u16| {
            if ipv6 {
                format!("127.0.0.1:{port} [::1]:{port}")
            } else {
                format!("127.0.0.1:{port}")
            }
        };
        for (port, https) in [(http_port, false), (tls12_port, true), (tls13_port, true)] {
            let suffix = if https { " https" } else { "" };
            line(&format!("Listen 127.0.0.1:{port}{suffix}"));
            if ipv6 {
                line(&format!("Listen [::1]:{port}{suffix}"));
            }
        }

        line(&format!("<VirtualHost {}>", hosts(http_port)));
        line(&common_locations(false));
        line(&self.extra_vhost_config);
        line("</VirtualHost>");
        for (port, protocols) in [(tls12_port, "+TLSv1.2"), (tls13_port, "+TLSv1.2 +TLSv1.3")] {
            line(&format!("<VirtualHost {}>", hosts(port)));
            line("  SSLEngine on");
            line(&format!("  SSLProtocol -all {protocols}"));
            line(&format!(
                "  SSLCipherSuite {INITIAL_TLS12_CIPHER}:{RENEGOTIATED_TLS12_CIPHER}:ECDHE-RSA-CHACHA20-POLY1305"
            ));
            line("  SSLHonorCipherOrder on");
            line(&format!(
                "  SSLCertificateFile \"{}\"",
                pki.server_cert.display()
            ));
            line(&format!(
                "  SSLCertificateKeyFile \"{}\"",
                pki.server_key.display()
            ));
            line(&format!(
                "  SSLCACertificateFile \"{}\"",
                pki.client_ca_cert.display()
            ));
            line(&common_locations(true));
            line(&self.extra_vhost_config);
            line("</VirtualHost>");
        }
        c
    }
}

/// The locations shared by every vhost (`tls` adds the mod_ssl parts).
fn common_locations(tls: bool) -> String {
    let mut s = String::new();
    if tls {
        s.push_str(
            r#"  Header always set X-Client-Cert-CN "%{SSL_CLIENT_S_DN_CN}s"
  Header always set X-Client-Verify "%{SSL_CLIENT_VERIFY}s"
  Header always set X-TLS-Protocol "%{SSL_PROTOCOL}s"
  Header always set X-TLS-Cipher "%{SSL_CIPHER}s"
"#,
        );
    }
    s.push_str(
        r#"  <Location /echo>
    SetHandler reflector
  </Location>
  <Location /vedauth/echo>
    SetHandler reflector
  </Location>
"#,
    );
    if tls {
        // mod_ssl renegotiates (TLS 1.2) or sends a post-handshake CertificateRequest
        // (TLS 1.3) in its access hook, when the per-location settings differ from the
        // handshake's. SSLRenegBufferSize (location context only) keeps request bodies
        // up to that size across it.
        s.push_str(
            r#"  <Location /vedauth>
    SSLVerifyClient optional
    SSLVerifyDepth 2
    SSLRenegBufferSize 1048576
  </Location>
"#,
        );
        // A second, different per-dir SSLCipherSuite forces a full TLS 1.2 renegotiation
        // to that cipher; if it never completes, the old cipher stays and mod_ssl says
        // 403 ("Cipher in use is not allowed") instead of serving the page.
        s.push_str(&format!(
            r#"  <Location /renegotiated-only>
    SSLVerifyClient optional
    SSLVerifyDepth 2
    SSLRenegBufferSize 1048576
    SSLCipherSuite {RENEGOTIATED_TLS12_CIPHER}
  </Location>
  <Location /require>
    SSLVerifyClient require
    SSLVerifyDepth 2
    SSLRenegBufferSize 1048576
  </Location>
"#
        ));
    }
    // mod_rewrite's per-directory rules run in the fixup hook, after mod_ssl's access
    // hook: the 400 comes after the renegotiation. ErrorDocument turns it into JSON (an
    // internal redirect: GET, status kept, Content-Type from the .json file).
    s.push_str(
        r#"  <Location /vedauth/authorize/oauth>
    RewriteEngine On
    RewriteRule ^ - [R=400,L]
    ErrorDocument 400 /errors/oauth400.json
  </Location>
"#,
    );
    s
}

/// Polls until Apache logged that it is up (AH00489, written after every `Listen` socket
/// was bound: a port taken by another process would have made it exit instead) and
/// every address accepts a TCP connection. Checking the ports alone is not enough: in a
/// parallel run, another instance may have bound a port that this one then fails to
/// bind. Err if the child exits or time runs out.
fn wait_listening(
    child: &mut Child,
    error_log: &Path,
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<SocketAddr> = addrs.to_vec();
    let mut started = false;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("apache2 exited before listening: {status}"));
        }
        if !started {
            started = std::fs::read_to_string(error_log).is_ok_and(|log| log.contains("AH00489"));
        }
        if started {
            pending.retain(|addr| {
                TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_err()
            });
            if pending.is_empty() {
                // A bind failure makes the parent exit at once; make sure it did not.
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("apache2 exited after starting: {status}"));
                }
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "apache2 not ready after {timeout:?} (startup logged: {started}; not accepting: {pending:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_logs(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["console.log", "error.log"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        out.push_str(&format!("--- {name} ---\n{text}\n"));
    }
    out
}

/// A running Apache; dropping it stops it (SIGTERM, then SIGKILL) and removes its dir.
pub struct Apache {
    child: Option<Child>,
    dir: tempfile::TempDir,
    docroot: PathBuf,
    pub http_port: u16,
    pub tls12_port: u16,
    pub tls13_port: u16,
    timeout_secs: u64,
}

impl Apache {
    pub fn builder() -> ApacheBuilder {
        ApacheBuilder::new()
    }

    /// Starts an instance with the default configuration.
    pub fn start() -> Apache {
        ApacheBuilder::new().start()
    }

    pub fn port(&self, vhost: Vhost) -> u16 {
        match vhost {
            Vhost::Plain => self.http_port,
            Vhost::Tls12 => self.tls12_port,
            Vhost::Tls13 => self.tls13_port,
        }
    }

    /// `http://localhost:PORT/path` or `https://localhost:PORT/path` (`path` starts
    /// with `/`). The server certificate is for localhost, 127.0.0.1 and ::1.
    pub fn url(&self, vhost: Vhost, path: &str) -> String {
        let scheme = if vhost == Vhost::Plain {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://localhost:{}{path}", self.port(vhost))
    }

    /// Like [`Apache::url`] with 127.0.0.1 as the host.
    pub fn url_ip(&self, vhost: Vhost, path: &str) -> String {
        let scheme = if vhost == Vhost::Plain {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://127.0.0.1:{}{path}", self.port(vhost))
    }

    /// `Timeout` of this instance, seconds.
    pub fn timeout_secs(&self) -> u64 {
        self.timeout_secs
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn docroot(&self) -> &Path {
        &self.docroot
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// One line a request: `IP PORT "REQUEST" STATUS BYTES DURATIONus PROTOCOL CIPHER
    /// cn=CN verify=RESULT` (written when the request finishes).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// How many times mod_ssl started a TLS 1.2 renegotiation (AH02221).
    pub fn renegotiation_count(&self) -> usize {
        self.error_log()
            .matches("AH02221: Requesting connection re-negotiation")
            .count()
    }

    /// How many times mod_ssl sent a TLS 1.3 post-handshake CertificateRequest (AH10129).
    pub fn post_handshake_auth_count(&self) -> usize {
        self.error_log()
            .matches("AH10129: verify client post handshake")
            .count()
    }

    /// Waits until the access log has a line containing `needle` (lines are written
    /// when a request finishes); returns it.
    pub fn wait_for_access_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.access_log().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            if Instant::now() >= deadline {
                panic!(
                    "no access log line containing {needle:?} after {timeout:?}\n--- access.log ---\n{}",
                    self.access_log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Error log and console output, for assertion messages.
    pub fn logs(&self) -> String {
        read_logs(self.dir.path())
    }

    /// Stops the server now (Drop does the same).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate_child(&mut child, Duration::from_secs(10));
        }
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        self.stop();
    }
}
