//! Starting an instance's process: its working folder, files, secret links, environment
//! and log, in a session of its own and, when it has them, in its cgroups from its first
//! instruction (so nothing it starts can be outside them).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use engine::provider::{ProviderError, ProvisionRequest};

use super::launch::{launch, Launch, Started};
use super::{backend, NAME};

/// Tag variables, set on every instance's environment.
pub const ENV_PROJECT: &str = "TEND_PROJECT";
/// The instance's group.
pub const ENV_GROUP: &str = "TEND_GROUP";
/// The instance's slot.
pub const ENV_SLOT: &str = "TEND_SLOT";
/// The instance's spec hash.
pub const ENV_HASH: &str = "TEND_HASH";
/// Where the instance is reached.
pub const ENV_ADDRESS: &str = "TEND_ADDRESS";
/// The instance's own ports, `name=port` separated by `,` (the `tend.ports` tag).
pub const ENV_PORTS: &str = "TEND_PORTS";
/// The format of its tags (the `tend.format` tag); none on an instance of tend 0.1.0.
pub const ENV_FORMAT: &str = "TEND_FORMAT";
/// How long a stop may take, in milliseconds.
pub const ENV_STOP_TIMEOUT: &str = "TEND_STOP_TIMEOUT_MS";
/// Variables passed through from tend's own environment; nothing else is inherited, so a
/// secret given to tend reaches only the instances whose flavor asks for it.
const PASS_THROUGH: [&str; 5] = ["PATH", "HOME", "LANG", "TZ", "USER"];

/// The working folder of an instance: its `workdir`, or one under the state folder for its
/// slot and version, so a surge instance never writes over the files of the one it replaces.
fn workdir(dir: &Path, request: &ProvisionRequest) -> PathBuf {
    match &request.workdir {
        Some(dir) => PathBuf::from(dir),
        None => dir.join("run").join(format!(
            "{}-{}-{}",
            request.group, request.slot, request.tags.hash
        )),
    }
}

/// A name for one new instance (its secret files, its cgroups): its tags and the time,
/// unique on the machine.
pub fn unique_name(request: &ProvisionRequest) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let t = &request.tags;
    format!("{}-{}-{}-{nanos}", t.project, t.group, t.slot)
}

/// Writes the instance's secret files to memory and links them from its working folder.
fn link_secrets(
    workdir: &Path,
    request: &ProvisionRequest,
    name: &str,
) -> Result<(), ProviderError> {
    let secrets = crate::files::write_secrets(NAME, name, &request.secret_files)?;
    crate::files::link_secrets(NAME, workdir, &secrets, request.secret_files.keys())
}

/// What a new instance's process needs besides its request.
pub struct Start<'a> {
    /// The provider's folder (working folders default under it).
    pub dir: &'a Path,
    /// The log file.
    pub log: &'a Path,
    /// The name of its secret files folder, when it has secret files.
    pub secrets: Option<&'a str>,
    /// Its cgroups: the v2 folder it starts in, and the `cgroup.procs` files (of v1
    /// hierarchies) it joins before it runs its program.
    pub cgroups: (Option<PathBuf>, Vec<CString>),
}

/// Starts the instance's process. Blocking: runs on the blocking pool.
pub fn spawn(request: &ProvisionRequest, start: Start<'_>) -> Result<Started, ProviderError> {
    let Some((program, args)) = request.command.split_first() else {
        return Err(ProviderError::InvalidProps {
            provider: NAME.to_owned(),
            detail: format!("group {:?} has no command to run", request.group),
        });
    };
    let workdir = workdir(start.dir, request);
    std::fs::create_dir_all(&workdir).map_err(|e| {
        backend(format!(
            "cannot create working folder {}: {e}",
            workdir.display()
        ))
    })?;
    crate::files::write_into(NAME, &workdir, &request.files)?;
    if let Some(name) = start.secrets {
        link_secrets(&workdir, request, name)?;
    }
    // Made here so a log that cannot be written is a clear error before any process.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(start.log)
        .map_err(|e| backend(format!("cannot open log {}: {e}", start.log.display())))?;
    // The environment: a few of tend's own, the flavor's, then the tags (later wins).
    let mut env: BTreeMap<String, String> = PASS_THROUGH
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect();
    env.extend(request.env.clone());
    let t = &request.tags;
    for (key, value) in [
        (ENV_PROJECT, t.project.clone()),
        (ENV_GROUP, t.group.clone()),
        (ENV_SLOT, t.slot.clone()),
        (ENV_HASH, t.hash.clone()),
        (
            ENV_STOP_TIMEOUT,
            request.stop_timeout.as_millis().to_string(),
        ),
    ] {
        env.insert(key.to_owned(), value);
    }
    if !t.ports.is_empty() {
        env.insert(ENV_PORTS.to_owned(), t.ports_text());
    }
    if let Some(format) = t.to_map().get(engine::provider::tags::FORMAT) {
        env.insert(ENV_FORMAT.to_owned(), format.clone());
    }
    if let Some(address) = &request.address {
        env.insert(ENV_ADDRESS.to_owned(), address.clone());
    }
    launch(Launch {
        program: program.clone(),
        args: args.to_vec(),
        env: env.into_iter().collect(),
        workdir,
        input: PathBuf::from("/dev/null"),
        output: start.log.to_owned(),
        cgroup: start.cgroups.0,
        cgroups: start.cgroups.1,
    })
    .map_err(|e| ProviderError::Backend {
        provider: NAME.to_owned(),
        detail: format!(
            "cannot start {program:?} for {}/{}",
            request.group, request.slot
        ),
        source: Some(Box::new(e)),
    })
}
