//! `tend stdlib`

use engine::lang::stdlib;

use crate::failure::Failure;

/// Lists every stdlib module with its functions, signatures and docstrings.
pub fn run() -> Result<i32, Failure> {
    for (name, source) in stdlib::MODULES {
        println!("@tend//{name}");
        for f in stdlib::functions(source) {
            println!("  {}", f.signature);
            for line in f.doc.lines() {
                println!("      {line}");
            }
        }
        println!();
    }
    Ok(0)
}
