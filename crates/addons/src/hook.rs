//! The scripts as an exchange hook: the request and response points call the
//! worker when a script defines a hook for them, and what the scripts changed goes
//! into the flow and onto the wire. The hooks that only observe (`error`,
//! `tls_event`, WebSocket messages) follow the live feed instead.

use std::sync::Arc;
use std::time::Duration;

use periscope_flow::live::{FlowReceiver, RecvError};
use periscope_flow::{Body, Flow, FlowErrorKind, FlowEvent, FlowId, LogLevel};
use periscope_proxy::{
    answer_from, rebuild_request, rebuild_response, ClientHelloInfo, ExchangeHook, FlowRecorder,
    HelloVerdict, HookFuture, RequestVerdict, ResponseVerdict, StageBody,
};
use serde_json::Value;

use crate::protocol::{self, Changes, FlowHook};
use crate::worker::{CallError, LogSink, Reply, Worker};

pub struct AddonsHook {
    worker: Arc<Worker>,
    body_limit: usize,
    body_idle: Duration,
}

impl AddonsHook {
    pub fn new(worker: Arc<Worker>, body_limit: usize, body_idle: Duration) -> Self {
        AddonsHook {
            worker,
            body_limit,
            body_idle,
        }
    }

    /// Calls `hook` with the flow as it is now; a failure is noted on the flow and
    /// the flow goes on unchanged.
    async fn call(&self, flow: &FlowRecorder, hook: FlowHook) -> Option<Changes> {
        let json = flow.read(|f| protocol::flow_json(f, hook.reads_body()))?;
        let reply = self.worker.call(hook, json, None).await;
        settle(flow, hook, reply)
    }
}

/// What a call's outcome leaves on the flow; the changes to apply, if any.
fn settle(flow: &FlowRecorder, hook: FlowHook, reply: Result<Reply, CallError>) -> Option<Changes> {
    match reply {
        Ok(reply) => {
            for error in reply.errors {
                flow.push_note(format!("addon: {error} (the flow went on unchanged by it)"));
            }
            Some(reply.changes).filter(|c| !c.is_empty())
        }
        Err(CallError::Timeout(limit)) => {
            let message = format!(
                "addon: the `{}` hook took longer than {limit:?} (--scripts-timeout) and was abandoned for this flow",
                hook.name()
            );
            flow.push_note(message.clone());
            flow.set_error(FlowErrorKind::Other, message);
            None
        }
        Err(CallError::WorkerGone) => {
            flow.push_note(format!(
                "addon: the worker stopped during the `{}` hook; the flow went on unchanged",
                hook.name()
            ));
            None
        }
    }
}

/// Marks, comments and intercept requests: the same at every point.
fn apply_annotations(flow: &FlowRecorder, changes: &Changes) {
    if changes.marked.is_some() || changes.comment.is_some() {
        flow.update(|f| {
            if let Some(marked) = changes.marked {
                f.marked = marked;
            }
            if let Some(comment) = &changes.comment {
                f.annotations.comment.clone_from(comment);
            }
        });
    }
    match changes.intercept {
        Some(true) if !flow.ask_intercept(true) => flow.push_note(
            "addon: flow.intercept() asked for a pause nobody could resume (no console or --api); \
             the flow went on"
                .into(),
        ),
        Some(false) => {
            flow.ask_intercept(false);
        }
        _ => {}
    }
}

impl ExchangeHook for AddonsHook {
    fn name(&self) -> &'static str {
        "addons"
    }

    fn client_hello<'a>(&'a self, hello: &'a ClientHelloInfo) -> HookFuture<'a, HelloVerdict> {
        Box::pin(async move {
            if !self.worker.hooks().contains(FlowHook::TlsClientHello) {
                return HelloVerdict::Intercept;
            }
            let data = protocol::client_hello_json(hello);
            match self
                .worker
                .call(
                    FlowHook::TlsClientHello,
                    Value::Null,
                    Some(("client_hello", data)),
                )
                .await
            {
                Ok(reply) if reply.changes.ignore_connection => HelloVerdict::PassThrough,
                // A hook that raised, timed out or lost its worker: Periscope intercepts
                // as it would without scripts (the worker logged why).
                _ => HelloVerdict::Intercept,
            }
        })
    }

    fn request_head<'a>(
        &'a self,
        flow: &'a Arc<FlowRecorder>,
        head: &'a mut http::request::Parts,
        body: &'a mut StageBody,
    ) -> HookFuture<'a, RequestVerdict> {
        Box::pin(async move {
            let hooks = self.worker.hooks();
            for hook in [FlowHook::RequestHeaders, FlowHook::Request] {
                if !hooks.contains(hook) {
                    continue;
                }
                if hook.reads_body() {
                    if let Some(whole) = body.read_whole(self.body_limit, self.body_idle).await {
                        let whole = whole.clone();
                        flow.update(|f| f.request.body = Body::complete(whole));
                    }
                }
                let Some(changes) = self.call(flow, hook).await else {
                    continue;
                };
                match apply_request(flow, head, body, &changes) {
                    RequestVerdict::Continue => {}
                    decided => return decided,
                }
            }
            RequestVerdict::Continue
        })
    }

    fn response_head<'a>(
        &'a self,
        flow: &'a Arc<FlowRecorder>,
        head: &'a mut http::response::Parts,
        body: &'a mut StageBody,
    ) -> HookFuture<'a, ResponseVerdict> {
        Box::pin(async move {
            let hooks = self.worker.hooks();
            for hook in [FlowHook::ResponseHeaders, FlowHook::Response] {
                if !hooks.contains(hook) {
                    continue;
                }
                // After a 101 the connection is another protocol's: no body to read.
                if hook.reads_body() && head.status != http::StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(whole) = body.read_whole(self.body_limit, self.body_idle).await {
                        let whole = whole.clone();
                        flow.update(|f| {
                            if let Some(response) = f.response.as_mut() {
                                response.body = Body::complete(whole);
                            }
                        });
                    }
                }
                let Some(changes) = self.call(flow, hook).await else {
                    continue;
                };
                match apply_response(flow, head, body, &changes) {
                    ResponseVerdict::Continue => {}
                    decided => return decided,
                }
            }
            ResponseVerdict::Continue
        })
    }
}

fn apply_request(
    flow: &FlowRecorder,
    head: &mut http::request::Parts,
    body: &mut StageBody,
    changes: &Changes,
) -> RequestVerdict {
    apply_annotations(flow, changes);
    if changes.kill {
        return RequestVerdict::Kill("killed by an addon script (flow.kill())".into());
    }
    if let Some(request_changes) = &changes.request {
        let Some(mut request) = flow.read(|f| f.request.clone()) else {
            return RequestVerdict::Continue;
        };
        let body_replaced = match protocol::apply_to_request(&mut request, request_changes) {
            Ok(replaced) => replaced,
            Err(error) => {
                flow.push_note(format!("addon: {error}; the request went on unchanged"));
                return RequestVerdict::Continue;
            }
        };
        if let Err(why) = rebuild_request(head, &request, body_replaced) {
            return RequestVerdict::Kill(format!(
                "an addon script made the request invalid: {why}"
            ));
        }
        if body_replaced {
            body.replace(request.body.content.clone());
        }
        flow.update(|f| {
            f.request = request;
            f.annotations.modified = true;
        });
    }
    if let Some(response_changes) = &changes.response {
        // `flow.response = http.Response.make(...)` in a request hook: the answer.
        return match protocol::new_response(response_changes) {
            Ok(response) => RequestVerdict::Answer(answer_from(&response)),
            Err(error) => RequestVerdict::Kill(format!("an addon script's answer: {error}")),
        };
    }
    RequestVerdict::Continue
}

fn apply_response(
    flow: &FlowRecorder,
    head: &mut http::response::Parts,
    body: &mut StageBody,
    changes: &Changes,
) -> ResponseVerdict {
    apply_annotations(flow, changes);
    if changes.kill {
        return ResponseVerdict::Kill("killed by an addon script (flow.kill())".into());
    }
    let Some(response_changes) = &changes.response else {
        return ResponseVerdict::Continue;
    };
    let current = flow.read(|f| f.response.clone()).flatten();
    let (response, body_replaced) = match (changes.response_new, current) {
        (false, Some(mut response)) => {
            match protocol::apply_to_response(&mut response, response_changes) {
                Ok(replaced) => (response, replaced),
                Err(error) => {
                    flow.push_note(format!("addon: {error}; the response went on unchanged"));
                    return ResponseVerdict::Continue;
                }
            }
        }
        _ => match protocol::new_response(response_changes) {
            Ok(response) => (response, true),
            Err(error) => {
                flow.push_note(format!("addon: {error}; the response went on unchanged"));
                return ResponseVerdict::Continue;
            }
        },
    };
    if let Err(why) = rebuild_response(head, &response, body_replaced) {
        return ResponseVerdict::Kill(format!("an addon script made the response invalid: {why}"));
    }
    if body_replaced {
        body.replace(response.body.content.clone());
    }
    flow.update(|f| {
        f.response = Some(response);
        f.annotations.modified = true;
    });
    ResponseVerdict::Continue
}

/// The WebSocket flows whose end the scripts were told of, the latest 10,000: enough
/// for any update of a flow to come after its end while it is still remembered.
#[derive(Default)]
struct EndedWebSockets {
    ids: std::collections::HashSet<FlowId>,
    order: std::collections::VecDeque<FlowId>,
}

impl EndedWebSockets {
    const REMEMBERED: usize = 10_000;

    /// True the first time `id` is given.
    fn first_time(&mut self, id: FlowId) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        true
    }
}

/// Follows the live feed for the hooks that observe finished flows: `error`,
/// `tls_event` (one call per TLS event on the flow's timeline), `websocket_start`,
/// `websocket_message` and `websocket_end`. Runs until the feed closes.
pub async fn observe(worker: Arc<Worker>, mut feed: FlowReceiver, log: LogSink) {
    let mut ended = EndedWebSockets::default();
    loop {
        let event = match feed.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(missed)) => {
                log(
                    LogLevel::Warn,
                    format!("addon: {missed} events went by before the scripts saw them"),
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let hooks = worker.hooks();
        // A flow is completed once; it is updated later only when its WebSocket
        // closes, which is for websocket_end alone.
        let completed = matches!(event, FlowEvent::Completed(_));
        match event {
            FlowEvent::Completed(flow) | FlowEvent::Updated(flow) => {
                if flow.tcp.is_some() {
                    continue;
                }
                if completed && hooks.contains(FlowHook::TlsEvent) {
                    for (_, event) in flow.timeline.tls_events() {
                        let json = protocol::flow_json(&flow, false);
                        let extra = ("event", protocol::tls_event_json(event));
                        report(
                            &log,
                            &flow,
                            FlowHook::TlsEvent,
                            worker.call(FlowHook::TlsEvent, json, Some(extra)).await,
                        );
                    }
                }
                // The opening handshake completed: the conversation begins.
                if completed && hooks.contains(FlowHook::WebSocketStart) && flow.websocket.is_some()
                {
                    let json = protocol::flow_json(&flow, false);
                    report(
                        &log,
                        &flow,
                        FlowHook::WebSocketStart,
                        worker.call(FlowHook::WebSocketStart, json, None).await,
                    );
                }
                if completed && hooks.contains(FlowHook::Error) && flow.error.is_some() {
                    let json = protocol::flow_json(&flow, false);
                    report(
                        &log,
                        &flow,
                        FlowHook::Error,
                        worker.call(FlowHook::Error, json, None).await,
                    );
                }
                let ws_closed = flow
                    .websocket
                    .as_ref()
                    .is_some_and(|ws| ws.closed_at.is_some());
                // A closed WebSocket flow is updated again by the user's edits, marks
                // and reverts, and copied by a duplicate: its end is called once, for
                // the conversation that really happened.
                if hooks.contains(FlowHook::WebSocketEnd)
                    && ws_closed
                    && flow.annotations.duplicate_of.is_none()
                    && ended.first_time(flow.id)
                {
                    let json = protocol::flow_json(&flow, false);
                    report(
                        &log,
                        &flow,
                        FlowHook::WebSocketEnd,
                        worker.call(FlowHook::WebSocketEnd, json, None).await,
                    );
                }
            }
            FlowEvent::WebSocketMessage { flow, message }
                if hooks.contains(FlowHook::WebSocketMessage) =>
            {
                // The flow as far as the message goes: its id and this message.
                let json = serde_json::json!({
                    "id": flow.to_string(),
                    "request": {"method": "GET", "scheme": "", "host": "", "port": 0, "path": "", "headers": [], "content": Value::Null},
                    "websocket": {"messages": [{
                        "from_client": message.from_client,
                        "is_text": message.text().is_some(),
                        "content": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &message.content),
                        "timestamp": message.at.as_secs_f64(),
                    }]},
                });
                let reply = worker.call(FlowHook::WebSocketMessage, json, None).await;
                if let Err(error) = reply {
                    log(
                        LogLevel::Warn,
                        format!("addon: websocket_message of flow {flow}: {error:?}"),
                    );
                }
            }
            _ => {}
        }
    }
}

/// An observing hook's failure goes to the event log (its flow is already recorded).
fn report(log: &LogSink, flow: &Flow, hook: FlowHook, reply: Result<Reply, CallError>) {
    match reply {
        Ok(_) => {}
        Err(CallError::Timeout(limit)) => log(
            LogLevel::Error,
            format!(
                "addon: the `{}` hook of flow {} took longer than {limit:?} and was abandoned",
                hook.name(),
                flow.id
            ),
        ),
        Err(CallError::WorkerGone) => log(
            LogLevel::Warn,
            format!(
                "addon: the worker stopped during the `{}` hook of flow {}",
                hook.name(),
                flow.id
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::EndedWebSockets;
    use periscope_flow::FlowId;

    #[test]
    fn a_websocket_ends_once_and_the_oldest_ends_are_forgotten_past_the_bound() {
        let mut ended = EndedWebSockets::default();
        let first = FlowId::new();
        assert!(ended.first_time(first));
        assert!(!ended.first_time(first), "an update after the end");
        for _ in 0..EndedWebSockets::REMEMBERED {
            assert!(ended.first_time(FlowId::new()));
        }
        assert_eq!(ended.ids.len(), EndedWebSockets::REMEMBERED);
        assert!(
            ended.first_time(first),
            "forgotten once 10,000 newer ones ended"
        );
    }
}
