//! The rules as an exchange hook: they read the flow in flight, change a copy, and
//! what they changed goes back into the flow and onto the wire.

use std::sync::Arc;

use arc_swap::ArcSwap;
use periscope_flow::Flow;
use periscope_proxy::{
    answer_from, rebuild_request, rebuild_response, ExchangeHook, FlowRecorder, HookFuture,
    LiveTimeouts, RequestVerdict, ResponseVerdict, Side, StageBody,
};

use crate::engine::RequestOutcome;
use crate::{RuleError, RuleOptions, Rules};

/// The rules in force, replaced whole when the user changes them.
pub struct RulesHook {
    current: ArcSwap<Rules>,
    body_limit: usize,
    timeouts: LiveTimeouts,
}

impl RulesHook {
    /// `body_limit`/`timeouts`: how much of a body rules may read whole, and how
    /// long they wait for each part (the proxy's `--body-limit` and its body idle
    /// timeout, as it is when they read).
    pub fn new(rules: Rules, body_limit: usize, timeouts: LiveTimeouts) -> Self {
        RulesHook {
            current: ArcSwap::from_pointee(rules),
            body_limit,
            timeouts,
        }
    }

    pub fn options(&self) -> RuleOptions {
        self.current.load().options().clone()
    }

    /// Replaces the rules with those `options` make; on an error the rules in force
    /// stay. Returns what the user should know (see [`Rules::compile`]).
    pub fn set(&self, options: &RuleOptions) -> Result<Vec<String>, RuleError> {
        let current = self.current.load_full();
        let (rules, warnings) = Rules::compile(options, Some(&current))?;
        self.current.store(Arc::new(rules));
        Ok(warnings)
    }

    /// Puts `rules` (compiled from the rules in force, see [`Rules::compile`]) in
    /// their place.
    pub fn replace(&self, rules: Rules) {
        self.current.store(Arc::new(rules));
    }

    pub fn rules(&self) -> Arc<Rules> {
        self.current.load_full()
    }
}

impl ExchangeHook for RulesHook {
    fn name(&self) -> &'static str {
        "rules"
    }

    fn may_answer_without_server(&self) -> bool {
        self.current.load().answers_requests()
    }

    fn request_head<'a>(
        &'a self,
        flow: &'a Arc<FlowRecorder>,
        head: &'a mut http::request::Parts,
        body: &'a mut StageBody,
    ) -> HookFuture<'a, RequestVerdict> {
        Box::pin(async move {
            let rules = self.current.load_full();
            if rules.is_empty() || !flow.read(|f| rules.may_change_request(f)).unwrap_or(false) {
                return RequestVerdict::Continue;
            }
            if flow.read(|f| rules.request_wants_body(f)).unwrap_or(false) {
                let idle = self.timeouts.get().body_idle;
                body.read_whole_into(flow, Side::Request, self.body_limit, idle, None)
                    .await;
            }
            let Some(mut changed) = flow.read(Flow::clone) else {
                return RequestVerdict::Continue;
            };
            let before = changed.request.clone();
            let outcome = rules.apply_to_request(&mut changed).await;
            let after = changed.request.clone();
            let applied = changed.rules.clone();
            flow.update(|f| {
                f.request = after.clone();
                f.rules = applied;
            });
            match outcome {
                RequestOutcome::Continue => {}
                RequestOutcome::Answer(response) => {
                    return RequestVerdict::Answer(answer_from(&response))
                }
                RequestOutcome::Kill(reason) => return RequestVerdict::Kill(reason),
                RequestOutcome::Close(reason) => return RequestVerdict::Close(reason),
            }
            if after == before {
                return RequestVerdict::Continue;
            }
            let body_replaced = after.body != before.body;
            if let Err(why) = rebuild_request(head, &after, body_replaced) {
                return RequestVerdict::Kill(format!("a rule made the request invalid: {why}"));
            }
            if body_replaced {
                body.replace(after.body.content.clone());
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
            let rules = self.current.load_full();
            if rules.is_empty() || !flow.read(|f| rules.may_change_response(f)).unwrap_or(false) {
                return ResponseVerdict::Continue;
            }
            // After a 101 the connection is another protocol's: no body to read.
            let wants_body = head.status != http::StatusCode::SWITCHING_PROTOCOLS
                && flow.read(|f| rules.response_wants_body(f)).unwrap_or(false);
            if wants_body {
                let idle = self.timeouts.get().body_idle;
                body.read_whole_into(flow, Side::Response, self.body_limit, idle, None)
                    .await;
            }
            let Some(mut changed) = flow.read(Flow::clone) else {
                return ResponseVerdict::Continue;
            };
            let before = changed.response.clone();
            rules.apply_to_response(&mut changed);
            let applied = changed.rules.clone();
            let after = changed.response.clone();
            flow.update(|f| {
                f.response = after.clone();
                f.rules = applied;
            });
            let (Some(before), Some(after)) = (before, after) else {
                return ResponseVerdict::Continue;
            };
            if after == before {
                return ResponseVerdict::Continue;
            }
            let body_replaced = after.body != before.body;
            if let Err(why) = rebuild_response(head, &after, body_replaced) {
                return ResponseVerdict::Kill(format!("a rule made the response invalid: {why}"));
            }
            if body_replaced {
                body.replace(after.body.content.clone());
            }
            ResponseVerdict::Continue
        })
    }
}
