//! The client leg's handshake as Periscope completes it (`ClientTls::accept` with a
//! minted leaf), against a client that offers X25519MLKEM768 first, as OpenSSL 3.5 on,
//! rustls, Chrome and Firefox do: with the library's groups (the hybrid is agreed on)
//! and with classic groups only (what such a client gets when its server agreed on a
//! classic group; see `periscope_tls::key_exchange`). Each iteration is a whole
//! handshake, both ends of it, over an in-memory pipe.
//!
//!     cargo bench -p periscope-tls --features vendored --bench client_handshake
//!
//! (`--features vendored` links the OpenSSL the proxy ships with; without it the
//! crate alone links the system's, Debian 12's 3.0, which has no ML-KEM.)

use std::pin::Pin;

use criterion::{criterion_group, criterion_main, Criterion};
use openssl::ssl::{SslConnector, SslMethod};
use periscope_tls::{CertificateAuthority, ClientTls, ClientTlsSettings, HandshakeTimeouts};

fn client_handshake(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let confdir = tempfile::tempdir().expect("a temporary directory");
    let ca = CertificateAuthority::load_or_create(confdir.path()).expect("a CA");
    let leaf = ca.leaf_for("localhost", &[]).expect("a leaf");
    let client_tls = ClientTls::new(ClientTlsSettings::default()).expect("the client leg");
    let mut client = SslConnector::builder(SslMethod::tls_client()).expect("a client");
    client
        .set_ca_file(ca.cert_pem_path())
        .expect("the CA as trusted");
    let client = client.build();
    for (groups, classic) in [("the library's groups", false), ("classic groups", true)] {
        // The group agreed on names the benchmark: without ML-KEM in the library (the
        // system's OpenSSL 3.0) both are X25519.
        let agreed = runtime
            .block_on(handshake(&client_tls, &client, &leaf, classic))
            .unwrap_or_default();
        c.bench_function(&format!("client-leg handshake, {groups}: {agreed}"), |b| {
            b.iter(|| runtime.block_on(handshake(&client_tls, &client, &leaf, classic)))
        });
    }
}

/// One handshake, both ends, over an in-memory pipe; the group agreed on.
async fn handshake(
    client_tls: &ClientTls,
    client: &SslConnector,
    leaf: &periscope_tls::LeafCertificate,
    classic: bool,
) -> Option<String> {
    let (client_io, proxy_io) = tokio::io::duplex(64 * 1024);
    let accepted = client_tls.accept(proxy_io, leaf, None, classic, HandshakeTimeouts::default());
    let ssl = client
        .configure()
        .and_then(|config| config.into_ssl("localhost"))
        .expect("a client connection");
    let mut stream = tokio_openssl::SslStream::new(ssl, client_io).expect("a client stream");
    let connected = Pin::new(&mut stream).connect();
    let (accepted, connected) = tokio::join!(accepted, connected);
    let accepted = accepted.expect("the proxy's side of the handshake");
    connected.expect("the client's side of the handshake");
    accepted.info().key_exchange
}

criterion_group!(benches, client_handshake);
criterion_main!(benches);
