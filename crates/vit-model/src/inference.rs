//! Classifying images with a checkpoint, without a trainer: load, prepare images from encoded
//! bytes or from pixels in memory as the checkpoint says, predict in batches, explain.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use vit_data::Preprocessing;

use crate::explain::{Explanation, Target, explain};
use crate::{CheckpointMeta, InferencePrecision, ModelError, ModuleTree, Vit};

/// How many images [`Classifier`] runs through the model at once unless told otherwise.
pub const DEFAULT_BATCH: usize = 32;

/// An image already decoded: `height x width x channels` bytes, HWC, with the channels the
/// model takes (1: grey, 3: RGB).
#[derive(Debug, Clone, Copy)]
pub struct Pixels<'a> {
    /// The bytes, row by row.
    pub data: &'a [u8],
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// A model ready to classify images as its checkpoint says they were prepared (see
/// [`Preprocessing`]), with its class names.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use candle_core::Device;
/// use vit_model::inference::{Classifier, Pixels};
/// # let dir = std::env::temp_dir().join(format!("vit-classifier-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let path = dir.join("model.safetensors");
/// # let cfg = vit_model::VitConfig { num_layers: 1, ..vit_model::VitConfig::mnist() };
/// # let (_, store) = vit_model::Vit::init(&cfg, 1, &Device::Cpu)?;
/// # let meta = vit_model::CheckpointMeta::new(cfg, (0..10).map(|d| d.to_string()).collect());
/// # vit_model::checkpoint::save(&path, store.varmap(), &meta)?;
/// # let png = |v: u8| { let mut bytes = Vec::new(); image::GrayImage::from_pixel(28, 28, image::Luma([v])).write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).map(|_| bytes) };
/// # let (first, second) = (png(0)?, png(255)?);
/// // A checkpoint of a run, or one `vit import` wrote: it knows how its images are prepared.
/// let classifier = Classifier::load(&path, &Device::Cpu)?;
/// // Image files' bytes in memory (PNG, JPEG, ...), classified in batches.
/// let top = classifier.classify(&[first.as_slice(), second.as_slice()], 3)?;
/// assert_eq!(top.len(), 2);
/// let (class, probability) = &top[0][0];
/// assert!(classifier.class_names().contains(class) && *probability > 0.0);
/// // Pixels a camera or another decoder already gave: 20x20 grey, resized as the checkpoint says.
/// let frame = vec![128u8; 20 * 20];
/// let top = classifier.classify_pixels(&[Pixels { data: &frame, height: 20, width: 20 }], 1)?;
/// assert_eq!(top[0].len(), 1);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
pub struct Classifier {
    model: Vit,
    meta: CheckpointMeta,
    preprocessing: Preprocessing,
    batch: usize,
    device: Device,
}

impl Classifier {
    /// The checkpoint at `path` (its metadata checked as it is read), for inference on
    /// `device`, in `f32`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self, ModelError> {
        let (model, _, meta) = Vit::load(path, device)?;
        Ok(Self::new(model, meta, device))
    }

    /// A model already in memory with the metadata that describes it.
    pub fn new(model: Vit, meta: CheckpointMeta, device: &Device) -> Self {
        let preprocessing = meta.preprocessing();
        Self { model: model.detached(), meta, preprocessing, batch: DEFAULT_BATCH, device: device.clone() }
    }

    /// The same classifier computing in `precision` (int8: every dense layer quantized now,
    /// on the CPU only).
    pub fn in_precision(self, precision: InferencePrecision) -> Result<Self, ModelError> {
        Ok(Self { model: self.model.for_inference(precision)?, ..self })
    }

    /// The same classifier running at most `batch` images through the model at once (at
    /// least 1; [`DEFAULT_BATCH`] unless set).
    pub fn with_batch_size(self, batch: usize) -> Self {
        Self { batch: batch.max(1), ..self }
    }

    /// The class names, in logit order.
    pub fn class_names(&self) -> &[String] {
        &self.meta.class_names
    }

    /// The checkpoint's metadata.
    pub fn meta(&self) -> &CheckpointMeta {
        &self.meta
    }

    /// How images are prepared for the model.
    pub fn preprocessing(&self) -> &Preprocessing {
        &self.preprocessing
    }

    /// The model.
    pub fn model(&self) -> &Vit {
        &self.model
    }

    /// The encoded images (PNG, JPEG, ...) as the model takes them, prepared as
    /// [`Preprocessing`] says; also each image's bytes at the model's input size, `[H, W, C]`,
    /// for pictures.
    ///
    /// # Shapes
    /// - returns `[B, H, W, C]` (the model's input) and `B` vectors of `H * W * C` bytes.
    pub fn prepare(&self, images: &[&[u8]]) -> Result<(Tensor, Vec<Vec<u8>>), ModelError> {
        self.prepare_named(images, |i| PathBuf::from(format!("<image {i}>")))
    }

    /// [`prepare`](Self::prepare), `name(i)` naming image `i` in errors.
    fn prepare_named(
        &self,
        images: &[&[u8]],
        name: impl Fn(usize) -> PathBuf,
    ) -> Result<(Tensor, Vec<Vec<u8>>), ModelError> {
        let mut inputs = Vec::with_capacity(images.len() * self.input_len());
        let mut shown = Vec::with_capacity(images.len());
        for (i, bytes) in images.iter().enumerate() {
            let prepared = self.preprocessing.prepare_encoded(bytes, &name(i))?;
            inputs.extend(prepared.input);
            shown.push(prepared.shown);
        }
        Ok((self.batch_tensor(inputs, images.len())?, shown))
    }

    /// Decoded images as the model takes them, prepared as [`Preprocessing`] says.
    ///
    /// # Shapes
    /// - returns `[B, H, W, C]`, the model's input.
    pub fn prepare_pixels(&self, images: &[Pixels<'_>]) -> Result<Tensor, ModelError> {
        let mut inputs = Vec::with_capacity(images.len() * self.input_len());
        for (i, image) in images.iter().enumerate() {
            let source = format!("<pixels {i}>");
            inputs.extend(self.preprocessing.prepare_pixels(image.data, (image.height, image.width), &source)?);
        }
        self.batch_tensor(inputs, images.len())
    }

    /// The `k` most probable classes of each encoded image (`(class name, probability)`, most
    /// probable first), prepared as [`prepare`](Self::prepare) says.
    pub fn classify(&self, images: &[&[u8]], k: usize) -> Result<Vec<Vec<(String, f32)>>, ModelError> {
        self.classify_named(images, k, |i| PathBuf::from(format!("<image {i}>")))
    }

    /// [`classify`](Self::classify), `name(i)` naming image `i` in errors.
    fn classify_named(
        &self,
        images: &[&[u8]],
        k: usize,
        name: impl Fn(usize) -> PathBuf,
    ) -> Result<Vec<Vec<(String, f32)>>, ModelError> {
        let mut out = Vec::with_capacity(images.len());
        for (c, chunk) in images.chunks(self.batch).enumerate() {
            let (x, _) = self.prepare_named(chunk, |i| name(c * self.batch + i))?;
            out.extend(self.top_classes(&x, k)?);
        }
        Ok(out)
    }

    /// [`classify`](Self::classify) of decoded images.
    pub fn classify_pixels(&self, images: &[Pixels<'_>], k: usize) -> Result<Vec<Vec<(String, f32)>>, ModelError> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch) {
            out.extend(self.top_classes(&self.prepare_pixels(chunk)?, k)?);
        }
        Ok(out)
    }

    /// The class probabilities of prepared images, one row per image, in logit order.
    ///
    /// # Shapes
    /// - `images`: `[B, H, W, C]`, as [`prepare`](Self::prepare) gives them.
    pub fn probabilities(&self, images: &Tensor) -> Result<Vec<Vec<f32>>, ModelError> {
        Ok(self.model.predict_proba(images)?.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }

    /// Attention rollout, per-head attention and relevance of each encoded image (see
    /// [`crate::explain`]), with its bytes at the model's input size.
    pub fn explain(&self, images: &[&[u8]], target: Target) -> Result<Vec<(Explanation, Vec<u8>)>, ModelError> {
        let mut out = Vec::with_capacity(images.len());
        for (c, chunk) in images.chunks(self.batch).enumerate() {
            let (x, shown) = self.prepare_named(chunk, |i| PathBuf::from(format!("<image {}>", c * self.batch + i)))?;
            out.extend(explain(&self.model, &x, target)?.into_iter().zip(shown));
        }
        Ok(out)
    }

    fn top_classes(&self, images: &Tensor, k: usize) -> Result<Vec<Vec<(String, f32)>>, ModelError> {
        let name = |i: usize| self.meta.class_names.get(i).cloned().unwrap_or_else(|| format!("class {i}"));
        let probs = self.probabilities(images)?;
        Ok(probs.iter().map(|row| top_k(row, k).into_iter().map(|(i, p)| (name(i), p)).collect()).collect())
    }

    fn input_len(&self) -> usize {
        let (h, w) = self.preprocessing.input;
        h * w * self.preprocessing.channels
    }

    fn batch_tensor(&self, inputs: Vec<f32>, images: usize) -> Result<Tensor, ModelError> {
        let (h, w) = self.preprocessing.input;
        Ok(Tensor::from_vec(inputs, (images, h, w, self.preprocessing.channels), &self.device)?)
    }
}

/// The `k` most probable classes of each image file: `(class name, probability)`, most
/// probable first, prepared as the checkpoint says; the model computes in `precision`.
pub fn predict_files(
    checkpoint: &Path,
    files: &[impl AsRef<Path>],
    k: usize,
    precision: InferencePrecision,
    device: &Device,
) -> Result<Vec<Vec<(String, f32)>>, ModelError> {
    let classifier = Classifier::load(checkpoint, device)?.in_precision(precision)?;
    let mut out = Vec::with_capacity(files.len());
    // Read a batch at a time: the files' bytes are never all held at once.
    for chunk in files.chunks(classifier.batch) {
        let mut encoded = Vec::with_capacity(chunk.len());
        for file in chunk {
            let file = file.as_ref();
            encoded.push(std::fs::read(file).map_err(|e| ModelError::io(file, e))?);
        }
        let bytes: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        out.extend(classifier.classify_named(&bytes, k, |i| chunk[i].as_ref().to_path_buf())?);
    }
    Ok(out)
}

/// Indices and values of the `k` largest entries, largest first (the lower index first on ties).
pub fn top_k(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, row[i])).collect()
}
