//! The web UI's files, when the binary gives them ([`crate::state::UiAssets`]): the
//! page at `/` for a browser (a request that accepts `text/html`; scripts still get
//! the JSON greeting) and its modules and styles under `/ui/`.
//!
//! Also the onboarding page and the CA certificate, when the binary gives them.
//!
//! These files hold no data, so the guard lets them through without a token: a
//! browser without the session cookie gets the page, whose first API call is
//! refused (401), and the page then shows its login form instead of flows. Every
//! other check (Host, the proxy's own connections) still applies.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::ApiError;
use crate::state::Shared;

/// What the UI's page may do: its own scripts, styles and API (the `/updates`
/// WebSocket is same-origin), images of bodies as `blob:`/`data:`; nothing inline,
/// nothing from elsewhere, never framed.
pub const UI_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// A browser asking for a page, which gets the UI rather than the JSON greeting.
pub fn wants_page(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// A request for one of the UI's files or the onboarding files, which the guard
/// serves without a token.
pub fn is_public(shared: &Shared, method: &Method, path: &str, headers: &HeaderMap) -> bool {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return false;
    }
    let ui =
        shared.ui.is_some() && (path.starts_with("/ui/") || (path == "/" && wants_page(headers)));
    let onboarding =
        shared.onboarding.is_some() && (path == "/onboarding" || path.starts_with("/cert/"));
    ui || onboarding
}

/// `GET /onboarding` and `GET /cert/{form}`: how to trust the CA, and the CA
/// certificate as PEM, DER or PKCS#12.
pub async fn onboarding(
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let files = shared
        .onboarding
        .clone()
        .ok_or_else(|| ApiError::not_found("no onboarding page in this build"))?;
    let path = match uri.path() {
        "/onboarding" => "/",
        other => other,
    };
    let (content_type, download, body) = files(path);
    let mut response = body.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Some(name) = download {
        if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    Ok(response)
}

/// `GET /`: the UI's page for a browser, else the API's name and version.
pub async fn index(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(ui) = shared.ui.filter(|_| wants_page(&headers)) {
        if let Some(page) = serve(ui, "index.html") {
            return page;
        }
    }
    Json(serde_json::json!({
        "name": "Periscope control API",
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// `GET /ui/{path}`: one of the UI's files.
pub async fn asset(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    shared
        .ui
        .and_then(|ui| serve(ui, &path))
        .ok_or_else(|| ApiError::not_found(format!("no UI file {path:?}")))
}

fn serve(ui: crate::state::UiAssets, path: &str) -> Option<Response> {
    let (content_type, body) = ui(path)?;
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(UI_CSP),
    );
    Some(response)
}
