//! `clone3` with `CLONE_INTO_CGROUP`: a child born in its cgroup v2 folder.
//!
//! Moving a running process into a cgroup (a write to `cgroup.procs`) takes a lock that
//! waits for every CPU to pass a quiescent state: about 10 ms on an idle machine, whatever
//! else tend does. A child the kernel starts in its folder takes no such lock (Linux 5.7
//! and later). `libc` has no wrapper that runs a function on a new stack for `clone3`, so
//! the few instructions that do are written here, for x86_64; elsewhere, or where the
//! kernel refuses, [`clone_into`] says so and the caller moves the child the old way.

/// The kernel's `struct clone_args`, up to its `cgroup` field (Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP`, from `linux/sched.h`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The function a child runs on its new stack; what it returns is its exit status.
pub type ChildMain = extern "C" fn(*mut libc::c_void) -> libc::c_int;

/// Clones a child that shares this process's memory and file table, suspends this thread
/// until it calls `execve` or exits, and runs `main(arg)` on `stack` (`stack_size` bytes,
/// its end aligned to 16) in the cgroup v2 folder open as `cgroup`. Its pid, or `None`
/// when this kernel or machine cannot (no child was made).
///
/// # Safety
/// `main` may only make raw system calls on memory this thread keeps alive and does not
/// touch while suspended, and must end in `execve` or `_exit`; every signal must be
/// blocked in this thread, so no handler runs on the child's stack.
pub unsafe fn clone_into(
    cgroup: libc::c_int,
    stack: *mut u8,
    stack_size: usize,
    main: ChildMain,
    arg: *mut libc::c_void,
) -> Option<libc::pid_t> {
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_FILES | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack as u64,
        stack_size: stack_size as u64,
        cgroup: cgroup as u64,
        ..CloneArgs::default()
    };
    // SAFETY: as the caller promises; `args` lives until the call returns.
    let pid = unsafe { raw_clone3(&args, main, arg) };
    (pid > 0).then_some(pid as libc::pid_t)
}

/// The system call: in the child (return value 0, on the new stack) calls `main(arg)`
/// and exits with its result; in this thread returns the pid or a negative errno.
#[cfg(target_arch = "x86_64")]
unsafe fn raw_clone3(args: &CloneArgs, main: ChildMain, arg: *mut libc::c_void) -> i64 {
    let result: i64;
    // SAFETY: the kernel keeps every register but rax, rcx and r11 across `syscall`; the
    // child never returns into Rust code: it ends in `main`'s execve, or exits.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, 60",
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => result,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") main,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    result
}

/// Elsewhere the child is moved into its cgroup after it starts.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn raw_clone3(_: &CloneArgs, _: ChildMain, _: *mut libc::c_void) -> i64 {
    -(libc::ENOSYS as i64)
}
