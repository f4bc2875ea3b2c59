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
    /// Hugging Face `transformers` ViT, or a timm ViT saved for the hub); or `hf://ORG/NAME`
    /// (`@REVISION`), fetched from the hub and checked first (online).
    source: PathBuf,
    /// The hub cache `hf://` models are kept in, shared with Python's `huggingface_hub`
    /// (default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// The checkpoint to write (.safetensors): the weights, the config, the class names and
    /// the preprocessing the weights expect.
    #[arg(long, short)]
    output: PathBuf,
    /// For a bare timm state dict (SOURCE a .safetensors file): the architecture it is, e.g.
    /// `vit_small_patch16_224` (the head count is not in the shapes).
    #[arg(long)]
    architecture: Option<String>,
    /// For a bare state dict: its number of attention heads, where it is not the
    /// architecture's.
    #[arg(long, value_parser = crate::args::at_least_one)]
    num_heads: Option<usize>,
    /// For a bare state dict: the per-channel mean and std its weights expect, e.g.
    /// `--mean 0.5,0.5,0.5 --std 0.5,0.5,0.5` (else none is recorded).
    #[arg(long, value_delimiter = ',', requires = "std")]
    mean: Option<Vec<f64>>,
    /// See --mean.
    #[arg(long, value_delimiter = ',', requires = "mean")]
    std: Option<Vec<f64>>,
}

pub fn run(mut args: ImportArgs) -> Result<()> {
    if let Some((repo, revision)) = crate::hub::parse_source(&args.source.to_string_lossy())? {
        let cache = match &args.cache {
            Some(dir) => dir.clone(),
            None => crate::hub::default_cache()?,
        };
        args.source = crate::hub::fetch(&repo, &revision, &cache)?;
    }
    if args.source.is_file() {
        let Some(architecture) = &args.architecture else {
            bail!("{}: a bare state dict needs --architecture (e.g. vit_small_patch16_224)", args.source.display());
        };
        let mean_std = args.mean.clone().zip(args.std.clone());
        let (model, store, meta) =
            timm::load_state_dict(&args.source, architecture, args.num_heads, mean_std, &Device::Cpu)?;
        checkpoint::save(&args.output, store.varmap(), &meta)?;
        return report("timm", &args, &model, &meta);
    }
    let config = args.source.join("config.json");
    let text = std::fs::read_to_string(&config).with_context(|| format!("{}", config.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", config.display()))?;
    let device = Device::Cpu;
    let (library, (model, store, meta)) = if json.get("architecture").is_some() {
        ("timm", timm::load(&args.source, &device)?)
    } else if json.get("hidden_size").is_some() {
        ("Hugging Face", hf::load(&config, vit_model::import::weights_in(&args.source)?, &device)?)
    } else {
        bail!(
            "{}: neither a timm config (`architecture`) nor a Hugging Face ViT config (`hidden_size`)",
            config.display()
        );
    };
    checkpoint::save(&args.output, store.varmap(), &meta)?;
    report(library, &args, &model, &meta)
}

fn report(library: &str, args: &ImportArgs, model: &vit_model::Vit, meta: &vit_model::CheckpointMeta) -> Result<()> {
    let normalizer = match &meta.preprocessing {
        None => "none recorded".to_string(),
        Some(prep) => {
            let resize = match prep.resize {
                None => String::new(),
                Some(spec) => match spec.crop_pct {
                    Some(crop) => {
                        format!(", resized ({}) with a centre crop of {crop}", spec.interpolation.name())
                    }
                    None => format!(", stretched ({})", spec.interpolation.name()),
                },
            };
            format!("mean {:?} std {:?}{resize}", prep.normalizer.mean, prep.normalizer.std)
        }
    };
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
