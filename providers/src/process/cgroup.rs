//! cgroups for process instances: one per instance, so that an instance is all of its
//! processes (whatever they do with their sessions and environments) and its limits hold.
//!
//! tend makes its cgroups under its own, in a folder `tend`: with cgroup v2, one folder per
//! instance (`cgroup.kill` stops it whole); with the v1 hierarchies (`memory`, `pids`,
//! `cpu`), one folder in each that a limit needs, and in `pids` for membership when there
//! is no v2. Paths are absolute and kept in the instance's record, so a tend started in
//! another cgroup still finds them.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use engine::spec::Resources;

/// The folder under tend's own cgroup that holds the instances' cgroups.
const TEND_DIR: &str = "tend";

/// A v1 controller tend uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

/// The cgroup hierarchies tend may use on this machine, found once.
#[derive(Clone, Debug, Default)]
pub struct Cgroups {
    /// `<v2 mount><own cgroup>/tend`, when it could be made.
    v2: Option<PathBuf>,
    /// v2 controllers enabled for the instances' cgroups.
    v2_controllers: Vec<Controller>,
    /// `<v1 mount><own cgroup>/tend` per controller, when it could be made.
    v1: Vec<(Controller, PathBuf)>,
}

impl Cgroups {
    /// Finds the hierarchies this process may make cgroups in (as root, usually).
    pub fn detect() -> Cgroups {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut found = Cgroups::default();
        for line in mounts.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let rights: Vec<&str> = right.split(' ').collect();
            let (Some(mount), Some(fstype), Some(options)) =
                (fields.get(4), rights.first(), rights.get(2))
            else {
                continue;
            };
            match *fstype {
                "cgroup2" if found.v2.is_none() => {
                    let Some(path) = own_path(&own, |controllers| controllers.is_empty()) else {
                        continue;
                    };
                    let base = Path::new(mount).join(path.trim_start_matches('/'));
                    if let Some(dir) = make_dir(&base) {
                        found.v2_controllers = enable_v2_controllers(&dir);
                        found.v2 = Some(dir);
                    }
                }
                "cgroup" => {
                    for controller in Controller::ALL {
                        if !options.split(',').any(|o| o == controller.name())
                            || found.v1.iter().any(|(c, _)| *c == controller)
                        {
                            continue;
                        }
                        let own_v1 =
                            own_path(&own, |list| list.split(',').any(|c| c == controller.name()));
                        let Some(path) = own_v1 else { continue };
                        let base = Path::new(mount).join(path.trim_start_matches('/'));
                        if let Some(dir) = make_dir(&base) {
                            found.v1.push((controller, dir));
                        }
                    }
                }
                _ => {}
            }
        }
        found
    }

    /// True when tend can make no cgroup here.
    pub fn is_empty(&self) -> bool {
        self.v2.is_none() && self.v1.is_empty()
    }

    /// Makes the cgroups of a new instance named `name`, with `limits` written, or says why
    /// a limit cannot be enforced here.
    pub fn create(&self, name: &str, limits: Option<&Resources>) -> Result<InstanceCgroup, String> {
        let limits = limits.cloned().unwrap_or_default();
        let mut needed: Vec<Controller> = Vec::new();
        if limits.memory.is_some() {
            needed.push(Controller::Memory);
        }
        if limits.pids.is_some() {
            needed.push(Controller::Pids);
        }
        if limits.cpu.is_some() {
            needed.push(Controller::Cpu);
        }
        let mut made = InstanceCgroup::default();
        let result = self.fill(name, &limits, &needed, &mut made);
        if result.is_err() {
            made.remove();
        }
        result.map(|()| made)
    }

    fn fill(
        &self,
        name: &str,
        limits: &Resources,
        needed: &[Controller],
        made: &mut InstanceCgroup,
    ) -> Result<(), String> {
        let mkdir = |dir: &Path| {
            std::fs::create_dir(dir)
                .map_err(|e| format!("cannot make cgroup {}: {e}", dir.display()))
        };
        if let Some(v2) = &self.v2 {
            let dir = v2.join(name);
            mkdir(&dir)?;
            // Recorded before its limits are written, so a failed write removes it too.
            made.dirs.push(dir.clone());
            for controller in needed.iter().filter(|c| self.v2_controllers.contains(c)) {
                write_limit_v2(&dir, *controller, limits)?;
            }
        }
        for controller in needed.iter().filter(|c| !self.v2_controllers.contains(c)) {
            let Some((_, base)) = self.v1.iter().find(|(c, _)| c == controller) else {
                return Err(format!(
                    "resources({0} = ...) needs the {0} cgroup controller, which tend cannot use on this machine",
                    controller.name()
                ));
            };
            let dir = base.join(name);
            mkdir(&dir)?;
            made.dirs.push(dir.clone());
            write_limit_v1(&dir, *controller, limits)?;
        }
        // Without v2, membership comes from a v1 hierarchy: `pids` if it is there.
        if self.v2.is_none() && made.dirs.is_empty() {
            if let Some((_, base)) = self
                .v1
                .iter()
                .find(|(c, _)| *c == Controller::Pids)
                .or(self.v1.first())
            {
                let dir = base.join(name);
                mkdir(&dir)?;
                made.dirs.push(dir);
            }
        }
        Ok(())
    }

    /// The cgroups of live process `pid` that are tend's (a folder under a `tend` folder).
    pub fn of_process(pid: u32) -> InstanceCgroup {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut dirs = Vec::new();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let parent = Path::new(path).parent().and_then(Path::file_name);
            if parent.and_then(|p| p.to_str()) != Some(TEND_DIR) {
                continue;
            }
            if let Some(mount) = mount_of(&mounts, controllers) {
                dirs.push(mount.join(path.trim_start_matches('/')));
            }
        }
        InstanceCgroup { dirs }
    }
}

/// The cgroup path of this process in the hierarchy whose controller list `matches`.
fn own_path(own: &str, matches: impl Fn(&str) -> bool) -> Option<String> {
    own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        matches(controllers).then(|| path.to_owned())
    })
}

/// The mount point of the hierarchy with `controllers` (empty: v2).
fn mount_of(mounts: &str, controllers: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount = left.split(' ').nth(4)?;
        let rights: Vec<&str> = right.split(' ').collect();
        let fits = match (rights.first()?, controllers) {
            (&"cgroup2", "") => true,
            (&"cgroup", list) if !list.is_empty() => {
                let options: Vec<&str> = rights.get(2)?.split(',').collect();
                list.split(',').all(|c| options.contains(&c))
            }
            _ => false,
        };
        fits.then(|| PathBuf::from(mount))
    })
}

/// Makes `<base>/tend`; `None` when tend may not.
fn make_dir(base: &Path) -> Option<PathBuf> {
    let dir = base.join(TEND_DIR);
    match std::fs::create_dir(&dir) {
        Ok(()) => Some(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Some(dir),
        Err(_) => None,
    }
}

/// Enables for the instances' cgroups the v2 controllers that tend's own cgroup passes
/// down (tend changes nothing above its own folder); the ones it could. The others come
/// from v1 where it has them.
fn enable_v2_controllers(dir: &Path) -> Vec<Controller> {
    Controller::ALL
        .into_iter()
        .filter(|c| {
            std::fs::write(dir.join("cgroup.subtree_control"), format!("+{}", c.name())).is_ok()
        })
        .collect()
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| format!("cannot set {}/{file} to {value}: {e}", dir.display()))
}

const CPU_PERIOD_US: u64 = 100_000;

fn cpu_quota(cores: f64) -> u64 {
    ((cores * CPU_PERIOD_US as f64).round() as u64).max(1_000)
}

fn write_limit_v2(dir: &Path, controller: Controller, limits: &Resources) -> Result<(), String> {
    match controller {
        Controller::Memory => {
            if let Some(bytes) = limits.memory {
                write(dir, "memory.max", &bytes.to_string())?;
                // No swap beyond the limit, where swap is accounted.
                let _ = write(dir, "memory.swap.max", "0");
            }
        }
        Controller::Pids => {
            if let Some(pids) = limits.pids {
                write(dir, "pids.max", &pids.to_string())?;
            }
        }
        Controller::Cpu => {
            if let Some(cores) = limits.cpu {
                write(
                    dir,
                    "cpu.max",
                    &format!("{} {CPU_PERIOD_US}", cpu_quota(cores)),
                )?;
            }
        }
    }
    Ok(())
}

fn write_limit_v1(dir: &Path, controller: Controller, limits: &Resources) -> Result<(), String> {
    match controller {
        Controller::Memory => {
            if let Some(bytes) = limits.memory {
                write(dir, "memory.limit_in_bytes", &bytes.to_string())?;
                // Memory plus swap no higher, where swap is accounted.
                let _ = write(dir, "memory.memsw.limit_in_bytes", &bytes.to_string());
            }
        }
        Controller::Pids => {
            if let Some(pids) = limits.pids {
                write(dir, "pids.max", &pids.to_string())?;
            }
        }
        Controller::Cpu => {
            if let Some(cores) = limits.cpu {
                write(dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                write(dir, "cpu.cfs_quota_us", &cpu_quota(cores).to_string())?;
            }
        }
    }
    Ok(())
}

/// The cgroups of one instance (absolute folders), which may be none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceCgroup {
    /// Its folders: the v2 one first, when there is one.
    pub dirs: Vec<PathBuf>,
}

impl InstanceCgroup {
    /// Rebuilds it from folders kept in a record.
    pub fn from_dirs(dirs: Vec<PathBuf>) -> InstanceCgroup {
        InstanceCgroup { dirs }
    }

    /// True when the instance has no cgroup.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Where a new process of the instance goes: the cgroup v2 folder it starts in (only
    /// v2 folders have `cgroup.controllers`), and the `cgroup.procs` files of the others
    /// (cgroup v1), which it writes `0` to, to join: ready before the clone, so the child
    /// allocates nothing.
    pub fn start_in(&self) -> (Option<PathBuf>, Vec<CString>) {
        let v2 = self
            .dirs
            .first()
            .filter(|d| d.join("cgroup.controllers").exists())
            .cloned();
        let joins = self
            .dirs
            .iter()
            .skip(usize::from(v2.is_some()))
            .filter_map(|d| {
                CString::new(d.join("cgroup.procs").as_os_str().as_encoded_bytes()).ok()
            })
            .collect();
        (v2, joins)
    }

    /// Every process in any of its cgroups now.
    pub fn processes(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs
            .iter()
            .flat_map(|d| {
                std::fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills every process in it at once, where the kernel can (cgroup v2 `cgroup.kill`);
    /// false when it cannot, and each process must be signalled.
    pub fn kill_all(&self) -> bool {
        self.dirs
            .iter()
            .any(|d| std::fs::write(d.join("cgroup.kill"), "1").is_ok())
    }

    /// True when the kernel killed a process of it for going over its memory limit.
    pub fn oom_killed(&self) -> bool {
        self.dirs.iter().any(|d| {
            ["memory.events", "memory.oom_control"].iter().any(|file| {
                std::fs::read_to_string(d.join(file))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| {
                        l.strip_prefix("oom_kill ")
                            .and_then(|n| n.trim().parse::<u64>().ok())
                            .is_some_and(|n| n > 0)
                    })
            })
        })
    }

    /// Removes its folders (each once empty; a busy one stays).
    pub fn remove(&self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    #[test]
    fn hierarchies_are_found_by_their_controllers() {
        assert_eq!(
            mount_of(MOUNTS, ""),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            mount_of(MOUNTS, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(mount_of(MOUNTS, "pids"), None);
        let own = "4:memory:/box/1\n0::/\n";
        assert_eq!(own_path(own, |c| c == "memory"), Some("/box/1".to_owned()));
        assert_eq!(own_path(own, str::is_empty), Some("/".to_owned()));
    }

    #[test]
    fn a_cpu_quota_is_a_share_of_the_period() {
        assert_eq!(cpu_quota(0.5), 50_000);
        assert_eq!(cpu_quota(2.0), 200_000);
        assert_eq!(cpu_quota(0.001), 1_000);
    }
}
