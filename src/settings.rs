//! Options from the config file (`CONFDIR/config.yaml`) and from `--set NAME=VALUE`,
//! turned into the command-line arguments they stand for. clap then checks them as it
//! checks the command line, and every long option has a key without a second list of
//! options to keep in step: the key is the option's long name with `_` for `-`
//! (`listen_port`, `map_local`), as mitmproxy names its options.
//!
//! Precedence: the config file, then the command line (a key given there leaves the
//! file's value out), then `--set`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The config file's name inside the configuration directory.
pub const FILE_NAME: &str = "config.yaml";

/// Where an option was set, as error messages name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    File { path: PathBuf, line: usize },
    Set,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{} line {line}", path.display()),
            Origin::Set => f.write_str("--set"),
        }
    }
}

/// The command line with the config file's and `--set`'s options added, and where
/// each added option came from (by the option's id, its name with `_`; an item of a
/// list also by [`item_key`]).
pub struct Resolved {
    pub argv: Vec<OsString>,
    pub origins: HashMap<String, Origin>,
    /// Keys that are none of Periscope's options, in the order given: the options
    /// scripts add (`loader.add_option`), or mistakes when no script runs.
    pub unknown: Vec<Unknown>,
}

/// A key Periscope does not know, with its value (a string or a list of strings).
#[derive(Clone, Debug)]
pub struct Unknown {
    pub key: String,
    pub value: serde_json::Value,
    pub origin: Origin,
}

impl Unknown {
    /// The error when no script could take it.
    pub fn error(&self) -> String {
        format!("{}: unknown option {:?}", self.origin, self.key)
    }
}

/// Where [`Resolved::origins`] keeps the line of one item of a list option.
pub fn item_key(id: &str, item: &str) -> String {
    format!("{id}\n{item}")
}

/// One `key: value` of the config file or one `--set`.
#[derive(Debug)]
struct Entry {
    key: String,
    value: Value,
    origin: Origin,
}

#[derive(Debug, PartialEq)]
enum Value {
    /// `~`, `null` or nothing: the option keeps its default.
    Null,
    Scalar(String),
    /// Items with their lines.
    List(Vec<(String, usize)>),
}

/// Adds to `argv` what `config_file` (when it exists) and the `--set` options in
/// `matches` say. Errors name the file, the line and the key (or `--set`).
pub fn resolve(
    argv: &[OsString],
    command: &Command,
    matches: &ArgMatches,
    config_file: Option<&Path>,
) -> Result<Resolved, String> {
    let mut entries = match config_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => parse_file(path, &text)?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        },
        None => Vec::new(),
    };
    let from_file = entries.len();
    for text in matches.get_many::<String>("set").into_iter().flatten() {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("--set {text:?}: takes NAME=VALUE"))?;
        entries.push(Entry {
            key: key.trim().to_owned(),
            value: Value::Scalar(value.to_owned()),
            origin: Origin::Set,
        });
    }

    let running = matches.subcommand_name();
    let mut added = Vec::new();
    let mut origins = HashMap::new();
    let mut unknown: Vec<Unknown> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let Some((arg, subcommand)) = find_option(command, &entry.key) else {
            let value = match &entry.value {
                Value::Null => continue,
                Value::Scalar(text) => serde_json::Value::String(text.clone()),
                Value::List(items) => items
                    .iter()
                    .map(|(item, _)| serde_json::Value::String(item.clone()))
                    .collect(),
            };
            // `--set name=a --set name=b`: a list, as for Periscope's list options.
            match unknown.iter_mut().find(|u| u.key == entry.key) {
                Some(earlier) if entry.origin == Origin::Set && earlier.origin == Origin::Set => {
                    let mut items = match earlier.value.take() {
                        serde_json::Value::Array(items) => items,
                        single => vec![single],
                    };
                    items.push(value);
                    earlier.value = serde_json::Value::Array(items);
                }
                // The command line (--set) wins over the file.
                Some(earlier) => {
                    earlier.value = value;
                    earlier.origin = entry.origin.clone();
                }
                None => unknown.push(Unknown {
                    key: entry.key.clone(),
                    value,
                    origin: entry.origin.clone(),
                }),
            }
            continue;
        };
        let args = arguments(arg, &entry.value)
            .map_err(|why| format!("{}: {}: {why}", entry.origin, entry.key))?;
        check(command, subcommand, &args)
            .map_err(|why| format!("{}: {}: {why}", entry.origin, entry.key))?;
        if subcommand.is_some() && subcommand != running {
            // An option of another subcommand (dump's flow_detail while the console
            // runs): valid, and not for this run.
            continue;
        }
        let id = arg.get_id().as_str();
        let from_this_file = index < from_file;
        if from_this_file && given_on_command_line(matches, subcommand, id) {
            continue;
        }
        origins.insert(id.to_owned(), entry.origin.clone());
        if let (Value::List(items), Origin::File { path, .. }) = (&entry.value, &entry.origin) {
            for (item, line) in items {
                let origin = Origin::File {
                    path: path.clone(),
                    line: *line,
                };
                origins.insert(item_key(id, item), origin);
            }
        }
        added.extend(args);
    }

    // Options go before a `--` (after it everything is a positional word).
    let mut argv = argv.to_vec();
    let at = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    argv.splice(at..at, added);
    Ok(Resolved {
        argv,
        origins,
        unknown,
    })
}

/// The option a key names (the long name with `_` or `-`, or an alias) and the
/// subcommand it belongs to (`None`: a global option).
fn find_option<'a>(command: &'a Command, key: &str) -> Option<(&'a Arg, Option<&'a str>)> {
    let long = key.replace('_', "-");
    if matches!(long.as_str(), "help" | "version" | "set") {
        return None;
    }
    let named = |arg: &&Arg| {
        arg.get_long() == Some(long.as_str())
            || arg
                .get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&long.as_str()))
    };
    if let Some(arg) = command.get_arguments().find(named) {
        return Some((arg, None));
    }
    command.get_subcommands().find_map(|sub| {
        sub.get_arguments()
            .find(named)
            .map(|arg| (arg, Some(sub.get_name())))
    })
}

/// The command-line arguments that say what `value` says for `arg`.
fn arguments(arg: &Arg, value: &Value) -> Result<Vec<OsString>, String> {
    let long = arg.get_long().unwrap_or_default();
    if long == "confdir" {
        return Err("cannot be set here: it is where the config file is read from".into());
    }
    let flag = |v: &str| OsString::from(format!("--{long}={v}"));
    let bare = || OsString::from(format!("--{long}"));
    match (arg.get_action(), value) {
        (_, Value::Null) => Ok(Vec::new()),
        (ArgAction::SetTrue, Value::Scalar(text)) => match parse_bool(text) {
            Some(true) => Ok(vec![bare()]),
            Some(false) => Ok(Vec::new()),
            None => Err(format!("{text:?} is not true or false")),
        },
        (ArgAction::Count, Value::Scalar(text)) => {
            let count: usize = text
                .trim()
                .parse()
                .map_err(|_| format!("{text:?} is not a count (0, 1, 2, …)"))?;
            Ok(vec![bare(); count])
        }
        (ArgAction::Append, Value::Scalar(text)) => Ok(vec![flag(text)]),
        (ArgAction::Append, Value::List(items)) => {
            Ok(items.iter().map(|(item, _)| flag(item)).collect())
        }
        (_, Value::List(_)) => Err("takes one value, not a list".into()),
        (_, Value::Scalar(text)) => Ok(vec![flag(text)]),
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Lets clap check one option's arguments alone, so that its complaint is tied to the
/// line that caused it.
fn check(command: &Command, subcommand: Option<&str>, args: &[OsString]) -> Result<(), String> {
    let mut probe = vec![OsString::from(command.get_name())];
    probe.extend(subcommand.map(OsString::from));
    probe.extend(args.iter().cloned());
    // Subcommands with required arguments (export) are not probed with them.
    let command = command.clone().subcommand_required(false);
    match command.try_get_matches_from(probe) {
        Ok(_) => Ok(()),
        Err(error) => {
            let text = error.to_string();
            let first = text.lines().next().unwrap_or("invalid value").trim();
            Err(first.trim_start_matches("error: ").to_owned())
        }
    }
}

fn given_on_command_line(matches: &ArgMatches, subcommand: Option<&str>, id: &str) -> bool {
    let matches = match subcommand {
        Some(name) => match matches.subcommand_matches(name) {
            Some(sub) => sub,
            None => return false,
        },
        None => matches,
    };
    matches!(
        matches.try_get_raw(id).ok().and(matches.value_source(id)),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// The file's `key: value` pairs (a value is a plain value or a list of them).
fn parse_file(path: &Path, text: &str) -> Result<Vec<Entry>, String> {
    #[derive(Default)]
    struct Events(Vec<(Event, Marker)>);
    impl MarkedEventReceiver for Events {
        fn on_event(&mut self, event: Event, mark: Marker) {
            self.0.push((event, mark));
        }
    }
    let at = |line: usize| Origin::File {
        path: path.to_owned(),
        line,
    };
    let mut events = Events::default();
    Parser::new_from_str(text)
        .load(&mut events, false)
        .map_err(|e| format!("{}: {}", at(e.marker().line()), e.info()))?;
    let mut events = events
        .0
        .into_iter()
        .filter(|(e, _)| !matches!(e, Event::StreamStart | Event::DocumentStart))
        .peekable();
    let mut entries: Vec<Entry> = Vec::new();
    match events.next() {
        None | Some((Event::StreamEnd, _)) => return Ok(entries),
        Some((Event::Scalar(value, TScalarStyle::Plain, ..), _)) if is_null(&value) => {
            return Ok(entries)
        }
        Some((Event::MappingStart(..), _)) => {}
        Some((_, mark)) => {
            return Err(format!(
                "{}: the config file is a mapping of option names to values (`listen_port: 8080`)",
                at(mark.line())
            ))
        }
    }
    loop {
        let (key, line) = match events.next() {
            Some((Event::MappingEnd, _)) | None => break,
            Some((Event::Scalar(key, ..), mark)) => (key, mark.line()),
            Some((_, mark)) => {
                return Err(format!(
                    "{}: an option name must be a plain word",
                    at(mark.line())
                ))
            }
        };
        if let Some(first) = entries.iter().find(|e| e.key == key) {
            let Origin::File { line: first, .. } = first.origin else {
                unreachable!("file entries come from the file")
            };
            return Err(format!(
                "{}: {key}: set twice (first on line {first})",
                at(line)
            ));
        }
        let value = match events.next() {
            Some((Event::Scalar(value, style, ..), _)) => {
                if style == TScalarStyle::Plain && is_null(&value) {
                    Value::Null
                } else {
                    Value::Scalar(value)
                }
            }
            Some((Event::SequenceStart(..), _)) => {
                let mut items = Vec::new();
                loop {
                    match events.next() {
                        Some((Event::SequenceEnd, _)) => break,
                        Some((Event::Scalar(item, ..), mark)) => items.push((item, mark.line())),
                        Some((_, mark)) => {
                            return Err(format!(
                                "{}: {key}: a list item must be a plain value",
                                at(mark.line())
                            ))
                        }
                        None => break,
                    }
                }
                Value::List(items)
            }
            Some((_, mark)) => {
                return Err(format!(
                    "{}: {key}: the value must be a plain value or a list of them",
                    at(mark.line())
                ))
            }
            None => Value::Null,
        };
        entries.push(Entry {
            key,
            value,
            origin: at(line),
        });
    }
    Ok(entries)
}

fn is_null(value: &str) -> bool {
    matches!(value, "" | "~" | "null" | "Null" | "NULL")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn resolve_with(file: &str, argv: &[&str]) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, file).unwrap();
        let command = crate::cli::Cli::command();
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let matches = command.clone().try_get_matches_from(&argv).unwrap();
        let resolved = resolve(&argv, &command, &matches, Some(&path))
            .map_err(|e| e.replace(&path.display().to_string(), "FILE"))?;
        if let Some(unknown) = resolved.unknown.first() {
            return Err(unknown.error().replace(&path.display().to_string(), "FILE"));
        }
        Ok(resolved
            .argv
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect())
    }

    #[test]
    fn keys_become_the_options_they_name() {
        let argv = resolve_with(
            "listen_port: 9090\nssl-insecure: true\nanticache: false\nmap_local:\n  - '|a|/tmp'\n  - '|b|/tmp'\nverbose: 2\n",
            &["periscope", "dump"],
        )
        .unwrap();
        assert_eq!(
            argv,
            [
                "periscope",
                "dump",
                "--listen-port=9090",
                "--ssl-insecure",
                "--map-local=|a|/tmp",
                "--map-local=|b|/tmp",
                "--verbose",
                "--verbose"
            ]
        );
    }

    #[test]
    fn the_command_line_wins_over_the_file_and_set_wins_over_both() {
        let argv = resolve_with(
            "listen_port: 9090\nmodify_headers: [/a/1]\n",
            &[
                "periscope",
                "-p",
                "7070",
                "--modify-headers",
                "/b/2",
                "--set",
                "listen_port=6060",
            ],
        )
        .unwrap();
        assert_eq!(
            argv[argv.len() - 1],
            "--listen-port=6060",
            "only --set is added: {argv:?}"
        );
        assert!(!argv
            .iter()
            .any(|a| a.contains("9090") || a.contains("/a/1")));
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(&argv).unwrap();
        assert_eq!(cli.proxy.listen_port, Some(6060));
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        assert_eq!(
            resolve_with(
                "# comment\nlisten_port: 8080\nlisten_prot: 1\n",
                &["periscope"]
            )
            .unwrap_err(),
            "FILE line 3: unknown option \"listen_prot\""
        );
        let bad_value = resolve_with("\n\nlisten_port: eighty\n", &["periscope"]).unwrap_err();
        assert!(
            bad_value.starts_with("FILE line 3: listen_port: invalid value 'eighty'"),
            "{bad_value}"
        );
        assert_eq!(
            resolve_with("ssl_insecure: maybe\n", &["periscope"]).unwrap_err(),
            "FILE line 1: ssl_insecure: \"maybe\" is not true or false"
        );
        assert_eq!(
            resolve_with("listen_port: [1, 2]\n", &["periscope"]).unwrap_err(),
            "FILE line 1: listen_port: takes one value, not a list"
        );
        assert_eq!(
            resolve_with("a: 1\na: 2\n", &["periscope"]).unwrap_err(),
            "FILE line 2: a: set twice (first on line 1)"
        );
        assert!(resolve_with("key: [unclosed\n", &["periscope"])
            .unwrap_err()
            .starts_with("FILE line "));
        assert_eq!(
            resolve_with("", &["periscope", "--set", "nope=1"]).unwrap_err(),
            "--set: unknown option \"nope\""
        );
    }

    #[test]
    fn an_empty_file_or_a_missing_one_adds_nothing() {
        assert_eq!(resolve_with("", &["periscope"]).unwrap(), ["periscope"]);
        assert_eq!(
            resolve_with("# only comments\n", &["periscope"]).unwrap(),
            ["periscope"]
        );
        let command = crate::cli::Cli::command();
        let argv = vec![OsString::from("periscope")];
        let matches = command.clone().try_get_matches_from(&argv).unwrap();
        let resolved = resolve(
            &argv,
            &command,
            &matches,
            Some(Path::new("/nonexistent/config.yaml")),
        )
        .unwrap();
        assert_eq!(resolved.argv, argv);
    }

    #[test]
    fn a_subcommand_option_applies_only_when_that_subcommand_runs() {
        assert_eq!(
            resolve_with("flow_detail: 3\n", &["periscope"]).unwrap(),
            ["periscope"]
        );
        assert_eq!(
            resolve_with("flow_detail: 3\n", &["periscope", "dump", "--", "~q"]).unwrap(),
            ["periscope", "dump", "--flow-detail=3", "--", "~q"]
        );
    }
}
