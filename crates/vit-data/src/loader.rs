//! Batches prepared on a background thread while the model trains.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};

use crate::augment::{AugmentConfig, Normalizer, prepare};
use crate::dataset::Dataset;
use crate::error::DataError;
use crate::mix::{Mix, mix_images};

/// One batch of prepared images and their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Prepared pixels, `len * height * width * channels` floats (NHWC).
    pub images: Vec<f32>,
    /// Labels.
    pub labels: Vec<u32>,
    /// `(height, width, channels)` of each image.
    pub image_shape: (usize, usize, usize),
    /// How the batch was mixed (mixup or cutmix), if it was: its targets are then mixed too.
    pub mix: Option<Mix>,
}

impl Batch {
    /// Images in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True for a batch of no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Mixes the batch (the `batch_index`-th of `epoch`) by mixup or cutmix as `config` says
    /// (see [`mix_images`]), recording how in [`mix`](Self::mix).
    pub fn mix_with(&mut self, config: &AugmentConfig, seed: u64, epoch: u64, batch_index: u64) {
        self.mix = mix_images(&mut self.images, &self.labels, self.image_shape, config, seed, epoch, batch_index);
    }

    /// The images as an NHWC `f32` tensor and the labels as a `u32` tensor, on `device`.
    ///
    /// # Shapes
    /// - returns `[B, H, W, C]` and `[B]`.
    pub fn to_tensors(&self, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let (h, w, c) = self.image_shape;
        let images = Tensor::from_slice(&self.images, (self.len(), h, w, c), device)?;
        Ok((images, Tensor::new(self.labels.as_slice(), device)?))
    }
}

/// How images become model input.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Target size `(height, width)`: the model's input.
    pub size: (usize, usize),
    /// Normalisation statistics (of the training split).
    pub normalizer: Normalizer,
}

impl Pipeline {
    /// Checks that this pipeline can prepare images of `data`: a non-empty output size and
    /// normalisation statistics for as many channels as the images have.
    pub fn check(&self, data: &Dataset) -> Result<(), DataError> {
        let problem = if self.size.0 == 0 || self.size.1 == 0 {
            Some(format!("the output size {:?} is empty", self.size))
        } else if self.normalizer.mean.len() != data.channels || self.normalizer.std.len() != data.channels {
            Some(format!(
                "the normalisation has {} means and {} standard deviations for images of {} channels",
                self.normalizer.mean.len(),
                self.normalizer.std.len(),
                data.channels
            ))
        } else if self.normalizer.std.iter().chain(&self.normalizer.mean).any(|v| !v.is_finite())
            || self.normalizer.std.iter().any(|&s| s <= 0.0)
        {
            Some(format!("the normalisation {:?} is not finite and positive", self.normalizer))
        } else {
            None
        };
        match problem {
            Some(message) => Err(DataError::Pipeline { dataset: data.name.clone(), message }),
            None => Ok(()),
        }
    }

    /// The batch of `indices`, augmented with `(config, seed, epoch)` when given.
    pub fn batch(
        &self,
        data: &Dataset,
        indices: &[usize],
        augment: Option<(&AugmentConfig, u64, u64)>,
    ) -> Result<Batch, DataError> {
        self.check(data)?;
        if let Some(&bad) = indices.iter().find(|&&i| i >= data.len()) {
            return Err(DataError::Pipeline {
                dataset: data.name.clone(),
                message: format!("image {bad} asked for, but there are {}", data.len()),
            });
        }
        let mut images = Vec::with_capacity(indices.len() * self.size.0 * self.size.1 * data.channels);
        if data.is_streamed() {
            // Decoding is the cost of a streamed batch: every core decodes, ahead of the model
            // (this runs on the loader's thread while the model trains on the batch before).
            use rayon::prelude::*;
            let prepared: Vec<Result<Vec<f32>, DataError>> =
                indices.par_iter().map(|&i| prepare(data, i, self.size, &self.normalizer, augment)).collect();
            for pixels in prepared {
                images.extend(pixels?);
            }
        } else {
            for &i in indices {
                images.extend(prepare(data, i, self.size, &self.normalizer, augment)?);
            }
        }
        let labels = indices.iter().map(|&i| data.labels[i]).collect();
        Ok(Batch { images, labels, image_shape: (self.size.0, self.size.1, data.channels), mix: None })
    }
}

/// Batches of `order` in chunks of `batch_size`, starting after `skip` batches, prepared on a
/// thread of their own (augmented, and mixed by [`Batch::mix_with`] when the augmentation says so), at most [`Loader::AHEAD`] batches ahead of the consumer. It yields
/// each batch or the error that stopped the thread; a panic there ends the iteration with an
/// error, never quietly.
pub struct Loader {
    receiver: Receiver<Result<Batch, DataError>>,
    handle: Option<JoinHandle<()>>,
}

impl Loader {
    /// Batches prepared ahead of the consumer at most.
    pub const AHEAD: usize = 3;

    /// Checks the arguments and starts the producer thread.
    pub fn spawn(
        data: Arc<Dataset>,
        pipeline: Pipeline,
        order: Vec<usize>,
        batch_size: usize,
        skip: usize,
        augment: Option<(AugmentConfig, u64, u64)>,
    ) -> Result<Self, DataError> {
        if batch_size == 0 {
            return Err(DataError::Pipeline { dataset: data.name.clone(), message: "the batch size is 0".into() });
        }
        pipeline.check(&data)?;
        let (sender, receiver) = sync_channel(Self::AHEAD);
        let name = data.name.clone();
        let handle = std::thread::Builder::new()
            .name("vit-batches".into())
            .spawn(move || {
                for (index, chunk) in order.chunks(batch_size).enumerate().skip(skip) {
                    let mut batch = pipeline.batch(&data, chunk, augment.as_ref().map(|(c, s, e)| (c, *s, *e)));
                    if let (Ok(batch), Some((config, seed, epoch))) = (batch.as_mut(), augment.as_ref()) {
                        batch.mix_with(config, *seed, *epoch, index as u64);
                    }
                    let failed = batch.is_err();
                    if sender.send(batch).is_err() || failed {
                        return; // the consumer stopped early, or was told why this thread stops
                    }
                }
            })
            .map_err(|e| DataError::Pipeline { dataset: name, message: format!("no thread for the batches: {e}") })?;
        Ok(Self { receiver, handle: Some(handle) })
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Ok(batch) = self.receiver.recv() {
            return Some(batch);
        }
        // The thread is done: normally after its last batch, or by a panic.
        let handle = self.handle.take()?;
        match handle.join() {
            Ok(()) => None,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                Some(Err(DataError::Pipeline {
                    dataset: "batches".into(),
                    message: format!("the batch thread panicked: {message}"),
                }))
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Unblock the producer (its send fails once the receiver is gone), then join it.
        let (_, dead) = sync_channel(0);
        drop(std::mem::replace(&mut self.receiver, dead));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
