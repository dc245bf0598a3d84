//! Driving a full-screen program in tmux, as a person at a terminal would: keys in
//! with `send-keys`, the screen out with `capture-pane`.
//!
//! Each [`TmuxConsole`] has its own tmux server (`tmux -S SOCKET -f /dev/null`, the
//! socket in the console's temp dir), so tests run in parallel and never touch a
//! user's sessions. The program runs under
//! `sh` in the pane, which records the terminal settings before and after it (to
//! check that the terminal was restored), its pid (for `kill -9`), and its exit
//! status; its stderr goes to a file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::periscope::PROXY_ENV_VARS;
use super::tools::require_tool;

/// How long [`TmuxConsole::wait_for`] waits by default.
pub const SCREEN_TIMEOUT: Duration = Duration::from_secs(20);

pub struct TmuxConsole {
    tmux: PathBuf,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

/// Quotes `arg` for `sh`.
fn shell_quote(arg: &std::ffi::OsStr) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', r"'\''"))
}

impl TmuxConsole {
    /// Starts `program args` in a new detached tmux session of `width` x `height`.
    pub fn start(program: &Path, args: &[OsString], width: u16, height: u16) -> TmuxConsole {
        TmuxConsole::start_with_env(program, args, &[], width, height)
    }

    /// [`TmuxConsole::start`] with `env` set for the program (`EDITOR` for the
    /// console's editor, say).
    pub fn start_with_env(
        program: &Path,
        args: &[OsString],
        env: &[(&str, OsString)],
        width: u16,
        height: u16,
    ) -> TmuxConsole {
        let tmux = require_tool("tmux");
        let dir = tempfile::Builder::new()
            .prefix("periscope-tmux-")
            .tempdir()
            .expect("tmux temp dir");
        let socket = dir.path().join("tmux.sock");
        let file = |name: &str| shell_quote(dir.path().join(name).as_os_str());
        let assignments: Vec<OsString> = env
            .iter()
            .map(|(name, value)| {
                let mut assignment = OsString::from(format!("{name}="));
                assignment.push(value);
                assignment
            })
            .collect();
        let env_prefix = if assignments.is_empty() {
            Vec::new()
        } else {
            vec![std::ffi::OsStr::new("env")]
        };
        let command_line: Vec<String> = env_prefix
            .into_iter()
            .chain(assignments.iter().map(OsString::as_os_str))
            .chain(std::iter::once(program.as_os_str()))
            .chain(args.iter().map(OsString::as_os_str))
            .map(shell_quote)
            .collect();
        // Without job control `sh` gives a background command /dev/null as stdin:
        // fd 3 keeps the terminal for it.
        let script = format!(
            "stty -g > {before}; exec 3<&0; {command} <&3 3<&- 2> {stderr} & echo $! > {pid}; \
             wait $!; echo \"console exited with status $?\"; stty -g > {after}; exec sleep 3600",
            before = file("stty.before"),
            after = file("stty.after"),
            stderr = file("stderr"),
            pid = file("pid"),
            command = command_line.join(" "),
        );
        let mut cmd = Command::new(&tmux);
        cmd.arg("-S")
            .arg(&socket)
            .args(["-f", "/dev/null", "new-session", "-d"])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .args(["sh", "-c", &script]);
        for key in PROXY_ENV_VARS {
            cmd.env_remove(key);
        }
        cmd.env("TERM", "xterm-256color");
        let status = cmd.status().expect("run tmux new-session");
        assert!(status.success(), "tmux new-session failed: {status}");
        TmuxConsole { tmux, socket, dir }
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.tmux)
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// Keys by tmux name: `Enter`, `Tab`, `Escape`, `q`, `C-c`, ...
    pub fn send_keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "0"];
        args.extend_from_slice(keys);
        let out = self.tmux(&args);
        assert!(out.status.success(), "tmux send-keys {keys:?}: {out:?}");
    }

    /// Types `text` literally.
    pub fn type_text(&self, text: &str) {
        let out = self.tmux(&["send-keys", "-t", "0", "-l", text]);
        assert!(out.status.success(), "tmux send-keys -l {text:?}: {out:?}");
    }

    /// The screen, one line per row.
    pub fn capture(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", "0"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn resize(&self, width: u16, height: u16) {
        let out = self.tmux(&[
            "resize-window",
            "-t",
            "0",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
        ]);
        assert!(out.status.success(), "tmux resize-window: {out:?}");
    }

    /// Polls the screen until `condition` holds; panics with the last screen and
    /// the program's stderr after `timeout`.
    #[track_caller]
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.capture();
            if condition(&screen) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the screen never showed {what} within {timeout:?}\n--- screen ---\n{screen}\n--- stderr ---\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// [`TmuxConsole::wait_for`] a text on screen.
    #[track_caller]
    pub fn wait_for_text(&self, text: &str) -> String {
        self.wait_for(&format!("{text:?}"), SCREEN_TIMEOUT, |s| s.contains(text))
    }

    /// [`TmuxConsole::wait_for`] every one of `texts` on one screen. A screen is
    /// drawn in pieces: checking texts of one capture after waiting for another
    /// can catch it half drawn.
    #[track_caller]
    pub fn wait_for_all(&self, texts: &[&str]) -> String {
        self.wait_for(&format!("all of {texts:?}"), SCREEN_TIMEOUT, |s| {
            texts.iter().all(|t| s.contains(t))
        })
    }

    /// What the program wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Waits for a stderr line containing `needle` and returns it.
    #[track_caller]
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stderr_text().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if Instant::now() >= deadline {
                panic!(
                    "no stderr line with {needle:?} within {timeout:?}\n--- screen ---\n{}\n--- stderr ---\n{}",
                    self.capture(),
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The program's pid, once `sh` has started it.
    pub fn pid(&self) -> u32 {
        let path = self.dir.path().join("pid");
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            if let Some(pid) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return pid;
            }
            assert!(Instant::now() < deadline, "no pid file from the tmux pane");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status line `sh` printed after the program ended, once it did.
    pub fn exit_line(&self, timeout: Duration) -> String {
        let screen = self.wait_for("the program's exit", timeout, |s| {
            s.contains("console exited with status")
        });
        screen
            .lines()
            .find(|l| l.contains("console exited with status"))
            .unwrap_or_default()
            .to_owned()
    }

    /// `stty -g` before the program started and after it ended.
    pub fn terminal_settings(&self) -> (String, String) {
        let read = |name: &str| {
            std::fs::read_to_string(self.dir.path().join(name))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while read("stty.after").is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        (read("stty.before"), read("stty.after"))
    }

    /// A directory that lives as long as this console (for session files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TmuxConsole {
    fn drop(&mut self) {
        // Closing the pane hangs up the program (SIGHUP): it restores and exits.
        let _ = self.tmux(&["kill-server"]);
    }
}
