//! Inputs for the targets of short text: flavor templates and small values.

use crate::bytes::{odd_string, random};
use crate::rng::Rng;
use crate::text::{nested, soup};

/// A flavor template: a real one, a mutated one, a soup of Tera's syntax, or a bomb.
pub fn template(rng: &mut Rng) -> Vec<u8> {
    let text = match rng.below(10) {
        0..=2 => rng.pick(&TEMPLATES).to_string(),
        3..=5 => soup(rng, &TERA),
        6 => {
            let depth = *rng.pick(&[10, 100, 1000, 10_000, 100_000]);
            let (open, close) =
                *rng.pick(&[("(", ")"), ("[", "]"), ("{% if true %}", "{% endif %}")]);
            format!("{{{{ {} }}}}", nested(rng, open, close, depth, "1"))
        }
        7 => rng.pick(&BOMBS).to_string(),
        8 => odd_string(rng),
        _ => return random(rng),
    };
    text.into_bytes()
}

const TEMPLATES: [&str; 8] = [
    "{{ instance.index }}",
    "{{ 8000 + instance.index }}",
    "{{ instance.ports.http }}",
    "{% for id in group.ids %}{{ id }}=http://127.0.0.1:{{ 2380 + loop.index0 * 10 }}{% if not loop.last %},{% endif %}{% endfor %}",
    "{{ instance.slot | upper }}-{{ group.name }}",
    "{% if instance.index == 0 %}leader{% else %}follower{% endif %}",
    "{{ group.size * 2 }} {{ instance.id | length }}",
    "{% raw %}{{ not rendered }}{% endraw %}",
];

const BOMBS: [&str; 8] = [
    "{% for i in range(end=100000000) %}x{% endfor %}",
    "{% for i in range(end=1000000000) %}{% endfor %}",
    "{% for a in range(end=100000) %}{% for b in range(end=100000) %}{% endfor %}{% endfor %}",
    "{{ range(end=100000000) | length }}",
    "{{ range(start=0, end=100000000, step_by=1) | join(sep=',') }}",
    "{% set x = range(end=100000000) %}{{ x | length }}",
    "{{ 9223372036854775807 + 1 }}{{ 1 / 0 }}",
    "{{ instance.index | pow(exponent=100000) }}",
];

const TERA: [&str; 34] = [
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "for",
    "in",
    "endfor",
    "if",
    "endif",
    "else",
    "set",
    "range(end=3)",
    "instance.index",
    "instance.ports.http",
    "groups.db.addresses",
    "group.ids",
    "|",
    "join(sep=',')",
    "length",
    "(",
    ")",
    "+",
    "*",
    "/",
    "~",
    "\"s\"",
    "1",
    "loop.index",
    "macro",
    "include",
    "get_env(name=\"HOME\")",
    "throw(message=\"x\")",
];

/// A small value: one a user or another program writes (a duration, a port range, a
/// memory size, a store URL, a `tend.ports` tag, a name), mutated or not.
pub fn value(rng: &mut Rng) -> Vec<u8> {
    let base = rng.pick(&VALUES).to_string();
    let text = match rng.below(6) {
        0 | 1 => base,
        2 => mutate(rng, &base),
        3 => {
            let lines: Vec<String> = (0..rng.between(2, 20))
                .map(|_| {
                    let base = *rng.pick(&VALUES);
                    mutate(rng, base)
                })
                .collect();
            lines.join("\n")
        }
        4 => odd_string(rng),
        _ => return random(rng),
    };
    text.into_bytes()
}

const VALUES: [&str; 30] = [
    "1m30s",
    "250ms",
    "0s",
    "99999999999999999999h",
    "18446744073709551615ms",
    "1h1h1h",
    "-1s",
    "1.5s",
    "1024-65535",
    "65535-1024",
    "0-0",
    " 2000 - 3000 ",
    "64M",
    "1G",
    "16777216T",
    "1KiB",
    "-1",
    "etcd://a:2379,b:2379",
    "etcd://",
    "etcd://,,,",
    "http://x",
    "http=8000,db=70000",
    "=,=,",
    "a=b=c",
    "web",
    "Web_1",
    "-a",
    "a.b",
    "FUZZ_KEY",
    "1NOPE",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..rng.between(1, 3) {
        let at = rng.below(chars.len() + 1);
        let c = *rng.pick(&[
            '9', '-', ',', '=', ' ', 'h', 'm', '\u{0}', '\u{202e}', '٣', '１',
        ]);
        match rng.below(3) {
            0 => chars.insert(at, c),
            1 if at < chars.len() => {
                chars.remove(at);
            }
            _ => chars.extend(std::iter::repeat_n('9', rng.size(100))),
        }
    }
    chars.into_iter().collect()
}
