//! Test harness for Periscope's process-level tests.
//!
//! Every `tests/*.rs` file that needs it says `mod support;`. Everything here is blocking
//! std code (threads and `std::process`): the peers are real programs (Apache httpd,
//! `openssl s_server`, curl, Python, Node.js) and the proxy is the real `periscope`
//! binary.
//!
//! Peers that are missing make a test FAIL with an install hint, never skip: run
//! `scripts/test.sh` once and it installs them.
//!
//! | item | what |
//! |---|---|
//! | [`free_port`] | a loopback port that was free a moment ago |
//! | [`test_pki`] / [`TestPki`] | test CA, server/client/untrusted/expired certificates |
//! | [`Periscope`] / [`PeriscopeBuilder`] | the proxy binary, started and parsed |
//! | [`Curl`] / [`CurlResult`] | the system curl with `-w '%{json}'` parsed |
//! | [`Apache`] / [`ApacheBuilder`] | Apache httpd + mod_ssl with the renegotiating locations |
//! | [`OpensslServer`] | `openssl s_server` driven through a FIFO (`R`, `r`, `k`, `K`, `c`) |
//! | [`NodePeer`], [`renegotiating_origin`] | Node.js peers (`tests/peers/*.mjs`) |
//! | [`TlsClient`] | a scripted OpenSSL client that can stall a renegotiation |
//! | [`TmuxConsole`] | a full-screen program in tmux: keys in, screen out |
//! | [`recorded`], [`recorded_at_least`], [`recorded_header`] | what a recording origin received |
//! | [`python`], [`require_tool`] | paths of required peers, or a panic telling how to get them |
//! | [`ControlApi`] | the control API of a running Periscope: `PUT /options` |
#![allow(dead_code, unused_imports)]

mod apache;
mod control_api;
mod curl;
mod node_peer;
mod openssl_server;
mod output;
mod periscope;
mod pki;
mod python_peer;
mod recording;
mod tls_client;
mod tmux;
mod tools;

pub use apache::{
    big_bin, big_bin_sha256, Apache, ApacheBuilder, Vhost, APACHE_TIMEOUT_SECS, CLIENT_CN,
    HELLO_BODY, INITIAL_TLS12_CIPHER, OAUTH400_JSON, RENEGOTIATED_ONLY_BODY,
    RENEGOTIATED_TLS12_CIPHER, REQUIRE_BODY, VEDAUTH_BODY,
};
pub use control_api::ControlApi;
pub use curl::{Curl, CurlResult};
pub use node_peer::{renegotiating_origin, NodePeer};
pub use openssl_server::{OpensslServer, OpensslServerBuilder};
pub use output::{LineMatcher, OutputLines, WaitError};
pub use periscope::{
    parse_listener, parse_listening_port, periscope_binary, Periscope, PeriscopeBuilder,
    LISTENING_MARKER,
};
pub use pki::{test_pki, TestPki};
pub use python_peer::{h2_origin, key_exchange_origin, python_websocket_echo_server, PythonPeer};
pub use recording::{recorded, recorded_at_least, recorded_header};
pub use tls_client::{HttpResponse, TlsClient, TlsClientBuilder};
pub use tmux::{TmuxConsole, SCREEN_TIMEOUT};
pub use tools::{
    entries_named, free_port, python, require_tool, send_signal, sha256_hex, wait_until,
    world_readable_tempdir,
};
