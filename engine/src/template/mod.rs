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

thread_local! {
    /// The Tera every template renders with: Tera's own, but that `get_env` refuses, so no
    /// template (checked or not: spec tests can hand-build a spec) reads tend's
    /// environment. Secrets reach instances through `secret()` only.
    static TERA: std::cell::RefCell<tera::Tera> = std::cell::RefCell::new({
        let mut tera = tera::Tera::default();
        tera.register_function("get_env", |_: &std::collections::HashMap<String, tera::Value>| {
            Err(tera::Error::msg(
                "get_env() is not allowed in flavor templates: use secret() for values from the environment",
            ))
        });
        tera
    });
}

/// Renders `text` for one instance. Plain strings come back unchanged.
pub fn render(text: &str, context: &TemplateContext) -> Result<String, TemplateError> {
    if !is_template(text) {
        return Ok(text.to_owned());
    }
    let ctx = tera::Context::from_serialize(context)
        .map_err(|e| TemplateError::Render(error_chain(&e)))?;
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
