//! The command line: global proxy options (accepted before or after the subcommand)
//! and the subcommands.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "periscope",
    version,
    about = "An intercepting HTTP(S) proxy that survives TLS renegotiation",
    long_about = "Periscope is an intercepting HTTP(S) proxy. Point a client at it (for example \
        `curl -x http://127.0.0.1:8080 --cacert ~/.periscope/periscope-ca-cert.pem https://...`) \
        and it shows every request and response, including what happens at the TLS layer after \
        the handshake: renegotiations, client certificate requests, KeyUpdates.\n\n\
        Without a subcommand it opens the console when stdout is a terminal, and otherwise \
        prints flows as `periscope dump` does.\n\n\
        Set SSLKEYLOGFILE to write TLS secrets of both legs (every handshake, renegotiations \
        included) in the NSS key log format Wireshark reads.\n\n\
        Every long option can also be set in CONFDIR/config.yaml (`listen_port: 9090`, \
        `map_local: [...]`; the command line wins over the file) and with \
        `--set NAME=VALUE`.",
    // `--set listen_port=1` after `-p 2`: the later one wins.
    args_override_self = true
)]
pub struct Cli {
    #[command(flatten)]
    pub proxy: ProxyArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run without a user interface and print one line per flow (like mitmdump);
    /// with -r, print a saved session and exit.
    Dump(DumpArgs),
    /// Export a saved session as HAR 1.2 (for Chrome DevTools and other tools).
    Export(ExportArgs),
    /// Run the proxy with the web UI (and the control API) on --web-host/--web-port
    /// (127.0.0.1:8081); prints the URL to open, with its token.
    Web(WebArgs),
}

#[derive(Args, Debug)]
pub struct WebArgs {
    /// Open the UI in the default browser.
    #[arg(long)]
    pub open: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The session file (as written with -w).
    #[arg(value_name = "SESSION")]
    pub session: PathBuf,

    /// Write HAR 1.2 to this file.
    #[arg(long, value_name = "OUT.har")]
    pub har: PathBuf,

    /// Only export flows matching this filter.
    #[arg(value_name = "FILTER")]
    pub filter: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Only print flows matching this filter (mitmproxy's filter language, e.g.
    /// `~d example.com & ~c 400`). Several words are joined with spaces.
    #[arg(value_name = "FILTER")]
    pub filter: Vec<String>,

    /// Print each flow as one line of JSON (the full flow: connections, timeline,
    /// bodies as recorded) instead of the one-line summary.
    #[arg(long)]
    pub json: bool,

    /// How much to print per flow: 0 nothing, 1 the flow line with its TLS events and
    /// error, 2 also WebSocket messages, 3 also request and response headers.
    #[arg(short = 'd', long, default_value_t = 1, value_name = "LEVEL")]
    pub flow_detail: u8,

    /// Also serve the control API (on --web-host/--web-port), as the console does.
    #[arg(long)]
    pub api: bool,
}

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Address to listen on. Anything but loopback makes the proxy reachable by others.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1",
        value_name = "ADDRESS"
    )]
    pub listen_host: IpAddr,

    /// Port to listen on (0 picks a free one; every listener's address is printed at
    /// start) [default: 8080, 1080 for socks5]. With --mode, the port of every mode
    /// that names none.
    #[arg(short = 'p', long, global = true, value_name = "PORT")]
    pub listen_port: Option<u16>,

    /// A proxy mode and its listener, repeatable, as mitmproxy writes them:
    /// MODE[:DATA][@[HOST:]PORT]. `regular` (an HTTP proxy, the default),
    /// `reverse:https://HOST[:PORT]` (or http://: clients speak to Periscope as to that
    /// server), `upstream:http://HOST:PORT` / `upstream:https://...` /
    /// `upstream:socks5://[USER:PASS@]HOST:PORT` (an HTTP proxy whose connections go
    /// through that proxy; SOCKS5 names are resolved by it), `socks5` (a SOCKS5
    /// server; --proxyauth asks for RFC 1929 credentials), `transparent` (connections
    /// redirected by iptables/nft; Linux). A listener without @ takes --listen-host
    /// and -p.
    #[arg(long = "mode", short = 'm', global = true, value_name = "SPEC")]
    pub modes: Vec<String>,

    /// Pass connections to matching hosts through untouched, TLS included (the client
    /// sees the server's own certificate); recorded as TCP flows. A regex searched in
    /// `host:port` of the name asked for, the address connected to and the TLS SNI;
    /// repeatable.
    #[arg(long = "ignore-hosts", global = true, value_name = "REGEX")]
    pub ignore_hosts: Vec<String>,

    /// Intercept only connections to matching hosts and pass the rest through (the
    /// opposite of --ignore-hosts, which it excludes); repeatable.
    #[arg(long = "allow-hosts", global = true, value_name = "REGEX")]
    pub allow_hosts: Vec<String>,

    /// Intercept TLS to matching hosts but relay what is inside as raw TCP (for
    /// protocols other than HTTP); repeatable.
    #[arg(long = "tcp-hosts", global = true, value_name = "REGEX")]
    pub tcp_hosts: Vec<String>,

    /// Reverse modes: keep the client's Host header instead of the server's name.
    #[arg(long, global = true)]
    pub keep_host_header: bool,

    /// Credentials for the proxy of an upstream mode (`user:pass`; HTTP Basic for an
    /// HTTP proxy, RFC 1929 for SOCKS5) when its URL carries none.
    #[arg(long, global = true, value_name = "USER:PASS")]
    pub upstream_auth: Option<String>,

    /// Directory for the CA and settings [default: ~/.periscope].
    #[arg(long, global = true, value_name = "DIR", env = "PERISCOPE_CONFDIR")]
    pub confdir: Option<PathBuf>,

    /// Keep the session (every flow, as it happens) in FILE; without it the console,
    /// the web UI and the control API keep it in a temporary file removed at exit
    /// (the console without -w records into the -r file instead), and a plain `dump`
    /// keeps no flows. With `dump -r`, the flows it prints (those matching the filter)
    /// are added to FILE.
    #[arg(short = 'w', long = "save", global = true, value_name = "FILE")]
    pub save: Option<PathBuf>,

    /// Open a saved session: `dump -r` prints it and exits; the console shows it and
    /// adds new flows to it (with -w, to a copy in that file).
    #[arg(short = 'r', long = "read", global = true, value_name = "FILE")]
    pub read: Option<PathBuf>,

    /// Require clients to authenticate with these credentials (HTTP Basic,
    /// `user:pass`); answered with 407 otherwise.
    #[arg(long, global = true, value_name = "USER:PASS")]
    pub proxyauth: Option<String>,

    /// Do not verify server certificates.
    #[arg(short = 'k', long, global = true)]
    pub ssl_insecure: bool,

    /// A PEM file of CA certificates to trust for servers, besides the system's.
    #[arg(long, global = true, value_name = "FILE")]
    pub upstream_trusted_ca: Option<PathBuf>,

    /// Client certificate to present when a server asks for one: a PEM file
    /// (certificate and key) used for every host, or a directory of <host>.pem files.
    #[arg(long, global = true, value_name = "PATH")]
    pub client_certs: Option<PathBuf>,

    /// How much of each request and response body a flow keeps (bodies always pass
    /// through whole).
    #[arg(long, global = true, default_value = "4MiB", value_name = "SIZE")]
    pub body_limit: bytesize::ByteSize,

    /// Limit for connecting to a server (DNS and TCP).
    #[arg(long, global = true, default_value = "10s", value_name = "DURATION")]
    pub connect_timeout: humantime::Duration,

    /// Limit for a TLS handshake, on either leg.
    #[arg(long, global = true, default_value = "10s", value_name = "DURATION")]
    pub handshake_timeout: humantime::Duration,

    /// Limit for a renegotiation or post-handshake authentication to complete once the
    /// server started it; past it the client gets a 504 that says so.
    #[arg(long, global = true, default_value = "10s", value_name = "DURATION")]
    pub renegotiation_timeout: humantime::Duration,

    /// Limit for the server's response head once the request is sent (a request body
    /// that is still uploading extends it; a stalled one ends at --idle-timeout).
    #[arg(long, global = true, default_value = "60s", value_name = "DURATION")]
    pub response_timeout: humantime::Duration,

    /// Limit for silence in the middle of a body, for a client that connects but sends
    /// no request, for a write the peer does not read (a client or server that stops
    /// reading, an HTTP/2 window that never opens), and for a kept server connection
    /// nobody uses.
    #[arg(long, global = true, default_value = "60s", value_name = "DURATION")]
    pub idle_timeout: humantime::Duration,

    /// Connect to servers that lack secure renegotiation (RFC 5746).
    #[arg(long, global = true)]
    pub legacy_renegotiation: bool,

    /// Allow TLS 1.0/1.1 and SHA-1 signatures with servers (OpenSSL security level 0).
    #[arg(long, global = true)]
    pub legacy_tls: bool,

    /// Refuse renegotiations that clients start (they are allowed by default, rate
    /// limited).
    #[arg(long, global = true)]
    pub no_client_renegotiation: bool,

    /// Client-initiated renegotiations allowed per connection and minute (0 counts as
    /// 1; --no-client-renegotiation refuses them all).
    #[arg(long, global = true, default_value_t = 10, value_name = "COUNT")]
    pub client_renegotiation_limit: u32,

    /// Pause every flow matching this filter at its request (before anything goes to
    /// the server) and at its response (before anything goes to the client), and its
    /// WebSocket messages one by one, until resumed, edited or killed in the console
    /// or through the control API.
    #[arg(long, global = true, value_name = "FILTER")]
    pub intercept: Option<String>,

    /// Pause a renegotiation or TLS 1.3 post-handshake authentication at the server's
    /// certificate request, for the user to choose the certificate to present.
    #[arg(long, global = true)]
    pub intercept_tls: bool,

    #[command(flatten)]
    pub rules: RuleArgs,

    /// Set any long option by its name, as in the config file (`NAME=VALUE`, e.g.
    /// `--set map_local='|/api|/tmp/api.json'`); applied after the command line's
    /// options, repeatable (a list option takes one item per --set). Names that are
    /// none of these set the options scripts add (`-s`, `loader.add_option`).
    #[arg(long = "set", global = true, value_name = "NAME=VALUE")]
    pub set: Vec<String>,

    /// Where options not given on the command line came from (the config file's
    /// lines, --set), for error messages.
    #[arg(skip)]
    pub origins: std::collections::HashMap<String, crate::settings::Origin>,

    /// Values for the scripts' own options (`loader.add_option`), from `--set` and
    /// the config file: the keys that are none of Periscope's options.
    #[arg(skip)]
    pub script_options: serde_json::Map<String, serde_json::Value>,

    /// Address of the control API (and of the web UI).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1",
        value_name = "ADDRESS"
    )]
    pub web_host: IpAddr,

    /// Port of the control API (0 picks a free one; the URL is printed at start).
    #[arg(long, global = true, default_value_t = 8081, value_name = "PORT")]
    pub web_port: u16,

    /// The token the control API asks for, instead of a random one made at start.
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "PERISCOPE_WEB_PASSWORD"
    )]
    pub web_password: Option<String>,

    /// Replay the requests of this saved session (those matching the dump filter),
    /// print their flows, and exit, like `mitmdump -C`.
    #[arg(long, global = true, value_name = "FILE")]
    pub client_replay: Option<PathBuf>,

    /// How many replayed requests may be in flight at once.
    #[arg(long, global = true, default_value_t = 1, value_name = "N")]
    pub client_replay_concurrency: usize,

    /// Run a mitmproxy-style addon script (`addons = [...]` or module-level hook
    /// functions such as `request(flow)`), repeatable. Scripts run in a Python worker
    /// process, are reloaded when their file changes, and see `from mitmproxy import
    /// http, ctx` as under mitmproxy (crates/addons/README.md says what is covered).
    #[arg(short = 's', long = "scripts", global = true, value_name = "FILE")]
    pub scripts: Vec<PathBuf>,

    /// Give the -s scripts only the flows matching this filter (at every hook: the
    /// request and response ones, error, tls_event, WebSocket); the other flows never
    /// reach the worker and pay nothing for it.
    #[arg(long, global = true, value_name = "FILTER")]
    pub scripts_filter: Option<String>,

    /// The Python that runs -s scripts (with the packages they import).
    #[arg(long, global = true, default_value = "python3", value_name = "PATH")]
    pub scripts_python: PathBuf,

    /// Limit for one hook of the -s scripts; past it the flow goes on without it (the
    /// error is recorded on the flow) and the worker is restarted.
    #[arg(long, global = true, default_value = "5s", value_name = "DURATION")]
    pub scripts_timeout: humantime::Duration,

    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The rules: mitmproxy's options of the same names, in its syntax. A pattern's first
/// character is its separator; FILTER is optional (every flow when absent).
#[derive(Args, Debug, Clone)]
pub struct RuleArgs {
    /// Answer matching requests from a file, or from a directory with the rest of the
    /// URL appended (index.html for a directory; nothing outside it is ever served):
    /// `|[FILTER|]URL-REGEX|PATH`. Repeatable.
    #[arg(long, global = true, value_name = "|FILTER|REGEX|PATH")]
    pub map_local: Vec<String>,

    /// Rewrite the URL before connecting (scheme, host, port, path; `\1` and
    /// `\g<name>` for the regex's groups): `|[FILTER|]URL-REGEX|REPLACEMENT`.
    /// Repeatable.
    #[arg(long, global = true, value_name = "|FILTER|REGEX|URL")]
    pub map_remote: Vec<String>,

    /// Set a header on requests and responses (`~q`/`~s` in FILTER choose the side);
    /// an empty VALUE removes it, `@FILE` reads the value from a file:
    /// `/[FILTER/]NAME/[@]VALUE`. Repeatable.
    #[arg(long, global = true, value_name = "/FILTER/NAME/VALUE")]
    pub modify_headers: Vec<String>,

    /// Replace a regex in bodies (decoded first, re-encoded after), `@FILE` for the
    /// replacement read from a file: `/[FILTER/]REGEX/[@]REPLACEMENT`. Repeatable.
    #[arg(long, global = true, value_name = "/FILTER/REGEX/REPLACEMENT")]
    pub modify_body: Vec<String>,

    /// Answer matching requests with this status without asking the server (444:
    /// close the connection without an answer): `/FILTER/STATUS`. Repeatable.
    #[arg(long, global = true, value_name = "/FILTER/STATUS")]
    pub block_list: Vec<String>,

    /// Remove the request headers that let a server answer 304 Not Modified.
    #[arg(long, global = true)]
    pub anticache: bool,

    /// Ask servers for uncompressed answers (Accept-Encoding: identity).
    #[arg(long, global = true)]
    pub anticomp: bool,

    /// Answer matching requests from the flows of this saved session instead of the
    /// network. Repeatable.
    #[arg(long, short = 'S', global = true, value_name = "FILE")]
    pub server_replay: Vec<std::path::PathBuf>,

    /// What server replay does with a request no recorded flow matches: `forward`
    /// it, `kill` it, or answer `204`, `400`, `404` or `500`.
    #[arg(
        long,
        global = true,
        default_value = "forward",
        value_name = "forward|kill|STATUS"
    )]
    pub server_replay_extra: String,

    /// Answer every matching request with its recorded flow again, instead of each
    /// recorded flow once.
    #[arg(long, global = true)]
    pub server_replay_reuse: bool,

    /// Move the dates and cookie expiries of a replayed answer forward by the time
    /// since it was recorded (`--server-replay-refresh=false` keeps them).
    #[arg(
        long,
        global = true,
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub server_replay_refresh: bool,

    /// A request header that must match too (by default headers do not count).
    /// Repeatable.
    #[arg(
        long = "server-replay-use-header",
        alias = "server-replay-use-headers",
        global = true,
        value_name = "NAME"
    )]
    pub server_replay_use_headers: Vec<String>,

    /// Match requests whatever their bodies.
    #[arg(long, global = true)]
    pub server_replay_ignore_content: bool,

    /// A query parameter that does not count in matching. Repeatable.
    #[arg(long, global = true, value_name = "NAME")]
    pub server_replay_ignore_params: Vec<String>,

    /// A form (urlencoded or multipart) parameter of the body that does not count
    /// in matching. Repeatable.
    #[arg(long, global = true, value_name = "NAME")]
    pub server_replay_ignore_payload_params: Vec<String>,

    /// Match requests whatever their host.
    #[arg(long, global = true)]
    pub server_replay_ignore_host: bool,

    /// Match requests whatever their port.
    #[arg(long, global = true)]
    pub server_replay_ignore_port: bool,
}

impl RuleArgs {
    pub fn options(&self) -> periscope_rules::RuleOptions {
        periscope_rules::RuleOptions {
            map_local: self.map_local.clone(),
            map_remote: self.map_remote.clone(),
            modify_headers: self.modify_headers.clone(),
            modify_body: self.modify_body.clone(),
            block_list: self.block_list.clone(),
            anticache: self.anticache,
            anticomp: self.anticomp,
            server_replay: self.server_replay.clone(),
            server_replay_extra: self.server_replay_extra.clone(),
            server_replay_reuse: self.server_replay_reuse,
            server_replay_refresh: self.server_replay_refresh,
            server_replay_use_headers: self.server_replay_use_headers.clone(),
            server_replay_ignore_content: self.server_replay_ignore_content,
            server_replay_ignore_params: self.server_replay_ignore_params.clone(),
            server_replay_ignore_payload_params: self.server_replay_ignore_payload_params.clone(),
            server_replay_ignore_host: self.server_replay_ignore_host,
            server_replay_ignore_port: self.server_replay_ignore_port,
        }
    }
}
