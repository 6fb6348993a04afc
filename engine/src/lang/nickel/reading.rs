//! Reading an evaluated Nickel spec: the record as JSON, where each of its fields was
//! written, and each group into the model through the checks every front end shares.

use std::collections::HashMap;

use nickel_lang_core::eval::value::{Container, NickelValue, ValueContentRef};
use nickel_lang_core::files::Files;
use nickel_lang_core::position::{PosTable, RawSpan};
use serde_json::Value as Json;

use super::diagnostics::Sources;
use super::shapes;
use crate::diagnostic::{Diagnostic, SourceLocation};
use crate::lang::convert::ConvertError;
use crate::lang::declare::{self, GroupParts, Part};
use crate::spec::Group;

/// The evaluated spec: its value as JSON and where its fields were written.
pub struct Read<'a> {
    json: Json,
    places: HashMap<String, RawSpan>,
    group_order: Vec<String>,
    files: &'a Files,
    sources: &'a Sources,
}

/// Reads the evaluated value. A value that is not plain data (a function left in a field)
/// is reported at the field that holds it.
pub fn read<'a>(
    value: &NickelValue,
    positions: &PosTable,
    files: &'a Files,
    sources: &'a Sources,
) -> Result<Read<'a>, Diagnostic> {
    let mut places = HashMap::new();
    let mut group_order = Vec::new();
    let mut walk = Walk {
        positions,
        files,
        sources,
        places: &mut places,
        group_order: &mut group_order,
    };
    walk.value(value, "");
    let mut read = Read {
        json: Json::Null,
        places,
        group_order,
        files,
        sources,
    };
    read.json = serde_json::to_value(value).map_err(|e| {
        let field = not_plain(value, "");
        let what = if field.is_empty() {
            String::new()
        } else {
            format!(" at `{field}`")
        };
        Diagnostic::new(
            format!("the spec does not evaluate to plain data{what}: {e}"),
            read.at(&field),
        )
    })?;
    Ok(read)
}

/// The path of the innermost field under `value` that does not serialize (a function, say).
fn not_plain(value: &NickelValue, path: &str) -> String {
    let children: Vec<(String, &NickelValue)> = match value.content_ref() {
        ValueContentRef::Record(Container::Alloc(record)) => record
            .fields
            .iter()
            .filter_map(|(name, field)| Some((join(path, name.label()), field.value.as_ref()?)))
            .collect(),
        ValueContentRef::Array(Container::Alloc(array)) => array
            .array
            .iter()
            .enumerate()
            .map(|(i, item)| (format!("{path}[{i}]"), item))
            .collect(),
        _ => Vec::new(),
    };
    children
        .into_iter()
        .find(|(_, child)| serde_json::to_value(*child).is_err())
        .map(|(child_path, child)| not_plain(child, &child_path))
        .unwrap_or_else(|| path.to_owned())
}

struct Walk<'a> {
    positions: &'a PosTable,
    files: &'a Files,
    sources: &'a Sources,
    places: &'a mut HashMap<String, RawSpan>,
    group_order: &'a mut Vec<String>,
}

impl Walk<'_> {
    /// Records where the field at `path` was written: the first of `spans` in the user's
    /// own files (a field checked by the contract also carries the contract's position).
    fn note(&mut self, path: &str, spans: &[Option<RawSpan>]) {
        let written = spans
            .iter()
            .flatten()
            .find(|span| self.sources.is_user_file(self.files, span.src_id));
        if let Some(span) = written {
            self.places.insert(path.to_owned(), *span);
        }
    }

    fn value(&mut self, value: &NickelValue, path: &str) {
        match value.content_ref() {
            ValueContentRef::Record(Container::Alloc(record)) => {
                for (name, field) in &record.fields {
                    let Some(inner) = &field.value else { continue };
                    if path == "groups" {
                        self.group_order.push(name.label().to_owned());
                    }
                    let child = join(path, name.label());
                    let value_span = self.positions.get(inner.pos_idx()).into_opt();
                    self.note(&child, &[name.pos.into_opt(), value_span]);
                    self.value(inner, &child);
                }
            }
            ValueContentRef::Array(Container::Alloc(array)) => {
                for (i, item) in array.array.iter().enumerate() {
                    let child = format!("{path}[{i}]");
                    self.note(&child, &[self.positions.get(item.pos_idx()).into_opt()]);
                    self.value(item, &child);
                }
            }
            _ => {}
        }
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

impl Read<'_> {
    /// A top-level string field.
    pub fn string(&self, field: &str) -> Option<String> {
        self.json.get(field)?.as_str().map(str::to_owned)
    }

    /// Where the field at `path` (or, failing that, the nearest field holding it) was
    /// written.
    pub fn at(&self, path: &str) -> Option<SourceLocation> {
        let mut path = path;
        loop {
            if let Some(span) = self.places.get(path) {
                return self.sources.location(self.files, *span);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }

    /// The groups' names in the order Nickel keeps the record's fields: as written in a
    /// record literal, as listed for `std.record.from_array`, left before right in a merge;
    /// so plans list them as a Starlark spec declaring them in that order would.
    pub fn group_names(&self) -> Vec<String> {
        let exported = self.json.get("groups").and_then(Json::as_object);
        self.group_order
            .iter()
            .filter(|name| exported.is_some_and(|g| g.contains_key(name.as_str())))
            .cloned()
            .collect()
    }

    fn group_json(&self, name: &str) -> &Json {
        &self.json["groups"][name]
    }
}

/// Reads group `name` into the model, through the checks a Starlark `group()` makes.
pub fn group(read: &Read, name: &str) -> Result<Group, Diagnostic> {
    let base = join("groups", name);
    let json = read.group_json(name);
    let located = |error: shapes::Located| {
        Diagnostic::new(error.error.to_string(), read.at(&join(&base, &error.path)))
    };
    let provider = shapes::provider(&json["provider"]).map_err(|e| located(e.under("provider")))?;
    let flavor = shapes::flavor(&json["flavor"]).map_err(|e| located(e.under("flavor")))?;
    let update = match json.get("update") {
        Some(update) => Some(shapes::update(update).map_err(|e| located(e.under("update")))?),
        None => None,
    };
    let expose = match json.get("expose") {
        Some(expose) => Some(shapes::balancer(expose).map_err(|e| located(e.under("expose")))?),
        None => None,
    };
    let size = shapes::whole(json, "size").map_err(located)?;
    let ids = json.get("ids").and_then(Json::as_array).map(|ids| {
        ids.iter()
            .map(|id| id.as_str().unwrap_or_default().to_owned())
            .collect()
    });
    let depends_on = json
        .get("depends_on")
        .and_then(Json::as_array)
        .map(|deps| {
            deps.iter()
                .map(|d| d.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let origin = read.at(&base);
    declare::group(GroupParts {
        name: name.to_owned(),
        size,
        ids,
        provider,
        flavor,
        depends_on,
        update,
        expose,
        origin: origin.clone(),
    })
    .map_err(|problem| {
        let field = match problem.part {
            Part::Name => None,
            Part::Allocation if json.get("size").is_some() => Some("size"),
            Part::Allocation if json.get("ids").is_some() => Some("ids"),
            Part::Allocation => None,
            Part::Provider => Some("provider"),
            Part::Flavor => Some("flavor"),
            Part::Update => Some("update"),
            Part::Expose if json.get("expose").is_some() => Some("expose"),
            Part::Expose => Some("flavor"),
        };
        // A bad template names its field (`flavor.command[2]`): point at it.
        let template_field = match problem.error.downcast_ref::<ConvertError>() {
            Some(ConvertError::Template { field, .. }) => {
                Some(field.replace("[\"", ".").replace("\"]", ""))
            }
            _ => None,
        };
        let location = match (template_field, field) {
            (Some(inside), Some(field)) if inside.starts_with(field) => {
                read.at(&join(&base, &inside))
            }
            (_, Some(field)) => read.at(&join(&base, field)),
            (_, None) => origin,
        };
        Diagnostic::new(problem.error.to_string(), location)
    })
}
