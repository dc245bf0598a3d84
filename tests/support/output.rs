//! Collecting a child's output lines in a background thread, and waiting for a line.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What a wait is looking for: a substring (`&str`, `String`) or a predicate on the line.
pub trait LineMatcher {
    fn matches(&self, line: &str) -> bool;
    fn describe(&self) -> String;
}

impl LineMatcher for &str {
    fn matches(&self, line: &str) -> bool {
        line.contains(*self)
    }
    fn describe(&self) -> String {
        format!("a line containing {self:?}")
    }
}

impl LineMatcher for String {
    fn matches(&self, line: &str) -> bool {
        line.contains(self.as_str())
    }
    fn describe(&self) -> String {
        format!("a line containing {self:?}")
    }
}

impl<F: Fn(&str) -> bool> LineMatcher for F {
    fn matches(&self, line: &str) -> bool {
        self(line)
    }
    fn describe(&self) -> String {
        "a line matching the predicate".to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// The stream ended (the process closed it or exited) without a matching line.
    Eof,
    /// No matching line within the timeout.
    Timeout,
}

#[derive(Default)]
struct State {
    lines: Vec<String>,
    eof: bool,
}

/// Lines read from a stream by a background thread; cheap to clone (shared).
#[derive(Clone)]
pub struct OutputLines {
    inner: Arc<(Mutex<State>, Condvar)>,
    label: Arc<str>,
}

impl OutputLines {
    /// Starts a thread reading `reader` line by line (lossy UTF-8, `\r\n` trimmed). When
    /// `echo` is set, each line is also printed to this process's stderr with `label` in
    /// front, so that it shows up in a failed test's captured output.
    pub fn spawn(reader: impl Read + Send + 'static, label: &str, echo: bool) -> OutputLines {
        let out = OutputLines {
            inner: Arc::new((Mutex::new(State::default()), Condvar::new())),
            label: Arc::from(label),
        };
        let shared = out.clone();
        std::thread::Builder::new()
            .name(format!("read-{label}"))
            .spawn(move || {
                let mut reader = BufReader::new(reader);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            while matches!(buf.last(), Some(b'\n' | b'\r')) {
                                buf.pop();
                            }
                            let line = String::from_utf8_lossy(&buf).into_owned();
                            if echo {
                                eprintln!("[{}] {}", shared.label, line);
                            }
                            shared.push(line);
                        }
                    }
                }
                let (lock, cond) = &*shared.inner;
                lock.lock().unwrap().eof = true;
                cond.notify_all();
            })
            .expect("spawn output reader thread");
        out
    }

    fn push(&self, line: String) {
        let (lock, cond) = &*self.inner;
        lock.lock().unwrap().lines.push(line);
        cond.notify_all();
    }

    /// All lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.inner.0.lock().unwrap().lines.clone()
    }

    /// All lines so far joined with `\n`.
    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Number of lines so far (a cursor for [`OutputLines::wait_for_after`]).
    pub fn len(&self) -> usize {
        self.inner.0.lock().unwrap().lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the stream has ended.
    pub fn is_eof(&self) -> bool {
        self.inner.0.lock().unwrap().eof
    }

    /// The first line (from the start) that matches, waiting up to `timeout` for it.
    pub fn wait_for(
        &self,
        matcher: &dyn LineMatcher,
        timeout: Duration,
    ) -> Result<String, WaitError> {
        self.wait_for_after(0, matcher, timeout)
    }

    /// The first line with index >= `start` that matches, waiting up to `timeout`.
    pub fn wait_for_after(
        &self,
        start: usize,
        matcher: &dyn LineMatcher,
        timeout: Duration,
    ) -> Result<String, WaitError> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.inner;
        let mut state = lock.lock().unwrap();
        let mut checked = start;
        loop {
            while checked < state.lines.len() {
                if matcher.matches(&state.lines[checked]) {
                    return Ok(state.lines[checked].clone());
                }
                checked += 1;
            }
            if state.eof {
                return Err(WaitError::Eof);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitError::Timeout);
            }
            state = cond.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Waits until the stream ends (up to `timeout`); returns whether it did.
    pub fn wait_eof(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.inner;
        let mut state = lock.lock().unwrap();
        while !state.eof {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = cond.wait_timeout(state, deadline - now).unwrap().0;
        }
        true
    }
}
