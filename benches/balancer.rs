//! The balancer of `tend run` against talking to an instance directly, in the same run.
//!
//! (a) One instance (this bench binary re-run as a tiny keep-alive HTTP server, so the
//!     server is not the bottleneck) behind `expose = balancer(...)`. The same client (16
//!     connections, each sending its next request when the last answer arrived) runs for
//!     5 s against the instance's own port, then 5 s against the balancer, three rounds
//!     alternating: requests per second and p99 latency of each, and the ratio. Once with
//!     keep-alive connections (the balancer only copies bytes), once with a new connection
//!     per request (the balancer also accepts, picks and connects). On a machine where the
//!     client, the balancer and a server that does no work share two cores, this is the
//!     balancer's CPU cost and nothing else. Then the same with `python3 -m http.server`
//!     (the examples' server), where requests do some work, as real ones do.
//! (b) 1,000 instances behind a balancer, idle for 30 s: the controller's CPU time, against
//!     the same 1,000 instances with no balancer.
//!
//! Run: `cargo bench --bench balancer`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engine::procfs;

mod common;

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";

/// The instance program: answers every request on every connection with `ANSWER`.
fn serve(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || answer_all(stream));
    }
}

fn answer_all(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 4096];
    let mut pending = Vec::new();
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            if stream.write_all(ANSWER).is_err() {
                return;
            }
        }
    }
}

/// One request on `stream`, waiting for the whole answer.
fn request(stream: &mut TcpStream, keep_alive: bool) -> bool {
    let head: &[u8] = if keep_alive {
        b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"
    } else {
        b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    };
    if stream.write_all(head).is_err() {
        return false;
    }
    let mut got = Vec::with_capacity(ANSWER.len());
    let mut buf = [0u8; 256];
    while got.len() < ANSWER.len() {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    true
}

struct Figures {
    rps: f64,
    p99: Duration,
    failed: usize,
}

/// 16 clients against `port` for `secs` seconds.
fn load(port: u16, keep_alive: bool, secs: u64) -> Figures {
    let until = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut failed = 0;
                let mut conn: Option<TcpStream> = None;
                while Instant::now() < until {
                    let started = Instant::now();
                    if conn.is_none() {
                        conn = TcpStream::connect(("127.0.0.1", port)).ok();
                        if let Some(c) = &conn {
                            let _ = c.set_nodelay(true);
                        }
                    }
                    let ok = conn.as_mut().is_some_and(|c| request(c, keep_alive));
                    if ok {
                        latencies.push(started.elapsed());
                    } else {
                        failed += 1;
                    }
                    if !ok || !keep_alive {
                        conn = None;
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    for w in workers {
        if let Ok((l, f)) = w.join() {
            all.extend(l);
            failed += f;
        }
    }
    all.sort();
    let p99 = all
        .get(((all.len() as f64) * 0.99) as usize)
        .copied()
        .unwrap_or_default();
    Figures {
        rps: all.len() as f64 / secs as f64,
        p99,
        failed,
    }
}

/// The mean throughput, the worst p99 and the failures of runs.
fn summary(runs: &[Figures]) -> Figures {
    Figures {
        rps: runs.iter().map(|f| f.rps).sum::<f64>() / runs.len().max(1) as f64,
        p99: runs.iter().map(|f| f.p99).max().unwrap_or_default(),
        failed: runs.iter().map(|f| f.failed).sum(),
    }
}

struct Project {
    dir: tempfile::TempDir,
    child: Child,
    listen: u16,
}

impl Project {
    fn run(spec: &str, listen: u16) -> Project {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("main.star"), spec).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_tend"))
            .args([
                "run",
                "--listen",
                &format!("127.0.0.1:{listen}"),
                "--parallelism",
                "50",
                "--ports",
                "25000-29999",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        Project { dir, child, listen }
    }

    fn status(&self) -> serde_json::Value {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.listen)) else {
            return serde_json::Value::Null;
        };
        let _ = s.write_all(b"GET /status HTTP/1.0\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str(body).unwrap_or_default()
    }

    /// Waits until `n` instances are in rotation (with a balancer) or live.
    fn wait_for(&self, n: usize, balanced: bool) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let s = self.status();
            let count = if balanced {
                s["balancers"][0]["in_rotation"]
                    .as_array()
                    .map_or(0, Vec::len)
            } else {
                s["groups"][0]["instances"].as_array().map_or(0, |is| {
                    is.iter().filter(|i| i["state"] == "running").count()
                })
            };
            if count >= n {
                return;
            }
            assert!(Instant::now() < deadline, "not up: {s}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(mut self) {
        common::stop_and_destroy(&mut self.child, self.dir.path());
    }
}

fn idle_share(p: &Project, secs: u64) -> f64 {
    let tick = |pid: u32| procfs::stat(pid).map(|s| s.cpu_ticks).unwrap_or(0);
    std::thread::sleep(Duration::from_secs(5));
    let (before, started) = (tick(p.child.id()), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let used = tick(p.child.id()) - before;
    used as f64 / procfs::ticks_per_second() as f64 / started.elapsed().as_secs_f64() * 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--serve") {
        let port = args
            .get(at + 1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("--serve PORT"));
        serve(port);
        return;
    }
    let me = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let me = me.display();
    let pid = std::process::id();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;

    // (a) Throughput and latency, through the balancer and direct.
    println!("balancer against direct, one instance, 16 clients, 3 x 5 s each, alternating");
    println!(
        "{:<56} {:>11} {:>8} {:>7}",
        "", "requests/s", "p99 ms", "failed"
    );
    let mut ratios = Vec::new();
    let trivial = format!(r#"["{me}", "--serve", "{{{{ instance.ports.http }}}}"]"#);
    let python =
        r#"["python3", "-m", "http.server", "{{ instance.ports.http }}", "--bind", "127.0.0.1"]"#
            .to_owned();
    let servers = [
        ("a server doing no work", trivial, vec![true, false]),
        ("python3 -m http.server", python, vec![false]),
    ];
    for (n, (server, command, modes)) in servers.into_iter().enumerate() {
        let lb = 19801 + 2 * n as u16;
        let spec = format!(
            r#"project(name = "bench-lb-{n}-{pid}")
group(
    name = "web",
    size = 1,
    provider = process(),
    flavor = flavor(command = {command}, ports = ["http"], health = tcp(port = "http")),
    expose = balancer(port = {lb}),
)
"#
        );
        let p = Project::run(&spec, lb + 1);
        p.wait_for(1, true);
        let direct_port = p.status()["groups"][0]["instances"][0]["ports"]["http"]
            .as_u64()
            .unwrap_or(0) as u16;
        for keep_alive in modes {
            let mode = if keep_alive {
                "keep-alive"
            } else {
                "a connection per request"
            };
            let (mut direct, mut through) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                direct.push(load(direct_port, keep_alive, 5));
                through.push(load(lb, keep_alive, 5));
            }
            let (d, t) = (summary(&direct), summary(&through));
            for (how, f) in [("direct", &d), ("balancer", &t)] {
                println!(
                    "{:<56} {:>11.0} {:>8.2} {:>7}",
                    format!("{how}, {server}, {mode}"),
                    f.rps,
                    ms(f.p99),
                    f.failed
                );
            }
            ratios.push((
                format!("{server}, {mode}"),
                t.rps / d.rps,
                ms(t.p99) - ms(d.p99),
            ));
        }
        p.stop();
    }
    for (what, ratio, extra) in &ratios {
        println!("{what}: balancer/direct throughput {ratio:.2}x, p99 {extra:+.2} ms");
    }
    println!("targets: throughput at least 0.8x, p99 within 1 ms more");

    // (b) Idle cost with 1,000 instances behind a balancer, and without one.
    let mut shares = Vec::new();
    for (n, expose) in [(0usize, true), (1, false)] {
        let expose = if expose {
            format!("expose = balancer(port = {}),", 19811 + n as u16)
        } else {
            String::new()
        };
        let spec = format!(
            r#"project(name = "bench-lb-idle-{n}-{pid}")
group(
    name = "work",
    size = 1000,
    provider = process(cgroups = False),
    flavor = flavor(command = ["sleep", "1000"], ports = ["http"]),
    {expose}
)
"#
        );
        let p = Project::run(&spec, 19821 + n as u16);
        p.wait_for(1000, n == 0);
        shares.push(idle_share(&p, 30));
        p.stop();
    }
    println!(
        "idle for 30 s with 1,000 instances: behind a balancer {:.2}% of one core, without {:.2}% ({:.2}x)",
        shares[0],
        shares[1],
        shares[0] / shares[1].max(0.001)
    );
}
