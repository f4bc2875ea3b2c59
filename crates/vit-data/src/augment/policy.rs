//! RandAugment (Cubuk et al., as timm's `rand-m9-mstd0.5-inc1` has it) and TrivialAugment
//! (Müller and Hutter, over RandAugment's operations: "TA (RA)" in their paper).
//!
//! The geometric operations (rotate, shear, translate) are folded into the image's one affine
//! warp, so an image is still sampled once; the photometric ones then act on the warped pixels
//! (values in `[0, 255]`) in the order drawn. Which operations make sense depends on the data:
//! for one-channel images (digits) colour balance is a no-op, and inversion and `SolarizeAdd`
//! lift the black background, so those three are left out; colour images get timm's full set.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::random::SampleRng;

/// The largest magnitude (timm's `_LEVEL_DENOM`): magnitudes run from 0 to 10.
pub const MAX_MAGNITUDE: f32 = 10.0;

/// An automatic augmentation policy, written in a recipe as timm's string:
/// `rand-m<M>[-n<N>][-mstd<S>][-p<P>]-inc1` or `trivial`.
///
/// - `rand`: `N` operations per image (default 2), each chosen uniformly (with replacement)
///   and applied with probability `P` (default 0.5) at magnitude `M` in `[0, 10]`, drawn
///   around `M` with standard deviation `S` (default 0; `mstd inf`: uniform in `[0, M]`).
///   Only timm's "increasing" operations (`inc1`: a larger magnitude is always a stronger
///   change) are built, so `-inc1` must be written.
/// - `trivial`: one operation per image, identity included, always applied, at a magnitude
///   drawn uniformly from 31 levels in `[0, 10]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AutoAugment {
    /// RandAugment.
    Rand {
        /// The magnitude, in `[0, 10]`.
        magnitude: f32,
        /// Operations per image.
        num_ops: usize,
        /// Standard deviation of the magnitude (0: fixed; infinite: uniform in `[0, magnitude]`).
        magnitude_std: f32,
        /// Probability that each drawn operation is applied.
        probability: f32,
    },
    /// TrivialAugment over RandAugment's operations.
    Trivial,
}

impl AutoAugment {
    /// Parses timm's policy string; the error says which part is wrong and what is expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = "expected `rand-m<magnitude>[-n<ops>][-mstd<std>][-p<probability>]-inc1` or `trivial`";
        if text == "trivial" {
            return Ok(Self::Trivial);
        }
        let mut parts = text.split('-');
        if parts.next() != Some("rand") {
            return Err(format!("policy `{text}` is unknown: {expected}"));
        }
        let (mut magnitude, mut num_ops, mut magnitude_std, mut probability) = (None, 2usize, 0f32, 0.5f32);
        let mut increasing = false;
        for part in parts {
            let number = |prefix: &str| -> Result<f32, String> {
                let value = &part[prefix.len()..];
                value.parse::<f32>().map_err(|_| format!("policy `{text}`: `{part}` has no number after `{prefix}`"))
            };
            if let Some(v) = part.strip_prefix("mstd") {
                magnitude_std = if v == "inf" { f32::INFINITY } else { number("mstd")? };
            } else if part.starts_with("inc") {
                increasing = number("inc")? == 1.0;
            } else if part.starts_with('m') {
                magnitude = Some(number("m")?);
            } else if part.starts_with('n') {
                let n = number("n")?;
                if n.fract() != 0.0 || !(1.0..=16.0).contains(&n) {
                    return Err(format!("policy `{text}`: the number of operations must be 1 to 16, got {n}"));
                }
                num_ops = n as usize;
            } else if part.starts_with('p') {
                probability = number("p")?;
            } else {
                return Err(format!("policy `{text}`: `{part}` is not a part of it: {expected}"));
            }
        }
        let magnitude = magnitude.ok_or_else(|| format!("policy `{text}` has no magnitude `m<M>`: {expected}"))?;
        if !(0.0..=MAX_MAGNITUDE).contains(&magnitude) {
            return Err(format!("policy `{text}`: the magnitude must be in [0, 10], got {magnitude}"));
        }
        if magnitude_std.is_nan() || magnitude_std < 0.0 {
            return Err(format!("policy `{text}`: the magnitude's std must be at least 0, got {magnitude_std}"));
        }
        if !(0.0..=1.0).contains(&probability) {
            return Err(format!("policy `{text}`: the probability must be in [0, 1], got {probability}"));
        }
        if !increasing {
            return Err(format!(
                "policy `{text}`: only timm's increasing operations are built (a larger magnitude is \
                 always stronger); write `-inc1`"
            ));
        }
        Ok(Self::Rand { magnitude, num_ops, magnitude_std, probability })
    }

    /// The operations drawn for one image of `channels` channels, in the order they apply.
    pub(crate) fn draw(&self, channels: usize, rng: &mut SampleRng) -> Vec<Drawn> {
        let ops = Op::for_channels(channels);
        match *self {
            Self::Rand { magnitude, num_ops, magnitude_std, probability } => {
                let mut drawn = Vec::with_capacity(num_ops);
                for _ in 0..num_ops {
                    let op = ops[rng.below(ops.len())];
                    if rng.uniform() >= probability {
                        continue;
                    }
                    let level = if magnitude_std == f32::INFINITY {
                        rng.range(0.0, magnitude)
                    } else if magnitude_std > 0.0 {
                        magnitude + rng.normal() * magnitude_std
                    } else {
                        magnitude
                    };
                    drawn.push(Drawn { op, level: level.clamp(0.0, MAX_MAGNITUDE), sign: rng.sign() });
                }
                drawn
            }
            Self::Trivial => {
                let pick = rng.below(ops.len() + 1);
                let level = rng.below(31) as f32 / 30.0 * MAX_MAGNITUDE;
                let sign = rng.sign();
                match ops.get(pick) {
                    Some(&op) => vec![Drawn { op, level, sign }],
                    None => Vec::new(), // the identity
                }
            }
        }
    }
}

impl fmt::Display for AutoAugment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Trivial => f.write_str("trivial"),
            Self::Rand { magnitude, num_ops, magnitude_std, probability } => {
                write!(f, "rand-m{magnitude}-n{num_ops}")?;
                if *magnitude_std == f32::INFINITY {
                    f.write_str("-mstdinf")?;
                } else if *magnitude_std > 0.0 {
                    write!(f, "-mstd{magnitude_std}")?;
                }
                write!(f, "-p{probability}-inc1")
            }
        }
    }
}

impl TryFrom<String> for AutoAugment {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<AutoAugment> for String {
    fn from(policy: AutoAugment) -> Self {
        policy.to_string()
    }
}

/// One operation of the policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Stretch each channel's range to `[0, 255]`.
    AutoContrast,
    /// Equalise each channel's histogram (as PIL's `ImageOps.equalize`).
    Equalize,
    /// `255 - v`.
    Invert,
    /// Rotate by up to 30 degrees (at magnitude 10).
    Rotate,
    /// Keep the top `4 - floor(4 m / 10)` bits.
    Posterize,
    /// Invert values at or above `256 - floor(256 m / 10)`.
    Solarize,
    /// Add `floor(110 m / 10)` to values below 128.
    SolarizeAdd,
    /// Blend with the grayscale image by `1 ± 0.9 m / 10`.
    Color,
    /// Blend with the mean gray level by `1 ± 0.9 m / 10`.
    Contrast,
    /// Blend with black by `1 ± 0.9 m / 10`.
    Brightness,
    /// Blend with a smoothed image by `1 ± 0.9 m / 10`.
    Sharpness,
    /// Shear along x by up to 0.3 (at magnitude 10).
    ShearX,
    /// Shear along y by up to 0.3.
    ShearY,
    /// Shift along x by up to 45% of the width.
    TranslateX,
    /// Shift along y by up to 45% of the height.
    TranslateY,
}

impl Op {
    /// Every operation, and whether it makes sense for one-channel images: colour balance is
    /// a no-op on them, and inversion and `SolarizeAdd` lift the black background of digits.
    const ALL: [(Op, bool); 15] = [
        (Op::AutoContrast, true),
        (Op::Equalize, true),
        (Op::Invert, false),
        (Op::Rotate, true),
        (Op::Posterize, true),
        (Op::Solarize, true),
        (Op::SolarizeAdd, false),
        (Op::Color, false),
        (Op::Contrast, true),
        (Op::Brightness, true),
        (Op::Sharpness, true),
        (Op::ShearX, true),
        (Op::ShearY, true),
        (Op::TranslateX, true),
        (Op::TranslateY, true),
    ];

    /// The operations for images of `channels` channels, in timm's order.
    pub fn for_channels(channels: usize) -> Vec<Op> {
        Self::ALL.iter().filter(|(_, gray)| channels > 1 || *gray).map(|(op, _)| *op).collect()
    }
}

/// An operation drawn for an image: its magnitude in `[0, 10]` and, for the signed ones, its
/// direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Drawn {
    pub op: Op,
    pub level: f32,
    pub sign: f32,
}

/// An inverse affine map in pixel units about the image's centre (x right, y down): the output
/// pixel at `p` is sampled from `a p + b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Affine {
    pub a: [[f32; 2]; 2],
    pub b: [f32; 2],
}

impl Affine {
    pub(crate) const IDENTITY: Self = Self { a: [[1.0, 0.0], [0.0, 1.0]], b: [0.0, 0.0] };

    /// `self` after `inner` is applied to the output coordinate first.
    fn then(self, inner: Self) -> Self {
        let m = |r: usize, c: usize| self.a[r][0] * inner.a[0][c] + self.a[r][1] * inner.a[1][c];
        let v = |r: usize| self.a[r][0] * inner.b[0] + self.a[r][1] * inner.b[1] + self.b[r];
        Self { a: [[m(0, 0), m(0, 1)], [m(1, 0), m(1, 1)]], b: [v(0), v(1)] }
    }

    /// Applies the map to `(x, y)`.
    pub(crate) fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        (self.a[0][0] * x + self.a[0][1] * y + self.b[0], self.a[1][0] * x + self.a[1][1] * y + self.b[1])
    }
}

/// The inverse map of the geometric operations of `drawn` on an `(height, width)` image.
pub(crate) fn geometry(drawn: &[Drawn], size: (usize, usize)) -> Affine {
    let (h, w) = (size.0 as f32, size.1 as f32);
    let mut map = Affine::IDENTITY;
    for d in drawn {
        let f = d.level / MAX_MAGNITUDE * d.sign;
        let step = match d.op {
            Op::Rotate => {
                let angle = (30.0 * f).to_radians();
                let (s, c) = angle.sin_cos();
                Affine { a: [[c, -s], [s, c]], b: [0.0, 0.0] }
            }
            Op::ShearX => Affine { a: [[1.0, 0.3 * f], [0.0, 1.0]], b: [0.0, 0.0] },
            Op::ShearY => Affine { a: [[1.0, 0.0], [0.3 * f, 1.0]], b: [0.0, 0.0] },
            Op::TranslateX => Affine { b: [0.45 * f * w, 0.0], ..Affine::IDENTITY },
            Op::TranslateY => Affine { b: [0.0, 0.45 * f * h], ..Affine::IDENTITY },
            _ => continue,
        };
        // Forward, the operations apply in order; backward, the last one is undone first.
        map = map.then(step);
    }
    map
}

/// Applies the photometric operations of `drawn`, in order, to `pixels` (HWC, values in
/// `[0, 255]`, kept there).
pub(crate) fn photometric(drawn: &[Drawn], pixels: &mut [f32], size: (usize, usize), channels: usize) {
    for d in drawn {
        let enhance = 1.0 + 0.9 * d.level / MAX_MAGNITUDE * d.sign;
        match d.op {
            Op::AutoContrast => auto_contrast(pixels, channels),
            Op::Equalize => equalize(pixels, channels),
            Op::Invert => pixels.iter_mut().for_each(|v| *v = 255.0 - *v),
            Op::Posterize => {
                let bits = 4 - (d.level / MAX_MAGNITUDE * 4.0) as u32;
                let mask = !((1u32 << (8 - bits)) - 1) & 0xff;
                pixels.iter_mut().for_each(|v| *v = ((v.round() as u32) & mask) as f32);
            }
            Op::Solarize => {
                let threshold = 256.0 - (d.level / MAX_MAGNITUDE * 256.0).floor();
                pixels.iter_mut().filter(|v| **v >= threshold).for_each(|v| *v = 255.0 - *v);
            }
            Op::SolarizeAdd => {
                let add = (d.level / MAX_MAGNITUDE * 110.0).floor();
                pixels.iter_mut().filter(|v| **v < 128.0).for_each(|v| *v = (*v + add).min(255.0));
            }
            Op::Color if channels == 3 => {
                for px in pixels.chunks_exact_mut(3) {
                    let gray = luma(px);
                    px.iter_mut().for_each(|v| *v = blend(gray, *v, enhance));
                }
            }
            Op::Contrast => {
                let n = pixels.len() / channels;
                let mean = if channels == 3 {
                    pixels.chunks_exact(3).map(luma).sum::<f32>() / n as f32
                } else {
                    pixels.iter().sum::<f32>() / pixels.len() as f32
                };
                let mean = (mean + 0.5).floor();
                pixels.iter_mut().for_each(|v| *v = blend(mean, *v, enhance));
            }
            Op::Brightness => pixels.iter_mut().for_each(|v| *v = blend(0.0, *v, enhance)),
            Op::Sharpness => sharpness(pixels, size, channels, enhance),
            _ => {} // geometric (done by the warp), or colour balance of a gray image
        }
    }
}

/// ITU-R 601-2 luma, as PIL's conversion to `L`.
fn luma(px: &[f32]) -> f32 {
    0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2]
}

/// `base + factor (v - base)`, clamped to `[0, 255]` (PIL's `ImageEnhance`).
fn blend(base: f32, v: f32, factor: f32) -> f32 {
    (base + factor * (v - base)).clamp(0.0, 255.0)
}

fn auto_contrast(pixels: &mut [f32], channels: usize) {
    for ch in 0..channels {
        let (lo, hi) = pixels
            .iter()
            .skip(ch)
            .step_by(channels)
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if hi > lo {
            let scale = 255.0 / (hi - lo);
            pixels.iter_mut().skip(ch).step_by(channels).for_each(|v| *v = (*v - lo) * scale);
        }
    }
}

/// PIL's `ImageOps.equalize`, per channel, on the values rounded to 8 bits.
fn equalize(pixels: &mut [f32], channels: usize) {
    for ch in 0..channels {
        let mut histogram = [0usize; 256];
        for &v in pixels.iter().skip(ch).step_by(channels) {
            histogram[v.round().clamp(0.0, 255.0) as usize] += 1;
        }
        let last = histogram.iter().rposition(|&n| n > 0).map_or(0, |i| histogram[i]);
        let step = (histogram.iter().sum::<usize>() - last) / 255;
        if step == 0 {
            continue;
        }
        let mut lut = [0f32; 256];
        let mut n = step / 2;
        for (entry, &count) in lut.iter_mut().zip(&histogram) {
            *entry = (n / step).min(255) as f32;
            n += count;
        }
        pixels.iter_mut().skip(ch).step_by(channels).for_each(|v| *v = lut[v.round().clamp(0.0, 255.0) as usize]);
    }
}

/// PIL's `ImageEnhance.Sharpness`: a blend with the image smoothed by the 3x3 kernel
/// `[1 1 1; 1 5 1; 1 1 1] / 13`, whose border pixels are the image's own.
fn sharpness(pixels: &mut [f32], size: (usize, usize), channels: usize, factor: f32) {
    let (h, w) = size;
    if h < 3 || w < 3 {
        return;
    }
    let source = pixels.to_vec();
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for ch in 0..channels {
                let mut sum = 0.0;
                for dy in 0..3 {
                    for dx in 0..3 {
                        let weight = if (dy, dx) == (1, 1) { 5.0 } else { 1.0 };
                        sum += weight * source[((y + dy - 1) * w + x + dx - 1) * channels + ch];
                    }
                }
                let at = (y * w + x) * channels + ch;
                pixels[at] = blend(sum / 13.0, source[at], factor);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_strings_parse_as_timm_writes_them() {
        let deit = AutoAugment::parse("rand-m9-mstd0.5-inc1").unwrap();
        assert_eq!(deit, AutoAugment::Rand { magnitude: 9.0, num_ops: 2, magnitude_std: 0.5, probability: 0.5 });
        assert_eq!(AutoAugment::parse(&deit.to_string()).unwrap(), deit);
        let more = AutoAugment::parse("rand-m7-n3-mstdinf-p1-inc1").unwrap();
        assert_eq!(
            more,
            AutoAugment::Rand { magnitude: 7.0, num_ops: 3, magnitude_std: f32::INFINITY, probability: 1.0 }
        );
        assert_eq!(AutoAugment::parse(&more.to_string()).unwrap(), more);
        assert_eq!(AutoAugment::parse("trivial").unwrap(), AutoAugment::Trivial);
        for (bad, says) in [
            ("rand-m9-mstd0.5", "inc1"),
            ("rand-m11-inc1", "[0, 10]"),
            ("rand-n2-inc1", "no magnitude"),
            ("rand-m9-x3-inc1", "`x3`"),
            ("rand-m9-n0-inc1", "1 to 16"),
            ("auto", "unknown"),
            ("rand-mx-inc1", "no number"),
        ] {
            let error = AutoAugment::parse(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn digits_get_no_colour_balance_or_inversion() {
        assert!(!Op::for_channels(1).contains(&Op::Color));
        assert!(!Op::for_channels(1).contains(&Op::Invert));
        assert!(!Op::for_channels(1).contains(&Op::SolarizeAdd));
        assert_eq!((Op::for_channels(1).len(), Op::for_channels(3).len()), (12, 15));
        assert!(Op::for_channels(3).contains(&Op::Color));
        let mut rng = SampleRng::new(1, 1, 1);
        let policy = AutoAugment::parse("rand-m9-n4-p1-inc1").unwrap();
        for _ in 0..1000 {
            let drawn = policy.draw(1, &mut rng);
            assert_eq!(drawn.len(), 4, "p1 applies every drawn operation");
            assert!(drawn.iter().all(|d| d.op != Op::Color && d.op != Op::Invert && d.level == 9.0));
        }
    }

    #[test]
    fn rand_augment_applies_each_operation_with_its_probability() {
        let policy = AutoAugment::parse("rand-m9-n2-inc1").unwrap();
        let mut rng = SampleRng::new(2, 2, 2);
        let applied: usize = (0..10_000).map(|_| policy.draw(3, &mut rng).len()).sum();
        // 2 operations at p = 0.5: one per image on average.
        assert!((9_600..10_400).contains(&applied), "{applied}");
    }

    #[test]
    fn trivial_augment_draws_one_operation_at_a_uniform_magnitude() {
        let mut rng = SampleRng::new(3, 3, 3);
        let mut levels = [0usize; 31];
        let mut identity = 0;
        for _ in 0..31_000 {
            match AutoAugment::Trivial.draw(1, &mut rng).as_slice() {
                [] => identity += 1,
                [d] => levels[(d.level / MAX_MAGNITUDE * 30.0).round() as usize] += 1,
                more => panic!("{} operations", more.len()),
            }
        }
        // 13 choices (12 operations and the identity).
        assert!((2_100..2_700).contains(&identity), "{identity}");
        assert!(levels.iter().all(|&n| (700..1_200).contains(&n)), "{levels:?}");
    }

    #[test]
    fn geometric_operations_compose_in_order() {
        let d = |op, level, sign| Drawn { op, level, sign };
        // A shift right by 45% of 20 pixels samples from 9 pixels to the left.
        let shift = geometry(&[d(Op::TranslateX, 10.0, 1.0)], (10, 20));
        assert_eq!(shift.apply(0.0, 0.0), (9.0, 0.0));
        // A quarter of the full rotation range (7.5 degrees) at magnitude 2.5.
        let turn = geometry(&[d(Op::Rotate, 2.5, 1.0)], (10, 10));
        let (x, y) = turn.apply(1.0, 0.0);
        assert!((x - 7.5f32.to_radians().cos()).abs() < 1e-6 && (y - 7.5f32.to_radians().sin()).abs() < 1e-6);
        // Translate then shear: the shear is undone first, then the shift.
        let both = geometry(&[d(Op::TranslateY, 10.0, -1.0), d(Op::ShearX, 10.0, 1.0)], (10, 10));
        let (x, y) = both.apply(0.0, 2.0);
        assert!((x - 0.6).abs() < 1e-6 && (y - (2.0 - 4.5)).abs() < 1e-6, "{x} {y}");
        // Photometric operations leave the geometry alone.
        assert_eq!(geometry(&[d(Op::Equalize, 9.0, 1.0)], (10, 10)), Affine::IDENTITY);
    }

    #[test]
    fn photometric_operations_do_what_pil_does() {
        let d = |op, level, sign| Drawn { op, level, sign };
        let apply = |op: Drawn, pixels: &[f32], channels| {
            let mut out = pixels.to_vec();
            photometric(&[op], &mut out, (1, pixels.len() / channels), channels);
            out
        };
        let close = |got: Vec<f32>, want: &[f32]| {
            assert!(
                got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-3),
                "{got:?} {want:?}"
            );
        };
        let ramp = [10.0, 20.0, 30.0, 130.0];
        assert_eq!(apply(d(Op::AutoContrast, 0.0, 1.0), &ramp, 1), [0.0, 21.25, 42.5, 255.0]);
        assert_eq!(apply(d(Op::Invert, 0.0, 1.0), &ramp, 1), [245.0, 235.0, 225.0, 125.0]);
        // Magnitude 5: keep 4 - 2 = 2 bits; solarize at 256 - 128 = 128 and above.
        assert_eq!(apply(d(Op::Posterize, 5.0, 1.0), &[0.0, 63.0, 64.0, 255.0], 1), [0.0, 0.0, 64.0, 192.0]);
        assert_eq!(apply(d(Op::Solarize, 5.0, 1.0), &[0.0, 127.0, 128.0, 255.0], 1), [0.0, 127.0, 127.0, 0.0]);
        assert_eq!(apply(d(Op::SolarizeAdd, 10.0, 1.0), &[0.0, 127.0, 128.0, 200.0], 1), [110.0, 237.0, 128.0, 200.0]);
        // Magnitude 10, darker: factor 0.1 toward black; brighter: 1.9, clamped.
        close(apply(d(Op::Brightness, 10.0, -1.0), &[100.0, 200.0], 1), &[10.0, 20.0]);
        close(apply(d(Op::Brightness, 10.0, 1.0), &[100.0, 200.0], 1), &[190.0, 255.0]);
        // Contrast toward the rounded mean 150.
        close(apply(d(Op::Contrast, 10.0, -1.0), &[100.0, 200.0], 1), &[145.0, 155.0]);
        // Colour: a gray pixel stays gray; a red one moves toward its luma.
        let red = apply(d(Op::Color, 10.0, -1.0), &[200.0, 0.0, 0.0, 90.0, 90.0, 90.0], 3);
        let luma = 0.299 * 200.0;
        assert!((red[0] - (luma + 0.1 * (200.0 - luma))).abs() < 1e-3 && (red[1] - 0.9 * luma).abs() < 1e-3);
        assert!(red[3..].iter().all(|v| (v - 90.0).abs() < 1e-3), "{red:?}");
        // Equalize: with two equally common levels PIL's table sends the lower to 0 and the
        // upper to 255; an image of fewer than 256 pixels per level step is left alone.
        let two_levels: Vec<f32> = (0..600).map(|i| if i < 300 { 50.0 } else { 60.0 }).collect();
        let equalized = apply(d(Op::Equalize, 0.0, 1.0), &two_levels, 1);
        assert!(equalized[..300].iter().all(|&v| v == 0.0) && equalized[300..].iter().all(|&v| v == 255.0));
        assert_eq!(apply(d(Op::Equalize, 0.0, 1.0), &[50.0, 50.0, 60.0, 60.0], 1), [50.0, 50.0, 60.0, 60.0]);
    }

    #[test]
    fn sharpness_blends_with_the_smoothed_image_inside_the_border() {
        // A 3x3 image with one bright centre: smoothed, the centre is (5 * 130) / 13 = 50.
        let mut pixels = [0.0; 9];
        pixels[4] = 130.0;
        let blurred = {
            let mut p = pixels;
            photometric(&[Drawn { op: Op::Sharpness, level: 10.0 / 0.9, sign: -1.0 }], &mut p, (3, 3), 1);
            p
        };
        // Factor 1 - 0.9 * (10 / 0.9) / 10 = 0: the smoothed value; the border is untouched.
        assert!((blurred[4] - 50.0).abs() < 1e-4, "{}", blurred[4]);
        assert!(blurred.iter().enumerate().all(|(i, &v)| i == 4 || v == 0.0));
    }
}
