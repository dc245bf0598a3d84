//! Periscope's addons: mitmproxy-style Python scripts (`-s script.py`), run in a
//! worker process Periscope starts, so a script that crashes, blocks or loads heavy
//! libraries never stalls or crashes the proxy. The worker runs a runtime shipped in
//! this crate (`python/`, embedded in the binary) that loads the scripts as mitmproxy
//! does and speaks the line-delimited JSON protocol of `PROTOCOL.md`.
//!
//! ```no_run
//! # async fn example(bus: periscope_proxy::FlowBus) -> Result<(), Box<dyn std::error::Error>> {
//! use periscope_addons::{Addons, AddonsConfig};
//!
//! let config = AddonsConfig::new(vec!["add_header.py".into()]);
//! let addons = Addons::start(config, &bus).await?;
//! let mut proxy_config = periscope_proxy::ProxyConfig::default();
//! proxy_config.hooks.add(addons.hook());
//! # Ok(()) }
//! ```

mod hook;
mod host;
pub mod protocol;
mod runtime;
mod select;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use periscope_proxy::{ExchangeHook, FlowBus, LiveTimeouts};

pub use crate::hook::AddonsHook;
pub use crate::host::ScriptHost;
pub use crate::select::ScriptFilter;
pub use crate::worker::{Call, CallError, Reply, StartError, Step, Worker, WorkerConfig};

/// What `-s`, `--scripts-python` and `--scripts-timeout` say, with the proxy's body
/// limits.
#[derive(Clone, Debug)]
pub struct AddonsConfig {
    pub scripts: Vec<PathBuf>,
    pub python: PathBuf,
    pub timeout: Duration,
    /// How much of a body a `request`/`response` hook gets (the proxy's
    /// `--body-limit`: a larger body streams on and the hook sees no content).
    pub body_limit: usize,
    /// The proxy's timeouts: a body a hook reads may be silent for their `body_idle`.
    pub timeouts: LiveTimeouts,
    /// Values for the scripts' own options (see [`WorkerConfig::options`]).
    pub options: serde_json::Map<String, serde_json::Value>,
    /// `--scripts-filter`: the flows the scripts are given (shared: it may change
    /// while they run).
    pub filter: ScriptFilter,
    /// See [`WorkerConfig::strict_options`].
    pub strict_options: bool,
}

impl AddonsConfig {
    pub fn new(scripts: Vec<PathBuf>) -> Self {
        AddonsConfig {
            scripts,
            python: PathBuf::from("python3"),
            timeout: Duration::from_secs(5),
            body_limit: 4 << 20,
            timeouts: LiveTimeouts::default(),
            options: serde_json::Map::new(),
            filter: ScriptFilter::default(),
            strict_options: true,
        }
    }
}

/// The running scripts.
pub struct Addons {
    worker: Arc<Worker>,
    hook: Arc<AddonsHook>,
    /// The task that gives the observing hooks the live feed.
    observer: tokio::task::JoinHandle<()>,
}

impl Addons {
    /// Starts the worker, loads the scripts (an error names the file and line of a
    /// script that does not load) and follows `bus` for the observing hooks.
    pub async fn start(config: AddonsConfig, bus: &FlowBus) -> Result<Addons, StartError> {
        let log_bus = bus.clone();
        let log: worker::LogSink = Arc::new(move |level, message| log_bus.log(level, message));
        let scripts = config
            .scripts
            .iter()
            .map(|path| std::path::absolute(path).unwrap_or_else(|_| path.clone()))
            .collect();
        let worker = Arc::new(
            Worker::start(
                WorkerConfig {
                    python: config.python.clone(),
                    scripts,
                    timeout: config.timeout,
                    options: config.options.clone(),
                    strict_options: config.strict_options,
                },
                Arc::clone(&log),
            )
            .await?,
        );
        let observer = worker.spawn_beside(hook::observe(
            Arc::clone(&worker),
            bus.subscribe(),
            log,
            config.filter.clone(),
        ));
        let hook = Arc::new(AddonsHook::new(
            Arc::clone(&worker),
            config.body_limit,
            config.timeouts.clone(),
            config.filter.clone(),
        ));
        Ok(Addons {
            worker,
            hook,
            observer,
        })
    }

    /// The exchange hook to install in the proxy's `hooks`.
    pub fn hook(&self) -> Arc<dyn ExchangeHook> {
        Arc::clone(&self.hook) as Arc<dyn ExchangeHook>
    }

    /// Runs the scripts' `done` hooks and stops the worker.
    pub async fn shutdown(&self) {
        self.worker.shutdown().await;
        self.observer.abort();
    }
}

/// The observer holds the worker, and runs on the worker's own thread: left running,
/// it would keep both alive after the scripts were let go.
impl Drop for Addons {
    fn drop(&mut self) {
        self.observer.abort();
    }
}
