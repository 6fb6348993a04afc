//! Starting an instance's process: its working folder, files, secret links, environment
//! and log, in a session of its own and, when it has them, in its cgroups from its first
//! instruction (so nothing it starts can be outside them).

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use engine::provider::{ProviderError, ProvisionRequest};

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
    for path in request.secret_files.keys() {
        let link = workdir.join(path);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| backend(format!("cannot create {}: {e}", parent.display())))?;
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(secrets.join(path), &link)
            .map_err(|e| backend(format!("cannot link {}: {e}", link.display())))?;
    }
    Ok(())
}

/// What a new instance's process needs besides its request.
pub struct Start<'a> {
    /// The provider's folder (working folders default under it).
    pub dir: &'a Path,
    /// The log file.
    pub log: &'a Path,
    /// The name of its secret files folder, when it has secret files.
    pub secrets: Option<&'a str>,
    /// The `cgroup.procs` files it joins before it runs its program.
    pub cgroups: Vec<CString>,
}

/// Starts the instance's process. Blocking: runs on the blocking pool.
pub fn spawn(request: &ProvisionRequest, start: Start<'_>) -> Result<Child, ProviderError> {
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
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(start.log)
            .map_err(|e| backend(format!("cannot open log {}: {e}", start.log.display())))
    };
    let (out, err) = (open()?, open()?);
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(
            PASS_THROUGH
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
        )
        .envs(&request.env)
        .env(ENV_PROJECT, &request.tags.project)
        .env(ENV_GROUP, &request.tags.group)
        .env(ENV_SLOT, &request.tags.slot)
        .env(ENV_HASH, &request.tags.hash)
        .env(
            ENV_STOP_TIMEOUT,
            request.stop_timeout.as_millis().to_string(),
        )
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if !request.tags.ports.is_empty() {
        command.env(ENV_PORTS, request.tags.ports_text());
    }
    if let Some(address) = &request.address {
        command.env(ENV_ADDRESS, address);
    }
    let cgroups = start.cgroups;
    // SAFETY: between fork and exec the child calls only async-signal-safe functions
    // (setsid, open, write, close) on memory prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for file in &cgroups {
                join_cgroup(file)?;
            }
            Ok(())
        });
    }
    command.spawn().map_err(|e| ProviderError::Backend {
        provider: NAME.to_owned(),
        detail: format!(
            "cannot start {program:?} for {}/{}",
            request.group, request.slot
        ),
        source: Some(Box::new(e)),
    })
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `file` (`0` is "me").
/// Runs between fork and exec: async-signal-safe calls only.
fn join_cgroup(file: &CString) -> std::io::Result<()> {
    // SAFETY: open, write and close on a valid C string and a two-byte buffer.
    unsafe {
        let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if written != 1 {
            return Err(error);
        }
    }
    Ok(())
}
