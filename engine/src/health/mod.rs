//! Health probes (`http`, `tcp`, `exec`) and waiting for an instance to turn healthy.
//!
//! Probes go to addresses on 127.0.0.1 as rendered from the flavor; nothing here reads a
//! spec or a template.

use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::spec::Health;

/// A probe with its templates rendered for one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenderedProbe {
    /// GET `path` on `address` (`host:port`); 2xx or 3xx is healthy.
    Http {
        /// `host:port`
        address: String,
        /// The request path.
        path: String,
    },
    /// A TCP connection to `address` must be accepted.
    Tcp {
        /// `host:port`
        address: String,
    },
    /// `command` must exit 0.
    Exec {
        /// Program and arguments.
        command: Vec<String>,
    },
}

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting or talking failed.
    #[error("{0}")]
    Io(String),
    /// The HTTP answer was not 2xx or 3xx.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The command exited with a failure.
    #[error("command exited with {0}")]
    Exit(String),
    /// The probe passed, but at an address another instance has too: it cannot tell which
    /// one answered.
    #[error("{0}")]
    Ambiguous(String),
}

/// Runs one probe with a timeout.
pub async fn probe(p: &RenderedProbe, timeout: Duration) -> Result<(), ProbeError> {
    match tokio::time::timeout(timeout, probe_once(p)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Timeout(timeout)),
    }
}

async fn probe_once(p: &RenderedProbe) -> Result<(), ProbeError> {
    let io = |e: std::io::Error| ProbeError::Io(e.to_string());
    match p {
        RenderedProbe::Tcp { address } => {
            tokio::net::TcpStream::connect(address).await.map_err(io)?;
            Ok(())
        }
        RenderedProbe::Http { address, path } => {
            let mut stream = tokio::net::TcpStream::connect(address).await.map_err(io)?;
            let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\nUser-Agent: tend\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.map_err(io)?;
            let mut head = Vec::with_capacity(256);
            let mut buf = [0u8; 256];
            while !head.contains(&b'\n') && head.len() < 4096 {
                let n = stream.read(&mut buf).await.map_err(io)?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let line = String::from_utf8_lossy(&head);
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    ProbeError::Io(format!(
                        "not an HTTP answer: {:?}",
                        line.lines().next().unwrap_or("")
                    ))
                })?;
            if (200..400).contains(&status) {
                Ok(())
            } else {
                Err(ProbeError::Status(status))
            }
        }
        RenderedProbe::Exec { command } => {
            let Some((program, args)) = command.split_first() else {
                return Err(ProbeError::Exit("empty command".into()));
            };
            let status = tokio::process::Command::new(program)
                .args(args)
                .env_clear()
                .envs(std::env::var("PATH").ok().map(|p| ("PATH", p)))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(io)?;
            if status.success() {
                Ok(())
            } else {
                Err(ProbeError::Exit(status.to_string()))
            }
        }
    }
}

/// Why an instance did not turn healthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotHealthy {
    /// It failed `failures` probes in a row after its grace period.
    #[error("failed {count} health checks in a row: {last}")]
    Failing {
        /// How many.
        count: u32,
        /// The last failure.
        last: ProbeError,
    },
    /// It was not healthy before the deadline.
    #[error("not healthy within {waited:?} (last check: {last})")]
    Deadline {
        /// How long was waited.
        waited: Duration,
        /// The last failure.
        last: String,
    },
    /// It stopped running while being waited for.
    #[error("exited while starting")]
    Exited,
    /// Its probe cannot tell it from another instance: waiting longer would not help.
    #[error("cannot be judged: {0}")]
    Ambiguous(String),
}

/// Waits until `check` passes, judged by `health`: failures inside the grace period do not
/// count; `failures` consecutive failures after it, `deadline`, or `alive` turning false
/// end the wait. Instants are tokio's, so the wait runs on virtual time in simulations.
pub async fn wait_healthy<F, Fut, A, AFut>(
    health: &Health,
    started: Instant,
    deadline: Instant,
    mut check: F,
    mut alive: A,
) -> Result<(), NotHealthy>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ProbeError>>,
    A: FnMut() -> AFut,
    AFut: std::future::Future<Output = bool>,
{
    let interval = health.interval.to_std().max(Duration::from_millis(50));
    // Until the first success, probe often: a fresh instance is usually ready fast.
    let fast = Duration::from_millis(50).min(interval);
    let mut consecutive = 0u32;
    let mut last;
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(ProbeError::Ambiguous(why)) => return Err(NotHealthy::Ambiguous(why)),
            Err(e) => {
                last = e.to_string();
                if started.elapsed() >= health.grace_period.to_std() {
                    consecutive += 1;
                    if consecutive >= health.failures {
                        return Err(NotHealthy::Failing {
                            count: consecutive,
                            last: e,
                        });
                    }
                }
            }
        }
        if !alive().await {
            return Err(NotHealthy::Exited);
        }
        if Instant::now() >= deadline {
            return Err(NotHealthy::Deadline {
                waited: started.elapsed(),
                last,
            });
        }
        let pause = if started.elapsed() < health.grace_period.to_std() {
            fast
        } else {
            interval
        };
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Duration as SpecDuration, PortValue, Probe};

    fn health(grace_ms: u64, failures: u32) -> Health {
        Health {
            probe: Probe::Tcp {
                port: PortValue::Number(1),
            },
            grace_period: SpecDuration::from_millis(grace_ms),
            interval: SpecDuration::from_millis(50),
            timeout: SpecDuration::from_millis(100),
            failures,
        }
    }

    #[tokio::test]
    async fn tcp_and_http_probes_against_a_real_listener() {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tokio::spawn(async move {
            let mut served = 0;
            while let Ok((mut socket, _)) = listener.accept().await {
                served += 1;
                let mut buf = [0u8; 512];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let answer = if request.starts_with("GET /ok ") {
                    "HTTP/1.0 200 OK\r\n\r\nok"
                } else {
                    "HTTP/1.0 503 Service Unavailable\r\n\r\n"
                };
                let _ = socket.write_all(answer.as_bytes()).await;
                if served > 10 {
                    break;
                }
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(
            probe(
                &RenderedProbe::Tcp {
                    address: address.clone()
                },
                t
            )
            .await,
            Ok(())
        );
        let ok = RenderedProbe::Http {
            address: address.clone(),
            path: "/ok".into(),
        };
        assert_eq!(probe(&ok, t).await, Ok(()));
        let sick = RenderedProbe::Http {
            address,
            path: "/sick".into(),
        };
        assert_eq!(probe(&sick, t).await, Err(ProbeError::Status(503)));
        let closed = RenderedProbe::Tcp {
            address: "127.0.0.1:1".into(),
        };
        assert!(matches!(probe(&closed, t).await, Err(ProbeError::Io(_))));
    }

    #[tokio::test]
    async fn exec_probe_uses_the_exit_status() {
        let t = Duration::from_secs(5);
        let yes = RenderedProbe::Exec {
            command: vec!["true".into()],
        };
        let no = RenderedProbe::Exec {
            command: vec!["false".into()],
        };
        assert_eq!(probe(&yes, t).await, Ok(()));
        assert!(matches!(probe(&no, t).await, Err(ProbeError::Exit(_))));
    }

    #[tokio::test]
    async fn failures_count_only_after_the_grace_period() {
        let start = Instant::now();
        let far = start + Duration::from_secs(10);
        let always_fail = || async { Err::<(), _>(ProbeError::Io("refused".into())) };
        let alive = || async { true };
        let result = wait_healthy(&health(300, 2), start, far, always_fail, alive).await;
        assert!(matches!(result, Err(NotHealthy::Failing { count: 2, .. })));
        assert!(
            start.elapsed() >= Duration::from_millis(300),
            "judged inside the grace period"
        );

        let mut calls = 0;
        let third_time = || {
            calls += 1;
            let ok = calls >= 3;
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(ProbeError::Io("not yet".into()))
                }
            }
        };
        assert_eq!(
            wait_healthy(&health(0, 5), Instant::now(), far, third_time, alive).await,
            Ok(())
        );

        let dead = || async { false };
        let result = wait_healthy(&health(1000, 3), Instant::now(), far, always_fail, dead).await;
        assert_eq!(result, Err(NotHealthy::Exited));
    }
}
