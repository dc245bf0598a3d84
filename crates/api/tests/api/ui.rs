//! The web UI's files: served to anyone who may reach the API (they hold no data),
//! with the UI's Content-Security-Policy; everything else still needs the token.

use http::{header, Method, StatusCode};

use crate::support::{sample_flow, Setup, TestApi};

const PAGE: &[u8] = b"<!doctype html><title>Periscope</title>";

fn files(path: &str) -> Option<(&'static str, &'static [u8])> {
    match path {
        "index.html" => Some(("text/html; charset=utf-8", PAGE)),
        "app.js" => Some(("text/javascript; charset=utf-8", b"export {};")),
        _ => None,
    }
}

async fn with_ui() -> TestApi {
    TestApi::start_with(Setup {
        ui: Some(files),
        ..Setup::default()
    })
    .await
}

#[tokio::test]
async fn a_browser_without_the_token_gets_the_page_and_its_files_but_no_data() {
    let api = with_ui().await;
    api.record(&[sample_flow("a.example", "/secret", 200, 1)]);

    let page = api
        .send(
            api.anonymous(Method::GET, "/")
                .header(header::ACCEPT, "text/html,application/xhtml+xml"),
            "",
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(&page.body[..], PAGE);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        page.set_cookies().is_empty(),
        "no cookie for a request that proved nothing"
    );

    let module = api.send(api.anonymous(Method::GET, "/ui/app.js"), "").await;
    assert_eq!(module.status, StatusCode::OK);
    assert_eq!(
        module.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let missing = api
        .send(api.anonymous(Method::GET, "/ui/nope.js"), "")
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Data and the JSON greeting still need the token.
    for path in ["/", "/flows", "/flows/count", "/options"] {
        let refused = api.send(api.anonymous(Method::GET, path), "").await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(!String::from_utf8_lossy(&refused.body).contains("secret"));
    }
    let refused = api
        .send(
            api.anonymous(Method::GET, "/flows")
                .header(header::ACCEPT, "text/html"),
            "",
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // Only reading: a POST under /ui/ is not let through.
    let post = api
        .send(api.anonymous(Method::POST, "/ui/app.js"), "")
        .await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_printed_url_serves_the_page_and_logs_the_browser_in() {
    let api = with_ui().await;
    let path = format!("/?token={}", api.token);
    let page = api
        .send(
            api.anonymous(Method::GET, &path)
                .header(header::ACCEPT, "text/html"),
            "",
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(&page.body[..], PAGE);
    let cookies = page.set_cookies();
    assert!(
        cookies.iter().any(|c| c.starts_with("periscope-auth-")),
        "{cookies:?}"
    );
    assert!(
        cookies.iter().any(|c| c.starts_with("periscope-xsrf-")),
        "{cookies:?}"
    );
    // A script asking for JSON with the token still gets the greeting.
    let greeting = api.get("/").await;
    assert_eq!(greeting.json()["name"], "Periscope control API");
}

#[tokio::test]
async fn without_a_ui_nothing_is_served_without_the_token() {
    let api = TestApi::start().await;
    let page = api
        .send(
            api.anonymous(Method::GET, "/")
                .header(header::ACCEPT, "text/html"),
            "",
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let file = api.send(api.anonymous(Method::GET, "/ui/app.js"), "").await;
    assert_eq!(file.status, StatusCode::UNAUTHORIZED);
    let with_token = api.get("/ui/app.js").await;
    assert_eq!(with_token.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_onboarding_page_and_the_ca_files_are_served_without_a_token() {
    let api = TestApi::start_with(Setup {
        onboarding: Some(std::sync::Arc::new(|path: &str| match path {
            "/cert/pem" => (
                "application/x-x509-ca-cert".to_owned(),
                Some("periscope-ca-cert.pem".to_owned()),
                b"-----BEGIN CERTIFICATE-----".to_vec(),
            ),
            _ => (
                "text/html; charset=utf-8".to_owned(),
                None,
                b"<h1>trust</h1>".to_vec(),
            ),
        })),
        ..Setup::default()
    })
    .await;
    let page = api
        .send(api.anonymous(Method::GET, "/onboarding"), "")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(&page.body[..], b"<h1>trust</h1>");
    let pem = api.send(api.anonymous(Method::GET, "/cert/pem"), "").await;
    assert_eq!(pem.status, StatusCode::OK);
    assert_eq!(
        pem.header("content-type"),
        Some("application/x-x509-ca-cert")
    );
    assert_eq!(
        pem.header("content-disposition"),
        Some("attachment; filename=\"periscope-ca-cert.pem\"")
    );
    // Only these: the rest still needs the token.
    let flows = api.send(api.anonymous(Method::GET, "/flows"), "").await;
    assert_eq!(flows.status, StatusCode::UNAUTHORIZED);
    let without = TestApi::start().await;
    let refused = without
        .send(without.anonymous(Method::GET, "/onboarding"), "")
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}
