//! Prediction on image files, prepared as the checkpoint's training data was.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use vit_data::augment::prepare;
use vit_data::{Dataset, read_image};
use vit_model::{CheckpointMeta, Vit};

use crate::TrainError;
use crate::metadata::pipeline_of;
use crate::metrics::top_k;

/// The `k` most probable classes of each image file: `(class name, probability)`, most
/// probable first. Images are read as the training data was (size, channels) and prepared with
/// the checkpoint's normalisation.
pub fn predict_files(
    model: &Vit,
    meta: &CheckpointMeta,
    checkpoint: &Path,
    files: &[impl AsRef<Path>],
    k: usize,
    device: &Device,
) -> Result<Vec<Vec<(String, f32)>>, TrainError> {
    let cfg = &meta.config;
    let (normalizer, (dh, dw)) = pipeline_of(meta, checkpoint)?;
    let (h, w) = (cfg.image_size[0], cfg.image_size[1]);
    let mut pixels = Vec::with_capacity(files.len() * h * w * cfg.channels);
    for file in files {
        let file = file.as_ref();
        let bytes = read_image(file, dh, dw, cfg.channels)?;
        let one = Dataset::new("image", bytes, vec![0], (dh, dw, cfg.channels), vec!["?".into()], file)?;
        pixels.extend(prepare(&one, 0, (h, w), &normalizer, None));
    }
    let x = Tensor::from_vec(pixels, (files.len(), h, w, cfg.channels), device)?;
    let probs = model.detached().predict_proba(&x)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(probs
        .iter()
        .map(|row| {
            let name = |i: usize| meta.class_names.get(i).cloned().unwrap_or_else(|| format!("class {i}"));
            top_k(row, k).into_iter().map(|(i, p)| (name(i), p)).collect()
        })
        .collect())
}
