//! `modify_headers` (`[/FILTER]/NAME/[@]VALUE`) and `modify_body`
//! (`[/FILTER]/REGEX/[@]REPLACEMENT`), as mitmproxy defines them: the subject and a
//! literal replacement have their escapes decoded; `@PATH` reads the replacement from
//! a file each time it is used; an empty header value removes the header.

use std::path::PathBuf;

use bytes::Bytes;
use periscope_flow::content::{decode_body, encode_body};
use periscope_flow::filter::Filter;
use periscope_flow::{Body, Flow, Headers};

use crate::escape::escaped_str_to_bytes;
use crate::spec::{split, Part};
use crate::{parse_filter, RuleError};

/// A replacement as written, or the file it names.
#[derive(Clone, Debug)]
pub enum Replacement {
    Literal(Vec<u8>),
    File(PathBuf),
}

impl Replacement {
    fn parse(option: &'static str, spec: &str, part: Part<'_>) -> Result<Self, RuleError> {
        if let Some(path) = part.text.strip_prefix('@') {
            let path = expand_home(path);
            // Checked now so a typo fails at start; read again at each use, as
            // mitmproxy does, so the file can be edited while the proxy runs.
            std::fs::read(&path).map_err(|e| {
                RuleError::at(
                    option,
                    spec,
                    part.column + 1,
                    format!("{}: {e}", path.display()),
                )
            })?;
            return Ok(Replacement::File(path));
        }
        escaped_str_to_bytes(part.text)
            .map(Replacement::Literal)
            .map_err(|e| RuleError::at(option, spec, part.column + e.index, e.message))
    }

    /// The bytes to put in, or why the file could not be read.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        match self {
            Replacement::Literal(bytes) => Ok(bytes.clone()),
            Replacement::File(path) => {
                std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
            }
        }
    }
}

pub(crate) fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

#[derive(Clone, Debug)]
pub struct ModifyHeaders {
    pub spec: String,
    filter: Option<Filter>,
    name: String,
    value: Replacement,
}

impl ModifyHeaders {
    pub const OPTION: &'static str = "modify_headers";

    pub fn parse(spec: &str) -> Result<Self, RuleError> {
        let parts = split(spec).map_err(|e| RuleError::split(Self::OPTION, spec, e))?;
        let filter = parse_filter(Self::OPTION, spec, parts.filter)?;
        let name = escaped_str_to_bytes(parts.subject.text).map_err(|e| {
            RuleError::at(
                Self::OPTION,
                spec,
                parts.subject.column + e.index,
                e.message,
            )
        })?;
        let name = String::from_utf8(name)
            .ok()
            .filter(|name| http::HeaderName::from_bytes(name.as_bytes()).is_ok())
            .ok_or_else(|| {
                RuleError::at(
                    Self::OPTION,
                    spec,
                    parts.subject.column,
                    format!("{:?} is not a header name", parts.subject.text),
                )
            })?;
        let value = Replacement::parse(Self::OPTION, spec, parts.replacement)?;
        Ok(ModifyHeaders {
            spec: spec.to_owned(),
            filter,
            name,
            value,
        })
    }

    pub fn matches(&self, flow: &Flow) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(flow))
    }
}

/// mitmproxy's `ModifyHeaders.run`: every filter is evaluated on the flow as it was,
/// then every matching rule's header is removed, then the non-empty values added.
/// Returns the rules that acted, with what they did.
pub fn modify_headers(
    rules: &[ModifyHeaders],
    matched: &[bool],
    headers: &mut Headers,
) -> Vec<(usize, String)> {
    let mut acted = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        if matched[index] {
            let before = headers.len();
            headers
                .0
                .retain(|h| !h.name.eq_ignore_ascii_case(&rule.name));
            if headers.len() != before {
                acted.push((index, format!("removed {}", rule.name)));
            }
        }
    }
    for (index, rule) in rules.iter().enumerate() {
        if !matched[index] {
            continue;
        }
        match rule.value.bytes() {
            Ok(value) if value.is_empty() => {}
            Ok(value) => {
                headers.push(rule.name.clone(), value);
                acted.retain(|(i, _)| *i != index);
                acted.push((index, format!("set {}", rule.name)));
            }
            Err(why) => acted.push((index, format!("not applied: {why}"))),
        }
    }
    acted.sort_by_key(|(index, _)| *index);
    acted
}

#[derive(Clone, Debug)]
pub struct ModifyBody {
    pub spec: String,
    filter: Option<Filter>,
    regex: regex::bytes::Regex,
    replacement: Replacement,
}

impl ModifyBody {
    pub const OPTION: &'static str = "modify_body";

    pub fn parse(spec: &str) -> Result<Self, RuleError> {
        let parts = split(spec).map_err(|e| RuleError::split(Self::OPTION, spec, e))?;
        let filter = parse_filter(Self::OPTION, spec, parts.filter)?;
        let subject = escaped_str_to_bytes(parts.subject.text).map_err(|e| {
            RuleError::at(
                Self::OPTION,
                spec,
                parts.subject.column + e.index,
                e.message,
            )
        })?;
        let subject = String::from_utf8(subject).map_err(|_| {
            RuleError::at(
                Self::OPTION,
                spec,
                parts.subject.column,
                "the regex is not UTF-8",
            )
        })?;
        // mitmproxy's re.DOTALL: `.` crosses lines in a body.
        let regex = regex::bytes::RegexBuilder::new(&subject)
            .dot_matches_new_line(true)
            .unicode(false)
            .build()
            .map_err(|e| RuleError::regex(Self::OPTION, spec, parts.subject, &e))?;
        let replacement = Replacement::parse(Self::OPTION, spec, parts.replacement)?;
        Ok(ModifyBody {
            spec: spec.to_owned(),
            filter,
            regex,
            replacement,
        })
    }

    pub fn matches(&self, flow: &Flow) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(flow))
    }

    /// Whether the filter looks at bodies, which must then be read before it can
    /// be evaluated.
    pub fn filter_reads_bodies(&self) -> bool {
        self.filter.as_ref().is_some_and(Filter::reads_bodies)
    }
}

/// What one `modify_body` rule did to a body.
pub enum BodyChange {
    Unchanged,
    Changed { replacements: usize },
    Failed(String),
}

/// Replaces every match of `rule` in `body` (decoded first, encoded again after, as
/// `headers` say), literally: mitmproxy passes a function, so `\1` in a replacement
/// is not a group reference.
pub fn modify_body(rule: &ModifyBody, headers: &Headers, body: &mut Body) -> BodyChange {
    if body.truncated {
        return BodyChange::Failed("the body is larger than --body-limit".to_owned());
    }
    let encoding = headers.get_str("content-encoding");
    let decoded = match decode_body(encoding.as_deref(), &body.content) {
        Ok(decoded) => decoded,
        Err(e) => return BodyChange::Failed(e.to_string()),
    };
    let count = rule.regex.find_iter(&decoded).count();
    if count == 0 {
        return BodyChange::Unchanged;
    }
    let replacement = match rule.replacement.bytes() {
        Ok(bytes) => bytes,
        Err(why) => return BodyChange::Failed(why),
    };
    let replaced = rule
        .regex
        .replace_all(&decoded, regex::bytes::NoExpand(&replacement));
    match encode_body(encoding.as_deref(), &replaced) {
        Ok(encoded) => {
            *body = Body::complete(Bytes::from(encoded));
            BodyChange::Changed {
                replacements: count,
            }
        }
        Err(e) => BodyChange::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::default();
        for (n, v) in pairs {
            h.push(*n, v.as_bytes().to_vec());
        }
        h
    }

    fn values(h: &Headers, name: &str) -> Vec<String> {
        h.iter()
            .filter(|x| x.name.eq_ignore_ascii_case(name))
            .map(|x| x.value_lossy().into_owned())
            .collect()
    }

    #[test]
    fn headers_are_removed_then_set_like_mitmproxy() {
        let rules = [
            ModifyHeaders::parse("/X-Tag/one").unwrap(),
            ModifyHeaders::parse("/X-Tag/two").unwrap(),
            ModifyHeaders::parse("/Cookie/").unwrap(),
        ];
        let mut h = headers(&[("x-tag", "old"), ("cookie", "a=1"), ("accept", "*/*")]);
        let acted = modify_headers(&rules, &[true, true, true], &mut h);
        assert_eq!(values(&h, "x-tag"), ["one", "two"]);
        assert!(values(&h, "cookie").is_empty());
        assert_eq!(values(&h, "accept"), ["*/*"]);
        assert_eq!(
            acted.len(),
            3,
            "{:?}",
            acted.iter().map(|a| &a.1).collect::<Vec<_>>()
        );
        // A rule whose filter did not match does nothing.
        let mut h = headers(&[("x-tag", "old")]);
        assert!(modify_headers(&rules[..1], &[false], &mut h).is_empty());
        assert_eq!(values(&h, "x-tag"), ["old"]);
    }

    #[test]
    fn header_values_can_come_from_a_file_read_at_each_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first").unwrap();
        let rule = ModifyHeaders::parse(&format!("|Authorization|@{}", path.display())).unwrap();
        let mut h = Headers::default();
        modify_headers(std::slice::from_ref(&rule), &[true], &mut h);
        assert_eq!(values(&h, "authorization"), ["first"]);
        std::fs::write(&path, "second").unwrap();
        modify_headers(std::slice::from_ref(&rule), &[true], &mut h);
        assert_eq!(values(&h, "authorization"), ["second"]);
    }

    #[test]
    fn bad_patterns_are_refused_with_their_column() {
        let error = ModifyHeaders::parse("/~q/bad name/x").unwrap_err();
        assert_eq!(error.column, Some(5), "{error}");
        let error = ModifyBody::parse("/~q/a(b/x").unwrap_err();
        assert_eq!(error.column, Some(5), "{error}");
        assert!(error.to_string().contains("--modify-body"), "{error}");
        let error = ModifyHeaders::parse("/~bogus/X/y").unwrap_err();
        assert_eq!(error.column, Some(2), "{error}");
        let error = ModifyHeaders::parse("|X|@/no/such/file").unwrap_err();
        assert_eq!(error.column, Some(5), "{error}");
        assert!(error.to_string().contains("/no/such/file"), "{error}");
    }

    #[test]
    fn bodies_are_replaced_literally_and_reencoded() {
        let rule = ModifyBody::parse(r"/\d+/<\0>").unwrap();
        let h = headers(&[("content-encoding", "gzip")]);
        let plain = b"id=42\nnext=7".to_vec();
        let mut body = Body::complete(encode_body(Some("gzip"), &plain).unwrap());
        let BodyChange::Changed { replacements } = modify_body(&rule, &h, &mut body) else {
            panic!("expected a change");
        };
        assert_eq!(replacements, 2);
        let decoded = decode_body(Some("gzip"), &body.content).unwrap();
        assert_eq!(&*decoded, b"id=<\0>\nnext=<\0>");
        // DOTALL: `.` crosses lines.
        let rule = ModifyBody::parse("/a.b/X").unwrap();
        let mut body = Body::complete(Bytes::from_static(b"a\nb"));
        assert!(matches!(
            modify_body(&rule, &Headers::default(), &mut body),
            BodyChange::Changed { .. }
        ));
        assert_eq!(&body.content[..], b"X");
    }
}
