//! `vit download`: fetch a public data set and check it.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use vit_data::DatasetKind;

use crate::args::{DOWNLOADABLE, dataset_parser};

#[derive(Args)]
pub struct DownloadArgs {
    /// The data set.
    #[arg(value_parser = dataset_parser(&DOWNLOADABLE))]
    dataset: DatasetKind,
    /// Cache directory (pass it as --data-dir afterwards).
    #[arg(long, default_value = "data")]
    dir: PathBuf,
}

pub fn run(args: DownloadArgs) -> Result<()> {
    let kind = args.dataset;
    let dir = crate::download::download(&kind, &args.dir)?;
    println!("{} is ready: pass --data-dir {}", kind.name(), dir.display());
    Ok(())
}
