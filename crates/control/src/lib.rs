//! What a user can do to flows — intercept, edit, resume, kill, replay, duplicate,
//! revert, delete, and answer a server's certificate request by hand — as one
//! interface, [`FlowControl`], that the console, the control API and the scripts all
//! call. The running proxy (with its session store) implements it; front ends see
//! only this trait and the flows of `periscope-model`, never the proxy's internals.
//!
//! The edit types follow mitmweb's JSON (`PUT /flows/{id}`), so that tools written for
//! mitmweb port easily:
//!
//! ```
//! use periscope_control::FlowEdit;
//!
//! let edit: FlowEdit = serde_json::from_str(
//!     r#"{"request": {"headers": [["x-debug", "1"]], "content": "a=2"}}"#,
//! ).unwrap();
//! let request = edit.request.unwrap();
//! assert_eq!(request.headers.unwrap(), vec![("x-debug".to_owned(), "1".to_owned())]);
//! assert_eq!(request.content.unwrap().bytes().unwrap(), b"a=2");
//! ```

use std::path::PathBuf;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
use serde::{Deserialize, Serialize};

pub use periscope_model::{Flow, FlowId};

/// A body given as text (`"content": "..."`) or as base64 (`"content": {"base64": "..."}`)
/// for bytes that are not UTF-8.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Binary { base64: String },
}

impl Content {
    pub fn bytes(&self) -> Result<Vec<u8>, ControlError> {
        match self {
            Content::Text(text) => Ok(text.clone().into_bytes()),
            Content::Binary { base64 } => BASE64
                .decode(base64)
                .map_err(|e| ControlError::InvalidEdit(format!("content is not base64: {e}"))),
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Content::Text(text.to_owned()),
            Err(_) => Content::Binary {
                base64: BASE64.encode(bytes),
            },
        }
    }
}

/// Changes to a request; every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestEdit {
    pub method: Option<String>,
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Path and query, as sent: `/a?b=c`.
    pub path: Option<String>,
    pub http_version: Option<String>,
    /// The whole header list, in order: `[[name, value], ...]`.
    pub headers: Option<Vec<(String, String)>>,
    pub content: Option<Content>,
}

/// Changes to a response; every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseEdit {
    pub status_code: Option<u16>,
    pub reason: Option<String>,
    pub http_version: Option<String>,
    pub headers: Option<Vec<(String, String)>>,
    pub content: Option<Content>,
}

/// A partial edit of a flow, in mitmweb's shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowEdit {
    pub request: Option<RequestEdit>,
    pub response: Option<ResponseEdit>,
    pub marked: Option<bool>,
    pub comment: Option<String>,
}

/// Which certificate to present to a server whose certificate request was
/// intercepted (`--intercept-tls`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "certificate", rename_all = "snake_case")]
pub enum CertificateChoice {
    /// The `--client-certs` identity for the host (an empty Certificate if none).
    Configured,
    /// An empty Certificate: the server decides what that means.
    None,
    /// A PEM file with the certificate and its key.
    File { path: PathBuf },
}

/// A WebSocket message held by the intercept filter: what to do with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum MessageDecision {
    /// Send it on, changed when `content` is given.
    Resume { content: Option<Content> },
    /// Never deliver it.
    Drop,
}

/// A message Periscope writes into a WebSocket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injection {
    /// Towards the client (`true`) or the server.
    pub to_client: bool,
    pub content: Content,
    /// Sent as a binary message rather than text.
    #[serde(default)]
    pub binary: bool,
}

/// The options a user changes while the proxy runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Flows matching this filter pause at the request and at the response (and their
    /// WebSocket messages one by one).
    pub intercept: Option<String>,
    /// Renegotiations and post-handshake authentications pause at the server's
    /// certificate request, for the user to choose the certificate.
    pub intercept_tls: bool,
    /// The options of the proxy's other parts (the rules: `map_local`,
    /// `modify_headers`, `server_replay`, …), named as in the config file.
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// A change of some options; what is absent stays as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionsUpdate {
    /// An empty string clears the filter.
    pub intercept: Option<String>,
    pub intercept_tls: Option<bool>,
    /// Other options by name (see [`Options::settings`]); a name the proxy does not
    /// know is refused.
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no flow {0}")]
    NotFound(FlowId),
    #[error("flow {0} is not intercepted")]
    NotIntercepted(FlowId),
    #[error("flow {id} cannot be {what}: {why}")]
    NotPossible {
        id: FlowId,
        what: &'static str,
        why: String,
    },
    #[error("invalid edit: {0}")]
    InvalidEdit(String),
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("the session store failed: {0}")]
    Store(String),
}

/// Everything a user can do to flows. Implemented by the running proxy with its
/// session; each method returns at once (a replay runs on its own).
pub trait FlowControl: Send + Sync {
    /// A flow in flight (with its intercept state) or recorded.
    fn flow(&self, id: FlowId) -> Result<Flow, ControlError>;
    /// The flows in flight now, oldest first (recorded flows are read from the store).
    fn flows_in_flight(&self) -> Vec<Flow>;

    /// Lets a paused flow go on (at the request, the response, a WebSocket message
    /// with its content unchanged, or a certificate request with the configured
    /// certificate).
    fn resume(&self, id: FlowId) -> Result<(), ControlError>;
    /// Resumes every paused flow; how many there were.
    fn resume_all(&self) -> usize;
    /// Ends a flow: paused or still streaming, both of its connections close and the
    /// client gets an error (HTTP/1.1: a 502 that says so; HTTP/2: RST_STREAM).
    fn kill(&self, id: FlowId) -> Result<(), ControlError>;
    /// Kills every paused flow; how many there were.
    fn kill_all(&self) -> usize;

    /// Changes a flow: a paused one before it goes on (what is sent is the edited
    /// version), a recorded one in the session (its recorded version is kept for
    /// [`FlowControl::revert`]).
    fn edit(&self, id: FlowId, edit: FlowEdit) -> Result<Flow, ControlError>;
    /// Sends the flow's request again, as it is now; the new flow is returned at once
    /// and marked as a replay of this one.
    fn replay(&self, id: FlowId) -> Result<FlowId, ControlError>;
    /// A copy of a recorded flow, as a new flow in the session.
    fn duplicate(&self, id: FlowId) -> Result<FlowId, ControlError>;
    /// Puts back what was recorded before the flow was edited.
    fn revert(&self, id: FlowId) -> Result<Flow, ControlError>;
    /// Removes a recorded flow from the session (a flow in flight is killed first).
    fn delete(&self, id: FlowId) -> Result<(), ControlError>;
    /// Removes every flow that has ended, those still on their way to the session
    /// store included; flows in flight go on and are recorded when they end.
    fn clear(&self) -> Result<(), ControlError>;

    /// Answers an intercepted certificate request.
    fn choose_client_certificate(
        &self,
        id: FlowId,
        choice: CertificateChoice,
    ) -> Result<(), ControlError>;
    /// Decides about the WebSocket message held on an intercepted flow.
    fn decide_message(&self, id: FlowId, decision: MessageDecision) -> Result<(), ControlError>;
    /// Writes a message into an open WebSocket.
    fn inject_message(&self, id: FlowId, message: Injection) -> Result<(), ControlError>;

    fn options(&self) -> Options;
    /// Applies `update`; a bad value leaves every option as it was.
    fn set_options(&self, update: OptionsUpdate) -> Result<Options, ControlError>;
}

/// Applies `edit` to `flow` (the recorded request and response; marks and comment),
/// and sets `annotations.modified` when the exchange itself changed. Nothing changes
/// when the edit is invalid.
pub fn apply_edit(flow: &mut Flow, edit: &FlowEdit) -> Result<(), ControlError> {
    let mut edited = flow.clone();
    let mut exchange_changed = false;
    if let Some(request) = &edit.request {
        let target = &mut edited.request;
        if let Some(method) = &request.method {
            if method.is_empty()
                || !method
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                return Err(ControlError::InvalidEdit(format!(
                    "\"{method}\" is not an HTTP method"
                )));
            }
            target.method = method.clone();
        }
        if let Some(scheme) = &request.scheme {
            if scheme != "http" && scheme != "https" {
                return Err(ControlError::InvalidEdit(format!(
                    "scheme \"{scheme}\": only http and https"
                )));
            }
            target.scheme = scheme.clone();
        }
        if let Some(host) = &request.host {
            if host.is_empty() || host.contains(['/', ' ', '?', '#', '@']) {
                return Err(ControlError::InvalidEdit(format!(
                    "\"{host}\" is not a host"
                )));
            }
            target.host = host.clone();
        }
        if let Some(port) = request.port {
            if port == 0 {
                return Err(ControlError::InvalidEdit("port 0".into()));
            }
            target.port = port;
        }
        if let Some(path) = &request.path {
            if !(path.starts_with('/') || path == "*") || path.contains([' ', '\r', '\n']) {
                return Err(ControlError::InvalidEdit(format!(
                    "\"{path}\" is not a path (it starts with / and has no spaces)"
                )));
            }
            target.path = path.clone();
        }
        if let Some(version) = &request.http_version {
            target.http_version = version.clone();
        }
        if let Some(headers) = &request.headers {
            target.headers = edited_headers(headers)?;
        }
        if let Some(content) = &request.content {
            target.body = periscope_model::Body::complete(content.bytes()?);
        }
        exchange_changed = true;
    }
    if let Some(response) = &edit.response {
        let Some(target) = edited.response.as_mut() else {
            return Err(ControlError::InvalidEdit(
                "the flow has no response to edit".into(),
            ));
        };
        if let Some(status) = response.status_code {
            if !(100..=999).contains(&status) {
                return Err(ControlError::InvalidEdit(format!("status {status}")));
            }
            target.status = status;
        }
        if let Some(reason) = &response.reason {
            if reason.contains(['\r', '\n']) {
                return Err(ControlError::InvalidEdit("a reason is one line".into()));
            }
            target.reason = reason.clone();
        }
        if let Some(version) = &response.http_version {
            target.http_version = version.clone();
        }
        if let Some(headers) = &response.headers {
            target.headers = edited_headers(headers)?;
        }
        if let Some(content) = &response.content {
            target.body = periscope_model::Body::complete(content.bytes()?);
        }
        exchange_changed = true;
    }
    if let Some(marked) = edit.marked {
        edited.marked = marked;
    }
    if let Some(comment) = &edit.comment {
        edited.annotations.comment = comment.clone();
    }
    if exchange_changed {
        edited.annotations.modified = true;
    }
    *flow = edited;
    Ok(())
}

/// Header lines as the user gave them, checked: a name is a token, a value one line.
fn edited_headers(headers: &[(String, String)]) -> Result<periscope_model::Headers, ControlError> {
    let mut edited = periscope_model::Headers::default();
    for (name, value) in headers {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(ControlError::InvalidEdit(format!(
                "\"{name}\" is not a header name"
            )));
        }
        if value.contains(['\r', '\n', '\0']) {
            return Err(ControlError::InvalidEdit(format!(
                "the value of {name} is not one line"
            )));
        }
        edited.push(name.clone(), value.clone().into_bytes());
    }
    Ok(edited)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mitmweb_shaped_edits_parse_and_unknown_fields_are_refused() {
        let edit: FlowEdit = serde_json::from_str(
            r#"{"response": {"status_code": 418, "reason": "Teapot", "content": {"base64": "AP8="}}}"#,
        )
        .unwrap();
        let response = edit.response.unwrap();
        assert_eq!(response.status_code, Some(418));
        assert_eq!(response.content.unwrap().bytes().unwrap(), vec![0, 255]);
        let wrong = serde_json::from_str::<FlowEdit>(r#"{"request": {"verb": "GET"}}"#);
        assert!(wrong.is_err());
    }

    #[test]
    fn content_round_trips_text_and_bytes() {
        assert_eq!(Content::from_bytes(b"hi"), Content::Text("hi".into()));
        let binary = Content::from_bytes(&[0xff, 0]);
        assert_eq!(binary.bytes().unwrap(), vec![0xff, 0]);
        let json = serde_json::to_string(&binary).unwrap();
        assert_eq!(json, r#"{"base64":"/wA="}"#);
    }

    fn flow() -> Flow {
        serde_json::from_value(serde_json::json!({
            "id": "01900000-0000-7000-8000-000000000001",
            "client": {"id": 1, "peer": null, "local": null, "target": null, "tls": null},
            "server": null,
            "request": {"method": "GET", "scheme": "https", "host": "example.test", "port": 443,
                "path": "/a", "http_version": "HTTP/1.1", "headers": [{"name": "accept", "value": "*/*"}],
                "body": {"content": "", "size": 0, "truncated": false}, "trailers": null},
            "response": {"status": 200, "reason": "OK", "http_version": "HTTP/1.1",
                "headers": [], "body": {"content": "b2s=", "size": 2, "truncated": false},
                "trailers": null, "generated": false},
            "error": null,
            "timeline": []
        }))
        .unwrap()
    }

    #[test]
    fn an_edit_changes_what_it_names_and_marks_the_flow_modified() {
        let mut flow = flow();
        let edit: FlowEdit = serde_json::from_str(
            r#"{"request": {"method": "POST", "path": "/b?x=1", "headers": [["x-a", "1"]], "content": "body"},
                "response": {"status_code": 404}, "comment": "look"}"#,
        )
        .unwrap();
        apply_edit(&mut flow, &edit).unwrap();
        assert_eq!(flow.request.method, "POST");
        assert_eq!(flow.request.url(), "https://example.test/b?x=1");
        assert_eq!(flow.request.headers.get_str("x-a").as_deref(), Some("1"));
        assert!(
            flow.request.headers.get("accept").is_none(),
            "the list replaces the headers"
        );
        assert_eq!(&flow.request.body.content[..], b"body");
        assert_eq!(flow.response.as_ref().unwrap().status, 404);
        assert_eq!(&flow.response.as_ref().unwrap().body.content[..], b"ok");
        assert_eq!(flow.annotations.comment, "look");
        assert!(flow.annotations.modified);
    }

    #[test]
    fn a_comment_or_mark_alone_is_not_a_modification() {
        let mut flow = flow();
        let edit = FlowEdit {
            marked: Some(true),
            comment: Some("later".into()),
            ..FlowEdit::default()
        };
        apply_edit(&mut flow, &edit).unwrap();
        assert!(flow.marked);
        assert!(!flow.annotations.modified);
    }

    #[test]
    fn an_invalid_edit_changes_nothing() {
        let original = flow();
        for bad in [
            r#"{"request": {"method": "GE T"}}"#,
            r#"{"request": {"path": "no-slash"}}"#,
            r#"{"request": {"headers": [["bad name", "v"]]}}"#,
            r#"{"request": {"headers": [["x", "two\nlines"]]}}"#,
            r#"{"request": {"scheme": "ftp"}}"#,
            r#"{"request": {"method": "PUT", "port": 0}}"#,
            r#"{"response": {"status_code": 42}}"#,
        ] {
            let mut flow = original.clone();
            let edit: FlowEdit = serde_json::from_str(bad).unwrap();
            assert!(apply_edit(&mut flow, &edit).is_err(), "{bad}");
            assert_eq!(flow, original, "{bad}");
        }
    }

    #[test]
    fn certificate_choices_read_as_tagged_json() {
        let file: CertificateChoice =
            serde_json::from_str(r#"{"certificate": "file", "path": "/tmp/me.pem"}"#).unwrap();
        assert_eq!(
            file,
            CertificateChoice::File {
                path: "/tmp/me.pem".into()
            }
        );
        let none: CertificateChoice = serde_json::from_str(r#"{"certificate": "none"}"#).unwrap();
        assert_eq!(none, CertificateChoice::None);
    }
}
