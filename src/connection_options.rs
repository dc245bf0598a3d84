//! The connection options a user changes while the proxy runs (the options page, the
//! console's `O`, `PUT /options`): timeouts, and how servers are trusted and answered.
//! Named and written as on the command line and in the config file (`"10s"`, a path).
//! A change applies to the waits and server connections that start after it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use periscope_control::ControlError;
use periscope_proxy::{ProxyControl, Timeouts};
use periscope_tls::{ClientCertificates, UpstreamTls};
use serde_json::{Map, Value};

use crate::cli::ProxyArgs;

/// The options' names, as `--NAME` and the config file spell them (with `_`).
pub const NAMES: [&str; 8] = [
    "connect_timeout",
    "handshake_timeout",
    "renegotiation_timeout",
    "response_timeout",
    "idle_timeout",
    "ssl_insecure",
    "upstream_trusted_ca",
    "client_certs",
];

#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionOptions {
    pub timeouts: Timeouts,
    /// `-k`: server certificates are not verified.
    pub ssl_insecure: bool,
    pub upstream_trusted_ca: Option<PathBuf>,
    pub client_certs: Option<PathBuf>,
}

impl ConnectionOptions {
    /// The options as the proxy was started with them (`timeouts` are the proxy's).
    pub fn new(args: &ProxyArgs, timeouts: Timeouts) -> Self {
        ConnectionOptions {
            timeouts,
            ssl_insecure: args.ssl_insecure,
            upstream_trusted_ca: args.upstream_trusted_ca.clone(),
            client_certs: args.client_certs.clone(),
        }
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let t = &self.timeouts;
        let text = |d: Duration| Value::String(humantime::format_duration(d).to_string());
        let path = |p: &Option<PathBuf>| match p {
            Some(path) => Value::String(path.display().to_string()),
            None => Value::Null,
        };
        let mut map = Map::new();
        map.insert("connect_timeout".into(), text(t.connect));
        map.insert("handshake_timeout".into(), text(t.tls.handshake));
        map.insert("renegotiation_timeout".into(), text(t.tls.renegotiation));
        map.insert("response_timeout".into(), text(t.response));
        map.insert("idle_timeout".into(), text(t.body_idle));
        map.insert("ssl_insecure".into(), Value::Bool(self.ssl_insecure));
        map.insert(
            "upstream_trusted_ca".into(),
            path(&self.upstream_trusted_ca),
        );
        map.insert("client_certs".into(), path(&self.client_certs));
        map
    }

    /// These options with `changes` (values by [`NAMES`]) made; a value that does not
    /// read is refused with its option's name. Names that are not connection
    /// options are left for the caller.
    pub fn with_changes(&self, changes: &Map<String, Value>) -> Result<Self, ControlError> {
        let mut options = self.clone();
        for (name, value) in changes {
            let invalid = |reason: String| ControlError::InvalidOption(format!("{name}: {reason}"));
            let t = &mut options.timeouts;
            match name.as_str() {
                "connect_timeout" => t.connect = duration(value).map_err(invalid)?,
                "handshake_timeout" => t.tls.handshake = duration(value).map_err(invalid)?,
                "renegotiation_timeout" => {
                    t.tls.renegotiation = duration(value).map_err(invalid)?
                }
                "response_timeout" => t.response = duration(value).map_err(invalid)?,
                "idle_timeout" => {
                    // One option on the command line for the three idle waits.
                    let idle = duration(value).map_err(invalid)?;
                    (t.body_idle, t.client_idle, t.pool_idle) = (idle, idle, idle);
                }
                "ssl_insecure" => {
                    options.ssl_insecure = value
                        .as_bool()
                        .ok_or_else(|| invalid("true or false".into()))?
                }
                "upstream_trusted_ca" => {
                    options.upstream_trusted_ca = optional_path(value).map_err(invalid)?
                }
                "client_certs" => options.client_certs = optional_path(value).map_err(invalid)?,
                _ => {}
            }
        }
        Ok(options)
    }

    /// Makes what `self` needs in place of `before` (a CA file or client certificate
    /// that does not load is an error and changes nothing), for
    /// [`PreparedChange::commit`] to put in force.
    pub fn prepare(
        &self,
        before: &Self,
        proxy: &ProxyControl,
    ) -> Result<PreparedChange, ControlError> {
        let tls_changed = self.ssl_insecure != before.ssl_insecure
            || self.upstream_trusted_ca != before.upstream_trusted_ca
            || self.client_certs != before.client_certs;
        let tls = if tls_changed {
            let mut settings = proxy.upstream_tls_settings();
            settings.verify = !self.ssl_insecure;
            settings.trusted_ca.clone_from(&self.upstream_trusted_ca);
            settings.client_certificates = match &self.client_certs {
                Some(path) => {
                    Some(Arc::new(ClientCertificates::load(path).map_err(|e| {
                        ControlError::InvalidOption(format!("client_certs: {e}"))
                    })?))
                }
                None => None,
            };
            let tls = UpstreamTls::new(settings).map_err(|e| {
                ControlError::InvalidOption(format!(
                    "upstream_trusted_ca: {}: {e}",
                    self.upstream_trusted_ca
                        .as_deref()
                        .map_or("(none)".into(), |p| p.display().to_string())
                ))
            })?;
            Some(tls)
        } else {
            None
        };
        Ok(PreparedChange {
            timeouts: (self.timeouts != before.timeouts).then_some(self.timeouts),
            tls,
        })
    }
}

/// A change of the connection options, ready to be put in force at once.
pub struct PreparedChange {
    timeouts: Option<Timeouts>,
    tls: Option<UpstreamTls>,
}

impl PreparedChange {
    pub fn commit(self, proxy: &ProxyControl) {
        if let Some(timeouts) = self.timeouts {
            proxy.set_timeouts(timeouts);
        }
        if let Some(tls) = self.tls {
            proxy.set_upstream_tls(tls);
        }
    }
}

/// `"10s"`, `"1m 30s"`, `"500ms"`: as `--connect-timeout` reads it; more than zero.
fn duration(value: &Value) -> Result<Duration, String> {
    let text = value
        .as_str()
        .ok_or_else(|| "a duration such as \"10s\" or \"500ms\"".to_owned())?;
    let duration = humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?}: {e}"))?;
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(duration)
}

/// A path, or none (`null` or an empty string).
fn optional_path(value: &Value) -> Result<Option<PathBuf>, String> {
    optional_text(value)
        .map(|text| text.map(PathBuf::from))
        .map_err(|()| "a path, or an empty string for none".into())
}

/// Text, trimmed, or none (`null` or an empty string); anything else is `Err`.
pub fn optional_text(value: &Value) -> Result<Option<&str>, ()> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) if text.trim().is_empty() => Ok(None),
        Value::String(text) => Ok(Some(text.trim())),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ConnectionOptions {
        ConnectionOptions {
            timeouts: Timeouts::default(),
            ssl_insecure: false,
            upstream_trusted_ca: None,
            client_certs: Some("/etc/client.pem".into()),
        }
    }

    #[test]
    fn options_read_back_what_they_report() {
        let options = options();
        let changed = options.with_changes(&options.to_json()).unwrap();
        assert_eq!(changed, options);
        assert_eq!(
            options.to_json().keys().collect::<Vec<_>>().len(),
            NAMES.len()
        );
        for name in NAMES {
            assert!(options.to_json().contains_key(name), "{name}");
        }
    }

    #[test]
    fn changes_are_read_as_on_the_command_line() {
        let changes = serde_json::json!({
            "connect_timeout": "1m 30s",
            "idle_timeout": "500ms",
            "client_certs": "",
            "upstream_trusted_ca": "/tmp/ca.pem",
            "ssl_insecure": true,
        });
        let changed = options()
            .with_changes(changes.as_object().unwrap())
            .unwrap();
        assert_eq!(changed.timeouts.connect, Duration::from_secs(90));
        assert_eq!(changed.timeouts.client_idle, Duration::from_millis(500));
        assert_eq!(changed.timeouts.pool_idle, Duration::from_millis(500));
        assert_eq!(changed.client_certs, None);
        assert_eq!(changed.upstream_trusted_ca, Some("/tmp/ca.pem".into()));
        assert!(changed.ssl_insecure);
    }

    #[test]
    fn a_bad_value_is_refused_with_its_name() {
        for (name, value) in [
            ("connect_timeout", serde_json::json!("soon")),
            ("response_timeout", serde_json::json!("0s")),
            ("handshake_timeout", serde_json::json!(10)),
            ("ssl_insecure", serde_json::json!("yes")),
            ("client_certs", serde_json::json!(["a"])),
        ] {
            let mut changes = Map::new();
            changes.insert(name.into(), value);
            let error = options().with_changes(&changes).unwrap_err().to_string();
            assert!(error.contains(name), "{error}");
        }
    }
}
