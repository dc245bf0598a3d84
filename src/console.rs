//! `periscope` on a terminal: the proxy with the console (crates/tui) as its front
//! end. With `-r FILE` the console opens that session and adds new flows to it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use periscope_flow::store::FlowStore;
use periscope_proxy::{FlowBus, Proxy};
use periscope_tls::CertificateAuthority;
use periscope_tui::ConsoleOptions;

use crate::cli::ProxyArgs;

pub async fn run(args: &ProxyArgs) -> anyhow::Result<()> {
    let confdir = crate::confdir(args)?;
    let ca = Arc::new(
        CertificateAuthority::load_or_create(&confdir)
            .with_context(|| format!("cannot set up the CA in {}", confdir.display()))?,
    );
    let (store, session_file) = open_session(args)?;
    let store = Arc::new(store);
    let mut config = crate::proxy_config(args)?;
    // The console acts on flows (intercept, edit, kill, replay), and so does the
    // control API it serves.
    config.interactive = true;
    let rules = crate::rules_hook(args, &config, true)?;
    if let Some(rules) = &rules {
        config
            .hooks
            .add(Arc::clone(rules) as Arc<dyn periscope_proxy::ExchangeHook>);
    }
    // The console works without the API: another Periscope may hold the port.
    let api_listener = match crate::bind_api(args).await {
        Ok(listener) => {
            config.protected.push(listener.local_addr()?);
            Some(listener)
        }
        Err(error) => {
            eprintln!("periscope: warning: {error:#}; the console runs without it");
            None
        }
    };
    let bus = FlowBus::new();
    // The list shows requests the moment they arrive, marked as waiting.
    bus.want_requests();
    // Subscribed before the scripts start, so what their load/configure/running hooks
    // log is shown and recorded too.
    let events = bus.subscribe();
    let recorder = crate::recording::spawn(Arc::clone(&store), &bus);
    let addons = crate::start_addons(args, &config, &bus, true).await?;
    if let Some(addons) = &addons {
        config.hooks.add(addons.hook());
    }
    let connection = crate::connection_options::ConnectionOptions::new(args, config.timeouts.get());
    let proxy = Proxy::bind(config, Arc::clone(&ca), bus.clone()).await?;
    let address = proxy.local_addr();
    let control = Arc::new(crate::control::SessionControl::new(
        proxy.control().context("the proxy has no control handle")?,
        Arc::clone(&store),
        bus.clone(),
        rules,
        connection,
        addons.clone(),
    ));
    if let Some(listener) = api_listener {
        crate::serve_api_on(
            listener,
            args,
            Arc::clone(&control),
            Arc::clone(&store),
            &bus,
            &ca,
            None,
        )?;
    }
    crate::announce(&proxy.listeners(), &ca, args);
    if args.save.is_none() {
        if let Some(path) = &session_file {
            eprintln!(
                "periscope: session {} (new flows are added to it)",
                path.display()
            );
        }
    }
    tokio::spawn(proxy.run());
    let options = ConsoleOptions {
        store,
        listen: address,
        session_file,
        ca_cert: ca.cert_pem_path().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        control: Some(control),
    };
    let result = periscope_tui::run(options, events).await;
    if let Some(addons) = &addons {
        addons.shutdown().await;
    }
    recorder.finish();
    result.context("the console failed")
}

/// The session the console records into: `-w FILE` (with the flows of `-r OTHER`
/// copied in first, when both are given), else `-r FILE`, else a temporary file.
fn open_session(args: &ProxyArgs) -> anyhow::Result<(FlowStore, Option<PathBuf>)> {
    let open = |path: &PathBuf| {
        FlowStore::open(path)
            .with_context(|| format!("cannot open the session file {}", path.display()))
    };
    match (&args.read, &args.save) {
        (Some(read), Some(save)) if !same_file(read, save) => {
            let source = open(read)?;
            let target = open(save)?;
            let copied = periscope_tui::save::copy_flows(&source, &target, None).map_err(|e| {
                anyhow::anyhow!(
                    "cannot copy {} into {}: {e}",
                    read.display(),
                    save.display()
                )
            })?;
            eprintln!(
                "periscope: copied {copied} flows from {} into {}",
                read.display(),
                save.display()
            );
            Ok((target, Some(save.clone())))
        }
        (_, Some(path)) | (Some(path), None) => Ok((open(path)?, Some(path.clone()))),
        (None, None) => Ok((
            FlowStore::temporary().context("cannot create a temporary session file")?,
            None,
        )),
    }
}

fn same_file(a: &PathBuf, b: &PathBuf) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}
