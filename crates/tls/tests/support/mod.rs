//! What the crate's integration tests share: a test PKI, and the pieces of the
//! scripted OpenSSL servers they run on threads.

// Each test file compiles its own copy of this module and uses part of it.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use openssl::ssl::{
    ErrorCode, SslAcceptor, SslAcceptorBuilder, SslMethod, SslOptions, SslStream, SslVerifyMode,
    SslVersion,
};
use periscope_tls::{CertificateAuthority, HandshakeTimeouts, PostHandshake, UpstreamTls};

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub server_ca: CertificateAuthority,
    pub server_ca_file: PathBuf,
    pub client_ca: CertificateAuthority,
    /// `test-client.example`, issued by `client_ca`: certificate and key in one PEM.
    pub client_identity_file: PathBuf,
}

pub fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = CertificateAuthority::load_or_create(&dir.path().join("server-ca")).unwrap();
    let client_ca = CertificateAuthority::load_or_create(&dir.path().join("client-ca")).unwrap();
    let server_ca_file = server_ca.cert_pem_path().to_owned();
    let mut pki = Pki {
        dir,
        server_ca,
        server_ca_file,
        client_ca,
        client_identity_file: PathBuf::new(),
    };
    pki.client_identity_file = pki.write_client_identity("test-client.example");
    pki
}

impl Pki {
    /// Writes a client certificate for `common_name`, issued by the client CA, and its
    /// key to `<common_name>.pem`.
    pub fn write_client_identity(&self, common_name: &str) -> PathBuf {
        let identity = self.client_ca.leaf_for(common_name, &[]).unwrap();
        let file = self.dir.path().join(format!("{common_name}.pem"));
        let mut pem = identity.certificate.to_pem().unwrap();
        pem.extend(identity.key.private_key_to_pem_pkcs8().unwrap());
        std::fs::write(&file, pem).unwrap();
        file
    }
}

/// [`server_acceptor_builder`] without resumption: every renegotiation is a full
/// handshake.
pub fn server_acceptor(pki: &Pki, version: SslVersion) -> SslAcceptor {
    let mut builder = server_acceptor_builder(pki, version);
    builder.set_options(SslOptions::NO_SESSION_RESUMPTION_ON_RENEGOTIATION | SslOptions::NO_TICKET);
    builder.build()
}

/// A server with the test PKI, asking for no certificate in the first handshake and
/// naming the client CA when it asks later; resumption left at OpenSSL's defaults.
pub fn server_acceptor_builder(pki: &Pki, version: SslVersion) -> SslAcceptorBuilder {
    let leaf = pki.server_ca.leaf_for("localhost", &[]).unwrap();
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    builder.set_certificate(&leaf.certificate).unwrap();
    builder.set_private_key(&leaf.key).unwrap();
    builder.set_min_proto_version(Some(version)).unwrap();
    builder.set_max_proto_version(Some(version)).unwrap();
    builder.set_session_id_context(b"test").unwrap();
    let mut names = openssl::stack::Stack::new().unwrap();
    names
        .push(
            pki.client_ca
                .certificate()
                .subject_name()
                .to_owned()
                .unwrap(),
        )
        .unwrap();
    builder.set_client_ca_list(names);
    // Ask for nothing in the first handshake, accept whatever comes later: the tests
    // check what the client sends, not whether a real server would trust it.
    builder.set_verify_callback(SslVerifyMode::NONE, |_, _| true);
    builder
}

/// Reads until the handshake the server started is over (the client sends no
/// application data meanwhile, so a plain read would block forever).
pub fn finish_server_handshake(stream: &mut SslStream<TcpStream>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    stream
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut byte = [0u8; 1];
    while stream.renegotiation_pending() || !stream.ssl().is_init_finished() {
        if Instant::now() > deadline {
            return Err("the client never completed the handshake".into());
        }
        match stream.ssl_peek(&mut byte) {
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::WANT_READ => {}
            Err(e) => return Err(format!("server side failed: {e}")),
        }
    }
    stream.get_ref().set_read_timeout(None).unwrap();
    Ok(())
}

/// The TLS client under test with the limits the proxy would pass it
/// (`UpstreamTarget::timeouts`).
pub struct Upstream {
    pub tls: UpstreamTls,
    pub timeouts: HandshakeTimeouts,
}

impl std::ops::Deref for Upstream {
    type Target = UpstreamTls;
    fn deref(&self) -> &UpstreamTls {
        &self.tls
    }
}
