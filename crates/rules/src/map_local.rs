//! `map_local` (`[|FILTER]|URL-REGEX|PATH`): answer from a file, or from a directory
//! with the rest of the URL (after the match, or the regex's first group) appended,
//! `index.html` for a directory — mitmproxy's candidates, without ever leaving the
//! directory: `..` segments, encoded separators and symlinks that lead out are
//! refused with a 404, and nothing outside is opened.

use std::path::{Component, Path, PathBuf};

use periscope_flow::filter::Filter;
use periscope_flow::Flow;

use crate::modify::expand_home;
use crate::spec::split;
use crate::{parse_filter, RuleError};

/// Files larger than this are refused rather than read into memory whole.
pub const MAX_FILE_SIZE: u64 = 256 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct MapLocal {
    pub spec: String,
    filter: Option<Filter>,
    regex: regex::Regex,
    /// Canonical: symlinks in the configured path itself are the user's choice.
    root: PathBuf,
}

/// What a matching rule found for a URL.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Serve this file (canonical, inside the root).
    File(PathBuf),
    /// Nothing to serve: the candidates tried, or why the URL was refused.
    NotFound(String),
}

impl MapLocal {
    pub const OPTION: &'static str = "map_local";

    pub fn parse(spec: &str) -> Result<Self, RuleError> {
        let parts = split(spec).map_err(|e| RuleError::split(Self::OPTION, spec, e))?;
        let filter = parse_filter(Self::OPTION, spec, parts.filter)?;
        let regex = regex::Regex::new(parts.subject.text)
            .map_err(|e| RuleError::regex(Self::OPTION, spec, parts.subject, &e))?;
        let path = expand_home(parts.replacement.text);
        let root = std::fs::canonicalize(&path).map_err(|e| {
            RuleError::at(
                Self::OPTION,
                spec,
                parts.replacement.column,
                format!("{}: {e}", path.display()),
            )
        })?;
        Ok(MapLocal {
            spec: spec.to_owned(),
            filter,
            regex,
            root,
        })
    }

    /// Whether this rule applies to the flow and its URL.
    pub fn matches(&self, flow: &Flow, url: &str) -> bool {
        self.regex.is_match(url) && self.filter.as_ref().is_none_or(|f| f.matches(flow))
    }

    /// The file to answer `url` with (the rule matched it).
    pub fn lookup(&self, url: &str) -> Lookup {
        if self.root.is_file() {
            return Lookup::File(self.root.clone());
        }
        let suffix = match self.suffix(url) {
            Ok(suffix) => suffix,
            Err(why) => return Lookup::NotFound(why),
        };
        let mut candidates = Vec::new();
        if suffix.is_empty() {
            candidates.push(self.root.join("index.html"));
        } else {
            let relative = match safe_relative(&suffix) {
                Ok(relative) => relative,
                Err(why) => return Lookup::NotFound(why),
            };
            candidates.push(self.root.join(&relative));
            candidates.push(self.root.join(&relative).join("index.html"));
        }
        for candidate in &candidates {
            // Canonical, so a symlink is judged by where it leads.
            let Ok(real) = std::fs::canonicalize(candidate) else {
                continue;
            };
            if !real.starts_with(&self.root) {
                return Lookup::NotFound(format!(
                    "{} leads outside {}",
                    candidate.display(),
                    self.root.display()
                ));
            }
            if real.is_file() {
                return Lookup::File(real);
            }
        }
        Lookup::NotFound(format!(
            "none of the local file candidates exist: {}",
            candidates
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// The part of the URL that names a file under the root: the regex's first group,
    /// or what follows the match without its query; percent-decoded.
    fn suffix(&self, url: &str) -> Result<String, String> {
        let captures = self.regex.captures(url).ok_or("the URL does not match")?;
        let raw = if captures.len() > 1 {
            captures.get(1).map_or("", |m| m.as_str())
        } else {
            let end = captures.get(0).map_or(0, |m| m.end());
            let rest = &url[end..];
            rest.split('?').next().unwrap_or("")
        };
        let raw = raw.trim_matches('/');
        let lowered = raw.to_ascii_lowercase();
        if lowered.contains("%2f") || lowered.contains("%5c") || lowered.contains("%00") {
            return Err(format!("{raw:?} has an encoded separator"));
        }
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| format!("{raw:?} is not UTF-8 once decoded"))?;
        Ok(decoded.into_owned())
    }
}

/// `suffix` as a path that stays below its root: no `..`, no root, no backslash.
fn safe_relative(suffix: &str) -> Result<PathBuf, String> {
    if suffix.contains('\\') || suffix.contains('\0') {
        return Err(format!("{suffix:?} has a backslash or a NUL"));
    }
    let path = Path::new(suffix);
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{suffix:?} tries to leave the directory"));
            }
        }
    }
    Ok(relative)
}

/// The `Content-Type` for a file, from its name.
pub fn content_type(path: &Path) -> Option<String> {
    mime_guess::from_path(path).first().map(|m| m.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        std::fs::create_dir_all(root.join("app/docs")).unwrap();
        std::fs::write(root.join("index.html"), "home").unwrap();
        std::fs::write(root.join("app/main.js"), "js").unwrap();
        std::fs::write(root.join("app/docs/index.html"), "docs").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("leak.txt")).unwrap();
        (dir, root)
    }

    fn file_name(lookup: Lookup) -> String {
        match lookup {
            Lookup::File(path) => path.file_name().unwrap().to_string_lossy().into_owned(),
            Lookup::NotFound(why) => format!("404: {why}"),
        }
    }

    #[test]
    fn the_rest_of_the_url_names_the_file() {
        let (_dir, root) = site();
        let rule = MapLocal::parse(&format!("|example.com/static|{}", root.display())).unwrap();
        assert_eq!(
            file_name(rule.lookup("https://example.com/static/app/main.js?v=2")),
            "main.js"
        );
        assert_eq!(
            file_name(rule.lookup("https://example.com/static/")),
            "index.html"
        );
        let docs = rule.lookup("https://example.com/static/app/docs");
        assert!(
            matches!(&docs, Lookup::File(p) if p.ends_with("app/docs/index.html")),
            "{docs:?}"
        );
        assert!(file_name(rule.lookup("https://example.com/static/nope.js")).starts_with("404"));
        // A group chooses the part.
        let rule = MapLocal::parse(&format!(r"|/assets/(.+)\?|{}", root.display())).unwrap();
        assert_eq!(
            file_name(rule.lookup("https://x.test/assets/app/main.js?x")),
            "main.js"
        );
    }

    #[test]
    fn nothing_outside_the_directory_is_served() {
        let (_dir, root) = site();
        let rule = MapLocal::parse(&format!("|example.com/static|{}", root.display())).unwrap();
        for url in [
            "https://example.com/static/../secret.txt",
            "https://example.com/static/app/../../secret.txt",
            "https://example.com/static/%2e%2e/secret.txt",
            "https://example.com/static/..%2fsecret.txt",
            "https://example.com/static/%2E%2E%5Csecret.txt",
            "https://example.com/static/leak.txt",
            "https://example.com/static//etc/passwd",
        ] {
            let lookup = rule.lookup(url);
            assert!(matches!(lookup, Lookup::NotFound(_)), "{url}: {lookup:?}");
        }
    }

    #[test]
    fn a_file_answers_every_match_and_a_missing_path_is_refused_at_start() {
        let (_dir, root) = site();
        let rule = MapLocal::parse(&format!(
            "|~d example|api|{}",
            root.join("app/main.js").display()
        ))
        .unwrap();
        assert_eq!(
            file_name(rule.lookup("https://example.com/api/anything")),
            "main.js"
        );
        let error = MapLocal::parse("|x|/no/such/dir").unwrap_err();
        assert_eq!(error.column, Some(4), "{error}");
        assert_eq!(
            content_type(Path::new("a/main.js")).as_deref(),
            Some("text/javascript")
        );
    }
}
