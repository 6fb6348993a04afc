//! The controller's HTTP endpoint, on hyper and axum: the dashboard at `/`, `/healthz`,
//! `/status` (`?brief` for counts only, `?group=NAME` for one group), `/metrics`, and
//! `/events`: recent events as NDJSON, `?follow` to keep streaming them, and Server-Sent
//! Events to a client that accepts `text/event-stream` (resuming after `Last-Event-ID`).
//! An idle stream says something every 15 s (an empty line, an SSE comment); an SSE
//! stream ends after 5 minutes, and the browser reconnects where it was.
//!
//! It is bounded: at most [`MAX_CONNECTIONS`] connections at once (or as told) (more are answered 503
//! at once), a request head must arrive within [`READ_TIMEOUT`] and fit in 16 KiB, a
//! client that stops reading is dropped after [`WRITE_TIMEOUT`], only `GET` is served,
//! and `/status` is the controller's last round, never an observe per request (but for
//! its balancers, whose open connections it counts as they are). Event streams count
//! apart, at most [`MAX_FOLLOWERS`], and end as soon as their client hangs up.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{self, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream, StreamExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};

use super::deadline::Deadline;
use super::journal::{Event, Journal};
use crate::status::Status;

/// Connections open at once, unless told otherwise (`tend run --max-connections`).
pub const MAX_CONNECTIONS: usize = 4096;
/// Event streams (`/events?follow` and Server-Sent Events) open at once.
pub const MAX_FOLLOWERS: usize = 64;
/// How long a client may take to send a request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may leave an answer unread before it is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The dashboard: one page, no build step, nothing fetched from elsewhere.
const DASHBOARD: &str = include_str!("dashboard.html");

/// What the endpoint reads.
#[derive(Clone)]
pub struct Endpoint {
    /// Events and metrics.
    pub journal: Arc<Journal>,
    /// The status of the controller's last round (shared, never copied whole for a brief
    /// or one group).
    pub status: Arc<Mutex<Option<Arc<Status>>>>,
    /// The balancers, whose rotations and open connections `/status` shows as they are now.
    pub balancers: crate::balancer::Balancers,
}

/// What a handler sees: the endpoint and the places left for event streams.
#[derive(Clone)]
struct Shared {
    endpoint: Arc<Endpoint>,
    followers: Arc<Semaphore>,
}

/// The routes.
fn router(endpoint: Arc<Endpoint>) -> Router {
    let shared = Shared {
        endpoint,
        followers: Arc::new(Semaphore::new(MAX_FOLLOWERS)),
    };
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/events", get(events))
        .fallback(not_found)
        .with_state(shared)
}

/// Serves until the task is dropped, at most `max_connections` connections at once; a
/// failed accept (out of file descriptors, say) is waited out, never the end of the
/// endpoint.
pub async fn serve(listener: TcpListener, endpoint: Arc<Endpoint>, max_connections: usize) {
    let app = router(endpoint);
    let places = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(e) => {
                tracing::debug!(target: "tend::http", "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            tokio::spawn(refuse(socket));
            continue;
        };
        tokio::spawn(connection(socket, app.clone(), place));
    }
}

/// Serves one connection while it holds `place`.
async fn connection(socket: tokio::net::TcpStream, app: Router, place: OwnedSemaphorePermit) {
    let _place = place;
    let io = TokioIo::new(Deadline::new(socket, WRITE_TIMEOUT));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_buf_size(16 * 1024);
    let _ = http
        .serve_connection(io, TowerToHyperService::new(app))
        .await;
}

/// Answers 503 to a connection beyond [`MAX_CONNECTIONS`], without reading it.
async fn refuse(mut socket: tokio::net::TcpStream) {
    let body = "too many connections\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        let _ = socket.write_all(answer.as_bytes()).await;
        let _ = socket.shutdown().await;
    })
    .await;
    // Its request is read and dropped for a moment before the socket closes: closed with
    // unread bytes, the kernel would reset it, and the client could lose the answer.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut unread = [0u8; 4096];
        let mut left: usize = 16 * 1024;
        while left > 0 {
            match socket.read(&mut unread).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DASHBOARD,
    )
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.endpoint.journal.prometheus(),
    )
}

/// What `/status` takes: `brief` (counts only) and `group` (one group in full).
#[derive(serde::Deserialize)]
struct StatusQuery {
    brief: Option<String>,
    group: Option<String>,
}

async fn status(State(shared): State<Shared>, query: Query<StatusQuery>) -> Response {
    let endpoint = &shared.endpoint;
    let shown = endpoint.status.lock().ok().and_then(|s| s.clone());
    let Some(status) = shown else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"error\": \"the first round has not finished yet\"}\n".to_owned(),
        );
    };
    if let Some(name) = &query.group {
        return match status.groups.iter().find(|g| &g.name == name) {
            Some(group) => json(StatusCode::OK, to_json(group)),
            None => json(
                StatusCode::NOT_FOUND,
                to_json(&serde_json::json!({ "error": format!("no group {name:?}") })),
            ),
        };
    }
    let mut shown = match query.brief {
        Some(_) => status.brief(),
        None => Status::clone(&status),
    };
    shown.balancers = endpoint.balancers.status();
    json(StatusCode::OK, to_json(&shown))
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

fn json(code: StatusCode, body: String) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// What `/events` takes: `follow` keeps an NDJSON stream open.
#[derive(serde::Deserialize)]
struct EventsQuery {
    follow: Option<String>,
}

async fn events(
    State(shared): State<Shared>,
    query: Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    let journal = &shared.endpoint.journal;
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if !sse && query.follow.is_none() {
        return (
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            journal.recent_ndjson(),
        )
            .into_response();
    }
    let Ok(place) = shared.followers.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many event streams\n").into_response();
    };
    // Subscribed before the recent events are read: none falls between the two.
    let live = journal.subscribe();
    // An id is `<journal>-<seq>`: one this journal gave resumes after it; any other (a
    // restarted controller's, another replica's) gets every recent event.
    let mark = journal.mark().to_owned();
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once('-'))
        .filter(|(of, _)| *of == mark)
        .and_then(|(_, seq)| seq.parse::<u64>().ok())
        .unwrap_or(0);
    let recent: Vec<Event> = journal
        .recent()
        .into_iter()
        .filter(|e| e.seq > after)
        .collect();
    if sse {
        // A browser's stream ends after a while and reconnects where it was: a tab left
        // open in the background never holds its place for good.
        let events = following(recent, live, place, Some(SSE_LIFETIME));
        let stream = events.map(move |e| {
            Ok::<_, Infallible>(match e {
                Some(e) => sse::Event::default()
                    .id(format!("{mark}-{}", e.seq))
                    .event("tend")
                    .data(serde_json::to_string(&e).unwrap_or_default()),
                None => sse::Event::default().comment(""),
            })
        });
        let mut answer = Sse::new(stream).into_response();
        answer
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return answer;
    }
    let events = following(recent, live, place, None);
    let lines = events.map(|e| {
        let line = match e {
            Some(e) => serde_json::to_string(&e).unwrap_or_default() + "\n",
            None => "\n".to_owned(),
        };
        Ok::<_, Infallible>(Bytes::from(line))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// How long a Server-Sent Events stream lasts before its client reconnects.
const SSE_LIFETIME: Duration = Duration::from_secs(300);

/// Waits until `deadline`; forever without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How often an idle event stream says something (an empty NDJSON line, an SSE comment):
/// a client that hung up without a word (an HTTP/1.0 one) is found out by the write.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// `recent` events, then each new one as it happens (`None`: a heartbeat), while `place`
/// is held; a stream that falls too far behind skips what it missed.
fn following(
    recent: Vec<Event>,
    live: broadcast::Receiver<Event>,
    place: OwnedSemaphorePermit,
    lifetime: Option<Duration>,
) -> impl Stream<Item = Option<Event>> + Send {
    let last = recent.last().map_or(0, |e| e.seq);
    let beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    let ends = lifetime.map(|l| tokio::time::Instant::now() + l);
    let state = (live, beat, place);
    let new = stream::unfold(state, move |(mut live, mut beat, place)| async move {
        loop {
            tokio::select! {
                _ = until(ends) => return None,
                event = live.recv() => match event {
                    Ok(e) if e.seq <= last => continue,
                    Ok(e) => return Some((Some(e), (live, beat, place))),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = beat.tick() => return Some((None, (live, beat, place))),
            }
        }
    });
    stream::iter(recent.into_iter().map(Some)).chain(new)
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        "not found: try /, /healthz, /status, /metrics or /events\n",
    )
}
