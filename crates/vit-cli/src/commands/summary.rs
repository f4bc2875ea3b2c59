//! `vit summary`: a preset's or a config file's layers, shapes and parameter counts.

use anyhow::{Context, Result};
use clap::Args;
use vit_model::VitConfig;

#[derive(Args)]
pub struct SummaryArgs {
    /// A preset name or a config file (.toml/.json).
    #[arg(default_value = "keras_cifar100")]
    model: String,
}

pub fn run(args: SummaryArgs) -> Result<()> {
    let model = args.model;
    let cfg = match VitConfig::preset(&model) {
        Some(c) => c,
        None => VitConfig::from_file(&model).with_context(|| {
            format!("`{model}` is neither a preset ({}) nor a config file", VitConfig::PRESETS.join(", "))
        })?,
    };
    println!("{}", vit_model::Summary::of(&cfg));
    println!("forward: {:.3} GFLOP per image (matrix products)", cfg.forward_flops() as f64 / 1e9);
    Ok(())
}
