//! Applying the rules to a flow in flight, in mitmproxy's order: request headers,
//! then block list, anticache, anticomp, server replay, map remote, map local and the
//! request body; at the response, its headers, then its body. Once a rule answers a
//! request, the later request rules do not run (as in mitmproxy, where each addon
//! skips a flow that has a response).

use bytes::Bytes;
use periscope_flow::{AppliedRule, Body, Flow, Response};

use crate::block::{anticache, anticomp, NO_RESPONSE};
use crate::map_local::{content_type, Lookup, MAX_FILE_SIZE};
use crate::map_remote::retarget;
use crate::modify::{modify_body, modify_headers, BodyChange, ModifyHeaders};
use crate::server_replay::{empty_response, Extra, Outcome};
use crate::Rules;

/// What the request rules decided.
#[derive(Debug)]
pub enum RequestOutcome {
    /// The request goes on (perhaps changed, perhaps elsewhere).
    Continue,
    /// Answered without the server.
    Answer(Response),
    /// Killed: the client gets an error.
    Kill(String),
    /// Closed without an answer.
    Close(String),
}

fn note(flow: &mut Flow, rule: &str, spec: &str, effect: impl Into<String>) {
    flow.rules.push(AppliedRule {
        rule: rule.to_owned(),
        spec: spec.to_owned(),
        effect: effect.into(),
    });
}

impl Rules {
    /// Whether any request rule could act on `flow` (cheap: filters and URL regexes,
    /// no copy of the flow).
    pub fn may_change_request(&self, flow: &Flow) -> bool {
        if self.options.anticache || self.options.anticomp || self.server_replay.is_some() {
            return true;
        }
        let url = flow.request.url();
        self.modify_headers.iter().any(|r| r.matches(flow))
            || self.block_list.iter().any(|r| r.matches(flow))
            || self
                .map_remote
                .iter()
                .any(|r| r.matches(flow) && r.rewrite(&url).is_some())
            || self.map_local.iter().any(|r| r.matches(flow, &url))
            || self.request_wants_body(flow)
    }

    /// Whether the request body must be read whole before the rules run: a body rule
    /// matches (or its filter needs the body to tell), or server replay matches on it.
    pub fn request_wants_body(&self, flow: &Flow) -> bool {
        self.modify_body
            .iter()
            .any(|r| r.filter_reads_bodies() || r.matches(flow))
            || self.server_replay.as_ref().is_some_and(|r| r.needs_body())
    }

    /// Whether any response rule could act on `flow`.
    pub fn may_change_response(&self, flow: &Flow) -> bool {
        self.modify_headers.iter().any(|r| r.matches(flow)) || self.response_wants_body(flow)
    }

    pub fn response_wants_body(&self, flow: &Flow) -> bool {
        self.modify_body
            .iter()
            .any(|r| r.filter_reads_bodies() || r.matches(flow))
    }

    /// Applies the request rules to `flow` (its request body whole if
    /// [`Rules::request_wants_body`] said so) and records what each did.
    pub async fn apply_to_request(&self, flow: &mut Flow) -> RequestOutcome {
        let matched = matches(&self.modify_headers, flow);
        let acted = modify_headers(&self.modify_headers, &matched, &mut flow.request.headers);
        for (index, effect) in acted {
            note(
                flow,
                ModifyHeaders::OPTION,
                &self.modify_headers[index].spec,
                format!("request: {effect}"),
            );
        }

        if let Some(block) = self.block_list.iter().find(|b| b.matches(flow)) {
            let spec = block.spec.clone();
            if block.status == NO_RESPONSE {
                note(flow, "block_list", &spec, "closed without an answer");
                return RequestOutcome::Close(format!(
                    "closed without an answer by --block-list {spec:?}"
                ));
            }
            note(
                flow,
                "block_list",
                &spec,
                format!("answered {}", block.status),
            );
            return RequestOutcome::Answer(empty_response(block.status));
        }
        if self.options.anticache && anticache(&mut flow.request.headers) {
            note(
                flow,
                "anticache",
                "",
                "removed If-None-Match / If-Modified-Since",
            );
        }
        if self.options.anticomp && anticomp(&mut flow.request.headers) {
            note(flow, "anticomp", "", "Accept-Encoding: identity");
        }

        if let Some(replay) = &self.server_replay {
            let files = replay
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            match replay.answer(&flow.request) {
                Outcome::Replayed { response, source } => {
                    note(
                        flow,
                        "server_replay",
                        &files,
                        format!("answered from the recorded flow {}", source.id),
                    );
                    return RequestOutcome::Answer(*response);
                }
                Outcome::NoMatch(Extra::Forward) => {}
                Outcome::NoMatch(Extra::Kill) => {
                    note(flow, "server_replay", &files, "no recorded answer: killed");
                    return RequestOutcome::Kill(format!(
                        "no recorded answer in {files} (--server-replay-extra kill)"
                    ));
                }
                Outcome::NoMatch(Extra::Status(status)) => {
                    note(
                        flow,
                        "server_replay",
                        &files,
                        format!("no recorded answer: answered {status}"),
                    );
                    return RequestOutcome::Answer(empty_response(status));
                }
            }
        }

        for rule in &self.map_remote {
            if !rule.matches(flow) {
                continue;
            }
            let url = flow.request.url();
            let Some(target) = rule.rewrite(&url) else {
                continue;
            };
            match retarget(&mut flow.request, &target) {
                Ok(()) => note(flow, "map_remote", &rule.spec, format!("sent to {target}")),
                Err(why) => note(
                    flow,
                    "map_remote",
                    &rule.spec,
                    format!("not applied: {why}"),
                ),
            }
        }

        let url = flow.request.url();
        let mut refused = Vec::new();
        for rule in &self.map_local {
            if !rule.matches(flow, &url) {
                continue;
            }
            match rule.lookup(&url) {
                Lookup::File(path) => match read_file(&path).await {
                    Ok(content) => {
                        note(
                            flow,
                            "map_local",
                            &rule.spec,
                            format!("answered from {}", path.display()),
                        );
                        let mut response = empty_response(200);
                        if let Some(kind) = content_type(&path) {
                            response.headers.push("content-type", kind.into_bytes());
                        }
                        response.body = Body::complete(content);
                        return RequestOutcome::Answer(response);
                    }
                    Err(why) => refused.push((rule.spec.clone(), why)),
                },
                Lookup::NotFound(why) => refused.push((rule.spec.clone(), why)),
            }
        }
        if let Some((spec, why)) = refused.into_iter().next() {
            note(flow, "map_local", &spec, format!("404: {why}"));
            let mut response = empty_response(404);
            response
                .headers
                .push("content-type", b"text/plain; charset=utf-8".to_vec());
            // The reason names local paths: it stays on the flow (the note above), for
            // the user; the client, possibly another machine, learns only the outcome.
            response.body = Body::complete(Bytes::from_static(
                b"Periscope map_local: no local file for this URL (the flow's rules say why)\n",
            ));
            return RequestOutcome::Answer(response);
        }

        for rule in &self.modify_body {
            if !rule.matches(flow) {
                continue;
            }
            let headers = flow.request.headers.clone();
            match modify_body(rule, &headers, &mut flow.request.body) {
                BodyChange::Unchanged => {}
                BodyChange::Changed { replacements } => note(
                    flow,
                    "modify_body",
                    &rule.spec,
                    format!("request: {replacements} replaced"),
                ),
                BodyChange::Failed(why) => note(
                    flow,
                    "modify_body",
                    &rule.spec,
                    format!("request: not applied: {why}"),
                ),
            }
        }
        RequestOutcome::Continue
    }

    /// Applies the response rules to `flow` (its response body whole if
    /// [`Rules::response_wants_body`] said so).
    pub fn apply_to_response(&self, flow: &mut Flow) {
        if flow.response.is_none() {
            return;
        }
        let matched = matches(&self.modify_headers, flow);
        let mut notes = Vec::new();
        if let Some(response) = flow.response.as_mut() {
            for (index, effect) in
                modify_headers(&self.modify_headers, &matched, &mut response.headers)
            {
                notes.push((
                    ModifyHeaders::OPTION,
                    self.modify_headers[index].spec.clone(),
                    format!("response: {effect}"),
                ));
            }
        }
        for (rule, spec, effect) in notes {
            note(flow, rule, &spec, effect);
        }
        for rule in &self.modify_body {
            if !rule.matches(flow) {
                continue;
            }
            let Some(response) = flow.response.as_mut() else {
                return;
            };
            let headers = response.headers.clone();
            let effect = match modify_body(rule, &headers, &mut response.body) {
                BodyChange::Unchanged => continue,
                BodyChange::Changed { replacements } => {
                    format!("response: {replacements} replaced")
                }
                BodyChange::Failed(why) => format!("response: not applied: {why}"),
            };
            note(flow, "modify_body", &rule.spec, effect);
        }
    }
}

fn matches(rules: &[ModifyHeaders], flow: &Flow) -> Vec<bool> {
    rules.iter().map(|r| r.matches(flow)).collect()
}

async fn read_file(path: &std::path::Path) -> Result<Bytes, String> {
    let size = tokio::fs::metadata(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if size > MAX_FILE_SIZE {
        return Err(format!(
            "{} has {size} bytes, more than the {MAX_FILE_SIZE} map_local serves",
            path.display()
        ));
    }
    tokio::fs::read(path)
        .await
        .map(Bytes::from)
        .map_err(|e| format!("{}: {e}", path.display()))
}
