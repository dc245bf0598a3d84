//! The terminal while the console runs: raw mode and the alternate screen, put back
//! on every way out — a normal quit, an error, a signal, a panic — and stderr
//! turned into event log lines, because anything written to the terminal under a
//! full-screen program tears the screen.
//!
//! With `crates/tls/src/ffi.rs`, one of the two places the workspace allows `unsafe`:
//! `poll(2)`, `pipe2(2)` and `dup2(2)` on the terminal's descriptors, behind safe
//! functions.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Stdout};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::sync::Once;

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::{Hide, Show};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::Terminal;

/// True while the console owns the terminal: the panic hook restores it only then.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The real stderr while it is captured, else -1.
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);
/// Lines of stderr kept until the console reads them; more are dropped rather than
/// blocking the thread that writes them.
const STDERR_BACKLOG: usize = 10_000;

/// The terminal in raw mode on the alternate screen; restored when dropped.
pub struct ConsoleTerminal {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl ConsoleTerminal {
    pub fn enter() -> io::Result<Self> {
        install_panic_hook();
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let entered = execute!(io::stdout(), EnterAlternateScreen, Hide)
            .and_then(|()| Terminal::new(CrosstermBackend::new(io::stdout())));
        match entered {
            Ok(terminal) => Ok(ConsoleTerminal { terminal }),
            Err(error) => {
                restore();
                Err(error)
            }
        }
    }
}

impl ConsoleTerminal {
    /// Gives the terminal back for a while (to run the user's editor): raw mode off,
    /// the main screen, the cursor shown. [`ConsoleTerminal::resume`] takes it again.
    pub fn suspend(&mut self) {
        restore();
    }

    /// Takes the terminal again after [`ConsoleTerminal::suspend`] and has the next
    /// draw repaint every cell (the editor drew over the screen).
    pub fn resume(&mut self) -> io::Result<()> {
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        execute!(io::stdout(), EnterAlternateScreen, Hide)?;
        self.terminal.autoresize()?;
        self.terminal.clear()
    }

    /// Writes an escape sequence for the terminal itself (OSC 52, the clipboard).
    pub fn send_sequence(&mut self, sequence: &str) -> io::Result<()> {
        use std::io::Write;
        let mut out = io::stdout();
        out.write_all(sequence.as_bytes())?;
        out.flush()
    }
}

/// Where a program the console runs (the editor) should write its errors: the real
/// stderr while the console captures it, else stderr as it is.
pub fn child_stderr() -> std::process::Stdio {
    let saved = SAVED_STDERR.load(Ordering::SeqCst);
    if saved >= 0 {
        // SAFETY: `saved` is the open duplicate of the original stderr made in
        // `StderrCapture::start`; the copy made here is owned by the `File`.
        let copy = unsafe { libc::fcntl(saved, libc::F_DUPFD_CLOEXEC, 3) };
        if copy >= 0 {
            // SAFETY: `copy` was just made and belongs to no one else.
            return std::process::Stdio::from(unsafe { File::from_raw_fd(copy) });
        }
    }
    std::process::Stdio::inherit()
}

impl Drop for ConsoleTerminal {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the terminal back as the shell expects it. Safe to call more than once.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
    }
}

/// Gives back both the screen and stderr (when the console cannot do it itself).
pub fn restore_all() {
    release_stderr();
    restore();
}

fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The message must reach a usable terminal: stderr first, then the screen.
            release_stderr();
            restore();
            previous(info);
        }));
    });
}

/// What the terminal's input has for the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Keys (or other bytes) to read.
    Ready,
    /// Nothing within the timeout.
    Idle,
    /// The terminal is gone (hung up, closed).
    Gone,
}

/// Waits up to `timeout` for input on the terminal that is stdin.
///
/// crossterm reads a hung-up terminal in an endless loop (its reader retries on
/// end-of-file and EIO), so the console asks `poll(2)` first and calls crossterm only
/// while the terminal is still there.
pub fn wait_for_input(timeout: std::time::Duration) -> io::Result<Input> {
    let mut fds = [libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    }];
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: poll(2) on one pollfd that lives on this stack frame.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, millis) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        return if error.kind() == io::ErrorKind::Interrupted {
            Ok(Input::Idle)
        } else {
            Err(error)
        };
    }
    let revents = fds[0].revents;
    if revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        Ok(Input::Gone)
    } else if revents & libc::POLLIN != 0 {
        Ok(Input::Ready)
    } else {
        Ok(Input::Idle)
    }
}

/// Stderr redirected into a pipe whose lines the console shows in its event log.
/// Only when stderr is the terminal: a file or a pipe (tests read the listening
/// line from one) is left alone.
pub struct StderrCapture {
    lines: Receiver<String>,
}

impl StderrCapture {
    pub fn start() -> Option<StderrCapture> {
        if !io::stderr().is_terminal() {
            return None;
        }
        let mut fds: [RawFd; 2] = [-1, -1];
        // SAFETY: plain POSIX calls on descriptors this function owns; every
        // failure path closes what it opened and leaves fd 2 as it was.
        unsafe {
            if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return None;
            }
            let saved = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
            if saved < 0 {
                libc::close(fds[0]);
                libc::close(fds[1]);
                return None;
            }
            if libc::dup2(fds[1], 2) < 0 {
                libc::close(fds[0]);
                libc::close(fds[1]);
                libc::close(saved);
                return None;
            }
            libc::close(fds[1]);
            SAVED_STDERR.store(saved, Ordering::SeqCst);
        }
        // SAFETY: fds[0] is the read end of the pipe made above, owned by no one else.
        let reader = unsafe { File::from_raw_fd(fds[0]) };
        let (sender, lines) = sync_channel(STDERR_BACKLOG);
        let spawned = std::thread::Builder::new()
            .name("console-stderr".into())
            .spawn(move || {
                for line in BufReader::new(reader).lines() {
                    let Ok(line) = line else { break };
                    // Full: the console is behind; this line is dropped, the
                    // writer never waits.
                    let _ = sender.try_send(line);
                }
            });
        if spawned.is_err() {
            release_stderr();
            return None;
        }
        Some(StderrCapture { lines })
    }

    /// Lines written to stderr since the last call.
    pub fn take_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match self.lines.try_recv() {
                Ok(line) => out.push(line),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return out,
            }
        }
    }
}

impl Drop for StderrCapture {
    fn drop(&mut self) {
        release_stderr();
    }
}

/// Points fd 2 back at the real stderr; the pipe's reader then sees its end.
fn release_stderr() {
    let saved = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if saved >= 0 {
        // SAFETY: `saved` is the duplicate of the original stderr made in `start`.
        unsafe {
            libc::dup2(saved, 2);
            libc::close(saved);
        }
    }
}
