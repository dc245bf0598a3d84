//! Splitting a rule pattern the way mitmproxy does: its first character is the
//! separator, and the rest splits at the separator at most twice, so a separator in
//! the last part is part of it (`/~q/x-tag/a/b` has the value `a/b`).

/// A part of a pattern and where it starts: a 1-based character column of the whole
/// pattern, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part<'a> {
    pub text: &'a str,
    pub column: usize,
}

/// Why a pattern did not split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitError {
    pub column: usize,
    pub message: String,
}

/// The two or three parts of `[SEP FILTER] SEP SUBJECT SEP REPLACEMENT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split<'a> {
    pub filter: Option<Part<'a>>,
    pub subject: Part<'a>,
    pub replacement: Part<'a>,
}

/// Splits `spec` into at most three parts at its separator.
pub fn parts(spec: &str) -> Result<Vec<Part<'_>>, SplitError> {
    let mut chars = spec.char_indices();
    let Some((_, separator)) = chars.next() else {
        return Err(SplitError {
            column: 1,
            message: "the pattern is empty".to_owned(),
        });
    };
    let rest = &spec[separator.len_utf8()..];
    let mut parts = Vec::with_capacity(3);
    let mut column = 2;
    let mut remaining = rest;
    while parts.len() < 2 {
        match remaining.find(separator) {
            Some(at) => {
                let text = &remaining[..at];
                parts.push(Part { text, column });
                column += text.chars().count() + 1;
                remaining = &remaining[at + separator.len_utf8()..];
            }
            None => break,
        }
    }
    parts.push(Part {
        text: remaining,
        column,
    });
    Ok(parts)
}

/// `[SEP FILTER] SEP SUBJECT SEP REPLACEMENT`, as `modify_headers`, `modify_body`,
/// `map_local` and `map_remote` take it.
pub fn split(spec: &str) -> Result<Split<'_>, SplitError> {
    let parts = parts(spec)?;
    match parts[..] {
        [subject, replacement] => Ok(Split {
            filter: None,
            subject,
            replacement,
        }),
        [filter, subject, replacement] => Ok(Split {
            filter: Some(filter),
            subject,
            replacement,
        }),
        _ => Err(SplitError {
            column: spec.chars().count() + 1,
            message: format!(
                "expected 2 or 3 parts after the separator {:?}, found 1",
                spec.chars().next().unwrap_or('/')
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(spec: &str) -> Vec<&str> {
        parts(spec).unwrap().iter().map(|p| p.text).collect()
    }

    #[test]
    fn splits_like_mitmproxy() {
        assert_eq!(texts("/foo/bar"), ["foo", "bar"]);
        assert_eq!(texts(":~q:foo:bar"), ["~q", "foo", "bar"]);
        // Extra separators belong to the last part.
        assert_eq!(texts("/one/two/foo/bar/"), ["one", "two", "foo/bar/"]);
        assert_eq!(texts("|x"), ["x"]);
        assert_eq!(texts("/a//"), ["a", "", ""]);
    }

    #[test]
    fn columns_point_into_the_pattern() {
        let split = split("|~d example|/api|/srv/api").unwrap();
        assert_eq!(split.filter.unwrap().column, 2);
        assert_eq!(split.subject.column, 13);
        assert_eq!(split.replacement.column, 18);
        let multibyte = split_columns("§é§x§y");
        assert_eq!(multibyte, [2, 4, 6]);
    }

    fn split_columns(spec: &str) -> Vec<usize> {
        parts(spec).unwrap().iter().map(|p| p.column).collect()
    }

    #[test]
    fn too_few_parts_is_an_error_at_the_end() {
        let error = split("/only").unwrap_err();
        assert_eq!(error.column, 6);
        assert!(error.message.contains("2 or 3 parts"), "{}", error.message);
        assert!(parts("").is_err());
    }
}
