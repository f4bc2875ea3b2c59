//! Batches prepared on a background thread while the model trains.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};

use crate::augment::{AugmentConfig, Normalizer, prepare};
use crate::dataset::Dataset;

/// One batch of prepared images and their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Prepared pixels, `len * height * width * channels` floats (NHWC).
    pub images: Vec<f32>,
    /// Labels.
    pub labels: Vec<u32>,
    /// `(height, width, channels)` of each image.
    pub image_shape: (usize, usize, usize),
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
    /// The batch of `indices`, augmented with `(config, seed, epoch)` when given.
    pub fn batch(&self, data: &Dataset, indices: &[usize], augment: Option<(&AugmentConfig, u64, u64)>) -> Batch {
        let mut images = Vec::with_capacity(indices.len() * self.size.0 * self.size.1 * data.channels);
        for &i in indices {
            images.extend(prepare(data, i, self.size, &self.normalizer, augment));
        }
        let labels = indices.iter().map(|&i| data.labels[i]).collect();
        Batch { images, labels, image_shape: (self.size.0, self.size.1, data.channels) }
    }
}

/// Batches of `order` in chunks of `batch_size`, starting after `skip` batches, prepared on a
/// thread of their own, at most [`Loader::AHEAD`] batches ahead of the consumer.
pub struct Loader {
    receiver: Receiver<Batch>,
    handle: Option<JoinHandle<()>>,
}

impl Loader {
    /// Batches prepared ahead of the consumer at most.
    pub const AHEAD: usize = 3;

    /// Starts the producer thread.
    pub fn spawn(
        data: Arc<Dataset>,
        pipeline: Pipeline,
        order: Vec<usize>,
        batch_size: usize,
        skip: usize,
        augment: Option<(AugmentConfig, u64, u64)>,
    ) -> Self {
        let (sender, receiver) = sync_channel(Self::AHEAD);
        let handle = std::thread::Builder::new()
            .name("vit-batches".into())
            .spawn(move || {
                for chunk in order.chunks(batch_size).skip(skip) {
                    let batch = pipeline.batch(&data, chunk, augment.as_ref().map(|(c, s, e)| (c, *s, *e)));
                    if sender.send(batch).is_err() {
                        return; // the consumer stopped early
                    }
                }
            })
            .expect("spawning the batch thread");
        Self { receiver, handle: Some(handle) }
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        self.receiver.recv().ok()
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
