//! The stdlib: Starlark modules under `stdlib/`, embedded in the binary, loaded as `@tend//x.star`.

/// Every stdlib module: its name (as in `@tend//name`) and its source.
pub const MODULES: [(&str, &str); 2] = [
    ("flavors.star", include_str!("../../../stdlib/flavors.star")),
    (
        "policies.star",
        include_str!("../../../stdlib/policies.star"),
    ),
];

/// The source of stdlib module `name`, if there is one.
pub fn source(name: &str) -> Option<&'static str> {
    MODULES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The names of all stdlib modules, for error messages.
pub fn names() -> Vec<&'static str> {
    MODULES.iter().map(|(n, _)| *n).collect()
}
