//! `vit eval`: top-1, top-5, per-class accuracy and the confusion matrix of a checkpoint.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use vit_data::{DatasetKind, FolderOptions, Pipeline, load_test_split_with};
use vit_model::InferencePrecision;
use vit_model::inference::Classifier;
use vit_train::{check_fits, evaluate_against, evaluate_observed};

use crate::progress::EvalProgress;
use crate::render::{confusion::confusion_matrix, save_png};

use crate::args::{at_least_one, dataset_parser};

#[derive(Args)]
pub struct EvalArgs {
    /// The checkpoint (.safetensors).
    checkpoint: PathBuf,
    /// The data set whose test split to evaluate on.
    #[arg(long, value_parser = dataset_parser(&DatasetKind::ALL))]
    data: DatasetKind,
    /// Data directory (else $VIT_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Batch size (at least 1).
    #[arg(long, default_value_t = 256, value_parser = at_least_one)]
    batch_size: usize,
    /// Also draw the confusion matrix as a heat map into this PNG.
    #[arg(long, value_name = "PNG")]
    plot: Option<PathBuf>,
    /// Number format: f32, bf16, or int8 (CPU; dense layers quantized at load). Other than
    /// f32, the f32 model runs too and the agreement of the two is printed.
    #[arg(long, default_value = "f32")]
    precision: InferencePrecision,
    /// Image folders: skip images that cannot be read or decoded (each is listed) instead of
    /// stopping at the first.
    #[arg(long)]
    skip_unreadable: bool,
}

pub fn run(args: EvalArgs, device: Device) -> Result<()> {
    let classifier = Classifier::load(&args.checkpoint, &device)?;
    let (meta, prep) = (classifier.meta(), classifier.preprocessing());
    let cfg = &meta.config;
    let options = FolderOptions { skip_unreadable: args.skip_unreadable, stream: None };
    let (test, skipped) =
        load_test_split_with(&args.data, args.data_dir.as_deref(), prep.read_size, cfg.channels, &options)?;
    for image in &skipped {
        eprintln!("skipped unreadable {}: {}", image.path.display(), image.error);
    }
    // Classes are paired by name: the data may hold some of the model's classes, in any order.
    let test = test.relabel_by_name(&meta.class_names).with_context(|| args.checkpoint.display().to_string())?;
    check_fits(&test, cfg).with_context(|| args.checkpoint.display().to_string())?;
    let pipeline = Pipeline { size: prep.input, normalizer: prep.normalizer.clone() };
    let model = classifier.model();
    let test = Arc::new(test);
    let mut progress = EvalProgress::start("test", test.len(), false, std::time::Duration::from_secs(30));
    let reference = model.for_inference(InferencePrecision::F32)?;
    let candidate = model.for_inference(args.precision).with_context(|| format!("--precision {}", args.precision))?;
    let batch = args.batch_size;
    let mut done = |n| progress.update(n);
    let (tally, comparison) = if args.precision == InferencePrecision::F32 {
        (evaluate_observed(&reference, &test, &pipeline, batch, &device, &mut done), None)
    } else {
        match evaluate_against(&candidate, &reference, &test, &pipeline, batch, &device, &mut done) {
            Ok(c) => (Ok(c.candidate.clone()), Some(c)),
            Err(e) => (Err(e), None),
        }
    };
    progress.finish();
    let tally = tally?;
    println!("{}: {} images, {}", test.name, tally.count, args.precision);
    if let Some(c) = &comparison {
        println!(
            "{} against f32: top-1 {:.4} vs {:.4} ({:+.2} points), top-1 class the same on {:.2}% of images ({} of {})",
            args.precision,
            c.candidate.top1(),
            c.reference.top1(),
            100.0 * (c.candidate.top1() - c.reference.top1()),
            100.0 * c.agreement(),
            c.same_top1,
            c.candidate.count
        );
    }
    if tally.non_finite > 0 {
        println!(
            "warning: {} of {} images got NaN or infinite logits (counted as wrong, left out of the confusion matrix): the weights are not finite",
            tally.non_finite, tally.count
        );
    }
    println!("loss {:.4}  top-1 {:.4}  top-5 {:.4}", tally.loss(), tally.top1(), tally.top5());
    println!("\nper class:");
    for (name, acc) in meta.class_names.iter().zip(tally.per_class()) {
        if acc.is_nan() {
            println!("  {name:<20} no images");
        } else {
            println!("  {name:<20} {acc:.4}");
        }
    }
    if let Some(path) = &args.plot {
        let title = format!("{}: {} test images", test.name, tally.count);
        save_png(&confusion_matrix(&tally.confusion, &meta.class_names, &title)?, path)?;
        println!("wrote {}", path.display());
    }
    if cfg.num_classes <= 20 {
        println!("\nconfusion matrix (rows: true class, columns: predicted):");
        for (name, row) in meta.class_names.iter().zip(&tally.confusion) {
            let cells: Vec<String> = row.iter().map(|n| format!("{n:>5}")).collect();
            println!("  {name:<12} {}", cells.join(""));
        }
    }
    Ok(())
}
