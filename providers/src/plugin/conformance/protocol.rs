//! The protocol checks: what any plugin must do on the pipe, whatever it makes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tend_plugin::methods;
use tend_plugin::ErrorCode;

use super::subjects::connect;
use super::{Outcome, Report};
use crate::plugin::conn::{CallError, Connection, Launch, Notice};
use crate::plugin::logs::LogSink;
use crate::plugin::supervise::{HANDSHAKE_DEADLINE, SHUTDOWN_GRACE};

const PART: &str = "protocol";
/// How long a plugin gets to write something it should not, or to exit.
const WATCH: Duration = Duration::from_millis(700);

/// Starts the plugin without a handshake; `notices` get what it says besides answers.
fn spawn(
    launch: &Launch,
    logs: &LogSink,
) -> Result<(Connection, tokio::sync::mpsc::UnboundedReceiver<Notice>), String> {
    let (notices, heard) = tokio::sync::mpsc::unbounded_channel();
    Connection::spawn(launch, logs.clone(), notices).map(|c| (c, heard))
}

/// Runs every protocol check on the plugin `launch` starts. `false` when it could not
/// even shake hands: the semantic checks then cannot run.
pub async fn protocol(
    launch: &Launch,
    config: &Value,
    logs: &LogSink,
    report: &mut Report,
) -> bool {
    // Without the cookie: says so and exits 1, stdout silent.
    let result = async {
        let mut bare = launch.clone();
        bare.cookie = false;
        let (plugin, _) = spawn(&bare, logs)?;
        let status = plugin.exit_status(Duration::from_secs(5)).await;
        let wrote = plugin.ended_why().filter(|w| w.contains("stdout before"));
        match (status, wrote) {
            (_, Some(why)) => Err(why),
            (Some(s), None) if s.code() == Some(1) => Ok(()),
            (Some(s), None) => Err(format!("it exited with {s}, not status 1")),
            (None, None) => {
                plugin.kill().await;
                Err("it did not exit within 5s".to_owned())
            }
        }
    }
    .await;
    report.check(
        PART,
        "without the magic cookie it exits 1 and writes nothing on stdout",
        result,
    );

    // Silent on stdout until spoken to.
    let result = async {
        let (plugin, _) = spawn(launch, logs)?;
        tokio::time::sleep(WATCH).await;
        let why = plugin.ended_why();
        plugin.kill().await;
        match why {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
    .await;
    report.check(PART, "nothing on stdout before the handshake", result);

    // A version it does not speak is refused with an error.
    let result = async {
        let (plugin, _) = spawn(launch, logs)?;
        let outcome = plugin.initialize(&[999], config, HANDSHAKE_DEADLINE).await;
        plugin.kill().await;
        match outcome {
            Err(e) if e.code.is_some() => Ok(()),
            Err(e) if e.message.contains("chose protocol version") => Err(e.message),
            Err(e) => Err(format!("it did not answer with an error: {e}")),
            Ok(info) => Err(format!(
                "offered only version 999, it chose {}",
                info.protocol_version
            )),
        }
    }
    .await;
    report.check(
        PART,
        "refuses a protocol version it does not speak, with an error",
        result,
    );

    let plugin = match connect(launch, config, logs).await {
        Ok(plugin) => {
            report.record(PART, "shakes hands on version 1", Outcome::Passed);
            plugin
        }
        Err(why) => {
            report.check(PART, "shakes hands on version 1", Err(why));
            return false;
        }
    };

    report.check(PART, "answers $/ping", ping(&plugin, json!({})).await);

    let result = match plugin
        .call("tend.no_such_method", json!({}), HANDSHAKE_DEADLINE)
        .await
    {
        Err(CallError::Rpc(e)) if e.code == ErrorCode::MethodNotFound => Ok(()),
        Err(e) => Err(format!("it answered {e}, not MethodNotFound (-32601)")),
        Ok(v) => Err(format!("it answered {v}")),
    };
    report.check(PART, "an unknown method answers MethodNotFound", result);

    report.check(
        PART,
        "a line that is not JSON answers ParseError, and it goes on",
        malformed(launch, logs).await,
    );

    // Many requests at once: each answered once, matched by id.
    let result = async {
        let mut calls = Vec::new();
        for n in 0..16 {
            let plugin = plugin.clone();
            calls.push(tokio::spawn(async move {
                let params = match n % 2 {
                    0 => json!({"n": n}),
                    _ => json!({"tags": {"tend.project": format!("conformance-{n}")}}),
                };
                let method = if n % 2 == 0 {
                    methods::PING
                } else {
                    methods::DESCRIBE
                };
                plugin.call(method, params, HANDSHAKE_DEADLINE).await
            }));
        }
        for (n, call) in calls.into_iter().enumerate() {
            let answer = call
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            if n % 2 == 1 && answer.get("instances").and_then(Value::as_array).is_none() {
                return Err(format!("request {n}, a describe, got {answer}"));
            }
        }
        Ok(())
    }
    .await;
    report.check(
        PART,
        "answers requests sent at once, each by its id",
        result,
    );

    let big = "x".repeat(8 * 1024 * 1024);
    report.check(
        PART,
        "takes a message of 8 MiB",
        ping(&plugin, json!({"padding": big})).await,
    );

    // Shutdown: answers, exits 0 after `exit`.
    let result = match plugin.shut_down(SHUTDOWN_GRACE).await {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!("it exited with {status}")),
        None => Err("it did not exit after shutdown and exit: it had to be signalled".to_owned()),
    };
    report.check(PART, "after shutdown and exit it exits 0", result);

    // Stdin closing means exit.
    let result = async {
        let plugin = connect(launch, config, logs).await?;
        plugin.send_raw(Vec::new());
        match plugin.exit_status(SHUTDOWN_GRACE).await {
            Some(_) => Ok(()),
            None => {
                plugin.kill().await;
                Err(format!(
                    "it did not exit within {SHUTDOWN_GRACE:?} of its stdin closing"
                ))
            }
        }
    }
    .await;
    report.check(PART, "exits when its stdin closes", result);
    true
}

async fn ping(plugin: &Arc<Connection>, params: Value) -> Result<(), String> {
    plugin
        .call(methods::PING, params, HANDSHAKE_DEADLINE)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Sends a line that is not JSON: the plugin must answer ParseError with a null id and
/// still answer what comes next.
async fn malformed(launch: &Launch, logs: &LogSink) -> Result<(), String> {
    let (plugin, mut heard) = spawn(launch, logs)?;
    let plugin = Arc::new(plugin);
    plugin
        .initialize(&launch.versions, &json!({}), HANDSHAKE_DEADLINE)
        .await?;
    plugin.send_raw(b"{this is not json\n".to_vec());
    let answer = tokio::time::timeout(HANDSHAKE_DEADLINE, async {
        loop {
            match heard.recv().await {
                Some(Notice::Changed) => continue,
                other => return other,
            }
        }
    })
    .await;
    let result = match answer {
        Ok(Some(Notice::Garbage(what))) if what.contains("code -32700") => {
            ping(&plugin, json!({})).await
        }
        Ok(Some(other)) => Err(format!("it answered {other:?}")),
        Ok(None) | Err(_) => Err(format!(
            "no ParseError answer within {HANDSHAKE_DEADLINE:?}{}",
            plugin
                .ended_why()
                .map(|w| format!("; {w}"))
                .unwrap_or_default()
        )),
    };
    plugin.kill().await;
    result
}
