//! The worker process and its supervisor. One task owns the child: it writes the
//! calls (through a writer task, so a worker that stops reading never blocks it),
//! reads the answers and routes them by id to the calls waiting for them, restarts a
//! worker that died or got stuck past the timeout, and polls the scripts for changes.
//! Callers only ever await a channel: no tokio worker thread blocks on the process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use periscope_flow::scratch::ScratchDir;
use periscope_flow::LogLevel;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{
    hooks_of, BodySide, Changes, FlowHook, HookSet, ScriptReport, WorkerMessage,
};

/// Where event-log lines go (the proxy's bus).
pub type LogSink = Arc<dyn Fn(LogLevel, String) + Send + Sync>;

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub python: PathBuf,
    pub scripts: Vec<PathBuf>,
    /// How long one hook call may take before it is abandoned.
    pub timeout: Duration,
    /// Values for the scripts' own options (`loader.add_option`), as the user set
    /// them (`--set NAME=VALUE`, the config file): strings, or lists of strings.
    pub options: serde_json::Map<String, serde_json::Value>,
    /// A value for an option no script adds is an error (at Periscope's start), not
    /// a warning (scripts changed while it runs).
    pub strict_options: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot write the addon runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the thread that talks to the addon worker: {0}")]
    Thread(std::io::Error),
    #[error("cannot start the addon worker {python}: {source}")]
    Spawn {
        python: String,
        source: std::io::Error,
    },
    #[error("the addon worker did not start: {0}")]
    NotReady(String),
    #[error("cannot load script {0}")]
    Script(String),
}

/// Why a call brought no changes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The hook ran longer than the timeout; the worker was restarted.
    Timeout(Duration),
    /// The worker died (or was restarted) before it answered.
    WorkerGone,
}

/// What a hook call brought back.
#[derive(Debug, Default)]
pub struct Reply {
    pub changes: Changes,
    /// A script's hook raised (`script.py: request raised KeyError: 'x'`); its
    /// changes were undone.
    pub errors: Vec<String>,
}

/// What the worker says about one call: its end, or that a hook reads a body.
enum Answer {
    Done(Box<Reply>),
    WantsBody(BodySide),
}

/// Where a call stands, for the caller that drives it ([`Call::next`]).
#[derive(Debug)]
pub enum Step {
    Done(Box<Reply>),
    /// A script reads this body: answer with [`Call::send_body`] (the call waits).
    WantsBody(BodySide),
}

enum Request {
    Call {
        id: u64,
        line: String,
        answers: mpsc::UnboundedSender<Answer>,
    },
    /// The body the worker asked for in call `id`.
    BodyAnswer {
        id: u64,
        side: BodySide,
        line: String,
    },
    /// The caller stopped waiting for call `id` (its flow ended): its answer, when
    /// it comes, is dropped.
    Forget {
        id: u64,
    },
    /// The call timed out: the worker is stuck in it.
    Abandon {
        id: u64,
        hook: &'static str,
    },
    Shutdown(oneshot::Sender<()>),
}

/// The running worker, seen from the proxy.
pub struct Worker {
    requests: mpsc::UnboundedSender<Request>,
    hooks: Arc<AtomicU32>,
    next_id: AtomicU64,
    timeout: Duration,
    /// The runtime of the thread the worker's pipes are served on.
    pipes: tokio::runtime::Handle,
}

/// How often the scripts' files are checked for changes while no hook runs.
const RELOAD_POLL: Duration = Duration::from_secs(1);
/// How long a worker may take to load its scripts.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Worker {
    /// Starts the worker and waits for it to load the scripts. A script that does not
    /// load is an error naming its file and line.
    ///
    /// The worker's pipes and its supervisor run on a thread of their own, with a
    /// single-threaded runtime, until the worker ends. A call is then two hand-overs
    /// between threads, the proxy's and this one, and everything between them (the
    /// supervisor, the pipe writer, the reader) wakes no other thread. On the
    /// process's multi-threaded main runtime, with the proxy's connections on
    /// threads of their own, a no-op `response` script cost 150 µs of proxy CPU per
    /// request; here 144, and 137 with the observing hooks' feed here too
    /// ([`Worker::spawn_beside`]).
    pub async fn start(config: WorkerConfig, log: LogSink) -> Result<Worker, StartError> {
        let (started, start_result) = oneshot::channel();
        std::thread::Builder::new()
            .name("addon-pipes".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = started.send(Err(StartError::Thread(error)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Self::start_here(config, log).await {
                        Ok((worker, supervise)) => {
                            let _ = started.send(Ok(worker));
                            supervise.await;
                        }
                        Err(error) => {
                            let _ = started.send(Err(error));
                        }
                    }
                });
            })
            .map_err(StartError::Thread)?;
        start_result
            .await
            .unwrap_or_else(|_| Err(StartError::NotReady("the worker's thread ended".into())))
    }

    /// Starts the worker on the current runtime; the future returned supervises it
    /// until it ends.
    async fn start_here(
        config: WorkerConfig,
        log: LogSink,
    ) -> Result<(Worker, impl std::future::Future<Output = ()>), StartError> {
        let runtime = ScratchDir::create("periscope-addons-").map_err(StartError::Runtime)?;
        crate::runtime::write_runtime(runtime.path()).map_err(StartError::Runtime)?;
        let mut process = Process::spawn(&config, runtime.path(), &log)?;
        let scripts = tokio::time::timeout(READY_TIMEOUT, process.ready(&log))
            .await
            .map_err(|_| StartError::NotReady(format!("no answer in {READY_TIMEOUT:?}")))??;
        if let Some(error) = scripts.iter().find_map(|s| s.error.clone()) {
            return Err(StartError::Script(error));
        }
        let hooks = Arc::new(AtomicU32::new(hooks_of(&scripts).0));
        let (requests, receiver) = mpsc::unbounded_channel();
        let supervisor = Supervisor {
            // A restarted worker runs scripts that started once: an option value
            // none of them adds is no longer worth an error.
            config: WorkerConfig {
                strict_options: false,
                ..config.clone()
            },
            runtime,
            log,
            hooks: Arc::clone(&hooks),
            pending: HashMap::new(),
            awaiting_body: None,
        };
        let worker = Worker {
            requests,
            hooks,
            next_id: AtomicU64::new(1),
            timeout: config.timeout,
            pipes: tokio::runtime::Handle::current(),
        };
        Ok((worker, supervisor.run(process, receiver)))
    }

    /// Runs `task` on the thread the worker's pipes are served on, for work that
    /// mostly hands flows to the worker (the observing hooks' feed): it wakes that
    /// thread, often awake anyway, rather than another.
    pub fn spawn_beside<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.pipes.spawn(task)
    }

    /// The flow hooks the scripts define now.
    pub fn hooks(&self) -> HookSet {
        HookSet(self.hooks.load(Ordering::Relaxed))
    }

    /// Calls `hook` of every script that defines it with `flow` (PROTOCOL.md, `hook`),
    /// `extra` merged into the message; the call's end. (A call that may be asked for
    /// bodies is driven with [`Worker::start_call`].)
    pub async fn call(
        &self,
        hook: FlowHook,
        flow: Value,
        extra: Option<(&str, Value)>,
    ) -> Result<Reply, CallError> {
        let mut call = self.start_call(hook, flow, extra.as_slice());
        loop {
            match call.next().await? {
                Step::Done(reply) => return Ok(*reply),
                // Nothing was deferred, so there is nothing to give.
                Step::WantsBody(side) => call.send_body(side, None),
            }
        }
    }

    /// Sends the call; its answers come through [`Call::next`].
    pub fn start_call(&self, hook: FlowHook, flow: Value, extra: &[(&str, Value)]) -> Call<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = serde_json::json!({
            "type": "hook",
            "id": id,
            "hook": hook.name(),
            "flow": flow,
        });
        for (key, value) in extra {
            message[*key] = value.clone();
        }
        let (sender, answers) = mpsc::unbounded_channel();
        let line = message.to_string();
        let sent = self
            .requests
            .send(Request::Call {
                id,
                line,
                answers: sender,
            })
            .is_ok();
        Call {
            worker: self,
            id,
            hook,
            answers: sent.then_some(answers),
            deadline: tokio::time::Instant::now() + self.timeout,
            owed: None,
            ended: false,
        }
    }
    /// Runs the scripts' `done` and waits (a little) for the worker to exit.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.requests.send(Request::Shutdown(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), finished).await;
        }
    }
}

/// One hook call in flight. Dropped before its end (its flow was killed, its client
/// left), it tells the supervisor, and answers a body the worker still waits for, so
/// that the worker never waits on a call nobody drives.
pub struct Call<'w> {
    worker: &'w Worker,
    id: u64,
    hook: FlowHook,
    /// `None`: the call could not be sent (the supervisor is gone).
    answers: Option<mpsc::UnboundedReceiver<Answer>>,
    /// `--scripts-timeout` from when the call was sent: the hooks and the bodies they
    /// wait for together.
    deadline: tokio::time::Instant,
    /// A body the worker asked for and has not been given.
    owed: Option<BodySide>,
    ended: bool,
}

impl Call<'_> {
    /// The next thing the worker says about the call; past the deadline the call is
    /// abandoned.
    pub async fn next(&mut self) -> Result<Step, CallError> {
        let Some(answers) = self.answers.as_mut() else {
            return Err(CallError::WorkerGone);
        };
        let answer = tokio::time::timeout_at(self.deadline, answers.recv()).await;
        match answer {
            Ok(Some(Answer::Done(reply))) => {
                self.ended = true;
                Ok(Step::Done(reply))
            }
            Ok(Some(Answer::WantsBody(side))) => {
                self.owed = Some(side);
                Ok(Step::WantsBody(side))
            }
            Ok(None) => {
                self.ended = true;
                Err(CallError::WorkerGone)
            }
            Err(_) => {
                self.ended = true;
                let _ = self.worker.requests.send(Request::Abandon {
                    id: self.id,
                    hook: self.hook.name(),
                });
                Err(CallError::Timeout(self.worker.timeout))
            }
        }
    }

    /// Until when a body the worker asked for may be read: a quarter of the timeout
    /// before the call's deadline, so that the hook still has time to run with it
    /// (or without it) before the call is abandoned.
    pub fn body_deadline(&self) -> tokio::time::Instant {
        self.deadline - self.worker.timeout / 4
    }

    /// Answers a [`Step::WantsBody`]: the body whole, or `None`.
    pub fn send_body(&mut self, side: BodySide, content: Option<&Bytes>) {
        self.owed = None;
        let line = crate::protocol::body_answer(self.id, side, content);
        let _ = self.worker.requests.send(Request::BodyAnswer {
            id: self.id,
            side,
            line,
        });
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if let Some(side) = self.owed {
            self.send_body(side, None);
        }
        if !self.ended {
            let _ = self.worker.requests.send(Request::Forget { id: self.id });
        }
    }
}

/// One worker process: its stdin (through the writer task), stdout lines, the child.
struct Process {
    child: Child,
    stdin: mpsc::UnboundedSender<String>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Process {
    fn spawn(
        config: &WorkerConfig,
        runtime: &std::path::Path,
        log: &LogSink,
    ) -> Result<Process, StartError> {
        let mut python_path = runtime.as_os_str().to_owned();
        if let Some(existing) = std::env::var_os("PYTHONPATH") {
            python_path.push(":");
            python_path.push(existing);
        }
        let mut child = Command::new(&config.python)
            .arg("-u")
            .arg("-m")
            .arg("periscope_addons")
            .args(&config.scripts)
            .env("PYTHONPATH", python_path)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env(
                "PERISCOPE_ADDON_OPTIONS",
                serde_json::Value::Object(config.options.clone()).to_string(),
            )
            .env(
                "PERISCOPE_ADDON_OPTIONS_STRICT",
                if config.strict_options { "1" } else { "0" },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| StartError::Spawn {
                python: config.python.display().to_string(),
                source,
            })?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(StartError::NotReady("no pipes to the worker".into()));
        };
        let (sender, mut outgoing) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(mut line) = outgoing.recv().await {
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        // What scripts print (and Python's own complaints) goes to the event log, not
        // to a terminal the console owns.
        let log = Arc::clone(log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log(LogLevel::Info, format!("addon output: {line}"));
            }
        });
        Ok(Process {
            child,
            stdin: sender,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// Reads up to the worker's `ready`, passing its log lines on.
    async fn ready(&mut self, log: &LogSink) -> Result<Vec<ScriptReport>, StartError> {
        loop {
            match self.lines.next_line().await {
                Ok(Some(line)) => match WorkerMessage::parse(&line) {
                    Ok(WorkerMessage::Ready { scripts }) => return Ok(scripts),
                    Ok(WorkerMessage::Log { level, message }) => {
                        // A load error is the start error itself; the rest is logged.
                        if !message.starts_with("cannot load script ") {
                            log(log_level(&level), format!("addon: {message}"));
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        return Err(StartError::NotReady(format!(
                            "unexpected output {line:?}: {error}"
                        )))
                    }
                },
                Ok(None) | Err(_) => {
                    let status = self.child.wait().await.ok();
                    return Err(StartError::NotReady(format!(
                        "the worker exited ({})",
                        status.map_or("unknown status".into(), |s| s.to_string())
                    )));
                }
            }
        }
    }
}

/// Tells the worker there is no body to give it for call `id`.
fn answer_none(stdin: &mpsc::UnboundedSender<String>, id: u64, side: BodySide) {
    let _ = stdin.send(crate::protocol::body_answer(id, side, None));
}

fn log_level(level: &str) -> LogLevel {
    match level {
        "debug" => LogLevel::Debug,
        "warn" => LogLevel::Warn,
        "error" => LogLevel::Error,
        _ => LogLevel::Info,
    }
}

struct Supervisor {
    config: WorkerConfig,
    /// The runtime's directory, removed when the supervisor ends.
    runtime: ScratchDir,
    log: LogSink,
    hooks: Arc<AtomicU32>,
    /// Calls written to the worker and not answered yet, with when they were written.
    pending: HashMap<u64, (mpsc::UnboundedSender<Answer>, Instant)>,
    /// The call whose body the worker waits for, which body, since when (it runs one
    /// hook at a time, so at most one): meanwhile it is not stuck in a hook.
    awaiting_body: Option<(u64, BodySide, Instant)>,
}

impl Supervisor {
    async fn run(mut self, mut process: Process, mut requests: mpsc::UnboundedReceiver<Request>) {
        let mut poll = tokio::time::interval(RELOAD_POLL);
        let mut restarts: Vec<Instant> = Vec::new();
        loop {
            let gone = tokio::select! {
                request = requests.recv() => match request {
                    Some(Request::Call { id, line, answers }) => {
                        self.pending.insert(id, (answers, Instant::now()));
                        let _ = process.stdin.send(line);
                        None
                    }
                    Some(Request::BodyAnswer { id, side, line }) => {
                        // Only the answer the worker waits for goes to it: one that
                        // comes after the supervisor answered in its place is dropped.
                        if self
                            .awaiting_body
                            .is_some_and(|(waiting, asked, _)| waiting == id && asked == side)
                        {
                            self.awaiting_body = None;
                            let _ = process.stdin.send(line);
                        }
                        None
                    }
                    Some(Request::Forget { id }) => {
                        self.pending.remove(&id);
                        // Its caller left before it saw the worker's request for a
                        // body: the worker still waits for an answer.
                        self.answer_awaited_body(&process, |call, _| call == id);
                        None
                    }
                    Some(Request::Abandon { id, hook }) => {
                        // Still unanswered: the worker is stuck in that hook (it runs
                        // one at a time), so every flow behind it would wait too.
                        // A call that waited for a restart before it was written has
                        // not been in the worker long, and a worker waiting for this
                        // call's body, or for another's (less than the timeout so far),
                        // waits on the proxy: those calls are dropped, the worker kept.
                        let timeout = self.config.timeout;
                        let waiting_on_the_proxy = self
                            .awaiting_body
                            .is_some_and(|(call, _, since)| call == id || since.elapsed() < timeout);
                        // The body it waits for is given as none: this call's, or one
                        // nobody gave within the timeout.
                        self.answer_awaited_body(&process, |call, since| {
                            call == id || since.elapsed() >= timeout
                        });
                        let stuck = self
                            .pending
                            .remove(&id)
                            .is_some_and(|(_, written)| written.elapsed() >= timeout / 2)
                            && !waiting_on_the_proxy;
                        if stuck {
                            let _ = process.child.start_kill();
                            Some(format!(
                                "a `{hook}` hook ran longer than {:?}; the addon worker was stopped",
                                self.config.timeout
                            ))
                        } else {
                            None
                        }
                    }
                    Some(Request::Shutdown(done)) => {
                        self.close(&mut process).await;
                        // The worker and the runtime's directory are gone before the
                        // proxy hears it: the proxy may exit at once, before this
                        // thread would have dropped them.
                        drop(process);
                        drop(self);
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                line = process.lines.next_line() => match line {
                    Ok(Some(line)) => {
                        self.handle(&line, &process.stdin);
                        None
                    }
                    Ok(None) | Err(_) => {
                        let status = process.child.wait().await;
                        Some(format!(
                            "the addon worker exited ({})",
                            status.map_or_else(|e| e.to_string(), |s| s.to_string())
                        ))
                    }
                },
                _ = poll.tick() => {
                    if self.pending.is_empty() {
                        let _ = process.stdin.send(r#"{"type":"reload"}"#.into());
                    }
                    None
                }
            };
            let Some(why) = gone else { continue };
            // Calls in flight get no answer: their flows go on unchanged.
            self.pending.clear();
            self.awaiting_body = None;
            let _ = process.child.start_kill();
            let _ = process.child.wait().await;
            restarts.retain(|at| at.elapsed() < Duration::from_secs(60));
            restarts.push(Instant::now());
            // A worker that dies at once, again and again, is restarted less often.
            let pause = Duration::from_millis(200) * (restarts.len() as u32).min(25);
            (self.log)(
                LogLevel::Error,
                format!("addon: {why}; restarting it in {pause:?}"),
            );
            tokio::time::sleep(pause).await;
            process = loop {
                match self.restart().await {
                    Ok(process) => break process,
                    Err(error) => {
                        (self.log)(
                            LogLevel::Error,
                            format!(
                                "addon: the worker did not restart: {error}; trying again in 5s"
                            ),
                        );
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            };
        }
    }

    /// Answers the body the worker waits for with none, when `which` says so of the
    /// call it is for and of when it was asked for.
    fn answer_awaited_body(&mut self, process: &Process, which: impl Fn(u64, Instant) -> bool) {
        if let Some((id, side, _)) = self
            .awaiting_body
            .filter(|&(id, _, since)| which(id, since))
        {
            self.awaiting_body = None;
            answer_none(&process.stdin, id, side);
        }
    }

    /// Runs the scripts' `done` and ends the worker: the calls still in it get their
    /// answers (a body the worker asks for meanwhile is answered with none), for up
    /// to 2 s; then it is killed.
    async fn close(&mut self, process: &mut Process) {
        self.answer_awaited_body(process, |_, _| true);
        let _ = process.stdin.send(r#"{"type":"shutdown"}"#.into());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout_at(deadline, process.lines.next_line()).await
        {
            if let Ok(WorkerMessage::Body { id, side }) = WorkerMessage::parse(&line) {
                answer_none(&process.stdin, id, side);
            } else {
                self.handle(&line, &process.stdin);
            }
        }
        let _ = tokio::time::timeout_at(deadline, process.child.wait()).await;
        let _ = process.child.start_kill();
    }

    async fn restart(&mut self) -> Result<Process, StartError> {
        let mut process = Process::spawn(&self.config, self.runtime.path(), &self.log)?;
        let scripts = tokio::time::timeout(READY_TIMEOUT, process.ready(&self.log))
            .await
            .map_err(|_| StartError::NotReady(format!("no answer in {READY_TIMEOUT:?}")))??;
        self.set_hooks(&scripts);
        (self.log)(
            LogLevel::Warn,
            "addon: the addon worker was restarted".to_string(),
        );
        Ok(process)
    }

    fn set_hooks(&self, scripts: &[ScriptReport]) {
        for script in scripts {
            if let Some(error) = &script.error {
                (self.log)(
                    LogLevel::Error,
                    format!("addon: cannot load script {error}"),
                );
            }
        }
        self.hooks.store(hooks_of(scripts).0, Ordering::Relaxed);
    }

    fn handle(&mut self, line: &str, stdin: &mpsc::UnboundedSender<String>) {
        match WorkerMessage::parse(line) {
            Ok(WorkerMessage::Result { id, changes, errors }) => {
                if self.awaiting_body.is_some_and(|(call, _, _)| call == id) {
                    self.awaiting_body = None;
                }
                if let Some((answers, _)) = self.pending.remove(&id) {
                    let _ = answers.send(Answer::Done(Box::new(Reply {
                        changes: *changes,
                        errors,
                    })));
                }
            }
            Ok(WorkerMessage::Body { id, side }) => {
                let asked = self
                    .pending
                    .get(&id)
                    .is_some_and(|(answers, _)| answers.send(Answer::WantsBody(side)).is_ok());
                if asked {
                    self.awaiting_body = Some((id, side, Instant::now()));
                } else {
                    // A call nobody drives any more: the worker still waits for an
                    // answer, so it gets one.
                    self.pending.remove(&id);
                    answer_none(stdin, id, side);
                }
            }
            Ok(WorkerMessage::Log { level, message }) => {
                (self.log)(log_level(&level), format!("addon: {message}"));
            }
            Ok(WorkerMessage::Hooks { scripts }) => {
                self.set_hooks(&scripts);
                (self.log)(LogLevel::Info, "addon: scripts reloaded".to_string());
            }
            Ok(WorkerMessage::Ready { scripts }) => self.set_hooks(&scripts),
            Err(error) => (self.log)(
                LogLevel::Warn,
                format!("addon: the worker wrote something that is not the protocol ({error}): {line:.200}"),
            ),
        }
    }
}
