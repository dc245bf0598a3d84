//! Post-handshake TLS, in process: a scripted OpenSSL server on a thread talks to
//! Periscope's `UpstreamTls` / `ClientTls` over loopback, and each test states the
//! exchange and the events Periscope recorded. The process-level tests repeat these
//! against Apache and `openssl s_server`; these pin down the FFI layer itself, through
//! the crate's public API only (the servers use [`PostHandshake`]).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openssl::ssl::{
    ClientHelloResponse, ErrorCode, SslConnector, SslMethod, SslVerifyMode, SslVersion,
};
use periscope_model::{Direction, Initiator, Leg, TlsEvent, TlsEventKind};
use periscope_tls::{
    alert, CertificateAuthority, ClientCertificates, ClientRenegotiation, ClientTls,
    ClientTlsSettings, HandshakeTimeouts, PostHandshake, TlsError, UpstreamTarget, UpstreamTls,
    UpstreamTlsSettings,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;
use support::{
    finish_server_handshake, pki, server_acceptor, server_acceptor_builder, Pki, Upstream,
};

/// What the scripted server does after reading the first request line.
#[derive(Clone, Copy, PartialEq)]
enum Script {
    Renegotiate { verify: SslVerifyMode },
    RenegotiateAndStall,
    PostHandshakeAuth { verify: SslVerifyMode },
    KeyUpdate { request_peer: bool },
}

/// Runs one scripted connection; returns what the server saw of the client's certificate.
fn spawn_server(
    pki: &Pki,
    version: SslVersion,
    script: Script,
) -> (u16, JoinHandle<Result<Option<String>, String>>) {
    let acceptor = server_acceptor(pki, version);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().map_err(|e| e.to_string())?;
        let mut stream = acceptor.accept(tcp).map_err(|e| e.to_string())?;
        let mut request = [0u8; 64];
        let n = stream.read(&mut request).map_err(|e| e.to_string())?;
        assert_eq!(&request[..n], b"request\n");
        match script {
            Script::Renegotiate { verify } => {
                stream.set_verify_mode(verify);
                stream.renegotiate().map_err(|e| e.to_string())?;
                stream.do_handshake().map_err(|e| e.to_string())?;
                finish_server_handshake(&mut stream)?;
            }
            Script::RenegotiateAndStall => {
                stream.renegotiate().map_err(|e| e.to_string())?;
                stream.do_handshake().map_err(|e| e.to_string())?;
                // Never read the ClientHello; wait for the client to give up.
                let mut sink = [0u8; 1024];
                while stream
                    .get_mut()
                    .read(&mut sink)
                    .map(|n| n > 0)
                    .unwrap_or(false)
                {}
                return Ok(None);
            }
            Script::PostHandshakeAuth { verify } => {
                stream.set_verify_mode(verify);
                stream
                    .request_post_handshake_certificate()
                    .map_err(|e| e.to_string())?;
                stream.do_handshake().map_err(|e| e.to_string())?;
                // The client's answer arrives with its next records.
                stream
                    .get_ref()
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let mut byte = [0u8; 1];
                match stream.ssl_peek(&mut byte) {
                    Ok(_) => {}
                    Err(e) if e.code() == ErrorCode::WANT_READ => {}
                    Err(e) => return Err(format!("server side failed: {e}")),
                }
                stream.get_ref().set_read_timeout(None).unwrap();
            }
            Script::KeyUpdate { request_peer } => {
                stream.key_update(request_peer).map_err(|e| e.to_string())?;
            }
        }
        let peer = stream
            .ssl()
            .peer_certificate()
            .map(|c| periscope_tls::certs::common_name(c.subject_name()));
        stream.write_all(b"response\n").map_err(|e| e.to_string())?;
        if let Script::KeyUpdate { request_peer: true } = script {
            // The client's own KeyUpdate rides on its next write.
            let n = stream.read(&mut request).map_err(|e| e.to_string())?;
            assert_eq!(&request[..n], b"again\n");
        }
        Ok(peer)
    });
    (port, handle)
}

fn upstream(pki: &Pki, with_identity: bool, renegotiation_timeout: Duration) -> Upstream {
    let tls = UpstreamTls::new(UpstreamTlsSettings {
        verify: true,
        trusted_ca: Some(pki.server_ca_file.clone()),
        client_certificates: with_identity
            .then(|| Arc::new(ClientCertificates::load(&pki.client_identity_file).unwrap())),
        ..UpstreamTlsSettings::default()
    })
    .unwrap();
    Upstream {
        tls,
        timeouts: HandshakeTimeouts {
            handshake: Duration::from_secs(5),
            renegotiation: renegotiation_timeout,
        },
    }
}

async fn exchange(
    upstream: &Upstream,
    port: u16,
) -> (Result<Vec<u8>, std::io::Error>, Vec<TlsEvent>) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = upstream
        .connect(
            tcp,
            &UpstreamTarget {
                server_name: "localhost",
                send_sni: true,
                alpn: &[],
                post_quantum: true,
                peer_label: "test-server",
                timeouts: upstream.timeouts,
            },
        )
        .await
        .unwrap();
    tls.write_all(b"request\n").await.unwrap();
    let mut response = vec![0u8; 9];
    let result = tls.read_exact(&mut response).await.map(|_| response);
    let events = tls
        .state()
        .take_events()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    (result, events)
}

fn kinds(events: &[TlsEvent]) -> Vec<TlsEventKind> {
    events.iter().map(|e| e.kind.clone()).collect()
}

#[tokio::test]
async fn server_renegotiation_with_certificate_request_is_answered_and_recorded() {
    let pki = pki();
    let (port, server) = spawn_server(
        &pki,
        SslVersion::TLS1_2,
        Script::Renegotiate {
            verify: SslVerifyMode::PEER,
        },
    );
    let (result, events) = exchange(&upstream(&pki, false, Duration::from_secs(5)), port).await;
    assert_eq!(result.unwrap(), b"response\n");
    assert_eq!(
        server.join().unwrap(),
        Ok(None),
        "no certificate was configured"
    );
    assert!(events.iter().all(|e| e.leg == Leg::Server));
    let kinds = kinds(&events);
    assert_eq!(
        kinds[0],
        TlsEventKind::HelloRequest {
            direction: Direction::Received
        }
    );
    assert_eq!(
        kinds[1],
        TlsEventKind::RenegotiationStarted {
            initiator: Initiator::Peer
        }
    );
    let ca_name = periscope_tls::certs::format_name(pki.client_ca.certificate().subject_name());
    assert_eq!(
        kinds[2],
        TlsEventKind::CertificateRequested {
            ca_names: vec![ca_name],
            post_handshake: false
        }
    );
    assert_eq!(
        kinds[3],
        TlsEventKind::CertificatePresented {
            direction: Direction::Sent,
            subject: None
        }
    );
    assert!(
        matches!(&kinds[4], TlsEventKind::RenegotiationCompleted { version, .. } if version == "TLSv1.2"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn configured_client_certificate_is_presented_in_a_renegotiation() {
    let pki = pki();
    let (port, server) = spawn_server(
        &pki,
        SslVersion::TLS1_2,
        Script::Renegotiate {
            verify: SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        },
    );
    let (result, events) = exchange(&upstream(&pki, true, Duration::from_secs(5)), port).await;
    assert_eq!(result.unwrap(), b"response\n");
    assert_eq!(
        server.join().unwrap(),
        Ok(Some("test-client.example".into()))
    );
    assert!(kinds(&events).iter().any(|k| matches!(
        k,
        TlsEventKind::CertificatePresented { subject: Some(s), .. } if s.contains("test-client.example")
    )));
}

#[tokio::test]
async fn required_certificate_without_one_fails_fast_with_the_accepted_cas() {
    let pki = pki();
    let (port, server) = spawn_server(
        &pki,
        SslVersion::TLS1_2,
        Script::Renegotiate {
            verify: SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        },
    );
    let started = Instant::now();
    let (result, _) = exchange(&upstream(&pki, false, Duration::from_secs(5)), port).await;
    let error = result.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let tls = TlsError::find_in(&error).expect("a TlsError explains the failure");
    let text = tls.to_string();
    assert!(
        matches!(tls, TlsError::ClientCertificateRequired { .. }),
        "{text}"
    );
    assert!(text.contains("renegotiation"), "{text}");
    assert!(text.contains("--client-certs"), "{text}");
    assert!(
        text.contains("CN=Periscope CA"),
        "names the accepted CA: {text}"
    );
    assert!(server.join().unwrap().is_err());
}

/// What a server that accepts resumption saw of one client's renegotiation.
#[derive(Debug)]
struct RenegotiationSeen {
    /// The session id length of each ClientHello, in order.
    client_hello_session_ids: Vec<usize>,
    resumed: bool,
    client_certificate: Option<String>,
}

/// A TLS 1.2 server with the defaults of most servers that are not Apache: session
/// tickets on, resumption allowed in a renegotiation. After the first request it
/// renegotiates with a CertificateRequest, answers, and reads one more line (a second
/// renegotiation the client started on its own would be a third ClientHello).
fn spawn_resuming_server(pki: &Pki) -> (u16, JoinHandle<Result<RenegotiationSeen, String>>) {
    let session_ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut builder = server_acceptor_builder(pki, SslVersion::TLS1_2);
    let seen = Arc::clone(&session_ids);
    builder.set_client_hello_callback(move |ssl, _alert| {
        let length = ssl.client_hello_session_id().map_or(0, <[u8]>::len);
        seen.lock().unwrap().push(length);
        Ok(ClientHelloResponse::SUCCESS)
    });
    let acceptor = builder.build();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().map_err(|e| e.to_string())?;
        let mut stream = acceptor.accept(tcp).map_err(|e| e.to_string())?;
        let mut line = [0u8; 64];
        let n = stream.read(&mut line).map_err(|e| e.to_string())?;
        assert_eq!(&line[..n], b"request\n");
        stream.set_verify_mode(SslVerifyMode::PEER);
        stream.renegotiate().map_err(|e| e.to_string())?;
        stream.do_handshake().map_err(|e| e.to_string())?;
        finish_server_handshake(&mut stream)?;
        let resumed = stream.ssl().session_reused();
        let client_certificate = stream
            .ssl()
            .peer_certificate()
            .map(|c| periscope_tls::certs::common_name(c.subject_name()));
        stream.write_all(b"response\n").map_err(|e| e.to_string())?;
        let n = stream.read(&mut line).map_err(|e| e.to_string())?;
        assert_eq!(&line[..n], b"again\n");
        let client_hello_session_ids = session_ids.lock().unwrap().clone();
        Ok(RenegotiationSeen {
            client_hello_session_ids,
            resumed,
            client_certificate,
        })
    });
    (port, handle)
}

/// The control: OpenSSL's own client answers a HelloRequest with an abbreviated
/// handshake that offers its session, and this server resumes it — no
/// CertificateRequest, no certificate, although the client had one to give.
#[test]
fn a_plain_openssl_client_resumes_its_session_when_this_server_renegotiates() {
    let pki = pki();
    let (port, server) = spawn_resuming_server(&pki);
    let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
    builder.set_ca_file(&pki.server_ca_file).unwrap();
    builder
        .set_certificate_chain_file(&pki.client_identity_file)
        .unwrap();
    builder
        .set_private_key_file(&pki.client_identity_file, openssl::ssl::SslFiletype::PEM)
        .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut stream = builder.build().connect("localhost", tcp).unwrap();
    stream.write_all(b"request\n").unwrap();
    let mut response = [0u8; 9];
    stream.read_exact(&mut response).unwrap();
    stream.write_all(b"again\n").unwrap();
    let seen = server.join().unwrap().unwrap();
    assert!(seen.resumed, "{seen:?}");
    assert_eq!(seen.client_certificate, None, "{seen:?}");
    assert_eq!(seen.client_hello_session_ids.len(), 2, "{seen:?}");
    assert!(seen.client_hello_session_ids[1] > 0, "{seen:?}");
}

#[tokio::test]
async fn a_renegotiation_the_server_asks_for_is_a_full_handshake_even_where_it_could_resume() {
    let pki = pki();
    let (port, server) = spawn_resuming_server(&pki);
    let upstream = upstream(&pki, true, Duration::from_secs(5));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let target = UpstreamTarget {
        server_name: "localhost",
        send_sni: true,
        alpn: &[],
        post_quantum: true,
        peer_label: "test-server",
        timeouts: upstream.timeouts,
    };
    let mut tls = upstream.connect(tcp, &target).await.unwrap();
    tls.write_all(b"request\n").await.unwrap();
    let mut response = [0u8; 9];
    tls.read_exact(&mut response).await.unwrap();
    assert_eq!(&response, b"response\n");
    tls.write_all(b"again\n").await.unwrap();
    tls.flush().await.unwrap();
    let seen = tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap()
        .unwrap();

    assert!(!seen.resumed, "{seen:?}");
    assert_eq!(
        seen.client_certificate.as_deref(),
        Some("test-client.example"),
        "{seen:?}"
    );
    assert_eq!(
        seen.client_hello_session_ids.len(),
        2,
        "one ClientHello for the first handshake, one for the renegotiation: {seen:?}"
    );
    assert_eq!(
        seen.client_hello_session_ids[1], 0,
        "the renegotiation offered a session id: {seen:?}"
    );
    let kinds = kinds(
        &tls.state()
            .take_events()
            .into_iter()
            .map(|(_, e)| e)
            .collect::<Vec<_>>(),
    );
    let renegotiations = kinds
        .iter()
        .filter(|k| matches!(k, TlsEventKind::RenegotiationStarted { .. }))
        .count();
    assert_eq!(renegotiations, 1, "{kinds:?}");
    // The callbacks ran on this thread (a current-thread runtime): whatever they
    // called into OpenSSL must not have left errors behind for the next caller.
    let leftover = openssl::error::ErrorStack::get();
    assert!(leftover.errors().is_empty(), "{leftover}");
}

/// Answers each line on one connection; renegotiates (asking for a certificate)
/// before answering `renegotiate`.
fn spawn_keep_alive_server(pki: &Pki) -> (u16, JoinHandle<Result<(), String>>) {
    let acceptor = server_acceptor(pki, SslVersion::TLS1_2);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().map_err(|e| e.to_string())?;
        let mut stream = acceptor.accept(tcp).map_err(|e| e.to_string())?;
        let mut line = [0u8; 64];
        loop {
            let n = stream.read(&mut line).map_err(|e| e.to_string())?;
            match &line[..n] {
                b"" => return Ok(()),
                b"renegotiate\n" => {
                    stream.set_verify_mode(SslVerifyMode::PEER);
                    stream.renegotiate().map_err(|e| e.to_string())?;
                    stream.do_handshake().map_err(|e| e.to_string())?;
                    finish_server_handshake(&mut stream)?;
                }
                b"plain\n" => {}
                other => return Err(format!("unexpected {other:?}")),
            }
            stream.write_all(b"answer\n").map_err(|e| e.to_string())?;
        }
    });
    (port, handle)
}

#[tokio::test]
async fn each_exchange_on_a_kept_alive_connection_gets_the_events_of_its_own_time() {
    let pki = pki();
    let (port, server) = spawn_keep_alive_server(&pki);
    let upstream = upstream(&pki, false, Duration::from_secs(5));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let target = UpstreamTarget {
        server_name: "localhost",
        send_sni: true,
        alpn: &[],
        post_quantum: true,
        peer_label: "test-server",
        timeouts: upstream.timeouts,
    };
    let mut tls = upstream.connect(tcp, &target).await.unwrap();
    let mut answer = [0u8; 7];

    let first = tls.state().tap();
    tls.write_all(b"plain\n").await.unwrap();
    tls.read_exact(&mut answer).await.unwrap();
    let first_events = first.take();
    drop(first);

    let second = tls.state().tap();
    tls.write_all(b"renegotiate\n").await.unwrap();
    tls.read_exact(&mut answer).await.unwrap();
    let second_events: Vec<TlsEvent> = second.take().into_iter().map(|(_, e)| e).collect();
    drop(second);

    tls.shutdown().await.unwrap();
    drop(tls);
    server.join().unwrap().unwrap();

    assert!(first_events.is_empty(), "{first_events:?}");
    let kinds = kinds(&second_events);
    assert!(
        matches!(
            kinds.as_slice(),
            [
                TlsEventKind::HelloRequest { .. },
                TlsEventKind::RenegotiationStarted {
                    initiator: Initiator::Peer
                },
                TlsEventKind::CertificateRequested { .. },
                TlsEventKind::CertificatePresented { subject: None, .. },
                TlsEventKind::RenegotiationCompleted { .. },
            ]
        ),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_renegotiation_that_never_completes_times_out() {
    let pki = pki();
    let (port, server) = spawn_server(&pki, SslVersion::TLS1_2, Script::RenegotiateAndStall);
    let started = Instant::now();
    let (result, _) = exchange(&upstream(&pki, false, Duration::from_millis(500)), port).await;
    let error = result.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    assert!(matches!(
        TlsError::find_in(&error),
        Some(TlsError::RenegotiationTimeout { .. })
    ));
    let _ = server.join();
}

#[tokio::test]
async fn tls13_post_handshake_certificate_request_is_answered() {
    let pki = pki();
    let (port, server) = spawn_server(
        &pki,
        SslVersion::TLS1_3,
        Script::PostHandshakeAuth {
            verify: SslVerifyMode::PEER,
        },
    );
    let (result, events) = exchange(&upstream(&pki, true, Duration::from_secs(5)), port).await;
    assert_eq!(result.unwrap(), b"response\n");
    assert_eq!(
        server.join().unwrap(),
        Ok(Some("test-client.example".into()))
    );
    let kinds = kinds(&events);
    assert!(
        kinds.iter().any(|k| matches!(
            k,
            TlsEventKind::CertificateRequested {
                post_handshake: true,
                ..
            }
        )),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| matches!(
        k,
        TlsEventKind::CertificatePresented {
            subject: Some(_),
            ..
        }
    )));
    assert!(!kinds
        .iter()
        .any(|k| matches!(k, TlsEventKind::RenegotiationStarted { .. })));
}

#[tokio::test]
async fn key_update_from_the_server_is_recorded_and_answered() {
    let pki = pki();
    let (port, server) = spawn_server(
        &pki,
        SslVersion::TLS1_3,
        Script::KeyUpdate { request_peer: true },
    );
    let upstream = upstream(&pki, false, Duration::from_secs(5));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let target = UpstreamTarget {
        server_name: "localhost",
        send_sni: true,
        alpn: &[],
        post_quantum: true,
        peer_label: "test-server",
        timeouts: upstream.timeouts,
    };
    let mut tls = upstream.connect(tcp, &target).await.unwrap();
    tls.write_all(b"request\n").await.unwrap();
    let mut response = [0u8; 9];
    tls.read_exact(&mut response).await.unwrap();
    tls.write_all(b"again\n").await.unwrap();
    tls.flush().await.unwrap();
    server.join().unwrap().unwrap();
    let kinds = kinds(
        &tls.state()
            .take_events()
            .into_iter()
            .map(|(_, e)| e)
            .collect::<Vec<_>>(),
    );
    assert!(
        kinds.contains(&TlsEventKind::KeyUpdate {
            direction: Direction::Received,
            update_requested: true
        }),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&TlsEventKind::KeyUpdate {
            direction: Direction::Sent,
            update_requested: false
        }),
        "{kinds:?}"
    );
}

/// A plain OpenSSL client for the client-leg tests: it renegotiates on demand.
fn client_leg_pair(
    policy: ClientRenegotiation,
) -> (
    tokio::task::JoinHandle<Vec<TlsEvent>>,
    u16,
    Arc<CertificateAuthority>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(CertificateAuthority::load_or_create(dir.path()).unwrap());
    let client_tls = ClientTls::new(ClientTlsSettings {
        client_renegotiation: policy,
        ..ClientTlsSettings::default()
    })
    .unwrap();
    let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = std_listener.local_addr().unwrap().port();
    std_listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
    let leaf = ca.leaf_for("localhost", &[]).unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = client_tls
            .accept(tcp, &leaf, None, false, HandshakeTimeouts::default())
            .await
            .unwrap();
        let mut line = vec![0u8; 6];
        // Echo lines until the client leaves; renegotiations happen inside these reads.
        while tls.read_exact(&mut line).await.is_ok() {
            if tls.write_all(&line).await.is_err() {
                break;
            }
        }
        tls.state()
            .take_events()
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    });
    (task, port, ca, dir)
}

fn renegotiating_client(port: u16, ca: &Path, renegotiations: usize) -> Result<(), String> {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
    builder.set_ca_file(ca).unwrap();
    builder
        .set_max_proto_version(Some(SslVersion::TLS1_2))
        .unwrap();
    let connector = builder.build();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut stream = connector
        .connect("localhost", tcp)
        .map_err(|e| e.to_string())?;
    for _ in 0..renegotiations {
        stream.renegotiate().map_err(|e| e.to_string())?;
        stream.do_handshake().map_err(|e| e.to_string())?;
        stream.write_all(b"ping!\n").map_err(|e| e.to_string())?;
        let mut echo = [0u8; 6];
        stream.read_exact(&mut echo).map_err(|e| e.to_string())?;
        assert_eq!(&echo, b"ping!\n");
    }
    Ok(())
}

#[tokio::test]
async fn client_initiated_renegotiation_is_accepted_and_recorded() {
    let (task, port, ca, _dir) = client_leg_pair(ClientRenegotiation::Allowed { per_minute: 10 });
    let ca_file = ca.cert_pem_path().to_owned();
    tokio::task::spawn_blocking(move || renegotiating_client(port, &ca_file, 2))
        .await
        .unwrap()
        .unwrap();
    let kinds = kinds(&task.await.unwrap());
    let started = kinds
        .iter()
        .filter(|k| {
            matches!(
                k,
                TlsEventKind::RenegotiationStarted {
                    initiator: Initiator::Peer
                }
            )
        })
        .count();
    let completed = kinds
        .iter()
        .filter(|k| matches!(k, TlsEventKind::RenegotiationCompleted { .. }))
        .count();
    assert_eq!((started, completed), (2, 2), "{kinds:?}");
}

#[tokio::test]
async fn client_renegotiation_over_the_rate_limit_is_refused() {
    let (task, port, ca, _dir) = client_leg_pair(ClientRenegotiation::Allowed { per_minute: 2 });
    let ca_file = ca.cert_pem_path().to_owned();
    let outcome = tokio::task::spawn_blocking(move || renegotiating_client(port, &ca_file, 3))
        .await
        .unwrap();
    assert!(outcome.is_err(), "the third renegotiation must fail");
    let kinds = kinds(&task.await.unwrap());
    assert!(
        kinds.iter().any(|k| matches!(k, TlsEventKind::RenegotiationRefused { reason } if reason.contains("2 renegotiations"))),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn client_renegotiation_can_be_switched_off() {
    let (task, port, ca, _dir) = client_leg_pair(ClientRenegotiation::Refused);
    let ca_file = ca.cert_pem_path().to_owned();
    let outcome = tokio::task::spawn_blocking(move || renegotiating_client(port, &ca_file, 1))
        .await
        .unwrap();
    assert!(outcome.is_err());
    let kinds = kinds(&task.await.unwrap());
    assert!(
        kinds.iter().any(|k| matches!(k, TlsEventKind::RenegotiationRefused { reason } if reason.contains("disabled"))),
        "{kinds:?}"
    );
}

#[test]
fn alert_names_come_from_openssl() {
    assert_eq!(alert::description(40), "handshake failure");
    assert_eq!(alert::description(116), "certificate required");
}
