//! What the user does to flows, each through `FlowControl`: intercept, resume,
//! kill, edit (in `$EDITOR`), replay, duplicate, revert, delete, mark, comment, the
//! client certificate of a held certificate request, WebSocket messages, export.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use periscope_control::{
    CertificateChoice, Content, ControlError, FlowEdit, Injection, MessageDecision, OptionsUpdate,
};
use periscope_flow::{Flow, FlowId, Interception, LogEntry, LogLevel};

use super::{App, Screen};
use crate::editor::{self, EditorJob, Part};
use crate::export::{self, Format};
use crate::menu::Menu;
use crate::offline::NO_PROXY;
use crate::prompt::{Prompt, Question};
use crate::save::expand_home;

/// What a menu item does.
#[derive(Clone, Debug)]
pub enum MenuAction {
    Edit(FlowId, Part),
    ExportFormat(FlowId, Format),
    ExportToFile(FlowId, Format),
    ExportToClipboard(FlowId, Format),
    Certificate(FlowId, CertificateItem),
    DeliverMessage(FlowId),
    DropMessage(FlowId),
}

#[derive(Clone, Copy, Debug)]
pub enum CertificateItem {
    Configured,
    None,
    File,
}

impl App {
    /// The flow the user means: the one on screen in a flow view, else the selection.
    fn target(&mut self) -> Option<FlowId> {
        if let Some(Screen::Flow(view)) = self.screens.last() {
            return Some(view.id());
        }
        if !self.screens.is_empty() {
            return None;
        }
        self.list.selected_summary().map(|s| s.id)
    }

    /// The flow as it is now: in flight (with its intercept state) or recorded.
    fn current(&mut self, id: FlowId) -> Result<Flow, String> {
        match self.control.flow(id) {
            Ok(flow) => Ok(flow),
            // Announced but neither in flight nor saved yet.
            Err(ControlError::NotFound(_)) => match self.list.pending_flow(id) {
                Some(flow) => Ok((*flow).clone()),
                None => Err("it is no longer in the session".to_owned()),
            },
            Err(error) => Err(error.to_string()),
        }
    }

    /// False (and says why) when there is no proxy to do `what`.
    pub(super) fn proxy_for(&mut self, what: &str) -> bool {
        if !self.has_proxy {
            self.fail(format!("{what} needs the proxy: {NO_PROXY}."));
        }
        self.has_proxy
    }

    /// Shows a flow the session changed (edited, reverted, duplicated, marked).
    fn changed(&mut self, flow: Flow) {
        let flow = Arc::new(flow);
        self.update_views(&flow);
        if self.list.in_flight(flow.id) || flow.intercepted.is_some() {
            // The proxy announces flows in flight itself.
            return;
        }
        self.list.on_completed(flow, true);
        self.list.refresh_soon();
    }

    // ---------------------------------------------------------------------------
    // Intercept, resume, kill
    // ---------------------------------------------------------------------------

    pub(super) fn ask_intercept(&mut self) {
        if !self.proxy_for("Intercepting") {
            return;
        }
        let current = self.control.options().intercept.unwrap_or_default();
        self.prompt = Some(Prompt::new(
            Question::Intercept,
            "Intercept filter (empty: none)",
            &current,
        ));
    }

    pub(super) fn set_intercept(&mut self, text: String) {
        let text = text.trim().to_owned();
        let update = OptionsUpdate {
            intercept: Some(text.clone()),
            ..OptionsUpdate::default()
        };
        match self.control.set_options(update) {
            Ok(options) => {
                self.intercept = options.intercept;
                match &self.intercept {
                    Some(filter) => {
                        let message = format!(
                            "Intercepting flows that match {filter}: they wait at the \
                             request, the response and each WebSocket message."
                        );
                        self.say(&message);
                    }
                    None => self.say("Intercept filter cleared: no flow waits."),
                }
            }
            Err(error) => {
                // Nothing changed; the prompt stays, with the reason, to fix it.
                self.log
                    .push(LogEntry::new(LogLevel::Warn, error.to_string()));
                self.prompt = Some(Prompt::new(
                    Question::Intercept,
                    format!("Intercept filter ({error})"),
                    &text,
                ));
            }
        }
    }

    pub(super) fn resume(&mut self) {
        let Some(id) = self.target() else { return };
        if !self.proxy_for("Resuming") {
            return;
        }
        match self.control.resume(id) {
            Ok(()) => self.say("Resumed."),
            // The proxy has no such flow in flight.
            Err(ControlError::NotFound(_)) => {
                self.say("This flow is not intercepted: there is nothing to resume.")
            }
            Err(error) => self.fail(format!("cannot resume: {error}")),
        }
    }

    pub(super) fn resume_all(&mut self) {
        if !self.proxy_for("Resuming") {
            return;
        }
        match self.control.resume_all() {
            0 => self.say("No flow is intercepted."),
            1 => self.say("Resumed 1 flow."),
            n => self.say(&format!("Resumed {n} flows.")),
        }
    }

    pub(super) fn kill(&mut self) {
        let Some(id) = self.target() else { return };
        if !self.proxy_for("Killing a flow") {
            return;
        }
        match self.control.kill(id) {
            Ok(()) => self.say("Killed: both connections close, the client is told."),
            Err(ControlError::NotFound(_)) => {
                self.say("This flow is not in flight any more: there is nothing to kill.")
            }
            Err(error) => self.fail(format!("cannot kill: {error}")),
        }
    }

    // ---------------------------------------------------------------------------
    // Replay, duplicate, revert, delete, mark, comment
    // ---------------------------------------------------------------------------

    pub(super) fn replay(&mut self) {
        let Some(id) = self.target() else { return };
        if !self.proxy_for("Replaying") {
            return;
        }
        match self.control.replay(id) {
            Ok(_) => self.say("Replaying the request: the new flow is marked ↻."),
            Err(error) => self.fail(format!("cannot replay: {error}")),
        }
    }

    pub(super) fn duplicate(&mut self) {
        let Some(id) = self.target() else { return };
        match self.control.duplicate(id) {
            Ok(copy) => {
                if let Ok(flow) = self.control.flow(copy) {
                    self.changed(flow);
                }
                self.list.refresh_soon();
                self.say("Duplicated: the copy is at the end of the list (marked D).");
            }
            Err(error) => self.fail(format!("cannot duplicate: {error}")),
        }
    }

    pub(super) fn revert(&mut self) {
        let Some(id) = self.target() else { return };
        match self.control.revert(id) {
            Ok(flow) => {
                self.changed(flow);
                self.say("Reverted to the flow as recorded.");
            }
            Err(error) => self.fail(format!("cannot revert: {error}")),
        }
    }

    pub(super) fn delete(&mut self) {
        let Some(id) = self.target() else { return };
        match self.control.delete(id) {
            Ok(()) => {
                self.list.on_removed(id);
                if matches!(self.screens.last(), Some(Screen::Flow(_))) {
                    self.screens.pop();
                }
                self.say("Flow deleted.");
            }
            Err(error) => self.fail(format!("cannot delete the flow: {error}")),
        }
    }

    pub(super) fn toggle_mark(&mut self) {
        let Some(id) = self.target() else { return };
        let marked = match self.screens.last() {
            Some(Screen::Flow(view)) => view.flow().is_some_and(|f| f.marked),
            _ => self.list.selected_summary().is_some_and(|s| s.marked),
        };
        let edit = FlowEdit {
            marked: Some(!marked),
            ..FlowEdit::default()
        };
        match self.control.edit(id, edit) {
            Ok(flow) => {
                self.list.note_marked(id, flow.marked);
                for screen in &mut self.screens {
                    if let Screen::Flow(view) = screen {
                        if view.id() == id {
                            view.set_marked(flow.marked);
                        }
                    }
                }
                self.say(if flow.marked { "Marked." } else { "Unmarked." });
            }
            // In flight and not paused (an open WebSocket, say): the proxy owns it.
            Err(ControlError::NotPossible { .. }) => {
                self.say("This flow is still in flight: mark it once it ends.")
            }
            Err(_) if self.list.in_flight(id) => {
                self.say("This flow is still in flight: mark it once it ends.")
            }
            Err(ControlError::NotFound(_)) => {
                self.say("This flow is not saved yet: mark it in a moment.")
            }
            Err(error) => self.fail(format!("cannot mark the flow: {error}")),
        }
    }

    pub(super) fn ask_comment(&mut self) {
        let Some(id) = self.target() else { return };
        let current = match self.current(id) {
            Ok(flow) => flow.annotations.comment,
            Err(error) => return self.fail(format!("cannot comment: {error}")),
        };
        self.prompt = Some(Prompt::new(
            Question::Comment(id),
            "Comment (empty removes it)",
            &current,
        ));
    }

    pub(super) fn set_comment(&mut self, id: FlowId, text: String) {
        let comment = text.trim().to_owned();
        let edit = FlowEdit {
            comment: Some(comment.clone()),
            ..FlowEdit::default()
        };
        match self.control.edit(id, edit) {
            Ok(flow) => {
                self.changed(flow);
                self.say(if comment.is_empty() {
                    "Comment removed."
                } else {
                    "Comment saved."
                });
            }
            Err(error) => self.fail(format!("cannot comment: {error}")),
        }
    }

    // ---------------------------------------------------------------------------
    // Edit
    // ---------------------------------------------------------------------------

    /// `e`: the parts of the flow that can be edited now, in a menu.
    pub(super) fn edit(&mut self) {
        let Some(id) = self.target() else { return };
        let flow = match self.current(id) {
            Ok(flow) => flow,
            Err(error) => return self.fail(format!("cannot edit: {error}")),
        };
        let request = [
            ('u', Part::RequestLine),
            ('h', Part::RequestHeaders),
            ('b', Part::RequestBody),
        ];
        let response = [
            ('s', Part::ResponseStatus),
            ('H', Part::ResponseHeaders),
            ('B', Part::ResponseBody),
        ];
        let parts: Vec<(char, Part)> = match &flow.intercepted {
            Some(Interception::Request) => request.to_vec(),
            Some(Interception::Response) => response.to_vec(),
            Some(Interception::WebSocketMessage { .. }) => vec![('m', Part::HeldMessage)],
            Some(Interception::ClientCertificate { .. }) => {
                return self.say(
                    "It waits at its server's certificate request: c chooses the certificate.",
                )
            }
            None if self.list.in_flight(id) => {
                return self.say(
                    "This flow is in flight: only an intercepted flow can be edited before it \
                     goes on (i sets the intercept filter); a recorded one in the session.",
                )
            }
            None if flow.response.is_some() => request.iter().chain(&response).copied().collect(),
            None => request.to_vec(),
        };
        let items = parts
            .into_iter()
            .map(|(key, part)| (key, part.label().to_owned(), MenuAction::Edit(id, part)))
            .collect();
        let title = if flow.intercepted.is_some() {
            "Edit before it goes on"
        } else {
            "Edit in the session"
        };
        self.menu = Some(Menu::new(title, items));
    }

    /// Opens the editor on `part` of the flow.
    fn start_edit(&mut self, id: FlowId, part: Part) {
        let text = match self
            .current(id)
            .and_then(|flow| editor::text_of(&flow, part))
        {
            Ok(text) => text,
            Err(error) => return self.fail(format!("cannot edit the {}: {error}", part.label())),
        };
        self.editor_job = Some(EditorJob {
            id,
            part,
            original: text.clone(),
            text,
        });
    }

    /// What the editor saved (or why it failed), applied through the control.
    pub fn editor_done(&mut self, job: EditorJob, result: io::Result<Vec<u8>>) {
        self.redraw_now = true;
        let saved = match result {
            Ok(saved) => saved,
            Err(error) => return self.fail(error.to_string()),
        };
        let unchanged = saved == job.original;
        let id = job.id;
        let outcome: Result<String, String> = match job.part {
            Part::Inject { .. } if saved.is_empty() => {
                return self.say("Nothing written: nothing was sent.");
            }
            Part::HeldMessage if unchanged => {
                return self.say("Unchanged: the message still waits (a delivers it as it is).");
            }
            _ if unchanged => return self.say("Unchanged: nothing to apply."),
            Part::HeldMessage => self
                .control
                .decide_message(
                    id,
                    MessageDecision::Resume {
                        content: Some(Content::from_bytes(&saved)),
                    },
                )
                .map(|()| "The edited message was delivered.".to_owned())
                .map_err(|e| e.to_string()),
            Part::Inject { to_client } => {
                let binary = std::str::from_utf8(&saved).is_err();
                let message = Injection {
                    to_client,
                    content: Content::from_bytes(&saved),
                    binary,
                };
                let side = if to_client { "client" } else { "server" };
                self.control
                    .inject_message(id, message)
                    .map(|()| {
                        format!(
                            "Sent a {} message of {} bytes to the {side}.",
                            if binary { "binary" } else { "text" },
                            saved.len()
                        )
                    })
                    .map_err(|e| e.to_string())
            }
            part => editor::parse(part, &saved).and_then(|edit| {
                let flow = self.control.edit(id, edit).map_err(|e| e.to_string())?;
                let when = if flow.intercepted.is_some() {
                    "it goes on edited (a resumes it)"
                } else {
                    "V reverts it"
                };
                self.changed(flow);
                Ok(format!("Edited the {}: {when}.", part.label()))
            }),
        };
        match outcome {
            Ok(message) => self.say(&message),
            Err(why) => {
                // Nothing changed, and what the user wrote is kept for another try.
                let text = format!("{}: {why}", job.part.label());
                self.log.push(LogEntry::new(
                    LogLevel::Warn,
                    format!("edit refused: {text}"),
                ));
                self.prompt = Some(Prompt::new(
                    Question::EditAgain(Box::new(EditorJob { text: saved, ..job })),
                    format!("Not applied — {text}. Edit again? (y/n)"),
                    "",
                ));
            }
        }
    }

    // ---------------------------------------------------------------------------
    // Client certificate, WebSocket
    // ---------------------------------------------------------------------------

    pub(super) fn certificate_menu(&mut self) {
        let Some(id) = self.target() else { return };
        if !self.proxy_for("Answering a certificate request") {
            return;
        }
        match self.current(id) {
            Ok(flow)
                if matches!(
                    flow.intercepted,
                    Some(Interception::ClientCertificate { .. })
                ) => {}
            Ok(_) => {
                return self.say(
                    "This flow does not wait at a certificate request (--intercept-tls holds \
                     them).",
                )
            }
            Err(error) => return self.fail(format!("cannot answer: {error}")),
        }
        let item =
            |key, label: &str, what| (key, label.to_owned(), MenuAction::Certificate(id, what));
        self.menu = Some(Menu::new(
            "Answer the server's certificate request with",
            vec![
                item(
                    'c',
                    "the configured certificate (--client-certs; none if there is none)",
                    CertificateItem::Configured,
                ),
                item('n', "no certificate", CertificateItem::None),
                item(
                    'f',
                    "a PEM file (certificate and key)…",
                    CertificateItem::File,
                ),
            ],
        ));
    }

    fn answer_certificate(&mut self, id: FlowId, choice: CertificateChoice) {
        let what = match &choice {
            CertificateChoice::Configured => "the configured certificate".to_owned(),
            CertificateChoice::None => "no certificate".to_owned(),
            CertificateChoice::File { path } => path.display().to_string(),
        };
        match self.control.choose_client_certificate(id, choice) {
            Ok(()) => self.say(&format!("Answered with {what}: the handshake goes on.")),
            Err(error) => self.fail(format!("cannot answer with {what}: {error}")),
        }
    }

    pub(super) fn certificate_file(&mut self, id: FlowId, answer: String) {
        let input = answer.trim();
        if input.is_empty() {
            return self.say("No file given: the request still waits.");
        }
        let path = expand_home(input);
        self.answer_certificate(id, CertificateChoice::File { path });
    }

    pub(super) fn websocket_menu(&mut self) {
        let Some(id) = self.target() else { return };
        if !self.proxy_for("Acting on a WebSocket") {
            return;
        }
        let flow = match self.current(id) {
            Ok(flow) => flow,
            Err(error) => return self.fail(format!("cannot act on the WebSocket: {error}")),
        };
        if flow.websocket.is_none() {
            return self.say("This flow is not a WebSocket connection.");
        }
        let mut items = Vec::new();
        if matches!(
            flow.intercepted,
            Some(Interception::WebSocketMessage { .. })
        ) {
            items.push((
                'a',
                "deliver the held message as it is".to_owned(),
                MenuAction::DeliverMessage(id),
            ));
            items.push((
                'e',
                "edit the held message, then deliver it".to_owned(),
                MenuAction::Edit(id, Part::HeldMessage),
            ));
            items.push((
                'd',
                "drop the held message".to_owned(),
                MenuAction::DropMessage(id),
            ));
        }
        items.push((
            'c',
            "write a message to the client…".to_owned(),
            MenuAction::Edit(id, Part::Inject { to_client: true }),
        ));
        items.push((
            's',
            "write a message to the server…".to_owned(),
            MenuAction::Edit(id, Part::Inject { to_client: false }),
        ));
        self.menu = Some(Menu::new("WebSocket", items));
    }

    fn decide_message(&mut self, id: FlowId, decision: MessageDecision) {
        let what = match decision {
            MessageDecision::Drop => "Dropped the message: the other side never sees it.",
            MessageDecision::Resume { .. } => "Delivered the message.",
        };
        match self.control.decide_message(id, decision) {
            Ok(()) => self.say(what),
            Err(error) => self.fail(format!("cannot decide about the message: {error}")),
        }
    }

    // ---------------------------------------------------------------------------
    // Export
    // ---------------------------------------------------------------------------

    pub(super) fn export_menu(&mut self) {
        let Some(id) = self.target() else { return };
        let items = Format::ALL
            .iter()
            .map(|f| {
                (
                    f.key(),
                    f.label().to_owned(),
                    MenuAction::ExportFormat(id, *f),
                )
            })
            .collect();
        self.menu = Some(Menu::new("Export as", items));
    }

    fn export_destination(&mut self, id: FlowId, format: Format) {
        self.menu = Some(Menu::new(
            format!("Export the {} to", format.label()),
            vec![
                (
                    'f',
                    "a file…".to_owned(),
                    MenuAction::ExportToFile(id, format),
                ),
                (
                    'c',
                    "the clipboard (through the terminal, OSC 52)".to_owned(),
                    MenuAction::ExportToClipboard(id, format),
                ),
            ],
        ));
    }

    fn export_bytes(&mut self, id: FlowId, format: Format) -> Option<Vec<u8>> {
        match self.current(id).and_then(|flow| format.render(&flow)) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                self.fail(format!("cannot export: {error}"));
                None
            }
        }
    }

    pub(super) fn export_path(&mut self, id: FlowId, format: Format, answer: String) {
        let input = answer.trim();
        if input.is_empty() {
            return self.say("Not exported.");
        }
        let path = expand_home(input);
        if path.exists() {
            self.prompt = Some(Prompt::new(
                Question::ExportOverwrite(id, format, path.clone()),
                format!("{} exists: replace it? (y/n)", path.display()),
                "",
            ));
        } else {
            self.export_to_file(id, format, &path);
        }
    }

    pub(super) fn export_to_file(&mut self, id: FlowId, format: Format, path: &Path) {
        let Some(bytes) = self.export_bytes(id, format) else {
            return;
        };
        match export::write_file(path, &bytes) {
            Ok(()) => {
                let shown = std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path));
                self.say(&format!(
                    "Exported the {} to {} ({} bytes).",
                    format.label(),
                    shown.display(),
                    bytes.len()
                ));
            }
            Err(error) => self.fail(format!("cannot write {}: {error}", path.display())),
        }
    }

    fn export_to_clipboard(&mut self, id: FlowId, format: Format) {
        let Some(bytes) = self.export_bytes(id, format) else {
            return;
        };
        match export::clipboard_sequence(&bytes) {
            Ok(sequence) => {
                self.terminal_sequence = Some(sequence);
                self.say(&format!(
                    "Sent the {} ({} bytes) to the terminal's clipboard (OSC 52: the terminal \
                     must allow it; in tmux, set-clipboard on).",
                    format.label(),
                    bytes.len()
                ));
            }
            Err(error) => self.fail(format!("cannot copy: {error}")),
        }
    }

    // ---------------------------------------------------------------------------
    // Menus
    // ---------------------------------------------------------------------------

    pub(super) fn choose(&mut self, action: MenuAction) {
        match action {
            MenuAction::Edit(id, part) => self.start_edit(id, part),
            MenuAction::ExportFormat(id, format) => self.export_destination(id, format),
            MenuAction::ExportToFile(id, format) => {
                self.prompt = Some(Prompt::new(
                    Question::ExportPath(id, format),
                    format!("Export the {} to", format.label()),
                    format.file_name(),
                ));
            }
            MenuAction::ExportToClipboard(id, format) => self.export_to_clipboard(id, format),
            MenuAction::Certificate(id, CertificateItem::Configured) => {
                self.answer_certificate(id, CertificateChoice::Configured)
            }
            MenuAction::Certificate(id, CertificateItem::None) => {
                self.answer_certificate(id, CertificateChoice::None)
            }
            MenuAction::Certificate(id, CertificateItem::File) => {
                self.prompt = Some(Prompt::new(
                    Question::CertificatePath(id),
                    "PEM file with the certificate and its key",
                    "",
                ));
            }
            MenuAction::DeliverMessage(id) => {
                self.decide_message(id, MessageDecision::Resume { content: None })
            }
            MenuAction::DropMessage(id) => self.decide_message(id, MessageDecision::Drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    use crate::app::harness::Harness;
    use crate::fixtures;
    use periscope_control::FlowControl;
    use ratatui::crossterm::event::KeyCode;

    fn paused(path: &str, at: Interception) -> Flow {
        let mut flow = fixtures::flow_at("POST", "hold.example", path, None, 5);
        flow.intercepted = Some(at);
        flow
    }

    #[test]
    fn i_sets_the_intercept_filter_refuses_a_bad_one_and_clears_it() {
        let mut h = Harness::new(&[]);
        h.keys("i").answer("~u /hold");
        let screen = h.screen();
        assert!(screen.contains("[intercept: ~u /hold]"), "{screen}");
        assert_eq!(h.control().options().intercept.as_deref(), Some("~u /hold"));
        // The prompt shows the current filter; a bad one changes nothing.
        h.keys("i");
        assert_eq!(h.app.prompt.as_ref().unwrap().input(), "~u /hold");
        h.answer("~zz");
        assert!(h.app.prompt.is_some(), "the prompt stays to fix the filter");
        assert!(h.screen().contains("unknown filter ~zz"), "{}", h.screen());
        h.key(KeyCode::Esc);
        assert_eq!(h.control().options().intercept.as_deref(), Some("~u /hold"));
        h.keys("i").answer("");
        assert_eq!(h.control().options().intercept, None);
        assert!(!h.screen().contains("[intercept:"));
        assert!(h.message().contains("Intercept filter cleared"));
    }

    #[test]
    fn a_paused_flow_is_shown_where_it_waits_and_a_resumes_it() {
        let mut h = Harness::new(&[fixtures::flow_at("GET", "done.example", "/", Some(200), 0)]);
        let flow = paused("/hold", Interception::Request);
        h.live(&flow).keys("j");
        let screen = h.screen();
        let row = screen.lines().find(|l| l.contains("/hold")).unwrap();
        assert!(row.trim_end().ends_with("at req"), "{screen}");
        assert!(screen.contains("[1 intercepted: a resumes]"), "{screen}");
        h.key(KeyCode::Enter);
        assert!(
            h.screen().contains("Intercepted at the request"),
            "{}",
            h.screen()
        );
        h.keys("a");
        assert_eq!(h.control().calls(), [format!("resume {}", flow.id)]);
        assert_eq!(h.message(), "Resumed.");
        // The proxy announces it going on: the view and the row follow.
        let mut resumed = flow.clone();
        resumed.intercepted = None;
        h.live(&resumed);
        assert!(!h.screen().contains("Intercepted at"), "{}", h.screen());
        h.keys("q");
        assert!(!h.screen().contains("intercepted: a resumes"));
        // Resuming a flow that does not wait says so.
        h.keys("a");
        assert!(
            h.message().contains("is not intercepted"),
            "{}",
            h.message()
        );
        h.keys("k").keys("a");
        assert_eq!(
            h.message(),
            "This flow is not intercepted: there is nothing to resume."
        );
        h.keys("X");
        assert!(h.message().contains("nothing to kill"), "{}", h.message());
    }

    #[test]
    fn e_edits_a_paused_request_in_the_editor_and_a_refused_edit_can_be_fixed() {
        let mut h = Harness::new(&[]);
        let flow = paused("/hold", Interception::Request);
        h.live(&flow);
        h.keys("e");
        let labels = h.app.menu.as_ref().unwrap().labels();
        assert_eq!(
            labels,
            [
                "u request: method and URL",
                "h request headers",
                "b request body"
            ]
        );
        assert!(h.screen().contains("Edit before it goes on"));
        h.keys("h");
        let job = h.app.take_editor_job().expect("the editor is asked for");
        assert_eq!(job.part, Part::RequestHeaders);
        assert_eq!(
            job.text,
            b"host: hold.example\ncontent-type: application/x-www-form-urlencoded\n"
        );

        // A line without a colon: refused, nothing changes, the text is kept.
        let mut bad = job.text.clone();
        bad.extend_from_slice(b"X-Edited yes\n");
        h.app.editor_done(job.clone(), Ok(bad.clone()));
        assert!(h.control().calls().is_empty());
        let screen = h.screen();
        assert!(screen.contains("has no colon"), "{screen}");
        assert!(screen.contains("Edit again? (y/n)"), "{screen}");
        h.keys("y");
        let again = h.app.take_editor_job().expect("the editor again");
        assert_eq!(again.text, bad, "what the user wrote is not lost");

        let mut good = job.text.clone();
        good.extend_from_slice(b"X-Edited: yes\n");
        h.app.editor_done(again, Ok(good));
        assert_eq!(h.control().calls(), [format!("edit {}", flow.id)]);
        let live = h.control().flow(flow.id).unwrap();
        assert_eq!(
            live.request.headers.get_str("x-edited").as_deref(),
            Some("yes")
        );
        assert!(
            h.message().contains("Edited the request headers"),
            "{}",
            h.message()
        );

        // Saved unchanged: nothing is applied.
        h.keys("e").keys("b");
        let job = h.app.take_editor_job().unwrap();
        let text = job.text.clone();
        h.app.editor_done(job, Ok(text));
        assert_eq!(h.control().calls().len(), 1);
        assert!(h.message().contains("Unchanged"));
        // The editor failed: nothing is applied.
        h.keys("e").keys("u");
        let job = h.app.take_editor_job().unwrap();
        h.app.editor_done(
            job,
            Err(io::Error::other(
                "the editor (vi) ended with exit status: 1",
            )),
        );
        assert_eq!(h.control().calls().len(), 1);
    }

    #[test]
    fn a_flow_paused_at_the_response_offers_the_response_and_one_in_flight_nothing() {
        let mut h = Harness::new(&[]);
        let mut flow = paused("/hold", Interception::Response);
        flow.response = fixtures::flow("GET", "h", "/", Some(200)).response;
        h.live(&flow).keys("e");
        let labels = h.app.menu.as_ref().unwrap().labels();
        assert_eq!(
            labels,
            [
                "s response: status and reason",
                "H response headers",
                "B response body"
            ]
        );
        h.keys("s");
        let job = h.app.take_editor_job().unwrap();
        assert_eq!(job.text, b"200 OK\n");
        h.app.editor_done(job, Ok(b"503 Not Today\n".to_vec()));
        let live = h.control().flow(flow.id).unwrap();
        let response = live.response.unwrap();
        assert_eq!(
            (response.status, response.reason.as_str()),
            (503, "Not Today")
        );

        let mut running = fixtures::flow_at("GET", "h", "/running", None, 6);
        running.intercepted = None;
        h.live(&running).keys("G").keys("e");
        assert!(h.app.menu.is_none());
        assert!(h.message().contains("in flight"), "{}", h.message());
    }

    #[test]
    fn recorded_flows_are_edited_in_the_session_reverted_duplicated_marked_and_commented() {
        let recorded = fixtures::flow("GET", "rec.example", "/r", Some(200));
        let mut h = Harness::new(std::slice::from_ref(&recorded));
        h.keys("e");
        assert_eq!(h.app.menu.as_ref().unwrap().labels().len(), 6);
        h.keys("s");
        let job = h.app.take_editor_job().unwrap();
        h.app.editor_done(job, Ok(b"404 Not Found\n".to_vec()));
        let stored = h.app.store.get(recorded.id).unwrap().unwrap();
        assert_eq!(stored.response.as_ref().unwrap().status, 404);
        assert!(stored.annotations.modified);
        h.app.list.settle();
        let screen = h.screen();
        let row = screen.lines().find(|l| l.contains("/r")).unwrap();
        assert!(row.contains(" 404 ") && row.contains('✎'), "{screen}");

        h.keys("V");
        let stored = h.app.store.get(recorded.id).unwrap().unwrap();
        assert_eq!(stored.response.as_ref().unwrap().status, 200);
        assert!(h.message().contains("Reverted"));

        h.keys("m");
        assert!(h.app.store.get(recorded.id).unwrap().unwrap().marked);
        assert!(h.control().calls().iter().any(|c| c.starts_with("edit ")));

        h.keys(";").answer("look here");
        h.key(KeyCode::Enter);
        let screen = h.screen();
        assert!(screen.contains("Comment: look here"), "{screen}");
        h.keys("q");

        h.keys("D");
        assert_eq!(h.app.store.count(None).unwrap(), 2);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !h.screen().contains("[2 flows]") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            h.app.tick(Instant::now());
        }
        assert!(h.screen().contains("[2 flows]"), "{}", h.screen());

        h.keys("d");
        assert_eq!(h.app.store.count(None).unwrap(), 1);
        assert!(h.control().calls().iter().any(|c| c.starts_with("delete ")));
    }

    #[test]
    fn kill_replay_and_resume_all_go_to_the_control() {
        let recorded = fixtures::flow("GET", "rec.example", "/r", Some(200));
        let mut h = Harness::new(std::slice::from_ref(&recorded));
        h.keys("r");
        assert_eq!(h.control().calls(), [format!("replay {}", recorded.id)]);
        assert!(h.message().contains("marked ↻"));
        let one = paused("/one", Interception::Request);
        let two = paused("/two", Interception::Response);
        h.live(&one).live(&two);
        h.keys("G").keys("X");
        assert_eq!(h.control().calls()[1], format!("kill {}", two.id));
        h.keys("A");
        assert_eq!(h.control().calls()[2], "resume_all 1");
        assert_eq!(h.message(), "Resumed 1 flow.");
    }

    #[test]
    fn a_held_certificate_request_shows_its_cas_and_c_answers_it() {
        let mut h = Harness::new(&[]);
        let flow = paused(
            "/cert",
            Interception::ClientCertificate {
                ca_names: vec!["CN=Corp Client CA".into(), "CN=Other CA".into()],
                post_handshake: false,
            },
        );
        h.live(&flow);
        assert!(h.screen().contains("at cert"));
        h.key(KeyCode::Enter);
        let screen = h.screen();
        assert!(
            screen.contains("asks for a client certificate in a renegotiation"),
            "{screen}"
        );
        assert!(
            screen.contains("CN=Corp Client CA") && screen.contains("CN=Other CA"),
            "{screen}"
        );
        h.keys("c");
        assert!(h
            .screen()
            .contains("Answer the server's certificate request with"));
        h.keys("f").answer("/tmp/me.pem");
        assert_eq!(
            h.control().calls(),
            [format!(
                "certificate {} File {{ path: \"/tmp/me.pem\" }}",
                flow.id
            )]
        );
        // Not waiting any more: c says so.
        h.keys("c");
        assert!(h.app.menu.is_none());
        assert!(h
            .message()
            .contains("does not wait at a certificate request"));
    }

    #[test]
    fn a_held_websocket_message_is_shown_and_delivered_edited_or_dropped() {
        let mut flow = paused(
            "/ws",
            Interception::WebSocketMessage {
                message: fixtures::websocket_text(true, "{\"op\": \"buy\"}"),
            },
        );
        flow.response = fixtures::flow("GET", "h", "/", Some(101)).response;
        flow.websocket = Some(Default::default());
        // The store has it since its handshake completed.
        let mut recorded = flow.clone();
        recorded.intercepted = None;
        let mut h = Harness::new(&[recorded]);
        h.live(&flow).key(KeyCode::Enter);
        let screen = h.screen();
        assert!(
            screen.contains("WebSocket message from the client"),
            "{screen}"
        );
        assert!(screen.contains("{\"op\": \"buy\"}"), "{screen}");
        h.keys("W");
        assert_eq!(
            h.app.menu.as_ref().unwrap().labels(),
            [
                "a deliver the held message as it is",
                "e edit the held message, then deliver it",
                "d drop the held message",
                "c write a message to the client…",
                "s write a message to the server…"
            ]
        );
        h.keys("e");
        let job = h.app.take_editor_job().unwrap();
        assert_eq!(job.text, b"{\"op\": \"buy\"}");
        h.app.editor_done(job, Ok(b"{\"op\": \"sell\"}".to_vec()));
        let calls = h.control().calls();
        assert!(
            calls[0].contains("Resume") && calls[0].contains("sell"),
            "{calls:?}"
        );

        h.live(&flow).keys("W").keys("d");
        assert!(
            h.control().calls()[1].ends_with("Drop"),
            "{:?}",
            h.control().calls()
        );

        // Writing a message into the connection: text or binary.
        h.keys("W").keys("s");
        let job = h.app.take_editor_job().unwrap();
        assert_eq!(job.part, Part::Inject { to_client: false });
        h.app.editor_done(job, Ok(b"ping".to_vec()));
        let calls = h.control().calls();
        assert!(
            calls[2].contains("to_client: false") && calls[2].contains("binary: false"),
            "{calls:?}"
        );
        h.keys("W").keys("c");
        let job = h.app.take_editor_job().unwrap();
        h.app.editor_done(job, Ok(Vec::new()));
        assert_eq!(h.control().calls().len(), 3, "an empty message is not sent");
    }

    #[test]
    fn o_exports_to_a_file_and_to_the_clipboard() {
        let recorded = fixtures::flow("POST", "rec.example", "/login", Some(200));
        let mut h = Harness::new(&[recorded]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("login.sh");
        h.keys("o");
        assert_eq!(h.app.menu.as_ref().unwrap().labels().len(), 5);
        h.keys("c").keys("f");
        assert_eq!(h.app.prompt.as_ref().unwrap().input(), "flow.curl.sh");
        h.answer(&path.display().to_string());
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(written.starts_with("curl ") && written.contains("https://rec.example/login"));
        assert!(
            h.message().contains(&format!("to {}", path.display())),
            "{}",
            h.message()
        );
        // Again: the file exists, so the console asks.
        h.keys("o")
            .keys("s")
            .keys("f")
            .answer(&path.display().to_string());
        assert!(matches!(
            h.app.prompt.as_ref().map(|p| &p.question),
            Some(Question::ExportOverwrite(..))
        ));
        h.keys("y");
        assert!(std::fs::read(&path)
            .unwrap()
            .starts_with(b"HTTP/1.1 200 OK"));
        h.keys("o").keys("r").keys("c");
        let sequence = h.app.take_terminal_sequence().unwrap();
        assert!(
            sequence.starts_with("\x1b]52;c;UE9TVCAvbG9naW4g"),
            "{sequence:?}"
        );
        assert!(h.message().contains("clipboard"));
    }

    #[test]
    fn without_a_proxy_store_actions_work_and_the_others_say_why_not() {
        let recorded = fixtures::flow("GET", "rec.example", "/r", Some(200));
        let mut h = Harness::without_proxy(std::slice::from_ref(&recorded));
        assert!(h.screen().contains("[no proxy]"));
        for key in ["a", "A", "X", "r", "i", "c", "W"] {
            h.keys(key);
            assert!(h.app.prompt.is_none() && h.app.menu.is_none(), "{key}");
            assert!(
                h.message().contains("needs the proxy"),
                "{key}: {}",
                h.message()
            );
        }
        h.keys("m");
        assert!(h.app.store.get(recorded.id).unwrap().unwrap().marked);
        h.keys("e").keys("h");
        let job = h.app.take_editor_job().unwrap();
        h.app.editor_done(job, Ok(b"x-new: 1\n".to_vec()));
        let stored = h.app.store.get(recorded.id).unwrap().unwrap();
        assert_eq!(
            stored.request.headers.get_str("x-new").as_deref(),
            Some("1")
        );
        h.keys("D");
        assert_eq!(h.app.store.count(None).unwrap(), 2);
    }
}
