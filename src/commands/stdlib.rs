//! `tend stdlib`

use engine::lang::stdlib;

use crate::failure::Failure;

/// Lists every stdlib module with its functions, signatures and docstrings.
pub fn run() -> Result<i32, Failure> {
    for (name, source) in stdlib::MODULES {
        crate::outln!("@tend//{name}");
        for f in stdlib::functions(source) {
            crate::outln!("  {}", f.signature);
            for line in f.doc.lines() {
                crate::outln!("      {line}");
            }
        }
        crate::outln!();
    }
    Ok(0)
}
