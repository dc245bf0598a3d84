//! The proxy's options from the console (`O`, as mitmproxy's): `NAME=VALUE` sets one
//! on the running proxy through `FlowControl::set_options`, `NAME` alone shows it, an
//! empty answer lists them all in the event log. A value is read by the type of the
//! option's current one: `true`/`false` for a switch; for a list, one item, `[...]`
//! in JSON for several, nothing for none; text otherwise.

use periscope_control::OptionsUpdate;
use periscope_flow::{LogEntry, LogLevel};
use serde_json::Value;

use super::App;
use crate::prompt::{Prompt, Question};

const PROMPT: &str = "Option NAME=VALUE (NAME alone shows it; empty lists them in the event log)";

impl App {
    pub(super) fn ask_option(&mut self) {
        if self.proxy_for("Setting options") {
            self.prompt = Some(Prompt::new(Question::SetOption, PROMPT, ""));
        }
    }

    pub(super) fn set_option(&mut self, answer: String) {
        let answer = answer.trim();
        let options = self.control.options();
        let mut current = options.settings;
        current.insert("intercept".into(), options.intercept.into());
        current.insert("intercept_tls".into(), options.intercept_tls.into());
        let Some((name, text)) = answer.split_once('=') else {
            if answer.is_empty() {
                for (name, value) in &current {
                    self.log.push(LogEntry::new(
                        LogLevel::Info,
                        format!("option {name} = {value}"),
                    ));
                }
                self.say(&format!(
                    "{} options listed in the event log (E).",
                    current.len()
                ));
            } else {
                match current.get(answer) {
                    Some(value) => self.say(&format!("{answer} = {value}")),
                    None => self.refuse(answer, format!("unknown option {answer:?}")),
                }
            }
            return;
        };
        let name = name.trim();
        let text = text.trim();
        let value = match current.get(name) {
            Some(Value::Bool(_)) => match text {
                "true" | "on" | "yes" => Value::Bool(true),
                "false" | "off" | "no" => Value::Bool(false),
                _ => return self.refuse(answer, format!("{name}: true or false")),
            },
            Some(Value::Array(_)) if text.starts_with('[') => match serde_json::from_str(text) {
                Ok(list) => list,
                Err(error) => return self.refuse(answer, format!("{name}: {error}")),
            },
            Some(Value::Array(_)) if text.is_empty() => Value::Array(Vec::new()),
            Some(Value::Array(_)) => Value::Array(vec![text.into()]),
            Some(_) => Value::String(text.to_owned()),
            None => return self.refuse(answer, format!("unknown option {name:?}")),
        };
        let mut update = OptionsUpdate::default();
        match name {
            "intercept" => update.intercept = Some(text.to_owned()),
            "intercept_tls" => update.intercept_tls = value.as_bool(),
            _ => {
                update.settings.insert(name.to_owned(), value);
            }
        }
        match self.control.set_options(update) {
            Ok(options) => {
                self.intercept = options.intercept.clone();
                let now = match name {
                    "intercept" => options.intercept.into(),
                    "intercept_tls" => options.intercept_tls.into(),
                    _ => options.settings.get(name).cloned().unwrap_or_default(),
                };
                self.say(&format!("{name} = {now}"));
            }
            Err(error) => self.refuse(answer, error.to_string()),
        }
    }

    /// Nothing changed: the prompt stays with the reason, to fix the answer.
    fn refuse(&mut self, answer: &str, reason: String) {
        self.log.push(LogEntry::new(LogLevel::Warn, reason.clone()));
        self.prompt = Some(Prompt::new(
            Question::SetOption,
            format!("Option ({reason})"),
            answer,
        ));
    }
}
