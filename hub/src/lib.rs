//! huitong (汇通): the hub service. See ARCHITECTURE.md for the code map.

pub mod app;
pub mod callbacks;
pub mod config;
pub mod jobs;
pub mod live;
pub mod push;
pub mod queue;
pub mod server;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod text;
