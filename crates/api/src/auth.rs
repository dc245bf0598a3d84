//! Who may use the API: the token (`?token=` or `Authorization: Bearer`), the session
//! cookie a browser gets when it opens `/?token=…`, and the XSRF token that
//! cookie-authenticated requests must repeat in a header.
//!
//! The cookies hold random values made at start, not the token: a cookie that leaks
//! says nothing about a `--web-password`, and a restart signs every browser out, as in
//! mitmweb.

use axum::http::{header, HeaderMap, HeaderValue};
use cookie::{Cookie, SameSite};
use subtle::ConstantTimeEq;

/// A header a browser's page sets from the XSRF cookie; `X-XSRFToken` is what
/// mitmweb's front end (Tornado) sends, accepted too so its code ports as it is.
pub const XSRF_HEADERS: [&str; 2] = ["x-xsrf-token", "x-xsrftoken"];

/// The query parameter that carries the XSRF token where a header cannot: a browser's
/// WebSocket handshake.
pub const XSRF_QUERY: &str = "xsrf_token";

/// 16 random bytes from the operating system, as 32 hex digits (mitmweb's
/// `token_hex(16)`).
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    // Without an OS random source there is no safe token to make: better not to start.
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn same_secret(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// How a request proved it may use the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authenticated {
    /// `Authorization: Bearer <token>`: a script.
    Bearer,
    /// `?token=<token>`: a browser opening the printed URL, or a script.
    QueryToken,
    /// The session cookie: a browser, which a page elsewhere can make send requests,
    /// hence the XSRF token for anything that changes state.
    Cookie,
    /// Nothing: a file of the web UI, which holds no data (the login page).
    Nobody,
}

/// The API's secrets and the names its cookies go by.
pub struct Secrets {
    token: String,
    session: String,
    xsrf: String,
    session_cookie: String,
    xsrf_cookie: String,
}

impl Secrets {
    /// Cookie names carry the port: cookies are not kept apart by port, and two
    /// Periscopes on one machine must not overwrite each other's.
    pub fn new(token: String, port: u16) -> Self {
        Secrets {
            token,
            session: random_token(),
            xsrf: random_token(),
            session_cookie: format!("periscope-auth-{port}"),
            xsrf_cookie: format!("periscope-xsrf-{port}"),
        }
    }

    /// Who the request is, or why it is refused. A token that is given must be right,
    /// even when a good cookie comes with it.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Authenticated, String> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let value = value.to_str().unwrap_or("");
            let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err("only Authorization: Bearer <token> is accepted".to_owned());
            }
            return if same_secret(token.trim(), &self.token) {
                Ok(Authenticated::Bearer)
            } else {
                Err("wrong token".to_owned())
            };
        }
        if let Some(token) = query_param(query, "token") {
            return if same_secret(&token, &self.token) {
                Ok(Authenticated::QueryToken)
            } else {
                Err("wrong token".to_owned())
            };
        }
        match cookie_value(headers, &self.session_cookie) {
            Some(value) if same_secret(&value, &self.session) => Ok(Authenticated::Cookie),
            Some(_) => Err("the session cookie is out of date (Periscope restarted?): open the URL with ?token= again".to_owned()),
            None => Err("authentication required: open the URL Periscope printed (with ?token=), or send Authorization: Bearer <token>".to_owned()),
        }
    }

    /// True when a cookie-authenticated request carries the XSRF token: in a header
    /// (or, for a WebSocket handshake, in the query) and in its cookie, both right.
    pub fn xsrf_ok(&self, headers: &HeaderMap, query: Option<&str>, websocket: bool) -> bool {
        let from_header = XSRF_HEADERS
            .iter()
            .find_map(|name| headers.get(*name))
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let given = match from_header {
            Some(value) => Some(value),
            None if websocket => query_param(query, XSRF_QUERY),
            None => None,
        };
        let cookie = cookie_value(headers, &self.xsrf_cookie);
        match (given, cookie) {
            (Some(given), Some(cookie)) => {
                same_secret(&given, &self.xsrf) && same_secret(&cookie, &self.xsrf)
            }
            _ => false,
        }
    }

    /// True when the request already holds the current XSRF cookie.
    pub fn has_xsrf_cookie(&self, headers: &HeaderMap) -> bool {
        cookie_value(headers, &self.xsrf_cookie)
            .is_some_and(|value| same_secret(&value, &self.xsrf))
    }

    /// The session cookie: HttpOnly (no script reads it), SameSite=Strict (no other
    /// site's page makes the browser send it).
    pub fn session_cookie(&self) -> HeaderValue {
        let cookie = Cookie::build((self.session_cookie.as_str(), self.session.as_str()))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            .build();
        header_value(&cookie)
    }

    /// The XSRF cookie: readable by the API's own pages, which copy it into the
    /// `X-XSRF-Token` header; SameSite=Strict like the session cookie.
    pub fn xsrf_cookie(&self) -> HeaderValue {
        let cookie = Cookie::build((self.xsrf_cookie.as_str(), self.xsrf.as_str()))
            .path("/")
            .same_site(SameSite::Strict)
            .build();
        header_value(&cookie)
    }
}

fn header_value(cookie: &Cookie<'_>) -> HeaderValue {
    // Names and values are ASCII letters, digits and '-': always a valid header.
    HeaderValue::from_str(&cookie.to_string()).expect("cookie is a valid header value")
}

/// The first value of `name` in a query string, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The value of the cookie `name`, from every Cookie header the request has.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn tokens_are_32_hex_digits_and_differ() {
        let a = random_token();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_token());
    }

    #[test]
    fn bearer_query_and_cookie_authenticate_and_wrong_tokens_do_not() {
        let secrets = Secrets::new("s3cret".into(), 8081);
        let none = HeaderMap::new();
        assert!(secrets.authenticate(&none, None).is_err());
        assert_eq!(
            secrets.authenticate(&headers(&[("authorization", "Bearer s3cret")]), None),
            Ok(Authenticated::Bearer)
        );
        assert!(secrets
            .authenticate(&headers(&[("authorization", "Bearer nope")]), None)
            .is_err());
        assert!(secrets
            .authenticate(&headers(&[("authorization", "Basic s3cret")]), None)
            .is_err());
        assert_eq!(
            secrets.authenticate(&none, Some("a=1&token=s3cret")),
            Ok(Authenticated::QueryToken)
        );
        assert!(secrets.authenticate(&none, Some("token=s3cre")).is_err());
        let cookie = format!("other=1; periscope-auth-8081={}", secrets.session);
        assert_eq!(
            secrets.authenticate(&headers(&[("cookie", &cookie)]), None),
            Ok(Authenticated::Cookie)
        );
        let stale = "periscope-auth-8081=0000";
        assert!(secrets
            .authenticate(&headers(&[("cookie", stale)]), None)
            .is_err());
        let other_port = format!("periscope-auth-9090={}", secrets.session);
        assert!(secrets
            .authenticate(&headers(&[("cookie", &other_port)]), None)
            .is_err());
    }

    #[test]
    fn xsrf_needs_the_header_and_the_cookie_both_right() {
        let secrets = Secrets::new("t".into(), 8081);
        let cookie = format!("periscope-xsrf-8081={}", secrets.xsrf);
        let good = headers(&[("cookie", &cookie), ("x-xsrf-token", &secrets.xsrf)]);
        assert!(secrets.xsrf_ok(&good, None, false));
        let mitmweb_name = headers(&[("cookie", &cookie), ("x-xsrftoken", &secrets.xsrf)]);
        assert!(secrets.xsrf_ok(&mitmweb_name, None, false));
        assert!(!secrets.xsrf_ok(&headers(&[("cookie", &cookie)]), None, false));
        let wrong = headers(&[("cookie", &cookie), ("x-xsrf-token", "0000")]);
        assert!(!secrets.xsrf_ok(&wrong, None, false));
        let no_cookie = headers(&[("x-xsrf-token", &secrets.xsrf)]);
        assert!(!secrets.xsrf_ok(&no_cookie, None, false));
        let query = format!("xsrf_token={}", secrets.xsrf);
        let only_cookie = headers(&[("cookie", &cookie)]);
        assert!(secrets.xsrf_ok(&only_cookie, Some(&query), true));
        assert!(!secrets.xsrf_ok(&only_cookie, Some(&query), false));
    }

    #[test]
    fn the_session_cookie_is_httponly_and_strict() {
        let secrets = Secrets::new("t".into(), 8081);
        let cookie = secrets.session_cookie();
        let text = cookie.to_str().unwrap();
        assert!(text.starts_with("periscope-auth-8081="), "{text}");
        assert!(text.contains("HttpOnly"), "{text}");
        assert!(text.contains("SameSite=Strict"), "{text}");
        let xsrf = secrets.xsrf_cookie();
        assert!(!xsrf.to_str().unwrap().contains("HttpOnly"));
    }
}
