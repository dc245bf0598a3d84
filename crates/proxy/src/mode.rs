//! The proxy modes, parsed from mitmproxy's grammar `mode[:data][@[host:]port]`. A mode
//! decides only how a listener's clients are accepted and how the destination of
//! their connections is found; everything after that (TLS on both legs, the exchange
//! pipeline, the recording) is the same code for every mode.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use url::Url;

/// How a listener's clients reach their servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// An explicit HTTP proxy: absolute-form requests and CONNECT.
    Regular,
    /// Every connection goes to one server; the client speaks to Periscope as to it.
    Reverse(ReverseTarget),
    /// An explicit HTTP proxy whose server connections go through another proxy.
    Upstream(UpstreamProxy),
    /// A SOCKS5 server (RFC 1928), with RFC 1929 credentials when `--proxyauth` is set.
    Socks5,
    /// Connections the kernel redirected to the listener (an `iptables`/`nft`
    /// REDIRECT): the destination is the one the client connected to.
    Transparent,
}

/// The server of a reverse proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReverseTarget {
    /// The server speaks TLS (`https://`).
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// How the proxy in an `upstream:` mode is spoken to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamScheme {
    /// An HTTP proxy: CONNECT for tunnels, absolute-form for plain HTTP.
    Http,
    /// The same, over TLS to the proxy.
    Https,
    /// SOCKS5, names resolved by the proxy (as `socks5h://` in curl).
    Socks5,
}

/// The proxy all server connections go through in an `upstream:` mode.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UpstreamProxy {
    pub scheme: UpstreamScheme,
    pub host: String,
    pub port: u16,
    /// From the URL (`socks5://user:pass@host:port`) or `--upstream-auth`.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for UpstreamProxy {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for UpstreamProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            UpstreamScheme::Http => "http",
            UpstreamScheme::Https => "https",
            UpstreamScheme::Socks5 => "socks5",
        };
        write!(f, "{scheme}://{}", host_port(&self.host, self.port))
    }
}

/// One `--mode`: the mode and, when given, where its listener listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeSpec {
    pub mode: ProxyMode,
    pub listen_host: Option<IpAddr>,
    pub listen_port: Option<u16>,
}

/// Where Periscope listens and what it leaves alone: `--mode`, `--ignore-hosts`,
/// `--allow-hosts`, `--tcp-hosts`, `--keep-host-header`.
#[derive(Clone, Debug, Default)]
pub struct ModesConfig {
    /// Each listener's mode and address; empty means one regular listener at
    /// `ProxyConfig::listen`.
    pub listeners: Vec<(ProxyMode, SocketAddr)>,
    pub ignore_hosts: Vec<String>,
    pub allow_hosts: Vec<String>,
    pub tcp_hosts: Vec<String>,
    /// Reverse modes pass the client's Host header on instead of the server's name.
    pub keep_host_header: bool,
}

/// Why a `--mode` did not parse; the message says what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid mode \"{spec}\": {reason}")]
pub struct ModeError {
    pub spec: String,
    pub reason: String,
}

impl ModeSpec {
    /// The regular mode, listening where `--listen-host`/`-p` say.
    pub fn regular() -> Self {
        ModeSpec {
            mode: ProxyMode::Regular,
            listen_host: None,
            listen_port: None,
        }
    }

    /// Parses `mode[:data][@[host:]port]`: `regular`, `reverse:https://example.com`,
    /// `upstream:http://proxy:3128`, `upstream:socks5://user:pass@proxy:1080`,
    /// `socks5@1081`, `transparent@0.0.0.0:8080`.
    ///
    /// A URL's credentials and a listen address are both introduced by `@`. The
    /// listen address is the text after the last `@` when it is one (`PORT`,
    /// `IP:PORT`, `[IPv6]:PORT`) and what precedes it is a complete mode, as in
    /// mitmproxy; otherwise that `@` belongs to the URL's credentials.
    pub fn parse(text: &str) -> Result<ModeSpec, ModeError> {
        let error = |reason: String| ModeError {
            spec: text.to_owned(),
            reason,
        };
        if let Some((head, listen)) = text.rsplit_once('@') {
            if let Some((listen_host, listen_port)) = parse_listen(listen) {
                if let Ok(mode) = parse_mode(head) {
                    return Ok(ModeSpec {
                        mode,
                        listen_host,
                        listen_port: Some(listen_port),
                    });
                }
            }
        }
        let mode = parse_mode(text).map_err(error)?;
        Ok(ModeSpec {
            mode,
            listen_host: None,
            listen_port: None,
        })
    }

    /// The port a listener of this mode takes when neither the spec nor `-p` names
    /// one (mitmproxy's defaults).
    pub fn default_port(&self) -> u16 {
        match self.mode {
            ProxyMode::Socks5 => 1080,
            _ => 8080,
        }
    }

    /// The listener's address: the spec's, else `default` (from `--listen-host` and
    /// `-p`), else the mode's default port.
    pub fn listen_address(&self, default_host: IpAddr, default_port: Option<u16>) -> SocketAddr {
        let host = self.listen_host.unwrap_or(default_host);
        let port = self
            .listen_port
            .or(default_port)
            .unwrap_or_else(|| self.default_port());
        SocketAddr::new(host, port)
    }
}

impl ProxyMode {
    /// The mode's name: `regular`, `reverse`, `upstream`, `socks5`, `transparent`.
    pub fn name(&self) -> &'static str {
        match self {
            ProxyMode::Regular => "regular",
            ProxyMode::Reverse(_) => "reverse",
            ProxyMode::Upstream(_) => "upstream",
            ProxyMode::Socks5 => "socks5",
            ProxyMode::Transparent => "transparent",
        }
    }

    /// The clients speak HTTP proxy requests (absolute-form, CONNECT).
    pub fn is_http_proxy(&self) -> bool {
        matches!(self, ProxyMode::Regular | ProxyMode::Upstream(_))
    }
}

/// As written, without the listen address and without credentials: what a flow
/// records as its mode.
impl fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyMode::Reverse(target) => {
                let scheme = if target.tls { "https" } else { "http" };
                write!(
                    f,
                    "reverse:{scheme}://{}",
                    host_port(&target.host, target.port)
                )
            }
            ProxyMode::Upstream(proxy) => write!(f, "upstream:{proxy}"),
            other => f.write_str(other.name()),
        }
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `PORT`, `IP:PORT` or `[IPv6]:PORT`.
fn parse_listen(text: &str) -> Option<(Option<IpAddr>, u16)> {
    if let Ok(port) = text.parse::<u16>() {
        return Some((None, port));
    }
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((Some(host.parse::<IpAddr>().ok()?), port))
}

fn parse_mode(text: &str) -> Result<ProxyMode, String> {
    let (name, data) = match text.split_once(':') {
        Some((name, data)) => (name, Some(data)),
        None => (text, None),
    };
    let no_data = |mode: ProxyMode| match data {
        None => Ok(mode),
        Some(_) => Err(format!("the {name} mode takes no data after \"{name}:\"")),
    };
    match name {
        "regular" => no_data(ProxyMode::Regular),
        "socks5" => no_data(ProxyMode::Socks5),
        "transparent" => no_data(ProxyMode::Transparent),
        "reverse" => {
            let url = parse_url(name, data, &["http", "https"])?;
            if !url.username().is_empty() || url.password().is_some() {
                return Err("a reverse target takes no credentials".into());
            }
            let tls = url.scheme() == "https";
            Ok(ProxyMode::Reverse(ReverseTarget {
                tls,
                host: url_host(&url)?,
                port: url.port().unwrap_or(if tls { 443 } else { 80 }),
            }))
        }
        "upstream" => {
            let url = parse_url(name, data, &["http", "https", "socks5"])?;
            let scheme = match url.scheme() {
                "http" => UpstreamScheme::Http,
                "https" => UpstreamScheme::Https,
                _ => UpstreamScheme::Socks5,
            };
            let default_port = match scheme {
                UpstreamScheme::Http => 80,
                UpstreamScheme::Https => 443,
                UpstreamScheme::Socks5 => 1080,
            };
            let credentials = match (url.username(), url.password()) {
                ("", None) => None,
                (user, Some(password)) => Some((decode(user)?, decode(password)?)),
                (_, None) => return Err("credentials in the URL need user:pass".into()),
            };
            Ok(ProxyMode::Upstream(UpstreamProxy {
                scheme,
                host: url_host(&url)?,
                port: url.port().unwrap_or(default_port),
                credentials,
            }))
        }
        "" => Err("no mode named".into()),
        other => Err(format!(
            "unknown mode \"{other}\" (regular, reverse:URL, upstream:URL, socks5, transparent)"
        )),
    }
}

fn parse_url(name: &str, data: Option<&str>, schemes: &[&str]) -> Result<Url, String> {
    let expected = schemes
        .iter()
        .map(|s| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(", ");
    let data = data
        .filter(|d| !d.is_empty())
        .ok_or_else(|| format!("the {name} mode needs a URL ({expected}): {name}:URL"))?;
    let url = Url::parse(data).map_err(|e| format!("\"{data}\" is not a URL: {e}"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "the {name} mode takes {expected} URLs, not {}://",
            url.scheme()
        ));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("\"{data}\" must name a server only (no path)"));
    }
    Ok(url)
}

fn url_host(url: &Url) -> Result<String, String> {
    match url.host() {
        Some(url::Host::Domain(name)) if !name.is_empty() => Ok(name.to_ascii_lowercase()),
        Some(url::Host::Ipv4(ip)) => Ok(ip.to_string()),
        Some(url::Host::Ipv6(ip)) => Ok(ip.to_string()),
        _ => Err(format!("\"{url}\" names no host")),
    }
}

/// URL userinfo is percent-encoded (`p%40ss` for `p@ss`).
fn decode(text: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| format!("\"{text}\" is not valid UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ModeSpec {
        ModeSpec::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn modes_without_data() {
        assert_eq!(parse("regular"), ModeSpec::regular());
        assert_eq!(parse("socks5").mode, ProxyMode::Socks5);
        assert_eq!(parse("socks5").default_port(), 1080);
        assert_eq!(parse("transparent").mode, ProxyMode::Transparent);
    }

    #[test]
    fn listen_addresses_follow_the_last_at() {
        let spec = parse("socks5@1081");
        assert_eq!((spec.listen_host, spec.listen_port), (None, Some(1081)));
        let spec = parse("regular@0.0.0.0:8081");
        assert_eq!(spec.listen_host, Some("0.0.0.0".parse().unwrap()));
        let spec = parse("transparent@[::1]:8082");
        assert_eq!(spec.listen_host, Some("::1".parse().unwrap()));
        assert_eq!(spec.listen_port, Some(8082));
        let spec = parse("reverse:https://example.com@127.0.0.1:8443");
        assert_eq!(spec.listen_port, Some(8443));
        assert_eq!(spec.mode.to_string(), "reverse:https://example.com:443");
    }

    #[test]
    fn defaults_fill_what_the_spec_leaves_out() {
        let any: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            parse("socks5").listen_address(any, None),
            "127.0.0.1:1080".parse().unwrap()
        );
        assert_eq!(
            parse("socks5").listen_address(any, Some(0)),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            parse("regular@9000").listen_address(any, Some(0)),
            "127.0.0.1:9000".parse().unwrap()
        );
    }

    #[test]
    fn reverse_targets_default_their_port_by_scheme() {
        let ProxyMode::Reverse(target) = parse("reverse:https://Example.com").mode else {
            panic!("not reverse")
        };
        assert_eq!(
            target,
            ReverseTarget {
                tls: true,
                host: "example.com".into(),
                port: 443
            }
        );
        let ProxyMode::Reverse(target) = parse("reverse:http://[::1]:8000/").mode else {
            panic!("not reverse")
        };
        assert_eq!(
            (target.tls, target.host.as_str(), target.port),
            (false, "::1", 8000)
        );
    }

    #[test]
    fn upstream_credentials_are_the_urls_and_never_printed() {
        let spec = parse("upstream:socks5://user:p%40ss@proxy.test:1080");
        let ProxyMode::Upstream(proxy) = &spec.mode else {
            panic!("not upstream")
        };
        assert_eq!(proxy.scheme, UpstreamScheme::Socks5);
        assert_eq!(
            proxy.credentials,
            Some(("user".to_owned(), "p@ss".to_owned()))
        );
        assert_eq!(spec.listen_port, None);
        assert_eq!(spec.mode.to_string(), "upstream:socks5://proxy.test:1080");
        assert!(!format!("{spec:?}").contains("p@ss"));
        // An IP after the credentials: the "user:pass" before it is no complete mode.
        let spec = parse("upstream:socks5://user:pass@127.0.0.1:1080");
        assert_eq!(spec.listen_port, None);
        // Credentials and a listen address.
        let spec = parse("upstream:http://u:p@proxy.test:3128@8081");
        assert_eq!(spec.listen_port, Some(8081));
        assert_eq!(spec.mode.to_string(), "upstream:http://proxy.test:3128");
    }

    #[test]
    fn bad_specs_say_what_was_expected() {
        for (text, expected) in [
            ("bogus", "unknown mode"),
            ("reverse", "needs a URL"),
            ("reverse:ftp://x", "takes http://, https:// URLs"),
            ("reverse:https://x/path", "no path"),
            (
                "upstream:socks4://x:1",
                "takes http://, https://, socks5:// URLs",
            ),
            ("socks5:x", "takes no data"),
            ("upstream:http://user@x:1", "user:pass"),
            ("", "no mode"),
        ] {
            let error = ModeSpec::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
