//! Keeping a plugin running: started on first use, restarted with jittered backoff after a
//! crash, and cut off from creates and destroys after repeated crashes until it stays up.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tend_plugin::methods;
use tend_plugin::ErrorCode;
use tokio::sync::mpsc;

use super::conn::{CallError, Connection, Launch, Notice};
use super::logs::LogSink;

/// How long the handshake may take.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// Each step of the shutdown sequence waits this long.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// The first wait before a restart; it doubles per crash up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// This many crashes within `CRASH_WINDOW` open the breaker.
const BREAKER_CRASHES: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(600);
/// A backoff this short is waited out by the caller.
const WAIT_OUT: Duration = Duration::from_secs(5);
/// Up this long after a restart, a plugin gets creates and destroys again.
const STAYS_UP: Duration = Duration::from_secs(60);

/// Why the plugin cannot be used now.
#[derive(Debug, Clone, PartialEq)]
pub enum Down {
    /// Its settings are wrong (`provider.validate` said so): never retried.
    Settings(String),
    /// It could not be started, or crashed; tried again later.
    Unavailable(String),
}

struct State {
    current: Option<Arc<Connection>>,
    up_since: Option<Instant>,
    crashes: VecDeque<Instant>,
    retry_at: Option<Instant>,
    last_failure: Option<String>,
    closed: bool,
}

/// One plugin, started when first needed and kept running.
pub struct Supervisor {
    launch: Launch,
    config: Value,
    logs: LogSink,
    state: tokio::sync::Mutex<State>,
    watchers: Arc<Mutex<Vec<mpsc::Sender<()>>>>,
}

impl Supervisor {
    /// A supervisor for `launch`, its plugin not started yet.
    pub fn new(launch: Launch, config: Value, logs: LogSink) -> Supervisor {
        Supervisor {
            launch,
            config,
            logs,
            state: tokio::sync::Mutex::new(State {
                current: None,
                up_since: None,
                crashes: VecDeque::new(),
                retry_at: None,
                last_failure: None,
                closed: false,
            }),
            watchers: Arc::default(),
        }
    }

    /// The running plugin, started (or restarted, once its backoff passed) if it is not.
    pub async fn connection(&self) -> Result<Arc<Connection>, Down> {
        let mut state = self.state.lock().await;
        if state.closed {
            return Err(Down::Unavailable(
                "is shut down: tend is stopping".to_owned(),
            ));
        }
        if let Some(current) = &state.current {
            match current.ended_why() {
                None => return Ok(current.clone()),
                Some(why) => {
                    state.current = None;
                    state.up_since = None;
                    self.crashed(&mut state, format!("crashed: {why}"));
                }
            }
        }
        if let Some(at) = state.retry_at {
            let now = Instant::now();
            // A short backoff is waited out: a caller then meets the restarted plugin, not
            // an error.
            if at > now && at - now <= WAIT_OUT {
                tokio::time::sleep(at - now).await;
            } else if at > now {
                return Err(Down::Unavailable(format!(
                    "{}; starting it again in {:.1}s",
                    state.last_failure.clone().unwrap_or_default(),
                    (at - now).as_secs_f64()
                )));
            }
        }
        match self.start().await {
            Ok(connection) => {
                let connection = Arc::new(connection);
                state.current = Some(connection.clone());
                state.up_since = Some(Instant::now());
                state.retry_at = None;
                Ok(connection)
            }
            Err(Down::Settings(why)) => Err(Down::Settings(why)),
            Err(Down::Unavailable(why)) => {
                self.crashed(&mut state, why.clone());
                Err(Down::Unavailable(why))
            }
        }
    }

    /// `Err` while the breaker is open: after `BREAKER_CRASHES` crashes in
    /// `CRASH_WINDOW`, no creates or destroys until the plugin stays up `STAYS_UP`.
    pub async fn may_act(&self) -> Result<(), String> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        while state
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            state.crashes.pop_front();
        }
        if state.crashes.len() < BREAKER_CRASHES {
            return Ok(());
        }
        if state
            .up_since
            .is_some_and(|t| now.duration_since(t) >= STAYS_UP)
        {
            state.crashes.clear();
            return Ok(());
        }
        Err(format!(
            "crashed {} times in the last {} minutes; it gets no creates or destroys until it stays up for {}s (last: {})",
            state.crashes.len(),
            CRASH_WINDOW.as_secs() / 60,
            STAYS_UP.as_secs(),
            state.last_failure.clone().unwrap_or_default()
        ))
    }

    /// A receiver told whenever the plugin says something changed.
    pub fn subscribe(&self) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel(16);
        if let Ok(mut watchers) = self.watchers.lock() {
            watchers.push(tx);
        }
        rx
    }

    /// Runs the shutdown sequence on the running plugin; none is started after.
    pub async fn close(&self) {
        let current = {
            let mut state = self.state.lock().await;
            state.closed = true;
            state.current.take()
        };
        if let Some(connection) = current {
            connection.shut_down(SHUTDOWN_GRACE).await;
        }
    }

    fn crashed(&self, state: &mut State, why: String) {
        let now = Instant::now();
        state.crashes.push_back(now);
        let doublings = u32::try_from(state.crashes.len().saturating_sub(1)).unwrap_or(16);
        let backoff = FIRST_BACKOFF
            .saturating_mul(2u32.saturating_pow(doublings.min(16)))
            .min(MAX_BACKOFF);
        state.retry_at = Some(now + jittered(backoff));
        (self.logs)(&self.launch.name, &format!("down: {why}"));
        state.last_failure = Some(why);
    }

    async fn start(&self) -> Result<Connection, Down> {
        let (notices, mut heard) = mpsc::unbounded_channel();
        let connection = Connection::spawn(&self.launch, self.logs.clone(), notices)
            .map_err(Down::Unavailable)?;
        let watchers = self.watchers.clone();
        let (logs, name) = (self.logs.clone(), self.launch.name.clone());
        tokio::spawn(async move {
            while let Some(notice) = heard.recv().await {
                match notice {
                    Notice::Changed => {
                        if let Ok(mut watchers) = watchers.lock() {
                            watchers.retain(|w| !w.is_closed());
                            for watcher in watchers.iter() {
                                let _ = watcher.try_send(());
                            }
                        }
                    }
                    Notice::Garbage(what) => logs(&name, &format!("wrote to stdout: {what}")),
                }
            }
        });
        let versions = self.launch.versions.clone();
        connection
            .initialize(&versions, &self.config, HANDSHAKE_DEADLINE)
            .await
            .map_err(Down::Unavailable)?;
        let params = json!({ "properties": self.config });
        match connection
            .call(methods::VALIDATE, params, HANDSHAKE_DEADLINE)
            .await
        {
            Ok(_) => {}
            Err(CallError::Rpc(e)) if e.code == ErrorCode::MethodNotFound => {}
            Err(CallError::Rpc(e)) if e.code == ErrorCode::InvalidSpec => {
                connection.shut_down(SHUTDOWN_GRACE).await;
                return Err(Down::Settings(e.message));
            }
            Err(e) => {
                connection.shut_down(SHUTDOWN_GRACE).await;
                return Err(Down::Unavailable(
                    connection.with_tail(format!("failed provider.validate: {e}")),
                ));
            }
        }
        Ok(connection)
    }
}

/// `base`, give or take a fifth, so plugins restarted together do not start in step.
fn jittered(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let fraction = f64::from(nanos % 1000) / 1000.0; // 0..1
    base.mul_f64(0.8 + 0.4 * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
                "{d:?}"
            );
        }
    }
}
