//! One file per `vit` command.

pub mod bench;
pub mod download;
pub mod eval;
pub mod explain;
pub mod export;
pub mod import;
pub mod patches;
pub mod predict;
pub mod report;
pub mod summary;
pub mod train;
