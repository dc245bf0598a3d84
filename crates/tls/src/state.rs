//! What one TLS connection has lived through since its first handshake.
//!
//! OpenSSL reports handshakes, alerts and post-handshake messages through callbacks
//! (see `ffi`); they land here as [`TlsEvent`]s for the exchanges in flight (see
//! [`crate::events`]), and as the context an error message needs ("the server asked
//! for a client certificate from these CAs during a renegotiation, then sent
//! handshake_failure").

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use openssl::ssl::{SslOptions, SslRef, SslVersion};
use periscope_model::{Direction, FlowId, Initiator, Leg, Timestamp, TlsEvent, TlsEventKind};

use crate::alert;
use crate::client_certs::ClientIdentity;
use crate::events::{EventRouting, TlsEventTap};
use crate::ffi;
use crate::hold::{CertificateRequestHold, ClientCertificate, HeldCertificateRequest};

/// How the client leg treats renegotiations the client starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientRenegotiation {
    /// Allowed, at most this many per connection per minute (a renegotiation costs the
    /// server a full handshake, so unlimited ones are a cheap denial of service).
    Allowed { per_minute: u32 },
    /// Refused with a no_renegotiation alert.
    Refused,
}

impl Default for ClientRenegotiation {
    fn default() -> Self {
        ClientRenegotiation::Allowed { per_minute: 10 }
    }
}

/// A handshake message as far as event capture cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeMessage {
    HelloRequest,
    CertificateRequest,
    KeyUpdate { update_requested: bool },
    Finished,
    Other,
}

impl HandshakeMessage {
    /// Reads the type (and, for KeyUpdate, its flag) from a raw handshake message:
    /// one type byte, a 24-bit length, then the body.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let message = match *bytes.first()? {
            0 => HandshakeMessage::HelloRequest,
            13 => HandshakeMessage::CertificateRequest,
            20 => HandshakeMessage::Finished,
            24 => HandshakeMessage::KeyUpdate {
                update_requested: *bytes.get(4)? == 1,
            },
            _ => HandshakeMessage::Other,
        };
        Some(message)
    }
}

/// What the connection was doing when something went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakePhase {
    Initial,
    Renegotiation,
    PostHandshakeAuth,
    Established,
}

impl HandshakePhase {
    pub fn describe(self) -> &'static str {
        match self {
            HandshakePhase::Initial => "the TLS handshake",
            HandshakePhase::Renegotiation => "a TLS renegotiation",
            HandshakePhase::PostHandshakeAuth => "TLS 1.3 post-handshake authentication",
            HandshakePhase::Established => "an established TLS connection",
        }
    }
}

/// The last certificate request a server made, and what we answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRequestRecord {
    pub ca_names: Vec<String>,
    pub post_handshake: bool,
    pub phase: HandshakePhase,
    /// Subject of the certificate we presented; `None` when we had none to give.
    pub presented: Option<String>,
}

/// A TLS alert on this connection, as OpenSSL reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertRecord {
    /// `Received`: the peer sent it; `Sent`: Periscope did.
    pub direction: Direction,
    pub fatal: bool,
    /// The AlertDescription (RFC 8446 §6): 40 handshake_failure, 48 unknown_ca, ...
    pub code: u8,
    /// libssl's name for `code` ("handshake failure", "unknown CA", ...).
    pub description: String,
    pub phase: HandshakePhase,
}

/// What an error message needs to know about a failed connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailureContext {
    pub phase: Option<HandshakePhase>,
    pub certificate_request: Option<CertificateRequestRecord>,
    /// A certificate request held for the user was abandoned, which failed the
    /// handshake (see [`crate::hold`]).
    pub certificate_request_abandoned: bool,
    pub alert_received: Option<AlertRecord>,
    pub alert_sent: Option<AlertRecord>,
}

/// What OpenSSL's certificate callback tells the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CertificateCallback {
    /// Go on, with whatever certificate is installed (possibly none).
    Continue,
    /// Suspend the handshake until the callback is called again.
    Suspend,
    /// Fail the handshake.
    Abort,
}

/// Whether the connection's task can wait for the held certificate request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeldRequestWait {
    /// Still waiting for the user; the waker will be woken once it is answered.
    Waiting,
    /// Answered (or abandoned) already: drive the handshake again now.
    Settled,
    /// No request is held.
    NotHeld,
}

/// Shared by the connection's stream (which reads it) and OpenSSL's callbacks
/// (which write it).
pub struct TlsConnectionState {
    leg: Leg,
    client_identity: Option<Arc<ClientIdentity>>,
    client_renegotiation: ClientRenegotiation,
    certificate_hold: Option<Arc<dyn CertificateRequestHold>>,
    /// Who is at the other end, for held requests (`host:port`).
    peer: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    handshakes_completed: u32,
    tls13: bool,
    renegotiating: bool,
    hello_request_received: bool,
    post_handshake_auth: bool,
    /// The peer asked for a certificate, in any handshake (sticky).
    certificate_requested: bool,
    /// The identity the `SSL` holds now: libssl keeps an installed certificate for
    /// every later handshake, so it is installed once and replaced only when a held
    /// request's answer asks for another (or for none).
    installed_identity: Option<Arc<ClientIdentity>>,
    held: Option<HeldRequest>,
    /// How many requests were held on this connection: the last one's id.
    requests_held: u64,
    certificate_request_abandoned: bool,
    events: EventRouting,
    certificate_request: Option<CertificateRequestRecord>,
    alert_received: Option<AlertRecord>,
    alert_sent: Option<AlertRecord>,
    renegotiations_in_window: u32,
    window_started: Option<Instant>,
    refusing_until: Option<Instant>,
}

/// A certificate request held for the user.
struct HeldRequest {
    /// Which of the connection's held requests this is; answers carry it.
    id: u64,
    ca_names: Vec<String>,
    post_handshake: bool,
    phase: HandshakePhase,
    /// The task waiting for the answer, once it parked.
    waker: Option<Waker>,
    /// `None` until the user answers (or abandons the request).
    answer: Option<Answer>,
}

enum Answer {
    Present(ClientCertificate),
    Abandon,
}

const RATE_WINDOW: Duration = Duration::from_secs(60);

impl TlsConnectionState {
    /// State for Periscope's connection to a server: it answers certificate requests
    /// with `client_identity` (or an empty Certificate).
    pub fn upstream(client_identity: Option<Arc<ClientIdentity>>) -> Arc<Self> {
        Self::upstream_with_hold(client_identity, None, String::new())
    }

    /// Like [`TlsConnectionState::upstream`]; requests after the first handshake may
    /// be held for the user, as `hold` decides. `peer` names the server in them.
    pub(crate) fn upstream_with_hold(
        client_identity: Option<Arc<ClientIdentity>>,
        certificate_hold: Option<Arc<dyn CertificateRequestHold>>,
        peer: String,
    ) -> Arc<Self> {
        Arc::new(TlsConnectionState {
            leg: Leg::Server,
            client_identity,
            client_renegotiation: ClientRenegotiation::Refused,
            certificate_hold,
            peer,
            inner: Mutex::default(),
        })
    }

    /// State for a client's connection to Periscope.
    pub fn client_leg(client_renegotiation: ClientRenegotiation) -> Arc<Self> {
        Arc::new(TlsConnectionState {
            leg: Leg::Client,
            client_identity: None,
            client_renegotiation,
            certificate_hold: None,
            peer: "the client".to_owned(),
            inner: Mutex::default(),
        })
    }

    pub fn leg(&self) -> Leg {
        self.leg
    }

    /// Delivers every event of this connection to the returned tap while it lives
    /// (to every live tap, when exchanges share the connection). A tap made while
    /// none is live also receives what was recorded while none was: the connection's
    /// setup, or what happened on it while idle since the last exchange.
    pub fn tap(self: &Arc<Self>) -> TlsEventTap {
        let id = self.lock().events.add_tap(None);
        TlsEventTap::new(Arc::clone(self), id)
    }

    /// Like [`TlsConnectionState::tap`], for the exchange of flow `owner`: while the
    /// tap lives, the connection counts `owner` among the flows in flight on it (a
    /// held certificate request names them).
    pub fn tap_for(self: &Arc<Self>, owner: FlowId) -> TlsEventTap {
        let id = self.lock().events.add_tap(Some(owner));
        TlsEventTap::new(Arc::clone(self), id)
    }

    /// The flows whose taps are live, oldest first.
    pub fn owners(&self) -> Vec<FlowId> {
        self.lock().events.owners()
    }

    /// True while a certificate request waits for the user's answer: the handshake is
    /// suspended, and whatever waits for the server meanwhile waits for the user.
    pub fn certificate_request_held(&self) -> bool {
        self.lock()
            .held
            .as_ref()
            .is_some_and(|held| held.answer.is_none())
    }

    /// Events recorded while no tap was live and not yet handed to a later one, oldest
    /// first: after the last exchange, an idle connection's KeyUpdate, the alert that
    /// closed it.
    pub fn take_unattached(&self) -> Vec<(Timestamp, TlsEvent)> {
        self.lock().events.take_unattached()
    }

    /// How many unattached events could not be kept (the queue was full).
    pub fn unattached_dropped(&self) -> u64 {
        self.lock().events.unattached_dropped()
    }

    /// Events no tap received, oldest first: all of them on a connection nobody
    /// tapped, else the unattached ones. For callers that do not tap yet.
    pub fn take_events(&self) -> Vec<(Timestamp, TlsEvent)> {
        self.lock().events.take_untapped()
    }

    pub(crate) fn with_routing<T>(&self, f: impl FnOnce(&mut EventRouting) -> T) -> T {
        f(&mut self.lock().events)
    }

    /// True while a renegotiation or post-handshake authentication is under way.
    pub fn handshake_in_progress(&self) -> bool {
        let inner = self.lock();
        inner.renegotiating || inner.post_handshake_auth
    }

    /// Whether a session this connection received may be offered on another: not
    /// once the server asked for a certificate (in any handshake), renegotiated or
    /// started post-handshake authentication on it (see [`crate::resumption`]).
    pub(crate) fn session_may_be_reused(&self) -> bool {
        let inner = self.lock();
        !inner.certificate_requested
            && !inner.renegotiating
            && !inner.hello_request_received
            && !inner.post_handshake_auth
            && inner.handshakes_completed <= 1
    }

    #[cfg(test)]
    pub(crate) fn record_certificate_request_for_tests(&self) {
        self.lock().certificate_requested = true;
    }

    pub fn handshakes_completed(&self) -> u32 {
        self.lock().handshakes_completed
    }

    pub fn failure_context(&self) -> FailureContext {
        let inner = self.lock();
        FailureContext {
            phase: Some(inner.phase()),
            certificate_request: inner.certificate_request.clone(),
            certificate_request_abandoned: inner.certificate_request_abandoned,
            alert_received: inner.alert_received.clone(),
            alert_sent: inner.alert_sent.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a callback panicked mid-update; the data is
        // still the best record we have.
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn push(&self, inner: &mut Inner, kind: TlsEventKind) {
        inner.events.record(
            Timestamp::now(),
            TlsEvent {
                leg: self.leg,
                kind,
            },
        );
    }

    /// Records `event` as the callbacks would (for tests of the routing).
    #[cfg(test)]
    pub(crate) fn record(&self, event: TlsEvent) {
        self.lock().events.record(Timestamp::now(), event);
    }

    #[cfg(test)]
    pub(crate) fn record_hello_request_received(&self, event: TlsEvent) -> bool {
        self.lock().events.record_hello_request_received(event)
    }

    pub(crate) fn on_handshake_start(&self, _ssl: &mut SslRef) {
        let mut inner = self.lock();
        // TLS 1.3 has no renegotiation; its post-handshake messages are seen one by one.
        if inner.handshakes_completed == 0 || inner.tls13 {
            return;
        }
        inner.renegotiating = true;
        let initiator = match self.leg {
            Leg::Server if !inner.hello_request_received => Initiator::Periscope,
            _ => Initiator::Peer,
        };
        inner.hello_request_received = false;
        self.push(&mut inner, TlsEventKind::RenegotiationStarted { initiator });
    }

    /// Counts completed client renegotiations; once the limit is reached, the next ones
    /// in the window are refused. The option is set only after this one completed:
    /// OpenSSL checks it again while processing the ClientHello of the renegotiation
    /// under way, and would refuse the one that reached the limit.
    fn apply_client_rate_limit(&self, inner: &mut Inner, ssl: &mut SslRef) {
        let ClientRenegotiation::Allowed { per_minute } = self.client_renegotiation else {
            return;
        };
        let now = Instant::now();
        match inner.window_started {
            Some(start) if now.duration_since(start) < RATE_WINDOW => {}
            _ => {
                inner.window_started = Some(now);
                inner.renegotiations_in_window = 0;
            }
        }
        inner.renegotiations_in_window += 1;
        if inner.renegotiations_in_window >= per_minute {
            let start = inner.window_started.unwrap_or(now);
            inner.refusing_until = Some(start + RATE_WINDOW);
            ffi::set_connection_options(ssl, SslOptions::NO_RENEGOTIATION);
        }
    }

    /// Called each time OpenSSL's client state machine is about to move on; makes the
    /// renegotiation a server's HelloRequest asked for a full handshake.
    ///
    /// OpenSSL answers a HelloRequest with `SSL_renegotiate_abbreviated`: its
    /// ClientHello offers the current session (id and ticket), and a server that
    /// accepts resumption resumes — without the CertificateRequest it renegotiated
    /// for. `SSL_renegotiate` marks the handshake as a new session, so the ClientHello
    /// offers neither. It must be called here, after OpenSSL processed the
    /// HelloRequest and before it builds the ClientHello: OpenSSL reports
    /// HANDSHAKE_START before it has even read the HelloRequest, and a renegotiation
    /// requested then is one of the client's own, which the HelloRequest interrupts
    /// (tried: the connection failed with a no_renegotiation error).
    pub(crate) fn on_client_state_transition(&self, ssl: &mut SslRef) {
        // A HelloRequest that NO_RENEGOTIATION refused leaves nothing pending; one
        // that arrived during a handshake was skipped and is not the last processed.
        if !ffi::hello_request_just_processed(ssl) || !ffi::renegotiation_pending(ssl) {
            return;
        }
        // TLS 1.3 has no HelloRequest; SSL_renegotiate would only fail there.
        if ssl.version2() == Some(SslVersion::TLS1_3) {
            return;
        }
        if let Err(error) = ffi::renegotiate(ssl) {
            tracing::warn!(%error, "could not make the server's renegotiation a full handshake; it may resume the session");
        }
    }

    pub(crate) fn on_handshake_done(&self, ssl: &mut SslRef) {
        let mut inner = self.lock();
        inner.handshakes_completed += 1;
        inner.tls13 = ssl.version2() == Some(SslVersion::TLS1_3);
        if inner.renegotiating {
            inner.renegotiating = false;
            if self.leg == Leg::Client {
                self.apply_client_rate_limit(&mut inner, ssl);
            }
            let version = ssl.version_str().to_owned();
            let cipher = ssl
                .current_cipher()
                .map(|c| c.name().to_owned())
                .unwrap_or_default();
            self.push(
                &mut inner,
                TlsEventKind::RenegotiationCompleted { version, cipher },
            );
        }
    }

    pub(crate) fn on_handshake_message(
        &self,
        _ssl: &mut SslRef,
        sent: bool,
        message: HandshakeMessage,
    ) {
        let direction = if sent {
            Direction::Sent
        } else {
            Direction::Received
        };
        let mut inner = self.lock();
        match message {
            HandshakeMessage::HelloRequest => {
                let event = TlsEvent {
                    leg: self.leg,
                    kind: TlsEventKind::HelloRequest { direction },
                };
                if sent {
                    inner.events.record(Timestamp::now(), event);
                } else if !inner.events.record_hello_request_received(event) {
                    // Not explained by a start already recorded: the renegotiation
                    // it asks for starts next, and is the peer's.
                    inner.hello_request_received = true;
                }
            }
            HandshakeMessage::KeyUpdate { update_requested } => self.push(
                &mut inner,
                TlsEventKind::KeyUpdate {
                    direction,
                    update_requested,
                },
            ),
            HandshakeMessage::CertificateRequest => {
                if !sent {
                    inner.certificate_requested = true;
                }
                if !sent && inner.tls13 && inner.handshakes_completed > 0 {
                    inner.post_handshake_auth = true;
                }
            }
            HandshakeMessage::Finished => {
                // Our Finished ends post-handshake authentication.
                if sent && inner.post_handshake_auth {
                    inner.post_handshake_auth = false;
                }
            }
            HandshakeMessage::Other => {}
        }
    }

    pub(crate) fn on_alert(&self, _ssl: &mut SslRef, sent: bool, level: u8, code: u8) {
        if code == alert::CLOSE_NOTIFY {
            return;
        }
        let mut inner = self.lock();
        let direction = if sent {
            Direction::Sent
        } else {
            Direction::Received
        };
        let record = AlertRecord {
            direction,
            fatal: level == 2,
            code,
            description: ffi::alert_description(code),
            phase: inner.phase(),
        };
        self.push(
            &mut inner,
            TlsEventKind::Alert {
                direction,
                fatal: record.fatal,
                description: record.description.clone(),
            },
        );
        if sent && code == alert::NO_RENEGOTIATION {
            inner.renegotiating = false;
        }
        if sent && code == alert::NO_RENEGOTIATION && self.leg == Leg::Client {
            let reason = match self.client_renegotiation {
                ClientRenegotiation::Refused => {
                    "client renegotiation is disabled (--no-client-renegotiation)".to_owned()
                }
                ClientRenegotiation::Allowed { per_minute } => {
                    format!("more than {per_minute} renegotiations in a minute")
                }
            };
            self.push(&mut inner, TlsEventKind::RenegotiationRefused { reason });
            if inner
                .refusing_until
                .is_some_and(|until| Instant::now() >= until)
            {
                inner.refusing_until = None;
                inner.window_started = None;
                ffi::clear_connection_options(_ssl, SslOptions::NO_RENEGOTIATION);
            }
        }
        if sent {
            inner.alert_sent = Some(record);
        } else {
            inner.alert_received = Some(record);
        }
    }

    /// Called by OpenSSL whenever a server asks for our certificate, and again on
    /// every read or write while the request is held for the user.
    pub(crate) fn on_certificate_request(
        self: &Arc<Self>,
        ssl: &mut SslRef,
    ) -> CertificateCallback {
        let mut inner = self.lock();
        if let Some(mut held) = inner.held.take() {
            let Some(answer) = held.answer.take() else {
                inner.held = Some(held);
                return CertificateCallback::Suspend;
            };
            return self.apply_answer(ssl, &mut inner, held, answer);
        }
        let ca_names = ffi::client_ca_names(ssl);
        let post_handshake = inner.tls13 && inner.handshakes_completed > 0;
        if post_handshake {
            inner.post_handshake_auth = true;
        }
        let phase = inner.phase();
        self.push(
            &mut inner,
            TlsEventKind::CertificateRequested {
                ca_names: ca_names.clone(),
                post_handshake,
            },
        );
        let after_first_handshake = inner.handshakes_completed > 0;
        if let Some(hold) = self
            .certificate_hold
            .as_ref()
            .filter(|_| after_first_handshake)
        {
            let owners = inner.events.owners();
            // The hold runs code of the proxy's (it reads the user's options, hands the
            // request to the console), which may look at this connection: not under
            // our lock.
            drop(inner);
            if hold.should_hold(&owners) {
                let id = {
                    let mut inner = self.lock();
                    inner.requests_held += 1;
                    let id = inner.requests_held;
                    // In place before the hold sees the request: it may be answered at
                    // once, from another thread.
                    inner.held = Some(HeldRequest {
                        id,
                        ca_names: ca_names.clone(),
                        post_handshake,
                        phase,
                        waker: None,
                        answer: None,
                    });
                    id
                };
                hold.held(HeldCertificateRequest::new(
                    self,
                    id,
                    ca_names,
                    post_handshake,
                    owners,
                    self.peer.clone(),
                    self.client_identity.as_ref().map(|i| i.subject.clone()),
                ));
                return CertificateCallback::Suspend;
            }
            inner = self.lock();
        }
        let identity = self.client_identity.clone();
        self.present(ssl, &mut inner, identity, ca_names, post_handshake, phase)
    }

    /// The callback ran again for a held request the user answered: records how, and
    /// presents what they chose (its CertificateRequested was recorded when it came).
    fn apply_answer(
        &self,
        ssl: &mut SslRef,
        inner: &mut Inner,
        held: HeldRequest,
        answer: Answer,
    ) -> CertificateCallback {
        let choice = match answer {
            Answer::Abandon => {
                self.push(inner, TlsEventKind::CertificateRequestHeld { answer: None });
                inner.certificate_request_abandoned = true;
                return CertificateCallback::Abort;
            }
            Answer::Present(choice) => choice,
        };
        self.push(
            inner,
            TlsEventKind::CertificateRequestHeld {
                answer: Some(choice.describe()),
            },
        );
        let identity = match choice {
            ClientCertificate::Configured => self.client_identity.clone(),
            ClientCertificate::None => None,
            ClientCertificate::Identity(identity) => Some(identity),
        };
        self.present(
            ssl,
            inner,
            identity,
            held.ca_names,
            held.post_handshake,
            held.phase,
        )
    }

    /// Answers a certificate request with `identity` (an empty Certificate for
    /// `None`) and records it. Aborts the handshake only when the identity cannot be
    /// used.
    fn present(
        &self,
        ssl: &mut SslRef,
        inner: &mut Inner,
        identity: Option<Arc<ClientIdentity>>,
        ca_names: Vec<String>,
        post_handshake: bool,
        phase: HandshakePhase,
    ) -> CertificateCallback {
        let usable = install(ssl, inner, identity.as_ref());
        let presented = identity
            .filter(|_| usable)
            .map(|identity| identity.subject.clone());
        self.push(
            inner,
            TlsEventKind::CertificatePresented {
                direction: Direction::Sent,
                subject: presented.clone(),
            },
        );
        inner.certificate_request = Some(CertificateRequestRecord {
            ca_names,
            post_handshake,
            phase,
            presented,
        });
        if usable {
            CertificateCallback::Continue
        } else {
            CertificateCallback::Abort
        }
    }

    /// Records the user's answer to held request `id` (`None`: abandoned) and wakes
    /// the task waiting for it. An answer to a request no longer held is ignored.
    pub(crate) fn settle_held_request(&self, id: u64, choice: Option<ClientCertificate>) {
        let waker = {
            let mut inner = self.lock();
            let Some(held) = inner
                .held
                .as_mut()
                .filter(|held| held.id == id && held.answer.is_none())
            else {
                return;
            };
            held.answer = Some(match choice {
                Some(choice) => Answer::Present(choice),
                None => Answer::Abandon,
            });
            held.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Called by the stream when OpenSSL reported the suspended handshake: parks
    /// `waker` until the held request is answered, unless it already was.
    pub(crate) fn wait_for_held_request(&self, waker: &Waker) -> HeldRequestWait {
        let mut inner = self.lock();
        match inner.held.as_mut() {
            None => HeldRequestWait::NotHeld,
            Some(held) if held.answer.is_some() => HeldRequestWait::Settled,
            Some(held) => {
                if !held.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    held.waker = Some(waker.clone());
                }
                HeldRequestWait::Waiting
            }
        }
    }
}

impl Inner {
    fn phase(&self) -> HandshakePhase {
        if self.handshakes_completed == 0 {
            HandshakePhase::Initial
        } else if self.renegotiating {
            HandshakePhase::Renegotiation
        } else if self.post_handshake_auth {
            HandshakePhase::PostHandshakeAuth
        } else {
            HandshakePhase::Established
        }
    }
}

/// Makes `identity` (or none) the certificate the `SSL` presents; false when it
/// cannot be used.
fn install(ssl: &mut SslRef, inner: &mut Inner, identity: Option<&Arc<ClientIdentity>>) -> bool {
    let installed_already = match (identity, &inner.installed_identity) {
        (Some(wanted), Some(installed)) => Arc::ptr_eq(wanted, installed),
        (None, None) => true,
        _ => false,
    };
    if installed_already {
        return true;
    }
    // Certificates of another key type would stay beside the new one (libssl keeps
    // one per key type and picks by the server's signature algorithms): clear first.
    if inner.installed_identity.take().is_some() {
        ffi::clear_certificates(ssl);
    }
    let Some(identity) = identity else {
        return true;
    };
    if install_identity(ssl, identity) {
        inner.installed_identity = Some(Arc::clone(identity));
        true
    } else {
        // Whatever part of it was installed must not be presented later.
        ffi::clear_certificates(ssl);
        false
    }
}

fn install_identity(ssl: &mut SslRef, identity: &ClientIdentity) -> bool {
    let installed = ssl
        .set_certificate(&identity.certificate)
        .and_then(|()| ssl.set_private_key(&identity.key))
        .and_then(|()| {
            identity
                .chain
                .iter()
                .try_for_each(|cert| ssl.add_chain_cert(cert.clone()))
        });
    match installed {
        Ok(()) => true,
        Err(error) => {
            tracing::error!(%error, subject = %identity.subject, "could not use the client certificate");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_messages_are_parsed_from_their_type_byte() {
        assert_eq!(
            HandshakeMessage::parse(&[0, 0, 0, 0]),
            Some(HandshakeMessage::HelloRequest)
        );
        assert_eq!(
            HandshakeMessage::parse(&[24, 0, 0, 1, 1]),
            Some(HandshakeMessage::KeyUpdate {
                update_requested: true
            })
        );
        assert_eq!(
            HandshakeMessage::parse(&[24, 0, 0, 1, 0]),
            Some(HandshakeMessage::KeyUpdate {
                update_requested: false
            })
        );
        assert_eq!(
            HandshakeMessage::parse(&[24, 0, 0]),
            None,
            "truncated KeyUpdate"
        );
        assert_eq!(HandshakeMessage::parse(&[]), None);
        assert_eq!(
            HandshakeMessage::parse(&[13, 0, 0, 0]),
            Some(HandshakeMessage::CertificateRequest)
        );
    }
}
