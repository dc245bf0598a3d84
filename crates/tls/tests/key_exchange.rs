//! Which key-exchange groups the server leg offers, against real OpenSSL servers on
//! threads (the library Periscope links, 3.5 or newer in the default build): a server
//! that chose a classic group is offered classic groups next time, and one that then
//! stops accepting them is offered the client's groups again after one failure.

use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::Duration;

use openssl::ssl::SslVersion;
use periscope_tls::{HandshakeTimeouts, UpstreamTarget, UpstreamTls, UpstreamTlsSettings};

mod support;
use support::{pki, server_acceptor_builder, Pki};

/// A TLS 1.3 server on one port whose `i`-th connection accepts only `groups[i]`;
/// says for each connection whether its handshake completed.
fn server_changing_groups(pki: &Pki, groups: &[&str]) -> (u16, JoinHandle<Vec<bool>>) {
    let acceptors: Vec<_> = groups
        .iter()
        .map(|groups| {
            let mut builder = server_acceptor_builder(pki, SslVersion::TLS1_3);
            builder.set_groups_list(groups).unwrap();
            builder.build()
        })
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        acceptors
            .into_iter()
            .map(|acceptor| {
                let (tcp, _) = listener.accept().unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                acceptor.accept(tcp).is_ok()
            })
            .collect()
    });
    (port, handle)
}

#[tokio::test]
async fn a_server_that_stops_accepting_classic_groups_costs_one_failed_connection() {
    let pki = pki();
    if openssl::version::number() < 0x3050_0000 {
        // Built against a library without ML-KEM (`--no-default-features` on
        // Debian 12): no server here can ask for it, and Periscope never offers it.
        let mut builder = server_acceptor_builder(&pki, SslVersion::TLS1_3);
        assert!(builder.set_groups_list("X25519MLKEM768").is_err());
        return;
    }
    let (port, server) =
        server_changing_groups(&pki, &["X25519", "X25519MLKEM768", "X25519MLKEM768"]);
    let upstream = UpstreamTls::new(UpstreamTlsSettings {
        verify: true,
        trusted_ca: Some(pki.server_ca_file.clone()),
        ..UpstreamTlsSettings::default()
    })
    .unwrap();
    let label = format!("localhost:{port}");
    // The client asked for post-quantum groups each time (`post_quantum: true`).
    let target = UpstreamTarget {
        server_name: "localhost",
        send_sni: true,
        alpn: &[],
        post_quantum: true,
        peer_label: &label,
        timeouts: HandshakeTimeouts::default(),
    };
    let mut agreed = Vec::new();
    for _ in 0..3 {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        agreed.push(
            upstream
                .connect(tcp, &target)
                .await
                .map(|tls| tls.info().key_exchange.unwrap_or_default())
                .map_err(|error| error.to_string()),
        );
    }
    let completed = server.join().unwrap();
    // 1: offered the hybrid, the server chose X25519 (and is remembered for it).
    assert_eq!(agreed[0].as_deref(), Ok("x25519"), "{agreed:?}");
    // 2: offered classic groups only, which the server no longer accepts.
    assert!(agreed[1].is_err(), "{agreed:?}");
    assert_eq!(completed, [true, false, true]);
    // 3: the failure made Periscope forget, so the hybrid is offered again.
    assert_eq!(agreed[2].as_deref(), Ok("X25519MLKEM768"), "{agreed:?}");
}
