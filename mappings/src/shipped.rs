//! The mappings shipped with huitong (`mappings/files/`), embedded so the hub can load them
//! without a path. Admins may copy and edit them; `huitong mapping check` validates the copies.

use crate::mapping::{LoadError, Mapping};

/// `(file name, YAML text)` of every shipped mapping.
pub const FILES: &[(&str, &str)] = &[
    (
        "dingtalk-person.yaml",
        include_str!("../files/dingtalk-person.yaml"),
    ),
    (
        "dingtalk-department.yaml",
        include_str!("../files/dingtalk-department.yaml"),
    ),
    (
        "feishu-person.yaml",
        include_str!("../files/feishu-person.yaml"),
    ),
    (
        "feishu-department.yaml",
        include_str!("../files/feishu-department.yaml"),
    ),
    (
        "wecom-person.yaml",
        include_str!("../files/wecom-person.yaml"),
    ),
    (
        "wecom-department.yaml",
        include_str!("../files/wecom-department.yaml"),
    ),
    (
        "tryton-person.yaml",
        include_str!("../files/tryton-person.yaml"),
    ),
    (
        "tryton-department.yaml",
        include_str!("../files/tryton-department.yaml"),
    ),
    (
        "tryton-party.yaml",
        include_str!("../files/tryton-party.yaml"),
    ),
    (
        "tryton-product.yaml",
        include_str!("../files/tryton-product.yaml"),
    ),
    (
        "tryton-order.yaml",
        include_str!("../files/tryton-order.yaml"),
    ),
];

/// Loads the shipped mapping for `system` × `entity` (`None` if there is none).
pub fn load(system: &str, entity: &str) -> Option<Result<Mapping, LoadError>> {
    let wanted = format!("{system}-{entity}.yaml");
    FILES
        .iter()
        .find(|(name, _)| *name == wanted)
        .map(|(name, text)| Mapping::from_str(name, text))
}

/// Loads every shipped mapping.
pub fn all() -> Result<Vec<Mapping>, LoadError> {
    FILES
        .iter()
        .map(|(name, text)| Mapping::from_str(name, text))
        .collect()
}
