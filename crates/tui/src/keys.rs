//! Key bindings: mitmproxy's, in one table that both the dispatcher and the help
//! screen read, so the help can never disagree with what a key does.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Where the user is; a key may mean different things in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    List,
    Flow,
    EventLog,
    Help,
}

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Down,
    Up,
    PageDown,
    PageUp,
    First,
    Last,
    Open,
    Back,
    NextTab,
    PreviousTab,
    SetFilter,
    ClearList,
    Save,
    ToggleMark,
    Delete,
    Help,
    EventLog,
    ToggleFollow,
    SetIntercept,
    SetOption,
    Resume,
    ResumeAll,
    Kill,
    Edit,
    Replay,
    Duplicate,
    Revert,
    Comment,
    ClientCertificate,
    WebSocket,
    Export,
    Quit,
}

impl Command {
    /// Every command, for the checks that each has a key and a line of help.
    #[cfg(test)]
    pub const ALL: &'static [Command] = &[
        Command::Down,
        Command::Up,
        Command::PageDown,
        Command::PageUp,
        Command::First,
        Command::Last,
        Command::Open,
        Command::Back,
        Command::NextTab,
        Command::PreviousTab,
        Command::SetFilter,
        Command::ClearList,
        Command::Save,
        Command::ToggleMark,
        Command::Delete,
        Command::Help,
        Command::EventLog,
        Command::ToggleFollow,
        Command::SetIntercept,
        Command::SetOption,
        Command::Resume,
        Command::ResumeAll,
        Command::Kill,
        Command::Edit,
        Command::Replay,
        Command::Duplicate,
        Command::Revert,
        Command::Comment,
        Command::ClientCertificate,
        Command::WebSocket,
        Command::Export,
        Command::Quit,
    ];
}

/// A key as bindings name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Ctrl(char),
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Home,
    End,
    Enter,
    Esc,
    Tab,
    BackTab,
}

impl Key {
    pub fn from_event(event: &KeyEvent) -> Option<Key> {
        let ctrl = event.modifiers.contains(KeyModifiers::CONTROL);
        Some(match event.code {
            KeyCode::Char(c) if ctrl => Key::Ctrl(c.to_ascii_lowercase()),
            KeyCode::Char(c) => Key::Char(c),
            KeyCode::Up => Key::Up,
            KeyCode::Down => Key::Down,
            KeyCode::Left => Key::Left,
            KeyCode::Right => Key::Right,
            KeyCode::PageUp => Key::PageUp,
            KeyCode::PageDown => Key::PageDown,
            KeyCode::Home => Key::Home,
            KeyCode::End => Key::End,
            KeyCode::Enter => Key::Enter,
            KeyCode::Esc => Key::Esc,
            KeyCode::Tab => Key::Tab,
            KeyCode::BackTab => Key::BackTab,
            _ => return None,
        })
    }

    fn label(self) -> String {
        match self {
            Key::Char(' ') => "space".to_owned(),
            Key::Char(c) => c.to_string(),
            Key::Ctrl(c) => format!("ctrl-{c}"),
            Key::Up => "↑".to_owned(),
            Key::Down => "↓".to_owned(),
            Key::Left => "←".to_owned(),
            Key::Right => "→".to_owned(),
            Key::PageUp => "pgup".to_owned(),
            Key::PageDown => "pgdn".to_owned(),
            Key::Home => "home".to_owned(),
            Key::End => "end".to_owned(),
            Key::Enter => "enter".to_owned(),
            Key::Esc => "esc".to_owned(),
            Key::Tab => "tab".to_owned(),
            Key::BackTab => "shift-tab".to_owned(),
        }
    }
}

pub struct Binding {
    pub keys: &'static [Key],
    pub command: Command,
    pub contexts: &'static [Context],
    pub help: &'static str,
}

const ALL: &[Context] = &[
    Context::List,
    Context::Flow,
    Context::EventLog,
    Context::Help,
];
const SCROLLING: &[Context] = ALL;
const VIEWS: &[Context] = &[Context::Flow, Context::EventLog, Context::Help];
const LIST_AND_FLOW: &[Context] = &[Context::List, Context::Flow];

/// Every binding, in the order the help screen lists them. The first binding of a
/// context that names the key wins.
pub const BINDINGS: &[Binding] = &[
    Binding {
        keys: &[Key::Char('j'), Key::Down, Key::Ctrl('n')],
        command: Command::Down,
        contexts: SCROLLING,
        help: "down",
    },
    Binding {
        keys: &[Key::Char('k'), Key::Up, Key::Ctrl('p')],
        command: Command::Up,
        contexts: SCROLLING,
        help: "up",
    },
    Binding {
        keys: &[Key::Char(' '), Key::PageDown, Key::Ctrl('f')],
        command: Command::PageDown,
        contexts: SCROLLING,
        help: "page down",
    },
    Binding {
        keys: &[Key::PageUp, Key::Ctrl('b')],
        command: Command::PageUp,
        contexts: SCROLLING,
        help: "page up",
    },
    Binding {
        keys: &[Key::Char('g'), Key::Home],
        command: Command::First,
        contexts: SCROLLING,
        help: "go to the top",
    },
    Binding {
        keys: &[Key::Char('G'), Key::End],
        command: Command::Last,
        contexts: SCROLLING,
        help: "go to the bottom",
    },
    Binding {
        keys: &[Key::Enter],
        command: Command::Open,
        contexts: &[Context::List],
        help: "open the flow",
    },
    Binding {
        keys: &[Key::Tab, Key::Right, Key::Char('l')],
        command: Command::NextTab,
        contexts: &[Context::Flow],
        help: "next tab (Request, Response, Detail)",
    },
    Binding {
        keys: &[Key::BackTab, Key::Left, Key::Char('h')],
        command: Command::PreviousTab,
        contexts: &[Context::Flow],
        help: "previous tab",
    },
    Binding {
        keys: &[Key::Char('q'), Key::Esc],
        command: Command::Back,
        contexts: VIEWS,
        help: "back",
    },
    Binding {
        keys: &[Key::Char('f')],
        command: Command::SetFilter,
        contexts: &[Context::List],
        help: "set the filter (mitmproxy's language, plus ~tls; empty clears it)",
    },
    Binding {
        keys: &[Key::Char('F')],
        command: Command::ToggleFollow,
        contexts: &[Context::List],
        help: "follow new flows on or off",
    },
    Binding {
        keys: &[Key::Char('i')],
        command: Command::SetIntercept,
        contexts: &[Context::List, Context::Flow, Context::EventLog],
        help: "set the intercept filter: matching flows pause at the request, the response and each WebSocket message (empty clears it)",
    },
    Binding {
        keys: &[Key::Char('O')],
        command: Command::SetOption,
        contexts: &[Context::List, Context::Flow, Context::EventLog],
        help: "set an option of the running proxy: NAME=VALUE (rules, timeouts, client_certs, scripts, ...); NAME shows it; empty lists them",
    },
    Binding {
        keys: &[Key::Char('a')],
        command: Command::Resume,
        contexts: LIST_AND_FLOW,
        help: "resume the intercepted flow (a held certificate request gets the configured certificate)",
    },
    Binding {
        keys: &[Key::Char('A')],
        command: Command::ResumeAll,
        contexts: LIST_AND_FLOW,
        help: "resume every intercepted flow",
    },
    Binding {
        keys: &[Key::Char('x'), Key::Char('X')],
        command: Command::Kill,
        contexts: LIST_AND_FLOW,
        help: "kill the flow: paused or streaming, its connections close and the client gets an error",
    },
    Binding {
        keys: &[Key::Char('e')],
        command: Command::Edit,
        contexts: LIST_AND_FLOW,
        help: "edit a part of the flow in $EDITOR: a paused flow before it goes on, a recorded one in the session",
    },
    Binding {
        keys: &[Key::Char('r')],
        command: Command::Replay,
        contexts: LIST_AND_FLOW,
        help: "replay the request (the new flow is marked ↻)",
    },
    Binding {
        keys: &[Key::Char('D')],
        command: Command::Duplicate,
        contexts: LIST_AND_FLOW,
        help: "duplicate the flow in the session",
    },
    Binding {
        keys: &[Key::Char('V')],
        command: Command::Revert,
        contexts: LIST_AND_FLOW,
        help: "revert the flow's edits to what was recorded",
    },
    Binding {
        keys: &[Key::Char(';')],
        command: Command::Comment,
        contexts: LIST_AND_FLOW,
        help: "comment on the flow (empty removes the comment)",
    },
    Binding {
        keys: &[Key::Char('c')],
        command: Command::ClientCertificate,
        contexts: LIST_AND_FLOW,
        help: "choose the client certificate for a flow held at its server's certificate request",
    },
    Binding {
        keys: &[Key::Char('W')],
        command: Command::WebSocket,
        contexts: LIST_AND_FLOW,
        help: "WebSocket: deliver, edit or drop the held message; write a message to either side",
    },
    Binding {
        keys: &[Key::Char('o')],
        command: Command::Export,
        contexts: LIST_AND_FLOW,
        help: "export the flow (curl, HTTPie, raw HTTP) to a file or the clipboard",
    },
    Binding {
        keys: &[Key::Char('m')],
        command: Command::ToggleMark,
        contexts: LIST_AND_FLOW,
        help: "mark or unmark the flow",
    },
    Binding {
        keys: &[Key::Char('d')],
        command: Command::Delete,
        contexts: LIST_AND_FLOW,
        help: "delete the flow",
    },
    Binding {
        keys: &[Key::Char('z')],
        command: Command::ClearList,
        contexts: &[Context::List],
        help: "clear the list (deletes every flow of the session)",
    },
    Binding {
        keys: &[Key::Char('w')],
        command: Command::Save,
        contexts: LIST_AND_FLOW,
        help: "save the shown flows: a session file, or HAR when the name ends in .har",
    },
    Binding {
        keys: &[Key::Char('E')],
        command: Command::EventLog,
        contexts: &[Context::List, Context::Flow],
        help: "event log",
    },
    Binding {
        keys: &[Key::Char('?')],
        command: Command::Help,
        contexts: &[Context::List, Context::Flow, Context::EventLog],
        help: "this help",
    },
    Binding {
        keys: &[Key::Char('q')],
        command: Command::Quit,
        contexts: &[Context::List],
        help: "quit",
    },
    Binding {
        keys: &[Key::Char('Q'), Key::Ctrl('c')],
        command: Command::Quit,
        contexts: ALL,
        help: "quit from anywhere",
    },
];

/// The command `event` means in `context`, if any.
pub fn command(context: Context, event: &KeyEvent) -> Option<Command> {
    let key = Key::from_event(event)?;
    BINDINGS
        .iter()
        .find(|b| b.contexts.contains(&context) && b.keys.contains(&key))
        .map(|b| b.command)
}

/// `j ↓ ctrl-n` for a binding.
pub fn keys_label(binding: &Binding) -> String {
    binding
        .keys
        .iter()
        .map(|k| k.label())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn q_quits_the_list_and_goes_back_elsewhere() {
        let q = key(KeyCode::Char('q'));
        assert_eq!(command(Context::List, &q), Some(Command::Quit));
        assert_eq!(command(Context::Flow, &q), Some(Command::Back));
        assert_eq!(command(Context::Help, &q), Some(Command::Back));
    }

    #[test]
    fn mitmproxy_keys_are_bound() {
        let cases = [
            (Context::List, KeyCode::Char('j'), Command::Down),
            (Context::List, KeyCode::Down, Command::Down),
            (Context::List, KeyCode::Char('k'), Command::Up),
            (Context::List, KeyCode::Char('g'), Command::First),
            (Context::List, KeyCode::Char('G'), Command::Last),
            (Context::List, KeyCode::Enter, Command::Open),
            (Context::Flow, KeyCode::Tab, Command::NextTab),
            (Context::List, KeyCode::Char('f'), Command::SetFilter),
            (Context::List, KeyCode::Char('z'), Command::ClearList),
            (Context::List, KeyCode::Char('w'), Command::Save),
            (Context::List, KeyCode::Char('m'), Command::ToggleMark),
            (Context::List, KeyCode::Char('d'), Command::Delete),
            (Context::List, KeyCode::Char('?'), Command::Help),
            (Context::List, KeyCode::Char('E'), Command::EventLog),
            (Context::List, KeyCode::Char('i'), Command::SetIntercept),
            (Context::List, KeyCode::Char('O'), Command::SetOption),
            (Context::Flow, KeyCode::Char('a'), Command::Resume),
            (Context::List, KeyCode::Char('A'), Command::ResumeAll),
            (Context::List, KeyCode::Char('X'), Command::Kill),
            (Context::List, KeyCode::Char('e'), Command::Edit),
            (Context::Flow, KeyCode::Char('e'), Command::Edit),
            (Context::List, KeyCode::Char('r'), Command::Replay),
            (Context::List, KeyCode::Char('D'), Command::Duplicate),
            (Context::List, KeyCode::Char('V'), Command::Revert),
            (Context::List, KeyCode::Char(';'), Command::Comment),
            (Context::List, KeyCode::Char('o'), Command::Export),
            (Context::List, KeyCode::Char('x'), Command::Kill),
        ];
        for (context, code, expected) in cases {
            assert_eq!(command(context, &key(code)), Some(expected), "{code:?}");
        }
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(command(Context::Help, &ctrl_c), Some(Command::Quit));
        assert_eq!(command(Context::List, &key(KeyCode::Char('y'))), None);
        assert_eq!(command(Context::Help, &key(KeyCode::Char('a'))), None);
    }

    #[test]
    fn every_binding_has_help_and_keys() {
        for binding in BINDINGS {
            assert!(!binding.keys.is_empty() && !binding.help.is_empty());
            assert!(!keys_label(binding).is_empty());
        }
    }

    #[test]
    fn every_command_has_a_key_and_no_key_is_bound_twice_in_a_context() {
        for command in Command::ALL {
            assert!(
                BINDINGS.iter().any(|b| b.command == *command),
                "{command:?} has no key"
            );
        }
        for context in ALL {
            let mut seen = Vec::new();
            for binding in BINDINGS.iter().filter(|b| b.contexts.contains(context)) {
                for key in binding.keys {
                    // A later binding of the same key would never be reached.
                    assert!(!seen.contains(key), "{key:?} is bound twice in {context:?}");
                    seen.push(*key);
                }
            }
        }
    }
}
