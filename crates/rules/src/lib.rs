//! Rules: what mitmproxy's options do to flows without a hand on them, in
//! mitmproxy's syntax, so its users' patterns work unchanged — `map_local`,
//! `map_remote`, `modify_headers`, `modify_body`, `block_list`, `anticache`,
//! `anticomp` and server replay.
//!
//! [`RuleOptions`] is what the user wrote (command line, config file, control API);
//! [`Rules::compile`] checks every pattern, or says which one is wrong and where;
//! [`RulesHook`] applies the rules in force to every exchange, on every mode and
//! protocol, and records on each flow the rules that changed it. A proxy without
//! rules runs no rule code.
//!
//! ```
//! use periscope_rules::{RuleOptions, Rules};
//!
//! let mut options = RuleOptions::default();
//! options.modify_headers = vec!["/~q/x-debug/1".into()];
//! assert!(Rules::compile(&options, None).is_ok());
//! options.block_list = vec!["/~d ads.example/teapot".into()];
//! let error = Rules::compile(&options, None).err().unwrap();
//! assert_eq!(
//!     error.to_string(),
//!     "--block-list \"/~d ads.example/teapot\": at character 17: \"teapot\" is not an HTTP status code"
//! );
//! ```

mod block;
mod engine;
mod escape;
mod hook;
mod map_local;
mod map_remote;
mod modify;
mod server_replay;
mod spec;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use periscope_flow::filter::Filter;
use serde::{Deserialize, Serialize};

pub use engine::RequestOutcome;
pub use hook::RulesHook;
pub use server_replay::{Extra, MatchOptions};

use block::Block;
use map_local::MapLocal;
use map_remote::MapRemote;
use modify::{ModifyBody, ModifyHeaders};
use server_replay::ServerReplay;
use spec::{Part, SplitError};

/// The rules as the user wrote them, named as mitmproxy names its options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleOptions {
    pub map_local: Vec<String>,
    pub map_remote: Vec<String>,
    pub modify_headers: Vec<String>,
    pub modify_body: Vec<String>,
    pub block_list: Vec<String>,
    pub anticache: bool,
    pub anticomp: bool,
    pub server_replay: Vec<PathBuf>,
    /// `forward`, `kill`, `204`, `400`, `404` or `500`.
    pub server_replay_extra: String,
    pub server_replay_reuse: bool,
    pub server_replay_refresh: bool,
    pub server_replay_use_headers: Vec<String>,
    pub server_replay_ignore_content: bool,
    pub server_replay_ignore_params: Vec<String>,
    pub server_replay_ignore_payload_params: Vec<String>,
    pub server_replay_ignore_host: bool,
    pub server_replay_ignore_port: bool,
}

impl Default for RuleOptions {
    fn default() -> Self {
        RuleOptions {
            map_local: Vec::new(),
            map_remote: Vec::new(),
            modify_headers: Vec::new(),
            modify_body: Vec::new(),
            block_list: Vec::new(),
            anticache: false,
            anticomp: false,
            server_replay: Vec::new(),
            server_replay_extra: "forward".to_owned(),
            server_replay_reuse: false,
            // mitmproxy's default: a replayed answer's dates are moved to now.
            server_replay_refresh: true,
            server_replay_use_headers: Vec::new(),
            server_replay_ignore_content: false,
            server_replay_ignore_params: Vec::new(),
            server_replay_ignore_payload_params: Vec::new(),
            server_replay_ignore_host: false,
            server_replay_ignore_port: false,
        }
    }
}

/// A rule option that cannot be used: which, as written, where in it, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    /// mitmproxy's name of the option (`map_local`).
    pub option: &'static str,
    pub spec: String,
    /// 1-based character column in `spec`.
    pub column: Option<usize>,
    pub message: String,
}

impl RuleError {
    fn at(option: &'static str, spec: &str, column: usize, message: impl Into<String>) -> Self {
        RuleError {
            option,
            spec: spec.to_owned(),
            column: Some(column),
            message: message.into(),
        }
    }

    fn whole(option: &'static str, spec: &str, message: impl Into<String>) -> Self {
        RuleError {
            option,
            spec: spec.to_owned(),
            column: None,
            message: message.into(),
        }
    }

    fn split(option: &'static str, spec: &str, error: SplitError) -> Self {
        Self::at(option, spec, error.column, error.message)
    }

    fn regex(option: &'static str, spec: &str, part: Part<'_>, error: &regex::Error) -> Self {
        // The regex crate's message spans several lines with a caret under the
        // problem; its last line says what is wrong.
        let text = error.to_string();
        let reason = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid")
            .trim()
            .trim_start_matches("error: ");
        Self::at(
            option,
            spec,
            part.column,
            format!("invalid regular expression {:?}: {reason}", part.text),
        )
    }

    /// The command-line flag of the option (`--map-local`).
    pub fn flag(&self) -> String {
        format!("--{}", self.option.replace('_', "-"))
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: ", self.flag(), self.spec)?;
        if let Some(column) = self.column {
            write!(f, "at character {column}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for RuleError {}

/// A pattern's filter part, parsed; `None` when the pattern has none.
fn parse_filter(
    option: &'static str,
    spec: &str,
    part: Option<Part<'_>>,
) -> Result<Option<Filter>, RuleError> {
    let Some(part) = part else {
        return Ok(None);
    };
    if part.text.trim().is_empty() {
        return Err(RuleError::at(
            option,
            spec,
            part.column,
            "the filter is empty",
        ));
    }
    Filter::parse(part.text).map(Some).map_err(|e| {
        RuleError::at(
            option,
            spec,
            part.column + e.column.saturating_sub(1),
            format!("invalid filter: {}", e.message),
        )
    })
}

/// The rules in force, compiled.
pub struct Rules {
    options: RuleOptions,
    modify_headers: Vec<ModifyHeaders>,
    block_list: Vec<Block>,
    server_replay: Option<Arc<ServerReplay>>,
    map_remote: Vec<MapRemote>,
    map_local: Vec<MapLocal>,
    modify_body: Vec<ModifyBody>,
}

impl Rules {
    /// No rules.
    pub fn none() -> Rules {
        Rules {
            options: RuleOptions::default(),
            modify_headers: Vec::new(),
            block_list: Vec::new(),
            server_replay: None,
            map_remote: Vec::new(),
            map_local: Vec::new(),
            modify_body: Vec::new(),
        }
    }

    /// Checks and compiles every option. `previous`: the rules in force, whose server
    /// replay (with what it has answered already) carries over when its files and
    /// matching options did not change. Also returns what the user should know
    /// (recorded flows that cannot be replayed).
    pub fn compile(
        options: &RuleOptions,
        previous: Option<&Rules>,
    ) -> Result<(Rules, Vec<String>), RuleError> {
        fn each<T>(
            specs: &[String],
            parse: impl Fn(&str) -> Result<T, RuleError>,
        ) -> Result<Vec<T>, RuleError> {
            specs.iter().map(|s| parse(s)).collect()
        }
        let mut warnings = Vec::new();
        let extra = Extra::parse(&options.server_replay_extra).map_err(|e| {
            RuleError::whole("server_replay_extra", &options.server_replay_extra, e)
        })?;
        let matching = MatchOptions {
            use_headers: options.server_replay_use_headers.clone(),
            ignore_content: options.server_replay_ignore_content,
            ignore_params: options.server_replay_ignore_params.clone(),
            ignore_payload_params: options.server_replay_ignore_payload_params.clone(),
            ignore_host: options.server_replay_ignore_host,
            ignore_port: options.server_replay_ignore_port,
        };
        let server_replay = if options.server_replay.is_empty() {
            None
        } else {
            let kept = previous.and_then(|p| p.server_replay.as_ref()).filter(|r| {
                r.files == options.server_replay
                    && r.matching == matching
                    && r.extra == extra
                    && r.reuse == options.server_replay_reuse
                    && r.refresh == options.server_replay_refresh
            });
            match kept {
                Some(replay) => Some(Arc::clone(replay)),
                None => {
                    let replay = ServerReplay::load(
                        options.server_replay.clone(),
                        matching,
                        extra,
                        options.server_replay_reuse,
                        options.server_replay_refresh,
                    )
                    .map_err(|(file, why)| {
                        RuleError::whole("server_replay", &file.display().to_string(), why)
                    })?;
                    warnings.extend(
                        replay
                            .skipped
                            .iter()
                            .map(|why| format!("server replay leaves out {why}")),
                    );
                    Some(Arc::new(replay))
                }
            }
        };
        let rules = Rules {
            options: options.clone(),
            modify_headers: each(&options.modify_headers, ModifyHeaders::parse)?,
            block_list: each(&options.block_list, Block::parse)?,
            server_replay,
            map_remote: each(&options.map_remote, MapRemote::parse)?,
            map_local: each(&options.map_local, MapLocal::parse)?,
            modify_body: each(&options.modify_body, ModifyBody::parse)?,
        };
        Ok((rules, warnings))
    }

    /// The options these rules were compiled from.
    pub fn options(&self) -> &RuleOptions {
        &self.options
    }

    pub fn is_empty(&self) -> bool {
        self.modify_headers.is_empty()
            && self.block_list.is_empty()
            && self.server_replay.is_none()
            && self.map_remote.is_empty()
            && self.map_local.is_empty()
            && self.modify_body.is_empty()
            && !self.options.anticache
            && !self.options.anticomp
    }

    /// Whether some rule answers requests without the server (map_local, block_list,
    /// server replay).
    pub fn answers_requests(&self) -> bool {
        self.server_replay.is_some() || !self.map_local.is_empty() || !self.block_list.is_empty()
    }

    /// How many recorded answers server replay has left (`None`: no server replay).
    pub fn server_replay_remaining(&self) -> Option<usize> {
        self.server_replay.as_ref().map(|r| r.remaining())
    }
}
