//! `FlowControl` for a running proxy and its session: flows in flight through the
//! proxy's handle, recorded flows through the session store. Front ends (the console,
//! the control API) get this and nothing else of the proxy.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use periscope_addons::ScriptHost;
use periscope_control::{
    apply_edit, CertificateChoice, ControlError, FlowControl, FlowEdit, Injection, MessageDecision,
    Options, OptionsUpdate,
};
use periscope_flow::store::FlowStore;
use periscope_flow::{Flow, FlowEvent, FlowId};
use periscope_proxy::{FlowBus, ProxyControl};
use periscope_rules::{RuleOptions, Rules, RulesHook};

use crate::connection_options::{self, ConnectionOptions};

/// `"scripts_filter"`: a filter, or none (`null`, `""`).
fn script_filter(
    value: &serde_json::Value,
) -> Result<Option<(String, periscope_flow::filter::Filter)>, ControlError> {
    let Some(text) = connection_options::optional_text(value).map_err(|()| {
        ControlError::InvalidOption("scripts_filter: a filter, or an empty string for none".into())
    })?
    else {
        return Ok(None);
    };
    let filter = periscope_flow::filter::Filter::parse(text)
        .map_err(|e| ControlError::InvalidOption(format!("scripts_filter \"{text}\": {e}")))?;
    Ok(Some((text.to_owned(), filter)))
}

/// `"scripts"`: a list of paths (one path alone is taken as a list of one; an empty
/// list stops the scripts).
fn script_paths(value: &serde_json::Value) -> Result<Vec<PathBuf>, ControlError> {
    let invalid = || ControlError::InvalidOption("scripts: a list of script paths".into());
    let paths = match value {
        serde_json::Value::String(one) => vec![one.clone()],
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(invalid))
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid()),
    };
    Ok(paths
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect())
}

/// How long a clear may wait for the session store's writer (its batch in progress,
/// then the delete).
const CLEAR_WAIT: Duration = Duration::from_secs(30);

pub struct SessionControl {
    proxy: ProxyControl,
    store: Arc<FlowStore>,
    bus: FlowBus,
    /// The rules in force, changed through the options.
    rules: Option<Arc<RulesHook>>,
    /// Timeouts and server TLS as the user last set them.
    connection: Mutex<ConnectionOptions>,
    /// The `-s` scripts, when they can be set.
    scripts: Option<Arc<ScriptHost>>,
    /// Serializes `set_options`.
    changing: Mutex<()>,
    /// Where a change of scripts starts their worker (the options are set from
    /// threads outside the runtime: the API's blocking pool, the console's thread).
    runtime: tokio::runtime::Handle,
}

/// How long a change of scripts may take to load them (the worker's own limit is
/// 30 s).
const SCRIPTS_WAIT: Duration = Duration::from_secs(40);

impl SessionControl {
    /// See [`ProxyControl::proxy_address`].
    pub fn proxy_address(&self) -> std::net::SocketAddr {
        self.proxy.proxy_address()
    }

    pub fn new(
        proxy: ProxyControl,
        store: Arc<FlowStore>,
        bus: FlowBus,
        rules: Option<Arc<RulesHook>>,
        connection: ConnectionOptions,
        scripts: Option<Arc<ScriptHost>>,
    ) -> Self {
        SessionControl {
            proxy,
            store,
            bus,
            rules,
            connection: Mutex::new(connection),
            scripts,
            changing: Mutex::new(()),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The proxy's half, for what only it does (replaying a recorded flow).
    pub fn proxy(&self) -> &ProxyControl {
        &self.proxy
    }

    fn stored(&self, id: FlowId) -> Result<Flow, ControlError> {
        self.store
            .get(id)
            .map_err(store_error)?
            .ok_or(ControlError::NotFound(id))
    }

    fn is_live(&self, id: FlowId) -> bool {
        self.proxy.live_flow(id).is_some()
    }
}

fn store_error(error: impl std::fmt::Display) -> ControlError {
    ControlError::Store(error.to_string())
}

impl FlowControl for SessionControl {
    fn flow(&self, id: FlowId) -> Result<Flow, ControlError> {
        if let Some(flow) = self.proxy.live_flow(id) {
            return Ok(flow);
        }
        match self.bus.unsaved(id) {
            Some(flow) => Ok(Flow::clone(&flow)),
            None => self.stored(id),
        }
    }

    /// The proxy's flows in flight and the finished ones on their way to the store:
    /// a flow is in one of these or in the store at every moment, never in none.
    fn flows_in_flight(&self) -> Vec<Flow> {
        let mut flows = self.proxy.live_flows();
        let unsaved = self.bus.unsaved_flows();
        if !unsaved.is_empty() {
            let live: HashSet<FlowId> = flows.iter().map(|flow| flow.id).collect();
            flows.extend(
                unsaved
                    .iter()
                    .filter(|flow| !live.contains(&flow.id))
                    .map(|flow| Flow::clone(flow)),
            );
            flows.sort_by_key(|flow| flow.id);
        }
        flows
    }

    fn resume(&self, id: FlowId) -> Result<(), ControlError> {
        self.proxy.resume(id)
    }

    fn resume_all(&self) -> usize {
        self.proxy.resume_all()
    }

    fn kill(&self, id: FlowId) -> Result<(), ControlError> {
        self.proxy.kill(id)
    }

    fn kill_all(&self) -> usize {
        self.proxy.kill_paused()
    }

    fn edit(&self, id: FlowId, edit: FlowEdit) -> Result<Flow, ControlError> {
        if self.is_live(id) {
            return self.proxy.edit(id, &edit);
        }
        let mut flow = self.stored(id)?;
        apply_edit(&mut flow, &edit)?;
        let stored = if edit.request.is_none() && edit.response.is_none() {
            // A mark or a comment is the user's note, not a change of the exchange:
            // the flow is not modified and keeps no original to revert to.
            if let Some(marked) = edit.marked {
                self.store.set_marked(id, marked).map_err(store_error)?;
            }
            if let Some(comment) = &edit.comment {
                self.store.set_comment(id, comment).map_err(store_error)?;
            }
            flow
        } else {
            self.store
                .replace_edited(&flow)
                .map_err(store_error)?
                .ok_or(ControlError::NotFound(id))?
        };
        self.bus
            .publish_live(FlowEvent::Updated(Arc::new(stored.clone())));
        Ok(stored)
    }

    fn replay(&self, id: FlowId) -> Result<FlowId, ControlError> {
        let flow = self.flow(id)?;
        self.proxy.replay(&flow)
    }

    fn duplicate(&self, id: FlowId) -> Result<FlowId, ControlError> {
        if self.is_live(id) {
            return Err(ControlError::NotPossible {
                id,
                what: "duplicated",
                why: "it is still in flight".into(),
            });
        }
        let copy = self
            .store
            .duplicate(id)
            .map_err(store_error)?
            .ok_or(ControlError::NotFound(id))?;
        let copy_id = copy.id;
        self.bus.publish_live(FlowEvent::Updated(Arc::new(copy)));
        Ok(copy_id)
    }

    fn revert(&self, id: FlowId) -> Result<Flow, ControlError> {
        if self.is_live(id) {
            return Err(ControlError::NotPossible {
                id,
                what: "reverted",
                why: "it is still in flight".into(),
            });
        }
        if self.store.original(id).map_err(store_error)?.is_none() {
            self.stored(id)?;
            return Err(ControlError::NotPossible {
                id,
                what: "reverted",
                why: "it was never edited".into(),
            });
        }
        let original = self
            .store
            .revert(id)
            .map_err(store_error)?
            .ok_or(ControlError::NotFound(id))?;
        self.bus
            .publish_live(FlowEvent::Updated(Arc::new(original.clone())));
        Ok(original)
    }

    fn delete(&self, id: FlowId) -> Result<(), ControlError> {
        // A flow in flight is killed and will not be recorded; one that just ended
        // may still be on its way to the store, which deletes it again when the
        // removal reaches it (after the flow, in the bus's order).
        let was_live = self.is_live(id) && self.proxy.delete(id).is_ok();
        let was_unsaved = self.bus.unsaved(id).is_some();
        let deleted = self.store.delete(id).map_err(store_error)?;
        if !deleted && !was_live && !was_unsaved {
            return Err(ControlError::NotFound(id));
        }
        self.bus.publish(FlowEvent::Removed(id));
        Ok(())
    }

    fn clear(&self) -> Result<(), ControlError> {
        // Done by the store's writer, in order with the flows it is saving: one
        // published before the clear is dropped, one published after it is kept.
        match self.bus.publish_clear() {
            Some(generation) => self
                .bus
                .wait_cleared(generation, CLEAR_WAIT)
                .map_err(ControlError::Store),
            None => {
                self.store.clear().map_err(store_error)?;
                self.bus.cleared(0, None);
                Ok(())
            }
        }
    }

    fn choose_client_certificate(
        &self,
        id: FlowId,
        choice: CertificateChoice,
    ) -> Result<(), ControlError> {
        self.proxy.choose_client_certificate(id, choice)
    }

    fn decide_message(&self, id: FlowId, decision: MessageDecision) -> Result<(), ControlError> {
        self.proxy.decide_message(id, decision)
    }

    fn inject_message(&self, id: FlowId, message: Injection) -> Result<(), ControlError> {
        self.proxy.inject_message(id, message)
    }

    fn options(&self) -> Options {
        let mut settings = match &self.rules {
            Some(rules) => match serde_json::to_value(rules.options()) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => serde_json::Map::new(),
            },
            None => serde_json::Map::new(),
        };
        settings.extend(self.connection().to_json());
        if let Some(host) = &self.scripts {
            let scripts: Vec<String> = host
                .scripts()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            settings.insert("scripts".into(), scripts.into());
            settings.insert("scripts_filter".into(), host.filter().text().into());
        }
        Options {
            intercept: self.proxy.intercept(),
            intercept_tls: self.proxy.intercept_tls(),
            settings,
        }
    }

    fn set_options(&self, update: OptionsUpdate) -> Result<Options, ControlError> {
        // One change at a time (a change of scripts may take seconds); the options can
        // be read meanwhile.
        let _one_at_a_time = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        // Everything is checked before anything changes.
        if let Some(filter) = update.intercept.as_deref().filter(|f| !f.trim().is_empty()) {
            periscope_flow::filter::Filter::parse(filter)
                .map_err(|e| ControlError::InvalidOption(format!("intercept: {e}")))?;
        }
        let mut changes = update.settings;
        let script_filter = self.script_option(&mut changes, "scripts_filter", script_filter)?;
        let scripts = self.script_option(&mut changes, "scripts", script_paths)?;
        let (connection_changes, rule_changes): (serde_json::Map<_, _>, serde_json::Map<_, _>) =
            changes
                .into_iter()
                .partition(|(name, _)| connection_options::NAMES.contains(&name.as_str()));
        let rules = if rule_changes.is_empty() {
            None
        } else {
            Some(self.rules_with(&rule_changes)?)
        };
        let before = self.connection();
        let changed = before.with_changes(&connection_changes)?;
        let prepared = changed.prepare(&before, &self.proxy)?;
        // Last of the checks, as it is the one that changes something when it passes:
        // the scripts load, or the ones running stay.
        if let (Some(scripts), Some(host)) = (scripts, &self.scripts) {
            self.set_scripts(host, scripts)?;
        }
        prepared.commit(&self.proxy);
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = changed;
        if let (Some(filter), Some(host)) = (script_filter, &self.scripts) {
            host.filter().set(filter);
        }
        if let Some(filter) = &update.intercept {
            self.proxy.set_intercept(Some(filter))?;
        }
        if let Some(on) = update.intercept_tls {
            self.proxy.set_intercept_tls(on);
        }
        if let (Some(hook), Some((rules, warnings))) = (&self.rules, rules) {
            for warning in warnings {
                tracing::warn!("{warning}");
            }
            hook.replace(rules);
        }
        Ok(self.options())
    }
}

impl SessionControl {
    /// The option `name` taken out of `changes` and read; an option of the scripts'
    /// host, so unknown when there is none.
    fn script_option<T>(
        &self,
        changes: &mut serde_json::Map<String, serde_json::Value>,
        name: &str,
        read: fn(&serde_json::Value) -> Result<T, ControlError>,
    ) -> Result<Option<T>, ControlError> {
        match changes.remove(name) {
            Some(_) if self.scripts.is_none() => Err(ControlError::InvalidOption(format!(
                "unknown option {name:?}"
            ))),
            Some(value) => read(&value).map(Some),
            None => Ok(None),
        }
    }

    /// Runs `scripts` in place of the running ones, waiting until they loaded.
    fn set_scripts(
        &self,
        host: &Arc<ScriptHost>,
        scripts: Vec<PathBuf>,
    ) -> Result<(), ControlError> {
        let (done, outcome) = std::sync::mpsc::channel();
        let host = Arc::clone(host);
        // The host gives up a little before this thread stops waiting, so that what
        // the caller is told is what happened.
        let deadline = std::time::Instant::now() + SCRIPTS_WAIT - Duration::from_secs(5);
        self.runtime.spawn(async move {
            let _ = done.send(host.set_scripts(scripts, deadline).await);
        });
        match outcome.recv_timeout(SCRIPTS_WAIT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(ControlError::InvalidOption(format!("scripts: {error}"))),
            Err(_) => Err(ControlError::InvalidOption(format!(
                "scripts: not loaded within {SCRIPTS_WAIT:?}"
            ))),
        }
    }

    fn connection(&self) -> ConnectionOptions {
        self.connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The rules the current ones become with `changes` (options by their names),
    /// compiled; a name that is no rule option, a value of the wrong type or a
    /// pattern that does not compile is refused with the reason.
    fn rules_with(
        &self,
        changes: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(Rules, Vec<String>), ControlError> {
        let unknown = |name: &str| ControlError::InvalidOption(format!("unknown option {name:?}"));
        let hook = match &self.rules {
            Some(hook) => hook,
            None => return Err(unknown(changes.keys().next().map_or("", String::as_str))),
        };
        let serde_json::Value::Object(mut merged) = serde_json::to_value(hook.options())
            .map_err(|e| ControlError::InvalidOption(e.to_string()))?
        else {
            return Err(ControlError::InvalidOption(
                "the rule options are not a map".into(),
            ));
        };
        for (name, value) in changes {
            if !merged.contains_key(name) {
                return Err(unknown(name));
            }
            // Alone first, so that a wrong type is reported with its option's name.
            let mut alone = merged.clone();
            alone.insert(name.clone(), value.clone());
            serde_json::from_value::<RuleOptions>(serde_json::Value::Object(alone))
                .map_err(|e| ControlError::InvalidOption(format!("{name}: {e}")))?;
            merged.insert(name.clone(), value.clone());
        }
        let options: RuleOptions = serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|e| ControlError::InvalidOption(e.to_string()))?;
        Rules::compile(&options, Some(&hook.rules()))
            .map_err(|e| ControlError::InvalidOption(e.to_string()))
    }
}
