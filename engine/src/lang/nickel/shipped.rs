//! What the binary ships for Nickel specs: the contract `tend.ncl`, and the small program
//! that applies its `Spec` to a user's spec. Both live in memory, in a folder that exists
//! only in Nickel's source cache, so nothing is written to disk and no file on disk can
//! stand in for them (but a `tend.ncl` beside the spec, which Nickel's imports find first).

use std::path::{Path, PathBuf};

use nickel_lang_core::cache::{CacheHub, InputFormat, SourcePath};

/// The contract, as shipped.
pub const TEND_NCL: &str = include_str!("tend.ncl");

/// The folder the shipped files appear in: Nickel's imports look here after the importing
/// file's own folder.
pub fn folder() -> PathBuf {
    PathBuf::from(concat!("/@tend/nickel/", env!("CARGO_PKG_VERSION")))
}

/// The shipped contract's path in that folder.
pub fn contract_path() -> PathBuf {
    folder().join("tend.ncl")
}

/// The path of the program that checks a user's spec.
pub fn wrapper_path() -> PathBuf {
    folder().join("spec.ncl")
}

/// The program that evaluates the user's spec under the contract.
pub fn wrapper(spec: &Path) -> String {
    let mut quoted = String::new();
    for c in spec.to_string_lossy().chars() {
        if matches!(c, '\\' | '"' | '%') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    format!("(import \"{quoted}\") | (import \"tend.ncl\").Spec\n")
}

/// Puts the contract and the user's spec text in Nickel's source cache, before any import
/// is resolved.
pub fn register(cache: &mut CacheHub, spec: &Path, text: String) {
    cache.sources.add_string(
        SourcePath::Path(contract_path(), InputFormat::Nickel),
        TEND_NCL.to_owned(),
    );
    cache.sources.add_string(
        SourcePath::Path(spec.to_path_buf(), InputFormat::Nickel),
        text,
    );
}
