//! The TCP side of a balancer: accept, pick an instance, copy both ways.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::pool::Pool;

/// How long a connection waits for an instance when none is in rotation.
const WAIT_FOR_INSTANCE: Duration = Duration::from_secs(2);

/// How long connecting to one instance may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects tried for one connection before it is given up.
const TRIES: usize = 6;

/// How long to wait, times the attempt, before trying again instances that all refused.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Listens on `address`, ready to be served from the balancer's runtime.
pub fn bind(address: &str) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Connections one balancer forwards at once; more wait in the listen queue, so a flood
/// cannot take the controller's file descriptors.
const MAX_CONNECTIONS: usize = 4096;

/// Accepts connections on `listener` forever, each forwarded to an instance of `pool`.
pub async fn serve(listener: std::net::TcpListener, pool: Arc<Pool>) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let inbound = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors or a connection reset before accept: wait a
                // moment rather than spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let pool = pool.clone();
        tokio::spawn(async move {
            forward(inbound, pool).await;
            drop(slot);
        });
    }
}

/// Forwards one connection. When an instance refuses, another is tried (or, with no other
/// in rotation, the same one again a moment later): the client has sent nothing that could
/// be lost, since nothing was read from it yet.
async fn forward(mut inbound: TcpStream, pool: Arc<Pool>) {
    let _ = inbound.set_nodelay(true);
    let mut tried = Vec::new();
    for attempt in 0..TRIES {
        // Wait for an instance to join only when none was tried yet: one that refused is
        // still in rotation, so waiting for a change would only cost the client time.
        let wait = if tried.is_empty() {
            WAIT_FOR_INSTANCE
        } else {
            Duration::ZERO
        };
        let picked = match pool.pick(&tried, wait).await {
            Some(p) => p,
            None if !tried.is_empty() => {
                // Every instance in rotation refused once: try them again a moment later.
                tried.clear();
                tokio::time::sleep(RETRY_PAUSE * attempt as u32).await;
                continue;
            }
            None => return,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(picked.address)).await {
            Ok(Ok(mut outbound)) => {
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                drop(picked.guard);
                return;
            }
            _ => tried.push(picked.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Expose, Strategy};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An address where nothing listens: connecting there is refused.
    fn refusing() -> std::net::SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().unwrap_or_else(|e| panic!("{e}"))
    }

    /// An instance that answers "ok" on every connection.
    async fn answering() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let at = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"ok").await;
            }
        });
        at
    }

    /// An empty rotation and a balancer serving it; where the balancer listens.
    fn balancer() -> (Arc<Pool>, std::net::SocketAddr) {
        let pool = Arc::new(Pool::new(Expose {
            listen: "127.0.0.1:1".into(),
            target: None,
            strategy: Strategy::RoundRobin,
            drain_timeout: crate::spec::Duration::from_secs(1),
        }));
        let front = bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let at = front.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(serve(front, pool.clone()));
        (pool, at)
    }

    /// What a connection through the balancer gets back.
    async fn answer(mut c: TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
        got
    }

    async fn connect(at: std::net::SocketAddr) -> TcpStream {
        TcpStream::connect(at)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn a_refused_connect_is_tried_elsewhere_before_the_client_sees_it() {
        // One instance answers "ok", the other refuses every connection.
        let (pool, at) = balancer();
        pool.admit("refusing", refusing());
        pool.admit("answering", answering().await);
        for n in 0..10 {
            assert_eq!(answer(connect(at).await).await, b"ok", "connection {n}");
        }
    }

    #[tokio::test]
    async fn a_connection_waits_for_an_instance_to_join() {
        let (pool, at) = balancer();
        let c = connect(at).await;
        // Nothing in rotation yet; an instance joins well within the wait.
        tokio::time::sleep(Duration::from_millis(300)).await;
        pool.admit("late", answering().await);
        assert_eq!(answer(c).await, b"ok");
    }
}
