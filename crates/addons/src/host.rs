//! The scripts as the user sets them while the proxy runs (the options page, the
//! console, `PUT /options`): one exchange hook, installed once, in front of whatever
//! worker runs now. Changing the scripts starts a worker with the new ones (an error
//! in them leaves the running ones in place), swaps it in, then runs the old ones'
//! `done` and stops their worker. With no scripts the hook passes every flow on at
//! once: no worker, no call.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use periscope_proxy::{
    ClientHelloInfo, ExchangeHook, FlowBus, FlowRecorder, HelloVerdict, HookFuture, RequestVerdict,
    ResponseVerdict, StageBody,
};

use crate::{Addons, AddonsConfig, ScriptFilter, StartError};

pub struct ScriptHost {
    /// How workers are started; its `scripts` are the ones asked for last.
    config: Mutex<AddonsConfig>,
    bus: FlowBus,
    running: ArcSwapOption<Addons>,
    /// One change at a time: two at once would each stop the other's worker.
    changing: tokio::sync::Mutex<()>,
    /// Shut down: no scripts start any more.
    closed: AtomicBool,
}

impl ScriptHost {
    /// Runs `config.scripts` (none: nothing runs until some are set).
    pub async fn start(config: AddonsConfig, bus: &FlowBus) -> Result<ScriptHost, StartError> {
        let running = start_any(&config, bus).await?;
        Ok(ScriptHost {
            config: Mutex::new(config),
            bus: bus.clone(),
            running: ArcSwapOption::new(running),
            changing: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
        })
    }

    /// The scripts running, as the user named them.
    pub fn scripts(&self) -> Vec<PathBuf> {
        self.config().scripts.clone()
    }

    fn config(&self) -> std::sync::MutexGuard<'_, AddonsConfig> {
        self.config.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `scripts` instead of the ones running; a script that does not load is an
    /// error naming it, and the scripts running stay. So does a change that could not
    /// be made by `deadline` (its caller stopped waiting) or after a shutdown.
    pub async fn set_scripts(
        &self,
        scripts: Vec<PathBuf>,
        deadline: std::time::Instant,
    ) -> Result<(), StartError> {
        let _one_at_a_time = self.changing.lock().await;
        if self.closed.load(Ordering::SeqCst) {
            return Err(StartError::NotReady("Periscope is shutting down".into()));
        }
        let mut config = self.config().clone();
        if config.scripts == scripts {
            return Ok(());
        }
        config.scripts = scripts;
        // The options set for the scripts at start need not concern these.
        config.strict_options = false;
        let started = start_any(&config, &self.bus).await?;
        let late = std::time::Instant::now() > deadline;
        if late || self.closed.load(Ordering::SeqCst) {
            if let Some(started) = started {
                started.shutdown().await;
            }
            return Err(StartError::NotReady(if late {
                "the scripts took too long to load; the ones running stay".into()
            } else {
                "Periscope is shutting down".into()
            }));
        }
        let stopped = self.running.swap(started);
        *self.config() = config;
        if let Some(stopped) = stopped {
            stopped.shutdown().await;
        }
        Ok(())
    }

    /// `--scripts-filter`: the flows the scripts are given (changed through it, the
    /// running scripts see the change at their next flow).
    pub fn filter(&self) -> ScriptFilter {
        self.config().filter.clone()
    }

    /// Runs the scripts' `done` hooks and stops the worker (after a change under
    /// way, which then starts nothing).
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _no_change_under_way = self.changing.lock().await;
        if let Some(running) = self.running.swap(None) {
            running.shutdown().await;
        }
    }

    /// The exchange hook to install in the proxy's `hooks`.
    pub fn hook(self: &Arc<Self>) -> Arc<dyn ExchangeHook> {
        Arc::clone(self) as Arc<dyn ExchangeHook>
    }
}

/// The scripts of `config` running, or nothing when it names none.
async fn start_any(
    config: &AddonsConfig,
    bus: &FlowBus,
) -> Result<Option<Arc<Addons>>, StartError> {
    if config.scripts.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(Addons::start(config.clone(), bus).await?)))
}

impl ExchangeHook for ScriptHost {
    fn name(&self) -> &'static str {
        "addons"
    }

    fn may_answer_without_server(&self) -> bool {
        self.running.load().is_some()
    }

    fn client_hello<'a>(&'a self, hello: &'a ClientHelloInfo) -> HookFuture<'a, HelloVerdict> {
        let running = self.running.load_full();
        Box::pin(async move {
            match running {
                Some(addons) => addons.hook.client_hello(hello).await,
                None => HelloVerdict::Intercept,
            }
        })
    }

    fn request_head<'a>(
        &'a self,
        flow: &'a Arc<FlowRecorder>,
        head: &'a mut http::request::Parts,
        body: &'a mut StageBody,
    ) -> HookFuture<'a, RequestVerdict> {
        let running = self.running.load_full();
        Box::pin(async move {
            match running {
                Some(addons) => addons.hook.request_head(flow, head, body).await,
                None => RequestVerdict::Continue,
            }
        })
    }

    fn response_head<'a>(
        &'a self,
        flow: &'a Arc<FlowRecorder>,
        head: &'a mut http::response::Parts,
        body: &'a mut StageBody,
    ) -> HookFuture<'a, ResponseVerdict> {
        let running = self.running.load_full();
        Box::pin(async move {
            match running {
                Some(addons) => addons.hook.response_head(flow, head, body).await,
                None => ResponseVerdict::Continue,
            }
        })
    }
}
