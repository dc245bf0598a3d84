//! A scripted blocking TLS client (the `openssl` crate) for what curl cannot do: stall a
//! renegotiation on purpose (send nothing after the request, like a proxy that never
//! flushes OpenSSL's answer to a HelloRequest), refuse renegotiation, go without
//! post-handshake auth, or count handshakes through the key log.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::ssl::{
    SslConnector, SslFiletype, SslMethod, SslOptions, SslRef, SslStream, SslVerifyMode, SslVersion,
};

use super::pki::test_pki;

/// Options for a [`TlsClient`].
pub struct TlsClientBuilder {
    min_version: Option<SslVersion>,
    max_version: Option<SslVersion>,
    post_handshake_auth: bool,
    client_cert_pem: Option<PathBuf>,
    cafile: Option<PathBuf>,
    verify: bool,
    sni: String,
    no_renegotiation: bool,
    cipher_list: Option<String>,
    groups: Option<String>,
    read_timeout: Duration,
    proxy: Option<String>,
}

impl Default for TlsClientBuilder {
    fn default() -> Self {
        TlsClientBuilder {
            min_version: None,
            max_version: None,
            post_handshake_auth: true,
            client_cert_pem: None,
            cafile: None,
            verify: true,
            sni: "localhost".to_string(),
            no_renegotiation: false,
            cipher_list: None,
            groups: None,
            read_timeout: Duration::from_secs(60),
            proxy: None,
        }
    }
}

impl TlsClientBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// TLS 1.2 only.
    pub fn tls12(mut self) -> Self {
        self.min_version = Some(SslVersion::TLS1_2);
        self.max_version = Some(SslVersion::TLS1_2);
        self
    }

    /// TLS 1.3 only.
    pub fn tls13(mut self) -> Self {
        self.min_version = Some(SslVersion::TLS1_3);
        self.max_version = Some(SslVersion::TLS1_3);
        self
    }

    /// Offer TLS 1.3 post-handshake auth (default on, as curl and browsers do).
    pub fn post_handshake_auth(mut self, on: bool) -> Self {
        self.post_handshake_auth = on;
        self
    }

    /// Present this certificate + key (one PEM file) when asked.
    pub fn client_cert(mut self, pem: impl AsRef<Path>) -> Self {
        self.client_cert_pem = Some(pem.as_ref().to_path_buf());
        self
    }

    /// Trust this CA file (default: the PKI's ca.pem).
    pub fn cafile(mut self, path: impl AsRef<Path>) -> Self {
        self.cafile = Some(path.as_ref().to_path_buf());
        self
    }

    /// Do not verify the server certificate.
    pub fn insecure(mut self) -> Self {
        self.verify = false;
        self
    }

    /// SNI and the name verified (default "localhost").
    pub fn server_name(mut self, name: &str) -> Self {
        self.sni = name.to_string();
        self
    }

    /// Set SSL_OP_NO_RENEGOTIATION: answer a HelloRequest with a no_renegotiation alert.
    pub fn no_renegotiation(mut self) -> Self {
        self.no_renegotiation = true;
        self
    }

    /// TLS 1.2 cipher list (OpenSSL syntax).
    /// The key-exchange groups to offer, in OpenSSL's syntax (`MLKEM768:X25519`).
    pub fn groups(mut self, list: &str) -> Self {
        self.groups = Some(list.to_string());
        self
    }

    pub fn cipher_list(mut self, list: &str) -> Self {
        self.cipher_list = Some(list.to_string());
        self
    }

    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Reach the target through an HTTP proxy (`HOST:PORT`) with CONNECT first.
    pub fn via_proxy(mut self, proxy_addr: &str) -> Self {
        self.proxy = Some(proxy_addr.to_string());
        self
    }

    /// Connects to `target` (`HOST:PORT`) and completes the handshake; panics on error.
    pub fn connect(self, target: &str) -> TlsClient {
        self.try_connect(target)
            .unwrap_or_else(|e| panic!("TLS connect to {target}: {e}"))
    }

    /// Like [`TlsClientBuilder::connect`], returning the error as text.
    pub fn try_connect(self, target: &str) -> Result<TlsClient, String> {
        let pki = test_pki();
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
        b.set_min_proto_version(self.min_version)
            .map_err(|e| e.to_string())?;
        b.set_max_proto_version(self.max_version)
            .map_err(|e| e.to_string())?;
        let cafile = self.cafile.clone().unwrap_or_else(|| pki.ca_cert.clone());
        b.set_ca_file(&cafile)
            .map_err(|e| format!("CA file {}: {e}", cafile.display()))?;
        if !self.verify {
            b.set_verify(SslVerifyMode::NONE);
        }
        if let Some(pem) = &self.client_cert_pem {
            b.set_certificate_chain_file(pem)
                .map_err(|e| e.to_string())?;
            b.set_private_key_file(pem, SslFiletype::PEM)
                .map_err(|e| e.to_string())?;
        }
        if self.no_renegotiation {
            b.set_options(SslOptions::NO_RENEGOTIATION);
        }
        if let Some(list) = &self.groups {
            b.set_groups_list(list).map_err(|e| e.to_string())?;
        }
        if let Some(list) = &self.cipher_list {
            b.set_cipher_list(list).map_err(|e| e.to_string())?;
        }
        if self.post_handshake_auth {
            periscope_tls::offer_post_handshake_auth(&mut b);
        }
        let keylog = Arc::new(Mutex::new(Vec::new()));
        let keylog_sink = keylog.clone();
        b.set_keylog_callback(move |_, line| keylog_sink.lock().unwrap().push(line.to_string()));
        let connector = b.build();

        let tcp = match &self.proxy {
            Some(proxy) => connect_tunnel(proxy, target)?,
            None => TcpStream::connect(target).map_err(|e| format!("TCP connect {target}: {e}"))?,
        };
        tcp.set_read_timeout(Some(self.read_timeout)).ok();
        tcp.set_nodelay(true).ok();
        let stalled = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicUsize::new(0));
        let stream = StallableStream {
            inner: tcp,
            stalled: stalled.clone(),
            dropped: dropped.clone(),
        };
        let mut config = connector.configure().map_err(|e| e.to_string())?;
        config.set_verify_hostname(self.verify);
        let tls = config
            .connect(&self.sni, stream)
            .map_err(|e| format!("handshake with {target}: {e}"))?;
        Ok(TlsClient {
            tls,
            keylog,
            stalled,
            dropped,
        })
    }
}

/// CONNECT through an HTTP proxy; returns the tunnel once the proxy answered 2xx.
fn connect_tunnel(proxy: &str, target: &str) -> Result<TcpStream, String> {
    let mut tcp =
        TcpStream::connect(proxy).map_err(|e| format!("TCP connect proxy {proxy}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30))).ok();
    write!(tcp, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => {
                return Err(format!(
                    "proxy closed during CONNECT: {:?}",
                    String::from_utf8_lossy(&head)
                ))
            }
            Err(e) => return Err(format!("reading CONNECT answer: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let ok = head
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.starts_with('2'));
    if ok {
        Ok(tcp)
    } else {
        Err(format!("proxy refused CONNECT: {head}"))
    }
}

/// TCP stream whose writes can be made to vanish.
#[derive(Debug)]
struct StallableStream {
    inner: TcpStream,
    stalled: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
}

impl Read for StallableStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for StallableStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.stalled.load(Ordering::SeqCst) {
            self.dropped.fetch_add(buf.len(), Ordering::SeqCst);
            return Ok(buf.len());
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A connected TLS client.
pub struct TlsClient {
    tls: SslStream<StallableStream>,
    keylog: Arc<Mutex<Vec<String>>>,
    stalled: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
}

impl TlsClient {
    pub fn builder() -> TlsClientBuilder {
        TlsClientBuilder::new()
    }

    pub fn ssl(&self) -> &SslRef {
        self.tls.ssl()
    }

    /// Negotiated version, e.g. "TLSv1.2".
    pub fn version(&self) -> String {
        self.tls.ssl().version_str().to_string()
    }

    /// Current cipher name (OpenSSL naming).
    pub fn cipher(&self) -> String {
        self.tls
            .ssl()
            .current_cipher()
            .map(|c| c.name().to_string())
            .unwrap_or_default()
    }

    /// From now on, everything OpenSSL writes is silently dropped (it believes it was
    /// sent). Reads go on.
    pub fn stall_writes(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Bytes dropped since [`TlsClient::stall_writes`] (> 0 means OpenSSL tried to
    /// answer something, e.g. a HelloRequest).
    pub fn dropped_bytes(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    /// NSS key log lines written so far.
    pub fn keylog_lines(&self) -> Vec<String> {
        self.keylog.lock().unwrap().clone()
    }

    /// Handshakes whose keys were logged (distinct client randoms): 2 after one
    /// completed TLS 1.2 renegotiation. Post-handshake auth and KeyUpdate add none.
    pub fn handshake_count(&self) -> usize {
        let mut randoms: Vec<String> = self
            .keylog_lines()
            .iter()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect();
        randoms.sort();
        randoms.dedup();
        randoms.len()
    }

    pub fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(data)?;
        self.tls.flush()
    }

    /// Read timeout of the socket (None: block).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        self.tls.get_ref().inner.set_read_timeout(timeout).ok();
    }

    /// Keeps reading (in slices of 100 ms) until `done(self, data_so_far)` says so or
    /// `timeout` passes,
    /// which drives any handshake message the peer sent (HelloRequest, the rest of a
    /// renegotiation, CertificateRequest, KeyUpdate). Returns the application data read
    /// meanwhile; panics on a read error or when time runs out.
    pub fn pump_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&TlsClient, &[u8]) -> bool,
    ) -> Vec<u8> {
        let deadline = std::time::Instant::now() + timeout;
        let mut data = Vec::new();
        let mut buf = [0u8; 16384];
        let saved = self.tls.get_ref().inner.read_timeout().ok().flatten();
        self.set_read_timeout(Some(Duration::from_millis(100)));
        while !done(self, &data) {
            assert!(
                std::time::Instant::now() < deadline,
                "pump_until: condition not met after {timeout:?}; data so far {:?}, key log {:?}",
                String::from_utf8_lossy(&data),
                self.keylog_lines()
            );
            match self.tls.read(&mut buf) {
                Ok(0) => panic!(
                    "pump_until: connection closed; data {:?}",
                    String::from_utf8_lossy(&data)
                ),
                Ok(n) => data.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!(
                    "pump_until: read error {e}; data {:?}",
                    String::from_utf8_lossy(&data)
                ),
            }
        }
        self.set_read_timeout(saved);
        data
    }

    /// One SSL_read (processes any HelloRequest/CertificateRequest/KeyUpdate on the way).
    pub fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tls.read(buf)
    }

    /// Reads until close_notify, EOF, an error or the read timeout; returns the data and
    /// the error that ended it (None for a clean end).
    pub fn read_to_end(&mut self) -> (Vec<u8>, Option<String>) {
        let mut out = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            match self.tls.ssl_read(&mut buf) {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.code() == openssl::ssl::ErrorCode::ZERO_RETURN => return (out, None),
                Err(e) => {
                    let clean_eof =
                        e.code() == openssl::ssl::ErrorCode::SYSCALL && e.io_error().is_none();
                    return (out, if clean_eof { None } else { Some(e.to_string()) });
                }
            }
        }
    }

    /// Sends `METHOD PATH HTTP/1.1` with `Connection: close` (and `body`, if any),
    /// optionally stalling all writes right after it, then reads the response to the end.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        stall_after_request: bool,
    ) -> HttpResponse {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: periscope-test-tls-client\r\nConnection: close\r\n"
        )
        .into_bytes();
        if !body.is_empty() || method == "POST" {
            req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        self.write_all(&req).expect("write request");
        if stall_after_request {
            self.stall_writes();
        }
        let (raw, error) = self.read_to_end();
        HttpResponse::parse(&raw, error)
    }

    /// `GET path` (see [`TlsClient::request`]).
    pub fn get(&mut self, path: &str) -> HttpResponse {
        self.request("GET", path, b"", false)
    }
}

/// A parsed HTTP/1.1 response (status 0 when none could be parsed).
#[derive(Debug, Clone, Default)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The bytes as received.
    pub raw: Vec<u8>,
    /// The read error that ended the connection, if it was not a clean close.
    pub error: Option<String>,
}

impl HttpResponse {
    pub fn parse(raw: &[u8], error: Option<String>) -> HttpResponse {
        let mut resp = HttpResponse {
            raw: raw.to_vec(),
            error,
            ..Default::default()
        };
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            return resp;
        };
        let head = String::from_utf8_lossy(&raw[..end]);
        let mut lines = head.split("\r\n");
        resp.status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        for line in lines {
            if let Some((n, v)) = line.split_once(':') {
                resp.headers
                    .push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let rest = &raw[end + 4..];
        resp.body = if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            dechunk(rest)
        } else if let Some(len) = resp
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            rest[..len.min(rest.len())].to_vec()
        } else {
            rest.to_vec()
        };
        resp
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return out;
        };
        data = &data[line_end + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
}
