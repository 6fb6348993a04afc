//! A plugin's stderr: forwarded to tend's log under the plugin's name, at a bounded rate,
//! with its last lines kept for error messages.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tend_plugin::frame::read_line_async;
use tokio::io::BufReader;
use tokio::process::ChildStderr;

/// Where plugin log lines go: `(plugin name, line)`.
pub type LogSink = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The default sink: tend's log (target `tend::plugin`, field `plugin` = its name).
pub fn to_log() -> LogSink {
    Arc::new(|name: &str, line: &str| {
        tracing::info!(target: "tend::plugin", plugin = name, "{line}");
    })
}

/// How many of its last stderr lines a plugin's errors quote.
const TAIL_LINES: usize = 10;
/// The longest stderr line kept whole; longer ones are cut.
const LINE_LIMIT: usize = 8 * 1024;
/// Lines forwarded per second at most; the rest are counted and said once.
const LINES_PER_SECOND: u32 = 100;

/// The last lines a plugin wrote on stderr.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    fn push(&self, line: String) {
        if let Ok(mut lines) = self.0.lock() {
            if lines.len() == TAIL_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }

    /// The lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// A line as it is shown: a JSON log line (`{"level": ..., "msg": ...}`) as `level: msg`,
/// text as it is.
fn shown(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches('\r');
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(text) {
        let field = |k: &str| map.get(k).and_then(|v| v.as_str());
        if let Some(message) = field("msg").or_else(|| field("message")) {
            return match field("level") {
                Some(level) => format!("{level}: {message}"),
                None => message.to_owned(),
            };
        }
    }
    text.to_owned()
}

/// Reads the plugin's stderr to its end, always (a plugin never blocks on a full pipe):
/// every line into the tail, and to `sink` at most `LINES_PER_SECOND` a second.
pub async fn forward(name: String, stderr: ChildStderr, tail: StderrTail, sink: LogSink) {
    let mut reader = BufReader::new(stderr);
    let mut window = Instant::now();
    let (mut sent, mut dropped) = (0u32, 0u64);
    loop {
        let line = match read_line_async(&mut reader, LINE_LIMIT).await {
            Ok(Some(line)) => shown(&line),
            Ok(None) | Err(tend_plugin::FrameError::Io(_)) => break,
            Err(_) => format!("(a line of over {LINE_LIMIT} bytes, left out)"),
        };
        tail.push(line.clone());
        if window.elapsed() >= Duration::from_secs(1) {
            if dropped > 0 {
                sink(&name, &format!("({dropped} more stderr lines left out)"));
            }
            window = Instant::now();
            sent = 0;
            dropped = 0;
        }
        if sent < LINES_PER_SECOND {
            sent += 1;
            sink(&name, &line);
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        sink(&name, &format!("({dropped} more stderr lines left out)"));
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn json_log_lines_read_as_level_and_message() {
        assert_eq!(
            shown(br#"{"level":"warn","msg":"disk slow"}"#),
            "warn: disk slow"
        );
        assert_eq!(shown(br#"{"message":"hi"}"#), "hi");
        assert_eq!(shown(b"plain text\r"), "plain text");
        assert_eq!(shown(br#"{"other":1}"#), r#"{"other":1}"#);
    }
}
