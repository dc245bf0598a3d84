//! Certificate requests held for the user (`--intercept-tls`), in process: a scripted
//! OpenSSL server on a thread renegotiates (or asks for post-handshake authentication)
//! on one kept-alive connection, a [`CertificateRequestHold`] hands the request to the
//! test, and another thread answers it the way the console would, after a while. Each
//! test states what the server received and what the flow's tap recorded.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openssl::ssl::{ErrorCode, SslVerifyMode, SslVersion};
use periscope_model::{Direction, FlowId, Initiator, TlsEventKind};
use periscope_tls::{
    CertificateRequestHold, ClientCertificate, ClientCertificates, ClientIdentity,
    HandshakeTimeouts, HeldCertificateRequest, PostHandshake, TlsError, TlsEventTap, TlsStream,
    UpstreamTarget, UpstreamTls, UpstreamTlsSettings,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;
use support::{finish_server_handshake, pki, server_acceptor, Pki, Upstream};

/// Holds requests while `holding` is set and hands them to the test; remembers every
/// `owners` it was asked about.
struct TestHold {
    holding: AtomicBool,
    asked: Mutex<Vec<Vec<FlowId>>>,
    requests: Mutex<mpsc::Sender<HeldCertificateRequest>>,
}

impl CertificateRequestHold for TestHold {
    fn should_hold(&self, owners: &[FlowId]) -> bool {
        self.asked.lock().unwrap().push(owners.to_vec());
        self.holding.load(Ordering::SeqCst)
    }

    fn held(&self, request: HeldCertificateRequest) {
        self.requests.lock().unwrap().send(request).unwrap();
    }
}

impl TestHold {
    fn new(holding: bool) -> (Arc<Self>, mpsc::Receiver<HeldCertificateRequest>) {
        let (sender, receiver) = mpsc::channel();
        let hold = TestHold {
            holding: AtomicBool::new(holding),
            asked: Mutex::default(),
            requests: Mutex::new(sender),
        };
        (Arc::new(hold), receiver)
    }

    fn hold(&self, holding: bool) {
        self.holding.store(holding, Ordering::SeqCst);
    }

    fn asked(&self) -> Vec<Vec<FlowId>> {
        self.asked.lock().unwrap().clone()
    }
}

/// What the user was shown of a held request.
#[derive(Debug)]
struct Shown {
    ca_names: Vec<String>,
    post_handshake: bool,
    owners: Vec<FlowId>,
    peer: String,
    configured: Option<String>,
}

/// How the user ends a held request.
enum Reply {
    Answer(ClientCertificate),
    Abandon,
}

/// Takes the next held request on another thread (as the console would), waits
/// `after`, then answers or drops it; returns what the request showed and when it
/// was answered.
fn reply_after(
    requests: mpsc::Receiver<HeldCertificateRequest>,
    after: Duration,
    reply: Reply,
) -> JoinHandle<(Shown, Instant, mpsc::Receiver<HeldCertificateRequest>)> {
    std::thread::spawn(move || {
        let request = requests
            .recv_timeout(Duration::from_secs(10))
            .expect("a request was held");
        let shown = Shown {
            ca_names: request.ca_names.clone(),
            post_handshake: request.post_handshake,
            owners: request.owners.clone(),
            peer: request.peer.clone(),
            configured: request.configured.clone(),
        };
        std::thread::sleep(after);
        let replied = Instant::now();
        match reply {
            Reply::Answer(choice) => request.answer(choice),
            Reply::Abandon => drop(request),
        }
        (shown, replied, requests)
    })
}

async fn join<T: Send + 'static>(thread: JoinHandle<T>) -> T {
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap()
}

/// Answers each line on one connection with the common name of the client
/// certificate it holds after doing what the line asks ("none" without one):
/// `renegotiate` (TLS 1.2, asking for a certificate), `pha` (TLS 1.3 post-handshake
/// authentication, waiting until a certificate came), `plain` (nothing).
/// `ask_first`: ask for a certificate in the first handshake too.
fn spawn_line_server(
    pki: &Pki,
    version: SslVersion,
    ask_first: bool,
) -> (u16, JoinHandle<Result<(), String>>) {
    let acceptor = server_acceptor(pki, version);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().map_err(|e| e.to_string())?;
        let mut ssl = openssl::ssl::Ssl::new(acceptor.context()).map_err(|e| e.to_string())?;
        if ask_first {
            ssl.set_verify(SslVerifyMode::PEER);
        }
        let mut stream = ssl.accept(tcp).map_err(|e| e.to_string())?;
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
                b"pha\n" => {
                    stream.set_verify_mode(SslVerifyMode::PEER);
                    stream
                        .request_post_handshake_certificate()
                        .map_err(|e| e.to_string())?;
                    stream.do_handshake().map_err(|e| e.to_string())?;
                    wait_for_client_certificate(&mut stream)?;
                }
                b"plain\n" => {}
                other => return Err(format!("unexpected {other:?}")),
            }
            let common_name = stream
                .ssl()
                .peer_certificate()
                .map(|c| periscope_tls::certs::common_name(c.subject_name()))
                .unwrap_or_else(|| "none".into());
            stream
                .write_all(format!("{common_name}\n").as_bytes())
                .map_err(|e| e.to_string())?;
        }
    });
    (port, handle)
}

/// After a post-handshake CertificateRequest: processes what the client sends until
/// its certificate is there (the client sends no data before it has our answer).
fn wait_for_client_certificate(
    stream: &mut openssl::ssl::SslStream<std::net::TcpStream>,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    stream
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut byte = [0u8; 1];
    while stream.ssl().peer_certificate().is_none() {
        if Instant::now() > deadline {
            return Err("no certificate came".into());
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

fn upstream(
    pki: &Pki,
    with_identity: bool,
    hold: &Arc<TestHold>,
    renegotiation_timeout: Duration,
) -> Upstream {
    let certificate_hold: Arc<dyn CertificateRequestHold> = hold.clone();
    let tls = UpstreamTls::new(UpstreamTlsSettings {
        verify: true,
        trusted_ca: Some(pki.server_ca_file.clone()),
        client_certificates: with_identity
            .then(|| Arc::new(ClientCertificates::load(&pki.client_identity_file).unwrap())),
        certificate_hold: Some(certificate_hold),
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

async fn connect(upstream: &Upstream, port: u16) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let target = UpstreamTarget {
        server_name: "localhost",
        send_sni: true,
        alpn: &[],
        post_quantum: true,
        peer_label: "test-server",
        timeouts: upstream.timeouts,
    };
    upstream.connect(tcp, &target).await.unwrap()
}

/// Sends `command`; returns the server's one-line answer.
async fn ask(tls: &mut TlsStream<TcpStream>, command: &str) -> std::io::Result<String> {
    tls.write_all(format!("{command}\n").as_bytes()).await?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        tls.read_exact(&mut byte).await?;
        if byte[0] == b'\n' {
            return Ok(String::from_utf8(answer).unwrap());
        }
        answer.push(byte[0]);
    }
}

fn kinds(tap: &TlsEventTap) -> Vec<TlsEventKind> {
    tap.take().into_iter().map(|(_, e)| e.kind).collect()
}

fn client_ca_name(pki: &Pki) -> String {
    periscope_tls::certs::format_name(pki.client_ca.certificate().subject_name())
}

fn subject_of(file: &Path) -> String {
    ClientIdentity::load(file).unwrap().subject
}

/// The callbacks ran on this thread (a current-thread runtime): whatever they called
/// into OpenSSL must not have left errors behind for the next caller.
#[track_caller]
fn assert_error_queue_empty() {
    let leftover = openssl::error::ErrorStack::get();
    assert!(leftover.errors().is_empty(), "{leftover}");
}

#[tokio::test]
async fn a_held_renegotiation_answered_with_the_configured_certificate_presents_it() {
    let pki = pki();
    let (port, server) = spawn_line_server(&pki, SslVersion::TLS1_2, false);
    let (hold, requests) = TestHold::new(true);
    let upstream = upstream(&pki, true, &hold, Duration::from_secs(5));
    let mut tls = connect(&upstream, port).await;
    let (flow, other_flow) = (FlowId::new(), FlowId::new());
    let tap = tls.state().tap_for(flow);
    let other_tap = tls.state().tap_for(other_flow);
    let unowned_tap = tls.state().tap();

    let user = reply_after(
        requests,
        Duration::from_millis(300),
        Reply::Answer(ClientCertificate::Configured),
    );
    let started = Instant::now();
    assert_eq!(
        ask(&mut tls, "renegotiate").await.unwrap(),
        "test-client.example"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let (shown, _, _) = join(user).await;

    let configured = subject_of(&pki.client_identity_file);
    assert_eq!(shown.ca_names, vec![client_ca_name(&pki)], "{shown:?}");
    assert!(!shown.post_handshake, "{shown:?}");
    assert_eq!(shown.owners, vec![flow, other_flow], "{shown:?}");
    assert_eq!(shown.peer, "test-server");
    assert_eq!(shown.configured.as_deref(), Some(configured.as_str()));
    assert_eq!(
        hold.asked(),
        vec![vec![flow, other_flow]],
        "asked once, although OpenSSL called back on every read while it waited"
    );
    assert_eq!(tls.state().owners(), vec![flow, other_flow]);

    let events = kinds(&tap);
    assert!(
        matches!(
            events.as_slice(),
            [
                TlsEventKind::HelloRequest { .. },
                TlsEventKind::RenegotiationStarted {
                    initiator: Initiator::Peer
                },
                TlsEventKind::CertificateRequested {
                    post_handshake: false,
                    ..
                },
                TlsEventKind::CertificateRequestHeld { answer: Some(answer) },
                TlsEventKind::CertificatePresented {
                    direction: Direction::Sent,
                    subject: Some(subject),
                },
                TlsEventKind::RenegotiationCompleted { .. },
            ] if answer == "the configured certificate" && *subject == configured
        ),
        "{events:?}"
    );
    assert_eq!(kinds(&other_tap), events, "every flow in flight sees it");
    assert_eq!(kinds(&unowned_tap), events);
    drop((other_tap, unowned_tap));
    assert_error_queue_empty();

    // The connection goes on as before.
    assert_eq!(ask(&mut tls, "plain").await.unwrap(), "test-client.example");
    assert!(kinds(&tap).is_empty());
    tls.shutdown().await.unwrap();
    drop(tls);
    join(server).await.unwrap();
}

#[tokio::test]
async fn a_held_renegotiation_answered_with_no_certificate_sends_none_although_one_is_configured() {
    let pki = pki();
    let (port, server) = spawn_line_server(&pki, SslVersion::TLS1_2, false);
    let (hold, requests) = TestHold::new(false);
    let upstream = upstream(&pki, true, &hold, Duration::from_secs(5));
    let mut tls = connect(&upstream, port).await;

    // Not held: the configured certificate, installed for this and later handshakes.
    let first = tls.state().tap_for(FlowId::new());
    assert_eq!(
        ask(&mut tls, "renegotiate").await.unwrap(),
        "test-client.example"
    );
    drop(first);

    hold.hold(true);
    let user = reply_after(
        requests,
        Duration::from_millis(100),
        Reply::Answer(ClientCertificate::None),
    );
    let second = tls.state().tap_for(FlowId::new());
    assert_eq!(ask(&mut tls, "renegotiate").await.unwrap(), "none");
    join(user).await;
    let events = kinds(&second);
    drop(second);
    assert!(
        events.contains(&TlsEventKind::CertificateRequestHeld {
            answer: Some("no certificate".into())
        }),
        "{events:?}"
    );
    assert!(
        events.contains(&TlsEventKind::CertificatePresented {
            direction: Direction::Sent,
            subject: None
        }),
        "{events:?}"
    );

    // Held no more: the configured certificate again.
    hold.hold(false);
    assert_eq!(
        ask(&mut tls, "renegotiate").await.unwrap(),
        "test-client.example"
    );
    assert_error_queue_empty();
    tls.shutdown().await.unwrap();
    drop(tls);
    join(server).await.unwrap();
}

#[tokio::test]
async fn a_held_renegotiation_answered_with_another_identity_presents_that_one() {
    let pki = pki();
    let other_file = pki.write_client_identity("other-client.example");
    let other = Arc::new(ClientIdentity::load(&other_file).unwrap());
    let (port, server) = spawn_line_server(&pki, SslVersion::TLS1_2, false);
    let (hold, requests) = TestHold::new(true);
    let upstream = upstream(&pki, true, &hold, Duration::from_secs(5));
    let mut tls = connect(&upstream, port).await;

    let user = reply_after(
        requests,
        Duration::from_millis(100),
        Reply::Answer(ClientCertificate::Identity(Arc::clone(&other))),
    );
    let tap = tls.state().tap_for(FlowId::new());
    assert_eq!(
        ask(&mut tls, "renegotiate").await.unwrap(),
        "other-client.example"
    );
    join(user).await;
    let events = kinds(&tap);
    drop(tap);
    assert!(
        events.contains(&TlsEventKind::CertificateRequestHeld {
            answer: Some(other_file.display().to_string())
        }),
        "{events:?}"
    );
    assert!(
        events.contains(&TlsEventKind::CertificatePresented {
            direction: Direction::Sent,
            subject: Some(other.subject.clone())
        }),
        "{events:?}"
    );

    // The next request, not held, gets the configured one back.
    hold.hold(false);
    assert_eq!(
        ask(&mut tls, "renegotiate").await.unwrap(),
        "test-client.example"
    );
    assert_error_queue_empty();
    tls.shutdown().await.unwrap();
    drop(tls);
    join(server).await.unwrap();
}

#[tokio::test]
async fn a_held_tls13_post_handshake_request_is_answered() {
    let pki = pki();
    let other_file = pki.write_client_identity("other-client.example");
    let other = Arc::new(ClientIdentity::load(&other_file).unwrap());
    let (port, server) = spawn_line_server(&pki, SslVersion::TLS1_3, false);
    let (hold, requests) = TestHold::new(true);
    let upstream = upstream(&pki, false, &hold, Duration::from_secs(5));
    let mut tls = connect(&upstream, port).await;
    let flow = FlowId::new();
    let tap = tls.state().tap_for(flow);

    let user = reply_after(
        requests,
        Duration::from_millis(300),
        Reply::Answer(ClientCertificate::Identity(Arc::clone(&other))),
    );
    assert_eq!(ask(&mut tls, "pha").await.unwrap(), "other-client.example");
    let (shown, _, _) = join(user).await;
    assert!(shown.post_handshake, "{shown:?}");
    assert_eq!(shown.owners, vec![flow]);
    assert_eq!(shown.configured, None, "no --client-certs identity");
    assert_eq!(shown.ca_names, vec![client_ca_name(&pki)]);

    let events = kinds(&tap);
    assert!(
        matches!(
            events.as_slice(),
            [
                TlsEventKind::CertificateRequested {
                    post_handshake: true,
                    ..
                },
                TlsEventKind::CertificateRequestHeld { answer: Some(_) },
                TlsEventKind::CertificatePresented {
                    subject: Some(subject),
                    ..
                },
            ] if *subject == other.subject
        ),
        "{events:?}"
    );
    assert!(!tls.state().certificate_request_held());
    assert!(!tls.state().handshake_in_progress());
    assert_eq!(
        ask(&mut tls, "plain").await.unwrap(),
        "other-client.example"
    );
    assert_error_queue_empty();
    tls.shutdown().await.unwrap();
    drop(tls);
    join(server).await.unwrap();
}

#[tokio::test]
async fn a_request_held_longer_than_the_renegotiation_timeout_still_completes() {
    let pki = pki();
    let (port, server) = spawn_line_server(&pki, SslVersion::TLS1_2, false);
    let (hold, requests) = TestHold::new(true);
    let upstream = upstream(&pki, true, &hold, Duration::from_secs(1));
    let mut tls = connect(&upstream, port).await;

    let user = reply_after(
        requests,
        Duration::from_secs(2),
        Reply::Answer(ClientCertificate::Configured),
    );
    let started = Instant::now();
    let answer = ask(&mut tls, "renegotiate").await;
    assert_eq!(answer.unwrap(), "test-client.example");
    assert!(started.elapsed() >= Duration::from_secs(2));
    join(user).await;
    assert_eq!(ask(&mut tls, "plain").await.unwrap(), "test-client.example");
    tls.shutdown().await.unwrap();
    drop(tls);
    join(server).await.unwrap();
}

#[tokio::test]
async fn an_abandoned_request_fails_the_read_at_once_with_its_own_error() {
    let pki = pki();
    let (port, server) = spawn_line_server(&pki, SslVersion::TLS1_2, false);
    let (hold, requests) = TestHold::new(true);
    let upstream = upstream(&pki, true, &hold, Duration::from_secs(5));
    let mut tls = connect(&upstream, port).await;
    let tap = tls.state().tap_for(FlowId::new());

    let user = reply_after(requests, Duration::from_millis(300), Reply::Abandon);
    let error = ask(&mut tls, "renegotiate").await.unwrap_err();
    let failed = Instant::now();
    let (_, abandoned, _) = join(user).await;
    assert!(
        failed.duration_since(abandoned) < Duration::from_millis(500),
        "failed {:?} after the request was dropped",
        failed.duration_since(abandoned)
    );
    let tls_error = TlsError::find_in(&error).expect("a TlsError explains the failure");
    assert!(
        matches!(
            tls_error,
            TlsError::CertificateRequestAbandoned {
                phase: periscope_tls::HandshakePhase::Renegotiation,
                ..
            }
        ),
        "{tls_error:?}"
    );
    let text = tls_error.to_string();
    assert!(
        text.contains("test-server") && text.contains("abandoned"),
        "{text}"
    );
    assert!(!tls_error.is_timeout());
    let events = kinds(&tap);
    assert!(
        events.contains(&TlsEventKind::CertificateRequestHeld { answer: None }),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|k| matches!(k, TlsEventKind::CertificatePresented { .. })),
        "nothing was presented: {events:?}"
    );
    assert_error_queue_empty();
    // The server was told: OpenSSL ends a handshake its certificate callback failed
    // with an internal_error alert.
    let server_error = join(server).await.unwrap_err();
    assert!(server_error.contains("internal error"), "{server_error}");
}

#[tokio::test]
async fn a_request_not_held_is_answered_at_once_as_without_a_hold() {
    let pki = pki();
    let (port, server) = spawn_line_server(&pki, SslVersion::TLS1_2, false);
    let (hold, requests) = TestHold::new(false);
    let upstream = upstream(&pki, true, &hold, Duration::from_secs(5));
    let mut tls = connect(&upstream, port).await;
    let flow = FlowId::new();
    let tap = tls.state().tap_for(flow);

    assert_eq!(
        ask(&mut tls, "renegotiate").await.unwrap(),
        "test-client.example"
    );
    assert_eq!(hold.asked(), vec![vec![flow]]);
    assert!(requests.try_recv().is_err(), "nothing was held");
    let events = kinds(&tap);
    assert!(
        matches!(
            events.as_slice(),
            [
                TlsEventKind::HelloRequest { .. },
                TlsEventKind::RenegotiationStarted { .. },
                TlsEventKind::CertificateRequested { .. },
                TlsEventKind::CertificatePresented {
                    subject: Some(_),
                    ..
                },
                TlsEventKind::RenegotiationCompleted { .. },
            ]
        ),
        "{events:?}"
    );
    assert_error_queue_empty();
    tls.shutdown().await.unwrap();
    drop(tls);
    join(server).await.unwrap();
}

#[tokio::test]
async fn the_first_handshakes_request_is_never_held() {
    let pki = pki();
    let (port, server) = spawn_line_server(&pki, SslVersion::TLS1_2, true);
    let (hold, requests) = TestHold::new(true);
    let upstream = upstream(&pki, true, &hold, Duration::from_secs(5));
    let mut tls = connect(&upstream, port).await;
    assert!(hold.asked().is_empty(), "the hold was not even asked");
    let first = tls.state().tap_for(FlowId::new());
    assert_eq!(ask(&mut tls, "plain").await.unwrap(), "test-client.example");
    let setup = kinds(&first);
    assert!(
        setup.contains(&TlsEventKind::CertificateRequested {
            ca_names: vec![client_ca_name(&pki)],
            post_handshake: false
        }),
        "{setup:?}"
    );
    drop(first);

    // The hold is live: the next request, a renegotiation's, waits for the user.
    let user = reply_after(
        requests,
        Duration::from_millis(100),
        Reply::Answer(ClientCertificate::None),
    );
    assert_eq!(ask(&mut tls, "renegotiate").await.unwrap(), "none");
    join(user).await;
    assert_eq!(hold.asked().len(), 1);
    tls.shutdown().await.unwrap();
    drop(tls);
    join(server).await.unwrap();
}

/// Answers every request inside `held`, before OpenSSL has even reported the
/// suspension: a console that decides without asking.
struct AnswerAtOnce(ClientCertificate);

impl CertificateRequestHold for AnswerAtOnce {
    fn should_hold(&self, _owners: &[FlowId]) -> bool {
        true
    }

    fn held(&self, request: HeldCertificateRequest) {
        request.answer(self.0.clone());
    }
}

#[tokio::test]
async fn a_request_answered_before_the_connection_waits_for_it_goes_on_at_once() {
    let pki = pki();
    let (port, server) = spawn_line_server(&pki, SslVersion::TLS1_2, false);
    let tls = UpstreamTls::new(UpstreamTlsSettings {
        verify: true,
        trusted_ca: Some(pki.server_ca_file.clone()),
        certificate_hold: Some(Arc::new(AnswerAtOnce(ClientCertificate::Identity(
            Arc::new(ClientIdentity::load(&pki.client_identity_file).unwrap()),
        )))),
        ..UpstreamTlsSettings::default()
    })
    .unwrap();
    let upstream = Upstream {
        tls,
        timeouts: HandshakeTimeouts::default(),
    };
    let mut tls = connect(&upstream, port).await;
    let tap = tls.state().tap_for(FlowId::new());
    assert_eq!(
        ask(&mut tls, "renegotiate").await.unwrap(),
        "test-client.example"
    );
    let events = kinds(&tap);
    assert!(
        events
            .iter()
            .any(|k| matches!(k, TlsEventKind::CertificateRequestHeld { answer: Some(_) })),
        "{events:?}"
    );
    assert_error_queue_empty();
    tls.shutdown().await.unwrap();
    drop(tls);
    join(server).await.unwrap();
}
