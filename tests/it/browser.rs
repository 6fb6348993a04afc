//! A real, headless Chromium driven through WebDriver (Debian's `chromium` and
//! `chromium-driver`), for the dashboard's tests and its bench. `chromedriver` runs in a
//! process group of its own, ended by its id when the browser is dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

/// Flags that keep Chromium to itself on a closed machine.
const FLAGS: [&str; 10] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// A browser session and the driver behind it.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Option<Child>,
    _profile: tempfile::TempDir,
}

/// True when Chromium and its driver are installed; otherwise says why `test` cannot run
/// (which fails it in CI).
pub fn available(test: &str) -> bool {
    let found = |program: &str| {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let have = found("chromedriver") && found("chromium");
    if !have {
        crate::harness::skip(
            test,
            "no chromium and chromedriver (apt-get install chromium chromium-driver)",
        );
    }
    have
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium session.
    pub async fn open() -> Browser {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver: {e}"));
        let profile = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut args: Vec<String> = FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut capabilities = Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connected = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await;
            match connected {
                Ok(client) => break client,
                Err(e) if Instant::now() > deadline => panic!("no WebDriver session: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Browser {
            client,
            driver: Some(driver),
            _profile: profile,
        }
    }

    /// Runs `script` in the page; its `return` value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Waits up to 60 s for `script` to return true.
    pub async fn wait_until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.eval(script).await != serde_json::Value::Bool(true) {
            if Instant::now() > deadline {
                let page = self.eval("return document.body.innerText").await;
                panic!("timed out waiting for {what}; the page says:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends the session, then the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        end_group(&mut self.driver);
    }
}

/// Ends the driver's process group (the browser with it) and reaps the driver, once.
fn end_group(driver: &mut Option<Child>) {
    let Some(mut driver) = driver.take() else {
        return;
    };
    if let Ok(pgid) = i32::try_from(driver.id()) {
        // SAFETY: kill(2) on the process group this test started; no memory involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    let _ = driver.wait();
}

impl Drop for Browser {
    fn drop(&mut self) {
        end_group(&mut self.driver);
    }
}
