//! The points of an exchange where features act on it: after the request head
//! arrived (before anything goes upstream) and after the response head arrived
//! (before anything goes back). Intercept, rules and addons each plug in here as an
//! [`ExchangeHook`]; the exchange runs the hooks in order, and a proxy without hooks
//! pays one emptiness check per point.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::recorder::FlowRecorder;

pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a hook decided about a request head.
pub enum RequestVerdict {
    /// Go on (the head may have been changed).
    Continue,
    /// Answer the client with this response; nothing is sent upstream.
    Answer(http::Response<Bytes>),
    /// End the exchange with this reason: the client gets an error, the server
    /// nothing.
    Kill(String),
}

/// What a hook decided about a response head.
pub enum ResponseVerdict {
    Continue,
    /// End the exchange: the client gets an error instead of the response.
    Kill(String),
}

/// One feature acting on exchanges. Both points default to doing nothing.
pub trait ExchangeHook: Send + Sync {
    /// A short name for the flow's notes ("intercept", "rules").
    fn name(&self) -> &'static str;

    /// The request head, before the destination is connected: it may be changed
    /// (method, URI, headers) or answered.
    fn request_head<'a>(
        &'a self,
        _flow: &'a FlowRecorder,
        _head: &'a mut http::request::Parts,
    ) -> HookFuture<'a, RequestVerdict> {
        Box::pin(std::future::ready(RequestVerdict::Continue))
    }

    /// The response head, before it goes to the client: it may be changed.
    fn response_head<'a>(
        &'a self,
        _flow: &'a FlowRecorder,
        _head: &'a mut http::response::Parts,
    ) -> HookFuture<'a, ResponseVerdict> {
        Box::pin(std::future::ready(ResponseVerdict::Continue))
    }
}

/// The hooks of a proxy, in the order they run.
#[derive(Clone, Default)]
pub struct Hooks(Vec<Arc<dyn ExchangeHook>>);

impl Hooks {
    pub fn add(&mut self, hook: Arc<dyn ExchangeHook>) {
        self.0.push(hook);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Runs every hook on the request head; the first that does not continue decides.
    pub async fn request_head(
        &self,
        flow: &FlowRecorder,
        head: &mut http::request::Parts,
    ) -> RequestVerdict {
        for hook in &self.0 {
            match hook.request_head(flow, head).await {
                RequestVerdict::Continue => {}
                decided => return decided,
            }
        }
        RequestVerdict::Continue
    }

    /// Runs every hook on the response head; the first that does not continue decides.
    pub async fn response_head(
        &self,
        flow: &FlowRecorder,
        head: &mut http::response::Parts,
    ) -> ResponseVerdict {
        for hook in &self.0 {
            match hook.response_head(flow, head).await {
                ResponseVerdict::Continue => {}
                decided => return decided,
            }
        }
        ResponseVerdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::FlowBus;
    use crate::recorder::ClientContext;
    use periscope_flow::{ConnectionInfo, Timestamp};

    struct AddHeader(&'static str);
    impl ExchangeHook for AddHeader {
        fn name(&self) -> &'static str {
            "add-header"
        }
        fn request_head<'a>(
            &'a self,
            _flow: &'a FlowRecorder,
            head: &'a mut http::request::Parts,
        ) -> HookFuture<'a, RequestVerdict> {
            head.headers.append("x-hook", self.0.parse().unwrap());
            Box::pin(std::future::ready(RequestVerdict::Continue))
        }
    }

    struct Answer;
    impl ExchangeHook for Answer {
        fn name(&self) -> &'static str {
            "answer"
        }
        fn request_head<'a>(
            &'a self,
            _flow: &'a FlowRecorder,
            _head: &'a mut http::request::Parts,
        ) -> HookFuture<'a, RequestVerdict> {
            let response = http::Response::builder()
                .status(204)
                .body(Bytes::new())
                .unwrap();
            Box::pin(std::future::ready(RequestVerdict::Answer(response)))
        }
    }

    fn recorder() -> Arc<FlowRecorder> {
        let client = ClientContext {
            info: ConnectionInfo {
                id: 1,
                peer: None,
                local: None,
                target: None,
                tls: None,
            },
            milestones: Vec::new(),
            tls: None,
            intercepted_tls: false,
            write_stall: Arc::default(),
        };
        let request = http::Request::new(());
        FlowRecorder::begin(
            FlowBus::new(),
            &client,
            &request,
            ("http", "example.test".into(), 80),
            Timestamp::now(),
        )
    }

    #[tokio::test]
    async fn hooks_run_in_order_and_the_first_answer_ends_the_chain() {
        let mut hooks = Hooks::default();
        hooks.add(Arc::new(AddHeader("first")));
        hooks.add(Arc::new(Answer));
        hooks.add(Arc::new(AddHeader("never")));
        let (mut head, ()) = http::Request::new(()).into_parts();
        let flow = recorder();
        let verdict = hooks.request_head(&flow, &mut head).await;
        assert!(matches!(verdict, RequestVerdict::Answer(r) if r.status() == 204));
        let added: Vec<_> = head.headers.get_all("x-hook").iter().collect();
        assert_eq!(added, ["first"]);
        flow.finish();
    }

    #[tokio::test]
    async fn no_hooks_means_continue() {
        let hooks = Hooks::default();
        assert!(hooks.is_empty());
        let (mut head, ()) = http::Response::new(()).into_parts();
        let flow = recorder();
        assert!(matches!(
            hooks.response_head(&flow, &mut head).await,
            ResponseVerdict::Continue
        ));
        flow.finish();
    }
}
