//! `docs/reference/nickel.md`: the shipped contract `tend.ncl`, read from its own source:
//! each contract with the comment above it, and each function of the exported record with
//! its comment and the record of arguments it takes.

use std::fmt::Write as _;

use crate::lang::nickel::shipped::TEND_NCL;

/// The Nickel reference page, in Markdown.
pub fn nickel_markdown() -> String {
    let lines: Vec<&str> = TEND_NCL.lines().collect();
    let mut page = super::generated_header("engine/src/lang/nickel/tend.ncl");
    page.push_str("\n# Nickel reference\n\n");
    page.push_str(&leading_comment(&lines, 0));
    page.push_str(
        "\n\nThe fields mean what the Starlark builtins of the same names mean: see the \
         [Starlark reference](starlark.md).\n\n## Contracts\n",
    );
    for (at, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("let ") else {
            continue;
        };
        let Some((name, _)) = rest.split_once("Contract =") else {
            continue;
        };
        let _ = write!(page, "\n### `{name}Contract`\n\n");
        let comment = comment_above(&lines, at);
        if !comment.is_empty() {
            let _ = write!(page, "{comment}\n\n");
        }
        let export = format!("  {name} = {name}Contract,");
        if lines.contains(&export.as_str()) {
            let _ = write!(page, "Exported as `tend.{name}`.\n\n");
        } else {
            page.push_str("Not exported: used inside the other contracts.\n\n");
        }
        let body = block(&lines, at);
        let _ = write!(page, "```nickel\n{body}\n```\n");
    }
    page.push_str(
        "\n## Functions\n\nBeside the contracts (`Spec`, `Group`, `Flavor`, `Health`, \
         `Provider`, `Update`, `Balancer`, `Resources`, `Secret`), the record \
         `import \"tend.ncl\"` gives these functions. A function shown taking a record \
         checks its arguments with that contract; the others take the one value named.\n",
    );
    let mut section = String::new();
    for (at, line) in lines.iter().enumerate() {
        if let Some(name) = section_name(line) {
            let _ = write!(page, "\n### `tend.{name}`\n");
            let comment = comment_above(&lines, at);
            if !comment.is_empty() {
                let _ = write!(page, "\n{comment}\n");
            }
            section = format!("tend.{name}.");
            continue;
        }
        let Some((indent, name, parameter)) = function_name(&lines, line) else {
            continue;
        };
        let qualified = if indent == 2 {
            format!("tend.{name}")
        } else {
            format!("{section}{name}")
        };
        let arguments = arguments(&lines[at..]).unwrap_or(parameter);
        let level = if indent == 2 { "###" } else { "####" };
        let _ = write!(
            page,
            "\n{level} `{qualified}`\n\n```nickel\n{qualified} {arguments}\n```\n"
        );
        let comment = comment_above(&lines, at);
        if !comment.is_empty() {
            let _ = write!(page, "\n{comment}\n");
        }
    }
    page
}

/// The comment at the top of the file, without its example.
fn leading_comment(lines: &[&str], from: usize) -> String {
    let mut text = Vec::new();
    for line in &lines[from..] {
        let Some(comment) = line.strip_prefix('#') else {
            break;
        };
        text.push(comment.strip_prefix(' ').unwrap_or(comment));
    }
    let mut page = String::new();
    let mut in_example = false;
    for line in text {
        let example = line.starts_with("  ");
        if example && !in_example {
            page.push_str("\n```nickel\n");
        } else if !example && in_example {
            page.push_str("```\n");
        }
        in_example = example;
        page.push_str(line.strip_prefix("  ").filter(|_| example).unwrap_or(line));
        page.push('\n');
    }
    if in_example {
        page.push_str("```\n");
    }
    page.trim_end().to_owned()
}

/// The `#` lines right above line `at`, as one paragraph.
fn comment_above(lines: &[&str], at: usize) -> String {
    let mut comment = Vec::new();
    for line in lines[..at].iter().rev() {
        match line.trim_start().strip_prefix('#') {
            Some(text) => comment.push(text.trim()),
            None => break,
        }
    }
    comment.reverse();
    comment.join(" ")
}

/// A contract's text: from `let X =` to the `in` that closes it, without either.
fn block(lines: &[&str], at: usize) -> String {
    let first = lines[at]
        .split_once('=')
        .map_or("", |(_, rest)| rest.trim());
    if let Some(one_line) = first.strip_suffix(" in") {
        return one_line.to_owned();
    }
    let mut text: Vec<&str> = vec![first];
    for line in &lines[at + 1..] {
        if *line == "in" {
            break;
        }
        text.push(line);
    }
    if first.is_empty() {
        // `let X =` alone on its line: the contract follows, indented one step.
        text.remove(0);
        return text
            .iter()
            .map(|l| l.strip_prefix("  ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
    }
    text.join("\n")
}

/// `flavors` from `  flavors = {`: a section of functions in the exported record (a
/// capitalized name is a contract, such as `Spec`).
fn section_name(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("  ")?;
    if rest.starts_with(' ') {
        return None;
    }
    let (name, value) = rest.split_once(" = ")?;
    (value.trim() == "{" && name.starts_with(|c: char| c.is_ascii_lowercase())).then_some(name)
}

/// The indent, name and parameter of a function of the exported record: `name = fun p =>`,
/// or at the top, `name = other,` where `let other = fun p =>` is defined above.
fn function_name<'a>(lines: &[&str], line: &'a str) -> Option<(usize, &'a str, String)> {
    let indent = line.len() - line.trim_start().len();
    if indent != 2 && indent != 4 {
        return None;
    }
    let (name, value) = line.trim_start().split_once(" = ")?;
    if name.contains(' ') {
        return None;
    }
    if let Some(parameter) = parameter_of(value) {
        return Some((indent, name, parameter));
    }
    let other = value.strip_suffix(',')?;
    let definition = format!("let {other} = ");
    let defined = lines.iter().find_map(|l| l.strip_prefix(&definition))?;
    Some((indent, name, parameter_of(defined)?))
}

/// `p` from `fun p =>`.
fn parameter_of(value: &str) -> Option<String> {
    let rest = value.strip_prefix("fun ")?;
    Some(rest.split_once(" =>")?.0.to_owned())
}

/// The record after the first `args |` in a function's text, on one line.
fn arguments(lines: &[&str]) -> Option<String> {
    let text = lines
        .iter()
        .take(40)
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    // Only a function that takes `args` checks them with a record contract.
    if !lines.first()?.contains("fun args =>") {
        return None;
    }
    let after = &text[text.find("args")?..];
    let after = after[after.find('|')? + 1..].trim_start();
    if !after.starts_with('{') {
        return None;
    }
    let mut depth = 0usize;
    for (i, c) in after.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    let record = &after[..=i];
                    let fields: Vec<&str> = record[1..record.len() - 1]
                        .split(",\n")
                        .flat_map(|part| part.split('\n'))
                        .map(str::trim)
                        .filter(|f| !f.is_empty())
                        .collect();
                    let fields: Vec<String> = fields
                        .iter()
                        .map(|f| f.trim_end_matches(',').to_owned())
                        .collect();
                    return Some(if fields.is_empty() {
                        "{}".to_owned()
                    } else {
                        format!("{{ {} }}", fields.join(", "))
                    });
                }
            }
            _ => {}
        }
    }
    None
}
