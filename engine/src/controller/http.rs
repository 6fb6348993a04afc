//! The controller's HTTP endpoint: `/healthz`, `/status`, `/metrics`, `/events` (recent
//! events as NDJSON; `/events?follow` keeps the connection open and streams new ones).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::journal::Journal;
use super::report::Report;
use crate::exec::SecretSource;
use crate::provider::{observe, ProviderSet};
use crate::spec::Spec;
use crate::store::Store;

/// What the endpoint reads.
pub struct Endpoint {
    /// Events and metrics.
    pub journal: Arc<Journal>,
    /// The spec being kept.
    pub spec: Arc<Mutex<Spec>>,
    /// The controller's latest report.
    pub report: Arc<Mutex<Option<Report>>>,
    /// The providers, to observe for `/status`.
    pub providers: ProviderSet,
    /// The store, for the applied serial.
    pub store: Store,
    /// Secrets, to render health probes.
    pub secret: SecretSource,
}

/// Serves until the listener fails.
pub async fn serve(listener: TcpListener, endpoint: Arc<Endpoint>) {
    while let Ok((socket, _)) = listener.accept().await {
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let _ = answer(socket, &endpoint).await;
        });
    }
}

async fn answer(mut socket: TcpStream, endpoint: &Endpoint) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&head);
    let target = request.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/healthz" => reply(&mut socket, 200, "text/plain", "ok\n").await,
        "/metrics" => {
            let text = endpoint.journal.prometheus();
            reply(&mut socket, 200, "text/plain; version=0.0.4", &text).await
        }
        "/status" => {
            let text = status_json(endpoint).await;
            reply(&mut socket, 200, "application/json", &text).await
        }
        "/events"
            if query
                .split('&')
                .any(|q| q == "follow" || q.starts_with("follow=")) =>
        {
            let mut live = endpoint.journal.subscribe();
            let header = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n";
            socket.write_all(header.as_bytes()).await?;
            socket
                .write_all(endpoint.journal.recent_ndjson().as_bytes())
                .await?;
            loop {
                match live.recv().await {
                    Ok(line) => socket.write_all(format!("{line}\n").as_bytes()).await?,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return Ok(()),
                }
            }
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

async fn status_json(endpoint: &Endpoint) -> String {
    let spec = match endpoint.spec.lock() {
        Ok(spec) => spec.clone(),
        Err(_) => return "{}".to_owned(),
    };
    let applied = endpoint.store.last_applied().ok().flatten();
    match observe(&spec, &endpoint.providers).await {
        Ok(observed) => {
            let mut status =
                crate::status::build(&spec, &observed, applied.as_ref(), &endpoint.secret).await;
            if let Some(report) = endpoint.report.lock().ok().and_then(|r| r.clone()) {
                report.annotate(&mut status);
            }
            serde_json::to_string_pretty(&status).unwrap_or_default()
        }
        Err(e) => serde_json::json!({ "error": e.to_string() }).to_string(),
    }
}

async fn reply(socket: &mut TcpStream, code: u16, kind: &str, body: &str) -> std::io::Result<()> {
    let reason = if code == 200 { "OK" } else { "Not Found" };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body.as_bytes()).await?;
    socket.shutdown().await
}
