//! Inference over a whole data set, and the check that a data set fits a model.

use std::sync::Arc;

use candle_core::Device;
use vit_data::{Dataset, Loader, Pipeline};
use vit_model::{Vit, VitConfig};

use crate::TrainError;
use crate::metrics::{Tally, cross_entropy};

/// Checks that `data` has the channels and classes the model `cfg` takes.
pub fn check_fits(data: &Dataset, cfg: &VitConfig) -> Result<(), TrainError> {
    let mismatch = |message: String| Err(TrainError::Mismatch { dataset: data.name.clone(), message });
    if data.channels != cfg.channels {
        return mismatch(format!("images have {} channels, the model takes {}", data.channels, cfg.channels));
    }
    if data.num_classes() != cfg.num_classes {
        return mismatch(format!("{} classes, the model has {} outputs", data.num_classes(), cfg.num_classes));
    }
    Ok(())
}

/// Inference over a whole data set: loss, top-1, top-5 and the confusion matrix.
pub fn evaluate(
    model: &Vit,
    data: &Arc<Dataset>,
    pipeline: &Pipeline,
    batch_size: usize,
    device: &Device,
) -> Result<Tally, TrainError> {
    evaluate_observed(model, data, pipeline, batch_size, device, &mut |_| {})
}

/// [`evaluate`], calling `images_done` with the number of images evaluated after each batch
/// (for a progress bar).
pub fn evaluate_observed(
    model: &Vit,
    data: &Arc<Dataset>,
    pipeline: &Pipeline,
    batch_size: usize,
    device: &Device,
    images_done: &mut dyn FnMut(usize),
) -> Result<Tally, TrainError> {
    evaluate_rows(model, data, 0..data.len(), pipeline, batch_size, device, images_done)
}

/// [`evaluate_observed`] over the images `rows` of `data` only (one rank's share).
pub(crate) fn evaluate_rows(
    model: &Vit,
    data: &Arc<Dataset>,
    rows: std::ops::Range<usize>,
    pipeline: &Pipeline,
    batch_size: usize,
    device: &Device,
    images_done: &mut dyn FnMut(usize),
) -> Result<Tally, TrainError> {
    let mut tally = Tally::new(data.num_classes());
    let model = model.detached();
    for batch in Loader::spawn(data.clone(), pipeline.clone(), rows.collect(), batch_size, 0, None)? {
        let batch = batch?;
        let (images, labels) = batch.to_tensors(device)?;
        let logits = model.forward(&images, false)?;
        let loss = cross_entropy(&logits, &labels, 0.0)?.to_scalar::<f32>()?;
        tally.add(&logits.to_vec2::<f32>()?, &batch.labels, f64::from(loss));
        images_done(tally.count);
    }
    Ok(tally)
}
