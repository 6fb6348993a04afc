//! The soak's project, and the changes made to it: rolling updates, scaling, a group added
//! and removed, and now and then a bad deploy (a version whose instances never turn healthy).

/// One group as the soak wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub name: &'static str,
    pub size: u32,
    pub version: u32,
    /// The wanted version never turns healthy.
    pub bad: bool,
    /// Its last change stopped under faults (paused or rolled back): it settles serving at
    /// any version, within its budget.
    pub stalled: bool,
    pub max_unavailable: u32,
    pub max_surge: u32,
    /// Its rollout rolls back on failure (else it pauses).
    pub rolls_back: bool,
    /// It has a health check on a port of its own.
    pub checked: bool,
    pub docker: bool,
}

impl Wanted {
    /// Its slots: `ids` groups name theirs.
    pub fn slots(&self) -> Vec<String> {
        if self.name == "worker" {
            WORKER_IDS.iter().map(|s| (*s).to_owned()).collect()
        } else {
            (0..self.size).map(|i| i.to_string()).collect()
        }
    }

    /// The version label its instances carry.
    pub fn label(&self) -> String {
        format!("v{}", self.version)
    }
}

const WORKER_IDS: [&str; 3] = ["a", "b", "c"];

/// The whole project as the soak wants it.
#[derive(Clone, Debug)]
pub struct Shape {
    pub groups: Vec<Wanted>,
    /// The `extra` group is there.
    pub extra: bool,
    /// The machine its process groups name (an etcd store needs one).
    pub machine: Option<String>,
    next_version: u32,
}

impl Shape {
    /// The first version: api (processes, sized, health checked), worker (processes, `ids`,
    /// depends on api), web (containers, health checked); no extra group.
    pub fn first(docker: bool, machine: Option<String>) -> Shape {
        let mut groups = vec![
            Wanted {
                name: "api",
                size: 3,
                version: 1,
                bad: false,
                stalled: false,
                max_unavailable: 1,
                max_surge: 1,
                rolls_back: true,
                checked: true,
                docker: false,
            },
            Wanted {
                name: "worker",
                size: WORKER_IDS.len() as u32,
                version: 1,
                bad: false,
                stalled: false,
                max_unavailable: 1,
                max_surge: 0,
                rolls_back: false,
                checked: false,
                docker: false,
            },
        ];
        if docker {
            groups.push(Wanted {
                name: "web",
                size: 2,
                version: 1,
                bad: false,
                stalled: false,
                max_unavailable: 1,
                max_surge: 1,
                rolls_back: false,
                checked: true,
                docker: true,
            });
        }
        Shape {
            groups,
            extra: false,
            machine,
            next_version: 2,
        }
    }

    /// Every group it has now, the extra one included.
    pub fn all(&self) -> Vec<Wanted> {
        let mut all = self.groups.clone();
        if self.extra {
            all.push(Wanted {
                name: "extra",
                size: 1,
                version: 1,
                bad: false,
                stalled: false,
                max_unavailable: 1,
                max_surge: 0,
                rolls_back: false,
                checked: false,
                docker: false,
            });
        }
        all
    }

    /// The group named `name`.
    pub fn group(&self, name: &str) -> Option<Wanted> {
        self.all().into_iter().find(|g| g.name == name)
    }

    /// A new version of `group` (bad or not); a group at a bad version always gets a good one.
    pub fn roll(&mut self, group: &str, bad: bool) {
        let version = self.next_version;
        self.next_version += 1;
        if let Some(g) = self.groups.iter_mut().find(|g| g.name == group) {
            g.version = version;
            g.bad = bad && g.checked;
            g.stalled = false;
        }
    }

    /// Marks `group`'s last change as stopped under faults.
    pub fn stall(&mut self, group: &str) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.name == group) {
            g.stalled = true;
        }
    }

    /// Scales `group` by `by`, within 1..=4.
    pub fn scale(&mut self, group: &str, by: i32) {
        if let Some(g) = self
            .groups
            .iter_mut()
            .find(|g| g.name == group && g.name != "worker")
        {
            g.size = (g.size as i32 + by).clamp(1, 4) as u32;
        }
    }

    /// The Starlark of this shape. `busybox` serves the process groups' health page.
    pub fn render(&self, project: &str, image: &str) -> String {
        let mut text = format!("project(name = {project:?})\n");
        for g in self.all() {
            text.push_str(&group(&g, image, self.machine.as_deref()));
        }
        text
    }
}

/// One `group(...)`.
fn group(g: &Wanted, image: &str, machine: Option<&str>) -> String {
    let version = g.label();
    // A bad version serves no /ok page, so its health check never passes.
    let files = if g.bad {
        r#"{"index.html": "bad"}"#.to_owned()
    } else {
        format!(r#"{{"ok": "ok {version}"}}"#)
    };
    let on_failure = if g.rolls_back { "rollback" } else { "pause" };
    let update = format!(
        r#"rolling(max_unavailable = {}, max_surge = {}, min_ready = "1s", health_timeout = "20s", on_failure = "{on_failure}")"#,
        g.max_unavailable, g.max_surge
    );
    let process = match machine {
        Some(m) => format!("process(machine = {m:?})"),
        None => "process()".to_owned(),
    };
    let (provider, command, checked) = match g.name {
        "api" => (
            process.clone(),
            r#"["busybox", "httpd", "-f", "-p", "127.0.0.1:{{ instance.ports.http }}", "-h", "."]"#,
            true,
        ),
        "web" => (
            format!("docker({image:?})"),
            r#"["httpd", "-f", "-p", "{{ instance.ports.http }}", "-h", "/tend"]"#,
            true,
        ),
        _ => (process, r#"["sleep", "100000"]"#, false),
    };
    let health = if checked {
        r#", ports = ["http"], health = http(port = "http", path = "/ok", grace_period = "2s")"#
    } else {
        ""
    };
    let count = if g.name == "worker" {
        format!("ids = {WORKER_IDS:?}, depends_on = [\"api\"]")
    } else {
        format!("size = {}", g.size)
    };
    format!(
        "group(name = {name:?}, {count}, provider = {provider}, update = {update},\n  \
         flavor = flavor(command = {command}, env = {{\"SOAK_VERSION\": {version:?}}}, labels = {{\"soak.version\": {version:?}}}, files = {files}{health}))\n",
        name = g.name,
    )
}
