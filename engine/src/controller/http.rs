//! The controller's HTTP endpoint: `/healthz`, `/status`, `/metrics`, `/events` (recent
//! events as NDJSON; `/events?follow` keeps the connection open and streams new ones).
//!
//! It is bounded: at most [`MAX_CONNECTIONS`] requests at once (more are answered 503 at
//! once), a request head must arrive within [`READ_TIMEOUT`] and fit in 16 KiB, only `GET`
//! is served, and `/status` is the controller's last round, never an observe per request
//! (but for its balancers, whose open connections it counts as they are).
//! Streams of `/events?follow` count apart, at most [`MAX_FOLLOWERS`], so they never keep
//! `/healthz` from answering, and a stream ends as soon as its client hangs up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::journal::Journal;
use crate::status::Status;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// `/events?follow` streams open at once.
pub const MAX_FOLLOWERS: usize = 16;
/// How long a client may take to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one answer may take to write (a stream's each line).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint reads.
#[derive(Clone)]
pub struct Endpoint {
    /// Events and metrics.
    pub journal: Arc<Journal>,
    /// The status of the controller's last round.
    pub status: Arc<Mutex<Option<Status>>>,
    /// The balancers, whose rotations and open connections `/status` shows as they are now.
    pub balancers: crate::balancer::Balancers,
}

/// Serves until the listener fails.
pub async fn serve(listener: TcpListener, endpoint: Arc<Endpoint>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let followers = Arc::new(Semaphore::new(MAX_FOLLOWERS));
    while let Ok((mut socket, _)) = listener.accept().await {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    WRITE_TIMEOUT,
                    reply(&mut socket, 503, "text/plain", "too many connections\n"),
                )
                .await;
            });
            continue;
        };
        let endpoint = endpoint.clone();
        let followers = followers.clone();
        tokio::spawn(async move {
            let _ = answer(socket, &endpoint, permit, &followers).await;
        });
    }
}

/// Reads a request head, up to 16 KiB and [`READ_TIMEOUT`].
async fn read_head(socket: &mut TcpStream) -> std::io::Result<Option<String>> {
    let read = async {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head).into_owned())
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(head) => head.map(Some),
        Err(_) => Ok(None),
    }
}

/// Answers one request; `permit` is its place among the requests served at once, given
/// back when a stream starts (streams count among `followers` instead).
async fn answer(
    mut socket: TcpStream,
    endpoint: &Endpoint,
    permit: OwnedSemaphorePermit,
    followers: &Arc<Semaphore>,
) -> std::io::Result<()> {
    let Some(request) = read_head(&mut socket).await? else {
        return reply(&mut socket, 408, "text/plain", "request timeout\n").await;
    };
    let mut words = request.split_whitespace();
    let method = words.next().unwrap_or("");
    let target = words.next().unwrap_or("/");
    if method != "GET" {
        return reply(&mut socket, 405, "text/plain", "only GET is served\n").await;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/healthz" => reply(&mut socket, 200, "text/plain", "ok\n").await,
        "/metrics" => {
            let text = endpoint.journal.prometheus();
            reply(&mut socket, 200, "text/plain; version=0.0.4", &text).await
        }
        "/status" => {
            let status = endpoint.status.lock().ok().and_then(|s| s.clone());
            match status {
                Some(mut status) => {
                    status.balancers = endpoint.balancers.status();
                    let text = serde_json::to_string_pretty(&status).unwrap_or_default();
                    reply(&mut socket, 200, "application/json", &text).await
                }
                None => {
                    let text = "{\"error\": \"the first round has not finished yet\"}\n";
                    reply(&mut socket, 503, "application/json", text).await
                }
            }
        }
        "/events"
            if query
                .split('&')
                .any(|q| q == "follow" || q.starts_with("follow=")) =>
        {
            let Ok(_stream) = followers.clone().try_acquire_owned() else {
                return reply(&mut socket, 503, "text/plain", "too many event streams\n").await;
            };
            drop(permit);
            follow(socket, endpoint).await
        }
        "/events" => {
            let text = endpoint.journal.recent_ndjson();
            reply(&mut socket, 200, "application/x-ndjson", &text).await
        }
        _ => {
            reply(
                &mut socket,
                404,
                "text/plain",
                "not found: try /healthz, /status, /metrics or /events\n",
            )
            .await
        }
    }
}

/// Streams events until the client hangs up (or stops reading) or the journal ends.
async fn follow(mut socket: TcpStream, endpoint: &Endpoint) -> std::io::Result<()> {
    let mut live = endpoint.journal.subscribe();
    let header =
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n";
    write_within(&mut socket, header.as_bytes()).await?;
    write_within(&mut socket, endpoint.journal.recent_ndjson().as_bytes()).await?;
    let mut ignored = [0u8; 256];
    loop {
        tokio::select! {
            event = live.recv() => match event {
                Ok(line) => write_within(&mut socket, format!("{line}\n").as_bytes()).await?,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return Ok(()),
            },
            // A client sends nothing more: end of stream or an error means it is gone.
            read = socket.read(&mut ignored) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => continue,
            },
        }
    }
}

/// Writes `bytes`, giving up on a client that does not read within [`WRITE_TIMEOUT`].
async fn write_within(socket: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, socket.write_all(bytes)).await {
        Ok(done) => done,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client does not read",
        )),
    }
}

async fn reply(socket: &mut TcpStream, code: u16, kind: &str, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    write_within(socket, head.as_bytes()).await?;
    write_within(socket, body.as_bytes()).await?;
    socket.shutdown().await
}
