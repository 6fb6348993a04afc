//! Flavor templates (Tera): checked when a spec is evaluated, rendered per instance at apply time.
//!
//! A template may read `instance` (`id`, `index`, `slot`, `group`), `group` (`name`, `size`,
//! `ids`) and `groups.<name>` (a group this one depends on: `addresses`, `instances`).
//! Reading `groups.X` makes X an implicit dependency.

mod analyze;
mod context;

pub use analyze::{analyze, TemplateInfo};
pub use context::{GroupVars, InstanceAddress, InstanceVars, PeerGroupVars, TemplateContext};

/// Errors in a template's text or while rendering it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The text does not parse as a Tera template.
    #[error("template does not parse: {0}")]
    Syntax(String),
    /// A variable that no context provides.
    #[error("unknown template variable `{name}`: {hint}")]
    UnknownVariable {
        /// The variable as written.
        name: String,
        /// What may be read instead.
        hint: String,
    },
    /// A construct flavors may not use (include, extends, macros, blocks, environment reads).
    #[error("`{0}` is not allowed in flavor templates")]
    NotAllowed(String),
    /// Rendering failed (for example a missing address).
    #[error("template failed to render: {0}")]
    Render(String),
}

/// True when `text` has template syntax and must go through Tera.
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// The most numbers `range()` gives in one rendering, over all its calls (a loop in a loop
/// calls it again for each turn of the outer one): what a template loops over stays within
/// what a group can hold, and a runaway template fails instead of taking the machine.
pub const RANGE_BUDGET: usize = 1_000_000;

thread_local! {
    /// The Tera every template renders with: Tera's own, but that `get_env` refuses, so no
    /// template (checked or not: spec tests can hand-build a spec) reads tend's
    /// environment. Secrets reach instances through `secret()` only. `range` is bounded.
    static TERA: std::cell::RefCell<tera::Tera> = std::cell::RefCell::new({
        let mut tera = tera::Tera::default();
        tera.register_function("get_env", |_: &std::collections::HashMap<String, tera::Value>| {
            Err(tera::Error::msg(
                "get_env() is not allowed in flavor templates: use secret() for values from the environment",
            ))
        });
        tera.register_function("range", bounded_range);
        tera
    });

    /// What is left of [`RANGE_BUDGET`] in the rendering under way on this thread.
    static RANGE_LEFT: std::cell::Cell<usize> = const { std::cell::Cell::new(RANGE_BUDGET) };
}

/// Tera's `range(start, end, step_by)`, refusing a `step_by` of 0 (Tera's own loops
/// forever) and more numbers than are left of [`RANGE_BUDGET`].
fn bounded_range(
    args: &std::collections::HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    let number = |name: &str, default: Option<usize>| match (args.get(name), default) {
        (Some(value), _) => value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                tera::Error::msg(format!(
                    "range() takes a whole number as {name}, got {value}"
                ))
            }),
        (None, Some(default)) => Ok(default),
        (None, None) => Err(tera::Error::msg(format!("range() needs {name}"))),
    };
    let (start, end, step) = (
        number("start", Some(0))?,
        number("end", None)?,
        number("step_by", Some(1))?,
    );
    if step == 0 {
        return Err(tera::Error::msg("range() needs a step_by of at least 1"));
    }
    if start > end {
        return Err(tera::Error::msg("range() was given a start after its end"));
    }
    let count = (end - start).div_ceil(step);
    let left = RANGE_LEFT.get();
    if count > left {
        return Err(tera::Error::msg(format!(
            "range() would give {count} more numbers, and a template may loop over at most {RANGE_BUDGET} in all"
        )));
    }
    RANGE_LEFT.set(left - count);
    Ok(tera::Value::from(
        (start..end).step_by(step).collect::<Vec<_>>(),
    ))
}

/// Refuses a template nesting deeper than Tera's parser can take on a small stack.
fn not_too_deep(text: &str) -> Result<(), TemplateError> {
    let rules = &crate::lang::nesting::TEMPLATE;
    match crate::lang::nesting::too_deep(text, rules) {
        Some(at) => Err(TemplateError::Syntax(format!(
            "at character {}: the template nests more than {} levels deep",
            text[..at].chars().count() + 1,
            rules.max
        ))),
        None => Ok(()),
    }
}

/// Renders `text` for one instance. Plain strings come back unchanged.
pub fn render(text: &str, context: &TemplateContext) -> Result<String, TemplateError> {
    if !is_template(text) {
        return Ok(text.to_owned());
    }
    not_too_deep(text)?;
    let ctx = tera::Context::from_serialize(context)
        .map_err(|e| TemplateError::Render(error_chain(&e)))?;
    RANGE_LEFT.set(RANGE_BUDGET);
    TERA.with(|tera| tera.borrow_mut().render_str(text, &ctx))
        .map_err(|e| TemplateError::Render(error_chain(&e)))
}

/// Tera nests the useful message in its error sources: join them into one line.
fn error_chain(error: &tera::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        parts.push(inner.to_string());
        source = inner.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> TemplateContext {
        let mut groups = std::collections::BTreeMap::new();
        groups.insert(
            "db".to_owned(),
            PeerGroupVars::from_instances(vec![
                InstanceAddress {
                    slot: "a".into(),
                    address: "127.0.0.1:2379".into(),
                },
                InstanceAddress {
                    slot: "b".into(),
                    address: "127.0.0.1:2380".into(),
                },
            ]),
        );
        TemplateContext {
            instance: InstanceVars {
                id: "web-2".into(),
                index: 2,
                slot: "2".into(),
                group: "web".into(),
                ports: Default::default(),
            },
            group: GroupVars {
                name: "web".into(),
                size: 3,
                ids: vec![],
            },
            groups,
        }
    }

    #[test]
    fn range_is_bounded_and_never_loops_forever() {
        let ctx = context();
        assert_eq!(
            render(
                "{% for i in range(start=1, end=8, step_by=3) %}{{ i }}{% endfor %}",
                &ctx
            )
            .ok()
            .as_deref(),
            Some("147")
        );
        for runaway in [
            "{{ range(end=5, step_by=0) | length }}",
            "{% for i in range(end=100000000) %}x{% endfor %}",
            "{% for a in range(end=10000) %}{% for b in range(end=10000) %}{% endfor %}{% endfor %}",
            "{{ range(start=5, end=1) | length }}",
            "{{ range(end=-1) | length }}",
        ] {
            let err = render(runaway, &ctx).err().map(|e| e.to_string());
            assert!(err.as_deref().is_some_and(|e| e.contains("range()")), "{runaway}: {err:?}");
        }
        // The budget is per rendering.
        let many = "{{ range(end=1000000) | length }}";
        assert_eq!(render(many, &ctx).ok().as_deref(), Some("1000000"));
        assert_eq!(render(many, &ctx).ok().as_deref(), Some("1000000"));
    }

    #[test]
    fn renders_instance_arithmetic_and_peer_addresses() {
        let ctx = context();
        assert_eq!(
            render("{{ 8000 + instance.index }}", &ctx).ok().as_deref(),
            Some("8002")
        );
        assert_eq!(
            render("{{ groups.db.addresses | join(sep=\",\") }}", &ctx)
                .ok()
                .as_deref(),
            Some("127.0.0.1:2379,127.0.0.1:2380")
        );
        assert_eq!(render("plain", &ctx).ok().as_deref(), Some("plain"));
    }

    #[test]
    fn no_template_reads_the_environment() {
        // SAFETY: this test's own variable, set before any thread reads it.
        unsafe { std::env::set_var("TEND_TEMPLATE_TEST_SECRET", "hunter2") };
        let err = render(
            "{{ get_env(name='TEND_TEMPLATE_TEST_SECRET') }}",
            &context(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("get_env() is not allowed"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn render_errors_say_why() {
        let err = render("{{ groups.cache.addresses }}", &context())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("groups.cache.addresses"), "{err}");
    }
}
