//! Classifying images, in memory or in files, prepared as the checkpoint says.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use vit_data::augment::{Normalizer, prepare};
use vit_data::{Dataset, ResizeSpec, decode_image, decode_with};
use vit_model::explain::{Explanation, Target, explain};
use vit_model::{CheckpointMeta, InferencePrecision, Vit};

use crate::TrainError;
use crate::metadata::{pipeline_of, resize_of};
use crate::metrics::top_k;
use vit_blocks::ModuleTree;

/// A model ready to classify images as its checkpoint says they were prepared: the input size
/// of the training data, the normalisation, the class names.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use candle_core::Device;
/// use vit_train::predict::Classifier;
/// # let dir = std::env::temp_dir().join(format!("vit-classifier-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let path = dir.join("model.safetensors");
/// # let cfg = vit_model::VitConfig { num_layers: 1, ..vit_model::VitConfig::mnist() };
/// # let (_, store) = vit_model::Vit::init(&cfg, 1, &Device::Cpu)?;
/// # let meta = vit_model::CheckpointMeta { config: cfg, class_names: (0..10).map(|d| d.to_string()).collect(), extra: Default::default() };
/// # vit_model::checkpoint::save(&path, store.varmap(), &meta)?;
/// # let png = |v: u8| { let mut bytes = Vec::new(); image::GrayImage::from_pixel(28, 28, image::Luma([v])).write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).map(|_| bytes) };
/// # let (first, second) = (png(0)?, png(255)?);
/// // A checkpoint of a run, or one `vit import` wrote: it knows how its images are prepared.
/// let classifier = Classifier::load(&path, &Device::Cpu)?;
/// // Image files' bytes in memory (PNG, JPEG, ...), classified in one batch.
/// let top = classifier.classify(&[first.as_slice(), second.as_slice()], 3)?;
/// assert_eq!(top.len(), 2);
/// let (class, probability) = &top[0][0];
/// assert!(classifier.class_names().contains(class) && *probability > 0.0);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
pub struct Classifier {
    model: Vit,
    meta: CheckpointMeta,
    normalizer: Normalizer,
    data_size: (usize, usize),
    resize: Option<ResizeSpec>,
    device: Device,
}

impl Classifier {
    /// The checkpoint at `path` (its preprocessing metadata checked), for inference on
    /// `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self, TrainError> {
        let (model, _, meta) = Vit::load(path, device)?;
        let (normalizer, data_size) = pipeline_of(&meta, path)?;
        let resize = resize_of(&meta, path)?;
        Ok(Self { model: model.detached(), meta, normalizer, data_size, resize, device: device.clone() })
    }

    /// The same classifier computing in `precision` (int8: every dense layer quantized now,
    /// on the CPU only).
    pub fn in_precision(self, precision: InferencePrecision) -> Result<Self, TrainError> {
        Ok(Self { model: self.model.for_inference(precision)?, ..self })
    }

    /// The class names, in logit order.
    pub fn class_names(&self) -> &[String] {
        &self.meta.class_names
    }

    /// The model.
    pub fn model(&self) -> &Vit {
        &self.model
    }

    /// The encoded images (PNG, JPEG, ...) as the model takes them: decoded, brought to the
    /// model's input as the checkpoint says (imported weights: their source's interpolation
    /// and centre crop; a run's: resized to the training data's size, then to the input),
    /// normalised as the checkpoint says.
    /// Also returns each image's bytes at the model's input size, `[H, W, C]`, for pictures.
    ///
    /// # Shapes
    /// - returns `[B, H, W, C]` (the model's input) and `B` vectors of `H * W * C` bytes.
    pub fn prepare(&self, images: &[&[u8]]) -> Result<(Tensor, Vec<Vec<u8>>), TrainError> {
        let cfg = &self.meta.config;
        let (h, w) = (cfg.image_size[0], cfg.image_size[1]);
        // A declared resize goes straight to the input size.
        let (dh, dw) = if self.resize.is_some() { (h, w) } else { self.data_size };
        let mut pixels = Vec::with_capacity(images.len() * h * w * cfg.channels);
        let mut shown = Vec::with_capacity(images.len());
        for (i, bytes) in images.iter().enumerate() {
            let source = std::path::PathBuf::from(format!("<image {i}>"));
            let decoded = match &self.resize {
                Some(spec) => decode_with(bytes, &source, (h, w), cfg.channels, spec)?,
                None => decode_image(bytes, &source, dh, dw, cfg.channels)?,
            };
            shown.push(if (dh, dw) == (h, w) {
                decoded.clone()
            } else {
                decode_image(bytes, &source, h, w, cfg.channels)?
            });
            let one = Dataset::new("image", decoded, vec![0], (dh, dw, cfg.channels), vec!["?".into()], &source)?;
            pixels.extend(prepare(&one, 0, (h, w), &self.normalizer, None)?);
        }
        let x = Tensor::from_vec(pixels, (images.len(), h, w, cfg.channels), &self.device)?;
        Ok((x, shown))
    }

    /// Attention rollout, per-head attention and relevance of each encoded image (see
    /// [`vit_model::explain`]), with its bytes at the model's input size.
    pub fn explain(&self, images: &[&[u8]], target: Target) -> Result<Vec<(Explanation, Vec<u8>)>, TrainError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let (x, shown) = self.prepare(images)?;
        let maps = explain(&self.model, &x, target)?;
        Ok(maps.into_iter().zip(shown).collect())
    }

    /// The `k` most probable classes of each encoded image (`(class name, probability)`, most
    /// probable first), all in one batch, prepared as [`prepare`](Self::prepare) says.
    pub fn classify(&self, images: &[&[u8]], k: usize) -> Result<Vec<Vec<(String, f32)>>, TrainError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let (x, _) = self.prepare(images)?;
        let probs = self.model.predict_proba(&x)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let name = |i: usize| self.meta.class_names.get(i).cloned().unwrap_or_else(|| format!("class {i}"));
        Ok(probs.iter().map(|row| top_k(row, k).into_iter().map(|(i, p)| (name(i), p)).collect()).collect())
    }
}

/// The `k` most probable classes of each image file: `(class name, probability)`, most
/// probable first. Images are read as the training data was (size, channels) and prepared with
/// the checkpoint's normalisation; the model computes in `precision`.
pub fn predict_files(
    checkpoint: &Path,
    files: &[impl AsRef<Path>],
    k: usize,
    precision: InferencePrecision,
    device: &Device,
) -> Result<Vec<Vec<(String, f32)>>, TrainError> {
    let classifier = Classifier::load(checkpoint, device)?.in_precision(precision)?;
    let mut encoded = Vec::with_capacity(files.len());
    for file in files {
        let file = file.as_ref();
        encoded.push(std::fs::read(file).map_err(|e| TrainError::io(file, e))?);
    }
    let bytes: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
    classifier.classify(&bytes, k)
}
