//! Inference over a whole data set, and the check that a data set fits a model.

use std::sync::Arc;

use candle_core::Device;
use vit_data::{Dataset, Loader, Pipeline};
use vit_model::{Vit, VitConfig};

use crate::TrainError;
use crate::metrics::{Tally, cross_entropy};
use vit_blocks::ModuleTree;

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

/// How a model in a reduced precision fares against the same model in `f32` on one data set.
#[derive(Debug, Clone)]
pub struct PrecisionComparison {
    /// The reduced-precision model's results.
    pub candidate: Tally,
    /// The `f32` model's results on the same images.
    pub reference: Tally,
    /// Images whose top-1 class is the same for both (both sets of logits finite).
    pub same_top1: usize,
}

impl PrecisionComparison {
    /// The share of images whose top-1 class both models agree on (NaN over no images).
    pub fn agreement(&self) -> f64 {
        if self.candidate.count == 0 { f64::NAN } else { self.same_top1 as f64 / self.candidate.count as f64 }
    }
}

/// [`evaluate_observed`] of `candidate` (a model in int8 or bf16) and of `reference` (the same
/// model in `f32`) on the same batches, with the share of images on which their top-1 agree.
pub fn evaluate_against(
    candidate: &Vit,
    reference: &Vit,
    data: &Arc<Dataset>,
    pipeline: &Pipeline,
    batch_size: usize,
    device: &Device,
    images_done: &mut dyn FnMut(usize),
) -> Result<PrecisionComparison, TrainError> {
    let mut out = PrecisionComparison {
        candidate: Tally::new(data.num_classes()),
        reference: Tally::new(data.num_classes()),
        same_top1: 0,
    };
    for batch in Loader::spawn(data.clone(), pipeline.clone(), (0..data.len()).collect(), batch_size, 0, None)? {
        let batch = batch?;
        let (images, labels) = batch.to_tensors(device)?;
        let mut rows = Vec::with_capacity(2);
        for (model, tally) in [(candidate, &mut out.candidate), (reference, &mut out.reference)] {
            let logits = model.forward(&images, false)?;
            let loss = cross_entropy(&logits, &labels, 0.0)?.to_scalar::<f32>()?;
            let logits = logits.to_vec2::<f32>()?;
            tally.add(&logits, &batch.labels, f64::from(loss));
            rows.push(logits);
        }
        out.same_top1 += rows[0].iter().zip(&rows[1]).filter(|(a, b)| top1(a).is_some() && top1(a) == top1(b)).count();
        images_done(out.candidate.count);
    }
    Ok(out)
}

/// The index of the largest logit, if every logit is finite.
fn top1(logits: &[f32]) -> Option<usize> {
    if logits.iter().any(|v| !v.is_finite()) {
        return None;
    }
    logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i)
}
