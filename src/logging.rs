//! Diagnostics through `tracing`: what the controller does, what plugins, Terraform and
//! Vagrant say, and tend's own notes, on stderr.
//!
//! `-q`/`-v` pick the level (warnings only; info, the default; debug; trace) for tend's
//! own targets, warnings for its libraries; `RUST_LOG` overrides both. `--log-format
//! json` writes one object per line: `time`, `level`, `project`, `group`, `slot`,
//! `instance`, `action`, `message`, and any other field. Text lines read as they always
//! have: `healed web/1: ...`, `plugin NAME: ...`, `terraform GROUP: ...`.

use std::fmt;
use std::io::Write;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The project the process works on, named in every JSON line once known.
static PROJECT: OnceLock<String> = OnceLock::new();

/// Names the project in the log lines from now on (the first name given stays).
pub fn set_project(name: &str) {
    let _ = PROJECT.set(name.to_owned());
}

/// Installs the subscriber; `verbose` and `quiet` count `-v` and `-q`.
pub fn init(verbose: u8, quiet: u8, format: LogFormat) {
    let level = match i16::from(verbose) - i16::from(quiet) {
        i16::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "warn,tend={level},engine={level},providers={level}"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .event_format(Lines {
            json: format == LogFormat::Json,
        })
        .with_writer(Stderr)
        .try_init();
}

/// Writes log lines to stderr, above the progress bars when some are drawn, and never
/// fails the program when stderr is closed.
struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::new())
    }
}

/// One log line, written whole when dropped.
struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        crate::progress::above_bars(|| crate::err!("{text}"));
    }
}

/// The fields of one event: its message and the rest, in order, numbers and booleans
/// kept as such.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(&'static str, serde_json::Value)>,
}

impl Fields {
    /// Takes field `name` as text, when it is there and not empty.
    fn take(&mut self, name: &str) -> Option<String> {
        let at = self.rest.iter().position(|(n, _)| *n == name)?;
        let text = match self.rest.remove(at).1 {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        Some(text).filter(|v| !v.is_empty())
    }

    fn put(&mut self, field: &Field, value: serde_json::Value) {
        self.rest.push((field.name(), value));
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.put(field, value.into());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.put(field, format!("{value:?}").into());
        }
    }
}

/// True for a field with nothing in it.
fn is_empty(value: &serde_json::Value) -> bool {
    value.as_str().is_some_and(str::is_empty)
}

/// The line format: text or JSON.
struct Lines {
    json: bool,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = *event.metadata().level();
        if self.json {
            writeln!(writer, "{}", json_line(level, fields))
        } else {
            writeln!(writer, "{}", text_line(level, fields))
        }
    }
}

/// `{"time": ..., "level": ..., "project": ..., "group": ..., "slot": ..., "instance": ...,
/// "action": ..., "message": ..., ...}`, in that order, empty fields left out.
fn json_line(level: Level, mut fields: Fields) -> String {
    let mut time = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut time));
    let mut line: Vec<(&str, serde_json::Value)> = vec![
        ("time", time.into()),
        ("level", level.as_str().to_lowercase().into()),
    ];
    if let Some(project) = PROJECT.get() {
        line.push(("project", project.clone().into()));
    }
    for name in ["group", "slot", "instance", "action"] {
        if let Some(value) = fields.take(name) {
            line.push((name, value.into()));
        }
    }
    line.push(("message", std::mem::take(&mut fields.message).into()));
    line.extend(fields.rest.into_iter().filter(|(_, v)| !is_empty(v)));
    let members: Vec<String> = line
        .into_iter()
        .map(|(name, value)| format!("{}:{value}", serde_json::Value::from(name)))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// `warning: failed web/1: ...`, `plugin NAME: ...`, `terraform GROUP: ...`, or the
/// message alone.
fn text_line(level: Level, mut fields: Fields) -> String {
    let group = fields.take("group");
    let slot = fields.take("slot");
    let action = fields.take("action");
    let head = if let Some(plugin) = fields.take("plugin") {
        Some(format!("plugin {plugin}"))
    } else if let Some(tool) = fields.take("tool") {
        Some(match group.clone().or_else(|| fields.take("instance")) {
            Some(who) => format!("{tool} {who}"),
            None => tool,
        })
    } else {
        let target = match (&group, &slot) {
            (Some(g), Some(s)) => Some(format!("{g}/{s}")),
            (Some(g), None) => Some(g.clone()),
            _ => None,
        };
        match (action, target) {
            (Some(a), Some(t)) => Some(format!("{a} {t}")),
            (Some(a), None) => Some(a),
            (None, Some(t)) => Some(t),
            (None, None) => None,
        }
    };
    let mut line = match level {
        Level::ERROR => "error: ".to_owned(),
        Level::WARN => "warning: ".to_owned(),
        _ => String::new(),
    };
    if let Some(head) = head {
        line.push_str(&head);
        line.push_str(": ");
    }
    // An instance the message already names is not said twice.
    if let Some(instance) = fields.take("instance") {
        if !fields.message.contains(&instance) {
            fields.rest.push(("instance", instance.into()));
        }
    }
    line.push_str(&fields.message);
    for (name, value) in fields.rest.iter().filter(|(_, v)| !is_empty(v)) {
        match value.as_str() {
            Some(text) => line.push_str(&format!(" {name}={text}")),
            None => line.push_str(&format!(" {name}={value}")),
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(message: &str, rest: &[(&'static str, &str)]) -> Fields {
        Fields {
            message: message.to_owned(),
            rest: rest.iter().map(|(n, v)| (*n, (*v).into())).collect(),
        }
    }

    #[test]
    fn text_lines_read_as_before() {
        let healed = fields(
            "instance is dead as p-1 in 3 ms",
            &[("group", "web"), ("slot", "1"), ("action", "healed")],
        );
        assert_eq!(
            text_line(Level::INFO, healed),
            "healed web/1: instance is dead as p-1 in 3 ms"
        );
        let plugin = fields("down: crashed", &[("plugin", "bad")]);
        assert_eq!(text_line(Level::INFO, plugin), "plugin bad: down: crashed");
        let tool = fields("Creating...", &[("tool", "terraform"), ("group", "work")]);
        assert_eq!(text_line(Level::INFO, tool), "terraform work: Creating...");
        let failed = fields(
            "exited",
            &[
                ("group", "web"),
                ("slot", "2"),
                ("action", "failed"),
                ("instance", "p-9"),
            ],
        );
        assert_eq!(
            text_line(Level::WARN, failed),
            "warning: failed web/2: exited instance=p-9"
        );
        let named = fields(
            "instance is dead as p-3 in 3 ms",
            &[
                ("group", "web"),
                ("slot", "3"),
                ("instance", "p-3"),
                ("action", "healed"),
            ],
        );
        assert_eq!(
            text_line(Level::INFO, named),
            "healed web/3: instance is dead as p-3 in 3 ms"
        );
    }

    #[test]
    fn json_lines_name_every_field() {
        set_project("shop");
        let line = json_line(
            Level::WARN,
            fields(
                "exited",
                &[
                    ("group", "web"),
                    ("slot", "2"),
                    ("action", "failed"),
                    ("slot_extra", ""),
                ],
            ),
        );
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(value["level"], "warn");
        assert_eq!(value["project"], "shop");
        assert_eq!(value["group"], "web");
        assert_eq!(value["slot"], "2");
        assert_eq!(value["action"], "failed");
        assert_eq!(value["message"], "exited");
        assert!(value["time"].as_str().is_some_and(|t| t.contains('T')));
        assert!(value.get("slot_extra").is_none());
        let keys: Vec<&str> = line
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .filter_map(|m| m.split(':').next())
            .map(|k| k.trim_matches('"'))
            .collect();
        assert_eq!(
            keys,
            ["time", "level", "project", "group", "slot", "action", "message"]
        );
    }
}
