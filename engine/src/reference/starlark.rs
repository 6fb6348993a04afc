//! `docs/reference/starlark.md`: every builtin of a spec, every test builtin and every
//! stdlib function, from their doc comments and docstrings.

use std::fmt::Write as _;

use starlark::docs::{DocItem, DocMember, DocParam};
use starlark::environment::GlobalsBuilder;
use starlark::typing::Ty;

use crate::lang::stdlib;
use crate::lang::tend_builtins;
use crate::testing::builtins::test_builtins;

/// The Starlark reference page, in Markdown.
pub fn starlark_markdown() -> String {
    let spec = functions(GlobalsBuilder::new().with(tend_builtins));
    let tests = functions(GlobalsBuilder::new().with(test_builtins));
    let mut page = super::generated_header(
        "engine/src/lang/builtins.rs, engine/src/testing/builtins.rs and stdlib/*.star",
    );
    page.push_str(
        "\n# Starlark reference\n\n\
         Every function a spec can call, with the parameters tend checks where it is called.\n\
         A spec also has Starlark's own builtins, `struct()`, `json` and `print()`.\n\n\
         - [Spec builtins](#spec-builtins): ",
    );
    page.push_str(&index(&spec));
    page.push_str(
        "\n- [Test builtins](#test-builtins), in `*_test.star` files under `tend test`: ",
    );
    page.push_str(&index(&tests));
    page.push_str("\n- [The stdlib](#the-stdlib): ");
    let modules: Vec<String> = stdlib::MODULES
        .iter()
        .map(|(name, _)| format!("[`@tend//{name}`](#tend{})", anchor(name)))
        .collect();
    page.push_str(&modules.join(", "));
    page.push_str("\n\n## Spec builtins\n");
    for function in &spec {
        function.render(&mut page);
    }
    page.push_str(
        "\n## Test builtins\n\nOnly in `*_test.star` files run by `tend test`, beside the spec \
         builtins. A test is a top-level `def test_*()`.\n",
    );
    for function in &tests {
        function.render(&mut page);
    }
    page.push_str(
        "\n## The stdlib\n\nStarlark modules shipped inside tend, loaded with \
         `load(\"@tend//<module>\", \"<name>\", ...)`. `tend stdlib` lists them too.\n",
    );
    for (name, source) in stdlib::MODULES {
        let _ = write!(page, "\n### `@tend//{name}`\n");
        for function in stdlib::functions(source) {
            let _ = write!(page, "\n```python\n{}\n```\n", function.signature);
            if !function.doc.is_empty() {
                let _ = write!(page, "\n{}\n", function.doc);
            }
        }
    }
    page
}

/// One documented builtin.
struct Function {
    name: String,
    signature: String,
    summary: String,
    details: Option<String>,
}

impl Function {
    fn render(&self, page: &mut String) {
        let _ = write!(
            page,
            "\n### `{}`\n\n```python\n{}\n```\n\n{}\n",
            self.name, self.signature, self.summary
        );
        if let Some(details) = &self.details {
            let _ = writeln!(page, "\n{details}");
        }
    }
}

/// The functions a globals builder defines, in the order the code defines them.
fn functions(builder: GlobalsBuilder) -> Vec<Function> {
    builder
        .build()
        .documentation()
        .members
        .into_iter()
        .filter_map(|(name, item)| match item {
            DocItem::Member(DocMember::Function(f)) => {
                let docs = f.docs.unwrap_or_else(|| starlark::docs::DocString {
                    summary: String::new(),
                    details: None,
                    examples: None,
                });
                Some(Function {
                    signature: signature(&name, f.params.fmt_params()),
                    name,
                    summary: docs.summary,
                    details: docs.details,
                })
            }
            _ => None,
        })
        .collect()
}

/// `name(a: str, b: int = 1, *, c = None)`, one parameter per line when long.
fn signature<'a>(
    name: &str,
    params: impl Iterator<Item = starlark::docs::FmtParam<&'a DocParam>>,
) -> String {
    use starlark::docs::FmtParam;
    let parts: Vec<String> = params
        .map(|p| match p {
            FmtParam::Regular(p) => param(p),
            FmtParam::Args(p) => format!("*{}", param(p)),
            FmtParam::Kwargs(p) => format!("**{}", param(p)),
            FmtParam::Slash => "/".to_owned(),
            FmtParam::Star => "*".to_owned(),
        })
        .collect();
    let one_line = format!("{name}({})", parts.join(", "));
    if one_line.len() <= 80 {
        return one_line;
    }
    let mut text = format!("{name}(\n");
    for part in parts {
        let _ = writeln!(text, "    {part},");
    }
    text.push(')');
    text
}

fn param(p: &DocParam) -> String {
    let mut text = p.name.clone();
    if p.typ != Ty::any() {
        let _ = write!(text, ": {}", p.typ);
    }
    if let Some(default) = &p.default_value {
        let _ = write!(text, " = {default}");
    }
    text
}

/// `[`a`](#a), [`b`](#b)`.
fn index(functions: &[Function]) -> String {
    functions
        .iter()
        .map(|f| format!("[`{}`](#{})", f.name, anchor(&f.name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes.
pub(super) fn anchor(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}
