//! The only `unsafe` in Periscope's TLS: the parts of libssl the `openssl` crate does
//! not bind — renegotiation, KeyUpdate, post-handshake auth, the certificate callback,
//! and the info and message callbacks through which we see post-handshake events.
//!
//! Everything here is a thin, safe wrapper, private to the crate: other crates get
//! [`crate::PostHandshake`] and [`crate::alert::description`]. Functions that change
//! a connection take [`ExclusiveSsl`], which only this crate's types implement, so no
//! caller can hand libssl a pointer it made up. The callbacks find the connection's
//! [`TlsConnectionState`] through SSL ex_data and hand over to its safe methods;
//! a panic inside them is caught, because unwinding into C is undefined behaviour.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ssl::{Ssl, SslContextBuilder, SslOptions, SslRef, SslSessionRef, SslVerifyMode};
use openssl::stack::StackRef;
use openssl::x509::X509Name;
use openssl_sys as sys;

use crate::state::{CertificateCallback, HandshakeMessage, TlsConnectionState};

/// `SSL_OP_ALLOW_CLIENT_RENEGOTIATION`: OpenSSL 3 refuses client-initiated
/// renegotiation unless this is set (openssl-sys has no constant for it).
pub(crate) const SSL_OP_ALLOW_CLIENT_RENEGOTIATION: u64 = 1 << 8;

const SSL_CB_READ: c_int = 0x04;
const SSL_CB_WRITE: c_int = 0x08;
const SSL_CB_ALERT: c_int = 0x4000;
const SSL_CB_HANDSHAKE_START: c_int = 0x10;
const SSL_CB_HANDSHAKE_DONE: c_int = 0x20;
/// `SSL_CB_CONNECT_LOOP` (`SSL_ST_CONNECT | SSL_CB_LOOP`): a client's state machine is
/// about to move on.
const SSL_CB_CONNECT_LOOP: c_int = 0x1000 | 0x01;
/// `TLS_ST_CR_HELLO_REQ` in libssl's `OSSL_HANDSHAKE_STATE`: a client has just
/// processed a HelloRequest. The enum is public but not stable: OpenSSL 3.2 inserted
/// four certificate-compression states before it (41 in 3.0 and 3.1, 45 from 3.2 on),
/// so the value is that of the libssl running, not of the headers built against.
fn tls_st_cr_hello_req() -> c_int {
    const OPENSSL_3_2: u64 = 0x3020_0000;
    if u64::try_from(openssl::version::number()).unwrap_or(0) >= OPENSSL_3_2 {
        45
    } else {
        41
    }
}
const SSL3_RT_HANDSHAKE: c_int = 22;
/// `SSL_CTRL_GET_NEGOTIATED_GROUP`, behind the `SSL_get_negotiated_group` macro.
const SSL_CTRL_GET_NEGOTIATED_GROUP: c_int = 134;
const SSL_KEY_UPDATE_NOT_REQUESTED: c_int = 0;
const SSL_KEY_UPDATE_REQUESTED: c_int = 1;

type InfoCallback = unsafe extern "C" fn(ssl: *const sys::SSL, where_: c_int, ret: c_int);
type MsgCallback = unsafe extern "C" fn(
    write_p: c_int,
    version: c_int,
    content_type: c_int,
    buf: *const c_void,
    len: usize,
    ssl: *mut sys::SSL,
    arg: *mut c_void,
);
type CertCallback = unsafe extern "C" fn(ssl: *mut sys::SSL, arg: *mut c_void) -> c_int;

extern "C" {
    fn SSL_renegotiate(ssl: *mut sys::SSL) -> c_int;
    fn SSL_renegotiate_pending(ssl: *const sys::SSL) -> c_int;
    fn SSL_get_state(ssl: *const sys::SSL) -> c_int;
    fn SSL_key_update(ssl: *mut sys::SSL, update_type: c_int) -> c_int;
    fn SSL_verify_client_post_handshake(ssl: *mut sys::SSL) -> c_int;
    fn SSL_set_options(ssl: *mut sys::SSL, options: u64) -> u64;
    fn SSL_clear_options(ssl: *mut sys::SSL, options: u64) -> u64;
    #[cfg(test)]
    fn SSL_get_options(ssl: *const sys::SSL) -> u64;
    fn SSL_get_client_CA_list(ssl: *const sys::SSL) -> *mut sys::stack_st_X509_NAME;
    fn SSL_certs_clear(ssl: *mut sys::SSL);
    fn SSL_CTX_set_info_callback(ctx: *mut sys::SSL_CTX, cb: Option<InfoCallback>);
    fn SSL_CTX_set_msg_callback(ctx: *mut sys::SSL_CTX, cb: Option<MsgCallback>);
    fn SSL_CTX_set_cert_cb(ctx: *mut sys::SSL_CTX, cb: Option<CertCallback>, arg: *mut c_void);
    fn SSL_group_to_name(ssl: *mut sys::SSL, id: c_int) -> *const c_char;
}

/// Where a connection's state lives in its `SSL`.
fn state_index() -> openssl::ex_data::Index<Ssl, Arc<TlsConnectionState>> {
    static INDEX: OnceLock<openssl::ex_data::Index<Ssl, Arc<TlsConnectionState>>> = OnceLock::new();
    *INDEX.get_or_init(|| {
        // Allocating an ex_data index only fails when OpenSSL is out of memory; there
        // is no way to run without one.
        Ssl::new_ex_index().expect("OpenSSL could not allocate an ex_data index")
    })
}

/// Attaches `state` to `ssl`, where the callbacks will find it.
pub(crate) fn attach_state(ssl: &mut SslRef, state: Arc<TlsConnectionState>) {
    ssl.set_ex_data(state_index(), state);
}

pub(crate) fn state_of(ssl: &SslRef) -> Option<&Arc<TlsConnectionState>> {
    ssl.ex_data(state_index())
}

/// Makes every connection of `ctx` report handshakes, alerts, HelloRequests and
/// KeyUpdates to its [`TlsConnectionState`].
pub(crate) fn install_event_callbacks(ctx: &mut SslContextBuilder) {
    // SAFETY: the context pointer is valid for the builder's lifetime and the
    // callbacks have the exact signatures libssl expects.
    unsafe {
        SSL_CTX_set_info_callback(ctx.as_ptr(), Some(info_callback));
        SSL_CTX_set_msg_callback(ctx.as_ptr(), Some(msg_callback));
    }
}

/// Makes every connection of `ctx` ask its [`TlsConnectionState`] for a client
/// certificate whenever a server sends a CertificateRequest — in the first
/// handshake, in a renegotiation and in TLS 1.3 post-handshake authentication.
/// (`SSL_CTX_set_client_cert_cb` would only run once per connection.)
pub(crate) fn install_client_certificate_callback(ctx: &mut SslContextBuilder) {
    // SAFETY: as above; the callback ignores `arg`.
    unsafe {
        SSL_CTX_set_cert_cb(ctx.as_ptr(), Some(cert_callback), std::ptr::null_mut());
    }
}

/// Offers TLS 1.3 post-handshake authentication to servers (curl and browsers do;
/// Apache answers 403 to a client that does not).
pub(crate) fn enable_post_handshake_auth(ctx: &mut SslContextBuilder) {
    // SAFETY: valid context pointer.
    unsafe { sys::SSL_CTX_set_post_handshake_auth(ctx.as_ptr(), 1) }
}

/// Exclusive access to one connection's `SSL`. The `openssl` crate only lends a
/// stream's `SSL` by shared reference, but the calls below change its state, so they
/// require `&mut` of the owner: no other thread can be using the connection meanwhile.
/// Implemented only for types that own a live `SSL`; the pointer is never null.
pub(crate) trait ExclusiveSsl {
    fn ssl_ptr(&mut self) -> *mut sys::SSL;
}

impl ExclusiveSsl for SslRef {
    fn ssl_ptr(&mut self) -> *mut sys::SSL {
        self.as_ptr()
    }
}

impl<S> ExclusiveSsl for openssl::ssl::SslStream<S> {
    fn ssl_ptr(&mut self) -> *mut sys::SSL {
        self.ssl().as_ptr()
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite> ExclusiveSsl for tokio_openssl::SslStream<S> {
    fn ssl_ptr(&mut self) -> *mut sys::SSL {
        self.ssl().as_ptr()
    }
}

pub(crate) fn set_connection_options(ssl: &mut impl ExclusiveSsl, options: SslOptions) {
    // SAFETY: valid SSL pointer, exclusively borrowed; options are plain bits.
    unsafe {
        SSL_set_options(ssl.ssl_ptr(), options.bits());
    }
}

pub(crate) fn clear_connection_options(ssl: &mut impl ExclusiveSsl, options: SslOptions) {
    // SAFETY: valid SSL pointer, exclusively borrowed; options are plain bits.
    unsafe {
        SSL_clear_options(ssl.ssl_ptr(), options.bits());
    }
}

#[cfg(test)]
fn connection_options(ssl: &SslRef) -> SslOptions {
    // SAFETY: valid SSL pointer; reading the options changes nothing.
    SslOptions::from_bits_retain(unsafe { SSL_get_options(ssl.as_ptr()) })
}

/// Changes whether (and how strictly) this side asks the peer for a certificate in
/// the next handshake, keeping the verification callback the context set.
pub(crate) fn set_verify_mode(ssl: &mut impl ExclusiveSsl, mode: SslVerifyMode) {
    // SAFETY: valid SSL pointer, exclusively borrowed; a null callback keeps the
    // current one (documented behaviour of SSL_set_verify).
    unsafe { sys::SSL_set_verify(ssl.ssl_ptr(), mode.bits() as c_int, None) }
}

/// Removes every certificate, private key and chain this `SSL` holds (not its
/// context's), so the next CertificateRequest is answered with an empty Certificate
/// unless another identity is installed first.
pub(crate) fn clear_certificates(ssl: &mut impl ExclusiveSsl) {
    // SAFETY: valid SSL pointer, exclusively borrowed; frees only what the SSL owns.
    unsafe { SSL_certs_clear(ssl.ssl_ptr()) }
}

/// Offers `session` in the next handshake of `ssl` (a client connection not yet
/// started). The session must come from a connection of the same `SslContext`:
/// `UpstreamTls` keeps one cache per connector, and only its own connections' sessions
/// go into it.
pub(crate) fn offer_session(ssl: &mut SslRef, session: &SslSessionRef) -> Result<(), ErrorStack> {
    // SAFETY: the session was made by a connection of this SSL's context (see above);
    // SSL_set_session takes its own reference to it.
    unsafe { ssl.set_session(session) }
}

/// The key-exchange group the last handshake agreed on, by libssl's name for it
/// (`x25519`, `secp256r1`, `X25519MLKEM768`); `None` when it used none (TLS 1.2 with
/// RSA key exchange) or has not agreed on one yet.
pub(crate) fn negotiated_group(ssl: &SslRef) -> Option<String> {
    // SAFETY: valid SSL pointer; this control only reads the connection. It returns
    // a NID, or TLSEXT_nid_unknown with the IANA number for a group without one
    // (the ML-KEM hybrids), which is what SSL_group_to_name takes.
    let id = unsafe {
        sys::SSL_ctrl(
            ssl.as_ptr(),
            SSL_CTRL_GET_NEGOTIATED_GROUP,
            0,
            std::ptr::null_mut(),
        )
    };
    let id = c_int::try_from(id).ok().filter(|id| *id > 0)?;
    // SAFETY: valid SSL pointer; the name is a static string of libssl's group table
    // (or null), copied before returning.
    let name = unsafe { SSL_group_to_name(ssl.as_ptr(), id) };
    if name.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated, static (see above).
    Some(
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Schedules a renegotiation; it happens during the next read or write (a server
/// sends its HelloRequest on the next `do_handshake`).
pub(crate) fn renegotiate(ssl: &mut impl ExclusiveSsl) -> Result<(), ErrorStack> {
    // SAFETY: valid SSL pointer, exclusively borrowed.
    if unsafe { SSL_renegotiate(ssl.ssl_ptr()) } == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

/// True while a renegotiation this side asked for has not completed.
pub(crate) fn renegotiation_pending(ssl: &SslRef) -> bool {
    // SAFETY: valid SSL pointer; a read-only query.
    unsafe { SSL_renegotiate_pending(ssl.as_ptr()) == 1 }
}

/// True when the last message this client processed was a HelloRequest it acted on.
/// (OpenSSL also reports, through the message callback, HelloRequests it skips
/// because a handshake is already under way; those leave the state alone.)
pub(crate) fn hello_request_just_processed(ssl: &SslRef) -> bool {
    // SAFETY: valid SSL pointer; a read-only query.
    unsafe { SSL_get_state(ssl.as_ptr()) == tls_st_cr_hello_req() }
}

/// Schedules a TLS 1.3 KeyUpdate, sent with the next write.
pub(crate) fn key_update(
    ssl: &mut impl ExclusiveSsl,
    request_peer_update: bool,
) -> Result<(), ErrorStack> {
    let update_type = if request_peer_update {
        SSL_KEY_UPDATE_REQUESTED
    } else {
        SSL_KEY_UPDATE_NOT_REQUESTED
    };
    // SAFETY: valid SSL pointer, exclusively borrowed, and a documented update type.
    if unsafe { SSL_key_update(ssl.ssl_ptr(), update_type) } == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

/// As a TLS 1.3 server, schedules a post-handshake CertificateRequest.
pub(crate) fn request_post_handshake_certificate(
    ssl: &mut impl ExclusiveSsl,
) -> Result<(), ErrorStack> {
    // SAFETY: valid SSL pointer, exclusively borrowed.
    if unsafe { SSL_verify_client_post_handshake(ssl.ssl_ptr()) } == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

/// The CA names a server listed in its last CertificateRequest (as a client), or the
/// names this server will send (as a server).
pub(crate) fn client_ca_names(ssl: &SslRef) -> Vec<String> {
    // SAFETY: libssl returns a stack owned by the SSL (or null), valid until the
    // next handshake message; we copy the names out before returning.
    unsafe {
        let stack = SSL_get_client_CA_list(ssl.as_ptr());
        if stack.is_null() {
            return Vec::new();
        }
        let stack: &StackRef<X509Name> = StackRef::from_ptr(stack);
        stack.iter().map(crate::certs::format_name).collect()
    }
}

/// The libssl name of an alert (`handshake failure`, `certificate required`, ...).
pub(crate) fn alert_description(code: u8) -> String {
    // SAFETY: returns a pointer to a static string for any value.
    let text = unsafe { CStr::from_ptr(sys::SSL_alert_desc_string_long(c_int::from(code))) };
    let text = text.to_string_lossy();
    if text != "unknown" {
        return text.into_owned();
    }
    // OpenSSL 3.0 has no names for the alerts TLS 1.3 added.
    match code {
        crate::alert::MISSING_EXTENSION => "missing extension".into(),
        crate::alert::CERTIFICATE_REQUIRED => "certificate required".into(),
        crate::alert::NO_APPLICATION_PROTOCOL => "no application protocol".into(),
        _ => format!("alert {code}"),
    }
}

/// Why a callback could not hand over to the connection's state.
enum NotHandled {
    /// The `SSL` has no state attached (not one of Periscope's connections).
    NoState,
    /// The state's method panicked; the panic was caught.
    Panicked,
}

fn with_state<T>(
    ssl: *const sys::SSL,
    f: impl FnOnce(&mut SslRef, &Arc<TlsConnectionState>) -> T,
) -> Result<T, NotHandled> {
    if ssl.is_null() {
        return Err(NotHandled::NoState);
    }
    // SAFETY: libssl passes the SSL the callback runs for; it stays valid during the
    // call. We only read ex_data and call SslRef methods on it, like OpenSSL's own
    // callbacks do.
    let ssl = unsafe { SslRef::from_ptr_mut(ssl as *mut sys::SSL) };
    let Some(state) = state_of(ssl).cloned() else {
        return Err(NotHandled::NoState);
    };
    catch_unwind(AssertUnwindSafe(|| f(ssl, &state))).map_err(|_| {
        tracing::error!("panic inside a TLS callback was caught; the event is lost");
        NotHandled::Panicked
    })
}

unsafe extern "C" fn info_callback(ssl: *const sys::SSL, where_: c_int, ret: c_int) {
    let _ = with_state(ssl, |ssl, state| {
        if where_ == SSL_CB_CONNECT_LOOP {
            state.on_client_state_transition(ssl);
        }
        if where_ & SSL_CB_HANDSHAKE_START != 0 {
            state.on_handshake_start(ssl);
        }
        if where_ & SSL_CB_HANDSHAKE_DONE != 0 {
            state.on_handshake_done(ssl);
        }
        if where_ & SSL_CB_ALERT != 0 {
            let sent = where_ & SSL_CB_WRITE != 0;
            debug_assert!(sent || where_ & SSL_CB_READ != 0);
            let level = ((ret >> 8) & 0xff) as u8;
            let description = (ret & 0xff) as u8;
            state.on_alert(ssl, sent, level, description);
        }
    });
}

unsafe extern "C" fn msg_callback(
    write_p: c_int,
    _version: c_int,
    content_type: c_int,
    buf: *const c_void,
    len: usize,
    ssl: *mut sys::SSL,
    _arg: *mut c_void,
) {
    if content_type != SSL3_RT_HANDSHAKE || buf.is_null() || len == 0 {
        return;
    }
    // SAFETY: libssl passes `len` readable bytes at `buf` for the duration of the call.
    let bytes = unsafe { std::slice::from_raw_parts(buf as *const u8, len) };
    let Some(message) = HandshakeMessage::parse(bytes) else {
        return;
    };
    let _ = with_state(ssl, |ssl, state| {
        state.on_handshake_message(ssl, write_p == 1, message)
    });
}

/// OpenSSL's `cert_cb` (ssl/statem/statem_clnt.c, `tls_prepare_client_certificate`):
/// 1 continues the handshake with whatever certificate is installed, possibly none; 0
/// fails it with an internal_error alert; -1 suspends it (`SSL_ERROR_WANT_X509_LOOKUP`)
/// and the next `SSL_read`, `SSL_write` or `SSL_do_handshake` calls the callback again.
unsafe extern "C" fn cert_callback(ssl: *mut sys::SSL, _arg: *mut c_void) -> c_int {
    match with_state(ssl, |ssl, state| state.on_certificate_request(ssl)) {
        Ok(CertificateCallback::Continue) => 1,
        Ok(CertificateCallback::Suspend) => -1,
        Ok(CertificateCallback::Abort) => 0,
        // Not one of ours: present whatever its context set.
        Err(NotHandled::NoState) => 1,
        // What to present is unknown, and a held request may be half set up: failing
        // the handshake is the one answer that cannot be wrong.
        Err(NotHandled::Panicked) => 0,
    }
}

#[cfg(test)]
mod tests {
    use openssl::ssl::{SslContext, SslMethod};
    use openssl::x509::X509NameBuilder;

    use super::*;

    fn server_context() -> SslContext {
        SslContext::builder(SslMethod::tls_server())
            .unwrap()
            .build()
    }

    /// Whatever a failed call pushed onto this thread's OpenSSL error queue must
    /// have gone into its `Err`: a later, unrelated call would report it otherwise.
    #[track_caller]
    fn assert_error_queue_empty() {
        let left = ErrorStack::get();
        assert!(left.errors().is_empty(), "left on the queue: {left}");
    }

    #[test]
    fn a_connection_that_has_not_agreed_on_a_group_has_none() {
        let connection = Ssl::new(&server_context()).unwrap();
        assert_eq!(negotiated_group(&connection), None);
        assert_error_queue_empty();
    }

    #[test]
    fn options_change_on_one_connection_only() {
        let context = server_context();
        let mut changed = Ssl::new(&context).unwrap();
        let other = Ssl::new(&context).unwrap();
        set_connection_options(&mut *changed, SslOptions::NO_RENEGOTIATION);
        assert!(connection_options(&changed).contains(SslOptions::NO_RENEGOTIATION));
        assert!(!connection_options(&other).contains(SslOptions::NO_RENEGOTIATION));
        clear_connection_options(&mut *changed, SslOptions::NO_RENEGOTIATION);
        assert!(!connection_options(&changed).contains(SslOptions::NO_RENEGOTIATION));
    }

    #[test]
    fn verify_mode_is_set_for_the_next_handshake() {
        let mut ssl = Ssl::new(&server_context()).unwrap();
        let strict = SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT;
        set_verify_mode(&mut *ssl, strict);
        assert_eq!(ssl.verify_mode(), strict);
    }

    #[test]
    fn a_scheduled_renegotiation_is_pending() {
        let mut ssl = Ssl::new(&server_context()).unwrap();
        assert!(!renegotiation_pending(&ssl));
        renegotiate(&mut *ssl).unwrap();
        assert!(renegotiation_pending(&ssl));
        assert!(
            !hello_request_just_processed(&ssl),
            "scheduled here, not asked for by a HelloRequest"
        );
        assert_error_queue_empty();
    }

    #[test]
    fn a_refused_renegotiation_is_an_error_that_takes_its_queue_entries_with_it() {
        let mut ssl = Ssl::new(&server_context()).unwrap();
        set_connection_options(&mut *ssl, SslOptions::NO_RENEGOTIATION);
        let error = renegotiate(&mut *ssl).unwrap_err();
        assert!(
            error
                .errors()
                .iter()
                .any(|e| e.reason() == Some("no renegotiation")),
            "{error}"
        );
        assert!(!renegotiation_pending(&ssl));
        assert_error_queue_empty();
    }

    #[test]
    fn tls13_only_calls_fail_cleanly_before_a_tls13_handshake() {
        let mut ssl = Ssl::new(&server_context()).unwrap();
        assert!(key_update(&mut *ssl, true).is_err());
        assert_error_queue_empty();
        assert!(request_post_handshake_certificate(&mut *ssl).is_err());
        assert_error_queue_empty();
    }

    #[test]
    fn a_server_lists_the_client_cas_it_will_name() {
        let mut builder = SslContext::builder(SslMethod::tls_server()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "Test Client CA").unwrap();
        let mut names = openssl::stack::Stack::new().unwrap();
        names.push(name.build()).unwrap();
        builder.set_client_ca_list(names);
        let ssl = Ssl::new(&builder.build()).unwrap();
        assert_eq!(client_ca_names(&ssl), vec!["CN=Test Client CA".to_owned()]);

        let without = Ssl::new(&server_context()).unwrap();
        assert!(client_ca_names(&without).is_empty());
    }

    #[test]
    fn the_state_attached_to_a_connection_is_found_again() {
        let mut ssl = Ssl::new(&server_context()).unwrap();
        assert!(state_of(&ssl).is_none());
        let state = TlsConnectionState::upstream(None);
        attach_state(&mut ssl, Arc::clone(&state));
        assert!(state_of(&ssl).is_some_and(|found| Arc::ptr_eq(found, &state)));
    }
}
