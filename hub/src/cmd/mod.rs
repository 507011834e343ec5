pub mod mapping;
pub mod sandbox;
