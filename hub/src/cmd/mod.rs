pub mod mapping;
pub mod sandbox;
pub mod schedule;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}
