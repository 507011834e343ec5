//! Declared connectors (`kind = "http"`): a CRM/ERP system described in a YAML file — base URL,
//! auth, transport (REST or JSON-RPC), entities with their calls, paging and error codes — and
//! spoken by one engine. Nothing here is specific to one system; the shipped definitions live in
//! `connectors/http/*.yaml` and an admin's own are files beside the configuration.
//!
//! - [`definition`]: the file format, checked as a whole (every problem with file, line, key);
//! - [`wire`]: one call built from its templates, sent, and its answer classified;
//! - [`auth`]: bearer, API key, HMAC, OAuth2 client credentials and session login;
//! - [`guard`]: the SSRF guard (no private, loopback or link-local address unless allow-listed);
//! - [`connector`]: the live instance (limiter, concurrency, token cache, retries, paging);
//! - [`vendor`]: the `http` kind in the vendor registry.

pub mod auth;
pub mod connector;
pub mod definition;
pub mod guard;
pub mod vendor;
pub mod wire;

use std::sync::Arc;

pub use connector::{HttpConnector, ListOptions, Options};
pub use definition::{Definition, DefinitionError, Problem};

/// The shipped definitions: (name, file text).
pub const SHIPPED: &[(&str, &str)] = &[
    ("tryton", include_str!("../../http/tryton.yaml")),
    ("tryton-rpc", include_str!("../../http/tryton-rpc.yaml")),
];

/// Whether `text` names a shipped definition (no path separator, no `.yaml`).
pub fn is_name(text: &str) -> bool {
    !text.contains('/')
        && !text.contains('\\')
        && !text.ends_with(".yaml")
        && !text.ends_with(".yml")
}

/// A shipped definition by name, or a definition file by path.
pub fn resolve(text: &str) -> Result<Arc<Definition>, DefinitionError> {
    if is_name(text) {
        let Some((name, body)) = SHIPPED.iter().find(|(n, _)| *n == text) else {
            return Err(DefinitionError {
                origin: text.to_owned(),
                problems: vec![Problem {
                    line: 0,
                    key: String::new(),
                    message: format!(
                        "no shipped definition {text:?} (shipped: {}); give a file's path to use your own",
                        SHIPPED
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }],
            });
        };
        Definition::from_str(&format!("shipped:{name}"), body).map(Arc::new)
    } else {
        Definition::load(text).map(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_definitions_load() {
        for (name, _) in SHIPPED {
            let d = resolve(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(d.name, *name);
        }
        assert!(resolve("nope").unwrap_err().to_string().contains("tryton"));
    }
}
