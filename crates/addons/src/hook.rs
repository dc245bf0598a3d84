//! The scripts as an exchange hook: the request and response points call the
//! worker when a script defines a hook for them, and what the scripts changed goes
//! into the flow and onto the wire. The hooks that only observe (`error`,
//! `tls_event`, WebSocket messages) follow the live feed instead.

use std::sync::Arc;

use bytes::Bytes;

use periscope_flow::live::{FlowReceiver, RecvError};
use periscope_flow::{Flow, FlowErrorKind, FlowEvent, FlowId, LogLevel, Milestone};
use periscope_proxy::{
    answer_from, rebuild_request, rebuild_response, ClientHelloInfo, ExchangeHook, FlowRecorder,
    HelloVerdict, HookFuture, LiveTimeouts, RequestVerdict, ResponseVerdict, StageBody,
};
use serde_json::Value;

use crate::protocol::{self, BodySide, Changes, FlowHook};
use crate::select::ScriptFilter;
use crate::worker::{CallError, LogSink, Reply, Step, Worker};

pub struct AddonsHook {
    worker: Arc<Worker>,
    body_limit: usize,
    timeouts: LiveTimeouts,
    filter: ScriptFilter,
}

impl AddonsHook {
    pub fn new(
        worker: Arc<Worker>,
        body_limit: usize,
        timeouts: LiveTimeouts,
        filter: ScriptFilter,
    ) -> Self {
        AddonsHook {
            worker,
            body_limit,
            timeouts,
            filter,
        }
    }

    /// Whether the scripts are given this flow now (`--scripts-filter`).
    fn selects(&self, flow: &FlowRecorder) -> bool {
        !self.filter.is_set() || flow.read(|f| self.filter.selects(f)).unwrap_or(false)
    }

    /// Calls `hook` with the flow as it is now, its bodies left out: the one a script
    /// reads is sent then, `body` (the stage's, still streaming) read whole for it. A
    /// failure is noted on the flow and the flow goes on unchanged.
    async fn call(
        &self,
        flow: &FlowRecorder,
        hook: FlowHook,
        mut body: Option<&mut StageBody>,
    ) -> Result<Option<Changes>, Killed> {
        let Some(mut json) = flow.read(|f| protocol::flow_json(f, false)) else {
            return Ok(None);
        };
        let mut deferred = Vec::new();
        for &side in hook.readable_bodies() {
            match self
                .body_at_hand(flow, hook, side, body.as_deref_mut())
                .await
            {
                Some(content) => {
                    json[side.name()]["content"] = Value::String(protocol::base64(&content))
                }
                None => deferred.push(side.name()),
            }
        }
        let extra = [("deferred", Value::from(deferred))];
        let mut call = self.worker.start_call(hook, json, &extra);
        let answered = async {
            loop {
                match call.next().await {
                    Ok(Step::Done(reply)) => break Ok(*reply),
                    Ok(Step::WantsBody(side)) => {
                        let deadline = call.body_deadline();
                        let content = self
                            .body_for(flow, hook, side, body.as_deref_mut(), deadline)
                            .await;
                        call.send_body(side, content.as_ref());
                    }
                    Err(error) => break Err(error),
                }
            }
        };
        // A flow killed meanwhile waits no more: dropping the call tells the worker
        // (a body it waits for is answered with none) and the supervisor.
        let reply = tokio::select! {
            reply = answered => reply,
            reason = killed(flow) => return Err(Killed(reason)),
        };
        Ok(settle(flow, hook, reply))
    }

    /// A small body that is already whole, sent with the call: a script that reads it
    /// then needs no round trip, and nothing waits for it. Whatever has not arrived
    /// yet is not waited for (the stage's body goes on as it was, what was read put
    /// back in front), and a larger body is left to be asked for.
    async fn body_at_hand(
        &self,
        flow: &FlowRecorder,
        hook: FlowHook,
        side: BodySide,
        body: Option<&mut StageBody>,
    ) -> Option<Bytes> {
        let limit = self.body_limit.min(BODY_AT_HAND);
        if side != stage_side(hook) {
            return recorded_request_body(flow).filter(|whole| whole.len() <= limit);
        }
        let idle = self.timeouts.get().body_idle;
        let now = tokio::time::Instant::now();
        // A body read whole before (by the rules, the intercept) may be larger.
        body?
            .read_whole_into(flow, side.into(), limit, idle, Some(now))
            .await
            .filter(|whole| whole.len() <= limit)
    }

    /// The body a script of `hook` reads: the stage's own read whole (and recorded
    /// whole on the flow), or the request's as recorded when the response's hooks
    /// read it (once it was read to its end). `None` when it is not whole: over
    /// `--body-limit`, not arrived by `deadline` (the worker waits for it, so not
    /// longer than the call may last), or not one this hook sees.
    async fn body_for(
        &self,
        flow: &FlowRecorder,
        hook: FlowHook,
        side: BodySide,
        body: Option<&mut StageBody>,
        deadline: tokio::time::Instant,
    ) -> Option<Bytes> {
        if !hook.readable_bodies().contains(&side) {
            return None;
        }
        if side != stage_side(hook) {
            return recorded_request_body(flow);
        }
        let idle = self.timeouts.get().body_idle;
        let whole = body?
            .read_whole_into(flow, side.into(), self.body_limit, idle, Some(deadline))
            .await;
        if whole.is_none() {
            flow.push_note(format!(
                "addon: the `{}` hook read the {} body, which was not given to it (larger \
                 than --body-limit, or not whole within --scripts-timeout); it streamed on",
                hook.name(),
                side.name()
            ));
        }
        whole
    }
}

/// The request body as recorded, when the response's hooks read it: only when it was
/// kept whole and read to its end (a server may answer before an upload ended).
fn recorded_request_body(flow: &FlowRecorder) -> Option<Bytes> {
    flow.read(|f| {
        let whole =
            !f.request.body.truncated && f.timeline.milestone(Milestone::RequestComplete).is_some();
        whole.then(|| f.request.body.content.clone())
    })
    .flatten()
}

/// Bodies up to this size that are already whole go with the call.
const BODY_AT_HAND: usize = 16 * 1024;

/// The body a hook's own stage reads: the request's at `request`, the response's at
/// `response`.
fn stage_side(hook: FlowHook) -> BodySide {
    match hook {
        FlowHook::Request | FlowHook::RequestHeaders => BodySide::Request,
        _ => BodySide::Response,
    }
}

/// The flow was killed while its hook ran: it ends (a body read for the hook may be
/// gone with the wait).
struct Killed(String);

/// Ready, with why, once the flow is killed (never for a flow nobody can kill).
async fn killed(flow: &FlowRecorder) -> String {
    match flow.kill_switch() {
        Some(switch) => {
            std::future::poll_fn(|cx| switch.poll_killed(cx)).await;
            switch.reason()
        }
        None => std::future::pending().await,
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
            if !self.selects(flow) {
                return RequestVerdict::Continue;
            }
            for hook in [FlowHook::RequestHeaders, FlowHook::Request] {
                if !hooks.contains(hook) {
                    continue;
                }
                let changes = match self.call(flow, hook, Some(&mut *body)).await {
                    Ok(Some(changes)) => changes,
                    Ok(None) => continue,
                    Err(Killed(reason)) => return RequestVerdict::Kill(reason),
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
            if !self.selects(flow) {
                return ResponseVerdict::Continue;
            }
            for hook in [FlowHook::ResponseHeaders, FlowHook::Response] {
                if !hooks.contains(hook) {
                    continue;
                }
                // After a 101 the connection is another protocol's: no body to read.
                let readable =
                    (head.status != http::StatusCode::SWITCHING_PROTOCOLS).then_some(&mut *body);
                let changes = match self.call(flow, hook, readable).await {
                    Ok(Some(changes)) => changes,
                    Ok(None) => continue,
                    Err(Killed(reason)) => return ResponseVerdict::Kill(reason),
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

/// Flows seen lately, the latest 10,000: the WebSocket flows whose end the scripts
/// were told of (enough for any update of a flow to come after its end while it is
/// still remembered), and those the filter selected.
#[derive(Default)]
struct RecentFlows {
    ids: std::collections::HashSet<FlowId>,
    order: std::collections::VecDeque<FlowId>,
}

impl RecentFlows {
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

    fn contains(&self, id: FlowId) -> bool {
        self.ids.contains(&id)
    }
}

/// Follows the live feed for the hooks that observe finished flows: `error`,
/// `tls_event` (one call per TLS event on the flow's timeline), `websocket_start`,
/// `websocket_message` and `websocket_end`. Runs until the feed closes.
pub async fn observe(
    worker: Arc<Worker>,
    mut feed: FlowReceiver,
    log: LogSink,
    filter: ScriptFilter,
) {
    let mut ended = RecentFlows::default();
    // The WebSocket flows the filter selected when their handshake completed: their
    // messages carry only the flow's id.
    let mut selected_websockets = RecentFlows::default();
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
                if flow.tcp.is_some() || !filter.selects(&flow) {
                    continue;
                }
                if completed && flow.websocket.is_some() && filter.is_set() {
                    selected_websockets.first_time(flow.id);
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
                if hooks.contains(FlowHook::WebSocketMessage)
                    && (!filter.is_set() || selected_websockets.contains(flow)) =>
            {
                // The flow as far as the message goes: its id and this message.
                let json = serde_json::json!({
                    "id": flow.to_string(),
                    "request": {"method": "GET", "scheme": "", "host": "", "port": 0, "path": "", "headers": [], "content": Value::Null},
                    "websocket": {"messages": [{
                        "from_client": message.from_client,
                        "is_text": message.text().is_some(),
                        "content": protocol::base64(&message.content),
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
    use super::RecentFlows;
    use periscope_flow::FlowId;

    #[test]
    fn a_websocket_ends_once_and_the_oldest_ends_are_forgotten_past_the_bound() {
        let mut ended = RecentFlows::default();
        let first = FlowId::new();
        assert!(ended.first_time(first));
        assert!(!ended.first_time(first), "an update after the end");
        for _ in 0..RecentFlows::REMEMBERED {
            assert!(ended.first_time(FlowId::new()));
        }
        assert_eq!(ended.ids.len(), RecentFlows::REMEMBERED);
        assert!(
            ended.first_time(first),
            "forgotten once 10,000 newer ones ended"
        );
    }
}
