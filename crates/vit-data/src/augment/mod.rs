//! Image preparation: normalisation, resizing and augmentation.
//!
//! The Keras example's augmentation (random horizontal flip, rotation, zoom, each axis on its
//! own if asked) plus random crop with padding, RandAugment or TrivialAugment
//! ([`AutoAugment`]) and random erasing ([`EraseMode`]); mixup and cutmix act on whole
//! batches ([`crate::mix`]).
//!
//! Each image goes through one inverse affine warp with bilinear sampling: flip, rotation,
//! zoom, translation (the crop) and the policy's geometric operations are composed and every
//! output pixel is sampled once, with reflection at the borders as Keras'
//! `fill_mode="reflect"`. The policy's photometric operations follow on the warped pixels,
//! then normalisation, then erasing (in normalised units, as timm erases). With augmentation
//! off and equal sizes it is the identity; with sizes that differ it is a bilinear resize
//! (`align_corners=False`). The random draws for an image depend only on the seed, the epoch
//! and the image's index, so batches are identical whatever thread prepares them.

mod erase;
mod policy;
pub(crate) mod random;

use serde::{Deserialize, Serialize};

pub use self::erase::{EraseMode, MAX_AREA, MIN_AREA, MIN_ASPECT};
use self::policy::{Affine, geometry, photometric};
pub use self::policy::{AutoAugment, MAX_MAGNITUDE, Op};
use self::random::SampleRng;
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
    /// Random zoom by a factor in `[1 - zoom, 1 + zoom]` (Keras' `RandomZoom` height factor;
    /// the width follows it unless `zoom_width` is given).
    pub zoom: f32,
    /// Zoom the width by its own factor in `[1 - zoom_width, 1 + zoom_width]`, drawn apart
    /// from the height's (Keras' `RandomZoom` width factor). Unset, the aspect ratio is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zoom_width: Option<f32>,
    /// Random crop with this much padding: a shift by a whole number of pixels, up to this many
    /// along each axis either way, the uncovered border filled by reflection.
    pub crop_padding: usize,
    /// RandAugment or TrivialAugment, written as timm does: `"rand-m9-mstd0.5-inc1"`, `"trivial"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_augment: Option<AutoAugment>,
    /// Probability of erasing a random rectangle of each image (timm's `reprob`; DeiT: 0.25).
    pub erase_probability: f32,
    /// What fills an erased rectangle.
    pub erase_mode: EraseMode,
    /// Mixup's Beta(alpha, alpha) parameter; 0: off (DeiT: 0.8).
    pub mixup_alpha: f32,
    /// Cutmix's Beta(alpha, alpha) parameter; 0: off (DeiT: 1.0).
    pub cutmix_alpha: f32,
    /// Probability that a batch is mixed at all, with mixup or cutmix on (timm's `mixup_prob`).
    pub mix_probability: f32,
    /// With both on: probability that a mixed batch is cut rather than blended (timm's `switch_prob`).
    pub mix_switch_probability: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            flip: false,
            rotation: 0.0,
            zoom: 0.0,
            zoom_width: None,
            crop_padding: 0,
            auto_augment: None,
            erase_probability: 0.0,
            erase_mode: EraseMode::Pixel,
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
            mix_probability: 1.0,
            mix_switch_probability: 0.5,
        }
    }
}

impl AugmentConfig {
    /// The Keras example's augmentation: flip, rotation factor 0.02, zoom 0.2.
    pub fn keras_example() -> Self {
        Self { flip: true, rotation: 0.02, zoom: 0.2, ..Self::default() }
    }

    /// DeiT's recipe (Touvron et al.) on top of `self`: RandAugment `rand-m9-mstd0.5-inc1`,
    /// random erasing with probability 0.25, mixup 0.8 and cutmix 1.0.
    pub fn with_deit(self) -> Self {
        Self {
            auto_augment: Some(AutoAugment::Rand { magnitude: 9.0, num_ops: 2, magnitude_std: 0.5, probability: 0.5 }),
            erase_probability: 0.25,
            mixup_alpha: 0.8,
            cutmix_alpha: 1.0,
            ..self
        }
    }

    /// True when nothing random is done to single images (batches may still be mixed: see
    /// [`mixes`](Self::mixes)).
    pub fn is_identity(&self) -> bool {
        !self.flip
            && self.rotation == 0.0
            && self.zoom == 0.0
            && self.zoom_width.is_none_or(|z| z == 0.0)
            && self.crop_padding == 0
            && self.auto_augment.is_none()
            && self.erase_probability == 0.0
    }

    /// True when batches are mixed (mixup or cutmix on, at a probability above 0).
    pub fn mixes(&self) -> bool {
        (self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0) && self.mix_probability > 0.0
    }

    /// Checks every field's range; the error names the field (as in a recipe's `[augment]`
    /// table), what was found and what was expected.
    pub fn validate(&self) -> Result<(), String> {
        let fraction = |field: &str, v: f32, hi: f32| {
            if (0.0..hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("`augment.{field}` must be in [0, {hi}), got {v}"))
            }
        };
        fraction("rotation", self.rotation, 0.5).map_err(|e| format!("{e} (a fraction of a full turn)"))?;
        fraction("zoom", self.zoom, 1.0)?;
        if let Some(z) = self.zoom_width {
            fraction("zoom_width", z, 1.0)?;
        }
        if self.crop_padding > 1 << 10 {
            return Err(format!("`augment.crop_padding` must be at most 1024 pixels, got {}", self.crop_padding));
        }
        for (field, v) in [
            ("erase_probability", self.erase_probability),
            ("mix_probability", self.mix_probability),
            ("mix_switch_probability", self.mix_switch_probability),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("`augment.{field}` must be in [0, 1], got {v}"));
            }
        }
        for (field, v) in [("mixup_alpha", self.mixup_alpha), ("cutmix_alpha", self.cutmix_alpha)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("`augment.{field}` must be a number of at least 0 (0: off), got {v}"));
            }
        }
        Ok(())
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

    /// Statistics given in `f64`, as configs write them (rounded to `f32`).
    pub fn from_f64(mean: &[f64], std: &[f64]) -> Self {
        let narrow = |v: &[f64]| v.iter().map(|&x| x as f32).collect();
        Self { mean: narrow(mean), std: narrow(std) }
    }

    /// Identity: mean 0, std 1 for `channels` channels.
    pub fn identity(channels: usize) -> Self {
        Self { mean: vec![0.0; channels], std: vec![1.0; channels] }
    }
}

/// Reflects an integer coordinate into `[0, n)` (`d c b a | a b c d | d c b a`).
fn reflect(mut i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    i = i.rem_euclid(period);
    (if i >= n { period - 1 - i } else { i }) as usize
}

/// Salts of the per-image streams added after the first (flip, rotation, zoom, crop), so
/// that those draws stay what they were.
const POLICY_STREAM: u64 = 0x706f_6c69_6379;
const ERASE_STREAM: u64 = 0x0065_7261_7365;

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
    let src = data.image(index)?;
    Ok(prepare_pixels(&src, (data.height, data.width, data.channels), index, out, normalizer, augment))
}

/// [`prepare`] of one image's pixels in memory, `src` being `height x width x channels` bytes
/// (HWC); `index` seeds its random draws as an image's index in a data set does.
///
/// # Panics
/// When `src` does not hold `height * width * channels` bytes, or the normaliser has
/// another number of channels: both are the caller's own sizes, checked where they entered.
pub fn prepare_pixels(
    src: &[u8],
    (h, w, c): (usize, usize, usize),
    index: usize,
    out: (usize, usize),
    normalizer: &Normalizer,
    augment: Option<(&AugmentConfig, u64, u64)>,
) -> Vec<f32> {
    assert_eq!(src.len(), h * w * c, "an image of {h}x{w}x{c} bytes");
    assert_eq!(normalizer.mean.len(), c, "a normaliser of {c} channels");
    let (oh, ow) = out;
    let scale: Vec<(f32, f32)> =
        normalizer.mean.iter().zip(&normalizer.std).map(|(m, s)| (1.0 / (255.0 * s), -m / s)).collect();
    let mut pixels = vec![0f32; oh * ow * c];
    let random = augment.filter(|(cfg, _, _)| !cfg.is_identity());
    if random.is_none() && (oh, ow) == (h, w) {
        for (i, (p, &v)) in pixels.iter_mut().zip(src).enumerate() {
            let (a, b) = scale[i % c];
            *p = f32::from(v) * a + b;
        }
        return pixels;
    }
    // The inverse map: output offset from the centre -> source coordinates.
    let (mut flip, mut cos, mut sin, mut zoom_y, mut dy, mut dx) = (1f32, 1f32, 0f32, 1f32, 0f32, 0f32);
    let mut zoom_x = zoom_y;
    let mut policy = Vec::new();
    let mut policy_map = Affine::IDENTITY;
    if let Some((cfg, seed, epoch)) = random {
        let mut rng = SampleRng::new(seed, epoch, index as u64);
        if cfg.flip && rng.uniform() < 0.5 {
            flip = -1.0;
        }
        let angle = rng.symmetric(cfg.rotation * std::f32::consts::TAU);
        (cos, sin) = (angle.cos(), angle.sin());
        zoom_y = 1.0 + rng.symmetric(cfg.zoom);
        let p = cfg.crop_padding as f32;
        dy = (rng.symmetric(p + 0.5)).round().clamp(-p, p);
        dx = (rng.symmetric(p + 0.5)).round().clamp(-p, p);
        zoom_x = match cfg.zoom_width {
            Some(z) => 1.0 + rng.symmetric(z),
            None => zoom_y,
        };
        if let Some(auto) = &cfg.auto_augment {
            policy = auto.draw(c, &mut SampleRng::fork(seed, epoch, index as u64, POLICY_STREAM));
            policy_map = geometry(&policy, out);
        }
    }
    let (sy, sx) = (h as f32 / oh as f32, w as f32 / ow as f32);
    for y in 0..oh {
        let v0 = y as f32 + 0.5 - oh as f32 / 2.0;
        for x in 0..ow {
            let (u, v) = policy_map.apply(x as f32 + 0.5 - ow as f32 / 2.0, v0);
            let u = u * flip;
            let (ru, rv) = (zoom_x * (cos * u - sin * v), zoom_y * (sin * u + cos * v));
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
                pixels[(y * ow + x) * c + ch] = top * (1.0 - ty) + bottom * ty;
            }
        }
    }
    photometric(&policy, &mut pixels, out, c);
    for (i, p) in pixels.iter_mut().enumerate() {
        let (a, b) = scale[i % c];
        *p = *p * a + b;
    }
    if let Some((cfg, seed, epoch)) = random.filter(|(cfg, _, _)| cfg.erase_probability > 0.0) {
        let mut rng = SampleRng::fork(seed, epoch, index as u64, ERASE_STREAM);
        erase::erase(&mut pixels, out, c, cfg.erase_probability, cfg.erase_mode, &mut rng);
    }
    pixels
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn dataset(pixels: Vec<u8>, (h, w, c): (usize, usize, usize), n: usize) -> Dataset {
        let images = (0..n).flat_map(|_| pixels.clone()).collect();
        Dataset::new("test", images, vec![0; n], (h, w, c), vec!["a".into()], Path::new("test")).unwrap()
    }

    /// A 12x10 one-channel image with a distinct value at every pixel.
    fn numbered() -> Dataset {
        dataset((0..120).map(|i| (i * 2) as u8).collect(), (12, 10, 1), 64)
    }

    fn prepared(data: &Dataset, index: usize, cfg: &AugmentConfig) -> Vec<f32> {
        let id = Normalizer::identity(data.channels);
        prepare(data, index, (data.height, data.width), &id, Some((cfg, 5, 1)))
            .unwrap()
            .into_iter()
            .map(|v| v * 255.0)
            .collect()
    }

    fn source(data: &Dataset) -> Vec<f32> {
        data.image(0).unwrap().iter().map(|&v| f32::from(v)).collect()
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-3)
    }

    #[test]
    fn a_flip_mirrors_half_of_the_images_and_leaves_the_rest() {
        let data = numbered();
        let original = source(&data);
        let mirrored: Vec<f32> = (0..120).map(|i| original[(i / 10) * 10 + 9 - i % 10]).collect();
        let cfg = AugmentConfig { flip: true, ..Default::default() };
        let flipped = (0..64)
            .filter(|&i| {
                let out = prepared(&data, i, &cfg);
                assert!(close(&out, &original) || close(&out, &mirrored), "image {i}");
                close(&out, &mirrored)
            })
            .count();
        assert!((20..44).contains(&flipped), "{flipped} of 64 flipped");
    }

    #[test]
    fn the_crop_shifts_by_whole_pixels_within_the_padding() {
        let data = numbered();
        let original = source(&data);
        let cfg = AugmentConfig { crop_padding: 2, ..Default::default() };
        let mut shifts = std::collections::BTreeSet::new();
        for i in 0..64 {
            let out = prepared(&data, i, &cfg);
            let shift = (-2isize..=2).flat_map(|dy| (-2isize..=2).map(move |dx| (dy, dx))).find(|&(dy, dx)| {
                let shifted: Vec<f32> = (0..120)
                    .map(|p| {
                        let (y, x) = ((p / 10) as isize - dy, (p % 10) as isize - dx);
                        original[reflect(y, 12) * 10 + reflect(x, 10)]
                    })
                    .collect();
                close(&out, &shifted)
            });
            shifts.insert(shift.unwrap_or_else(|| panic!("image {i} is no shift of at most 2 pixels")));
        }
        assert!(shifts.len() >= 15, "only {} distinct shifts", shifts.len());
    }

    /// Two channels: a ramp along x (8 per pixel) and one along y (6 per pixel), 32x32.
    fn ramps() -> Dataset {
        let pixels = (0..32 * 32).flat_map(|p| [((p % 32) * 8) as u8, ((p / 32) * 6) as u8]).collect();
        dataset(pixels, (32, 32, 2), 64)
    }

    /// The zoom factors `(height, width)` measured from the ramps' slopes at the centre.
    fn zoom_factors(out: &[f32]) -> (f32, f32) {
        let at = |y: usize, x: usize, ch: usize| out[(y * 32 + x) * 2 + ch];
        ((at(16, 15, 1) - at(15, 15, 1)) / 6.0, (at(15, 16, 0) - at(15, 15, 0)) / 8.0)
    }

    #[test]
    fn zoom_keeps_the_aspect_ratio_unless_the_width_has_its_own_factor() {
        let data = ramps();
        let together = AugmentConfig { zoom: 0.3, ..Default::default() };
        let apart = AugmentConfig { zoom_width: Some(0.3), ..together.clone() };
        let width_only = AugmentConfig { zoom: 0.0, ..apart.clone() };
        let mut differ = 0;
        for i in 0..64 {
            let (zy, zx) = zoom_factors(&prepared(&data, i, &together));
            assert!((zy - zx).abs() < 1e-3 && (0.69..=1.31).contains(&zy), "image {i}: {zy} {zx}");
            let (ay, ax) = zoom_factors(&prepared(&data, i, &apart));
            assert!((ay - zy).abs() < 1e-3, "the height's draw is the same with a width factor");
            assert!((0.69..=1.31).contains(&ax));
            differ += usize::from((ax - ay).abs() > 0.01);
            let (wy, wx) = zoom_factors(&prepared(&data, i, &width_only));
            assert!((wy - 1.0).abs() < 1e-3 && (wx - ax).abs() < 1e-3, "image {i}: {wy} {wx}");
        }
        assert!(differ > 55, "only {differ} of 64 images zoomed the axes differently");
    }

    #[test]
    fn a_policy_draws_apart_from_the_other_augmentations() {
        let data = numbered();
        let base = AugmentConfig { flip: true, rotation: 0.05, crop_padding: 1, ..Default::default() };
        let never =
            AugmentConfig { auto_augment: Some(AutoAugment::parse("rand-m9-p0-inc1").unwrap()), ..base.clone() };
        let always =
            AugmentConfig { auto_augment: Some(AutoAugment::parse("rand-m9-n2-p1-inc1").unwrap()), ..base.clone() };
        let mut changed = 0;
        for i in 0..64 {
            let plain = prepared(&data, i, &base);
            // A policy that applies nothing leaves the flip, rotation and crop drawn as before.
            assert_eq!(prepared(&data, i, &never), plain, "image {i}");
            let augmented = prepared(&data, i, &always);
            assert_eq!(prepared(&data, i, &always), augmented, "image {i} is drawn the same way twice");
            assert!(augmented.iter().all(|v| (-1e-3..=255.001).contains(v)), "image {i} left [0, 255]");
            changed += usize::from(!close(&augmented, &plain));
        }
        assert!(changed > 56, "only {changed} of 64 images changed by two operations each");
    }

    #[test]
    fn erasing_fills_a_rectangle_of_the_normalised_image() {
        let data = dataset(vec![200; 20 * 20], (20, 20, 1), 8);
        let cfg = AugmentConfig { erase_probability: 1.0, erase_mode: EraseMode::Const, ..Default::default() };
        let normalizer = Normalizer { mean: vec![0.5], std: vec![0.25] };
        for i in 0..8 {
            let out = prepare(&data, i, (20, 20), &normalizer, Some((&cfg, 5, 1))).unwrap();
            let inked = (200.0 / 255.0 - 0.5) / 0.25;
            let zeros: Vec<usize> = (0..400).filter(|&p| out[p] == 0.0).collect();
            assert!(out.iter().all(|&v| v == 0.0 || (v - inked).abs() < 1e-5));
            assert!((8..=134).contains(&zeros.len()), "{} pixels erased", zeros.len());
            let (rows, cols): (Vec<usize>, Vec<usize>) = zeros.iter().map(|p| (p / 20, p % 20)).unzip();
            let height = rows.iter().max().unwrap() - rows.iter().min().unwrap() + 1;
            let width = cols.iter().max().unwrap() - cols.iter().min().unwrap() + 1;
            assert_eq!(height * width, zeros.len(), "image {i}: the erased pixels are one rectangle");
        }
    }

    #[test]
    fn validation_names_the_field() {
        for (cfg, field) in [
            (AugmentConfig { zoom_width: Some(1.5), ..Default::default() }, "augment.zoom_width"),
            (AugmentConfig { erase_probability: 2.0, ..Default::default() }, "augment.erase_probability"),
            (AugmentConfig { mixup_alpha: -1.0, ..Default::default() }, "augment.mixup_alpha"),
            (AugmentConfig { cutmix_alpha: f32::NAN, ..Default::default() }, "augment.cutmix_alpha"),
            (AugmentConfig { mix_switch_probability: 1.5, ..Default::default() }, "augment.mix_switch_probability"),
            (AugmentConfig { rotation: 0.5, ..Default::default() }, "augment.rotation"),
        ] {
            let error = cfg.validate().unwrap_err();
            assert!(error.contains(field), "{error}");
        }
        assert!(AugmentConfig::keras_example().with_deit().validate().is_ok());
    }
}
