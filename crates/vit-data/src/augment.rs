//! Image preparation: normalisation, resizing and the Keras example's augmentation (random
//! horizontal flip, rotation, zoom), plus random crop with padding.
//!
//! Each image goes through one inverse affine warp with bilinear sampling: flip, rotation, zoom
//! and translation (the crop) are composed and every output pixel is sampled once, with
//! reflection at the borders as Keras' `fill_mode="reflect"`. With augmentation off and equal
//! sizes it is the identity; with sizes that differ it is a bilinear resize
//! (`align_corners=False`). The random draws for an image depend only on the seed, the epoch
//! and the image's index, so batches are identical whatever thread prepares them.

use serde::{Deserialize, Serialize};
use vit_kernels::rng::{splitmix64, unit_f32};

use crate::dataset::Dataset;
use crate::error::DataError;

/// Augmentation settings, as in a recipe's `[augment]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Random horizontal flip with probability 0.5.
    pub flip: bool,
    /// Random rotation by up to `rotation * 2 * pi` radians either way (Keras' `RandomRotation` factor).
    pub rotation: f32,
    /// Random zoom by a factor in `[1 - zoom, 1 + zoom]` (Keras' `RandomZoom` height/width factor).
    pub zoom: f32,
    /// Random crop after zero padding by this many pixels: a shift of up to that much either way.
    pub crop_padding: usize,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self { flip: false, rotation: 0.0, zoom: 0.0, crop_padding: 0 }
    }
}

impl AugmentConfig {
    /// The Keras example's augmentation: flip, rotation factor 0.02, zoom 0.2.
    pub fn keras_example() -> Self {
        Self { flip: true, rotation: 0.02, zoom: 0.2, crop_padding: 0 }
    }

    /// True when nothing random is done.
    pub fn is_identity(&self) -> bool {
        !self.flip && self.rotation == 0.0 && self.zoom == 0.0 && self.crop_padding == 0
    }
}

/// Per-channel mean and standard deviation of pixel values scaled to `[0, 1]`, computed on a
/// training split (Keras' `Normalization` layer, adapted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalizer {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel.
    pub std: Vec<f32>,
}

impl Normalizer {
    /// Statistics of every pixel of `data`; of a streamed data set, of a seeded sample of at
    /// most [`Normalizer::STREAMED_SAMPLE`] of its images (decoded in parallel), so that the
    /// statistics cost no pass over a data set larger than memory.
    pub fn fit(data: &Dataset) -> Result<Self, DataError> {
        let c = data.channels;
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        let mut add = |pixels: &[u8]| {
            for (i, &v) in pixels.iter().enumerate() {
                let v = f64::from(v) / 255.0;
                sum[i % c] += v;
                sq[i % c] += v * v;
            }
        };
        let count = match data.pixels() {
            Some(pixels) => {
                add(pixels);
                pixels.len() / c
            }
            None => {
                use rayon::prelude::*;
                let mut picked = crate::shuffle::shuffled(data.len(), 0x6e6f_726d, 0);
                picked.truncate(Self::STREAMED_SAMPLE);
                let decoded: Vec<Result<Vec<u8>, DataError>> =
                    picked.par_iter().map(|&i| data.image(i).map(|p| p.into_owned())).collect();
                for pixels in decoded {
                    add(&pixels?);
                }
                picked.len() * data.image_len() / c
            }
        };
        let n = count as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sq.iter().zip(&mean).map(|(s, m)| ((s / n - m * m).max(1e-12)).sqrt() as f32).collect();
        Ok(Self { mean: mean.into_iter().map(|m| m as f32).collect(), std })
    }

    /// How many images of a streamed data set [`fit`](Self::fit) looks at.
    pub const STREAMED_SAMPLE: usize = 10_000;

    /// Identity: mean 0, std 1 for `channels` channels.
    pub fn identity(channels: usize) -> Self {
        Self { mean: vec![0.0; channels], std: vec![1.0; channels] }
    }
}

/// A small per-image random stream.
struct SampleRng(u64);

impl SampleRng {
    fn new(seed: u64, epoch: u64, index: u64) -> Self {
        Self(splitmix64(seed ^ splitmix64(epoch.wrapping_mul(0x9E37_79B9) ^ splitmix64(index))))
    }

    fn uniform(&mut self) -> f32 {
        self.0 = splitmix64(self.0);
        unit_f32(self.0)
    }

    /// Uniform in `[-r, r]`.
    fn symmetric(&mut self, r: f32) -> f32 {
        (self.uniform() * 2.0 - 1.0) * r
    }
}

/// Reflects an integer coordinate into `[0, n)` (`d c b a | a b c d | d c b a`).
fn reflect(mut i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    i = i.rem_euclid(period);
    (if i >= n { period - 1 - i } else { i }) as usize
}

/// Prepares image `index` of `data` at `out = (height, width)`: resized, augmented when
/// `augment` is given, normalised. Returns `height * width * channels` floats, HWC; an image
/// of a streamed data set that does not decode is an error naming its file.
pub fn prepare(
    data: &Dataset,
    index: usize,
    out: (usize, usize),
    normalizer: &Normalizer,
    augment: Option<(&AugmentConfig, u64, u64)>,
) -> Result<Vec<f32>, DataError> {
    let (h, w, c) = (data.height, data.width, data.channels);
    let (oh, ow) = out;
    let src = data.image(index)?;
    let src: &[u8] = &src;
    let scale: Vec<(f32, f32)> =
        normalizer.mean.iter().zip(&normalizer.std).map(|(m, s)| (1.0 / (255.0 * s), -m / s)).collect();
    let mut pixels = vec![0f32; oh * ow * c];
    let random = augment.filter(|(cfg, _, _)| !cfg.is_identity());
    if random.is_none() && (oh, ow) == (h, w) {
        for (i, (p, &v)) in pixels.iter_mut().zip(src).enumerate() {
            let (a, b) = scale[i % c];
            *p = f32::from(v) * a + b;
        }
        return Ok(pixels);
    }
    // The inverse map: output offset from the centre -> source coordinates.
    let (mut flip, mut cos, mut sin, mut zoom, mut dy, mut dx) = (1f32, 1f32, 0f32, 1f32, 0f32, 0f32);
    if let Some((cfg, seed, epoch)) = random {
        let mut rng = SampleRng::new(seed, epoch, index as u64);
        if cfg.flip && rng.uniform() < 0.5 {
            flip = -1.0;
        }
        let angle = rng.symmetric(cfg.rotation * std::f32::consts::TAU);
        (cos, sin) = (angle.cos(), angle.sin());
        zoom = 1.0 + rng.symmetric(cfg.zoom);
        let p = cfg.crop_padding as f32;
        dy = (rng.symmetric(p + 0.5)).round().clamp(-p, p);
        dx = (rng.symmetric(p + 0.5)).round().clamp(-p, p);
    }
    let (sy, sx) = (h as f32 / oh as f32, w as f32 / ow as f32);
    for y in 0..oh {
        let v = y as f32 + 0.5 - oh as f32 / 2.0;
        for x in 0..ow {
            let u = (x as f32 + 0.5 - ow as f32 / 2.0) * flip;
            let (ru, rv) = (zoom * (cos * u - sin * v), zoom * (sin * u + cos * v));
            let ys = rv * sy + h as f32 / 2.0 - 0.5 - dy;
            let xs = ru * sx + w as f32 / 2.0 - 0.5 - dx;
            let (y0, x0) = (ys.floor(), xs.floor());
            let (ty, tx) = (ys - y0, xs - x0);
            let (y0, x0) = (y0 as isize, x0 as isize);
            let rows = [reflect(y0, h), reflect(y0 + 1, h)];
            let cols = [reflect(x0, w), reflect(x0 + 1, w)];
            for ch in 0..c {
                let at = |r: usize, q: usize| f32::from(src[(r * w + q) * c + ch]);
                let top = at(rows[0], cols[0]) * (1.0 - tx) + at(rows[0], cols[1]) * tx;
                let bottom = at(rows[1], cols[0]) * (1.0 - tx) + at(rows[1], cols[1]) * tx;
                let (a, b) = scale[ch];
                pixels[(y * ow + x) * c + ch] = (top * (1.0 - ty) + bottom * ty) * a + b;
            }
        }
    }
    Ok(pixels)
}
