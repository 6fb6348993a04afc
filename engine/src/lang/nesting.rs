//! How deep a source nests, read from its text before it is parsed: Starlark and Nickel
//! specs, and flavor templates.
//!
//! Starlark's compiler, Nickel's evaluator and Tera's parser recurse once per level an
//! expression nests: some thousands of levels (`[[[[…`, `f(f(f(…`, `- - - 1`,
//! `1 + 1 + … + 1`, `if c then if c then …`) overflow the stack, which aborts the process.
//! So a text nesting deeper than its language's limit is refused at the place it gets too
//! deep, before it is parsed.

use crate::diagnostic::{Diagnostic, SourceLocation};

/// What counts as nesting in one language, and how much of it is allowed.
pub struct Rules {
    /// The deepest an expression may nest: brackets, and the operators chained inside one.
    pub max: usize,
    /// Words that nest what follows them, like operators.
    words: &'static [&'static str],
    /// True when a line break at the top ends an expression.
    newline_ends: bool,
}

/// Starlark specs.
pub const STARLARK: Rules = Rules {
    max: 1_000,
    words: &["not", "and", "or", "if", "else", "lambda", "in"],
    newline_ends: true,
};

/// Nickel specs.
pub const NICKEL: Rules = Rules {
    max: 1_000,
    words: &["if", "then", "else", "fun", "in", "and", "or"],
    newline_ends: false,
};

/// Flavor templates (Tera), rendered on threads with small stacks.
pub const TEMPLATE: Rules = Rules {
    max: 100,
    words: &["not", "and", "or", "in", "is", "if", "else"],
    newline_ends: false,
};

/// Nesting so far: one count of chained operators per open bracket (and one for the
/// statement), and their sum.
struct Depth {
    segments: Vec<usize>,
    operators: usize,
}

impl Depth {
    fn level(&self) -> usize {
        self.segments.len() + self.operators
    }

    fn open(&mut self) {
        self.segments.push(0);
    }

    fn close(&mut self) {
        if self.segments.len() > 1 {
            self.operators -= self.segments.pop().unwrap_or(0);
        }
    }

    /// A comma, or a statement's end at the top: what follows is a sibling.
    fn next_item(&mut self) {
        if let Some(last) = self.segments.last_mut() {
            self.operators -= *last;
            *last = 0;
        }
    }

    fn operator(&mut self) {
        if let Some(last) = self.segments.last_mut() {
            *last += 1;
            self.operators += 1;
        }
    }
}

/// An error at the first place `source` nests deeper than `rules` allow.
pub fn check(display: &str, source: &str, rules: &Rules) -> Result<(), Diagnostic> {
    match too_deep(source, rules) {
        Some(at) => Err(diagnostic(display, source, at, rules.max)),
        None => Ok(()),
    }
}

/// The byte offset where `source` first nests deeper than `rules` allow.
pub fn too_deep(source: &str, rules: &Rules) -> Option<usize> {
    let mut depth = Depth {
        segments: vec![0],
        operators: 0,
    };
    let chars: Vec<(usize, char)> = source.char_indices().collect();
    let mut i = 0;
    while let Some(&(at, c)) = chars.get(i) {
        i += 1;
        match c {
            '#' => i = skip_while(&chars, i, |c| c != '\n'),
            '"' | '\'' => i = skip_string(&chars, i - 1),
            '(' | '[' | '{' => depth.open(),
            ')' | ']' | '}' => depth.close(),
            ',' | ';' => depth.next_item(),
            '\n' if rules.newline_ends && depth.segments.len() == 1 => depth.next_item(),
            '+' | '-' | '*' | '/' | '%' | '|' | '&' | '^' | '~' | '<' | '>' | '=' | '!' | '.'
            | ':' => depth.operator(),
            c if c.is_alphabetic() || c == '_' => {
                let end = skip_while(&chars, i, |c| c.is_alphanumeric() || c == '_');
                let word: String = chars[i - 1..end].iter().map(|(_, c)| c).collect();
                if rules.words.contains(&word.as_str()) {
                    depth.operator();
                }
                i = end;
            }
            _ => {}
        }
        if depth.level() > rules.max {
            return Some(at);
        }
    }
    None
}

fn skip_while(chars: &[(usize, char)], mut i: usize, keep: impl Fn(char) -> bool) -> usize {
    while chars.get(i).is_some_and(|(_, c)| keep(*c)) {
        i += 1;
    }
    i
}

/// The index after the string literal that starts at `start` (with its quote).
fn skip_string(chars: &[(usize, char)], start: usize) -> usize {
    let quote = chars[start].1;
    let triple = (1..3).all(|k| chars.get(start + k).is_some_and(|(_, c)| *c == quote));
    let mut i = start + if triple { 3 } else { 1 };
    while let Some(&(_, c)) = chars.get(i) {
        if c == '\\' {
            i += 2;
            continue;
        }
        if c == '\n' && !triple {
            return i;
        }
        if c == quote {
            let closes =
                !triple || (1..3).all(|k| chars.get(i + k).is_some_and(|(_, c)| *c == quote));
            if closes {
                return i + if triple { 3 } else { 1 };
            }
        }
        i += 1;
    }
    i
}

fn diagnostic(display: &str, source: &str, at: usize, max: usize) -> Diagnostic {
    let line_start = source[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[at..].find('\n').map_or(source.len(), |i| at + i);
    let line_text = &source[line_start..line_end];
    let location = SourceLocation {
        file: display.to_owned(),
        line: source[..at].matches('\n').count() + 1,
        column: source[line_start..at].chars().count() + 1,
        // A line nesting this deep is long: show its start only.
        line_text: line_text.chars().take(200).collect(),
        width: 1,
    };
    Diagnostic::new(
        format!("the spec nests more than {max} levels deep here"),
        Some(location),
    )
    .with_note("help: build deep values with a loop or a function instead of writing them out")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_specs_pass() {
        let spec =
            "x = [f(a, -b) for a in range(3) if not a]  # ((((\ny = {\"k\": \"(((\" + '[[['}\n";
        assert!(check("main.star", spec, &STARLARK).is_ok());
        let wide = format!("ids = [{}]\n", vec!["-1"; 50_000].join(", "));
        assert!(check("main.star", &wide, &STARLARK).is_ok());
        let many = "x = 1 + 1\n".repeat(5_000);
        assert!(check("main.star", &many, &STARLARK).is_ok());
    }

    #[test]
    fn nickel_and_templates_have_their_own_words() {
        let nickel = format!("{{ size = {}1 }}", "if true then ".repeat(600));
        assert!(check("main.ncl", &nickel, &NICKEL).is_err());
        assert!(check("main.ncl", "let x = 1 in\n{ a = [x, x] }", &NICKEL).is_ok());
        assert!(too_deep("{{ (((1))) + instance.index }}", &TEMPLATE).is_none());
        assert!(too_deep(&format!("{{{{ {}1 }}}}", "(".repeat(200)), &TEMPLATE).is_some());
    }

    #[test]
    fn deep_nesting_is_refused_where_it_gets_too_deep() {
        for deep in [
            format!("x = {}1{}\n", "[".repeat(1_001), "]".repeat(1_001)),
            format!("\nx = {}1\n", "-".repeat(5_000)),
            format!("x = {}1\n", "1 + ".repeat(5_000)),
            format!("x = {}1\n", "not ".repeat(5_000)),
            format!("x = {}1{}\n", "f(".repeat(1_001), ")".repeat(1_001)),
        ] {
            let error = check("main.star", &deep, &STARLARK)
                .err()
                .map(|d| d.to_string());
            let error = error.unwrap_or_default();
            assert!(error.contains("nests more than 1000 levels"), "{error}");
            assert!(error.contains("--> main.star:"), "{error}");
        }
    }
}
