//! Nickel specs checked by tend's contract: valid ones, almost valid ones (a valid one
//! mutated) and garbage (deep nesting, huge strings and arrays, odd unicode, runaway
//! recursion, imports that leave the folder).

use crate::bytes::odd_string;
use crate::rng::Rng;
use crate::text::{mutate_tokens, nested, soup};

/// A spec: valid 40%, almost valid 35%, garbage 25% of the time.
pub fn spec(rng: &mut Rng) -> Vec<u8> {
    match rng.below(100) {
        0..=39 => valid(rng).into_bytes(),
        40..=74 => almost_valid(rng).into_bytes(),
        _ => garbage(rng),
    }
}

const NAMES: [&str; 6] = ["web", "db", "api", "cache", "worker", "edge"];

/// A spec the contract accepts (mostly).
pub fn valid(rng: &mut Rng) -> String {
    let mut out = String::from("let tend = import \"tend.ncl\" in\n");
    if rng.chance(30) {
        out.push_str("let server = fun port => [\"srv\", \"--port\", port] in\n");
    }
    out.push_str("{\n");
    if rng.chance(80) {
        out.push_str(&format!("  project = \"fuzz-{}\",\n", rng.below(100)));
    }
    if rng.chance(15) {
        out.push_str("  ports = \"21000-21999\",\n");
    }
    out.push_str("  groups = {\n");
    let mut names: Vec<String> = Vec::new();
    for i in 0..rng.between(1, 5) {
        let name = format!("{}{}", rng.pick(&NAMES), i);
        out.push_str(&format!("    {name} = {},\n", group(rng, &names)));
        names.push(name);
    }
    out.push_str("  },\n}\n");
    out
}

fn group(rng: &mut Rng, earlier: &[String]) -> String {
    let mut fields = vec![allocation(rng), format!("provider = {}", provider(rng))];
    fields.push(format!("flavor = {}", flavor(rng, earlier)));
    if !earlier.is_empty() && rng.chance(40) {
        fields.push(format!("depends_on = [\"{}\"]", rng.pick(earlier)));
    }
    if rng.chance(30) {
        fields.push(
            rng.pick(&[
                "update = { recreate = {} }",
                "update = { rolling = { max_surge = 1 } }",
                "update = { rolling = { max_unavailable = 2, on_failure = \"rollback\" } }",
            ])
            .to_string(),
        );
    }
    if rng.chance(8) {
        fields.push(format!("expose = {{ port = {} }}", rng.between(9000, 9100)));
    }
    format!("{{ {} }}", fields.join(", "))
}

fn allocation(rng: &mut Rng) -> String {
    if rng.chance(70) {
        format!("size = {}", rng.below(6))
    } else {
        let ids: Vec<String> = (0..rng.below(4))
            .map(|i| format!("\"{}\"", ["a", "b", "c", "d"][i]))
            .collect();
        format!("ids = [{}]", ids.join(", "))
    }
}

fn provider(rng: &mut Rng) -> String {
    rng.pick(&[
        "{ sim = {} }",
        "{ sim = {} }",
        "{ sim = { ready_after = \"250ms\" } }",
        "{ process = {} }",
        "{ process = { cgroups = false } }",
        "{ docker = { image = \"busybox:latest\", ports = { \"8080\" = 0 } } }",
        "{ terraform = {} }",
        "{ vagrant = { image = \"tend-busybox:test\" } }",
        "{ plugin = { command = [\"./plugin.py\"], config = { zone = \"a\" } } }",
    ])
    .to_string()
}

fn command(rng: &mut Rng, earlier: &[String]) -> String {
    let mut items = vec!["\"srv\"".to_owned()];
    for _ in 0..rng.below(3) {
        let mut options = vec![
            "\"{{ instance.index }}\"".to_owned(),
            "\"{{ 8000 + instance.index }}\"".to_owned(),
            "\"--n=%{std.to_string 3}\"".to_owned(),
        ];
        if let Some(dep) = earlier.first() {
            options.push(format!(
                "\"{{{{ groups.{dep}.addresses | join(sep=',') }}}}\""
            ));
        }
        items.push(rng.pick(&options).clone());
    }
    format!("[{}]", items.join(", "))
}

fn flavor(rng: &mut Rng, earlier: &[String]) -> String {
    let cmd = command(rng, earlier);
    match rng.below(8) {
        0 => format!(
            "tend.flavors.http_service {{ command = {cmd}, port = {} }}",
            rng.between(8000, 8100)
        ),
        1 => format!("tend.flavors.worker {{ command = {cmd} }}"),
        2 => format!(
            "tend.combo [{{ command = {cmd} }}, {{ env = {{ KEY = tend.secret \"FUZZ_KEY\" }} }}]"
        ),
        _ => plain_flavor(rng, cmd),
    }
}

fn plain_flavor(rng: &mut Rng, cmd: String) -> String {
    let mut fields = vec![format!("command = {cmd}")];
    if rng.chance(30) {
        fields.push("env = { MODE = \"{{ instance.index }}\" }".to_owned());
    }
    if rng.chance(20) {
        fields.push("files = { \"conf/app.txt\" = \"slot {{ instance.slot }}\" }".to_owned());
    }
    if rng.chance(40) {
        fields.push(
            rng.pick(&[
                "health = { http = { port = 8000, path = \"/h\" }, grace_period = \"1s\" }",
                "health = { tcp = { port = \"{{ 7000 + instance.index }}\" } }",
                "health = { exec = { command = [\"true\"] }, timeout = \"500ms\" }",
            ])
            .to_string(),
        );
    }
    if rng.chance(15) {
        fields.push("resources = { memory = \"64M\", cpu = 0.5 }".to_owned());
    }
    if rng.chance(10) {
        fields.push("ports = [\"http\"], drain_command = [\"stop\"]".to_owned());
    }
    format!("{{ {} }}", fields.join(", "))
}

/// A valid spec with one to three mistakes.
pub fn almost_valid(rng: &mut Rng) -> String {
    let mut text = valid(rng);
    for _ in 0..rng.between(1, 3) {
        text = match rng.below(4) {
            0 | 1 => mutate_tokens(rng, &text, &REPLACEMENTS),
            2 => cycle(rng, &text),
            _ => extra_group(rng, &text),
        };
    }
    text
}

const REPLACEMENTS: [&str; 20] = [
    "null",
    "true",
    "[]",
    "{}",
    "-1",
    "0",
    "100001",
    "2147483648",
    "1.5",
    "\"\"",
    "\"Web_1\"",
    "\"-a\"",
    "\"\\u{202e}\"",
    "\"1s1s\"",
    "\"{{ nope }}\"",
    "\"{{ groups.missing.addresses }}\"",
    "tend.secret \"A\"",
    "(fun x => x)",
    "std.string.length",
    "'Foo",
];

/// Groups that break a rule of the whole spec.
const BAD_GROUPS: [&str; 8] = [
    "selfish = { size = 1, provider = { sim = {} }, flavor = { command = [\"a\"] }, depends_on = [\"selfish\"] }",
    "both = { size = 1, ids = [\"a\"], provider = { sim = {} }, flavor = { command = [\"a\"] } }",
    "none = { provider = { sim = {} }, flavor = { command = [\"a\"] } }",
    "two = { size = 1, provider = { sim = {}, process = {} }, flavor = { command = [\"a\"] } }",
    "dup = { ids = [\"a\", \"a\"], provider = { sim = {} }, flavor = { command = [\"a\"] } }",
    "sec = { size = 1, provider = { sim = {} }, flavor = { command = [tend.secret \"A\"] } }",
    "odd = { size = 1, provider = { sim = {} }, flavor = { command = [\"a\"], colour = \"red\" } }",
    "\"Bad Name\" = { size = 1, provider = { sim = {} }, flavor = { command = [\"a\"] } }",
];

fn extra_group(rng: &mut Rng, text: &str) -> String {
    text.replacen(
        "  groups = {\n",
        &format!("  groups = {{\n    {},\n", rng.pick(&BAD_GROUPS)),
        1,
    )
}

/// Makes the first group wait for one named after it: a cycle, or an unknown group.
fn cycle(rng: &mut Rng, text: &str) -> String {
    let dependency = format!("depends_on = [\"{}{}\"], ", rng.pick(&NAMES), rng.below(5));
    match text.find("= { size").or_else(|| text.find("= { ids")) {
        Some(at) => {
            let (head, tail) = text.split_at(at + "= { ".len());
            format!("{head}{dependency}{tail}")
        }
        None => text.to_owned(),
    }
}

/// Garbage Nickel.
pub fn garbage(rng: &mut Rng) -> Vec<u8> {
    let text = match rng.below(9) {
        0 => deep(rng),
        1 => huge(rng),
        2 => runaway(rng),
        3 => odd_string(rng),
        4 => soup(rng, &VOCABULARY),
        5 => odd_import(rng),
        6 => template_bomb(rng),
        7 => number_edges(rng),
        _ => return crate::bytes::random(rng),
    };
    text.into_bytes()
}

fn deep(rng: &mut Rng) -> String {
    let depth = *rng.pick(&[10, 100, 1000, 10_000, 100_000]);
    let (open, close) = *rng.pick(&[
        ("[", "]"),
        ("(", ")"),
        ("{ a = ", " }"),
        ("(fun x => ", ") 1"),
        ("let x = 1 in ", ""),
        ("if true then ", " else 0"),
        ("-", ""),
        ("std.array.first [", "]"),
    ]);
    let inner = nested(rng, open, close, depth, "1");
    if rng.chance(50) {
        inner
    } else {
        format!("{{ groups.web = {{ size = {inner}, provider = {{ sim = {{}} }}, flavor = {{ command = [\"a\"] }} }} }}")
    }
}

fn huge(rng: &mut Rng) -> String {
    let len = *rng.pick(&[1 << 10, 1 << 16, 1 << 20, 4 << 20]);
    let body = "a".repeat(len);
    rng.pick(&[
        format!("{{ project = \"{body}\" }}"),
        format!("{{ groups.web = {{ size = 1, provider = {{ sim = {{}} }}, flavor = {{ command = [\"{body}\"] }} }} }}"),
        "{ x = std.array.generate (fun i => i) 10000000 }".to_owned(),
        "{ x = std.string.join \"\" (std.array.replicate 10000000 \"ab\") }".to_owned(),
        "let rec f = fun s n => if n == 0 then s else f (s ++ s) (n - 1) in { x = f \"ab\" 40 }".to_owned(),
        "{ groups = std.record.from_array (std.array.generate (fun i => { field = \"g%{std.to_string i}\", value = { size = 1, provider = { sim = {} }, flavor = { command = [\"a\"] } } }) 2000) }".to_owned(),
    ])
    .clone()
}

fn runaway(rng: &mut Rng) -> String {
    rng.pick(&[
        "let rec f = fun x => f x in f 1",
        "let rec f = fun x => f (x + 1) in { project = f 0 }",
        "let rec f = fun n => if n == 0 then 0 else 1 + f (n - 1) in f 100000000",
        "let rec x = { a = x.a } in x",
        "let rec x = x in x",
        "{ a = b, b = a }",
        "std.array.fold_left (fun acc x => acc + x) 0 (std.array.generate (fun i => i) 100000000)",
        "let rec f = fun n => [f (n - 1), f (n - 1)] in f 40",
    ])
    .to_string()
}

fn odd_import(rng: &mut Rng) -> String {
    let path = rng.pick(&[
        "/etc/passwd",
        "../../etc/hostname",
        "main.ncl",
        "nope.ncl",
        "tend.ncl",
        "/proc/self/environ",
        "",
        "\u{0}",
        "x.json",
        "/dev/zero",
    ]);
    format!("let x = import \"{path}\" in x")
}

fn template_bomb(rng: &mut Rng) -> String {
    let template = rng.pick(&[
        "{% for i in range(end=100000000) %}x{% endfor %}",
        "{{ ((((((((((((((((((((1)))))))))))))))))))) }}",
        "{% for a in range(end=10000) %}{% for b in range(end=10000) %}x{% endfor %}{% endfor %}",
    ]);
    format!("{{ groups.t = {{ size = 1, provider = {{ sim = {{}} }}, flavor = {{ command = [\"{template}\"], health = {{ http = {{ port = \"{template}\" }} }} }} }} }}")
}

fn number_edges(rng: &mut Rng) -> String {
    let n = rng.pick(&[
        "2147483648",
        "4294967296",
        "-1",
        "1e400",
        "0.5",
        "1/0",
        "std.number.pow 10 100",
        "100000",
        "100001",
    ]);
    format!("{{ groups.n = {{ size = {n}, provider = {{ sim = {{}} }}, flavor = {{ command = [\"a\"], health = {{ http = {{ port = {n} }}, failures = {n} }} }} }} }}")
}

const VOCABULARY: [&str; 36] = [
    "let",
    "rec",
    "in",
    "fun",
    "=>",
    "if",
    "then",
    "else",
    "import",
    "\"tend.ncl\"",
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "=",
    ",",
    ".",
    "|",
    "&",
    "++",
    "@",
    "std.array.map",
    "groups",
    "size",
    "provider",
    "flavor",
    "command",
    "sim",
    "\"a\"",
    "1",
    "null",
    "'Foo",
    "%{",
    "\n",
];
