//! One file per `vit` command.

pub mod bench;
pub mod download;
pub mod eval;
pub mod import;
pub mod patches;
pub mod predict;
pub mod summary;
pub mod train;
