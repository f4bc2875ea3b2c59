//! How an image of any size becomes the model's input size, as the source of pretrained
//! weights declares it: the interpolation, and timm's evaluation crop (resize the shorter side
//! to `size / crop_pct`, keeping the aspect ratio, then cut the centre `size`).

use std::path::Path;

use image::DynamicImage;
use image::imageops::FilterType;
use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// The resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear (a triangle filter, widened when shrinking, as PIL does).
    Bilinear,
    /// Bicubic (Catmull-Rom, PIL's and timm's `bicubic`), widened when shrinking.
    Bicubic,
}

impl Interpolation {
    /// The name as timm writes it (`bilinear`, `bicubic`, `nearest`), or PIL's resampling
    /// code as Hugging Face processors write it (0 nearest, 2 bilinear, 3 bicubic).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "nearest" | "0" => Some(Self::Nearest),
            "bilinear" | "linear" | "2" => Some(Self::Bilinear),
            "bicubic" | "cubic" | "3" => Some(Self::Bicubic),
            _ => None,
        }
    }

    /// The name as timm writes it and checkpoints record it: `nearest`, `bilinear`, `bicubic`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nearest => "nearest",
            Self::Bilinear => "bilinear",
            Self::Bicubic => "bicubic",
        }
    }

    fn filter(self) -> FilterType {
        match self {
            Self::Nearest => FilterType::Nearest,
            Self::Bilinear => FilterType::Triangle,
            Self::Bicubic => FilterType::CatmullRom,
        }
    }
}

/// How to bring an image to the model's size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeSpec {
    /// The filter.
    pub interpolation: Interpolation,
    /// With a crop: the shorter side goes to `size / crop_pct` (rounded down, as timm does),
    /// the aspect ratio kept, and the centre `size` is cut out. Without: the image is
    /// stretched to `size` (Hugging Face's `ViTImageProcessor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop_pct: Option<f64>,
}

impl ResizeSpec {
    /// Checks the crop share: in (0, 1].
    pub fn validate(&self) -> Result<(), String> {
        match self.crop_pct {
            Some(c) if !(c > 0.0 && c <= 1.0) => Err(format!("crop_pct must be in (0, 1], got {c}")),
            _ => Ok(()),
        }
    }

    /// `image` at `(height, width)` as this spec says.
    pub fn apply(&self, image: &DynamicImage, (height, width): (u32, u32)) -> DynamicImage {
        let filter = self.interpolation.filter();
        let Some(crop) = self.crop_pct else {
            return image.resize_exact(width, height, filter);
        };
        // timm's eval transform: Resize(floor(size / crop_pct)) on the shorter side (one size
        // for a square input, each side's own otherwise), then CenterCrop(size), with
        // torchvision's rounding of both.
        let (w, h) = (image.width().max(1), image.height().max(1));
        let scale = |side: u32| ((f64::from(side) / crop).floor() as u32).max(1);
        let (new_w, new_h) = if height == width {
            let short = scale(height);
            if w <= h {
                (short, ((u64::from(short) * u64::from(h)) / u64::from(w)) as u32)
            } else {
                (((u64::from(short) * u64::from(w)) / u64::from(h)) as u32, short)
            }
        } else {
            (scale(width), scale(height))
        };
        let resized = image.resize_exact(new_w.max(width), new_h.max(height), filter);
        // torchvision's `int(round((size - crop) / 2.0))`: Python rounds halves to even.
        let top = ((f64::from(resized.height() - height)) / 2.0).round_ties_even() as u32;
        let left = ((f64::from(resized.width() - width)) / 2.0).round_ties_even() as u32;
        resized.crop_imm(left, top, width, height)
    }
}

/// Decodes `bytes` (any format the `image` crate reads; `path` names it in errors) and brings
/// it to `height x width x channels` as `spec` says.
pub fn decode_with(
    bytes: &[u8],
    path: &Path,
    (height, width): (usize, usize),
    channels: usize,
    spec: &ResizeSpec,
) -> Result<Vec<u8>, DataError> {
    let image = crate::decode::decode_full(bytes, path, (height, width), channels)?;
    let out = spec.apply(&image, (height as u32, width as u32));
    Ok(if channels == 1 { out.to_luma8().into_raw() } else { out.to_rgb8().into_raw() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_centre_crop_keeps_the_aspect_ratio_and_cuts_the_middle() {
        // 20 wide, 10 high; a column index in red.
        let img = image::RgbImage::from_fn(20, 10, |x, _| image::Rgb([x as u8 * 10, 0, 0]));
        let spec = ResizeSpec { interpolation: Interpolation::Nearest, crop_pct: Some(1.0) };
        let out = spec.apply(&DynamicImage::ImageRgb8(img.clone()), (10, 10)).to_rgb8();
        assert_eq!(out.dimensions(), (10, 10));
        // The shorter side is already 10: only the centre 10 columns (5..15) remain.
        assert_eq!(out.get_pixel(0, 0).0[0], 50);
        assert_eq!(out.get_pixel(9, 9).0[0], 140);
        // Without a crop the whole width is squeezed in.
        let squash = ResizeSpec { interpolation: Interpolation::Nearest, crop_pct: None };
        let out = squash.apply(&DynamicImage::ImageRgb8(img), (10, 10)).to_rgb8();
        assert!(out.get_pixel(0, 0).0[0] <= 10 && out.get_pixel(9, 0).0[0] >= 180, "{:?}", out.get_pixel(9, 0));
        assert!(ResizeSpec { crop_pct: Some(1.5), ..squash }.validate().is_err());
        // 19 wide: 9 columns to cut, 4.5 a side; torchvision rounds that to 4 (half to even),
        // so the crop keeps columns 4..14.
        let odd = image::RgbImage::from_fn(19, 10, |x, _| image::Rgb([x as u8 * 10, 0, 0]));
        let crop = ResizeSpec { interpolation: Interpolation::Nearest, crop_pct: Some(1.0) };
        let out = crop.apply(&DynamicImage::ImageRgb8(odd), (10, 10)).to_rgb8();
        assert_eq!((out.get_pixel(0, 0).0[0], out.get_pixel(9, 0).0[0]), (40, 130));
        assert_eq!(Interpolation::parse("3"), Some(Interpolation::Bicubic));
        assert_eq!(Interpolation::parse("lanczos"), None);
    }

    #[test]
    fn timms_crop_of_0_875_resizes_224_to_256_then_cuts_224() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::new(300, 400));
        let spec = ResizeSpec { interpolation: Interpolation::Bilinear, crop_pct: Some(0.875) };
        let out = spec.apply(&img, (224, 224));
        assert_eq!((out.width(), out.height()), (224, 224));
    }
}
