//! Starlark specs from tend's real builtins: valid ones, almost valid ones (a valid one
//! mutated) and garbage (deep nesting, huge strings and lists, odd unicode, runaway loops
//! and recursion).

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

const NAMES: [&str; 8] = [
    "web", "db", "api", "cache", "worker", "mail", "edge", "queue",
];

/// One group being written: its variable, its name, whether it declares an `http` port.
struct Written {
    var: String,
    name: String,
}

/// A spec the builtins accept (mostly: the generator does not know every rule).
pub fn valid(rng: &mut Rng) -> String {
    let mut out = String::new();
    loads(rng, &mut out);
    if rng.chance(80) {
        let ports = if rng.chance(20) {
            ", ports = \"21000-21999\""
        } else {
            ""
        };
        out.push_str(&format!(
            "project(name = \"fuzz-{}\"{ports})\n",
            rng.below(100)
        ));
    }
    if rng.chance(30) {
        out.push_str("def cmd(*args):\n    return [\"srv\"] + list(args)\n");
    }
    let mut written: Vec<Written> = Vec::new();
    for i in 0..rng.between(1, 6) {
        let name = format!("{}{}", rng.pick(&NAMES), i);
        let var = format!("g{i}");
        let call = group_call(rng, &name, &written);
        if rng.chance(10) {
            out.push_str(&format!(
                "for i in range({}):\n    group(name = \"{name}-%d\" % i, provider = sim(), flavor = flavor(command = [\"x\"]), size = i)\n",
                rng.between(1, 4)
            ));
        }
        out.push_str(&format!("{var} = {call}\n"));
        written.push(Written { var, name });
    }
    out
}

fn loads(rng: &mut Rng, out: &mut String) {
    if rng.chance(30) {
        out.push_str("load(\"@tend//flavors.star\", \"http_service\", \"worker\", \"peers\")\n");
    }
    if rng.chance(20) {
        out.push_str("load(\"@tend//policies.star\", \"rolling_safe\", \"canary\")\n");
    }
    if rng.chance(10) {
        out.push_str("load(\"@tend//health.star\", \"http_ok\", \"tcp_open\")\n");
    }
}

fn group_call(rng: &mut Rng, name: &str, earlier: &[Written]) -> String {
    let http = rng.chance(30);
    let mut args = vec![format!("name = \"{name}\"")];
    args.push(allocation(rng));
    args.push(format!("provider = {}", provider(rng)));
    args.push(format!("flavor = {}", flavor(rng, http, earlier)));
    if !earlier.is_empty() && rng.chance(40) {
        let dep = rng.pick(earlier);
        let dep = if rng.chance(50) {
            dep.var.clone()
        } else {
            format!("\"{}\"", dep.name)
        };
        args.push(format!("depends_on = [{dep}]"));
    }
    if rng.chance(35) {
        args.push(format!("update = {}", update(rng)));
    }
    if rng.chance(10) {
        args.push(format!(
            "expose = balancer(port = {}, strategy = \"least_connections\")",
            rng.between(9000, 9100)
        ));
    }
    format!("group({})", args.join(", "))
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
        "sim()",
        "sim()",
        "sim()",
        "sim(visible_after = \"1s\", ready_after = \"250ms\")",
        "process()",
        "process(cgroups = False, machine = \"m1\")",
        "docker(\"busybox:latest\", ports = {8080: 0})",
        "docker(\"tend-busybox:test\", ports = {80: \"{{ 18000 + instance.index }}\"}, pull = False)",
        "terraform()",
        "vagrant(image = \"tend-busybox:test\")",
        "plugin(command = [\"./plugin.py\"], config = {\"zone\": \"a\", \"n\": 1})",
    ])
    .to_string()
}

fn update(rng: &mut Rng) -> String {
    rng.pick(&[
        "recreate()",
        "rolling()",
        "rolling(max_unavailable = 2, max_surge = 1, min_ready = \"1s\")",
        "rolling(max_surge = 1, on_failure = \"rollback\", health_timeout = \"30s\")",
    ])
    .to_string()
}

fn template_text(rng: &mut Rng, http: bool, earlier: &[Written]) -> String {
    let mut options = vec![
        "{{ instance.index }}".to_owned(),
        "{{ 8000 + instance.index }}".to_owned(),
        "{{ instance.slot }}-{{ group.size }}".to_owned(),
        "{% if instance.index == 0 %}first{% else %}other{% endif %}".to_owned(),
    ];
    if http {
        options.push("{{ instance.ports.http }}".to_owned());
    }
    if let Some(dep) = earlier.first() {
        options.push(format!(
            "{{{{ groups.{}.addresses | join(sep=',') }}}}",
            dep.name.replace('-', "_")
        ));
    }
    rng.pick(&options).clone()
}

fn command(rng: &mut Rng, http: bool, earlier: &[Written]) -> String {
    let mut items = vec!["\"srv\"".to_owned()];
    for _ in 0..rng.below(3) {
        if rng.chance(50) {
            items.push(format!("\"{}\"", template_text(rng, http, earlier)));
        } else {
            items.push(format!("\"--flag={}\"", rng.below(10)));
        }
    }
    format!("[{}]", items.join(", "))
}

fn flavor(rng: &mut Rng, http: bool, earlier: &[Written]) -> String {
    let cmd = command(rng, http, earlier);
    match rng.below(10) {
        0 => format!(
            "http_service(command = {cmd}, port = {})",
            rng.between(8000, 8100)
        ),
        1 => format!("worker(command = {cmd}, env = {{\"A\": \"1\"}})"),
        2 => format!(
            "combo(flavor(command = {cmd}), flavor(env = {{\"B\": secret(\"FUZZ_SECRET\")}}))"
        ),
        _ => plain_flavor(rng, cmd, http),
    }
}

fn plain_flavor(rng: &mut Rng, cmd: String, http: bool) -> String {
    let mut args = vec![format!("command = {cmd}")];
    if http {
        args.push("ports = [\"http\"]".to_owned());
    }
    if rng.chance(30) {
        args.push(
            "env = {\"MODE\": \"{{ instance.index }}\", \"KEY\": secret(\"FUZZ_KEY\")}".to_owned(),
        );
    }
    if rng.chance(20) {
        args.push("files = {\"conf/app.txt\": \"slot {{ instance.slot }}\"}".to_owned());
    }
    if rng.chance(15) {
        args.push("labels = {\"team\": \"a\"}, workdir = \"w\"".to_owned());
    }
    if rng.chance(40) {
        args.push(format!("health = {}", health(rng, http)));
    }
    if rng.chance(15) {
        args.push("drain_command = [\"stop\"], drain_timeout = \"2s\"".to_owned());
    }
    if rng.chance(15) {
        args.push("resources = resources(memory = \"64M\", cpu = 0.5, pids = 32)".to_owned());
    }
    format!("flavor({})", args.join(", "))
}

fn health(rng: &mut Rng, http: bool) -> String {
    let port = if http && rng.chance(50) {
        "port(\"http\")".to_owned()
    } else {
        format!("\"{{{{ {} + instance.index }}}}\"", rng.between(7000, 7100))
    };
    match rng.below(3) {
        0 => format!(
            "http(port = {port}, path = \"/health\", grace_period = \"1s\", interval = \"1s\")"
        ),
        1 => format!("tcp(port = {port}, failures = 2)"),
        _ => "exec(command = [\"true\"], timeout = \"500ms\")".to_owned(),
    }
}

/// A valid spec with one to three mistakes: tokens dropped, repeated or swapped, a value
/// of the wrong type or out of range, a bad name, a dependency cycle.
pub fn almost_valid(rng: &mut Rng) -> String {
    let mut text = valid(rng);
    for _ in 0..rng.between(1, 3) {
        text = match rng.below(4) {
            0 | 1 => mutate_tokens(rng, &text, &REPLACEMENTS),
            2 => cycle(rng, &text),
            _ => format!("{text}{}\n", rng.pick(&BAD_LINES)),
        };
    }
    text
}

/// Values put in place of a token: wrong types, out of range, bad names.
const REPLACEMENTS: [&str; 24] = [
    "None",
    "True",
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
    "\"a\" * 70",
    "\"\\u202e\"",
    "\"1s1s\"",
    "\"-5s\"",
    "\"99999999999999999999h\"",
    "secret(\"A\")",
    "port(\"Http\")",
    "\"{{ nope }}\"",
    "\"{{ groups.missing.addresses }}\"",
    "\"{% include 'x' %}\"",
    "sim",
    "group",
];

/// Lines that break a rule of the whole spec.
const BAD_LINES: [&str; 10] = [
    "group(name = \"twin\", size = 1, provider = sim(), flavor = flavor(command = [\"a\"]))\ngroup(name = \"twin\", size = 1, provider = sim(), flavor = flavor(command = [\"a\"]))",
    "group(name = \"self\", size = 1, provider = sim(), flavor = flavor(command = [\"a\"]), depends_on = [\"self\"])",
    "group(name = \"both\", size = 1, ids = [\"a\"], provider = sim(), flavor = flavor(command = [\"a\"]))",
    "group(name = \"none\", provider = sim(), flavor = flavor(command = [\"a\"]))",
    "project(name = \"again\")\nproject(name = \"twice\")",
    "group(name = \"dup\", ids = [\"a\", \"a\"], provider = sim(), flavor = flavor(command = [\"a\"]))",
    "group(name = \"sec\", size = 1, provider = sim(), flavor = flavor(command = [secret(\"A\")]))",
    "group(name = \"lb\", size = 1, provider = sim(), flavor = flavor(command = [\"a\"]), expose = balancer())",
    "fail(\"stop here\")",
    "group(name = \"tpl\", size = 1, provider = sim(), flavor = flavor(command = [\"{{ instance.ports.none }}\"]))",
];

/// Makes the first group wait for a group declared after it (by name): a cycle when the
/// later one waits for it too, else an unknown or forward dependency.
fn cycle(rng: &mut Rng, text: &str) -> String {
    let target = rng.pick(&NAMES);
    let dependency = format!("depends_on = [\"{target}{}\"], ", rng.below(6));
    match text.find("group(name") {
        Some(at) => {
            let (head, tail) = text.split_at(at + "group(".len());
            format!("{head}{dependency}{tail}")
        }
        None => text.to_owned(),
    }
}

/// Garbage: what a broken editor, a fuzzer or a hostile spec writes.
pub fn garbage(rng: &mut Rng) -> Vec<u8> {
    let text = match rng.below(12) {
        0 => deep(rng),
        1 => huge_literal(rng),
        2 => memory_bomb(rng),
        3 => step_bomb(rng),
        4 => recursion(rng),
        5 => odd_unicode(rng),
        6 => soup(rng, &VOCABULARY),
        7 => odd_load(rng),
        8 => template_bomb(rng),
        9 => number_edges(rng),
        10 => big_but_legal(rng),
        _ => return crate::bytes::random(rng),
    };
    text.into_bytes()
}

fn deep(rng: &mut Rng) -> String {
    let depth = *rng.pick(&[10, 100, 1000, 10_000, 100_000]);
    let (open, close) = *rng.pick(&[
        ("[", "]"),
        ("(", ")"),
        ("{1: ", "}"),
        ("f(", ")"),
        ("[[", "]]"),
        ("-", ""),
        ("not ", ""),
        ("(lambda: ", ")()"),
    ]);
    let inner = nested(rng, open, close, depth, "1");
    match rng.below(3) {
        0 => format!("x = {inner}\n"),
        1 => format!(
            "group(name = \"deep\", size = 1, provider = sim(), flavor = flavor(command = [str({inner})]))\n"
        ),
        _ => format!("def f(x):\n    return x\ny = {inner}\n"),
    }
}

fn huge_literal(rng: &mut Rng) -> String {
    let len = *rng.pick(&[1 << 10, 1 << 16, 1 << 20, 4 << 20]);
    let body = "a".repeat(len);
    match rng.below(3) {
        0 => format!("x = \"{body}\"\n"),
        1 => format!(
            "group(name = \"{body}\", size = 1, provider = sim(), flavor = flavor(command = [\"x\"]))\n"
        ),
        _ => format!(
            "group(name = \"big\", size = 1, provider = sim(), flavor = flavor(command = [\"{body}\"], env = {{\"A\": \"{body}\"}}))\n"
        ),
    }
}

/// Values that grow fast: repeated strings and lists, comprehensions, loops. tend checks
/// a spec's memory between statements and every thousand steps, not within one builtin
/// call: a single call is kept where it makes at most a few hundred megabytes (a dev build
/// takes some 60 bytes for each item of `list(range(n))`).
fn memory_bomb(rng: &mut Rng) -> String {
    let n = *rng.pick(&[1_000, 1_000_000, 10_000_000, 50_000_000]);
    let one_call = n.min(5_000_000);
    rng.pick(&[
        format!("x = \"ab\" * {one_call}\n"),
        format!("x = [0] * {one_call}\n"),
        format!("x = list(range({one_call}))\n"),
        format!("x = {{i: i for i in range({n})}}\n"),
        format!("x = \"x\" * {n}\ny = [x + str(i) for i in range(1000)]\n"),
        format!("x = \"x\" * {n}\ny = x + x\nz = y + y\nw = z + z\n"),
        "s = \"ab\"\nfor i in range(40):\n    s = s + s\n".to_owned(),
        format!("x = [[0] * 1000 for i in range({n})]\n"),
        format!("x = \",\".join([str(i) for i in range({n})])\n"),
        "x = json.encode([list(range(1000))] * 100000)\n".to_owned(),
    ])
    .clone()
}

fn step_bomb(rng: &mut Rng) -> String {
    rng.pick(&[
        "for i in range(1000000000):\n    pass\n",
        "x = [a * b for a in range(100000) for b in range(100000)]\n",
        "def f():\n    for i in range(100000000):\n        pass\nf()\n",
        "while True:\n    pass\n",
        "x = sorted([i % 7 for i in range(100000000)])\n",
        "x = 0\nfor a in range(10000):\n    for b in range(10000):\n        x += 1\n",
        "x = \"ab\" * 1000000\nfor c in x.elems():\n    pass\n",
        "def f(n):\n    return [f(n - 1) for i in range(10)] if n > 0 else 1\nf(20)\n",
    ])
    .to_string()
}

fn recursion(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => "def f():\n    return f()\nf()\n".to_owned(),
        1 => "def a():\n    return b()\ndef b():\n    return a()\na()\n".to_owned(),
        2 => {
            let mut text = "def f0():\n    return 0\n".to_owned();
            for i in 1..rng.between(60, 3000) {
                text.push_str(&format!("def f{i}():\n    return f{}() + 1\n", i - 1));
            }
            text.push_str("x = f59()\n");
            text
        }
        _ => "f = lambda: f()\nf()\n".to_owned(),
    }
}

fn odd_unicode(rng: &mut Rng) -> String {
    let odd = odd_string(rng);
    match rng.below(4) {
        0 => odd,
        1 => format!("x = \"{}\"\n", odd.replace(['"', '\\', '\n'], "")),
        2 => format!(
            "group(name = \"{}\", size = 1, provider = sim(), flavor = flavor(command = [\"x\"]))\n",
            odd.chars().take(40).collect::<String>().replace(['"', '\\', '\n'], "")
        ),
        _ => format!(
            "project(name = \"p\")\ngroup(name = \"u\", size = 1, provider = sim(), flavor = flavor(command = [\"{}\"], env = {{\"\u{202e}\": \"x\"}}))\n",
            odd.chars().take(200).collect::<String>().replace(['"', '\\', '\n'], "")
        ),
    }
}

fn odd_load(rng: &mut Rng) -> String {
    let module = rng.pick(&[
        "//../../etc/passwd",
        "../x.star",
        "/etc/passwd",
        "main.star",
        "@tend//nope.star",
        "@other//x.star",
        "//",
        "",
        "@tend//../flavors.star",
        "\u{0}",
    ]);
    format!("load(\"{module}\", \"x\")\n")
}

fn template_bomb(rng: &mut Rng) -> String {
    let depth = *rng.pick(&[10, 1000, 100_000]);
    let template = match rng.below(5) {
        0 => "{% for i in range(end=100000000) %}x{% endfor %}".to_owned(),
        1 => format!("{{{{ {} }}}}", nested(rng, "(", ")", depth, "1")),
        2 => "{% for a in range(end=10000) %}{% for b in range(end=10000) %}x{% endfor %}{% endfor %}".to_owned(),
        3 => format!("{{{{ {} }}}}", "1 + ".repeat(depth) + "1"),
        _ => "{{ instance.index | int | pow(exponent=1000) }}{% raw %}{{{% endraw %}".to_owned(),
    };
    format!(
        "project(name = \"t\")\ngroup(name = \"t\", size = 1, provider = sim(), flavor = flavor(command = [\"{template}\"], health = http(port = \"{template}\")))\n"
    )
}

fn number_edges(rng: &mut Rng) -> String {
    let n = rng.pick(&[
        "2147483647",
        "2147483648",
        "-2147483648",
        "1 << 64",
        "10 ** 100",
        "-(2 ** 31)",
        "1.0e308 * 10",
        "0.1",
        "int(\"9\" * 1000)",
        "1 // 0",
    ]);
    let field = rng.pick(&[
        "size = {n}",
        "ids = [str({n})]",
        "flavor = flavor(command = [str({n})]), size = 1",
    ]);
    let field = field.replace("{n}", n);
    let flavor = if field.contains("flavor") {
        ""
    } else {
        ", flavor = flavor(command = [\"a\"])"
    };
    format!("group(name = \"n\", provider = sim(){flavor}, {field})\nx = {n}\n")
}

/// Legal but large: the biggest group allowed, many groups, long dependency chains.
fn big_but_legal(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => "group(name = \"big\", size = 100000, provider = sim(), flavor = flavor(command = [\"x\", \"{{ instance.index }}\"]))\n".to_owned(),
        1 => {
            let n = rng.between(50, 400);
            format!("for i in range({n}):\n    group(name = \"g%d\" % i, size = 2, provider = sim(), flavor = flavor(command = [\"x\"]), depends_on = [\"g%d\" % (i - 1)] if i > 0 else [])\n")
        }
        _ => "group(name = \"ids\", ids = [\"i%d\" % i for i in range(100000)], provider = sim(), flavor = flavor(command = [\"x\"]))\n".to_owned(),
    }
}

/// Tokens of Starlark and of tend's builtins, for soups.
const VOCABULARY: [&str; 44] = [
    "group",
    "flavor",
    "sim",
    "process",
    "docker",
    "project",
    "combo",
    "secret",
    "port",
    "http",
    "tcp",
    "exec",
    "rolling",
    "recreate",
    "balancer",
    "resources",
    "load",
    "def",
    "return",
    "for",
    "in",
    "if",
    "else",
    "lambda",
    "not",
    "and",
    "or",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ":",
    ",",
    "=",
    "==",
    "\n",
    "    ",
    "\"web\"",
    "1",
    "name",
    "size",
    "*",
];
