//! The dashboard and endpoint of `tend run`, measured with the real binary and a real
//! headless Chromium (Debian's `chromium` and `chromium-driver`).
//!
//! (a) Page load with 10,010 instances (a `sim()` group of 10,000 and a process group of
//!     10): from navigation to every group's counts shown and the small group's grid
//!     drawn, median of 5 loads; and the time to open the 10,000-slot group's grid.
//! (b) From an instance's death to its slot turning dead in the page: SIGKILL each of the
//!     10 instances of a process group once, a second apart, all up for over 15 s (younger
//!     deaths count as a crash loop); the page records when the cell changed (`Date.now()`,
//!     the same clock as the bench's). Median and worst.
//! (c) `/healthz` while 1,000 idle connections and a client sending one byte a second are
//!     open: 50 requests, median and worst.
//!
//! Run: `cargo bench --bench dashboard`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

#[path = "../tests/it/browser.rs"]
#[allow(dead_code)]
mod browser;

/// What `browser` asks of the test harness.
mod harness {
    /// Chromium is needed here: say so and stop.
    pub fn skip(test: &str, why: &str) {
        panic!("{test}: {why}");
    }
}

const PORT: u16 = 19481;

fn spec() -> String {
    r#"group(name = "fleet", size = 10000, provider = sim(), flavor = flavor(command = ["x"]))
group(name = "web", size = 10, provider = process(), flavor = flavor(command = ["sleep", "100000"]))
"#
    .to_owned()
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or_default()
}

fn get(path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", PORT)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

fn wait(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of the process instance in slot `slot` of `web`.
fn victim(dir: &std::path::Path, slot: &str) -> Option<u32> {
    let status = Command::new(env!("CARGO_BIN_EXE_tend"))
        .args(["status", "--json"])
        .current_dir(dir)
        .output()
        .ok()?;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).ok()?;
    let web = status["groups"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == "web")?;
    let id = web["instances"]
        .as_array()?
        .iter()
        .find(|i| i["slot"] == slot && i["state"] == "running")?["id"]
        .as_str()?
        .to_owned();
    id.split('-').next()?.parse().ok()
}

/// A `tend run` stopped, and its project destroyed, when dropped (a failed bench too).
struct Stopped(Child, std::path::PathBuf);

impl Drop for Stopped {
    fn drop(&mut self) {
        common::stop_and_destroy(&mut self.0, &self.1);
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

fn worst(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(0.0, f64::max)
}

fn main() {
    if !browser::available("dashboard bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("main.star"), spec()).unwrap_or_else(|e| panic!("{e}"));
    let tend = env!("CARGO_BIN_EXE_tend");
    let applied = Command::new(tend)
        .args(["apply", "--yes", "--parallelism", "200"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .status();
    assert!(applied.is_ok_and(|s| s.success()), "apply failed");
    let listen = format!("127.0.0.1:{PORT}");
    let run = Command::new(tend)
        .args(["run", "--listen", &listen, "--resync", "5s", "-q"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let run = Stopped(run, dir.path().to_path_buf());
    wait("the first round", || {
        get("/status?brief").is_some_and(|b| b.contains("\"healthy\": 10000"))
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let (loads, open, deaths) = rt.block_on(async {
        let browser = browser::Browser::open().await;
        let url = format!("http://{listen}/");
        let mut loads = Vec::new();
        for _ in 0..5 {
            let _ = browser.client.goto("about:blank").await;
            let started = Instant::now();
            let _ = browser.client.goto(&url).await;
            browser
                .wait_until(
                    "the groups' counts",
                    "const c = document.querySelector('#group-fleet .counts');
                     return !!c && c.textContent.includes('10000 healthy')
                       && document.querySelectorAll('#slots-web .cell.healthy').length === 10",
                )
                .await;
            loads.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let started = Instant::now();
        let _ = browser
            .eval("document.querySelector('#group-fleet h3 button').click(); return true")
            .await;
        browser
            .wait_until(
                "the open grid",
                "return document.querySelectorAll('#slots-fleet .cell').length === 10000",
            )
            .await;
        let open = started.elapsed().as_secs_f64() * 1000.0;
        let _ = browser
            .eval("document.querySelector('#group-fleet h3 button').click(); return true")
            .await;

        let mut deaths = Vec::new();
        tokio::time::sleep(Duration::from_secs(15)).await;
        for slot in 0..10 {
            let slot = slot.to_string();
            let pid = loop {
                if let Some(pid) = victim(dir.path(), &slot) {
                    break pid;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let watch = format!(
                "window.deadAt = null;
                 const seen = () => {{
                   const c = document.querySelector('#slots-web [data-slot=\"{slot}\"]');
                   if (c && c.dataset.state === 'dead' && !window.deadAt) window.deadAt = Date.now();
                 }};
                 if (window.deadWatch) window.deadWatch.disconnect();
                 window.deadWatch = new MutationObserver(seen);
                 window.deadWatch.observe(document.getElementById('groups'),
                   {{ subtree: true, childList: true, attributes: true }});
                 return true"
            );
            let _ = browser.eval(&watch).await;
            let killed = now_ms();
            // SAFETY: kill(2) on an instance this bench made; no memory involved.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            browser
                .wait_until("the slot dead", "return window.deadAt !== null")
                .await;
            let at = browser.eval("return window.deadAt").await;
            deaths.push(at.as_f64().unwrap_or_default() - killed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        browser.close().await;
        (loads, open, deaths)
    });

    // (c) /healthz beside a thousand idle connections and a slow client.
    let idle: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", PORT)).ok())
        .collect();
    let slow = std::thread::spawn(|| {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", PORT)) else {
            return 0;
        };
        let mut sent = 0;
        for byte in b"GET /healthz HTTP/1.0\r\n\r\n" {
            if s.write_all(&[*byte]).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
        sent
    });
    let mut healthz = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let answered = get("/healthz").is_some_and(|b| b == "ok\n");
        assert!(answered, "/healthz did not answer");
        healthz.push(started.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(40));
    }
    let open_idle = idle.len();
    drop(idle);
    let slow_sent = slow.join().unwrap_or_default();

    drop(run);
    println!("\ndashboard and endpoint of tend run (this machine, headless Chromium)\n");
    println!("| measure | median | worst | target |");
    println!("|---|---|---|---|");
    println!(
        "| page load, 10,010 instances (navigation to counts shown, 5 loads) | {:.0} ms | {:.0} ms | < 1 s |",
        median(loads.clone()),
        worst(&loads)
    );
    println!("| open the 10,000-slot grid | {open:.0} ms | - | - |");
    println!(
        "| instance death to its slot dead in the page (10 kills) | {:.0} ms | {:.0} ms | < 200 ms |",
        median(deaths.clone()),
        worst(&deaths)
    );
    println!(
        "| /healthz with {open_idle} idle connections and a 1 byte/s client (50 requests) | {:.1} ms | {:.1} ms | < 50 ms |",
        median(healthz.clone()),
        worst(&healthz)
    );
    println!(
        "\nthe slow client sent {slow_sent} bytes before the endpoint cut it off (read timeout 5 s)"
    );
}
