//! One running plugin process: its pipes, its requests in flight, its stderr.
//!
//! Requests are matched to answers by id, so answers may come in any order. A request
//! given up (its deadline passed, or its caller went away) is cancelled with `$/cancel`,
//! and its answer, if one still comes, is dropped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tend_plugin::frame::read_line_async;
use tend_plugin::methods::{self, InitializeParams, InitializeResult, TendInfo};
use tend_plugin::{encode, ErrorCode, Id, Message, RpcError, MAX_MESSAGE_BYTES};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot, watch};

use super::logs::{LogSink, StderrTail};

/// How to start a plugin.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// The name tend knows it by.
    pub name: String,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// The folder it starts in (the spec's folder).
    pub dir: PathBuf,
    /// The protocol versions offered in its environment.
    pub versions: Vec<u32>,
    /// Whether to set the magic cookie (only the conformance kit leaves it out).
    pub cookie: bool,
}

impl Launch {
    /// A launch of `command` named `name`, in `dir`, as tend starts plugins.
    pub fn new(name: &str, command: Vec<String>, dir: PathBuf) -> Launch {
        Launch {
            name: name.to_owned(),
            command,
            dir,
            versions: tend_plugin::PROTOCOL_VERSIONS.to_vec(),
            cookie: true,
        }
    }
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq)]
pub struct HandshakeError {
    /// What went wrong, with the plugin's last stderr lines.
    pub message: String,
    /// The error code, when the plugin answered `initialize` with an error.
    pub code: Option<ErrorCode>,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<HandshakeError> for String {
    fn from(e: HandshakeError) -> String {
        e.message
    }
}

/// Why a call did not give a result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin answered with an error.
    #[error("{0}")]
    Rpc(RpcError),
    /// No answer within the deadline: the outcome is unknown.
    #[error("no answer within {0:?}")]
    Deadline(Duration),
    /// The plugin exited or closed its stdout first: the outcome is unknown.
    #[error("the plugin ended: {0}")]
    Ended(String),
}

impl CallError {
    /// True when the call may have done what it was asked even though it failed.
    pub fn outcome_unknown(&self) -> bool {
        !matches!(self, CallError::Rpc(_))
    }
}

type Pending = Arc<Mutex<HashMap<i64, oneshot::Sender<Result<Value, RpcError>>>>>;

/// A running plugin.
pub struct Connection {
    /// Its name.
    pub name: String,
    pid: Option<u32>,
    child: tokio::sync::Mutex<Child>,
    outbox: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicI64,
    tail: StderrTail,
    /// Why it ended, once it did.
    ended: watch::Receiver<Option<String>>,
    /// What it said at the handshake.
    info: Mutex<Option<InitializeResult>>,
    /// True until the handshake is done: a line on stdout that is not an answer then ends
    /// the plugin's run.
    before_handshake: Arc<AtomicBool>,
    /// Requests in flight at once, when the plugin set `maxConcurrency`.
    limit: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
}

/// What a plugin sends besides answers: `instance.changed`, and lines that are not JSON-RPC.
pub type Notices = mpsc::UnboundedSender<Notice>;

/// Something a plugin said that is not an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// `instance.changed`.
    Changed,
    /// A line on stdout that is not a JSON-RPC message, with why.
    Garbage(String),
}

impl Connection {
    /// Starts the plugin; no handshake yet.
    pub fn spawn(launch: &Launch, logs: LogSink, notices: Notices) -> Result<Connection, String> {
        let Some((program, args)) = launch.command.split_first() else {
            return Err("its command is empty".to_owned());
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(&launch.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env(
                tend_plugin::PROTOCOL_VERSIONS_ENV,
                launch
                    .versions
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            )
            // Its own process group: a Ctrl-C at tend's terminal is tend's to handle, and
            // tend then shuts the plugin down in order.
            .process_group(0)
            .kill_on_drop(true);
        if launch.cookie {
            command.env(tend_plugin::MAGIC_COOKIE_ENV, tend_plugin::MAGIC_COOKIE);
        } else {
            command.env_remove(tend_plugin::MAGIC_COOKIE_ENV);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", launch.command.join(" ")))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("its pipes could not be opened".to_owned());
        };
        let pid = child.id();
        let tail = StderrTail::default();
        let pending: Pending = Arc::default();
        let (outbox, inbox) = mpsc::unbounded_channel();
        let (ended_tx, ended) = watch::channel(None);
        let before_handshake = Arc::new(AtomicBool::new(true));
        tokio::spawn(write_all(stdin, inbox));
        tokio::spawn(super::logs::forward(
            launch.name.clone(),
            stderr,
            tail.clone(),
            logs,
        ));
        tokio::spawn(read_answers(
            BufReader::new(stdout),
            pending.clone(),
            notices,
            outbox.clone(),
            ended_tx,
            before_handshake.clone(),
        ));
        Ok(Connection {
            name: launch.name.clone(),
            pid,
            child: tokio::sync::Mutex::new(child),
            outbox,
            pending,
            next_id: AtomicI64::new(1),
            tail,
            ended,
            info: Mutex::new(None),
            before_handshake,
            limit: std::sync::OnceLock::new(),
        })
    }

    /// The plugin's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The handshake: offers `versions`, checks the one chosen. `Err` says what went wrong,
    /// with the plugin's last stderr lines.
    pub async fn initialize(
        &self,
        versions: &[u32],
        config: &Value,
        deadline: Duration,
    ) -> Result<InitializeResult, HandshakeError> {
        let params = InitializeParams {
            protocol_versions: versions.to_vec(),
            tend: TendInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            config: config.clone(),
        };
        let params = serde_json::to_value(params).unwrap_or(Value::Null);
        let failed = |message: String| HandshakeError {
            message,
            code: None,
        };
        let answer = match self.call(methods::INITIALIZE, params, deadline).await {
            Ok(answer) => answer,
            Err(CallError::Rpc(e)) => {
                return Err(HandshakeError {
                    message: self.with_tail(format!("refused the handshake: {e}")),
                    code: Some(e.code),
                })
            }
            Err(CallError::Deadline(d)) => {
                return Err(failed(
                    self.with_tail(format!("did not answer the handshake within {d:?}")),
                ))
            }
            // `why` quotes its stderr already.
            Err(CallError::Ended(why)) => {
                return Err(failed(format!("ended during the handshake: {why}")))
            }
        };
        let info: InitializeResult = serde_json::from_value(answer)
            .map_err(|e| failed(self.with_tail(format!("answered the handshake with {e}"))))?;
        if !versions.contains(&info.protocol_version) {
            return Err(failed(self.with_tail(format!(
                "chose protocol version {}, but tend offered {}",
                info.protocol_version,
                versions
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))));
        }
        if let Ok(mut slot) = self.info.lock() {
            *slot = Some(info.clone());
        }
        self.before_handshake.store(false, Ordering::Relaxed);
        if let Ok(permits @ 1..) = usize::try_from(info.capabilities.max_concurrency) {
            let _ = self
                .limit
                .set(Arc::new(tokio::sync::Semaphore::new(permits)));
        }
        Ok(info)
    }

    /// What the plugin said at the handshake.
    pub fn info(&self) -> Option<InitializeResult> {
        self.info.lock().ok().and_then(|i| i.clone())
    }

    /// `why`, followed by the plugin's last stderr lines, if it wrote any.
    pub fn with_tail(&self, why: String) -> String {
        let lines = self.tail.lines();
        if lines.is_empty() {
            return why;
        }
        format!(
            "{why}; its last stderr lines:\n    {}",
            lines.join("\n    ")
        )
    }

    /// Calls `method` and waits for its answer until `deadline`; a call given up is
    /// cancelled with `$/cancel`.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        deadline: Duration,
    ) -> Result<Value, CallError> {
        if let Some(why) = self.ended_why() {
            return Err(CallError::Ended(why));
        }
        // Past the plugin's `maxConcurrency`, a call waits its turn (within its deadline);
        // a shutdown never waits.
        let _permit = match self.limit.get() {
            Some(limit) if method != methods::SHUTDOWN => {
                match tokio::time::timeout(deadline, limit.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => Some(permit),
                    _ => return Err(CallError::Deadline(deadline)),
                }
            }
            _ => None,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id, tx);
        }
        let guard = InFlight {
            id,
            pending: self.pending.clone(),
            outbox: self.outbox.clone(),
            answered: false,
        };
        let line = encode(&Message::request(id, method, params))
            .map_err(|e| CallError::Rpc(RpcError::new(ErrorCode::InvalidParams, e.to_string())))?;
        if self.outbox.send(line).is_err() {
            return Err(CallError::Ended("its stdin is closed".to_owned()));
        }
        let mut ended = self.ended.clone();
        let answer = tokio::select! {
            answer = rx => answer,
            _ = tokio::time::sleep(deadline) => return Err(CallError::Deadline(deadline)),
            _ = ended.wait_for(Option::is_some) => {
                return Err(CallError::Ended(self.ended_why().unwrap_or_default()))
            }
        };
        let mut guard = guard;
        guard.answered = true;
        match answer {
            Ok(result) => result.map_err(CallError::Rpc),
            Err(_) => Err(CallError::Ended(self.ended_why().unwrap_or_default())),
        }
    }

    /// Sends a notification.
    pub fn notify(&self, method: &str, params: Value) {
        if let Ok(line) = encode(&Message::notification(method, params)) {
            let _ = self.outbox.send(line);
        }
    }

    /// Writes raw bytes to the plugin's stdin (the conformance kit's malformed lines).
    pub fn send_raw(&self, bytes: Vec<u8>) {
        let _ = self.outbox.send(bytes);
    }

    /// Why the plugin ended (with its last stderr lines), or `None` while it runs.
    pub fn ended_why(&self) -> Option<String> {
        let why = match self.ended.borrow().clone() {
            Some(why) => why,
            // Its reader is gone without a word: the runtime it ran on stopped.
            None if self.ended.has_changed().is_err() => "tend stopped reading it".to_owned(),
            None => return None,
        };
        Some(self.with_tail(why))
    }

    /// The plugin's exit status once it exited by itself, waiting at most `limit`.
    pub async fn exit_status(&self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.lock().await;
        tokio::time::timeout(limit, child.wait()).await.ok()?.ok()
    }

    /// The shutdown sequence: `shutdown`, `exit`, stdin closed, 2 s, SIGTERM, 2 s,
    /// SIGKILL. The exit status, when it exited by itself (before any signal).
    pub async fn shut_down(&self, grace: Duration) -> Option<std::process::ExitStatus> {
        if self.ended_why().is_none() {
            let _ = self.call(methods::SHUTDOWN, json!({}), grace).await;
            self.notify(methods::EXIT, Value::Null);
        }
        // An empty message closes stdin: the writer ends when it sees it.
        let _ = self.outbox.send(Vec::new());
        let mut child = self.child.lock().await;
        if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
            return Some(status);
        }
        self.signal(libc::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return None;
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        None
    }

    /// Kills the plugin at once (SIGKILL), as a crash would; the conformance kit's
    /// "killed mid-provision".
    pub async fn kill(&self) {
        let mut child = self.child.lock().await;
        let _ = child.start_kill();
        let _ = child.wait().await;
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) with a pid this process started and has not reaped yet.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

/// A request in flight: removed from the pending table and cancelled when its caller
/// gives up (deadline, or the caller's future dropped).
struct InFlight {
    id: i64,
    pending: Pending,
    outbox: mpsc::UnboundedSender<Vec<u8>>,
    answered: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&self.id);
        }
        let cancel = Message::notification(methods::CANCEL, json!({"id": self.id}));
        if let Ok(line) = encode(&cancel) {
            let _ = self.outbox.send(line);
        }
    }
}

/// Writes queued lines to the plugin's stdin; an empty one closes it.
async fn write_all(mut stdin: ChildStdin, mut inbox: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(line) = inbox.recv().await {
        if line.is_empty() || stdin.write_all(&line).await.is_err() {
            break;
        }
        if stdin.flush().await.is_err() {
            break;
        }
    }
}

/// Reads the plugin's stdout: answers go to their callers, notifications to `notices`,
/// requests from the plugin are refused. Sets `ended` when stdout closes.
async fn read_answers(
    mut stdout: BufReader<tokio::process::ChildStdout>,
    pending: Pending,
    notices: Notices,
    outbox: mpsc::UnboundedSender<Vec<u8>>,
    ended: watch::Sender<Option<String>>,
    before_handshake: Arc<AtomicBool>,
) {
    let garbage = |what: String| -> Result<(), String> {
        if before_handshake.load(Ordering::Relaxed) {
            return Err(format!("it wrote to stdout before the handshake: {what}"));
        }
        let _ = notices.send(Notice::Garbage(what));
        Ok(())
    };
    let why = loop {
        let line = match read_line_async(&mut stdout, MAX_MESSAGE_BYTES).await {
            Ok(Some(line)) => line,
            Ok(None) => break "it closed its stdout (exited)".to_owned(),
            Err(tend_plugin::FrameError::Io(e)) => break format!("cannot read its stdout: {e}"),
            Err(e) => match garbage(e.to_string()) {
                Ok(()) => continue,
                Err(why) => break why,
            },
        };
        match tend_plugin::decode(&line) {
            Ok(Message::Response {
                id: Some(Id::Number(id)),
                outcome,
            }) => {
                // An answer to a request given up finds no waiter and is dropped.
                if let Some(waiter) = pending.lock().ok().and_then(|mut p| p.remove(&id)) {
                    let _ = waiter.send(outcome);
                }
            }
            Ok(Message::Response { id, outcome }) => {
                let what = format!(
                    "an answer to no request of tend's (id {}): {}",
                    id.map(|i| i.to_string())
                        .unwrap_or_else(|| "null".to_owned()),
                    match outcome {
                        Ok(v) => v.to_string(),
                        Err(e) => e.to_string(),
                    }
                );
                if let Err(why) = garbage(what) {
                    break why;
                }
            }
            Ok(Message::Notification { method, .. }) if method == methods::CHANGED => {
                let _ = notices.send(Notice::Changed);
            }
            Ok(Message::Notification { .. }) => {}
            Ok(Message::Request { id, method, .. }) => {
                let refusal = Message::Response {
                    id: Some(id),
                    outcome: Err(RpcError::new(
                        ErrorCode::MethodNotFound,
                        format!("tend answers no requests ({method})"),
                    )),
                };
                if let Ok(bytes) = encode(&refusal) {
                    let _ = outbox.send(bytes);
                }
            }
            Err(_) => {
                let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                if let Err(why) = garbage(format!("{shown:?} is not JSON-RPC")) {
                    break why;
                }
            }
        }
    };
    // Why it ended is set first: every caller still waiting then learns it.
    let _ = ended.send(Some(why));
    if let Ok(mut pending) = pending.lock() {
        pending.clear();
    }
}
