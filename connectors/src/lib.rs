//! huitong connectors: one module per vendor behind capability traits, each with a sandbox that
//! emulates the vendor's API.
//!
//! Framework: [`error`] (classification), [`capability`] (the traits), [`client`] (the one
//! client core: limiter, token, envelope, error table, retries), [`telemetry`] (connector
//! metrics), [`token`] (token manager), [`limit`] (outbound limiter), [`http`] (client + retries), [`crypto`], [`fixture`]
//! (org fixture format) and [`sandbox`] (what every vendor sandbox shares).
//! Vendors: [`feishu`].

pub mod capability;
pub mod client;
pub mod crypto;
pub mod declared;
pub mod error;
pub mod fixture;
pub mod http;
pub mod limit;
pub mod push;
pub mod receiver;
pub mod telemetry;
pub mod token;

pub use capability::{
    CallbackError, CallbackOutcome, CallbackReply, CallbackRequest, Entity, EventDedup, FileKind,
    FileLimits, Files, InMemoryDedup, ListQuery, PushChannel, PushDelivery, RawEvent, ReadEntities,
    ReceiveEvents, RecordStream, WriteEntities,
};
pub use error::{ConnectorError, ErrorClass};
pub mod dingtalk;
pub mod feishu;
pub mod registry;
pub mod sandbox;
pub mod wecom;
pub mod wxbiz;
