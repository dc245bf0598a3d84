//! Periscope's console: the full-screen terminal front end that `periscope` runs
//! when its output is a terminal, in the spirit of mitmproxy's console.
//!
//! - the flow list, live, with a marker on flows that had TLS events (`R` for a
//!   renegotiation, `T` for others) or failed (`!`), and mitmproxy's keys;
//! - the flow view: Request, Response (bodies decoded and shown pretty) and Detail
//!   (both connections, the server certificate, the TLS event timeline, the
//!   timing list);
//! - the event log (`E`), the filter (`f`), saving as a session or HAR (`w`);
//! - what the user does to flows, through `periscope_control::FlowControl` only:
//!   the intercept filter (`i`), resume (`a`, `A`), kill (`x`, `X`), edit in `$EDITOR`
//!   (`e`), replay (`r`), duplicate (`D`), revert (`V`), delete (`d`), mark (`m`),
//!   comment (`;`), the client certificate of a held certificate request (`c`),
//!   WebSocket messages (`W`), export (`o`).
//!
//! The console reads flows only from the session store and the proxy's events,
//! and acts on them only through `FlowControl`, never through the proxy itself, so
//! it shows a saved session (`-r`) exactly as a live one. Without a control it
//! still edits, marks, comments, duplicates, reverts and deletes recorded flows in
//! the store, and says that the rest needs the proxy.
//!
//! ```no_run
//! # async fn example(store: std::sync::Arc<periscope_flow::store::FlowStore>,
//! #     events: periscope_flow::live::FlowReceiver) -> std::io::Result<()> {
//! let options = periscope_tui::ConsoleOptions {
//!     store,
//!     listen: "127.0.0.1:8080".parse().unwrap(),
//!     session_file: None,
//!     ca_cert: "/home/me/.periscope/periscope-ca-cert.pem".into(),
//!     version: "0.1.0".into(),
//!     control: None,
//! };
//! // Runs until the user quits (q), the process gets SIGTERM/SIGINT/SIGHUP, or the
//! // terminal fails; the terminal is restored in every case, panics included.
//! periscope_tui::run(options, events).await?;
//! # Ok(()) }
//! ```

mod app;
mod body;
mod detail;
mod editor;
mod event_log;
mod export;
mod flow_list;
mod flow_view;
mod help;
mod keys;
mod menu;
mod offline;
mod prompt;
pub mod save;
mod status_bar;
mod terminal;
mod text;
mod units;

#[cfg(test)]
mod fixtures;

use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use periscope_flow::live::{FlowReceiver as Receiver, TryRecvError};
use periscope_flow::store::FlowStore;
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use crate::app::App;
use crate::terminal::{ConsoleTerminal, Input, StderrCapture};

/// What the console needs to know about the session it shows.
#[derive(Clone)]
pub struct ConsoleOptions {
    /// The session: every flow is read from here.
    pub store: Arc<FlowStore>,
    /// Where the proxy listens (shown in the status bar).
    pub listen: SocketAddr,
    /// The session file the user chose (`-w` or `-r`); `None` for a temporary one.
    pub session_file: Option<PathBuf>,
    /// The CA certificate clients must trust.
    pub ca_cert: PathBuf,
    /// Periscope's version, for the title and HAR exports.
    pub version: String,
    /// What the user can do to flows (intercept, edit, resume, kill, replay); `None`
    /// for a session opened without a proxy.
    pub control: Option<Arc<dyn periscope_control::FlowControl>>,
}

/// How long the loop waits for a key before looking at flow events again.
const POLL: Duration = Duration::from_millis(25);
/// Flow events taken per turn of the loop, so that keys stay responsive in a flood.
const EVENTS_PER_TURN: usize = 4096;
/// How long quitting waits for the recorder to save the flows the list showed.
const FINISH_WAIT: Duration = Duration::from_secs(2);
/// How long a signal waits for the console to finish (it needs `FINISH_WAIT` at most).
const STOP_WAIT: Duration = Duration::from_secs(3);

/// Runs the console until the user quits or the process is asked to stop.
///
/// The terminal (raw mode, alternate screen) is restored on every way out; stderr,
/// when it is the terminal, goes to the event log meanwhile.
pub async fn run(options: ConsoleOptions, events: Receiver) -> io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let ui_stop = Arc::clone(&stop);
    let (done, mut finished) = tokio::sync::oneshot::channel();
    // A thread of its own rather than the runtime's blocking pool: should it ever
    // hang in a terminal call, the process can still end without it. It enters the
    // runtime, for the control's methods that start tasks (a replay runs on its own).
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            let _runtime = runtime.enter();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                console_loop(&options, events, &ui_stop)
            }));
            let _ = done.send(result);
        })?;
    let outcome = tokio::select! {
        outcome = &mut finished => outcome,
        () = termination_signal() => {
            stop.store(true, Ordering::SeqCst);
            match tokio::time::timeout(STOP_WAIT, &mut finished).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    terminal::restore_all();
                    return Ok(());
                }
            }
        }
    };
    match outcome {
        Ok(Ok(result)) => result,
        Ok(Err(_panic)) => Err(io::Error::other("the console panicked")),
        Err(_) => Err(io::Error::other("the console stopped without a word")),
    }
}

/// SIGINT, SIGTERM or SIGHUP (the terminal went away).
async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate), Ok(mut hangup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
        _ = hangup.recv() => {}
    }
}

fn console_loop(
    options: &ConsoleOptions,
    mut events: Receiver,
    stop: &AtomicBool,
) -> io::Result<()> {
    let stderr = StderrCapture::start();
    let mut console = ConsoleTerminal::enter()?;
    let mut app = App::new(options);
    let mut events_open = true;
    let stdin_is_terminal = io::stdin().is_terminal();
    loop {
        if stop.load(Ordering::SeqCst) {
            app.quit();
        }
        if app.should_quit() {
            break;
        }
        let now = Instant::now();
        if app.wants_draw(now) {
            console.terminal.draw(|frame| app.render(frame))?;
        }
        // With the terminal on stdin, poll(2) waits (see `wait_for_input`) and
        // crossterm only reads; else crossterm waits on the /dev/tty it opened.
        let wait = if stdin_is_terminal {
            if terminal::wait_for_input(POLL)? == Input::Gone {
                break;
            }
            // Even without keys: crossterm turns SIGWINCH into a resize event.
            Duration::ZERO
        } else {
            POLL
        };
        if event::poll(wait)? {
            // Take every key already typed before drawing again.
            loop {
                match event::read()? {
                    Event::Key(key) if key.kind != KeyEventKind::Release => app.handle_key(key),
                    Event::Resize(_, _) => {
                        console.terminal.autoresize()?;
                        app.resized();
                    }
                    _ => {}
                }
                // Keys typed after the one that opens the editor are the editor's.
                if app.should_quit() || app.wants_editor() || !event::poll(Duration::ZERO)? {
                    break;
                }
            }
        }
        if let Some(job) = app.take_editor_job() {
            // As mitmproxy does: the editor gets the terminal, the console waits.
            console.suspend();
            let result = editor::run(&job.text, job.part, terminal::child_stderr());
            console.resume()?;
            app.editor_done(job, result);
        }
        if let Some(sequence) = app.take_terminal_sequence() {
            console.send_sequence(&sequence)?;
        }
        if events_open {
            for _ in 0..EVENTS_PER_TURN {
                match events.try_recv() {
                    Ok(event) => app.on_event(event),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(count)) => app.on_lagged(count),
                    Err(TryRecvError::Closed) => {
                        events_open = false;
                        app.on_events_closed();
                        break;
                    }
                }
            }
        }
        if let Some(stderr) = &stderr {
            app.on_stderr(stderr.take_lines());
        }
        app.tick(Instant::now());
    }
    drop(console);
    drop(stderr);
    app.finish(FINISH_WAIT);
    Ok(())
}
