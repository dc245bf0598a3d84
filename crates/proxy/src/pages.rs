//! Responses Periscope writes itself: error pages that say what failed, and the page
//! a browser gets when it asks the proxy directly.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use periscope_flow::Body;
use periscope_tls::{CertificateAuthority, CertificateForm};

use crate::body::ProxyBody;

/// A plain-text error page. `X-Periscope-Error` lets scripts tell our pages from the
/// server's.
pub fn error_response<B>(
    status: StatusCode,
    summary: &str,
    detail: &str,
) -> Response<ProxyBody<B>> {
    let text = error_text(status, summary, detail);
    let length = text.len();
    let mut response = Response::new(ProxyBody::generated(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().expect("static"),
    );
    headers.insert(header::CONTENT_LENGTH, length.into());
    headers.insert("x-periscope-error", "1".parse().expect("static"));
    response
}

pub fn error_text(status: StatusCode, summary: &str, detail: &str) -> String {
    format!(
        "{} {}\n\n{summary}\n\n{detail}\n\n-- Periscope\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

/// The flow's record of a generated response.
pub fn recorded_response<B>(
    response: &Response<ProxyBody<B>>,
    text: &[u8],
) -> periscope_flow::Response {
    periscope_flow::Response {
        status: response.status().as_u16(),
        reason: response
            .status()
            .canonical_reason()
            .unwrap_or("")
            .to_owned(),
        http_version: "HTTP/1.1".to_owned(),
        stream_id: None,
        headers: crate::headers::record_headers(response.headers()),
        body: Body::complete(Bytes::copy_from_slice(text)),
        trailers: None,
        generated: true,
    }
}

/// A file of the onboarding pages: the page, or the CA certificate in one form.
pub struct OnboardingFile {
    pub content_type: &'static str,
    /// Sent as an attachment under this name (the certificates).
    pub download_name: Option<&'static str>,
    pub body: Vec<u8>,
}

/// The onboarding file at `path`: `/cert/pem`, `/cert/cer`, `/cert/p12` (also as
/// `/periscope-ca-cert.{pem,cer,p12}`) are the CA certificate as PEM, DER and
/// key-less PKCS#12; anything else is the page that says how to install it, per
/// platform, with the commands naming `proxy`, the address clients use. Served by the
/// proxy (below) and, through the binary, by the web UI.
pub fn onboarding_file(
    ca: &CertificateAuthority,
    path: &str,
    proxy: std::net::SocketAddr,
) -> OnboardingFile {
    let certificate = match path.trim_end_matches('/') {
        "/periscope-ca-cert.pem" | "/cert/pem" => Some((
            CertificateForm::Pem,
            "periscope-ca-cert.pem",
            "application/x-x509-ca-cert",
        )),
        "/periscope-ca-cert.cer" | "/cert/cer" => Some((
            CertificateForm::Der,
            "periscope-ca-cert.cer",
            "application/pkix-cert",
        )),
        "/periscope-ca-cert.p12" | "/cert/p12" => Some((
            CertificateForm::Pkcs12,
            "periscope-ca-cert.p12",
            "application/x-pkcs12",
        )),
        _ => None,
    };
    if let Some((form, name, content_type)) = certificate {
        // Encoding a certificate the CA loaded cannot fail short of memory; the page
        // is answered then.
        if let Ok(body) = ca.certificate_as(form) {
            return OnboardingFile {
                content_type,
                download_name: Some(name),
                body,
            };
        }
    }
    // A proxy listening on every address is reached on this machine at loopback.
    let ip = match proxy.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let page = ONBOARDING_PAGE
        .replace(
            "{{PROXY}}",
            &std::net::SocketAddr::new(ip, proxy.port()).to_string(),
        )
        .replace("{{PROXY_HOST}}", &ip.to_string())
        .replace("{{PROXY_PORT}}", &proxy.port().to_string());
    OnboardingFile {
        content_type: "text/html; charset=utf-8",
        download_name: None,
        body: page.into_bytes(),
    }
}

/// What a browser pointed at the proxy itself (or at `http://periscope/` through it,
/// as mitmproxy's `mitm.it`) sees: [`onboarding_file`].
pub fn proxy_info_page<B>(
    ca: &CertificateAuthority,
    path: &str,
    proxy: std::net::SocketAddr,
) -> Response<ProxyBody<B>> {
    let file = onboarding_file(ca, path, proxy);
    let mut response = Response::new(ProxyBody::generated(Bytes::from(file.body)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        file.content_type.parse().expect("static"),
    );
    if let Some(name) = file.download_name {
        headers.insert(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\"")
                .parse()
                .expect("a file name"),
        );
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        ONBOARDING_CSP.parse().expect("static"),
    );
    response
}

/// The onboarding page has one inline style sheet and nothing else.
pub const ONBOARDING_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";

/// How to trust Periscope's CA, per platform.
const ONBOARDING_PAGE: &str = include_str!("onboarding.html");
