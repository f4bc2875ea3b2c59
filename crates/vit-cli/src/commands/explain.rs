//! `vit explain`: what a model looks at in each image, drawn over its patches.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::Args;
use vit_model::InferencePrecision;
use vit_model::explain::Target;
use vit_model::inference::Classifier;

use crate::render::{attention::explanation_picture, save_png};

#[derive(Args)]
pub struct ExplainArgs {
    /// The checkpoint (.safetensors).
    checkpoint: PathBuf,
    /// Image files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Output directory: one `<image name>.explain.png` per image.
    #[arg(long, short, default_value = ".")]
    output: PathBuf,
    /// The class whose relevance to draw, by name or index (default: each image's prediction).
    #[arg(long)]
    class: Option<String>,
    /// Number format: f32, bf16, or int8 (CPU; dense layers quantized at load; relevance
    /// flows back through the dequantized weights).
    #[arg(long, default_value = "f32")]
    precision: InferencePrecision,
}

pub fn run(args: ExplainArgs, device: Device) -> Result<()> {
    let classifier = Classifier::load(&args.checkpoint, &device)?
        .in_precision(args.precision)
        .with_context(|| format!("--precision {}", args.precision))?;
    let names = classifier.class_names().to_vec();
    let target = match &args.class {
        None => Target::Predicted,
        Some(wanted) => match names.iter().position(|n| n == wanted) {
            Some(i) => Target::Class(i),
            None => match wanted.parse::<usize>() {
                Ok(i) if i < names.len() => Target::Class(i),
                _ => bail!(
                    "--class: `{wanted}` is neither a class name of {} nor an index below {} (classes: {})",
                    args.checkpoint.display(),
                    names.len(),
                    names.iter().take(20).cloned().collect::<Vec<_>>().join(", ")
                ),
            },
        },
    };
    std::fs::create_dir_all(&args.output).with_context(|| format!("--output {}", args.output.display()))?;
    let cfg = classifier.model().config().clone();
    let mut encoded = Vec::with_capacity(args.images.len());
    for file in &args.images {
        encoded.push(std::fs::read(file).with_context(|| format!("reading {}", file.display()))?);
    }
    for (file, bytes) in args.images.iter().zip(&encoded) {
        // One image at a time: the probes of the backward pass grow with the batch.
        let explained = classifier.explain(&[bytes.as_slice()], target).with_context(|| file.display().to_string())?;
        let Some((e, pixels)) = explained.into_iter().next() else { continue };
        let shape = (cfg.image_size[0], cfg.image_size[1], cfg.channels);
        let picture = explanation_picture(&pixels, shape, cfg.patch_size, &e, &names)?;
        let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let out = args.output.join(format!("{stem}.explain.png"));
        save_png(&picture, &out)?;
        let p = e.probabilities.get(e.predicted).copied().unwrap_or(f32::NAN);
        println!("{}: predicted {} ({:.1}%); wrote {}", file.display(), names[e.predicted], p * 100.0, out.display());
    }
    Ok(())
}
