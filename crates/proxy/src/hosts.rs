//! Which connections Periscope leaves alone: `--ignore-hosts` (or everything outside
//! `--allow-hosts`) passes through untouched, TLS included, and `--tcp-hosts` is
//! intercepted at the TLS layer but relayed as bytes inside. Regexes are searched,
//! case-insensitively, in `host:port` for every name the connection is known by: the
//! name or address asked for, the address connected to, and the TLS SNI (as
//! mitmproxy does).

use regex::{Regex, RegexBuilder};

/// What happens to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostTreatment {
    Intercept,
    /// Relayed untouched.
    PassThrough,
    /// TLS intercepted, the bytes inside relayed as they are.
    RelayTcp,
}

#[derive(Clone, Debug, Default)]
pub struct HostRules {
    ignore: Vec<Regex>,
    allow: Vec<Regex>,
    tcp: Vec<Regex>,
}

/// A host regex that did not compile, or ignore and allow given together.
#[derive(Debug, thiserror::Error)]
pub enum HostRulesError {
    #[error("invalid {option} regex \"{pattern}\": {source}")]
    Regex {
        option: &'static str,
        pattern: String,
        source: regex::Error,
    },
    #[error("--ignore-hosts and --allow-hosts exclude each other: give one of them")]
    IgnoreAndAllow,
}

impl HostRules {
    pub fn new(
        ignore: &[String],
        allow: &[String],
        tcp: &[String],
    ) -> Result<Self, HostRulesError> {
        if !ignore.is_empty() && !allow.is_empty() {
            return Err(HostRulesError::IgnoreAndAllow);
        }
        let compile = |option: &'static str, patterns: &[String]| {
            patterns
                .iter()
                .map(|pattern| {
                    RegexBuilder::new(pattern)
                        .case_insensitive(true)
                        .build()
                        .map_err(|source| HostRulesError::Regex {
                            option,
                            pattern: pattern.clone(),
                            source,
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(HostRules {
            ignore: compile("--ignore-hosts", ignore)?,
            allow: compile("--allow-hosts", allow)?,
            tcp: compile("--tcp-hosts", tcp)?,
        })
    }

    /// How to treat a connection known by `names` (`host:port` each).
    pub fn treatment<S: AsRef<str>>(&self, names: &[S]) -> HostTreatment {
        let any = |rules: &[Regex]| {
            names
                .iter()
                .any(|name| rules.iter().any(|rule| rule.is_match(name.as_ref())))
        };
        let ignored = if self.allow.is_empty() {
            any(&self.ignore)
        } else {
            !any(&self.allow)
        };
        if ignored {
            HostTreatment::PassThrough
        } else if any(&self.tcp) {
            HostTreatment::RelayTcp
        } else {
            HostTreatment::Intercept
        }
    }

    /// No rule at all: every connection is intercepted.
    pub fn is_empty(&self) -> bool {
        self.ignore.is_empty() && self.allow.is_empty() && self.tcp.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(ignore: &[&str], allow: &[&str], tcp: &[&str]) -> HostRules {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        HostRules::new(&owned(ignore), &owned(allow), &owned(tcp)).unwrap()
    }

    #[test]
    fn ignored_hosts_match_by_any_of_their_names() {
        let rules = rules(&[r"^bank\.example:443$", r"^10\.1\.2\.3:"], &[], &[]);
        assert_eq!(
            rules.treatment(&["BANK.example:443"]),
            HostTreatment::PassThrough
        );
        // Asked for by IP, known by SNI: either name counts.
        assert_eq!(
            rules.treatment(&["192.0.2.1:443", "bank.example:443"]),
            HostTreatment::PassThrough
        );
        assert_eq!(
            rules.treatment(&["10.1.2.3:8443"]),
            HostTreatment::PassThrough
        );
        assert_eq!(
            rules.treatment(&["shop.example:443"]),
            HostTreatment::Intercept
        );
    }

    #[test]
    fn allow_hosts_ignore_everything_else() {
        let rules = rules(&[], &["shop"], &[]);
        assert_eq!(
            rules.treatment(&["shop.example:443"]),
            HostTreatment::Intercept
        );
        assert_eq!(
            rules.treatment(&["bank.example:443"]),
            HostTreatment::PassThrough
        );
    }

    #[test]
    fn tcp_hosts_are_intercepted_but_relayed_as_bytes_unless_ignored() {
        let rules = rules(&["ignored"], &[], &["mqtt|ignored"]);
        assert_eq!(
            rules.treatment(&["mqtt.example:8883"]),
            HostTreatment::RelayTcp
        );
        assert_eq!(
            rules.treatment(&["ignored.example:1"]),
            HostTreatment::PassThrough
        );
    }

    #[test]
    fn ignore_and_allow_together_and_bad_regexes_are_refused() {
        let one = vec!["a".to_string()];
        assert!(matches!(
            HostRules::new(&one, &one, &[]),
            Err(HostRulesError::IgnoreAndAllow)
        ));
        let error = HostRules::new(&["(".into()], &[], &[]).unwrap_err();
        assert!(error.to_string().contains("--ignore-hosts"), "{error}");
    }
}
