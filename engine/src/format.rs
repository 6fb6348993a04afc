//! The formats of what outlives one tend binary, and the refusal of a format this tend does
//! not know.
//!
//! Four things tend writes are read again by other tends, older and newer: the local store
//! (`.tend/`), the etcd store, saved plans and the tags on instances. Each carries a format
//! number:
//!
//! | what | where its number is | missing means | this tend writes |
//! |---|---|---|---|
//! | local store | `.tend/format` (the number and a newline) | 1 | [`LOCAL_STATE`] |
//! | etcd store | the key `/tend/v1/<project>/format` | 1 | [`ETCD_STATE`] |
//! | saved plan | its `format` field | not a plan | [`SAVED_PLAN`] |
//! | instance | its `tend.format` tag | 1 | [`INSTANCE`] |
//!
//! The rules, the same for all four:
//!
//! - A tend reads every older format and migrates it: the stores on their next write (a
//!   commit), instances by being kept as they are. Saved plans are the exception, see
//!   [`SAVED_PLAN`].
//! - A tend refuses a newer format with [`NewerFormat`] before it reads or writes what
//!   holds it: it never overwrites, deletes, replaces or destroys what a newer tend wrote,
//!   and never misreads it as its own.
//! - A format number only grows. A change that an older tend would misread takes a new
//!   number; the etcd root stays `/tend/v1/` for good, so an older tend always finds the
//!   `format` key instead of an empty project.
//!
//! Format 1 of each store and of instances is what tend 0.1.0 wrote, before formats were
//! marked; `testdata/formats/tend-0.1.0/` keeps it for the tests.

use std::fmt;

/// The format of the local store this tend writes, in `.tend/format`. Format 2 is format 1
/// (tend 0.1.0: no `.tend/format`) with the marker written; migrating is writing it. The
/// number covers the whole folder, the providers' files in it too.
pub const LOCAL_STATE: u32 = 2;

/// The format of the etcd store this tend writes, in the `format` key under the project's
/// root. Format 2 is format 1 (tend 0.1.0: no `format` key) with the key written, in the
/// same transaction as every commit; migrating is the next commit.
pub const ETCD_STATE: u32 = 2;

/// The format of saved plans this tend writes and reads. Format 2 writes the sets of
/// actions that many actions wait for once, as barriers; format 1 listed them in every
/// action's `after`.
///
/// An older saved plan is refused, not migrated: a plan is bound to the spec and the
/// instances observed when it was made, and a plan from another tend may have been planned
/// by other rules. Making it again (`tend plan -o`) costs one command and shows what this
/// tend would do. A newer one is refused as [`NewerFormat`]: upgrade tend to apply it.
pub const SAVED_PLAN: u32 = 2;

/// The format of the tags this tend puts on every instance it makes, in the `tend.format`
/// tag. Format 2 is format 1 (tend 0.1.0: no `tend.format` tag) with the tag. An instance
/// without the tag is read as format 1 and kept: lacking the tag never makes it outdated
/// (the tag is not part of the spec hash), and its replacements carry it.
pub const INSTANCE: u32 = 2;

/// The format of an instance whose tags carry no `tend.format`: one made by tend 0.1.0.
pub const UNMARKED: u32 = 1;

/// What carries a format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The local store, `.tend/`.
    LocalState,
    /// The etcd store of a project.
    EtcdState,
    /// A saved plan.
    SavedPlan,
    /// The tags of an instance.
    Instance,
}

impl Kind {
    /// The newest format of this kind that this tend reads (and the one it writes).
    pub fn known(self) -> u32 {
        match self {
            Kind::LocalState => LOCAL_STATE,
            Kind::EtcdState => ETCD_STATE,
            Kind::SavedPlan => SAVED_PLAN,
            Kind::Instance => INSTANCE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::LocalState | Kind::EtcdState => "state",
            Kind::SavedPlan => "plan",
            Kind::Instance => "instance",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Kind::LocalState | Kind::EtcdState => "written",
            Kind::SavedPlan => "saved",
            Kind::Instance => "made",
        }
    }

    /// What this tend did about it: nothing, said for each kind.
    fn left(self) -> &'static str {
        match self {
            Kind::LocalState | Kind::EtcdState => "nothing was read or written",
            Kind::SavedPlan => "nothing was applied",
            Kind::Instance => "nothing was planned or done, and the instance is left as it is",
        }
    }
}

/// Something written by a newer tend than this one, in a format this one does not know:
/// refused before it is read further or written, whatever it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewerFormat {
    /// What carries the format.
    pub kind: Kind,
    /// What it is, for the message: `the state in .tend`, `instance sim-000001 ...`.
    pub subject: String,
    /// The format it carries.
    pub found: u64,
}

impl fmt::Display for NewerFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} was {} by a newer tend ({} format {}; this tend reads up to {}): {}; upgrade tend (`tend --version` shows this one)",
            self.subject,
            self.kind.verb(),
            self.kind.name(),
            self.found,
            self.kind.known(),
            self.kind.left(),
        )
    }
}

impl std::error::Error for NewerFormat {}

impl NewerFormat {
    /// Whose fault it is: no one's but this tend's age; a newer tend is needed.
    pub fn fault(&self) -> crate::fault::Fault {
        crate::fault::Fault::Version
    }
}

/// `found` when this tend reads that format of `kind`; otherwise the refusal, naming
/// `subject` (made only then).
pub fn check(kind: Kind, found: u64, subject: impl FnOnce() -> String) -> Result<u64, NewerFormat> {
    if found <= u64::from(kind.known()) {
        return Ok(found);
    }
    Err(NewerFormat {
        kind,
        subject: subject(),
        found,
    })
}

/// Reads a format marker as tend writes it (`.tend/format`, the etcd `format` key): a
/// number from 1 up, surrounding blanks allowed. `None` for anything else (format 0 never
/// existed).
pub fn parse_marker(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|n| *n >= 1)
}

/// A format marker as tend writes it: the number and a newline.
pub fn marker(format: u32) -> String {
    format!("{format}\n")
}

/// Serde's default for a missing `format` in instance tags: [`UNMARKED`].
pub(crate) fn unmarked() -> u32 {
    UNMARKED
}

/// True for [`UNMARKED`]: such tags are written without a format, as tend 0.1.0 wrote
/// them, so what an older instance looks like never changes (its fingerprint neither).
pub(crate) fn is_unmarked(format: &u32) -> bool {
    *format == UNMARKED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_or_older_format_passes_and_a_newer_one_is_refused_naming_both() {
        assert_eq!(check(Kind::Instance, 1, || unreachable!()), Ok(1));
        assert_eq!(
            check(Kind::Instance, u64::from(INSTANCE), || unreachable!()),
            Ok(u64::from(INSTANCE))
        );
        let refused = check(Kind::LocalState, u64::from(LOCAL_STATE) + 1, || {
            "the state in .tend".to_owned()
        });
        let text = refused.map_err(|e| e.to_string()).err().unwrap_or_default();
        assert!(
            text.starts_with(&format!(
                "the state in .tend was written by a newer tend (state format {}; this tend reads up to {LOCAL_STATE})",
                LOCAL_STATE + 1
            )),
            "{text}"
        );
        assert!(text.contains("upgrade tend"), "{text}");
    }

    #[test]
    fn markers_read_back_what_tend_writes_and_nothing_else() {
        assert_eq!(parse_marker(marker(LOCAL_STATE).as_bytes()), Some(2));
        assert_eq!(parse_marker(b" 7 \n"), Some(7));
        assert_eq!(parse_marker(b"two"), None);
        assert_eq!(parse_marker(b"-1"), None);
        assert_eq!(parse_marker(b"0"), None);
        assert_eq!(parse_marker(&[0xff]), None);
    }
}
