//! Responses Periscope writes itself: error pages that say what failed, and the page
//! a browser gets when it asks the proxy directly.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use periscope_flow::Body;

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

/// What a browser pointed at the proxy itself sees: how to use it, and the CA.
pub fn proxy_info_page<B>(ca_pem: &[u8], path: &str) -> Response<ProxyBody<B>> {
    if path.starts_with("/periscope-ca-cert.pem") || path.starts_with("/cert/pem") {
        let mut response = Response::new(ProxyBody::generated(Bytes::copy_from_slice(ca_pem)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/x-x509-ca-cert".parse().expect("static"),
        );
        response.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"periscope-ca-cert.pem\""
                .parse()
                .expect("static"),
        );
        return response;
    }
    let text = "This is Periscope, an intercepting HTTP(S) proxy.\n\n\
        Point your client at it as an HTTP proxy (for example: curl -x http://127.0.0.1:8080 ...)\n\
        and trust its CA certificate, which you can download from /periscope-ca-cert.pem\n\
        (it is also in ~/.periscope/periscope-ca-cert.pem).\n";
    let mut response = Response::new(ProxyBody::generated(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().expect("static"),
    );
    response
}
