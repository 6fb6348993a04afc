//! A real three-member etcd cluster on 127.0.0.1 for the tests: temporary data folders,
//! free ports, every member stopped by its pid when the cluster is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::skip;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// True when `program` can be started here.
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// One member.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// Three etcd members on 127.0.0.1.
pub struct Cluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

impl Cluster {
    /// Starts three members and waits until the cluster answers; `None` (a skip) when
    /// `etcd` or `etcdctl` is not installed, which fails the test in CI.
    pub fn start(test: &str) -> Option<Cluster> {
        if !have("etcd") || !have("etcdctl") {
            skip(
                test,
                "etcd and etcdctl are not installed (Debian etcd-server, etcd-client)",
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut members: Vec<Member> = (1..=3)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let initial = initial_cluster(&members);
        for m in &mut members {
            m.child = Some(spawn_member(dir.path(), m, &initial));
        }
        let cluster = Cluster { dir, members };
        cluster.wait_healthy(Duration::from_secs(30));
        Some(cluster)
    }

    /// `etcd://` with every member.
    pub fn url(&self) -> String {
        let endpoints: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect();
        format!("etcd://{}", endpoints.join(","))
    }

    fn endpoints(&self) -> String {
        self.url().trim_start_matches("etcd://").to_owned()
    }

    /// Runs etcdctl against the live members; its stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect();
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(live.join(","))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("etcdctl: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &self.endpoints(), "endpoint", "health"])
                .output();
            if out.is_ok_and(|o| o.status.success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the etcd cluster did not become healthy; logs in {}",
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Which member (0, 1 or 2) is etcd's own raft leader now.
    pub fn raft_leader(&self) -> Option<usize> {
        let status = self.ctl(&["endpoint", "status", "-w", "json"]);
        let list: serde_json::Value = serde_json::from_str(&status).ok()?;
        let list = list.as_array()?;
        let leader_id = list.first()?["Status"]["leader"].as_u64()?;
        let endpoint = list
            .iter()
            .find(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader_id))?["Endpoint"]
            .as_str()?
            .to_owned();
        self.members
            .iter()
            .position(|m| endpoint.ends_with(&format!(":{}", m.client)))
    }

    /// Kills member `index` with SIGKILL.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `index` again on its data folder after [`Cluster::kill`]; its log
    /// goes on in the same file.
    pub fn restart(&mut self, index: usize) {
        if self.members[index].child.is_some() {
            return;
        }
        let initial = initial_cluster(&self.members);
        let child = spawn_member(self.dir.path(), &self.members[index], &initial);
        self.members[index].child = Some(child);
    }

    /// The folder its logs are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}

/// etcd's `--initial-cluster`: every member's name and peer address.
fn initial_cluster(members: &[Member]) -> String {
    let all: Vec<String> = members
        .iter()
        .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
        .collect();
    all.join(",")
}

fn spawn_member(dir: &Path, m: &Member, initial: &str) -> Child {
    let data: PathBuf = dir.join(&m.name);
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join(format!("{}.log", m.name)))
        .unwrap_or_else(|e| panic!("{e}"));
    let err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
    Command::new("etcd")
        .arg("--name")
        .arg(&m.name)
        .arg("--data-dir")
        .arg(&data)
        .arg("--listen-client-urls")
        .arg(format!("http://127.0.0.1:{}", m.client))
        .arg("--advertise-client-urls")
        .arg(format!("http://127.0.0.1:{}", m.client))
        .arg("--listen-peer-urls")
        .arg(format!("http://127.0.0.1:{}", m.peer))
        .arg("--initial-advertise-peer-urls")
        .arg(format!("http://127.0.0.1:{}", m.peer))
        .arg("--initial-cluster")
        .arg(initial)
        .arg("--initial-cluster-state")
        .arg("new")
        .arg("--initial-cluster-token")
        .arg(format!("tend-test-{}", std::process::id()))
        .stdout(log)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start etcd: {e}"))
}
