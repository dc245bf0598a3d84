//! `map_remote` (`[|FILTER]|URL-REGEX|REPLACEMENT`): the URL is rewritten before
//! Periscope connects, so the request goes to another scheme, host, port or path.
//! The replacement is written as for Python's `re.sub`, as in mitmproxy (`\1`,
//! `\g<1>`, `\g<name>`), and translated once to the `regex` crate's syntax.

use periscope_flow::filter::Filter;
use periscope_flow::{Flow, Request};

use crate::spec::{split, Part};
use crate::{parse_filter, RuleError};

#[derive(Clone, Debug)]
pub struct MapRemote {
    pub spec: String,
    filter: Option<Filter>,
    regex: regex::Regex,
    replacement: String,
}

impl MapRemote {
    pub const OPTION: &'static str = "map_remote";

    pub fn parse(spec: &str) -> Result<Self, RuleError> {
        let parts = split(spec).map_err(|e| RuleError::split(Self::OPTION, spec, e))?;
        let filter = parse_filter(Self::OPTION, spec, parts.filter)?;
        let regex = regex::Regex::new(parts.subject.text)
            .map_err(|e| RuleError::regex(Self::OPTION, spec, parts.subject, &e))?;
        let replacement = python_replacement(parts.replacement, &regex)
            .map_err(|(column, message)| RuleError::at(Self::OPTION, spec, column, message))?;
        Ok(MapRemote {
            spec: spec.to_owned(),
            filter,
            regex,
            replacement,
        })
    }

    pub fn matches(&self, flow: &Flow) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(flow))
    }

    /// The URL this rule makes of `url`, when it changes it.
    pub fn rewrite(&self, url: &str) -> Option<String> {
        let rewritten = self.regex.replace_all(url, self.replacement.as_str());
        (rewritten != url).then(|| rewritten.into_owned())
    }
}

/// Points `request` at `url` (absolute): scheme, host, port, path and the Host header,
/// which mitmproxy also rewrites when it sets a request's URL.
pub fn retarget(request: &mut Request, url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => "http",
        Some(s) if s.eq_ignore_ascii_case("https") => "https",
        _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} names no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{url:?} carries credentials; map_remote cannot use them"
        ));
    }
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    request.scheme = scheme.to_owned();
    request.host = host.to_ascii_lowercase();
    request.port = port;
    request.path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    if let Some(header) = request
        .headers
        .0
        .iter_mut()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
    {
        let default = matches!((scheme, port), ("http", 80) | ("https", 443));
        let host = authority.host();
        header.value = if default {
            host.as_bytes().to_vec()
        } else {
            format!("{host}:{port}").into_bytes()
        };
    }
    Ok(())
}

/// Python's `re.sub` template in the `regex` crate's syntax: group references become
/// `${…}`, escapes their characters, and a literal `$` is doubled.
fn python_replacement(part: Part<'_>, regex: &regex::Regex) -> Result<String, (usize, String)> {
    let chars: Vec<char> = part.text.chars().collect();
    let mut out = String::with_capacity(part.text.len());
    let mut i = 0;
    let groups = regex.captures_len() - 1;
    let check_group = |name: &str, at: usize| -> Result<(), (usize, String)> {
        let known = match name.parse::<usize>() {
            Ok(n) => n <= groups,
            Err(_) => regex.capture_names().flatten().any(|n| n == name),
        };
        if known {
            Ok(())
        } else {
            Err((part.column + at, format!("the regex has no group {name}")))
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '$' => {
                out.push_str("$$");
                i += 1;
            }
            '\\' => {
                let Some(&next) = chars.get(i + 1) else {
                    return Err((part.column + i, "a trailing \\ escapes nothing".to_owned()));
                };
                match next {
                    'g' => {
                        let rest: String = chars[i + 2..].iter().collect();
                        let name = rest
                            .strip_prefix('<')
                            .and_then(|r| r.split_once('>'))
                            .map(|(name, _)| name.to_owned())
                            .ok_or_else(|| (part.column + i, "\\g needs <group>".to_owned()))?;
                        check_group(&name, i)?;
                        out.push_str(&format!("${{{name}}}"));
                        i += 2 + name.chars().count() + 2;
                    }
                    '0'..='9' => {
                        let mut digits = String::from(next);
                        if let Some(&d) = chars.get(i + 2).filter(|d| d.is_ascii_digit()) {
                            digits.push(d);
                        }
                        check_group(&digits, i)?;
                        out.push_str(&format!("${{{digits}}}"));
                        i += 1 + digits.len();
                    }
                    'n' => {
                        out.push('\n');
                        i += 2;
                    }
                    't' => {
                        out.push('\t');
                        i += 2;
                    }
                    'r' => {
                        out.push('\r');
                        i += 2;
                    }
                    '\\' => {
                        out.push('\\');
                        i += 2;
                    }
                    letter if letter.is_ascii_alphabetic() => {
                        return Err((part.column + i, format!("bad escape \\{letter}")));
                    }
                    other => {
                        out.push('\\');
                        out.push(other);
                        i += 2;
                    }
                }
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use periscope_flow::{Body, Headers};

    fn request(url_host: &str) -> Request {
        let mut headers = Headers::default();
        headers.push("Host", url_host.as_bytes().to_vec());
        Request {
            method: "GET".into(),
            scheme: "https".into(),
            host: "api.example.com".into(),
            port: 443,
            path: "/v1/users?id=3".into(),
            http_version: "HTTP/1.1".into(),
            stream_id: None,
            headers,
            body: Body::default(),
            trailers: None,
        }
    }

    #[test]
    fn rewrites_with_python_groups() {
        let rule =
            MapRemote::parse(r"|https://api\.example\.com/v(\d)/|http://localhost:8081/api/v\1/")
                .unwrap();
        let url = rule
            .rewrite("https://api.example.com/v1/users?id=3")
            .unwrap();
        assert_eq!(url, "http://localhost:8081/api/v1/users?id=3");
        let rule =
            MapRemote::parse(r"|(?P<host>[a-z]+)\.example\.com|\g<host>.staging.example.com")
                .unwrap();
        assert_eq!(
            rule.rewrite("https://api.example.com/").unwrap(),
            "https://api.staging.example.com/"
        );
        assert!(rule.rewrite("https://other.test/").is_none());
        // A `$` in the replacement is a character, not a group.
        let rule = MapRemote::parse("|price|$5").unwrap();
        assert_eq!(
            rule.rewrite("https://x.test/price").unwrap(),
            "https://x.test/$5"
        );
    }

    #[test]
    fn unknown_groups_and_bad_regexes_are_refused_where_they_are() {
        let error = MapRemote::parse(r"|example|\2").unwrap_err();
        assert_eq!(error.column, Some(10), "{error}");
        let error = MapRemote::parse(r"|~d x|exa(mple|y").unwrap_err();
        assert_eq!(error.column, Some(7), "{error}");
        assert!(error.to_string().contains("--map-remote"), "{error}");
    }

    #[test]
    fn retargeting_moves_the_request_and_its_host_header() {
        let mut r = request("api.example.com");
        retarget(&mut r, "http://LOCALHOST:8081/api/v1/users?id=3").unwrap();
        assert_eq!(
            (r.scheme.as_str(), r.host.as_str(), r.port),
            ("http", "localhost", 8081)
        );
        assert_eq!(r.path, "/api/v1/users?id=3");
        assert_eq!(r.headers.get_str("host").unwrap(), "LOCALHOST:8081");
        let mut r = request("api.example.com");
        retarget(&mut r, "https://staging.example.com").unwrap();
        assert_eq!((r.port, r.path.as_str()), (443, "/"));
        assert_eq!(r.headers.get_str("host").unwrap(), "staging.example.com");
        assert!(retarget(&mut r, "ftp://x/").is_err());
    }
}
