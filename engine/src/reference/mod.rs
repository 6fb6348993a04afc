//! The reference pages under `docs/reference/`, rendered from the code itself: the doc
//! comments of the Starlark builtins, the docstrings of the stdlib modules, and the
//! comments and contracts of the shipped Nickel contract. A test in the binary compares
//! them with the committed pages, so the pages cannot drift from the code.

#[cfg(feature = "nickel")]
mod nickel;
mod starlark;

#[cfg(feature = "nickel")]
pub use nickel::nickel_markdown;
pub use starlark::starlark_markdown;

/// The first lines of every generated page: where it comes from and how to make it again.
pub fn generated_header(source: &str) -> String {
    format!(
        "<!-- Generated from {source} by `TEND_UPDATE_DOCS=1 cargo test --bin tend reference`.\n     \
         Edit the code's doc comments, not this file: a test fails when it is stale. -->\n"
    )
}
