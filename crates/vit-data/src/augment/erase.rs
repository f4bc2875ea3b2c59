//! Random erasing (Zhong et al., as timm's `RandomErasing`): with some probability, one
//! rectangle of the normalised image is replaced by noise or zeros.

use serde::{Deserialize, Serialize};

use super::random::SampleRng;

/// What fills an erased rectangle (timm's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EraseMode {
    /// Standard normal noise for every pixel and channel (timm's and DeiT's default).
    #[default]
    Pixel,
    /// One standard normal value per channel.
    Rand,
    /// Zero: the mean of the training images, after normalisation.
    Const,
}

/// The erased rectangle's area, as a share of the image: `[MIN_AREA, MAX_AREA]` (timm's).
pub const MIN_AREA: f32 = 0.02;
/// See [`MIN_AREA`].
pub const MAX_AREA: f32 = 1.0 / 3.0;
/// Its aspect ratio lies in `[MIN_ASPECT, 1 / MIN_ASPECT]`, drawn uniformly in log space.
pub const MIN_ASPECT: f32 = 0.3;

/// Erases one rectangle of `pixels` (HWC, normalised) with probability `probability`, drawn
/// from `rng` (up to 10 tries for a rectangle that fits, as timm). Returns the rectangle
/// erased, `(top, left, height, width)`, if any.
pub(crate) fn erase(
    pixels: &mut [f32],
    size: (usize, usize),
    channels: usize,
    probability: f32,
    mode: EraseMode,
    rng: &mut SampleRng,
) -> Option<(usize, usize, usize, usize)> {
    if rng.uniform() >= probability {
        return None;
    }
    let (h, w) = size;
    let area = (h * w) as f32;
    for _ in 0..10 {
        let target = rng.range(MIN_AREA, MAX_AREA) * area;
        let aspect = rng.range(MIN_ASPECT.ln(), (1.0 / MIN_ASPECT).ln()).exp();
        let eh = (target * aspect).sqrt().round() as usize;
        let ew = (target / aspect).sqrt().round() as usize;
        if eh == 0 || ew == 0 || eh >= h || ew >= w {
            continue;
        }
        let top = rng.below(h - eh + 1);
        let left = rng.below(w - ew + 1);
        let per_channel: Vec<f32> = match mode {
            EraseMode::Rand => (0..channels).map(|_| rng.normal()).collect(),
            _ => vec![0.0; channels],
        };
        for y in top..top + eh {
            for x in left..left + ew {
                for (ch, &fill) in per_channel.iter().enumerate() {
                    pixels[(y * w + x) * channels + ch] = if mode == EraseMode::Pixel { rng.normal() } else { fill };
                }
            }
        }
        return Some((top, left, eh, ew));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erasing_fills_one_rectangle_of_the_drawn_size_and_nothing_else() {
        let (h, w, c) = (32, 24, 3);
        let mut erased_images = 0;
        for index in 0..400 {
            for mode in [EraseMode::Pixel, EraseMode::Rand, EraseMode::Const] {
                let mut pixels = vec![7.0f32; h * w * c];
                let mut rng = SampleRng::new(1, 1, index);
                let Some((top, left, eh, ew)) = erase(&mut pixels, (h, w), c, 0.5, mode, &mut rng) else {
                    assert!(pixels.iter().all(|&v| v == 7.0));
                    continue;
                };
                erased_images += 1;
                let share = (eh * ew) as f32 / (h * w) as f32;
                assert!(share > 0.01 && share < 0.36, "{share}");
                let ratio = eh as f32 / ew as f32;
                assert!(ratio > 0.25 && ratio < 4.0, "{ratio}");
                for y in 0..h {
                    for x in 0..w {
                        let inside = (top..top + eh).contains(&y) && (left..left + ew).contains(&x);
                        let px = &pixels[(y * w + x) * c..][..c];
                        match (inside, mode) {
                            (false, _) => assert!(px.iter().all(|&v| v == 7.0)),
                            (true, EraseMode::Const) => assert!(px.iter().all(|&v| v == 0.0)),
                            (true, _) => assert!(px.iter().all(|&v| v != 7.0 && v.is_finite())),
                        }
                    }
                }
                if mode == EraseMode::Rand {
                    // One value per channel, the same over the rectangle.
                    let first = &pixels[(top * w + left) * c..][..c].to_vec();
                    let last = &pixels[((top + eh - 1) * w + left + ew - 1) * c..][..c];
                    assert_eq!(first.as_slice(), last);
                }
            }
        }
        // Probability one half, over 1,200 images.
        assert!((500..700).contains(&erased_images), "{erased_images}");
    }

    #[test]
    fn pixel_noise_is_standard_normal() {
        let (h, w) = (64, 64);
        let mut values = Vec::new();
        for index in 0..50 {
            let mut pixels = vec![f32::NAN; h * w];
            let mut rng = SampleRng::new(2, 2, index);
            erase(&mut pixels, (h, w), 1, 1.0, EraseMode::Pixel, &mut rng);
            values.extend(pixels.into_iter().filter(|v| !v.is_nan()));
        }
        let n = values.len() as f32;
        let mean = values.iter().sum::<f32>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n;
        assert!(n > 10_000.0 && mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{n} {mean} {var}");
    }
}
