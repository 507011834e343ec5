pub mod connector;
pub mod demo;
pub mod fixture;
pub mod mapping;
pub mod sandbox;
pub mod schedule;
pub mod sync;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}
