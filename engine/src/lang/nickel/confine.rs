//! Keeping a Nickel evaluation's reads inside the spec's folder. Nickel reads an `import`
//! as it resolves it, with no hook to refuse a path, so the thread that evaluates restricts
//! itself with Landlock (Linux 5.13 and later): a file outside the folder, named directly,
//! through `..` or through a symlink, cannot be opened, and its content never reaches an
//! error message. The restriction is the thread's own and ends with it.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Landlock's rights to read a file and to list a folder.
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
/// A rule about everything beneath a folder.
const RULE_PATH_BENEATH: libc::c_int = 1;

/// `struct landlock_ruleset_attr`, first version: the rights the ruleset governs.
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

/// `struct landlock_path_beneath_attr` (packed in the kernel's headers).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Lets the calling thread read files only beneath `root`. False when the kernel cannot
/// (no Landlock), and then nothing changed.
pub fn reads_to(root: &Path) -> bool {
    let Ok(folder) = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(root)
    else {
        return false;
    };
    let attr = RulesetAttr {
        handled_access_fs: READ_FILE | READ_DIR,
    };
    // SAFETY: the attribute is a valid `landlock_ruleset_attr` of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    let Ok(fd) = i32::try_from(fd) else {
        return false;
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd) };
    let rule = PathBeneathAttr {
        allowed_access: READ_FILE | READ_DIR,
        parent_fd: folder.as_raw_fd(),
    };
    // SAFETY: a valid rule for a valid ruleset descriptor; both outlive the call.
    let added = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &rule as *const PathBeneathAttr,
            0u32,
        )
    };
    if added != 0 {
        return false;
    }
    // SAFETY: prctl with these arguments only sets this thread's no_new_privs flag, which
    // Landlock needs from a process without CAP_SYS_ADMIN.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return false;
    }
    // SAFETY: restricts the calling thread only (no flags), with a valid ruleset.
    unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) == 0 }
}
