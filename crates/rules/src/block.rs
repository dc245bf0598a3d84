//! `block_list` (`/FILTER/STATUS`): matching requests are answered with an empty
//! response of that status, or with 444 closed without an answer; and the two
//! request tweaks mitmproxy has as switches, `anticache` and `anticomp`.

use periscope_flow::filter::Filter;
use periscope_flow::{Flow, Headers};

use crate::spec::parts;
use crate::RuleError;

/// nginx's (and mitmproxy's) "no response": the connection is closed.
pub const NO_RESPONSE: u16 = 444;

#[derive(Clone, Debug)]
pub struct Block {
    pub spec: String,
    filter: Filter,
    pub status: u16,
}

impl Block {
    pub const OPTION: &'static str = "block_list";

    pub fn parse(spec: &str) -> Result<Self, RuleError> {
        let parts = parts(spec).map_err(|e| RuleError::split(Self::OPTION, spec, e))?;
        let [filter, status] = parts[..] else {
            let column = parts
                .get(2)
                .map_or(spec.chars().count() + 1, |p| p.column - 1);
            return Err(RuleError::at(
                Self::OPTION,
                spec,
                column,
                format!(
                    "expected 2 parts after the separator (FILTER and STATUS), found {}",
                    parts.len()
                ),
            ));
        };
        let parsed = crate::parse_filter(Self::OPTION, spec, Some(filter))?.ok_or_else(|| {
            RuleError::at(Self::OPTION, spec, filter.column, "the filter is empty")
        })?;
        let code = status
            .text
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|code| (100..=999).contains(code))
            .ok_or_else(|| {
                RuleError::at(
                    Self::OPTION,
                    spec,
                    status.column,
                    format!("{:?} is not an HTTP status code", status.text),
                )
            })?;
        Ok(Block {
            spec: spec.to_owned(),
            filter: parsed,
            status: code,
        })
    }

    pub fn matches(&self, flow: &Flow) -> bool {
        self.filter.matches(flow)
    }
}

/// mitmproxy's `request.anticache()`: no conditional request, so no 304.
pub fn anticache(headers: &mut Headers) -> bool {
    let before = headers.len();
    headers.0.retain(|h| {
        !h.name.eq_ignore_ascii_case("if-modified-since")
            && !h.name.eq_ignore_ascii_case("if-none-match")
    });
    headers.len() != before
}

/// mitmproxy's `request.anticomp()`: ask for an uncompressed response.
pub fn anticomp(headers: &mut Headers) -> bool {
    let already = headers
        .get_str("accept-encoding")
        .is_some_and(|v| v == "identity")
        && headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("accept-encoding"))
            .count()
            == 1;
    if already {
        return false;
    }
    headers
        .0
        .retain(|h| !h.name.eq_ignore_ascii_case("accept-encoding"));
    headers.push("accept-encoding", b"identity".to_vec());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_filter_and_status() {
        let block = Block::parse("|~d ads.example|404").unwrap();
        assert_eq!(block.status, 404);
        assert_eq!(Block::parse(":~u /track:444").unwrap().status, NO_RESPONSE);
        let error = Block::parse("/~u /ads/404").unwrap_err();
        assert!(error.to_string().contains("2 parts"), "{error}");
        let error = Block::parse("|~d x|forbidden").unwrap_err();
        assert_eq!(error.column, Some(7), "{error}");
        assert!(Block::parse("|~d x|42").is_err());
        assert!(Block::parse("||404").is_err());
    }

    #[test]
    fn anticache_and_anticomp_change_the_request_headers() {
        let mut h = Headers::default();
        h.push("If-None-Match", b"\"abc\"".to_vec());
        h.push(
            "If-Modified-Since",
            b"Sat, 01 Jan 2000 00:00:00 GMT".to_vec(),
        );
        h.push("Accept-Encoding", b"gzip, br".to_vec());
        assert!(anticache(&mut h));
        assert!(!anticache(&mut h));
        assert!(anticomp(&mut h));
        assert!(!anticomp(&mut h));
        assert_eq!(h.len(), 1);
        assert_eq!(h.get_str("accept-encoding").unwrap(), "identity");
    }
}
