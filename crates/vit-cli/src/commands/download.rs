//! `vit download`: fetch a public data set and check it.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::args::DownloadArg;

#[derive(Args)]
pub struct DownloadArgs {
    /// The data set.
    #[arg(value_enum)]
    dataset: DownloadArg,
    /// Cache directory (pass it as --data-dir afterwards).
    #[arg(long, default_value = "data")]
    dir: PathBuf,
}

pub fn run(args: DownloadArgs) -> Result<()> {
    let kind = args.dataset.kind();
    let dir = crate::download::download(&kind, &args.dir)?;
    println!("{} is ready: pass --data-dir {}", kind.name(), dir.display());
    Ok(())
}
