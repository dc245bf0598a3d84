//! Periscope's control API: flows, intercept actions and options over HTTP, and live
//! updates over a WebSocket, as JSON in mitmweb's shapes, so tooling written for
//! mitmweb ports easily. The running proxy serves it on `--web-host`/`--web-port`
//! (127.0.0.1:8081 by default); `crates/api/README.md` documents every endpoint and
//! the flow JSON.
//!
//! ```no_run
//! # async fn run(state: periscope_api::ApiState) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! let listen = listener.local_addr()?;
//! if !periscope_api::is_loopback_only(&listen) {
//!     eprintln!("warning: the control API listens on {listen}, beyond this machine");
//! }
//! println!("control API: {}", periscope_api::web_url(listen, Some(&state.token)));
//! periscope_api::serve(listener, state).await
//! # }
//! ```
//!
//! Module by module: `guard` (every request's checks, with `host` and `auth`), `flows`
//! (reading), `actions` (changing), `options`, `updates` (the WebSocket), `export`,
//! `ui` (the web UI's files and the onboarding page, when the binary gives them),
//! `session` (session files in and out),
//! `flow_json` (the JSON shape), `error`.

mod actions;
mod auth;
mod error;
mod export;
mod flow_json;
mod flows;
mod guard;
mod host;
mod options;
mod session;
mod state;
mod ui;
mod updates;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::ApiError;

pub use auth::random_token;
pub use export::{ExportFormat, FlowExporter};
pub use flow_json::{flow_json, Detail};
pub use state::{ApiState, OnboardingFiles, ProxyConnectionCheck, UiAssets};
pub use ui::UI_CSP;

/// The largest request body read (a `PUT /flows/{id}` may carry a whole body, base64).
const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: TcpListener, state: ApiState) -> std::io::Result<()> {
    serve_until(listener, state, std::future::pending()).await
}

/// Serves the API until `shutdown` completes; then open WebSockets are closed (1001)
/// and requests under way finish.
pub async fn serve_until(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listen = listener.local_addr()?;
    let (stopping, stop_signal) = watch::channel(false);
    let shared = Arc::new(state::Shared::new(state, listen, stop_signal));
    let app = router(shared).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Tell the WebSockets, which would otherwise keep the server open.
            let _ = stopping.send(true);
        })
        .await
}

fn router(shared: Arc<state::Shared>) -> Router {
    Router::new()
        .route("/", get(ui::index))
        .route("/ui/{*path}", get(ui::asset))
        .route("/onboarding", get(ui::onboarding))
        .route("/cert/{form}", get(ui::onboarding))
        .route("/clear", post(actions::clear))
        .route("/flows", get(flows::list))
        .route("/flows/count", get(flows::count))
        .route("/flows/resume", post(actions::resume_all))
        .route("/flows/kill", post(actions::kill_all))
        .route("/flows/dump", get(session::save).post(session::open))
        .route(
            "/flows/{id}",
            get(flows::get).put(actions::edit).delete(actions::delete),
        )
        .route(
            "/flows/{id}/request/content.data",
            get(flows::request_content),
        )
        .route(
            "/flows/{id}/response/content.data",
            get(flows::response_content),
        )
        .route("/flows/{id}/resume", post(actions::resume))
        .route("/flows/{id}/kill", post(actions::kill))
        .route("/flows/{id}/replay", post(actions::replay))
        .route("/flows/{id}/duplicate", post(actions::duplicate))
        .route("/flows/{id}/revert", post(actions::revert))
        .route(
            "/flows/{id}/client-certificate",
            post(actions::client_certificate),
        )
        .route(
            "/flows/{id}/websocket/decision",
            post(actions::websocket_decision),
        )
        .route(
            "/flows/{id}/websocket/inject",
            post(actions::websocket_inject),
        )
        .route("/flows/{id}/export/{format}", get(export::export))
        .route("/events", get(flows::events))
        .route("/options", get(options::get).put(options::put))
        .route("/updates", get(updates::updates))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        // Outermost: no request reaches a handler (or learns which routes exist)
        // before the guard has passed it.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            guard::guard,
        ))
        .with_state(shared)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method",
    )
}

/// True when only this machine can reach an API listening on `listen`. The binary
/// warns otherwise: the token is then all that stands between the network and the
/// flows (which hold cookies and credentials), and it travels in clear HTTP.
pub fn is_loopback_only(listen: &SocketAddr) -> bool {
    listen.ip().is_loopback()
}

/// The URL to print at start: opening it in a browser logs in (`?token=`), e.g.
/// `http://127.0.0.1:8081/?token=…`. Without a token (it came from `--web-password`,
/// which is not printed, as mitmweb does not) the bare address. An API listening on
/// every address is reached through loopback.
pub fn web_url(listen: SocketAddr, token: Option<&str>) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let address = SocketAddr::new(ip, listen.port());
    match token {
        Some(token) => {
            let token: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
            format!("http://{address}/?token={token}")
        }
        None => format!("http://{address}/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_url_logs_in_through_a_reachable_address() {
        let url = web_url("127.0.0.1:8081".parse().unwrap(), Some("abc"));
        assert_eq!(url, "http://127.0.0.1:8081/?token=abc");
        let url = web_url("0.0.0.0:8081".parse().unwrap(), Some("a b&c"));
        assert_eq!(url, "http://127.0.0.1:8081/?token=a+b%26c");
        let url = web_url("[::]:8081".parse().unwrap(), Some("t"));
        assert_eq!(url, "http://[::1]:8081/?token=t");
        let url = web_url("127.0.0.1:8081".parse().unwrap(), None);
        assert_eq!(url, "http://127.0.0.1:8081/");
    }

    #[test]
    fn loopback_only_is_loopback_addresses() {
        assert!(is_loopback_only(&"127.0.0.1:8081".parse().unwrap()));
        assert!(is_loopback_only(&"[::1]:8081".parse().unwrap()));
        assert!(!is_loopback_only(&"0.0.0.0:8081".parse().unwrap()));
        assert!(!is_loopback_only(&"192.168.1.2:8081".parse().unwrap()));
    }
}
