//! The app under test: a session store, a `FlowControl` that plays the proxy
//! (flows in flight, intercepted or not, and a record of what it was asked), and a
//! 100x30 `TestBackend` screen.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use periscope_control::{
    apply_edit, CertificateChoice, ControlError, FlowControl, FlowEdit, Injection, MessageDecision,
    Options, OptionsUpdate,
};
use periscope_flow::filter::Filter;
use periscope_flow::store::FlowStore;
use periscope_flow::{Flow, FlowEvent, FlowId};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

use super::App;
use crate::fixtures::buffer_text;
use crate::offline::StoreControl;
use crate::ConsoleOptions;

/// The proxy's side as the console sees it: recorded flows in the store (through
/// [`StoreControl`]), flows in flight here.
pub struct FakeControl {
    store: StoreControl,
    pub live: Mutex<BTreeMap<FlowId, Flow>>,
    /// What the console asked for, one line per call: `resume ID`, `kill ID`, ...
    pub calls: Mutex<Vec<String>>,
    intercept: Mutex<Option<String>>,
    /// A few options of each kind, as the proxy reports them.
    pub settings: Mutex<serde_json::Map<String, serde_json::Value>>,
}

impl FakeControl {
    fn call(&self, line: String) {
        self.calls.lock().unwrap().push(line);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// A flow in flight, as the proxy would publish it.
    pub fn put_live(&self, flow: &Flow) {
        self.live.lock().unwrap().insert(flow.id, flow.clone());
    }

    fn release(&self, id: FlowId) -> Result<(), ControlError> {
        let mut live = self.live.lock().unwrap();
        let flow = live.get_mut(&id).ok_or(ControlError::NotFound(id))?;
        if flow.intercepted.take().is_none() {
            return Err(ControlError::NotIntercepted(id));
        }
        Ok(())
    }
}

impl FlowControl for FakeControl {
    fn flow(&self, id: FlowId) -> Result<Flow, ControlError> {
        match self.live.lock().unwrap().get(&id) {
            Some(flow) => Ok(flow.clone()),
            None => self.store.flow(id),
        }
    }

    fn flows_in_flight(&self) -> Vec<Flow> {
        self.live.lock().unwrap().values().cloned().collect()
    }

    fn resume(&self, id: FlowId) -> Result<(), ControlError> {
        self.release(id)?;
        self.call(format!("resume {id}"));
        Ok(())
    }

    fn resume_all(&self) -> usize {
        let mut live = self.live.lock().unwrap();
        let count = live
            .values_mut()
            .filter_map(|f| f.intercepted.take())
            .count();
        drop(live);
        self.call(format!("resume_all {count}"));
        count
    }

    fn kill(&self, id: FlowId) -> Result<(), ControlError> {
        self.live
            .lock()
            .unwrap()
            .remove(&id)
            .ok_or(ControlError::NotFound(id))?;
        self.call(format!("kill {id}"));
        Ok(())
    }

    fn kill_all(&self) -> usize {
        0
    }

    fn edit(&self, id: FlowId, edit: FlowEdit) -> Result<Flow, ControlError> {
        let mut live = self.live.lock().unwrap();
        match live.get_mut(&id) {
            Some(flow) => {
                if flow.intercepted.is_none() {
                    return Err(ControlError::NotIntercepted(id));
                }
                apply_edit(flow, &edit)?;
                self.call(format!("edit {id}"));
                Ok(flow.clone())
            }
            None => {
                drop(live);
                self.call(format!("edit {id}"));
                self.store.edit(id, edit)
            }
        }
    }

    fn replay(&self, id: FlowId) -> Result<FlowId, ControlError> {
        self.flow(id)?;
        self.call(format!("replay {id}"));
        Ok(FlowId::new())
    }

    fn duplicate(&self, id: FlowId) -> Result<FlowId, ControlError> {
        self.store.duplicate(id)
    }

    fn revert(&self, id: FlowId) -> Result<Flow, ControlError> {
        self.store.revert(id)
    }

    fn delete(&self, id: FlowId) -> Result<(), ControlError> {
        self.call(format!("delete {id}"));
        self.store.delete(id)
    }

    fn clear(&self) -> Result<(), ControlError> {
        self.call("clear".to_owned());
        self.store.clear()
    }

    fn choose_client_certificate(
        &self,
        id: FlowId,
        choice: CertificateChoice,
    ) -> Result<(), ControlError> {
        self.release(id)?;
        self.call(format!("certificate {id} {choice:?}"));
        Ok(())
    }

    fn decide_message(&self, id: FlowId, decision: MessageDecision) -> Result<(), ControlError> {
        self.release(id)?;
        self.call(format!("message {id} {decision:?}"));
        Ok(())
    }

    fn inject_message(&self, id: FlowId, message: Injection) -> Result<(), ControlError> {
        self.flow(id)?;
        self.call(format!("inject {id} {message:?}"));
        Ok(())
    }

    fn options(&self) -> Options {
        Options {
            intercept: self.intercept.lock().unwrap().clone(),
            intercept_tls: false,
            settings: self.settings.lock().unwrap().clone(),
        }
    }

    fn set_options(&self, update: OptionsUpdate) -> Result<Options, ControlError> {
        if let Some(text) = update.intercept {
            let text = text.trim().to_owned();
            if text.is_empty() {
                *self.intercept.lock().unwrap() = None;
            } else {
                Filter::parse(&text).map_err(|e| ControlError::InvalidOption(e.to_string()))?;
                *self.intercept.lock().unwrap() = Some(text);
            }
        }
        let mut settings = self.settings.lock().unwrap();
        for (name, value) in update.settings {
            match settings.get(&name) {
                Some(current)
                    if std::mem::discriminant(current) == std::mem::discriminant(&value) =>
                {
                    settings.insert(name, value);
                }
                Some(_) => return Err(ControlError::InvalidOption(format!("{name}: wrong type"))),
                None => {
                    return Err(ControlError::InvalidOption(format!(
                        "unknown option {name:?}"
                    )))
                }
            }
        }
        drop(settings);
        Ok(self.options())
    }
}

pub struct Harness {
    pub app: App,
    pub terminal: Terminal<TestBackend>,
    /// `None` for a console without a proxy.
    pub control: Option<Arc<FakeControl>>,
}

impl Harness {
    /// A console with a proxy (the fake one) over a session holding `flows`.
    pub fn new(flows: &[Flow]) -> Harness {
        Harness::build(flows, true)
    }

    /// A console without a proxy.
    pub fn without_proxy(flows: &[Flow]) -> Harness {
        Harness::build(flows, false)
    }

    fn build(flows: &[Flow], proxy: bool) -> Harness {
        let store = Arc::new(FlowStore::temporary().unwrap());
        for flow in flows {
            store.insert(flow).unwrap();
        }
        let control = proxy.then(|| {
            Arc::new(FakeControl {
                store: StoreControl::new(Arc::clone(&store)),
                live: Mutex::default(),
                calls: Mutex::default(),
                intercept: Mutex::default(),
                settings: Mutex::new(
                    serde_json::json!({
                        "anticomp": false,
                        "modify_headers": [],
                        "response_timeout": "1m",
                    })
                    .as_object()
                    .unwrap()
                    .clone(),
                ),
            })
        });
        let options = ConsoleOptions {
            store,
            listen: "127.0.0.1:8080".parse().unwrap(),
            session_file: None,
            ca_cert: "/tmp/ca.pem".into(),
            version: "0.0.0-test".into(),
            control: control.clone().map(|c| c as Arc<dyn FlowControl>),
        };
        Harness {
            app: App::new(&options),
            terminal: Terminal::new(TestBackend::new(100, 30)).unwrap(),
            control,
        }
    }

    pub fn control(&self) -> &FakeControl {
        self.control.as_deref().expect("a console with a proxy")
    }

    /// A flow in flight, announced as the proxy does (intercepted, resumed, ...).
    pub fn live(&mut self, flow: &Flow) -> &mut Self {
        self.control().put_live(flow);
        self.app
            .on_event(FlowEvent::RequestReceived(Arc::new(flow.clone())));
        self.app.tick(Instant::now());
        self
    }

    pub fn keys(&mut self, keys: &str) -> &mut Self {
        for c in keys.chars() {
            self.key(KeyCode::Char(c));
        }
        self
    }

    pub fn key(&mut self, code: KeyCode) -> &mut Self {
        self.app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
        self.app.list.settle();
        self.app.tick(Instant::now());
        self
    }

    /// Types `text` into the prompt and presses Enter.
    pub fn answer(&mut self, text: &str) -> &mut Self {
        self.app
            .handle_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
        self.keys(text).key(KeyCode::Enter)
    }

    pub fn screen(&mut self) -> String {
        let app = &mut self.app;
        self.terminal.draw(|f| app.render(f)).unwrap();
        buffer_text(self.terminal.backend().buffer())
    }

    /// The message line.
    pub fn message(&mut self) -> String {
        self.screen()
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}
