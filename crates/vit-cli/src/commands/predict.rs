//! `vit predict`: the most probable classes of image files.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use vit_model::InferencePrecision;
use vit_model::inference::predict_files;

#[derive(Args)]
pub struct PredictArgs {
    /// The checkpoint (.safetensors).
    checkpoint: PathBuf,
    /// Image files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// How many classes to show (at least 1).
    #[arg(long, default_value_t = 5, value_parser = crate::args::at_least_one)]
    top: usize,
    /// Number format: f32, bf16, or int8 (CPU; dense layers quantized at load).
    #[arg(long, default_value = "f32")]
    precision: InferencePrecision,
}

pub fn run(args: PredictArgs, device: Device) -> Result<()> {
    let results = predict_files(&args.checkpoint, &args.images, args.top, args.precision, &device)?;
    for (file, best) in args.images.iter().zip(results) {
        println!("{}", file.display());
        for (name, p) in best {
            println!("  {:>6.2}%  {name}", p * 100.0);
        }
    }
    Ok(())
}
