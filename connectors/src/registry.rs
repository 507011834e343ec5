//! The vendor registry: every vendor huitong speaks, with what its `[connectors.NAME]` table
//! takes and how one table becomes that vendor's directory, callback receiver and push
//! channel. The hub never matches on a vendor: it looks the vendor up here by its `kind`.
//!
//! A vendor app's directory is built **once per process** by the hub and shared (one limiter,
//! one token cache); the receiver and push channel hold no token of their own.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use secrecy::SecretString;
use serde_json::Value;

use crate::capability::{
    Entity, EventDedup, PushChannel, ReadEntities, ReceiveEvents, WriteEntities,
};
use crate::error::ConnectorError;

/// A key of a connector table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingKey {
    pub name: &'static str,
    pub required: bool,
    /// Read only from `<name>_env` / `<name>_file`, never written in the file.
    pub secret: bool,
}

impl SettingKey {
    pub const fn plain(name: &'static str, required: bool) -> Self {
        Self {
            name,
            required,
            secret: false,
        }
    }
    pub const fn secret(name: &'static str, required: bool) -> Self {
        Self {
            name,
            required,
            secret: true,
        }
    }
}

/// One connector table after the configuration layers: plain settings as strings, secrets
/// read from the environment or files and still wrapped.
#[derive(Clone, Default)]
pub struct Settings {
    pub name: String,
    pub plain: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretString>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("name", &self.name)
            .field("plain", &self.plain)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A setting that is wrong, by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    pub key: &'static str,
    pub message: String,
}

impl Settings {
    /// A plain setting, empty counted as absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.plain
            .get(key)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn secret(&self, key: &str) -> Option<SecretString> {
        self.secrets.get(key).cloned()
    }

    /// A required plain setting.
    pub fn require(&self, key: &'static str) -> Result<&str, SettingProblem> {
        self.get(key).ok_or(SettingProblem {
            key,
            message: "is not set".into(),
        })
    }

    /// A WXBizMsgCrypt receiver's settings (DingTalk, WeCom): the token and EncodingAESKey
    /// secrets and the receive id, by these keys.
    pub fn wxbiz_keys(
        &self,
        vendor: &'static str,
        [token, aes_key, receive_id]: [&'static str; 3],
    ) -> Result<(SecretString, SecretString, String), ConnectorError> {
        let need = |p| problem_error(vendor, p);
        Ok((
            self.require_secret(token).map_err(need)?,
            self.require_secret(aes_key).map_err(need)?,
            self.require(receive_id).map_err(need)?.to_owned(),
        ))
    }

    /// A required secret.
    pub fn require_secret(&self, key: &'static str) -> Result<SecretString, SettingProblem> {
        self.secret(key).ok_or(SettingProblem {
            key,
            message: "(secret) is not set".into(),
        })
    }
}

/// What the sync engine needs of a connector: read and write the org chart.
pub trait Directory: ReadEntities + WriteEntities {}
impl<T: ReadEntities + WriteEntities> Directory for T {}

/// A connector's callback receiver, or why it has none.
pub enum ReceiverSetup {
    Ready(Box<dyn ReceiveEvents>),
    /// Callback settings not configured (these keys are missing).
    Missing(Vec<&'static str>),
    /// Configured but unusable (e.g. a malformed AES key).
    Invalid(String),
}

/// Everything that differs between vendors, seen from the hub.
pub trait Vendor: Send + Sync + 'static {
    /// The `kind` of its connector tables (`feishu`).
    fn name(&self) -> &'static str;
    /// Other accepted spellings of `kind` (`lark`).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    /// The keys its connector table takes (besides `kind` and `events`).
    fn keys(&self) -> &'static [SettingKey];
    /// Keys whose values are TOML tables or arrays (`params`, `allow_hosts`), handed over as
    /// JSON text in the plain settings.
    fn table_keys(&self) -> &'static [&'static str] {
        &[]
    }
    /// Problems of present values (numbers, enums), beyond presence.
    fn check(&self, settings: &Settings) -> Vec<SettingProblem> {
        let _ = settings;
        Vec::new()
    }
    /// The `system` of the shipped mappings for a connector table (`feishu` → the shipped
    /// `feishu-person`), or `None` when none can be shipped (an admin's own definition).
    fn mapping_system(&self, settings: &Settings) -> Option<String> {
        let _ = settings;
        Some(self.name().to_owned())
    }
    /// Whether the vendor offers a channel huitong dials out to (long connection, Stream).
    fn has_push_channel(&self) -> bool {
        false
    }
    /// The vendor app's directory. Build it once per process and share it: it owns the app's
    /// limiter and token cache.
    fn directory(&self, settings: &Settings) -> Result<Arc<dyn Directory>, ConnectorError>;
    /// The callback receiver of a connector.
    fn receiver(
        &self,
        settings: &Settings,
        dedup: Arc<dyn EventDedup>,
        max_body_bytes: usize,
    ) -> ReceiverSetup;
    /// The push channel of a connector (no network call yet).
    fn push_channel(&self, settings: &Settings) -> Result<Box<dyn PushChannel>, ConnectorError> {
        let _ = settings;
        Err(ConnectorError::permanent(
            self.name(),
            format!("{} has no push channel", self.name()),
        ))
    }
    /// Whether an event type of this vendor is an org-chart (contact) change.
    fn is_contact_event(&self, event_type: &str) -> bool;
    /// The records (entity, vendor id) a contact event names; `None` when it can't tell.
    fn contact_records(&self, event_type: &str, payload: &Value) -> Option<Vec<(Entity, String)>>;
    /// The vendor's root department id.
    fn root_department_id(&self) -> &'static str;
    /// How many levels of departments the vendor allows, the root being level 1.
    fn max_department_levels(&self) -> Option<usize> {
        None
    }
    /// Whether a person's create/update sets department leadership from the person's record
    /// (WeCom `is_leader_in_dept`): a department's leaders then arrive with their people.
    fn person_carries_leadership(&self) -> bool {
        false
    }
}

/// A vendor written as data and a few functions; every [`VendorSpec`] is a [`Vendor`].
pub trait VendorSpec: Send + Sync + 'static {
    const NAME: &'static str;
    const ALIASES: &'static [&'static str] = &[];
    const KEYS: &'static [SettingKey];
    const ROOT_DEPARTMENT_ID: &'static str;
    const MAX_DEPARTMENT_LEVELS: Option<usize> = None;
    const PERSON_CARRIES_LEADERSHIP: bool = false;
    /// Whether [`Self::push_channel`] gives one (long connection, Stream mode).
    const HAS_PUSH_CHANNEL: bool = false;
    /// The settings a callback receiver needs.
    const CALLBACK_KEYS: CallbackKeys;
    /// Event types (lower case) that begin so are org-chart changes.
    const CONTACT_EVENT_PREFIXES: &'static [&'static str];
    /// The vendor app's settings.
    type Config;

    fn config(settings: &Settings) -> Result<Self::Config, SettingProblem>;
    /// Problems of present values, beyond presence.
    fn check(settings: &Settings) -> Vec<SettingProblem> {
        let _ = settings;
        Vec::new()
    }
    fn directory(config: Self::Config) -> Result<Arc<dyn Directory>, ConnectorError>;
    /// The receiver, once [`Self::CALLBACK_KEYS`] are set.
    fn receiver(
        settings: &Settings,
        dedup: Arc<dyn EventDedup>,
        max_body_bytes: usize,
    ) -> Result<Box<dyn ReceiveEvents>, ConnectorError>;
    /// The push channel, for a vendor that has one.
    fn push_channel(config: Self::Config) -> Option<Result<Box<dyn PushChannel>, ConnectorError>> {
        let _ = config;
        None
    }
    fn contact_records(event_type: &str, payload: &Value) -> Option<Vec<(Entity, String)>>;
}

/// The settings a vendor's callback receiver needs.
#[derive(Debug, Clone, Copy)]
pub enum CallbackKeys {
    /// Every one of them.
    All(&'static [&'static str]),
    /// At least one of them.
    AnyOf(&'static [&'static str]),
}

/// Whether this key is set, as a plain setting or a secret.
fn is_set(s: &Settings, key: &str) -> bool {
    s.get(key).is_some() || s.secrets.contains_key(key)
}

impl<T: VendorSpec> Vendor for T {
    fn name(&self) -> &'static str {
        T::NAME
    }
    fn aliases(&self) -> &'static [&'static str] {
        T::ALIASES
    }
    fn keys(&self) -> &'static [SettingKey] {
        T::KEYS
    }
    fn check(&self, settings: &Settings) -> Vec<SettingProblem> {
        T::check(settings)
    }
    fn has_push_channel(&self) -> bool {
        T::HAS_PUSH_CHANNEL
    }
    fn directory(&self, settings: &Settings) -> Result<Arc<dyn Directory>, ConnectorError> {
        let config = T::config(settings).map_err(|p| problem_error(T::NAME, p))?;
        T::directory(config)
    }
    fn receiver(
        &self,
        settings: &Settings,
        dedup: Arc<dyn EventDedup>,
        max_body_bytes: usize,
    ) -> ReceiverSetup {
        let missing: Vec<&'static str> = match T::CALLBACK_KEYS {
            CallbackKeys::All(keys) => keys
                .iter()
                .copied()
                .filter(|k| !is_set(settings, k))
                .collect(),
            CallbackKeys::AnyOf(keys) if keys.iter().any(|k| is_set(settings, k)) => Vec::new(),
            CallbackKeys::AnyOf(keys) => keys.to_vec(),
        };
        if !missing.is_empty() {
            return ReceiverSetup::Missing(missing);
        }
        match T::receiver(settings, dedup, max_body_bytes) {
            Ok(r) => ReceiverSetup::Ready(r),
            Err(e) => ReceiverSetup::Invalid(e.to_string()),
        }
    }
    fn push_channel(&self, settings: &Settings) -> Result<Box<dyn PushChannel>, ConnectorError> {
        let none =
            || ConnectorError::permanent(T::NAME, format!("{} has no push channel", T::NAME));
        if !T::HAS_PUSH_CHANNEL {
            return Err(none());
        }
        let config = T::config(settings).map_err(|p| problem_error(T::NAME, p))?;
        T::push_channel(config).unwrap_or_else(|| Err(none()))
    }
    fn is_contact_event(&self, event_type: &str) -> bool {
        let t = event_type.to_ascii_lowercase();
        T::CONTACT_EVENT_PREFIXES.iter().any(|p| t.starts_with(p))
    }
    fn contact_records(&self, event_type: &str, payload: &Value) -> Option<Vec<(Entity, String)>> {
        T::contact_records(event_type, payload)
    }
    fn root_department_id(&self) -> &'static str {
        T::ROOT_DEPARTMENT_ID
    }
    fn max_department_levels(&self) -> Option<usize> {
        T::MAX_DEPARTMENT_LEVELS
    }
    fn person_carries_leadership(&self) -> bool {
        T::PERSON_CARRIES_LEADERSHIP
    }
}

/// A vendor from the registry: compared, hashed and printed by its name.
#[derive(Clone, Copy)]
pub struct Kind(&'static dyn Vendor);

impl Kind {
    pub fn vendor(self) -> &'static dyn Vendor {
        self.0
    }
    pub fn as_str(self) -> &'static str {
        self.0.name()
    }
    /// The vendor whose `kind` (or alias) this is.
    pub fn parse(s: &str) -> Option<Kind> {
        VENDORS
            .iter()
            .find(|v| v.name() == s || v.aliases().contains(&s))
            .map(|v| Kind(*v))
    }
    /// The names `kind` accepts, for error messages: `feishu, dingtalk, wecom`.
    pub fn names() -> String {
        VENDORS
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
    /// Whether `vendor` (a callback path segment) names this kind.
    pub fn answers_to(self, vendor: &str) -> bool {
        vendor == self.0.name() || self.0.aliases().contains(&vendor)
    }
}

impl std::ops::Deref for Kind {
    type Target = dyn Vendor;
    fn deref(&self) -> &Self::Target {
        self.0
    }
}

impl PartialEq for Kind {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for Kind {}
impl std::hash::Hash for Kind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}
impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every vendor, in the order `kind` errors list them.
pub static VENDORS: &[&dyn Vendor] = &[
    &crate::feishu::vendor::Feishu,
    &crate::dingtalk::vendor::DingTalk,
    &crate::wecom::vendor::WeCom,
    &crate::declared::vendor::Http,
];

/// The vendor of a kind name (or alias).
pub fn vendor(kind: &str) -> Option<Kind> {
    Kind::parse(kind)
}

/// A WXBizMsgCrypt EncodingAESKey secret (DingTalk `aes_key`, WeCom `encoding_aes_key`), when
/// set, must be 43 base64 characters decoding to 32 bytes; the problem never repeats the value.
pub fn check_aes_key(settings: &Settings, key: &'static str) -> Option<SettingProblem> {
    use secrecy::ExposeSecret;
    let value = settings.secrets.get(key)?;
    crate::wxbiz::decode_aes_key(value.expose_secret().trim())
        .err()
        .map(|e| SettingProblem {
            key,
            message: format!("(secret) {e}"),
        })
}

/// A setting problem as a [`ConnectorError`] (for building a connector outside `config check`).
pub fn problem_error(vendor: &'static str, p: SettingProblem) -> ConnectorError {
    ConnectorError::permanent(vendor, format!("`{}` {}", p.key, p.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_name_and_alias() {
        assert_eq!(Kind::parse("feishu").unwrap().as_str(), "feishu");
        assert_eq!(Kind::parse("lark").unwrap().as_str(), "feishu");
        assert_eq!(Kind::parse("wecom").unwrap().as_str(), "wecom");
        assert!(Kind::parse("slack").is_none());
        assert_eq!(Kind::names(), "feishu, dingtalk, wecom, http");
        assert!(Kind::parse("feishu").unwrap().answers_to("lark"));
    }

    #[test]
    fn every_vendor_declares_its_required_secret() {
        // A declared (http) connector's secret depends on its definition's auth: its `check`
        // names the one missing (hub/tests/cli_connector.rs).
        for v in VENDORS.iter().filter(|v| v.name() != "http") {
            assert!(
                v.keys().iter().any(|k| k.secret && k.required),
                "{} has no required secret",
                v.name()
            );
        }
    }

    #[test]
    fn callback_aes_keys_are_checked_at_load_without_echoing_them() {
        let settings = |key: &str, value: &str| Settings {
            name: "c".into(),
            plain: [("agent_id".to_owned(), "1".to_owned())].into(),
            secrets: [(key.to_owned(), SecretString::from(value.to_owned()))].into(),
        };
        for (kind, key) in [("wecom", "encoding_aes_key"), ("dingtalk", "aes_key")] {
            let v = Kind::parse(kind).unwrap();
            let bad = v.check(&settings(key, "too-short-secret-value"));
            assert_eq!(bad.len(), 1, "{kind}: {bad:?}");
            assert_eq!(bad[0].key, key);
            assert!(!bad[0].message.contains("too-short-secret-value"));
            let not_base64 = "!".repeat(43);
            assert_eq!(v.check(&settings(key, &not_base64)).len(), 1, "{kind}");
            let good = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
            assert!(v.check(&settings(key, good)).is_empty(), "{kind}");
        }
    }
}
