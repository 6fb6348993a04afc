//! Starting a program the way `posix_spawn` does: the child shares tend's memory (and tend
//! waits) until it calls `execve`, so nothing of tend's memory is copied, however large it
//! is; `fork` would copy its page tables and fault on every page both then write. Before
//! its program runs the child starts a session of its own, joins its cgroups, takes its
//! standard streams and working folder, and sets every signal back to its default.
//!
//! The child shares tend's file table too, then takes a new, empty one of its own
//! (`close_range` with `CLOSE_RANGE_UNSHARE`) and opens its standard streams in it. A
//! table of its own made by copying tend's would cost one step per file tend holds, at
//! the clone and again at the `execve` (which closes them): with one pidfd per instance
//! that made each start cost more the more instances ran.
//!
//! Everything the child touches is prepared before: between the clone and the `execve` it
//! makes raw system calls only, on memory the parent keeps alive and does not touch (it is
//! suspended), and reports a failure through that memory.

use std::ffi::{CString, OsStr};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::clone3::clone_into;

/// What to start.
pub struct Launch {
    /// The program, found in `PATH` when its name has no `/`.
    pub program: String,
    /// Its arguments, without the program.
    pub args: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
    /// Its working folder.
    pub workdir: PathBuf,
    /// The file its standard input reads.
    pub input: PathBuf,
    /// The file its standard output and error append to (made when missing).
    pub output: PathBuf,
    /// The cgroup v2 folder it starts in.
    pub cgroup: Option<PathBuf>,
    /// The `cgroup.procs` files (of cgroup v1 hierarchies) it joins before its program runs.
    pub cgroups: Vec<CString>,
}

/// A started process, to be reaped with [`reap`] once it ends.
#[derive(Debug)]
pub struct Started {
    /// Its pid.
    pub pid: u32,
}

/// Which step failed in the child, for the error message.
#[derive(Clone, Copy)]
#[repr(i32)]
enum Step {
    Session = 1,
    Cgroup = 2,
    Streams = 3,
    Workdir = 4,
    Exec = 5,
}

/// Everything the child reads, prepared by the parent.
struct Child {
    path: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    workdir: CString,
    input: CString,
    output: CString,
    cgroups: Vec<*const libc::c_char>,
    /// Set by the child when a step fails: the step and its errno.
    failed: (i32, i32),
}

fn cstring(text: &[u8]) -> std::io::Result<CString> {
    CString::new(text).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a NUL byte in an argument, variable or path",
        )
    })
}

/// `program` as the path `execve` takes: as given when it has a `/` (relative to the
/// working folder), else the first executable file of that name on `path`.
fn resolve(program: &str, path: Option<&str>) -> std::io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let search = path.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    for dir in search.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if let Ok(c) = cstring(candidate.as_os_str().as_bytes()) {
            // SAFETY: access on a valid C string.
            if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 && candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(std::io::Error::from(std::io::ErrorKind::NotFound))
}

/// Starts `launch`; returns once its program runs (or the child failed before it could).
pub fn launch(launch: Launch) -> std::io::Result<Started> {
    let path_var = launch
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    let path = resolve(&launch.program, path_var)?;
    let strings: Vec<CString> = std::iter::once(Ok(launch.program.clone()))
        .chain(launch.args.iter().cloned().map(Ok))
        .map(|a: std::io::Result<String>| cstring(a?.as_bytes()))
        .collect::<std::io::Result<_>>()?;
    let env: Vec<CString> = launch
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
        .collect::<std::io::Result<_>>()?;
    let with_null = |list: &[CString]| -> Vec<*const libc::c_char> {
        list.iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let mut child = Child {
        path: cstring(path.as_os_str().as_bytes())?,
        argv: with_null(&strings),
        envp: with_null(&env),
        workdir: cstring(OsStr::as_bytes(launch.workdir.as_os_str()))?,
        input: cstring(launch.input.as_os_str().as_bytes())?,
        output: cstring(launch.output.as_os_str().as_bytes())?,
        cgroups: launch.cgroups.iter().map(|c| c.as_ptr()).collect(),
        failed: (0, 0),
    };
    // Started in its cgroup v2 folder by the kernel, or where it cannot, moved there
    // before its program runs.
    let into = match &launch.cgroup {
        Some(dir) => Some((
            std::fs::File::open(dir)?,
            cstring(dir.join("cgroup.procs").as_os_str().as_bytes())?,
        )),
        None => None,
    };
    // The child's stack: it runs on it until execve.
    let mut stack = vec![0u8; 256 * 1024];
    // SAFETY: the stack grows down from its end, which is aligned down to 16 bytes; it
    // outlives the child's use of it (the parent is suspended until execve or exit).
    let top = unsafe { stack.as_mut_ptr().add(stack.len()) };
    let top = (top as usize & !15) as *mut libc::c_void;
    let stack_size = top as usize - stack.as_ptr() as usize;
    // Signals stay blocked in tend's thread while the child shares its memory, so no
    // handler of tend's runs on the child's stack; the child unblocks them itself.
    // SAFETY: plain signal-mask calls on local sets.
    let old_mask = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    // SAFETY: `run_child` only makes raw system calls on `child`, which lives until the
    // clone returns; CLONE_VFORK suspends this thread until the child execs or exits. The
    // shared file table is only left by the child, never changed in place.
    let born_in = into.as_ref().and_then(|(dir, _)| unsafe {
        clone_into(
            dir.as_raw_fd(),
            stack.as_mut_ptr(),
            stack_size,
            run_child,
            (&mut child as *mut Child).cast(),
        )
    });
    let pid = match born_in {
        Some(pid) => pid,
        None => {
            if let Some((_, procs)) = &into {
                child.cgroups.insert(0, procs.as_ptr());
            }
            // SAFETY: as above.
            unsafe {
                libc::clone(
                    run_child,
                    top,
                    libc::CLONE_VM | libc::CLONE_FILES | libc::CLONE_VFORK | libc::SIGCHLD,
                    (&mut child as *mut Child).cast(),
                )
            }
        }
    };
    let clone_error = std::io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    let (step, errno) = child.failed;
    if step != 0 {
        let mut status = 0;
        // SAFETY: reaps the child that just exited.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let error = std::io::Error::from_raw_os_error(errno);
        let what = match step {
            s if s == Step::Session as i32 => "cannot start a session",
            s if s == Step::Cgroup as i32 => "cannot join its cgroup",
            s if s == Step::Streams as i32 => "cannot set its standard streams",
            s if s == Step::Workdir as i32 => "cannot enter its working folder",
            _ => "cannot run it",
        };
        return Err(std::io::Error::new(
            error.kind(),
            format!("{what}: {error}"),
        ));
    }
    Ok(Started { pid: pid as u32 })
}

/// True once process `pid` (a child of tend) has ended and is reaped.
pub fn reap(pid: u32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid without blocking on a child of this process.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    r == pid as libc::pid_t || r < 0
}

/// The child, between clone and execve: raw system calls on prepared memory only.
extern "C" fn run_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Child`, alive and untouched while this runs.
    let child = unsafe { &mut *arg.cast::<Child>() };
    let fail = |child: &mut Child, step: Step| -> libc::c_int {
        // SAFETY: errno of this thread; _exit ends the child without running anything of
        // the parent's (no atexit handlers, no buffers flushed).
        unsafe {
            child.failed = (step as i32, *libc::__errno_location());
            libc::_exit(127)
        }
    };
    // SAFETY: each call is a raw system call on memory prepared by the parent.
    unsafe {
        if libc::setsid() < 0 {
            return fail(child, Step::Session);
        }
        // A file table of its own: a new empty one, or where the kernel cannot make one
        // (before Linux 5.9), a copy whose files all close at execve (Rust opens every
        // file close-on-exec).
        let first: libc::c_uint = 0;
        if libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_UNSHARE,
        ) < 0
            && libc::unshare(libc::CLONE_FILES) < 0
        {
            return fail(child, Step::Streams);
        }
        for &file in &child.cgroups {
            let fd = libc::open(file, libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return fail(child, Step::Cgroup);
            }
            libc::close(fd);
        }
        let input = libc::open(child.input.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        let output = libc::open(
            child.output.as_ptr(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
            0o666 as libc::c_uint,
        );
        // Moved above 2 first, so no dup2 below overwrites the other before it is used.
        let input = libc::fcntl(input, libc::F_DUPFD_CLOEXEC, 3);
        let output = libc::fcntl(output, libc::F_DUPFD_CLOEXEC, 3);
        if input < 0
            || output < 0
            || libc::dup2(input, 0) < 0
            || libc::dup2(output, 1) < 0
            || libc::dup2(output, 2) < 0
        {
            return fail(child, Step::Streams);
        }
        if libc::chdir(child.workdir.as_ptr()) < 0 {
            return fail(child, Step::Workdir);
        }
        // Every signal tend handles goes back to its default, and none is blocked.
        for signal in 1..65 {
            let mut action: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut action) == 0
                && (action.sa_sigaction != libc::SIG_IGN || signal == libc::SIGPIPE)
                && action.sa_sigaction != libc::SIG_DFL
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(
            child.path.as_ptr(),
            child.argv.as_ptr(),
            child.envp.as_ptr(),
        );
        fail(child, Step::Exec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_runs_in_its_folder_and_session_with_only_its_environment() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let out_path = dir.path().join("out");
        // `ls` lists the shell's fds on its own: while a shell sets up a pipeline or a
        // redirection it holds extra fds itself, and `ls` may see them.
        let started = launch(Launch {
            program: "sh".into(),
            args: vec![
                "-c".into(),
                "echo \"$GREETING\"; echo \"$HOME\"; pwd; echo $$; cut -d' ' -f6 /proc/$$/stat; \
                 ls /proc/$$/fd; echo to-error >&2"
                    .into(),
            ],
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("GREETING".into(), "hello there".into()),
            ],
            workdir: dir.path().to_owned(),
            input: "/dev/null".into(),
            output: out_path.clone(),
            cgroup: None,
            cgroups: Vec::new(),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !reap(started.pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "the child did not end"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let folder = dir.path().canonicalize().unwrap_or_else(|e| panic!("{e}"));
        let pid = started.pid.to_string();
        assert_eq!(
            lines,
            [
                "hello there",
                "",
                folder.to_str().unwrap_or(""),
                &pid,
                &pid,
                "0",
                "1",
                "2",
                "to-error"
            ],
            "environment, folder, a session led by the child itself, no file of this \
             process but its streams, and errors in the same file as its output"
        );
    }

    #[test]
    fn a_program_that_cannot_run_is_an_error_and_leaves_no_process() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let missing = launch(Launch {
            program: "no-such-program-for-tend".into(),
            args: Vec::new(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            workdir: dir.path().to_owned(),
            input: "/dev/null".into(),
            output: "/dev/null".into(),
            cgroup: None,
            cgroups: Vec::new(),
        });
        assert_eq!(
            missing.map(|s| s.pid).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::NotFound)
        );
        // A folder that is not there fails in the child, which is reaped.
        let no_folder = launch(Launch {
            program: "true".into(),
            args: Vec::new(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            workdir: dir.path().join("missing"),
            input: "/dev/null".into(),
            output: "/dev/null".into(),
            cgroup: None,
            cgroups: Vec::new(),
        });
        match no_folder {
            Ok(s) => panic!("started {} in a missing folder", s.pid),
            Err(e) => assert!(
                e.to_string().starts_with("cannot enter its working folder"),
                "{e}"
            ),
        }
    }
}
