//! The stdlib: Starlark modules under `stdlib/`, embedded in the binary, loaded as `@tend//x.star`.

/// Every stdlib module: its name (as in `@tend//name`) and its source.
pub const MODULES: [(&str, &str); 4] = [
    ("flavors.star", include_str!("../../../stdlib/flavors.star")),
    ("health.star", include_str!("../../../stdlib/health.star")),
    (
        "policies.star",
        include_str!("../../../stdlib/policies.star"),
    ),
    (
        "services.star",
        include_str!("../../../stdlib/services.star"),
    ),
];

/// A function of a stdlib module, as `tend stdlib` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StdlibFunction {
    /// `name(params)`.
    pub signature: String,
    /// Its docstring, dedented.
    pub doc: String,
}

/// The top-level functions of a stdlib module's source, with their docstrings.
pub fn functions(source: &str) -> Vec<StdlibFunction> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(rest) = lines[i].strip_prefix("def ") else {
            i += 1;
            continue;
        };
        let mut signature = rest.trim_end().to_owned();
        while !signature.ends_with(':') && i + 1 < lines.len() {
            i += 1;
            signature.push(' ');
            signature.push_str(lines[i].trim());
        }
        let signature = signature.trim_end_matches(':').to_owned();
        let mut doc = Vec::new();
        if let Some(first) = lines
            .get(i + 1)
            .map(|l| l.trim())
            .filter(|l| l.starts_with("\"\"\""))
        {
            let body = &first[3..];
            if let Some(one_line) = body.strip_suffix("\"\"\"") {
                doc.push(one_line.to_owned());
                i += 1;
            } else {
                doc.push(body.to_owned());
                i += 2;
                while i < lines.len() && !lines[i].trim_end().ends_with("\"\"\"") {
                    doc.push(lines[i].trim().to_owned());
                    i += 1;
                }
                if let Some(last) = lines.get(i) {
                    doc.push(last.trim().trim_end_matches("\"\"\"").to_owned());
                }
            }
        }
        while doc.last().is_some_and(|l| l.is_empty()) {
            doc.pop();
        }
        found.push(StdlibFunction {
            signature,
            doc: doc.join("\n"),
        });
        i += 1;
    }
    found
}

/// The source of stdlib module `name`, if there is one.
pub fn source(name: &str) -> Option<&'static str> {
    MODULES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The names of all stdlib modules, for error messages.
pub fn names() -> Vec<&'static str> {
    MODULES.iter().map(|(n, _)| *n).collect()
}
