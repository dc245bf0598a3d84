//! Every security rule: tokens, the browser's cookies and XSRF token, Origin,
//! Sec-Fetch-Site, Host (DNS rebinding) and the proxy's own connections.

use std::sync::Arc;

use http::{header, Method, StatusCode};

use crate::support::{Call, Setup, TestApi};

#[tokio::test]
async fn without_a_token_everything_is_401_in_json() {
    let api = TestApi::start().await;
    for path in ["/", "/flows", "/options", "/nothing", "/updates"] {
        let reply = api.send(api.anonymous(Method::GET, path), "").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            reply.error().contains("authentication required"),
            "{}",
            reply.error()
        );
        assert!(reply
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer"));
    }
    let post = api
        .send(api.anonymous(Method::POST, "/flows/kill"), "")
        .await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);
    assert!(api.control.calls().is_empty());
}

#[tokio::test]
async fn a_wrong_token_is_401_however_it_is_sent() {
    let api = TestApi::start().await;
    let wrong_bearer = api.anonymous(Method::GET, "/flows").header(
        header::AUTHORIZATION,
        "Bearer 0123456789abcdef0123456789abcdef",
    );
    assert_eq!(
        api.send(wrong_bearer, "").await.status,
        StatusCode::UNAUTHORIZED
    );
    let basic = api
        .anonymous(Method::GET, "/flows")
        .header(header::AUTHORIZATION, format!("Basic {}", api.token));
    assert_eq!(api.send(basic, "").await.status, StatusCode::UNAUTHORIZED);
    let wrong_query = api.anonymous(Method::GET, "/flows?token=nope");
    let reply = api.send(wrong_query, "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "wrong token");
    assert!(reply.set_cookies().is_empty());
    let right_query = api.anonymous(Method::GET, &format!("/flows?token={}", api.token));
    assert_eq!(api.send(right_query, "").await.status, StatusCode::OK);
}

/// The `name=value` part of each Set-Cookie, joined as a Cookie header.
fn cookie_header(set_cookies: &[String]) -> String {
    set_cookies
        .iter()
        .map(|c| c.split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ")
}

fn xsrf_value(set_cookies: &[String], port: u16) -> String {
    let prefix = format!("periscope-xsrf-{port}=");
    set_cookies
        .iter()
        .find_map(|c| c.split(';').next().unwrap().strip_prefix(&prefix))
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_browser_logs_in_with_the_url_and_then_needs_the_xsrf_token_to_change_things() {
    let api = TestApi::start().await;
    let port = api.addr.port();
    let login = api
        .send(
            api.anonymous(Method::GET, &format!("/?token={}", api.token)),
            "",
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    let set_cookies = login.set_cookies();
    let session = set_cookies
        .iter()
        .find(|c| c.starts_with(&format!("periscope-auth-{port}=")))
        .expect("a session cookie");
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    assert!(!session.contains(&api.token), "the cookie is not the token");
    let cookies = cookie_header(&set_cookies);
    let xsrf = xsrf_value(&set_cookies, port);

    let read = api
        .send(
            api.anonymous(Method::GET, "/flows")
                .header(header::COOKIE, &cookies),
            "",
        )
        .await;
    assert_eq!(read.status, StatusCode::OK);

    let no_xsrf = api
        .send(
            api.anonymous(Method::POST, "/flows/resume")
                .header(header::COOKIE, &cookies),
            "",
        )
        .await;
    assert_eq!(no_xsrf.status, StatusCode::FORBIDDEN);
    assert!(no_xsrf.error().contains("XSRF"), "{}", no_xsrf.error());
    let wrong_xsrf = api
        .send(
            api.anonymous(Method::POST, "/flows/resume")
                .header(header::COOKIE, &cookies)
                .header("x-xsrf-token", "0000"),
            "",
        )
        .await;
    assert_eq!(wrong_xsrf.status, StatusCode::FORBIDDEN);
    assert!(api.control.calls().is_empty());

    let same_origin = api
        .send(
            api.anonymous(Method::POST, "/flows/resume")
                .header(header::COOKIE, &cookies)
                .header("x-xsrf-token", &xsrf)
                .header(header::ORIGIN, format!("http://{}", api.addr))
                .header("sec-fetch-site", "same-origin"),
            "",
        )
        .await;
    assert_eq!(same_origin.status, StatusCode::OK);
    assert_eq!(api.control.calls(), vec![Call::ResumeAll]);

    let stale = api
        .send(
            api.anonymous(Method::GET, "/flows")
                .header(header::COOKIE, format!("periscope-auth-{port}=0123")),
            "",
        )
        .await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn cross_origin_and_cross_site_requests_that_change_state_are_403() {
    let api = TestApi::start().await;
    let cross_origin = api
        .request(Method::POST, "/flows/kill")
        .header(header::ORIGIN, "http://evil.example");
    let reply = api.send(cross_origin, "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.error().contains("cross-origin"), "{}", reply.error());
    let other_port = api
        .request(
            Method::DELETE,
            &format!("/flows/{}", periscope_model::FlowId::new()),
        )
        .header(header::ORIGIN, "http://127.0.0.1:1");
    assert_eq!(api.send(other_port, "").await.status, StatusCode::FORBIDDEN);
    let opaque = api
        .request(Method::POST, "/flows/kill")
        .header(header::ORIGIN, "null");
    assert_eq!(api.send(opaque, "").await.status, StatusCode::FORBIDDEN);
    let cross_site = api
        .request(Method::POST, "/flows/kill")
        .header("sec-fetch-site", "cross-site");
    assert_eq!(api.send(cross_site, "").await.status, StatusCode::FORBIDDEN);
    assert!(api.control.calls().is_empty());

    // Reading is not state-changing: an Origin alone does not refuse it (the
    // browser keeps the answer from the other site without CORS headers).
    let read = api
        .request(Method::GET, "/options")
        .header(header::ORIGIN, "http://evil.example");
    let reply = api.send(read, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_host_that_is_not_the_apis_own_is_refused_even_with_the_token() {
    let api = TestApi::start().await;
    let rebound = api
        .request(Method::GET, "/flows")
        .header(header::HOST, format!("evil.example:{}", api.addr.port()));
    let reply = api.send(rebound, "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.error().contains("DNS rebinding"), "{}", reply.error());
    let localhost = api
        .request(Method::GET, "/flows")
        .header(header::HOST, format!("localhost:{}", api.addr.port()));
    assert_eq!(api.send(localhost, "").await.status, StatusCode::OK);
}

#[tokio::test]
async fn requests_the_proxy_relays_from_its_own_connections_are_refused() {
    let api = TestApi::start_with(Setup {
        is_proxy_connection: Some(Arc::new(|peer| peer.ip().is_loopback())),
        ..Setup::default()
    })
    .await;
    let reply = api.get("/flows").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.error().contains("relayed"), "{}", reply.error());
}

#[tokio::test]
async fn every_answer_keeps_browsers_from_framing_sniffing_caching_or_leaking_it() {
    let api = TestApi::start().await;
    let ok = api.get("/flows").await;
    let refused = api.send(api.anonymous(Method::GET, "/flows"), "").await;
    for reply in [&ok, &refused] {
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(reply.header("x-frame-options"), Some("DENY"));
        assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert!(reply.header("content-security-policy").is_some());
    }
    assert!(
        ok.set_cookies().is_empty(),
        "scripts with a Bearer token get no cookies"
    );
}
