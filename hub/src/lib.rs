//! huitong (汇通): the hub service. See ARCHITECTURE.md for the code map.

pub mod app;
pub mod callbacks;
pub mod config;
pub mod files;
pub mod hooks;
pub mod jobs;
pub mod live;
pub mod model;
pub mod push;
pub mod queue;
pub mod server;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod text;
