//! The checks every request passes before a handler sees it, in this order:
//!
//! 1. `Host` names the API (DNS rebinding) → else 403;
//! 2. the TCP peer is not one of the proxy's own upstream connections (a proxy client
//!    asking Periscope to relay a request to the API) → else 403;
//! 3. a token or the session cookie → else 401 (the web UI's files, which hold no
//!    data, are served without: the page shows its login form);
//! 4. for anything that changes state (every method but GET, HEAD and OPTIONS, and the
//!    WebSocket handshake): an `Origin`, when present, of the API itself; a
//!    `Sec-Fetch-Site`, when present, of `same-origin` or `none`; and for a
//!    cookie-authenticated request, the XSRF token → else 403.
//!
//! Every answer, refusals included, gets headers that keep browsers from framing,
//! sniffing, caching or leaking it (the token may be in the URL).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::host::{check_host, origin_matches_host};
use crate::state::Shared;
use crate::ui;

pub async fn guard(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = match admit(&shared, peer, &request) {
        Ok(authenticated) => {
            let wants_xsrf_cookie = !shared.secrets.has_xsrf_cookie(request.headers());
            let mut response = next.run(request).await;
            let headers = response.headers_mut();
            // A browser that logged in with the printed URL gets the session cookie;
            // a cookie-authenticated one gets the XSRF cookie back if it lost it.
            if authenticated == Authenticated::QueryToken {
                headers.append(header::SET_COOKIE, shared.secrets.session_cookie());
            }
            if matches!(
                authenticated,
                Authenticated::QueryToken | Authenticated::Cookie
            ) && wants_xsrf_cookie
            {
                headers.append(header::SET_COOKIE, shared.secrets.xsrf_cookie());
            }
            response
        }
        Err(refusal) => {
            tracing::debug!(
                %peer,
                method = %request.method(),
                path = request.uri().path(),
                status = refusal.status.as_u16(),
                "control API refused a request: {}",
                refusal.message
            );
            refusal.into_response()
        }
    };
    protective_headers(response.headers_mut());
    response
}

fn admit(shared: &Shared, peer: SocketAddr, request: &Request) -> Result<Authenticated, ApiError> {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    check_host(host, request.uri(), shared.listen, &shared.allowed_hosts)
        .map_err(ApiError::forbidden)?;
    if shared
        .is_proxy_connection
        .as_ref()
        .is_some_and(|relayed| relayed(peer))
    {
        return Err(ApiError::forbidden(
            "the API does not answer requests relayed by Periscope's own proxy",
        ));
    }
    let query = request.uri().query();
    let authenticated = match shared.secrets.authenticate(headers, query) {
        Ok(authenticated) => authenticated,
        Err(_) if ui::is_public(shared, request.method(), request.uri().path(), headers) => {
            return Ok(Authenticated::Nobody)
        }
        Err(why) => return Err(ApiError::unauthorized(why)),
    };
    let websocket = is_websocket_handshake(headers);
    if changes_state(request.method()) || websocket {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            // check_host passed, so there is a Host header.
            if !origin_matches_host(origin, host.unwrap_or("")) {
                return Err(ApiError::forbidden(format!(
                    "cross-origin request refused (Origin {origin:?})"
                )));
            }
        }
        if let Some(site) = headers.get("sec-fetch-site") {
            if !matches!(site.to_str(), Ok("same-origin" | "none")) {
                return Err(ApiError::forbidden(
                    "cross-site request refused (Sec-Fetch-Site)",
                ));
            }
        }
        if authenticated == Authenticated::Cookie
            && !shared.secrets.xsrf_ok(headers, query, websocket)
        {
            return Err(ApiError::forbidden(
                "XSRF token missing or wrong: send the periscope-xsrf cookie's value as X-XSRF-Token",
            ));
        }
    }
    Ok(authenticated)
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn is_websocket_handshake(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

fn protective_headers(headers: &mut HeaderMap) {
    let defaults = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        // JSON needs nothing; content.data sets its own, stricter one.
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}
