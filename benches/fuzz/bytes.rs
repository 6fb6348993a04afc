//! Inputs for the parsers of bytes: random bytes, JSON soup, and mutations of a seed
//! corpus taken from the real format, byte by byte and value by value.

use serde_json::Value;

use crate::rng::Rng;

/// JSON that breaks what readers assume: numbers out of every range, deep nesting, strings
/// no writer makes.
const SNIPPETS: [&str; 30] = [
    "null",
    "true",
    "-1",
    "0",
    "-0",
    "1.5",
    "1e308",
    "1e309",
    "-1e309",
    "4294967295",
    "4294967296",
    "65536",
    "100001",
    "2147483648",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\\u202e\\u0301\u{202e}\"",
    "\"../../../../etc/passwd\"",
    "\"{{ instance.index }}\"",
    "\"{% for i in range(end=100000000) %}x{% endfor %}\"",
    "[]",
    "{}",
    "[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]",
    "{\"a\":{\"a\":{\"a\":{\"a\":{}}}}}",
];

/// Bytes for a parser, from `seeds` (whole files of the real format) or from nothing.
pub fn input(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let seed = if seeds.is_empty() {
        Vec::new()
    } else {
        rng.pick(seeds).clone()
    };
    match rng.below(100) {
        0..=7 => random(rng),
        8..=14 => soup(rng),
        15..=54 => json_mutation(rng, &seed),
        55..=89 => byte_mutation(rng, seed),
        _ => splice(rng, seeds),
    }
}

/// Random bytes, sometimes a megabyte of them.
pub fn random(rng: &mut Rng) -> Vec<u8> {
    let len = rng.size(1 << 20);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// JSON-looking tokens in any order.
fn soup(rng: &mut Rng) -> Vec<u8> {
    const TOKENS: [&str; 16] = [
        "{", "}", "[", "]", ":", ",", "\"", "\"a\"", "1", "-", "e", "\\", " ", "\n", "\"id\"",
        "\"spec\"",
    ];
    let n = rng.size(20_000);
    let mut out = String::new();
    for _ in 0..n {
        if rng.chance(10) {
            out.push_str(rng.pick::<&str>(&SNIPPETS));
        } else {
            out.push_str(rng.pick::<&str>(&TOKENS));
        }
    }
    out.into_bytes()
}

/// Nesting `depth` deep, closed or not.
pub fn nesting(rng: &mut Rng, depth: usize) -> String {
    let (open, close) = *rng.pick(&[("[", "]"), ("{\"a\":", "}"), ("[{\"a\":", "}]")]);
    let mut text = open.repeat(depth);
    if rng.chance(70) {
        text.push('1');
        text.push_str(&close.repeat(depth));
    }
    text
}

/// A depth for nesting: shallow, around serde_json's limit of 128, or deep.
pub fn depth(rng: &mut Rng) -> usize {
    *rng.pick(&[3, 64, 127, 128, 129, 1000, 100_000])
}

/// A string no writer would make: long, or made of characters that break displays.
pub fn odd_string(rng: &mut Rng) -> String {
    const ODD: [char; 14] = [
        '\u{202e}',
        '\u{200f}',
        '\u{0301}',
        '\u{0}',
        '\u{feff}',
        '\u{2028}',
        '\u{1f600}',
        'é',
        '"',
        '\\',
        '\n',
        '\t',
        '\u{7f}',
        '\u{fffd}',
    ];
    let len = rng.size(1 << 20);
    (0..len)
        .map(|_| {
            if rng.chance(50) {
                *rng.pick(&ODD)
            } else {
                char::from(b'a' + rng.below(26) as u8)
            }
        })
        .collect()
}

/// A seed changed value by value: each line that is JSON (a whole file is one line) has one
/// of its values replaced, removed, repeated or retyped.
fn json_mutation(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    if let Ok(mut value) = serde_json::from_slice::<Value>(seed) {
        return mutated(rng, &mut value);
    }
    let text = String::from_utf8_lossy(seed);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        return soup(rng);
    }
    for _ in 0..rng.between(1, 3) {
        let i = rng.below(lines.len());
        if let Ok(mut value) = serde_json::from_str::<Value>(&lines[i]) {
            lines[i] = String::from_utf8_lossy(&mutated(rng, &mut value)).into_owned();
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out.into_bytes()
}

/// Placeholder for raw JSON text put in after serialising.
const RAW: &str = "@@raw-7f3a@@";

fn mutated(rng: &mut Rng, value: &mut Value) -> Vec<u8> {
    let mut raw = Vec::new();
    for _ in 0..rng.between(1, 4) {
        let steps = rng.below(8);
        let node = random_node(rng, value, steps);
        change(rng, node, &mut raw);
    }
    let text = if rng.chance(50) {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let placeholder = format!("\"{RAW}\"");
    let mut pieces = text.split(&placeholder);
    out.push_str(pieces.next().unwrap_or_default());
    for (piece, snippet) in pieces.zip(raw.iter().chain(std::iter::repeat(&String::new()))) {
        out.push_str(snippet);
        out.push_str(piece);
    }
    out.into_bytes()
}

/// A node of `value`, found by a random walk of at most `steps` from the root.
fn random_node<'a>(rng: &mut Rng, value: &'a mut Value, steps: usize) -> &'a mut Value {
    let len = match &*value {
        Value::Array(items) => items.len(),
        Value::Object(map) => map.len(),
        _ => 0,
    };
    if steps == 0 || len == 0 {
        return value;
    }
    let i = rng.below(len);
    match value {
        Value::Array(items) => random_node(rng, &mut items[i], steps - 1),
        Value::Object(map) => {
            let child = map.values_mut().nth(i).expect("an index below the length");
            random_node(rng, child, steps - 1)
        }
        other => other,
    }
}

/// One change to `node`; raw JSON snippets go to `raw`, in order.
fn change(rng: &mut Rng, node: &mut Value, raw: &mut Vec<String>) {
    match rng.below(9) {
        0 | 1 => {
            raw.push(rng.pick(&SNIPPETS).to_string());
            *node = Value::String(RAW.to_owned());
        }
        2 => {
            let d = depth(rng);
            raw.push(nesting(rng, d));
            *node = Value::String(RAW.to_owned());
        }
        3 => *node = Value::String(odd_string(rng)),
        4 => remove_one(rng, node),
        5 => repeat_one(rng, node),
        6 => retype(node),
        7 => add_key(rng, node),
        _ => *node = Value::from(*rng.pick(&[0u64, 1, 2, 3, 100_000, u32::MAX.into()])),
    }
}

fn remove_one(rng: &mut Rng, node: &mut Value) {
    match node {
        Value::Array(items) if !items.is_empty() => {
            let i = rng.below(items.len());
            items.remove(i);
        }
        Value::Object(map) if !map.is_empty() => {
            let key = map.keys().nth(rng.below(map.len())).cloned();
            if let Some(key) = key {
                map.remove(&key);
            }
        }
        other => *other = Value::Null,
    }
}

fn repeat_one(rng: &mut Rng, node: &mut Value) {
    if let Value::Array(items) = node {
        if let Some(item) = items.first().cloned() {
            let times = *rng.pick(&[1, 2, 10, 1000]);
            items.extend(std::iter::repeat_n(item, times));
            return;
        }
    }
    let copy = node.clone();
    *node = Value::Array(vec![copy.clone(), copy]);
}

/// A number as a string, a string as a number, anything else as a string.
fn retype(node: &mut Value) {
    let new = match &*node {
        Value::String(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or(Value::Bool(true)),
        other => Value::String(other.to_string()),
    };
    *node = new;
}

fn add_key(rng: &mut Rng, node: &mut Value) {
    match node {
        Value::Object(map) => {
            let key = rng.pick(&["unknown", "", "size", "ids", "format", "__proto__"]);
            map.insert((*key).to_owned(), Value::Null);
        }
        other => *other = serde_json::json!({ "a": other.clone() }),
    }
}

/// A seed changed byte by byte: flipped bits, cut, repeated, interesting bytes put in.
fn byte_mutation(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.between(1, 8) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(8) {
            0 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
            1 if at < bytes.len() => bytes[at] = *rng.pick(b"\0\xff\"{}[],:\\\n0-e"),
            2 => bytes.truncate(at),
            3 => {
                let end = (at + rng.size(4096)).min(bytes.len());
                bytes.drain(at..end);
            }
            4 => {
                let end = (at + rng.size(4096)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            5 => {
                let snippet = rng.pick(&SNIPPETS).as_bytes().to_vec();
                bytes.splice(at..at, snippet);
            }
            6 => {
                let odd: &[u8] = rng.pick::<&[u8]>(&[
                    &b"\xc3\x28"[..],
                    b"\xf0\x90\x80",
                    b"\xed\xa0\x80",
                    b"\xff",
                ]);
                bytes.splice(at..at, odd.iter().copied());
            }
            _ => {
                let d = depth(rng);
                let nested = nesting(rng, d).into_bytes();
                bytes.splice(at..at, nested);
            }
        }
    }
    bytes
}

/// The start of one seed and the end of another.
fn splice(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if seeds.is_empty() {
        return random(rng);
    }
    let a = rng.pick(seeds);
    let b = rng.pick(seeds);
    let mut out = a[..rng.below(a.len() + 1)].to_vec();
    out.extend_from_slice(&b[rng.below(b.len() + 1)..]);
    out
}
