//! `vit export`: a checkpoint as an ONNX model, for ONNX Runtime, TensorRT, OpenVINO and the
//! rest.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use vit_onnx::ExportPrecision;

/// `--precision` of `vit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportPrecisionArg {
    /// float32: the logits of `vit predict`.
    F32,
    /// int8 dense layers (weights per output channel, activations per token at run time):
    /// the logits of `vit predict --precision int8`.
    Int8,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The checkpoint (.safetensors).
    checkpoint: PathBuf,
    /// The ONNX file to write (written whole, then renamed into place).
    #[arg(short, long)]
    output: PathBuf,
    /// Number format of the dense layers.
    #[arg(long, value_enum, default_value = "f32")]
    precision: ExportPrecisionArg,
}

pub fn run(args: ExportArgs) -> Result<()> {
    if args.output.is_dir() {
        bail!("-o {}: is a folder; give the ONNX file to write", args.output.display());
    }
    let same_file = match (args.output.canonicalize(), args.checkpoint.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same_file {
        bail!("-o {}: is the checkpoint itself; write the ONNX model to another file", args.output.display());
    }
    let precision = match args.precision {
        ExportPrecisionArg::F32 => ExportPrecision::F32,
        ExportPrecisionArg::Int8 => ExportPrecision::Int8,
    };
    let model = vit_onnx::export_checkpoint(&args.checkpoint, precision)
        .with_context(|| format!("exporting {}", args.checkpoint.display()))?;
    let bytes = vit_onnx::write(&model, &args.output)?;
    let meta = vit_model::checkpoint::read_meta(&args.checkpoint)?;
    let cfg = &meta.config;
    let [h, w] = cfg.image_size;
    let nodes = model.graph.as_ref().map_or(0, |g| g.node.len());
    println!(
        "wrote {}: {:.1} MB, ONNX opset {}, {nodes} nodes, {} dense layers",
        args.output.display(),
        bytes as f64 / 1e6,
        vit_onnx::OPSET,
        precision.name()
    );
    println!(
        "  input  `{}`: float32 [batch, {h}, {w}, {}] (NHWC), prepared as the metadata `{}` says",
        vit_onnx::INPUT,
        cfg.channels,
        vit_onnx::PREPROCESSING_KEY
    );
    println!(
        "  output `{}`: float32 [batch, {}], classes in the order of the metadata `{}`",
        vit_onnx::OUTPUT,
        cfg.num_classes,
        vit_onnx::CLASS_NAMES_KEY
    );
    Ok(())
}
