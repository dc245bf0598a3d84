//! Server replay (`--server-replay FILE`): requests are answered from a saved session
//! instead of the network, matched as mitmproxy matches them (`serverplayback.py`):
//! scheme, method, path, the query parameters, the body (or its form fields), host
//! and port, and chosen headers, each of which an option can leave out.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use periscope_flow::store::FlowStore;
use periscope_flow::{Flow, Milestone, Request, Response, Timestamp};
use serde::{Deserialize, Serialize};

/// What happens to a request no recorded flow matches (`--server-replay-extra`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Extra {
    /// It goes to the server.
    #[default]
    Forward,
    /// It is killed: the client gets an error.
    Kill,
    /// It is answered with an empty response of this status.
    Status(u16),
}

impl Extra {
    /// mitmproxy's choices: `forward`, `kill`, `204`, `400`, `404`, `500`.
    pub fn parse(text: &str) -> Result<Extra, String> {
        match text {
            "forward" => Ok(Extra::Forward),
            "kill" => Ok(Extra::Kill),
            "204" | "400" | "404" | "500" => Ok(Extra::Status(text.parse().unwrap_or(404))),
            other => Err(format!(
                "{other:?} is not one of forward, kill, 204, 400, 404, 500"
            )),
        }
    }
}

/// How recorded and live requests are matched, and what replay does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MatchOptions {
    pub use_headers: Vec<String>,
    pub ignore_content: bool,
    pub ignore_params: Vec<String>,
    pub ignore_payload_params: Vec<String>,
    pub ignore_host: bool,
    pub ignore_port: bool,
}

/// The recorded flows, by match key, each list in recording order.
pub struct ServerReplay {
    pub files: Vec<PathBuf>,
    pub matching: MatchOptions,
    pub extra: Extra,
    pub reuse: bool,
    pub refresh: bool,
    flows: Mutex<HashMap<Key, VecDeque<Arc<Flow>>>>,
    /// Flows left out when loading, and why (for the event log).
    pub skipped: Vec<String>,
}

type Key = Vec<Vec<u8>>;

/// What replay did with a request.
pub enum Outcome {
    /// Answered from this recorded flow.
    Replayed {
        response: Box<Response>,
        source: Arc<Flow>,
    },
    /// Nothing matched; `extra` says what to do.
    NoMatch(Extra),
}

impl ServerReplay {
    /// Loads every flow with a response from `files`.
    pub fn load(
        files: Vec<PathBuf>,
        matching: MatchOptions,
        extra: Extra,
        reuse: bool,
        refresh: bool,
    ) -> Result<ServerReplay, (PathBuf, String)> {
        let mut recorded = Vec::new();
        for file in &files {
            let store =
                FlowStore::open_existing(file).map_err(|e| (file.clone(), e.to_string()))?;
            store
                .for_each(None, |flow| recorded.push(flow))
                .map_err(|e| (file.clone(), e.to_string()))?;
        }
        let mut replay = ServerReplay {
            files,
            matching,
            extra,
            reuse,
            refresh,
            flows: Mutex::new(HashMap::new()),
            skipped: Vec::new(),
        };
        replay.add(recorded);
        Ok(replay)
    }

    /// Adds recorded flows, in order, after those already there.
    pub fn add(&mut self, recorded: impl IntoIterator<Item = Flow>) {
        let mut flows = self.lock();
        let mut skipped = Vec::new();
        for flow in recorded {
            let Some(response) = &flow.response else {
                continue;
            };
            if flow.tcp.is_some() {
                continue;
            }
            if response.body.truncated || flow.request.body.truncated {
                skipped.push(format!(
                    "{} {}: its body was recorded only in part (--body-limit)",
                    flow.request.method,
                    flow.request.url()
                ));
                continue;
            }
            flows
                .entry(key(&flow.request, &self.matching))
                .or_default()
                .push_back(Arc::new(flow));
        }
        drop(flows);
        self.skipped.extend(skipped);
    }

    /// How many recorded answers are left.
    pub fn remaining(&self) -> usize {
        self.lock().values().map(VecDeque::len).sum()
    }

    /// Whether matching reads the request body (it does unless told to ignore it).
    pub fn needs_body(&self) -> bool {
        !self.matching.ignore_content
    }

    /// The answer for `request`, taken from the recording (kept for the next request
    /// too with `reuse`).
    pub fn answer(&self, request: &Request) -> Outcome {
        let key = key(request, &self.matching);
        let source = {
            let mut flows = self.lock();
            let source = match flows.get_mut(&key) {
                Some(list) if self.reuse => list.front().cloned(),
                Some(list) => list.pop_front(),
                None => None,
            };
            if flows.get(&key).is_some_and(VecDeque::is_empty) {
                flows.remove(&key);
            }
            source
        };
        let Some(source) = source else {
            return Outcome::NoMatch(self.extra);
        };
        let mut response = source
            .response
            .clone()
            .unwrap_or_else(|| empty_response(200));
        if self.refresh {
            let recorded = source
                .timeline
                .milestone(Milestone::ResponseStarted)
                .or_else(|| source.timeline.milestone(Milestone::RequestStarted))
                .unwrap_or_else(Timestamp::now);
            let delta = Timestamp::now().0.saturating_sub(recorded.0) / 1_000_000;
            refresh(&mut response, delta);
        }
        Outcome::Replayed {
            response: Box::new(response),
            source,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VecDeque<Arc<Flow>>>> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An empty response with `status`, as mitmproxy's `Response.make(status)`.
pub fn empty_response(status: u16) -> Response {
    Response {
        status,
        reason: http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
            .to_owned(),
        http_version: "HTTP/1.1".to_owned(),
        stream_id: None,
        headers: Default::default(),
        body: Default::default(),
        trailers: None,
        generated: true,
    }
}

/// mitmproxy's loose match key of a request.
fn key(request: &Request, options: &MatchOptions) -> Key {
    let (path, query) = request
        .path
        .split_once('?')
        .unwrap_or((request.path.as_str(), ""));
    let mut key: Key = vec![
        request.scheme.clone().into_bytes(),
        request.method.clone().into_bytes(),
        path.as_bytes().to_vec(),
    ];
    if !options.ignore_content {
        let fields = if options.ignore_payload_params.is_empty() {
            None
        } else {
            form_fields(request).filter(|fields| !fields.is_empty())
        };
        match fields {
            Some(fields) => {
                for (name, value) in fields {
                    let ignored = options
                        .ignore_payload_params
                        .iter()
                        .any(|p| p.as_bytes() == String::from_utf8_lossy(&name).as_bytes());
                    if !ignored {
                        key.push(name);
                        key.push(value);
                    }
                }
            }
            None => key.push(request.body.content.to_vec()),
        }
    }
    if !options.ignore_host {
        key.push(request.host.to_ascii_lowercase().into_bytes());
    }
    if !options.ignore_port {
        key.push(request.port.to_string().into_bytes());
    }
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if !options.ignore_params.iter().any(|p| *p == name) {
            key.push(name.into_owned().into_bytes());
            key.push(value.into_owned().into_bytes());
        }
    }
    for name in &options.use_headers {
        key.push(name.to_ascii_lowercase().into_bytes());
        key.push(match request.headers.get(name) {
            Some(header) => [b"=".as_slice(), &header.value].concat(),
            None => b"(none)".to_vec(),
        });
    }
    key
}

/// The fields of a `multipart/form-data` or `application/x-www-form-urlencoded`
/// body, in order; `None` for any other body.
fn form_fields(request: &Request) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let content_type = request.headers.get_str("content-type")?;
    let mime = content_type.split(';').next()?.trim().to_ascii_lowercase();
    let body = request.body.content.clone();
    match mime.as_str() {
        "application/x-www-form-urlencoded" => Some(
            form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned().into_bytes(), v.into_owned().into_bytes()))
                .collect(),
        ),
        "multipart/form-data" => {
            let boundary = multer::parse_boundary(content_type.as_ref()).ok()?;
            multipart_fields(body, boundary)
        }
        _ => None,
    }
}

fn multipart_fields(body: Bytes, boundary: String) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    use futures_util::FutureExt;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    // The whole body is in memory: every step completes at its first poll.
    async move {
        let mut fields = Vec::new();
        while let Ok(Some(field)) = multipart.next_field().await {
            let name = field.name().unwrap_or("").as_bytes().to_vec();
            let value = field.bytes().await.ok()?;
            fields.push((name, value.to_vec()));
        }
        Some(fields)
    }
    .now_or_never()
    .flatten()
}

/// mitmproxy's `Response.refresh`: dates and cookie expiry moved forward by the age of
/// the recording, so a replayed answer is not stale.
fn refresh(response: &mut Response, delta_secs: i64) {
    let shift = |time: SystemTime| {
        if delta_secs >= 0 {
            time + Duration::from_secs(delta_secs as u64)
        } else {
            time - Duration::from_secs(delta_secs.unsigned_abs())
        }
    };
    for header in response.headers.0.iter_mut() {
        let name = header.name.to_ascii_lowercase();
        if matches!(name.as_str(), "date" | "expires" | "last-modified") {
            let Ok(text) = std::str::from_utf8(&header.value) else {
                continue;
            };
            if let Ok(time) = httpdate::parse_http_date(text.trim()) {
                header.value = httpdate::fmt_http_date(shift(time)).into_bytes();
            }
        } else if name == "set-cookie" {
            let Ok(text) = std::str::from_utf8(&header.value) else {
                continue;
            };
            let Ok(mut cookie) = cookie::Cookie::parse(text.to_owned()) else {
                continue;
            };
            if let Some(expires) = cookie.expires_datetime() {
                let seconds = delta_secs.clamp(-(1 << 40), 1 << 40);
                cookie.set_expires(expires + cookie::time::Duration::seconds(seconds));
                header.value = cookie.to_string().into_bytes();
            }
        }
    }
}

#[cfg(test)]
mod tests;
