//! `periscope`: wires the CA, the TLS settings, the proxy and the session store
//! together from the command line, and runs a front end.

mod cli;
mod connection_options;
mod console;
mod control;
mod dump;
mod export;
mod recording;
mod replay;
mod settings;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use std::ffi::OsString;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use periscope_flow::filter::Filter;
use periscope_flow::store::FlowStore;
use periscope_proxy::{
    FlowBus, LiveTimeouts, ModeSpec, ModesConfig, Proxy, ProxyConfig, ProxyCredentials, ProxyMode,
    Timeouts,
};
use periscope_rules::{Rules, RulesHook};
use periscope_tls::{
    CertificateAuthority, ClientCertificates, ClientRenegotiation, ClientTlsSettings,
    HandshakeTimeouts, KeyLog, UpstreamTlsSettings,
};

use crate::cli::{Cli, Command, DumpArgs, ProxyArgs};
use crate::connection_options::ConnectionOptions;

/// A proxy allocates and frees small objects for every request (headers, flow
/// records); jemalloc does that in fewer instructions than glibc malloc, and keeps
/// idle connections small.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long the exit waits for `dump` to print the flows already finished.
const PRINTER_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

fn main() -> ExitCode {
    let cli = match parse_command_line() {
        Ok(cli) => cli,
        Err(message) => {
            eprintln!("periscope: error: {message}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(cli.proxy.verbose);
    raise_open_file_limit();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("periscope: error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// `--version`: the version and the OpenSSL it runs on (the system's, or the one built
/// in with the `vendored-openssl` feature).
fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{}\n{}",
            env!("CARGO_PKG_VERSION"),
            periscope_tls::openssl_version()
        )
    })
}

/// The command line with the config file's options and `--set` added (see
/// `settings`). Usage errors on the command line itself exit as clap does.
fn parse_command_line() -> Result<Cli, String> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let command = Cli::command().long_version(long_version());
    let matches = command.clone().get_matches_from(&argv);
    let first = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Without a home directory there is no default config file to read.
    let config_file = confdir(&first.proxy)
        .ok()
        .map(|dir| dir.join(settings::FILE_NAME));
    let resolved = settings::resolve(&argv, &command, &matches, config_file.as_deref())?;
    let mut cli = Cli::try_parse_from(&resolved.argv).unwrap_or_else(|e| e.exit());
    cli.proxy.origins = resolved.origins;
    // Keys Periscope does not know are the scripts' own options — when scripts run.
    if cli.proxy.scripts.is_empty() {
        if let Some(unknown) = resolved.unknown.first() {
            return Err(unknown.error());
        }
    }
    cli.proxy.script_options = resolved
        .unknown
        .into_iter()
        .map(|unknown| (unknown.key, unknown.value))
        .collect();
    Ok(cli)
}

/// The rules the options ask for, as the proxy's hook: installed when there are
/// rules, or when a front end can set them while the proxy runs (a proxy with
/// neither runs no rule code).
fn rules_hook(
    args: &ProxyArgs,
    config: &ProxyConfig,
    settable: bool,
) -> anyhow::Result<Option<Arc<RulesHook>>> {
    let options = args.rules.options();
    let (rules, warnings) = Rules::compile(&options, None).map_err(|error| {
        // An option from the config file or --set is named as it was written there.
        let origin = args
            .origins
            .get(&settings::item_key(error.option, &error.spec))
            .or_else(|| args.origins.get(error.option));
        match origin {
            Some(origin) => {
                let detail = error.to_string();
                let detail = detail
                    .strip_prefix(&error.flag())
                    .unwrap_or(&detail)
                    .trim_start();
                anyhow::anyhow!("{origin}: {} {detail}", error.option)
            }
            None => anyhow::anyhow!("{error}"),
        }
    })?;
    for warning in warnings {
        eprintln!("periscope: warning: {warning}");
    }
    if rules.is_empty() && !settable {
        return Ok(None);
    }
    Ok(Some(Arc::new(RulesHook::new(
        rules,
        config.body_limit,
        config.timeouts.clone(),
    ))))
}

/// An error as the one line a user reads: the message and its causes joined with
/// `: `. (Returning the error from `main` printed its Debug form instead, with a
/// backtrace under `RUST_BACKTRACE=1`.) A cause that a message already quotes
/// (`cannot open … : {source}`) is not repeated, and line breaks inside a message
/// become spaces.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text
            .lines()
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Export(args)) => {
            let filter = parse_filter(&args.filter)?;
            let written = export::har(&args.session, &args.har, filter.as_ref())?;
            eprintln!("periscope: wrote {written} flows to {}", args.har.display());
            Ok(())
        }
        Some(Command::Web(web)) => {
            let args = DumpArgs {
                filter: Vec::new(),
                json: false,
                // The browser shows the flows; nothing is printed.
                flow_detail: 0,
                api: true,
            };
            let ui = UiLaunch { open: web.open };
            run_proxy_with(&cli.proxy, args, None, Some(ui)).await
        }
        Some(Command::Dump(args)) => {
            let filter = parse_filter(&args.filter)?;
            match &cli.proxy.read {
                Some(session) => {
                    dump::print_session(session, filter.as_ref(), &args, cli.proxy.save.as_deref())
                }
                None => run_proxy(&cli.proxy, args, filter).await,
            }
        }
        // On a terminal: the console, live or on a saved session (-r).
        None if std::io::stdout().is_terminal() => console::run(&cli.proxy).await,
        None => {
            let args = DumpArgs {
                filter: Vec::new(),
                json: false,
                flow_detail: 1,
                api: false,
            };
            match &cli.proxy.read {
                Some(session) => {
                    dump::print_session(session, None, &args, cli.proxy.save.as_deref())
                }
                None => run_proxy(&cli.proxy, args, None).await,
            }
        }
    }
}

fn parse_filter(words: &[String]) -> anyhow::Result<Option<Filter>> {
    let text = words.join(" ");
    if text.trim().is_empty() {
        return Ok(None);
    }
    Filter::parse(&text)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("invalid filter \"{text}\": {e}"))
}

/// `periscope web`: how the UI is announced.
struct UiLaunch {
    /// Open the default browser on the URL.
    open: bool,
}

async fn run_proxy(args: &ProxyArgs, dump: DumpArgs, filter: Option<Filter>) -> anyhow::Result<()> {
    run_proxy_with(args, dump, filter, None).await
}

async fn run_proxy_with(
    args: &ProxyArgs,
    dump: DumpArgs,
    filter: Option<Filter>,
    web: Option<UiLaunch>,
) -> anyhow::Result<()> {
    let confdir = confdir(args)?;
    let ca = Arc::new(
        CertificateAuthority::load_or_create(&confdir)
            .with_context(|| format!("cannot set up the CA in {}", confdir.display()))?,
    );
    // Someone can act on flows: the API runs (asked for, or needed to resume what
    // --intercept pauses), or replays are made.
    let serve_api = dump.api || args.intercept.is_some() || args.intercept_tls;
    let interactive = serve_api || args.client_replay.is_some();
    // Flows are kept where something can read them: a session file (-w), or the
    // control API and replays, which read flows back. Without either, as with a plain
    // `periscope dump`, a temporary session would be written and never read: at 14 µs
    // of the session store's thread per proxied request, a fifth of the proxy's CPU
    // under keep-alive load (bench/RESULTS.md). mitmdump keeps no flows either.
    let store = if args.save.is_some() || interactive || web.is_some() {
        Some(Arc::new(match (&web, &args.read, &args.save) {
            // `periscope web -r FILE` shows that session and adds new flows to it, as
            // the console does.
            (Some(_), Some(path), None) => FlowStore::open_existing(path)
                .with_context(|| format!("cannot open the session file {}", path.display()))?,
            _ => open_store(args)?,
        }))
    } else {
        None
    };
    let mut config = proxy_config(args)?;
    config.interactive = interactive;
    let rules = rules_hook(args, &config, serve_api)?;
    if let Some(rules) = &rules {
        config
            .hooks
            .add(Arc::clone(rules) as Arc<dyn periscope_proxy::ExchangeHook>);
    }
    let bus = FlowBus::new();
    if serve_api {
        bus.want_requests();
    }
    // Subscribed before the scripts start, so what their load/configure/running hooks
    // log is printed and recorded too.
    let printer_events = bus.subscribe();
    let recorder = store
        .as_ref()
        .map(|store| recording::spawn(Arc::clone(store), &bus));
    let addons = start_addons(args, &config, &bus, serve_api).await?;
    if let Some(addons) = &addons {
        config.hooks.add(addons.hook());
    }
    let api_listener = if serve_api {
        let listener = bind_api(args).await?;
        config.protected.push(listener.local_addr()?);
        Some(listener)
    } else {
        None
    };
    let connection = ConnectionOptions::new(args, config.timeouts.get());
    let proxy = Proxy::bind(config, Arc::clone(&ca), bus.clone()).await?;
    let mut shutdown = ShutdownSignal::install();
    announce(&proxy.listeners(), &ca, args);
    // The proxy is interactive only where a store was opened.
    let control = proxy.control().zip(store.clone()).map(|(proxy, store)| {
        Arc::new(control::SessionControl::new(
            proxy,
            store,
            bus.clone(),
            rules.clone(),
            connection,
            addons.clone(),
        ))
    });
    if let (Some(listener), Some(control), Some(store)) = (api_listener, &control, &store) {
        serve_api_on(
            listener,
            args,
            Arc::clone(control),
            Arc::clone(store),
            &bus,
            &ca,
            web.as_ref(),
        )?;
    }
    tokio::spawn(proxy.run());
    let mut printer = dump::Printer::spawn(printer_events, filter.clone(), dump);
    if let (Some(file), Some(control)) = (&args.client_replay, &control) {
        let replayed = tokio::select! {
            replayed = replay::client_replay(control, &bus, file, filter.as_ref(), args.client_replay_concurrency) => replayed,
            () = shutdown.requested() => Ok(()),
        };
        printer.finish(PRINTER_DRAIN).await;
        if let Some(recorder) = recorder {
            recorder.finish();
        }
        return replayed;
    }
    tokio::select! {
        () = printer.ended() => {}
        () = shutdown.requested() => {}
    }
    printer.finish(PRINTER_DRAIN).await;
    if let Some(addons) = &addons {
        addons.shutdown().await;
    }
    if let Some(recorder) = recorder {
        recorder.finish();
    }
    Ok(())
}

/// The -s scripts' worker, when there are scripts. With none, a host that scripts
/// can be given later when a front end can set them (`settable`), else nothing: no
/// worker, no hook.
pub(crate) async fn start_addons(
    args: &ProxyArgs,
    config: &ProxyConfig,
    bus: &FlowBus,
    settable: bool,
) -> anyhow::Result<Option<Arc<periscope_addons::ScriptHost>>> {
    if args.scripts.is_empty() && !settable {
        return Ok(None);
    }
    let mut addons = periscope_addons::AddonsConfig::new(args.scripts.clone());
    addons.python.clone_from(&args.scripts_python);
    addons.timeout = args.scripts_timeout.into();
    addons.body_limit = config.body_limit;
    addons.timeouts = config.timeouts.clone();
    addons.options.clone_from(&args.script_options);
    if let Some(text) = &args.scripts_filter {
        let filter =
            Filter::parse(text).map_err(|e| anyhow::anyhow!("--scripts-filter \"{text}\": {e}"))?;
        addons.filter.set(Some((text.clone(), filter)));
    }
    let started = periscope_addons::ScriptHost::start(addons, bus).await?;
    Ok(Some(Arc::new(started)))
}

/// The control API's socket (`--web-host`/`--web-port`).
async fn bind_api(args: &ProxyArgs) -> anyhow::Result<tokio::net::TcpListener> {
    let address = SocketAddr::new(args.web_host, args.web_port);
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {address} for the control API (choose another with --web-port)"
            )
        })
}

/// Serves the control API on `listener` and prints its URL with the token.
fn serve_api_on(
    listener: tokio::net::TcpListener,
    args: &ProxyArgs,
    control: Arc<control::SessionControl>,
    store: Arc<FlowStore>,
    bus: &FlowBus,
    ca: &Arc<CertificateAuthority>,
    web: Option<&UiLaunch>,
) -> anyhow::Result<()> {
    let listen = listener.local_addr()?;
    let token = args
        .web_password
        .clone()
        .unwrap_or_else(periscope_api::random_token);
    let shown = args.web_password.is_none().then_some(token.as_str());
    let url = periscope_api::web_url(listen, shown);
    // Scripts and tests wait for this line.
    match web {
        Some(web) => {
            eprintln!("periscope: web UI at {url}");
            if web.open {
                open_browser(&url);
            }
        }
        None => eprintln!("periscope: control API at {url}"),
    }
    if !periscope_api::is_loopback_only(&listen) {
        eprintln!(
            "periscope: warning: the control API listens on {} — anyone who can reach it and \
             knows the token can act on every flow",
            listen.ip()
        );
    }
    let proxy_address = control.proxy_address();
    let mut state = periscope_api::ApiState::new(control, store, bus.feed(), token);
    state.exporter = Some(Arc::new(export::Exporter));
    // The web UI is served wherever the API is: same origin, same security.
    state.ui = Some(periscope_web::asset);
    let ca = Arc::clone(ca);
    state.onboarding = Some(Arc::new(move |path: &str| {
        let file = periscope_proxy::onboarding_file(&ca, path, proxy_address);
        (
            file.content_type.to_owned(),
            file.download_name.map(str::to_owned),
            file.body,
        )
    }));
    tokio::spawn(async move {
        if let Err(error) = periscope_api::serve(listener, state).await {
            eprintln!("periscope: the control API stopped: {error}");
        }
    });
    Ok(())
}

/// `--open`: the desktop's default browser (`xdg-open`; `open` on macOS), left to run
/// on its own.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let started = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match started {
        // Reaped on a thread of its own, so no zombie is left behind.
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(error) => {
            eprintln!("periscope: cannot open a browser ({opener}: {error}); open the URL above");
        }
    }
}

/// Ctrl-C or SIGTERM (what `kill`, systemd and test harnesses send). Installed before
/// the proxy says it is listening: a handler registered only when first awaited left a
/// window after that line in which SIGTERM killed the process outright, without the
/// scripts' `done` or the recorder's last flows.
struct ShutdownSignal {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    async fn requested(&mut self) {
        async fn received(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = received(&mut self.interrupt) => {}
            () = received(&mut self.terminate) => {}
        }
    }
}

fn open_store(args: &ProxyArgs) -> anyhow::Result<FlowStore> {
    match &args.save {
        Some(path) => FlowStore::open(path)
            .with_context(|| format!("cannot open the session file {}", path.display())),
        None => FlowStore::temporary().context("cannot create a temporary session file"),
    }
}

fn announce(listeners: &[(String, SocketAddr)], ca: &CertificateAuthority, args: &ProxyArgs) {
    // Tests and scripts wait for these lines, one per listener.
    for (mode, address) in listeners {
        eprintln!("periscope: proxy listening at {address} ({mode})");
    }
    eprintln!(
        "periscope: CA certificate for clients: {}",
        ca.cert_pem_path().display()
    );
    if let Some(path) = &args.save {
        eprintln!("periscope: saving the session to {}", path.display());
    }
    for (mode, address) in listeners {
        if !address.ip().is_loopback() && args.proxyauth.is_none() && !mode.starts_with("reverse") {
            eprintln!(
                "periscope: warning: listening on {} without --proxyauth — anyone who can \
                 reach this address can use the proxy",
                address.ip()
            );
        }
    }
    if args.ssl_insecure {
        eprintln!("periscope: warning: server certificates are not verified (-k)");
    }
}

fn confdir(args: &ProxyArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.confdir {
        return Ok(dir.clone());
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --confdir")?;
    Ok(PathBuf::from(home).join(".periscope"))
}

fn proxy_config(args: &ProxyArgs) -> anyhow::Result<ProxyConfig> {
    let keylog = KeyLog::from_env().context("cannot open SSLKEYLOGFILE")?;
    let client_certificates = match &args.client_certs {
        Some(path) => Some(Arc::new(ClientCertificates::load(path)?)),
        None => None,
    };
    let tls_timeouts = HandshakeTimeouts {
        handshake: args.handshake_timeout.into(),
        renegotiation: args.renegotiation_timeout.into(),
    };
    let client_renegotiation = if args.no_client_renegotiation {
        ClientRenegotiation::Refused
    } else {
        ClientRenegotiation::Allowed {
            per_minute: args.client_renegotiation_limit.max(1),
        }
    };
    let credentials = match &args.proxyauth {
        Some(spec) => Some(
            ProxyCredentials::parse(spec)
                .context("--proxyauth takes USER:PASS (a user name, a colon, a password)")?,
        ),
        None => None,
    };
    Ok(ProxyConfig {
        hooks: Default::default(),
        interactive: false,
        intercept: args.intercept.clone(),
        intercept_tls: args.intercept_tls,
        protected: Vec::new(),
        credentials,
        listen: SocketAddr::new(args.listen_host, args.listen_port.unwrap_or(8080)),
        modes: modes_config(args)?,
        body_limit: usize::try_from(args.body_limit.as_u64()).unwrap_or(usize::MAX),
        timeouts: LiveTimeouts::new(Timeouts {
            connect: args.connect_timeout.into(),
            response: args.response_timeout.into(),
            body_idle: args.idle_timeout.into(),
            client_idle: args.idle_timeout.into(),
            pool_idle: args.idle_timeout.into(),
            tls: tls_timeouts,
        }),
        upstream_tls: UpstreamTlsSettings {
            // The proxy sets it when front ends can act on flows.
            certificate_hold: None,
            verify: !args.ssl_insecure,
            trusted_ca: args.upstream_trusted_ca.clone(),
            client_certificates,
            legacy_renegotiation: args.legacy_renegotiation,
            legacy_versions: args.legacy_tls,
            keylog: keylog.clone(),
        },
        client_tls: ClientTlsSettings {
            client_renegotiation,
            keylog,
        },
    })
}

/// `--mode` (a regular listener when none is given), with `--listen-host`/`-p` for
/// the modes that name no address, and the hosts left alone.
fn modes_config(args: &ProxyArgs) -> anyhow::Result<ModesConfig> {
    let mut specs = args
        .modes
        .iter()
        .map(|text| ModeSpec::parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    if specs.is_empty() {
        specs.push(ModeSpec::regular());
    }
    let upstream_auth = match &args.upstream_auth {
        Some(text) => Some(
            text.split_once(':')
                .map(|(user, pass)| (user.to_owned(), pass.to_owned()))
                .context("--upstream-auth takes USER:PASS")?,
        ),
        None => None,
    };
    let listeners = specs
        .into_iter()
        .map(|mut spec| {
            let address = spec.listen_address(args.listen_host, args.listen_port);
            if let ProxyMode::Upstream(proxy) = &mut spec.mode {
                if proxy.credentials.is_none() {
                    proxy.credentials = upstream_auth.clone();
                }
            }
            (spec.mode, address)
        })
        .collect();
    Ok(ModesConfig {
        listeners,
        ignore_hosts: args.ignore_hosts.clone(),
        allow_hosts: args.allow_hosts.clone(),
        tcp_hosts: args.tcp_hosts.clone(),
        keep_host_header: args.keep_host_header,
    })
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PERISCOPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: a log redirected to a file or read by a program
    // should not carry escape codes.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Each connection costs two descriptors; the default soft limit (1024) would cap the
/// proxy near 500 clients.
fn raise_open_file_limit() {
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("periscope: warning: cannot raise the open file limit: {error}");
    }
}
