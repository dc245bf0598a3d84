//! The console's state and what each key and each flow event does to it. No
//! terminal here: `lib.rs` feeds keys and events in and draws `App::render` when
//! `App::wants_draw` says so, which keeps every transition testable with
//! ratatui's `TestBackend`.
//!
//! What the user does to flows (intercept, edit, resume, kill, replay, ...) goes
//! through `periscope_control::FlowControl` (`actions.rs`), never to the proxy.

mod actions;
#[cfg(test)]
mod harness;
mod options;

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use periscope_control::FlowControl;
use periscope_flow::filter::Filter;
use periscope_flow::store::FlowStore;
use periscope_flow::{Flow, FlowEvent, FlowId, LogEntry, LogLevel, WebSocketMessage};
use ratatui::crossterm::event::KeyEvent;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::Frame;

use crate::editor::EditorJob;
use crate::event_log::EventLog;
use crate::flow_list::{FlowList, REFRESH_INTERVAL};
use crate::flow_view::FlowView;
use crate::help::{HelpView, SessionFacts};
use crate::keys::{self, Command, Context};
use crate::menu::{Menu, MenuOutcome};
use crate::offline::StoreControl;
use crate::prompt::{Outcome, Prompt, Question};
use crate::save::{expand_home, Saved};
use crate::status_bar::{render_message, render_status, Status};
use crate::text::plain_line;
use crate::ConsoleOptions;

/// How long a message stays on the bottom line.
const MESSAGE_TIME: Duration = Duration::from_secs(6);
/// Earlier log entries read from the session when the console starts.
const EARLIER_LOG_ENTRIES: usize = 1000;
/// How often the status bar reads the proxy's options (the control API may change
/// the intercept filter too).
const OPTIONS_INTERVAL: Duration = Duration::from_secs(1);

/// What a background save reports.
type SaveResult = Result<Saved, String>;

/// A screen on top of the flow list.
enum Screen {
    Flow(Box<FlowView>),
    EventLog,
    Help(HelpView),
}

struct Message {
    text: String,
    error: bool,
    at: Instant,
}

pub struct App {
    store: Arc<FlowStore>,
    /// What the user can do to flows: the proxy's control, or the store alone.
    control: Arc<dyn FlowControl>,
    /// False for a console without a proxy: actions on flows in flight are refused.
    has_proxy: bool,
    /// A chooser over the screen (edit, export, certificate, WebSocket).
    menu: Option<Menu<actions::MenuAction>>,
    /// The editor run the loop should start (it owns the terminal).
    editor_job: Option<EditorJob>,
    /// An escape sequence for the terminal (OSC 52, the clipboard).
    terminal_sequence: Option<String>,
    /// The intercept filter as the proxy has it.
    intercept: Option<String>,
    options_read: Option<Instant>,
    listen: String,
    session: String,
    ca_cert: String,
    version: String,
    list: FlowList,
    /// Screens opened over the list; `q` closes the top one, and quits at the list.
    screens: Vec<Screen>,
    log: EventLog,
    prompt: Option<Prompt>,
    message: Option<Message>,
    saves: (Sender<SaveResult>, Receiver<SaveResult>),
    saving: bool,
    quit: bool,
    /// The user did something: draw now.
    redraw_now: bool,
    /// Flows changed: draw, but at most every `REFRESH_INTERVAL`.
    redraw_soon: bool,
    last_draw: Option<Instant>,
    /// Height of the main area at the last draw (for paging the list).
    main_height: u16,
}

impl App {
    pub fn new(options: &ConsoleOptions) -> Self {
        let store = Arc::clone(&options.store);
        let earlier = store.log_entries(EARLIER_LOG_ENTRIES).unwrap_or_default();
        let session = match &options.session_file {
            Some(path) => path.display().to_string(),
            None => format!("{} (temporary: w saves it)", store.path().display()),
        };
        let has_proxy = options.control.is_some();
        let control: Arc<dyn FlowControl> = match &options.control {
            Some(control) => Arc::clone(control),
            None => Arc::new(StoreControl::new(Arc::clone(&store))),
        };
        let mut app = App {
            list: FlowList::new(Arc::clone(&store)),
            store,
            intercept: control.options().intercept,
            control,
            has_proxy,
            menu: None,
            editor_job: None,
            terminal_sequence: None,
            options_read: Some(Instant::now()),
            listen: options.listen.to_string(),
            session,
            ca_cert: options.ca_cert.display().to_string(),
            version: options.version.clone(),
            screens: Vec::new(),
            log: EventLog::new(earlier),
            prompt: None,
            message: None,
            saves: channel(),
            saving: false,
            quit: false,
            redraw_now: true,
            redraw_soon: false,
            last_draw: None,
            main_height: 20,
        };
        if app.has_proxy {
            let in_flight = app.control.flows_in_flight();
            app.list.set_in_flight(&in_flight);
        }
        app.list.tick(Instant::now());
        app
    }

    /// The editor run the user asked for, for the loop to start with the terminal
    /// given back (then [`App::editor_done`]).
    pub fn take_editor_job(&mut self) -> Option<EditorJob> {
        self.editor_job.take()
    }

    /// True when the loop should stop reading keys and start the editor.
    pub fn wants_editor(&self) -> bool {
        self.editor_job.is_some()
    }

    /// An escape sequence to write to the terminal (a clipboard export).
    pub fn take_terminal_sequence(&mut self) -> Option<String> {
        self.terminal_sequence.take()
    }

    pub fn should_quit(&self) -> bool {
        self.quit
    }

    pub fn quit(&mut self) {
        self.quit = true;
    }

    /// Before the console goes: lets the recorder save the completed flows the list
    /// showed (it commits within milliseconds; this waits at most `limit`).
    pub fn finish(&mut self, limit: Duration) {
        self.list.wait_for_completed(limit);
    }

    /// Whether the screen should be drawn now.
    pub fn wants_draw(&self, now: Instant) -> bool {
        self.redraw_now
            || (self.redraw_soon
                && self
                    .last_draw
                    .is_none_or(|last| now.duration_since(last) >= REFRESH_INTERVAL))
    }

    /// The terminal changed size: draw everything again.
    pub fn resized(&mut self) {
        self.redraw_now = true;
    }

    fn context(&self) -> Context {
        match self.screens.last() {
            None => Context::List,
            Some(Screen::Flow(_)) => Context::Flow,
            Some(Screen::EventLog) => Context::EventLog,
            Some(Screen::Help(_)) => Context::Help,
        }
    }

    // ---------------------------------------------------------------------------
    // Keys
    // ---------------------------------------------------------------------------

    pub fn handle_key(&mut self, key: KeyEvent) {
        self.redraw_now = true;
        if let Some(menu) = &mut self.menu {
            match menu.handle_key(&key) {
                MenuOutcome::Open => {}
                MenuOutcome::Cancelled => self.menu = None,
                MenuOutcome::Chosen(action) => {
                    self.menu = None;
                    self.choose(action);
                }
            }
            return;
        }
        if let Some(prompt) = &mut self.prompt {
            match prompt.handle_key(&key) {
                Outcome::Editing => {}
                Outcome::Cancelled => self.prompt = None,
                Outcome::Submitted(answer) => {
                    let question = prompt.question.clone();
                    self.prompt = None;
                    self.answer(question, answer);
                }
            }
            return;
        }
        if let Some(command) = keys::command(self.context(), &key) {
            self.run(command);
        }
    }

    fn run(&mut self, command: Command) {
        match command {
            Command::Quit => self.quit = true,
            Command::Back => {
                self.screens.pop();
            }
            Command::Help => self.screens.push(Screen::Help(HelpView::default())),
            Command::EventLog => {
                if !matches!(self.screens.last(), Some(Screen::EventLog)) {
                    self.log.scroll_to_bottom();
                    self.screens.push(Screen::EventLog);
                }
            }
            Command::SetFilter => {
                let current = self.list.filter_text().unwrap_or("").to_owned();
                self.prompt = Some(Prompt::new(Question::Filter, "Filter", &current));
            }
            Command::Save => {
                let what = match self.list.filter_text() {
                    Some(filter) => format!("the {} flows matching {filter}", self.list.len()),
                    None => format!("all {} flows", self.list.total()),
                };
                self.prompt = Some(Prompt::new(
                    Question::SavePath,
                    format!("Save {what} to (a session file, or .har)"),
                    "",
                ));
            }
            Command::ClearList => {
                if self.list.total() == 0 {
                    self.say("The list is empty.");
                } else {
                    self.prompt = Some(Prompt::new(
                        Question::ClearAll,
                        format!(
                            "Delete all {} flows of this session? (y/n)",
                            self.list.total()
                        ),
                        "",
                    ));
                }
            }
            Command::ToggleFollow => {
                let on = self.list.toggle_follow();
                self.say(if on {
                    "Following new flows."
                } else {
                    "Not following new flows."
                });
            }
            Command::ToggleMark => self.toggle_mark(),
            Command::Delete => self.delete(),
            Command::SetIntercept => self.ask_intercept(),
            Command::SetOption => self.ask_option(),
            Command::Resume => self.resume(),
            Command::ResumeAll => self.resume_all(),
            Command::Kill => self.kill(),
            Command::Edit => self.edit(),
            Command::Replay => self.replay(),
            Command::Duplicate => self.duplicate(),
            Command::Revert => self.revert(),
            Command::Comment => self.ask_comment(),
            Command::ClientCertificate => self.certificate_menu(),
            Command::WebSocket => self.websocket_menu(),
            Command::Export => self.export_menu(),
            Command::Open => self.open_selected(),
            Command::Down
            | Command::Up
            | Command::PageDown
            | Command::PageUp
            | Command::First
            | Command::Last
            | Command::NextTab
            | Command::PreviousTab => self.navigate(command),
        }
    }

    fn navigate(&mut self, command: Command) {
        let page = self.list.page(self.main_height) as isize;
        match self.screens.last_mut() {
            None => match command {
                Command::Down => self.list.move_by(1),
                Command::Up => self.list.move_by(-1),
                Command::PageDown => self.list.move_by(page),
                Command::PageUp => self.list.move_by(-page),
                Command::First => self.list.select_first(),
                Command::Last => self.list.select_last(),
                _ => {}
            },
            Some(Screen::Flow(view)) => match command {
                Command::Down => view.scroll_by(1),
                Command::Up => view.scroll_by(-1),
                Command::PageDown => view.page_down(),
                Command::PageUp => view.page_up(),
                Command::First => view.scroll_to_top(),
                Command::Last => view.scroll_to_bottom(),
                Command::NextTab => view.next_tab(),
                Command::PreviousTab => view.previous_tab(),
                _ => {}
            },
            Some(Screen::EventLog) => match command {
                Command::Down => self.log.scroll_by(1),
                Command::Up => self.log.scroll_by(-1),
                Command::PageDown => self.log.page_down(),
                Command::PageUp => self.log.page_up(),
                Command::First => self.log.scroll_to_top(),
                Command::Last => self.log.scroll_to_bottom(),
                _ => {}
            },
            Some(Screen::Help(help)) => match command {
                Command::Down => help.scroll_by(1),
                Command::Up => help.scroll_by(-1),
                Command::PageDown => help.page_down(),
                Command::PageUp => help.page_up(),
                Command::First => help.scroll_to_top(),
                Command::Last => help.scroll_to_bottom(),
                _ => {}
            },
        }
    }

    fn open_selected(&mut self) {
        let Some(summary) = self.list.selected_summary() else {
            return;
        };
        // A flow in flight as the proxy has it now (intercepted, where), else the
        // announced copy, else the session's.
        let live = if self.has_proxy && self.list.in_flight(summary.id) {
            self.control.flow(summary.id).ok().map(Arc::new)
        } else {
            None
        };
        let flow = match live.or_else(|| self.list.pending_flow(summary.id)) {
            Some(flow) => Ok(flow),
            None => match self.store.get(summary.id) {
                Ok(Some(flow)) => Ok(Arc::new(flow)),
                Ok(None) => Err("it is no longer in the session".to_owned()),
                Err(error) => Err(error.to_string()),
            },
        };
        self.screens
            .push(Screen::Flow(Box::new(FlowView::new(summary.id, flow))));
    }

    fn answer(&mut self, question: Question, answer: String) {
        match question {
            Question::Filter => self.apply_filter(answer),
            Question::SavePath => {
                let input = answer.trim();
                if input.is_empty() {
                    return;
                }
                let path = expand_home(input);
                if path.exists() {
                    self.prompt = Some(Prompt::new(
                        Question::Overwrite(path.clone()),
                        format!("{} exists: replace it? (y/n)", path.display()),
                        "",
                    ));
                } else {
                    self.start_save(path);
                }
            }
            Question::Overwrite(path) => {
                if answer == "y" {
                    self.start_save(path);
                } else {
                    self.say("Not saved.");
                }
            }
            Question::ClearAll => {
                if answer == "y" {
                    match self.control.clear() {
                        Ok(()) => {
                            self.list.forget_all();
                            self.say("All flows deleted.");
                        }
                        Err(error) => self.fail(format!("cannot clear the session: {error}")),
                    }
                }
            }
            Question::Intercept => self.set_intercept(answer),
            Question::SetOption => self.set_option(answer),
            Question::Comment(id) => self.set_comment(id, answer),
            Question::CertificatePath(id) => self.certificate_file(id, answer),
            Question::ExportPath(id, format) => self.export_path(id, format, answer),
            Question::ExportOverwrite(id, format, path) => {
                if answer == "y" {
                    self.export_to_file(id, format, &path);
                } else {
                    self.say("Not exported.");
                }
            }
            Question::EditAgain(job) => {
                if answer == "y" {
                    self.editor_job = Some(*job);
                } else {
                    self.say("Edit dropped: the flow is as it was.");
                }
            }
        }
    }

    fn apply_filter(&mut self, text: String) {
        let text = text.trim().to_owned();
        if text.is_empty() {
            self.list.set_filter(None);
            self.say("Filter cleared.");
            return;
        }
        match Filter::parse(&text) {
            Ok(filter) => {
                self.list.set_filter(Some((text, filter)));
            }
            Err(error) => {
                // The prompt stays, with the reason, so the filter can be fixed.
                self.log.push(LogEntry::new(
                    LogLevel::Warn,
                    format!("invalid filter \"{text}\": {error}"),
                ));
                self.prompt = Some(Prompt::new(
                    Question::Filter,
                    format!("Filter ({error})"),
                    &text,
                ));
            }
        }
    }

    fn start_save(&mut self, path: PathBuf) {
        if self.saving {
            self.fail("A save is still running; try again when it ends.".to_owned());
            return;
        }
        let store = Arc::clone(&self.store);
        let filter = self.list.filter().cloned();
        let version = self.version.clone();
        let sender = self.saves.0.clone();
        let spawned = std::thread::Builder::new()
            .name("console-save".into())
            .spawn(move || {
                let result = crate::save::save(&store, filter.as_ref(), &path, &version);
                let _ = sender.send(result);
            });
        match spawned {
            Ok(_) => {
                self.saving = true;
                self.say("Saving…");
            }
            Err(error) => self.fail(format!("cannot start saving: {error}")),
        }
    }

    // ---------------------------------------------------------------------------
    // Flow events
    // ---------------------------------------------------------------------------

    pub fn on_event(&mut self, event: FlowEvent) {
        self.redraw_soon = true;
        match event {
            FlowEvent::RequestReceived(flow) => {
                self.update_views(&flow);
                self.list.on_request(flow);
            }
            FlowEvent::Completed(flow) => {
                self.update_views(&flow);
                self.list.on_completed(flow, false);
            }
            FlowEvent::Updated(flow) => {
                self.update_views(&flow);
                self.list.on_completed(flow, true);
            }
            FlowEvent::WebSocketMessage { flow, message } => self.websocket_message(flow, message),
            FlowEvent::Log(entry) => self.log.push(entry),
            // Removed here or by another front end.
            FlowEvent::Removed(id) => self.list.on_removed(id),
            FlowEvent::Cleared { .. } => self.list.forget_all(),
        }
    }

    /// The console missed `count` events: the store has the flows; rebuild from it.
    pub fn on_lagged(&mut self, count: u64) {
        self.list.on_lagged();
        if self.has_proxy {
            let in_flight = self.control.flows_in_flight();
            self.list.set_in_flight(&in_flight);
        }
        self.log.push(LogEntry::new(
            LogLevel::Warn,
            format!("the console fell behind and skipped {count} events; the list was reread from the session"),
        ));
        self.redraw_soon = true;
    }

    /// The proxy stopped publishing (it is shutting down).
    pub fn on_events_closed(&mut self) {
        self.fail("The proxy stopped: no new flows will arrive.".to_owned());
    }

    /// Lines that were written to stderr while the console ran.
    pub fn on_stderr(&mut self, lines: Vec<String>) {
        for line in lines {
            let level = if line.contains("error") {
                LogLevel::Error
            } else {
                LogLevel::Warn
            };
            self.log.push(LogEntry::new(level, line));
            self.redraw_soon = true;
        }
    }

    fn update_views(&mut self, flow: &Arc<Flow>) {
        for screen in &mut self.screens {
            if let Screen::Flow(view) = screen {
                if view.id() == flow.id {
                    view.replace(Arc::clone(flow));
                }
            }
        }
    }

    fn websocket_message(&mut self, id: FlowId, message: WebSocketMessage) {
        for screen in &mut self.screens {
            if let Screen::Flow(view) = screen {
                if view.id() == id {
                    view.push_websocket_message(message.clone());
                }
            }
        }
    }

    // ---------------------------------------------------------------------------
    // Time
    // ---------------------------------------------------------------------------

    /// Reads the store when flows changed, takes finished background work, expires
    /// the message. Call often (the loop does, every few tens of milliseconds).
    pub fn tick(&mut self, now: Instant) {
        if self.has_proxy
            && self
                .options_read
                .is_none_or(|at| now.duration_since(at) >= OPTIONS_INTERVAL)
        {
            self.options_read = Some(now);
            let intercept = self.control.options().intercept;
            if intercept != self.intercept {
                self.intercept = intercept;
                self.redraw_now = true;
            }
        }
        let was_filtering = self.list.is_filtering();
        let refreshing = self.list.wants_refresh();
        if let Some(problem) = self.list.tick(now) {
            self.fail(problem);
        }
        if refreshing || was_filtering != self.list.is_filtering() {
            self.redraw_soon = true;
        }
        while let Ok(result) = self.saves.1.try_recv() {
            self.saving = false;
            match result {
                Ok(saved) => {
                    let what = if saved.har { "HAR" } else { "session" };
                    self.say(&format!(
                        "Saved {} flows to {} ({what}).",
                        saved.flows,
                        saved.path.display()
                    ));
                }
                Err(error) => self.fail(format!("not saved: {error}")),
            }
        }
        if self
            .message
            .as_ref()
            .is_some_and(|m| now.duration_since(m.at) > MESSAGE_TIME)
        {
            self.message = None;
            self.redraw_now = true;
        }
    }

    fn say(&mut self, text: &str) {
        self.message = Some(Message {
            text: text.to_owned(),
            error: false,
            at: Instant::now(),
        });
        self.redraw_now = true;
    }

    fn fail(&mut self, text: String) {
        self.log.push(LogEntry::new(LogLevel::Error, text.clone()));
        self.message = Some(Message {
            text,
            error: true,
            at: Instant::now(),
        });
        self.redraw_now = true;
    }

    // ---------------------------------------------------------------------------
    // Drawing
    // ---------------------------------------------------------------------------

    pub fn render(&mut self, frame: &mut Frame) {
        self.redraw_now = false;
        self.redraw_soon = false;
        self.last_draw = Some(Instant::now());
        let area = frame.area();
        if area.height < 4 || area.width < 20 {
            frame.render_widget(Line::raw("Periscope: the terminal is too small"), area);
            return;
        }
        let title = Rect { height: 1, ..area };
        let main = Rect {
            y: area.y + 1,
            height: area.height - 3,
            ..area
        };
        let status = Rect {
            y: area.y + area.height - 2,
            height: 1,
            ..area
        };
        let bottom = Rect {
            y: area.y + area.height - 1,
            height: 1,
            ..area
        };
        self.main_height = main.height;
        frame.render_widget(
            plain_line(
                &format!("Periscope {} — session: {}", self.version, self.session),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            title,
        );
        let facts = SessionFacts {
            listen: &self.listen,
            session: &self.session,
            ca_cert: &self.ca_cert,
        };
        match self.screens.last_mut() {
            None => {
                let hint = empty_hint(&self.listen, &self.ca_cert);
                self.list.render(frame, main, &hint);
            }
            Some(Screen::Flow(view)) => view.render(frame, main),
            Some(Screen::EventLog) => self.log.render(frame, main),
            Some(Screen::Help(help)) => help.render(frame, main, &facts),
        }
        render_status(
            frame,
            status,
            &Status {
                shown: self.list.len(),
                total: self.list.total(),
                filter: self.list.filter_text(),
                filtering: self.list.is_filtering(),
                following: self.list.following(),
                saving: self.saving,
                listen: &self.listen,
                intercept: self.intercept.as_deref(),
                held: self.list.held_count(),
                proxy: self.has_proxy,
            },
        );
        if let Some(menu) = &self.menu {
            menu.render(frame, main);
        }
        match (&self.prompt, &self.message) {
            (Some(prompt), _) => prompt.render(frame, bottom),
            (None, Some(message)) => render_message(frame, bottom, &message.text, message.error),
            (None, None) => {}
        }
    }
}

fn empty_hint(listen: &str, ca_cert: &str) -> Vec<Line<'static>> {
    vec![
        Line::raw(""),
        Line::raw("  No flows yet. Point a client at the proxy, for example:"),
        Line::raw(""),
        plain_line(
            &format!("    curl -x http://{listen} --cacert {ca_cert} https://example.com/"),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Line::raw(""),
        Line::raw("  ? shows the keys."),
    ]
}

#[cfg(test)]
mod tests {
    use super::harness::Harness;
    use super::*;
    use crate::fixtures;
    use ratatui::crossterm::event::{KeyCode, KeyModifiers};

    fn two_flows() -> Vec<Flow> {
        vec![
            fixtures::flow_at("GET", "ok.example", "/fine", Some(200), 0),
            fixtures::flow_at(
                "POST",
                "api.example",
                "/vedauth/authorize/oauth",
                Some(400),
                1,
            ),
        ]
    }

    #[test]
    fn list_shows_flows_and_the_status_bar() {
        let mut h = Harness::new(&two_flows());
        let screen = h.screen();
        assert!(screen.contains("https://ok.example/fine"), "{screen}");
        assert!(screen.contains("POST"), "{screen}");
        assert!(screen.contains("400"), "{screen}");
        assert!(screen.contains("[2 flows]"), "{screen}");
        assert!(screen.contains("127.0.0.1:8080"), "{screen}");
    }

    #[test]
    fn empty_list_tells_how_to_start() {
        let mut h = Harness::new(&[]);
        let screen = h.screen();
        assert!(
            screen.contains("curl -x http://127.0.0.1:8080 --cacert /tmp/ca.pem"),
            "{screen}"
        );
    }

    #[test]
    fn enter_tab_tab_shows_detail_and_q_goes_back() {
        let mut h = Harness::new(&two_flows());
        h.key(KeyCode::Char('j')).key(KeyCode::Enter);
        let screen = h.screen();
        assert!(
            screen.contains("POST /vedauth/authorize/oauth HTTP/1.1"),
            "{screen}"
        );
        h.key(KeyCode::Tab).key(KeyCode::Tab);
        let screen = h.screen();
        assert!(screen.contains("First request byte"), "{screen}");
        h.keys("G");
        assert!(h.screen().contains("Client connection"));
        h.keys("q");
        assert!(!h.app.should_quit());
        let screen = h.screen();
        assert!(screen.contains("https://ok.example/fine"), "{screen}");
        h.keys("q");
        assert!(h.app.should_quit());
    }

    #[test]
    fn f_sets_a_filter_that_narrows_the_list() {
        let mut h = Harness::new(&two_flows());
        h.keys("f~c 400").key(KeyCode::Enter);
        let screen = h.screen();
        assert!(!screen.contains("ok.example"), "{screen}");
        assert!(screen.contains("api.example"), "{screen}");
        assert!(screen.contains("[1/2 flows] [filter: ~c 400]"), "{screen}");
        // f again shows the current filter; clearing it shows everything.
        h.keys("f");
        assert_eq!(h.app.prompt.as_ref().unwrap().input(), "~c 400");
        h.key(KeyCode::Char('u'));
        h.app
            .handle_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
        h.key(KeyCode::Enter);
        let screen = h.screen();
        assert!(screen.contains("ok.example"), "{screen}");
        assert!(screen.contains("[2 flows]"), "{screen}");
    }

    #[test]
    fn an_invalid_filter_is_explained_and_kept_for_editing() {
        let mut h = Harness::new(&two_flows());
        h.keys("f~zz").key(KeyCode::Enter);
        let screen = h.screen();
        assert!(screen.contains("unknown filter ~zz"), "{screen}");
        assert!(h.app.prompt.is_some());
        h.key(KeyCode::Esc);
        assert!(h.app.prompt.is_none());
        assert_eq!(h.app.list.filter_text(), None);
    }

    #[test]
    fn help_and_event_log_open_and_close() {
        let mut h = Harness::new(&two_flows());
        h.keys("?");
        let screen = h.screen();
        assert!(screen.contains("Keys"), "{screen}");
        assert!(screen.contains("set the filter"), "{screen}");
        h.keys("q");
        h.keys("E");
        h.app.on_event(FlowEvent::Log(LogEntry::new(
            LogLevel::Warn,
            "upstream is slow",
        )));
        let screen = h.screen();
        assert!(screen.contains("Event log"), "{screen}");
        assert!(screen.contains("upstream is slow"), "{screen}");
        h.keys("q");
        assert!(h.screen().contains("ok.example"));
    }

    #[test]
    fn options_are_set_shown_and_refused_from_the_o_prompt() {
        let mut h = Harness::new(&two_flows());
        let setting = |h: &Harness, name: &str| h.control().settings.lock().unwrap()[name].clone();
        h.keys("O").answer("modify_headers=/~q/x-console/1");
        assert_eq!(
            setting(&h, "modify_headers"),
            serde_json::json!(["/~q/x-console/1"])
        );
        assert!(
            h.message()
                .contains("modify_headers = [\"/~q/x-console/1\"]"),
            "{}",
            h.message()
        );
        h.keys("O").answer(r#"modify_headers=["/a/b/c", "/d/e/f"]"#);
        assert_eq!(
            setting(&h, "modify_headers"),
            serde_json::json!(["/a/b/c", "/d/e/f"])
        );
        h.keys("O").answer("modify_headers=");
        assert_eq!(setting(&h, "modify_headers"), serde_json::json!([]));
        h.keys("O").answer("anticomp=on");
        assert_eq!(setting(&h, "anticomp"), serde_json::json!(true));
        h.keys("O").answer("response_timeout=5s");
        assert_eq!(setting(&h, "response_timeout"), serde_json::json!("5s"));
        h.keys("O").answer("anticomp");
        assert!(h.message().contains("anticomp = true"), "{}", h.message());
        h.keys("O").answer("anticomp=maybe");
        let prompt = h
            .app
            .prompt
            .as_ref()
            .expect("the prompt stays to fix the answer");
        assert_eq!(prompt.input(), "anticomp=maybe");
        assert_eq!(
            setting(&h, "anticomp"),
            serde_json::json!(true),
            "nothing changed"
        );
        h.key(KeyCode::Esc);
        h.keys("O").answer("nonsense=1");
        assert!(h.screen().contains("unknown option"), "{}", h.screen());
        h.key(KeyCode::Esc);
        h.keys("O").answer("intercept=~u /api");
        assert_eq!(h.control().options().intercept.as_deref(), Some("~u /api"));
        h.keys("O").answer("");
        assert!(
            h.message().contains("options listed in the event log"),
            "{}",
            h.message()
        );
    }

    #[test]
    fn mark_delete_and_clear() {
        let mut h = Harness::new(&two_flows());
        h.keys("m");
        assert!(h.screen().contains("●"), "marked flow shows a dot");
        h.keys("d");
        let screen = h.screen();
        assert!(!screen.contains("ok.example"), "{screen}");
        h.keys("z");
        assert!(h.app.prompt.is_some());
        h.keys("y");
        let screen = h.screen();
        assert!(screen.contains("No flows yet"), "{screen}");
        assert_eq!(h.app.store.count(None).unwrap(), 0);
    }

    #[test]
    fn live_flows_appear_and_the_open_view_follows_its_flow() {
        let mut h = Harness::new(&[]);
        let mut flow = fixtures::flow_at("GET", "live.example", "/slow", None, 0);
        flow.response = None;
        let flow = Arc::new(flow);
        h.app
            .on_event(FlowEvent::RequestReceived(Arc::clone(&flow)));
        h.app.tick(Instant::now());
        let screen = h.screen();
        assert!(screen.contains("live.example/slow"), "{screen}");
        assert!(screen.contains("…"), "{screen}");
        h.key(KeyCode::Enter).key(KeyCode::Tab);
        assert!(h.screen().contains("No response yet"));
        let mut done = fixtures::flow_at("GET", "live.example", "/slow", Some(204), 0);
        done.id = flow.id;
        h.app.on_event(FlowEvent::Completed(Arc::new(done)));
        let screen = h.screen();
        assert!(screen.contains("HTTP/1.1 204"), "{screen}");
    }

    #[test]
    fn save_writes_a_session_file_and_har() {
        let mut h = Harness::new(&two_flows());
        let dir = tempfile::tempdir().unwrap();
        for name in ["copy.periscope", "copy.har"] {
            let path = dir.path().join(name);
            h.keys("w")
                .keys(&path.display().to_string())
                .key(KeyCode::Enter);
            let deadline = Instant::now() + Duration::from_secs(10);
            while h.app.saving && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                h.app.tick(Instant::now());
            }
            let screen = h.screen();
            assert!(screen.contains("Saved 2 flows"), "{screen}");
            assert!(path.exists());
        }
        // Saving over an existing file asks first.
        let path = dir.path().join("copy.har");
        h.keys("w")
            .keys(&path.display().to_string())
            .key(KeyCode::Enter);
        assert!(matches!(
            h.app.prompt.as_ref().map(|p| &p.question),
            Some(Question::Overwrite(_))
        ));
        h.keys("n");
        assert!(h.screen().contains("Not saved."));
    }

    #[test]
    fn many_flows_scroll_and_tiny_terminals_do_not_panic() {
        let flows: Vec<Flow> = (0..2000)
            .map(|i| fixtures::flow_at("GET", "many.example", &format!("/{i}"), Some(200), i))
            .collect();
        let mut h = Harness::new(&flows);
        h.keys("G");
        assert!(h.screen().contains("many.example/1999"));
        h.key(KeyCode::PageUp).key(KeyCode::PageUp);
        h.keys("g");
        assert!(h.screen().contains("many.example/0 "));
        for (w, hgt) in [(1, 1), (5, 3), (20, 4), (30, 5), (200, 60)] {
            h.terminal.backend_mut().resize(w, hgt);
            h.app.resized();
            let _ = h.screen();
            h.key(KeyCode::Enter).key(KeyCode::Tab).key(KeyCode::Tab);
            let _ = h.screen();
            h.keys("q");
        }
    }
}
