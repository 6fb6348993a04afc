//! What the spec generators of both languages share: nesting, token soups, and mutations
//! of a valid spec token by token.

use crate::rng::Rng;

/// `open` `depth` times around `inner`, closed again most of the time.
pub fn nested(rng: &mut Rng, open: &str, close: &str, depth: usize, inner: &str) -> String {
    let mut text = open.repeat(depth);
    text.push_str(inner);
    if rng.chance(80) {
        text.push_str(&close.repeat(depth));
    } else {
        text.push_str(&close.repeat(depth / 2));
    }
    text
}

/// Tokens of `vocabulary` in any order, separated by spaces or not.
pub fn soup(rng: &mut Rng, vocabulary: &[&str]) -> String {
    let mut text = String::new();
    for _ in 0..rng.size(5_000) {
        text.push_str(rng.pick::<&str>(vocabulary));
        if rng.chance(60) {
            text.push(' ');
        }
    }
    text
}

/// Splits spec text into tokens: string literals, words, single symbols, whitespace.
fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let len = if c == '"' {
            rest[1..].find('"').map_or(rest.len(), |end| end + 2)
        } else if c.is_alphanumeric() || c == '_' {
            rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len())
        } else if c.is_whitespace() {
            rest.find(|c: char| !c.is_whitespace())
                .unwrap_or(rest.len())
        } else {
            c.len_utf8()
        };
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    out
}

/// `text` with one token dropped, repeated, swapped with the next, or replaced by one of
/// `replacements`.
pub fn mutate_tokens(rng: &mut Rng, text: &str, replacements: &[&str]) -> String {
    let mut tokens: Vec<String> = tokens(text).into_iter().map(str::to_owned).collect();
    if tokens.is_empty() {
        return text.to_owned();
    }
    let at = rng.below(tokens.len());
    match rng.below(5) {
        0 => {
            tokens.remove(at);
        }
        1 => {
            let copy = tokens[at].clone();
            tokens.insert(at, copy);
        }
        2 if at + 1 < tokens.len() => tokens.swap(at, at + 1),
        _ => {
            // Replace a value (a string or a word that is not a keyword argument's name).
            let values: Vec<usize> = (0..tokens.len())
                .filter(|i| {
                    let t = &tokens[*i];
                    t.starts_with('"') || t.chars().all(|c| c.is_ascii_digit())
                })
                .collect();
            let at = if values.is_empty() {
                at
            } else {
                *rng.pick(&values)
            };
            tokens[at] = rng.pick(replacements).to_string();
        }
    }
    tokens.concat()
}
