//! How an image becomes a model's input, as a checkpoint records it: the size it is read at,
//! the resize and crop its source declares, the channels, the normalisation. One type, read
//! from and written to a checkpoint's string metadata here and nowhere else.

use std::collections::BTreeMap;
use std::path::Path;

use image::DynamicImage;

use crate::augment::{Normalizer, prepare_pixels};
use crate::decode::{decode_full, resized};
use crate::error::DataError;
use crate::resize::ResizeSpec;

/// Metadata key of the normalisation (JSON `{"mean": [..], "std": [..]}`, per channel, of
/// pixels scaled to `[0, 1]`).
pub const NORMALIZER_KEY: &str = "data.normalizer";
/// Metadata key of the `[height, width]` images are read at before they are brought to the
/// model's input (a training run's data size).
pub const DATA_SIZE_KEY: &str = "data.image_size";
/// Metadata key of the resize an imported model's source declares (JSON
/// `{"interpolation": "bicubic", "crop_pct": 0.9}`; without `crop_pct` the image is stretched).
pub const RESIZE_KEY: &str = "data.resize";
/// Every metadata key [`Preprocessing`] reads and writes.
pub const PREPROCESSING_KEYS: [&str; 3] = [NORMALIZER_KEY, DATA_SIZE_KEY, RESIZE_KEY];

/// The largest side, in pixels, of a size read from outside.
const MAX_SIDE: usize = 1 << 14;

/// How an image of any size becomes a model's input of `input` pixels and `channels`
/// channels (1: grey, 3: RGB):
/// - with a [`resize`](Self::resize) (imported weights), the image is brought straight to
///   `input` as that spec says (interpolation, centre crop);
/// - without, it is resized (bilinear) to [`read_size`](Self::read_size), the size of the
///   training data, then sampled bilinearly to `input`, as training prepared it;
///
/// then each channel is normalised: `(value / 255 - mean) / std`.
///
/// ```
/// use vit_data::Preprocessing;
/// use vit_data::augment::Normalizer;
///
/// let prep = Preprocessing {
///     normalizer: Normalizer { mean: vec![0.5], std: vec![0.25] },
///     ..Preprocessing::identity((4, 4), 1)
/// };
/// prep.validate().map_err(|(key, message)| format!("{key}: {message}"))?;
/// // Grey pixels already in memory, 2x2, brought to the 4x4 input.
/// let input = prep.prepare_pixels(&[255, 255, 255, 255], (2, 2), "pixels")?;
/// assert_eq!(input.len(), 16);
/// assert!(input.iter().all(|&v| (v - 2.0).abs() < 1e-6)); // (1 - 0.5) / 0.25
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessing {
    /// The model's input, `(height, width)`.
    pub input: (usize, usize),
    /// Channels of the model's input.
    pub channels: usize,
    /// `(height, width)` an image is read at before it is brought to `input`; `input` when the
    /// checkpoint records none, and unused with a [`resize`](Self::resize).
    pub read_size: (usize, usize),
    /// The resize and crop of the weights' source, if it declares one.
    pub resize: Option<ResizeSpec>,
    /// The per-channel normalisation.
    pub normalizer: Normalizer,
}

/// An image prepared for the model, and what it looks like at the model's input size.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedImage {
    /// `height * width * channels` floats, HWC, normalised: one image of the model's input.
    pub input: Vec<f32>,
    /// The image's bytes at the model's input size (HWC), before normalisation, for pictures.
    pub shown: Vec<u8>,
}

impl Preprocessing {
    /// Reading at the input size, no declared resize, no normalisation: what a checkpoint that
    /// records nothing gets.
    pub fn identity(input: (usize, usize), channels: usize) -> Self {
        Self { input, channels, read_size: input, resize: None, normalizer: Normalizer::identity(channels) }
    }

    /// Checks every field: sides of 1 to 16384 pixels, statistics for `channels` channels,
    /// finite, with positive deviations, a crop share in (0, 1]. An error is `(metadata key,
    /// what is wrong)`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let side_ok = |(h, w): (usize, usize)| (1..=MAX_SIDE).contains(&h) && (1..=MAX_SIDE).contains(&w);
        if !side_ok(self.read_size) {
            let (h, w) = self.read_size;
            return Err((DATA_SIZE_KEY, format!("{h}x{w}: each side must be 1 to {MAX_SIDE} pixels")));
        }
        if !side_ok(self.input) {
            let (h, w) = self.input;
            return Err((DATA_SIZE_KEY, format!("an input of {h}x{w}: each side must be 1 to {MAX_SIDE} pixels")));
        }
        let n = &self.normalizer;
        if n.mean.len() != self.channels || n.std.len() != self.channels {
            let message = format!(
                "holds {} means and {} deviations for a model of {} channels",
                n.mean.len(),
                n.std.len(),
                self.channels
            );
            return Err((NORMALIZER_KEY, message));
        }
        if n.mean.iter().chain(&n.std).any(|v| !v.is_finite()) || n.std.iter().any(|&s| s <= 0.0) {
            return Err((NORMALIZER_KEY, format!("{n:?} is not finite with positive deviations")));
        }
        if let Some(spec) = &self.resize {
            spec.validate().map_err(|message| (RESIZE_KEY, message))?;
        }
        Ok(())
    }

    /// The preprocessing a checkpoint's metadata records for a model of `input` pixels and
    /// `channels` channels, checked with [`validate`](Self::validate); `None` when it records
    /// none of [`PREPROCESSING_KEYS`]. A part it leaves out takes [`identity`](Self::identity)'s.
    /// An error is `(metadata key, what is wrong)`.
    pub fn from_metadata(
        metadata: &BTreeMap<String, String>,
        input: (usize, usize),
        channels: usize,
    ) -> Result<Option<Self>, (&'static str, String)> {
        if PREPROCESSING_KEYS.iter().all(|key| !metadata.contains_key(*key)) {
            return Ok(None);
        }
        fn parsed<T: serde::de::DeserializeOwned>(
            metadata: &BTreeMap<String, String>,
            key: &'static str,
        ) -> Result<Option<T>, (&'static str, String)> {
            metadata.get(key).map(|text| serde_json::from_str(text).map_err(|e| (key, e.to_string()))).transpose()
        }
        let mut prep = Self::identity(input, channels);
        if let Some(normalizer) = parsed(metadata, NORMALIZER_KEY)? {
            prep.normalizer = normalizer;
        }
        if let Some(size) = parsed(metadata, DATA_SIZE_KEY)? {
            prep.read_size = size;
        }
        prep.resize = parsed(metadata, RESIZE_KEY)?;
        prep.validate()?;
        Ok(Some(prep))
    }

    /// The metadata entries that [`from_metadata`](Self::from_metadata) reads back as `self`.
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let json = |value: Result<String, serde_json::Error>| value.expect("plain data serialises");
        let mut out = BTreeMap::from([
            (NORMALIZER_KEY.to_string(), json(serde_json::to_string(&self.normalizer))),
            (DATA_SIZE_KEY.to_string(), json(serde_json::to_string(&self.read_size))),
        ]);
        if let Some(spec) = &self.resize {
            out.insert(RESIZE_KEY.to_string(), json(serde_json::to_string(spec)));
        }
        out
    }

    /// The size an image is brought to before the model's sampling: the input with a declared
    /// resize, else the training data's.
    fn stage_size(&self) -> (usize, usize) {
        if self.resize.is_some() { self.input } else { self.read_size }
    }

    /// Prepares an encoded image (PNG, JPEG, ... as the `image` crate reads them); `source`
    /// names it in errors. Images of more than 8192 pixels a side are refused before decoding.
    pub fn prepare_encoded(&self, bytes: &[u8], source: &Path) -> Result<PreparedImage, DataError> {
        let image = decode_full(bytes, source, self.stage_size(), self.channels)?;
        Ok(self.prepare_image(&image))
    }

    /// Prepares an image already decoded: `pixels` holds `height x width x channels` bytes
    /// (HWC, this preprocessing's channels); `source` names it in errors.
    pub fn prepare_pixels(
        &self,
        pixels: &[u8],
        (height, width): (usize, usize),
        source: &str,
    ) -> Result<Vec<f32>, DataError> {
        let malformed = |message: String| DataError::Malformed { path: source.into(), message };
        if !(1..=1 << 13).contains(&height) || !(1..=1 << 13).contains(&width) {
            return Err(malformed(format!("{height}x{width} pixels: each side must be 1 to 8192")));
        }
        let expected = height * width * self.channels;
        if pixels.len() != expected {
            return Err(malformed(format!(
                "{} bytes for a {height}x{width} image of {} channels: expected {expected}",
                pixels.len(),
                self.channels
            )));
        }
        let (w, h) = (width as u32, height as u32);
        let image = match self.channels {
            1 => image::GrayImage::from_raw(w, h, pixels.to_vec()).map(DynamicImage::ImageLuma8),
            3 => image::RgbImage::from_raw(w, h, pixels.to_vec()).map(DynamicImage::ImageRgb8),
            c => return Err(malformed(format!("images can be prepared with 1 or 3 channels, not {c}"))),
        };
        let image = image.ok_or_else(|| malformed("the pixels do not fill the image".into()))?;
        Ok(self.prepare_image(&image).input)
    }

    /// The steps after decoding, in the order training's data was prepared: resized (the
    /// declared spec, or bilinear to the read size) in the image's own type, converted to
    /// the channels, then sampled to the input and normalised.
    fn prepare_image(&self, image: &DynamicImage) -> PreparedImage {
        let (h, w) = self.input;
        let staged = match &self.resize {
            Some(spec) => raw(&spec.apply(image, (h as u32, w as u32)), self.channels),
            None => resized(image, self.read_size, self.channels),
        };
        let (sh, sw) = self.stage_size();
        let shown = if (sh, sw) == (h, w) { staged.clone() } else { resized(image, (h, w), self.channels) };
        let input = prepare_pixels(&staged, (sh, sw, self.channels), 0, (h, w), &self.normalizer, None);
        PreparedImage { input, shown }
    }
}

/// The image's bytes in `channels` (1: grey, else RGB).
fn raw(image: &DynamicImage, channels: usize) -> Vec<u8> {
    if channels == 1 { image.to_luma8().into_raw() } else { image.to_rgb8().into_raw() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resize::Interpolation;

    fn run_prep() -> Preprocessing {
        Preprocessing {
            read_size: (28, 28),
            normalizer: Normalizer { mean: vec![0.125_515_97], std: vec![0.302_118_1] },
            ..Preprocessing::identity((28, 28), 1)
        }
    }

    #[test]
    fn metadata_round_trips_in_the_format_checkpoints_already_hold() {
        // The entries a run's checkpoint and a timm import wrote before the type existed.
        let run = BTreeMap::from([
            (NORMALIZER_KEY.to_string(), r#"{"mean":[0.12551597],"std":[0.3021181]}"#.to_string()),
            (DATA_SIZE_KEY.to_string(), "[28,28]".to_string()),
        ]);
        let prep = Preprocessing::from_metadata(&run, (28, 28), 1).unwrap().unwrap();
        assert_eq!(prep, run_prep());
        assert_eq!(prep.to_metadata(), run);
        let timm = BTreeMap::from([
            (NORMALIZER_KEY.to_string(), r#"{"mean":[0.5,0.5,0.5],"std":[0.5,0.5,0.5]}"#.to_string()),
            (RESIZE_KEY.to_string(), r#"{"crop_pct":0.9,"interpolation":"bicubic"}"#.to_string()),
        ]);
        let prep = Preprocessing::from_metadata(&timm, (8, 8), 3).unwrap().unwrap();
        assert_eq!(prep.resize, Some(ResizeSpec { interpolation: Interpolation::Bicubic, crop_pct: Some(0.9) }));
        assert_eq!(prep.read_size, (8, 8));
        assert_eq!(Preprocessing::from_metadata(&prep.to_metadata(), (8, 8), 3).unwrap(), Some(prep));
        assert_eq!(Preprocessing::from_metadata(&BTreeMap::new(), (8, 8), 3).unwrap(), None);
    }

    #[test]
    fn a_malformed_entry_names_its_key() {
        let with = |key: &str, value: &str| BTreeMap::from([(key.to_string(), value.to_string())]);
        let cases = [
            (with(NORMALIZER_KEY, r#"{"mean":[0.5],"std":[0.5]}"#), NORMALIZER_KEY, "3 channels"),
            (with(NORMALIZER_KEY, r#"{"mean":[0,0,0],"std":[1,0,1]}"#), NORMALIZER_KEY, "positive"),
            (with(NORMALIZER_KEY, "not json"), NORMALIZER_KEY, "expected"),
            (with(DATA_SIZE_KEY, "[0,28]"), DATA_SIZE_KEY, "1 to 16384"),
            (with(DATA_SIZE_KEY, "[28]"), DATA_SIZE_KEY, "length"),
            (with(RESIZE_KEY, r#"{"interpolation":"bilinear","crop_pct":1.5}"#), RESIZE_KEY, "(0, 1]"),
            (with(RESIZE_KEY, r#"{"interpolation":"lanczos"}"#), RESIZE_KEY, "variant"),
        ];
        for (metadata, key, says) in cases {
            let (found, message) = Preprocessing::from_metadata(&metadata, (8, 8), 3).unwrap_err();
            assert_eq!(found, key, "{metadata:?}");
            assert!(message.contains(says), "{metadata:?}: {message}");
        }
    }

    #[test]
    fn pixels_in_memory_and_the_same_image_encoded_prepare_alike() {
        let prep = run_prep();
        let (h, w) = (40, 30);
        let pixels: Vec<u8> = (0..h * w).map(|i| (vit_rng::splitmix64(i as u64) >> 56) as u8).collect();
        let mut png = Vec::new();
        image::GrayImage::from_raw(w as u32, h as u32, pixels.clone())
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let encoded = prep.prepare_encoded(&png, Path::new("grey.png")).unwrap();
        let in_memory = prep.prepare_pixels(&pixels, (h, w), "pixels").unwrap();
        assert_eq!(encoded.input, in_memory);
        assert_eq!(encoded.shown.len(), 28 * 28);
        // The same steps as reading the image for a data set, then preparing it as training does.
        let read = crate::decode_image(&png, Path::new("grey.png"), 28, 28, 1).unwrap();
        assert_eq!(in_memory, prepare_pixels(&read, (28, 28, 1), 0, (28, 28), &prep.normalizer, None));
        let short = prep.prepare_pixels(&pixels[1..], (h, w), "pixels").unwrap_err().to_string();
        assert!(short.contains("1199 bytes") && short.contains("expected 1200"), "{short}");
    }
}
