//! Writing to stdout and stderr without ever failing the command: a closed pipe
//! (`tend status | head -1`) ends output quietly instead of panicking, and the command
//! finishes its work and exits as it would have.

use std::fmt::Arguments;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

/// True once a write to stdout failed (its reader is gone).
pub fn stdout_gone() -> bool {
    STDOUT_GONE.load(Ordering::Relaxed)
}

/// Writes to stdout; after the first failed write, writes nothing more.
pub fn stdout(args: Arguments<'_>) {
    write(&STDOUT_GONE, &mut std::io::stdout().lock(), args);
}

/// Writes to stderr; after the first failed write, writes nothing more.
pub fn stderr(args: Arguments<'_>) {
    write(&STDERR_GONE, &mut std::io::stderr().lock(), args);
}

fn write(gone: &AtomicBool, to: &mut dyn Write, args: Arguments<'_>) {
    if gone.load(Ordering::Relaxed) {
        return;
    }
    if to.write_fmt(args).and_then(|()| to.flush()).is_err() {
        gone.store(true, Ordering::Relaxed);
    }
}

/// `print!` that never panics.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::stdout(format_args!($($arg)*)) };
}

/// `println!` that never panics.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` that never panics.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => { $crate::output::stderr(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! errln {
    () => { $crate::output::stderr(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::stderr(format_args!("{}\n", format_args!($($arg)*))) };
}
