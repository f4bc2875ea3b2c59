//! `vit report RUN_DIR`: the run's pictures (curves, confusion matrix, sample predictions,
//! attention maps) and `report.html`, one self-contained page with all of them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use image::RgbImage;
use vit_data::Dataset;
use vit_data::augment::prepare;
use vit_model::Vit;
use vit_model::explain::{Target, explain};
use vit_train::metrics::top_k;
use vit_train::trainer::{load_recipe_splits, read_run};

use crate::render::report::{Figure, ReportContent, render};
use crate::render::samples::{Sample, sample_grid};
use crate::render::{attention, confusion, curves, save_png};

#[derive(Args)]
pub struct ReportArgs {
    /// The run directory (`vit train --out DIR`).
    run_dir: PathBuf,
    /// Data directory for the test images shown (else the recipe's, else $VIT_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How many test images to show with their predictions.
    #[arg(long, default_value_t = 24, value_parser = crate::args::at_least_one)]
    samples: usize,
    /// How many of them to explain with attention maps.
    #[arg(long, default_value_t = 4)]
    explain: usize,
}

pub fn run(args: ReportArgs, device: Device) -> Result<()> {
    let page = write_report(&args.run_dir, args.data_dir.as_deref(), &device, args.samples, args.explain)?;
    println!("wrote {}", page.display());
    Ok(())
}

/// Writes `curves.png`, `confusion.png`, `samples.png`, `explain-<k>.png` and `report.html`
/// into the run directory; returns the page's path.
pub fn write_report(
    run_dir: &Path,
    data_dir: Option<&Path>,
    device: &Device,
    samples: usize,
    explained: usize,
) -> Result<PathBuf> {
    let run = read_run(run_dir)?;
    let (model, _, meta) = Vit::load(&run.checkpoint, device)?;
    let cfg = meta.config.clone();
    let normalizer = meta.preprocessing().normalizer;
    let (_, test, _) = load_recipe_splits(&run.recipe, &cfg, data_dir)
        .with_context(|| format!("the test split of {} (for the pictures)", run.recipe_path.display()))?;
    let names = &meta.class_names;
    let mut figures = Vec::new();
    let mut add = |file: &str, title: &str, caption: String, image: &RgbImage| -> Result<()> {
        let png = save_png(image, &run_dir.join(file))?;
        figures.push(Figure { title: title.into(), caption, png });
        Ok(())
    };

    add(
        "curves.png",
        "Training curves",
        "Per epoch: training (blue) and validation (orange).".into(),
        &curves::curves(&run.history)?,
    )?;
    let mut per_class = Vec::new();
    if let Some(summary) = run.summary.as_ref().filter(|s| !s.test_confusion.is_empty()) {
        let image = confusion::confusion_matrix(&summary.test_confusion, names, "Test confusion matrix")?;
        let caption = format!("{} test images; rows: true class, columns: prediction.", summary.test_images);
        add("confusion.png", "Confusion matrix", caption, &image)?;
        for (name, row) in names.iter().zip(&summary.test_confusion) {
            let total: usize = row.iter().sum();
            let right = row.get(per_class.len()).copied().unwrap_or(0);
            per_class.push((name.clone(), if total == 0 { f64::NAN } else { right as f64 / total as f64 }));
        }
    }

    let shown: Vec<usize> = (0..samples.min(test.len())).collect();
    let (h, w, c) = (cfg.image_size[0], cfg.image_size[1], cfg.channels);
    let mut pixels = Vec::with_capacity(shown.len() * h * w * c);
    for &i in &shown {
        pixels.extend(prepare(&test, i, (h, w), &normalizer, None)?);
    }
    if !shown.is_empty() {
        let x = Tensor::from_vec(pixels, (shown.len(), h, w, c), device)?;
        let probs = model.predict_proba(&x)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let grid = shown
            .iter()
            .zip(&probs)
            .map(|(&i, p)| {
                Ok(Sample {
                    pixels: at_model_size(&test, i, (h, w))?,
                    shape: (h, w, c),
                    label: test.labels[i] as usize,
                    top: top_k(p, 2),
                })
            })
            .collect::<Result<Vec<Sample>>>()?;
        let caption = format!("The first {} test images and the model's two most probable classes.", grid.len());
        add("samples.png", "Sample predictions", caption, &sample_grid(&grid, names, 8, "Test images")?)?;
        // Explained: the first wrong ones shown, then the first right ones.
        let wrong = grid.iter().enumerate().filter(|(_, s)| s.top[0].0 != s.label).map(|(k, _)| k);
        let right = grid.iter().enumerate().filter(|(_, s)| s.top[0].0 == s.label).map(|(k, _)| k);
        let mut chosen: Vec<usize> = wrong.take(explained / 2).collect();
        chosen.extend(right.take(explained - chosen.len()));
        chosen.sort_unstable();
        if !chosen.is_empty() {
            let picked = x.index_select(
                &Tensor::from_vec(chosen.iter().map(|&k| k as u32).collect::<Vec<_>>(), chosen.len(), device)?,
                0,
            )?;
            let maps = explain(&model, &picked, Target::Predicted)?;
            for (n, (k, e)) in chosen.iter().zip(&maps).enumerate() {
                let image = attention::explanation_picture(&grid[*k].pixels, (h, w, c), cfg.patch_size, e, names)?;
                let truth = names.get(grid[*k].label).cloned().unwrap_or_default();
                let caption = format!("Test image {} (true class {truth}).", shown[*k]);
                add(
                    &format!("explain-{}.png", n + 1),
                    &format!("Attention maps, test image {}", shown[*k]),
                    caption,
                    &image,
                )?;
            }
        }
    }
    let recipe_text = std::fs::read_to_string(&run.recipe_path).unwrap_or_default();
    let page = render(&ReportContent {
        name: &run.recipe.name,
        recipe_toml: &recipe_text,
        history: &run.history,
        summary: run.summary.as_ref(),
        per_class,
        figures,
    });
    let path = run_dir.join("report.html");
    vit_model::checkpoint::write_atomically(&path, page.as_bytes())?;
    Ok(path)
}

/// Image `i` of `data` at the model's input size (resized when the data's differs).
fn at_model_size(data: &Dataset, i: usize, (h, w): (usize, usize)) -> Result<Vec<u8>> {
    let pixels = data.image(i)?.into_owned();
    if (data.height, data.width) == (h, w) {
        return Ok(pixels);
    }
    let resize = |img: image::DynamicImage| img.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle);
    let (dw, dh) = (data.width as u32, data.height as u32);
    match data.channels {
        1 => image::GrayImage::from_raw(dw, dh, pixels).map(|g| resize(g.into()).into_luma8().into_raw()),
        _ => image::RgbImage::from_raw(dw, dh, pixels).map(|g| resize(g.into()).into_rgb8().into_raw()),
    }
    .ok_or_else(|| anyhow::anyhow!("{}: image {i} does not have the data set's size", data.name))
}
