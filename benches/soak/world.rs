//! The project's instances as the OS and the Docker engine show them, never as tend
//! reports them: process instances from `/proc` (a session leader whose environment names
//! the project), containers from `docker ps`, health from a GET of each one's `/ok`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// How an instance is reached to inject a fault into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handle {
    /// A process instance: its session leader.
    Process(u32),
    /// A container: its id and name.
    Container { id: String, name: String },
}

/// One live instance.
#[derive(Clone, Debug)]
pub struct Instance {
    pub group: String,
    pub slot: String,
    /// `SOAK_VERSION` (processes) or the `soak.version` label (containers).
    pub version: String,
    /// Stopped (SIGSTOP) or paused: alive, but not answering.
    pub stopped: bool,
    /// Where its own `http` port is reached on 127.0.0.1, when it has one.
    pub port: Option<u16>,
    pub handle: Handle,
    /// Answered GET /ok with 200 (a group without a port: running and not stopped).
    pub healthy: bool,
}

/// One look at the project.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub instances: Vec<Instance>,
    /// False while the engine does not answer: its groups are not judged then.
    pub engine_up: bool,
}

impl World {
    /// The live instances of `group`.
    pub fn of<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.iter().filter(move |i| i.group == group)
    }
}

/// Looks at the project's processes and containers now.
pub fn look(project: &str) -> World {
    let mut instances = processes(project);
    let containers = containers(project);
    let engine_up = containers.is_some();
    instances.extend(containers.unwrap_or_default());
    for i in &mut instances {
        i.healthy = !i.stopped && i.port.is_none_or(answers_ok);
    }
    World {
        instances,
        engine_up,
    }
}

/// Session leaders whose environment has `TEND_PROJECT=<project>`; zombies are dead.
fn processes(project: &str) -> Vec<Instance> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((state, session)) = stat(pid) else {
            continue;
        };
        if session != pid || matches!(state, 'Z' | 'X') {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let env: Vec<(&str, &str)> = environ
            .split(|b| *b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok()?.split_once('='))
            .collect();
        let get = |key: &str| env.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        if get("TEND_PROJECT") != Some(project) {
            continue;
        }
        found.push(Instance {
            group: get("TEND_GROUP").unwrap_or_default().to_owned(),
            slot: get("TEND_SLOT").unwrap_or_default().to_owned(),
            version: get("SOAK_VERSION").unwrap_or_default().to_owned(),
            stopped: state == 'T',
            port: get("TEND_PORTS").and_then(http_port),
            handle: Handle::Process(pid),
            healthy: false,
        });
    }
    found
}

/// (state, session) from `/proc/<pid>/stat`.
pub fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(3)?.parse().ok()?,
    ))
}

/// The `http` port of a `tend.ports` value (`http=20001,...`).
fn http_port(ports: &str) -> Option<u16> {
    ports
        .split(',')
        .find_map(|p| p.strip_prefix("http="))
        .and_then(|p| p.parse().ok())
}

/// The project's live containers; `None` when the engine does not answer.
fn containers(project: &str) -> Option<Vec<Instance>> {
    let out = Command::new("docker")
        .args(["ps", "--no-trunc", "--filter"])
        .arg(format!("label=tend.project={project}"))
        .args([
            "--format",
            "{{.ID}}\t{{.Names}}\t{{.State}}\t{{.Label \"tend.group\"}}\t{{.Label \"tend.slot\"}}\t{{.Label \"soak.version\"}}\t{{.Ports}}",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                let state = *f.get(2)?;
                if !matches!(state, "running" | "paused" | "restarting") {
                    return None;
                }
                Some(Instance {
                    group: f.get(3)?.to_string(),
                    slot: f.get(4)?.to_string(),
                    version: f.get(5)?.to_string(),
                    stopped: state != "running",
                    port: f.get(6).and_then(|p| published(p)),
                    handle: Handle::Container {
                        id: f.first()?.to_string(),
                        name: f.get(1)?.to_string(),
                    },
                    healthy: false,
                })
            })
            .collect(),
    )
}

/// The host port of `127.0.0.1:32772->20937/tcp` (an instance's own port, published on
/// one the engine picked).
fn published(ports: &str) -> Option<u16> {
    let host = ports.split("->").next()?;
    host.rsplit(':').next()?.parse().ok()
}

/// True when GET /ok on 127.0.0.1:`port` answers 200 within a second.
fn answers_ok(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}
