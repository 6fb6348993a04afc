//! Static checks of a template: it parses, reads only known variables, and which groups it reads.

use std::collections::BTreeSet;

use tera::ast::{Expr, ExprVal, FunctionCall, Node};

use super::{is_template, TemplateError};

/// What a template reads, found without rendering it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateInfo {
    /// Groups read through `groups.<name>`: implicit dependencies.
    pub reads_groups: BTreeSet<String>,
    /// Ports read through `instance.ports.<name>`: each must be one the flavor declares.
    pub reads_ports: BTreeSet<String>,
}

/// Functions a flavor template may call. `get_env` is left out on purpose: secrets come
/// through `secret()`, never through a template.
const ALLOWED_FUNCTIONS: [&str; 2] = ["range", "throw"];

const INSTANCE_FIELDS: [&str; 5] = ["id", "index", "slot", "group", "ports"];
const GROUP_FIELDS: [&str; 3] = ["name", "size", "ids"];
const PEER_FIELDS: [&str; 2] = ["addresses", "instances"];

/// Parses `text` and checks every variable it reads. Plain strings pass with nothing read.
pub fn analyze(text: &str) -> Result<TemplateInfo, TemplateError> {
    let mut info = TemplateInfo::default();
    if !is_template(text) {
        return Ok(info);
    }
    super::not_too_deep(text)?;
    let template = tera::Template::new("flavor", None, text)
        .map_err(|e| TemplateError::Syntax(syntax_message(&e)))?;
    let mut walker = Walker {
        info: &mut info,
        locals: BTreeSet::new(),
    };
    walker.nodes(&template.ast)?;
    Ok(info)
}

/// Tera's parse errors carry a pest report in their source: keep its position and its
/// expectation, on one line.
fn syntax_message(error: &tera::Error) -> String {
    let report = std::error::Error::source(error)
        .map(ToString::to_string)
        .unwrap_or_else(|| error.to_string());
    let position = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("--> "))
        .map(|p| format!("at {p}: "))
        .unwrap_or_default();
    let expectation = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("= "))
        .unwrap_or(report.trim());
    format!("{position}{expectation}")
}

struct Walker<'a> {
    info: &'a mut TemplateInfo,
    /// Names bound inside the template by `for` and `set`.
    locals: BTreeSet<String>,
}

impl Walker<'_> {
    fn nodes(&mut self, nodes: &[Node]) -> Result<(), TemplateError> {
        nodes.iter().try_for_each(|n| self.node(n))
    }

    fn node(&mut self, node: &Node) -> Result<(), TemplateError> {
        match node {
            Node::Text(_) | Node::Raw(..) | Node::Comment(..) => Ok(()),
            Node::Break(_) | Node::Continue(_) => Ok(()),
            Node::VariableBlock(_, expr) => self.expr(expr),
            // A global set in a loop grows a value turn after turn (doubling a string 40
            // times takes a terabyte); a local one lasts one turn.
            Node::Set(_, set) if set.global => Err(TemplateError::NotAllowed("set_global".into())),
            Node::Set(_, set) => {
                self.expr(&set.value)?;
                self.locals.insert(set.key.clone());
                Ok(())
            }
            Node::Forloop(_, forloop, _) => {
                self.expr(&forloop.container)?;
                self.locals.insert(forloop.value.clone());
                if let Some(key) = &forloop.key {
                    self.locals.insert(key.clone());
                }
                self.locals.insert("loop".to_owned());
                self.nodes(&forloop.body)?;
                if let Some(empty) = &forloop.empty_body {
                    self.nodes(empty)?;
                }
                Ok(())
            }
            Node::If(branches, _) => {
                for (_, cond, body) in &branches.conditions {
                    self.expr(cond)?;
                    self.nodes(body)?;
                }
                if let Some((_, body)) = &branches.otherwise {
                    self.nodes(body)?;
                }
                Ok(())
            }
            Node::FilterSection(_, section, _) => {
                self.call_args(&section.filter)?;
                self.nodes(&section.body)
            }
            Node::Super => Err(TemplateError::NotAllowed("super()".into())),
            Node::MacroDefinition(..) => Err(TemplateError::NotAllowed("macro".into())),
            Node::Extends(..) => Err(TemplateError::NotAllowed("extends".into())),
            Node::Include(..) => Err(TemplateError::NotAllowed("include".into())),
            Node::ImportMacro(..) => Err(TemplateError::NotAllowed("import".into())),
            Node::Block(..) => Err(TemplateError::NotAllowed("block".into())),
        }
    }

    fn expr(&mut self, expr: &Expr) -> Result<(), TemplateError> {
        self.value(&expr.val)?;
        expr.filters.iter().try_for_each(|f| self.call_args(f))
    }

    fn call_args(&mut self, call: &FunctionCall) -> Result<(), TemplateError> {
        call.args.values().try_for_each(|arg| self.expr(arg))
    }

    fn value(&mut self, value: &ExprVal) -> Result<(), TemplateError> {
        match value {
            ExprVal::String(_) | ExprVal::Int(_) | ExprVal::Float(_) | ExprVal::Bool(_) => Ok(()),
            ExprVal::Ident(name) => self.ident(name),
            ExprVal::Math(m) => {
                self.expr(&m.lhs)?;
                self.expr(&m.rhs)
            }
            ExprVal::Logic(l) => {
                self.expr(&l.lhs)?;
                self.expr(&l.rhs)
            }
            ExprVal::In(i) => {
                self.expr(&i.lhs)?;
                self.expr(&i.rhs)
            }
            ExprVal::Test(test) => {
                self.ident(&test.ident)?;
                test.args.iter().try_for_each(|a| self.expr(a))
            }
            ExprVal::Array(items) => items.iter().try_for_each(|i| self.expr(i)),
            ExprVal::StringConcat(concat) => concat.values.iter().try_for_each(|v| self.value(v)),
            ExprVal::FunctionCall(call) => {
                if !ALLOWED_FUNCTIONS.contains(&call.name.as_str()) {
                    return Err(TemplateError::NotAllowed(format!("{}()", call.name)));
                }
                self.call_args(call)
            }
            ExprVal::MacroCall(call) => Err(TemplateError::NotAllowed(format!(
                "{}::{}()",
                call.namespace, call.name
            ))),
        }
    }

    fn ident(&mut self, name: &str) -> Result<(), TemplateError> {
        let path = split_path(name);
        let head = path.first().map(String::as_str).unwrap_or_default();
        if self.locals.contains(head) {
            return Ok(());
        }
        let unknown = |hint: &str| TemplateError::UnknownVariable {
            name: name.to_owned(),
            hint: hint.to_owned(),
        };
        let field = path.get(1).map(String::as_str);
        match head {
            "instance" => match field {
                Some("ports") => match path.get(2).filter(|p| !p.starts_with('[')) {
                    Some(port) => {
                        self.info.reads_ports.insert(port.clone());
                        Ok(())
                    }
                    None => Err(unknown("read a port as instance.ports.<name>")),
                },
                Some(f) if INSTANCE_FIELDS.contains(&f) => Ok(()),
                _ => Err(unknown("instance has id, index, slot, group and ports")),
            },
            "group" => match field {
                Some(f) if GROUP_FIELDS.contains(&f) => Ok(()),
                _ => Err(unknown("group has name, size and ids")),
            },
            "groups" => {
                let Some(peer) = field.filter(|p| !p.starts_with('[')) else {
                    return Err(unknown(
                        "read another group as groups.<name>.addresses or groups.<name>.instances",
                    ));
                };
                match path.get(2).map(String::as_str) {
                    None => {}
                    Some(f) if PEER_FIELDS.contains(&f) => {}
                    Some(_) => {
                        return Err(unknown("a group in groups has addresses and instances"))
                    }
                }
                self.info.reads_groups.insert(peer.to_owned());
                Ok(())
            }
            _ => Err(unknown("templates can read instance, group and groups")),
        }
    }
}

/// Splits `a.b["c"][0]` into `["a", "b", "c", "[0]"]`: quoted subscripts become names,
/// anything else in brackets stays bracketed so it is never taken for a name.
fn split_path(name: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => parts.push(std::mem::take(&mut current)),
            '[' => {
                if !current.is_empty() {
                    parts.push(std::mem::take(&mut current));
                }
                let mut inner = String::new();
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    inner.push(c);
                }
                let quoted = inner.len() >= 2
                    && (inner.starts_with('"') && inner.ends_with('"')
                        || inner.starts_with('\'') && inner.ends_with('\''));
                if quoted {
                    parts.push(inner[1..inner.len() - 1].to_owned());
                } else {
                    parts.push(format!("[{inner}]"));
                }
                if chars.peek() == Some(&'.') {
                    chars.next();
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(text: &str) -> Vec<String> {
        analyze(text)
            .map(|i| i.reads_groups.into_iter().collect())
            .unwrap_or_else(|e| vec![format!("error: {e}")])
    }

    #[test]
    fn finds_group_reads_in_every_form() {
        assert_eq!(reads("{{ groups.db.addresses | join(sep=',') }}"), ["db"]);
        assert_eq!(reads("{{ groups[\"cache\"].addresses }}"), ["cache"]);
        assert_eq!(
            reads("{% for i in groups.api.instances %}{{ i.address }}{% endfor %}"),
            ["api"]
        );
        assert!(reads("{{ 8000 + instance.index }}").is_empty());
        assert!(reads("plain text").is_empty());
    }

    #[test]
    fn rejects_unknown_variables_and_forbidden_constructs() {
        let err = |t: &str| analyze(t).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err("{{ instanc.index }}").contains("unknown template variable `instanc.index`"));
        assert!(
            err("{{ instance.port }}").contains("instance has id, index, slot, group and ports")
        );
        assert!(err("{{ get_env(name='HOME') }}").contains("`get_env()` is not allowed"));
        assert!(err("{% include 'x' %}").contains("`include` is not allowed"));
        assert!(err("{% set_global s = 'ab' %}").contains("`set_global` is not allowed"));
        assert!(err("{{ groups[name].addresses }}").contains("groups.<name>"));
        assert!(err("{{ 1 + }}").starts_with("template does not parse"));
    }

    #[test]
    fn loop_and_set_variables_are_known() {
        assert!(analyze("{% set p = 8000 + instance.index %}{{ p }}").is_ok());
        assert!(analyze("{% for id in group.ids %}{{ id }}{{ loop.index }}{% endfor %}").is_ok());
    }
}
