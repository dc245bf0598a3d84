//! Periscope's web UI: plain ES modules and a style sheet under `crates/web/ui/`,
//! compiled into the binary with `include_bytes!` — no build step, no Node. The
//! control API (`periscope-api`) serves them on its own origin, so the UI's calls
//! carry the API's session cookie and XSRF token like any other browser request:
//!
//! ```
//! let (content_type, body) = periscope_web::asset("app.js").unwrap();
//! assert_eq!(content_type, "text/javascript; charset=utf-8");
//! assert!(!body.is_empty());
//! assert!(periscope_web::asset("../Cargo.toml").is_none());
//! ```
//!
//! The binary hands [`asset`] to `ApiState::ui`; the page is `index.html` at `/`,
//! everything else is under `/ui/`.

/// The UI's files: the name under `/ui/`, its content type, its bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../ui/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/api.js"),
    ),
    (
        "list.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/list.js"),
    ),
    (
        "detail.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/detail.js"),
    ),
    (
        "format.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/format.js"),
    ),
];

/// The file at `path` under `/ui/` (`index.html` is the page served at `/`): its
/// content type and bytes, or `None`. Only the names above exist; there is no file
/// system behind it.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == path)
        .map(|(_, content_type, body)| (*content_type, *body))
}

/// Every file's name, for tests and listings.
pub fn names() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|(name, _, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        let mut sources = String::new();
        for name in names() {
            sources.push_str(std::str::from_utf8(asset(name).unwrap().1).unwrap());
        }
        for line in sources.lines() {
            for quote in ["from './", "src=\"/ui/", "href=\"/ui/"] {
                if let Some(rest) = line.split(quote).nth(1) {
                    let file = rest.split(['\'', '"']).next().unwrap();
                    assert!(asset(file).is_some(), "{file} is used but not embedded");
                }
            }
        }
    }
}
