//! `vit import`: pretrained weights from Hugging Face or timm as a checkpoint of this project.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::Args;
use vit_model::checkpoint;
use vit_model::import::{hf, timm};

#[derive(Args)]
pub struct ImportArgs {
    /// A directory as the hub stores a model: `config.json` and `model.safetensors` (a
    /// Hugging Face `transformers` ViT, or a timm ViT saved for the hub).
    source: PathBuf,
    /// The checkpoint to write (.safetensors): the weights, the config, the class names and
    /// the preprocessing the weights expect.
    #[arg(long, short)]
    output: PathBuf,
}

pub fn run(args: ImportArgs) -> Result<()> {
    let config = args.source.join("config.json");
    let text = std::fs::read_to_string(&config).with_context(|| format!("{}", config.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", config.display()))?;
    let device = Device::Cpu;
    let (library, (model, store, meta)) = if json.get("architecture").is_some() {
        ("timm", timm::load(&args.source, &device)?)
    } else if json.get("hidden_size").is_some() {
        ("Hugging Face", hf::load(&config, args.source.join("model.safetensors"), &device)?)
    } else {
        bail!(
            "{}: neither a timm config (`architecture`) nor a Hugging Face ViT config (`hidden_size`)",
            config.display()
        );
    };
    checkpoint::save(&args.output, store.varmap(), &meta)?;
    let normalizer = meta.extra.get(checkpoint::NORMALIZER_KEY).map_or("none", String::as_str);
    println!(
        "{library} ViT from {}: {} parameters, {} classes, {}x{} input, normalisation {normalizer}; wrote {}",
        args.source.display(),
        vit_model::group_thousands(model.summary().total_parameters()),
        meta.class_names.len(),
        meta.config.image_size[0],
        meta.config.image_size[1],
        args.output.display()
    );
    Ok(())
}
