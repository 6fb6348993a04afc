//! Keeping a plugin running: started on first use, restarted with jittered backoff after a
//! crash, and cut off from creates and destroys after repeated crashes until it stays up.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

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

/// A plugin's crashes: when it may be started again, and whether it may act.
#[derive(Debug, Default)]
pub struct Crashes {
    times: VecDeque<Instant>,
    up_since: Option<Instant>,
    retry_at: Option<Instant>,
}

impl Crashes {
    /// Notes a crash (or a failed start) at `now`; the backoff until the next start:
    /// `FIRST_BACKOFF` doubled per crash in the window, at most `MAX_BACKOFF`, jittered.
    pub fn crashed(&mut self, now: Instant) -> Duration {
        self.forget_before(now);
        self.times.push_back(now);
        self.up_since = None;
        let doublings = u32::try_from(self.times.len() - 1)
            .unwrap_or(u32::MAX)
            .min(16);
        let backoff = jittered(
            FIRST_BACKOFF
                .saturating_mul(2u32.saturating_pow(doublings))
                .min(MAX_BACKOFF),
        );
        self.retry_at = Some(now + backoff);
        backoff
    }

    /// Notes that the plugin started and shook hands at `now`.
    pub fn started(&mut self, now: Instant) {
        self.up_since = Some(now);
        self.retry_at = None;
    }

    /// How long until it may be started again; zero when it may now.
    pub fn wait(&self, now: Instant) -> Duration {
        self.retry_at
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now))
    }

    /// `Some(count)` while the breaker is open: `BREAKER_CRASHES` crashes within
    /// `CRASH_WINDOW`, and it has not stayed up `STAYS_UP` since.
    pub fn breaker(&mut self, now: Instant) -> Option<usize> {
        self.forget_before(now);
        if self.times.len() < BREAKER_CRASHES {
            return None;
        }
        if self
            .up_since
            .is_some_and(|t| now.saturating_duration_since(t) >= STAYS_UP)
        {
            self.times.clear();
            return None;
        }
        Some(self.times.len())
    }

    fn forget_before(&mut self, now: Instant) {
        while self
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > CRASH_WINDOW)
        {
            self.times.pop_front();
        }
    }
}

struct State {
    current: Option<Arc<Connection>>,
    crashes: Crashes,
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
                crashes: Crashes::default(),
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
                    self.crashed(&mut state, format!("crashed: {why}"));
                }
            }
        }
        let wait = state.crashes.wait(Instant::now());
        // A short backoff is waited out: a caller then meets the restarted plugin, not an
        // error.
        if wait > WAIT_OUT {
            return Err(Down::Unavailable(format!(
                "{}; starting it again in {:.1}s",
                state.last_failure.clone().unwrap_or_default(),
                wait.as_secs_f64()
            )));
        }
        tokio::time::sleep(wait).await;
        match self.start().await {
            Ok(connection) => {
                let connection = Arc::new(connection);
                state.current = Some(connection.clone());
                state.crashes.started(Instant::now());
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
        match state.crashes.breaker(Instant::now()) {
            None => Ok(()),
            Some(count) => Err(format!(
                "crashed {count} times in the last {} minutes; it gets no creates or destroys until it stays up for {}s (last: {})",
                CRASH_WINDOW.as_secs() / 60,
                STAYS_UP.as_secs(),
                state.last_failure.clone().unwrap_or_default()
            )),
        }
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
        state.crashes.crashed(Instant::now());
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
        // A config the plugin refuses at the handshake is the spec's to fix, not a crash.
        connection
            .initialize(&versions, &self.config, HANDSHAKE_DEADLINE)
            .await
            .map_err(|e| match e.code {
                Some(ErrorCode::InvalidSpec) => Down::Settings(e.message),
                _ => Down::Unavailable(e.message),
            })?;
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

    #[test]
    fn backoff_doubles_per_crash_up_to_a_minute() {
        let mut crashes = Crashes::default();
        let t = Instant::now();
        let waits: Vec<u64> = (0..9)
            .map(|n| {
                crashes
                    .crashed(t + Duration::from_secs(n))
                    .as_secs_f64()
                    .round() as u64
            })
            .collect();
        for (wait, base) in waits.iter().zip([1u64, 2, 4, 8, 16, 32, 60, 60, 60]) {
            let (low, high) = (
                (base as f64 * 0.8).floor() as u64,
                (base as f64 * 1.2).ceil() as u64,
            );
            assert!((low..=high).contains(wait), "{waits:?}");
        }
    }

    #[test]
    fn five_crashes_in_ten_minutes_open_the_breaker_until_it_stays_up() {
        let mut crashes = Crashes::default();
        let t = Instant::now();
        for n in 0..4 {
            crashes.crashed(t + Duration::from_secs(n * 60));
        }
        assert_eq!(crashes.breaker(t + Duration::from_secs(240)), None);
        crashes.crashed(t + Duration::from_secs(240));
        assert_eq!(crashes.breaker(t + Duration::from_secs(241)), Some(5));
        // Up, but not for long enough yet.
        crashes.started(t + Duration::from_secs(300));
        assert_eq!(crashes.breaker(t + Duration::from_secs(330)), Some(5));
        // Stayed up: closed, and the count starts again.
        assert_eq!(crashes.breaker(t + Duration::from_secs(360)), None);
        crashes.crashed(t + Duration::from_secs(400));
        assert_eq!(crashes.breaker(t + Duration::from_secs(401)), None);
    }

    #[test]
    fn crashes_older_than_the_window_are_forgotten() {
        let mut crashes = Crashes::default();
        let t = Instant::now();
        for n in 0..4 {
            crashes.crashed(t + Duration::from_secs(n));
        }
        crashes.crashed(t + Duration::from_secs(700));
        assert_eq!(crashes.breaker(t + Duration::from_secs(701)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_plugin_that_will_not_start_is_retried_after_a_backoff_not_in_a_loop() {
        let dir = std::env::temp_dir();
        let launch = Launch::new("never", vec!["false".to_owned()], dir);
        let quiet: LogSink = Arc::new(|_: &str, _: &str| {});
        let supervisor = Supervisor::new(launch, serde_json::json!({}), quiet);
        // Each call starts it once; a backoff of up to five seconds is waited out first.
        for _ in 0..4 {
            assert!(matches!(
                supervisor.connection().await,
                Err(Down::Unavailable(_))
            ));
        }
        // The fifth backoff (about 8s) is too long to wait: refused without a start.
        let Err(Down::Unavailable(why)) = supervisor.connection().await else {
            panic!("it started");
        };
        assert!(why.contains("starting it again in"), "{why}");
        assert!(supervisor.may_act().await.is_ok());
        tokio::time::advance(Duration::from_secs(13)).await;
        assert!(supervisor.connection().await.is_err());
        let refused = supervisor.may_act().await.unwrap_err();
        assert!(
            refused.starts_with("crashed 5 times in the last 10 minutes"),
            "{refused}"
        );
    }
}
