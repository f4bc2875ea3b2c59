//! Mixup (Zhang et al.) and cutmix (Yun et al.) of a batch with itself reversed, as timm's
//! `Mixup` does in its default `batch` mode: one mixing weight `lam` per batch, row `i` mixed
//! with row `len - 1 - i`, the target `lam * label + (1 - lam) * partner's label`.
//!
//! Each batch's draws depend only on the seed, the epoch and the batch's position in the
//! epoch, so a resumed run mixes what an uninterrupted one did, and every rank of a
//! data-parallel run (each of which prepares the whole global batch) mixes the same.

use crate::augment::AugmentConfig;
use crate::augment::random::SampleRng;

/// How a batch was mixed, for the loss: image `i` is `lam` of its own label and `1 - lam` of
/// `partner_labels[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// The label of each row's partner (row `len - 1 - i`).
    pub partner_labels: Vec<u32>,
    /// The share of each row's own image (and label), in `[0, 1]`.
    pub lam: f32,
    /// Which of the two mixed it.
    pub kind: MixKind,
}

impl Mix {
    /// The label with the larger share of each row (its own at `lam >= 0.5`): what a running
    /// training accuracy is measured against.
    pub fn dominant_labels(&self, labels: &[u32]) -> Vec<u32> {
        if self.lam >= 0.5 { labels.to_vec() } else { self.partner_labels.clone() }
    }
}

/// Mixup or cutmix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixKind {
    /// Every pixel blended: `lam * image + (1 - lam) * partner`.
    Mixup,
    /// A rectangle of the partner pasted in, `lam` corrected to the share left uncovered.
    Cutmix {
        /// The rectangle: `(top, left, height, width)`.
        rect: (usize, usize, usize, usize),
    },
}

/// Salt of the batch stream, apart from the per-image streams.
const MIX_STREAM: u64 = 0x006d_6978_7570;

/// Mixes a batch of `labels.len()` images of `image_shape` (HWC, `images` holding them in
/// order), the `batch_index`-th of `epoch`, as `config` says, in place, and says how it did. A
/// batch of one image, or a config with neither mixup nor cutmix, is left as it is (`None`).
/// The probabilities are timm's: the batch is mixed with `mix_probability`; with both methods
/// on, cutmix is chosen with `mix_switch_probability`. [`crate::Loader`] calls it on every
/// training batch; [`crate::Batch::mix_with`] is the same on a [`crate::Batch`].
pub fn mix_images(
    images: &mut [f32],
    labels: &[u32],
    image_shape: (usize, usize, usize),
    config: &AugmentConfig,
    seed: u64,
    epoch: u64,
    batch_index: u64,
) -> Option<Mix> {
    let n = labels.len();
    if !config.mixes() || n < 2 {
        return None;
    }
    let mut rng = SampleRng::fork(seed, epoch, batch_index, MIX_STREAM);
    if rng.uniform() >= config.mix_probability {
        return None;
    }
    let cutmix = match (config.mixup_alpha > 0.0, config.cutmix_alpha > 0.0) {
        (true, true) => rng.uniform() < config.mix_switch_probability,
        (false, true) => true,
        _ => false,
    };
    let alpha = if cutmix { config.cutmix_alpha } else { config.mixup_alpha };
    let mut lam = rng.beta_symmetric(f64::from(alpha));
    let (h, w, c) = image_shape;
    let image = h * w * c;
    let source = images.to_vec();
    let partner = |i: usize| &source[(n - 1 - i) * image..][..image];
    let kind = if cutmix {
        // timm's `rand_bbox`: a box of side sqrt(1 - lam) of the image's, centred anywhere,
        // clipped to the image.
        let cut = (1.0 - lam).sqrt();
        let (cut_h, cut_w) = ((h as f32 * cut) as usize, (w as f32 * cut) as usize);
        let (cy, cx) = (rng.below(h), rng.below(w));
        let (top, bottom) = (cy.saturating_sub(cut_h / 2), (cy + cut_h / 2).min(h));
        let (left, right) = (cx.saturating_sub(cut_w / 2), (cx + cut_w / 2).min(w));
        for i in 0..n {
            let from = partner(i);
            let to = &mut images[i * image..][..image];
            for y in top..bottom {
                let row = (y * w + left) * c..(y * w + right) * c;
                to[row.clone()].copy_from_slice(&from[row]);
            }
        }
        lam = 1.0 - ((bottom - top) * (right - left)) as f32 / (h * w) as f32;
        MixKind::Cutmix { rect: (top, left, bottom - top, right - left) }
    } else {
        for i in 0..n {
            let from = partner(i);
            for (to, &other) in images[i * image..][..image].iter_mut().zip(from) {
                *to = *to * lam + other * (1.0 - lam);
            }
        }
        MixKind::Mixup
    };
    let partner_labels = (0..n).map(|i| labels[n - 1 - i]).collect();
    Some(Mix { partner_labels, lam, kind })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::Batch;

    /// A batch of `n` one-channel 8x6 images, image `i` filled with the value `i`.
    fn batch(n: usize) -> Batch {
        let (h, w) = (8, 6);
        Batch {
            images: (0..n).flat_map(|i| vec![i as f32; h * w]).collect(),
            labels: (0..n as u32).map(|i| 10 + i).collect(),
            image_shape: (h, w, 1),
            mix: None,
        }
    }

    fn config(mixup: f32, cutmix: f32) -> AugmentConfig {
        AugmentConfig { mixup_alpha: mixup, cutmix_alpha: cutmix, ..AugmentConfig::default() }
    }

    #[test]
    fn mixup_blends_each_image_with_its_mirror_row_by_lam() {
        let mut b = batch(5);
        b.mix_with(&config(0.8, 0.0), 1, 2, 3);
        let mix = b.mix.clone().expect("mixed (probability 1)");
        assert_eq!(mix.kind, MixKind::Mixup);
        assert_eq!(mix.partner_labels, [14, 13, 12, 11, 10]);
        assert!(mix.lam > 0.0 && mix.lam < 1.0);
        for i in 0..5 {
            let expected = i as f32 * mix.lam + (4 - i) as f32 * (1.0 - mix.lam);
            assert!(b.images[i * 48..][..48].iter().all(|&v| (v - expected).abs() < 1e-5), "row {i}");
        }
        assert_eq!(b.labels, [10, 11, 12, 13, 14], "the labels stay; the partners are beside them");
    }

    #[test]
    fn cutmix_pastes_one_rectangle_and_lam_is_the_share_left() {
        let mut seen_cut = false;
        for batch_index in 0..50 {
            let mut b = batch(4);
            b.mix_with(&config(0.0, 1.0), 7, 1, batch_index);
            let mix = b.mix.clone().expect("mixed");
            let MixKind::Cutmix { rect: (top, left, rh, rw) } = mix.kind else { panic!("{:?}", mix.kind) };
            assert!((mix.lam - (1.0 - (rh * rw) as f32 / 48.0)).abs() < 1e-6);
            seen_cut |= rh * rw > 0;
            for i in 0..4 {
                for y in 0..8 {
                    for x in 0..6 {
                        let inside = (top..top + rh).contains(&y) && (left..left + rw).contains(&x);
                        let expected = if inside { 3 - i } else { i } as f32;
                        assert_eq!(b.images[i * 48 + y * 6 + x], expected, "batch {batch_index} row {i} ({y}, {x})");
                    }
                }
            }
        }
        assert!(seen_cut);
    }

    #[test]
    fn the_switch_and_mix_probabilities_are_honoured() {
        let mut cut = 0;
        let mut none = 0;
        let cfg = AugmentConfig { mix_probability: 0.8, mix_switch_probability: 0.25, ..config(0.8, 1.0) };
        for batch_index in 0..4000 {
            let mut b = batch(2);
            b.mix_with(&cfg, 3, 1, batch_index);
            match b.mix.map(|m| m.kind) {
                None => none += 1,
                Some(MixKind::Cutmix { .. }) => cut += 1,
                Some(MixKind::Mixup) => {}
            }
        }
        assert!((700..900).contains(&none), "unmixed {none} of 4000, expected about 800");
        assert!((700..900).contains(&cut), "cutmix {cut} of 4000, expected about 800 (0.8 x 0.25)");
    }

    #[test]
    fn the_same_batch_mixes_the_same_way_and_another_differently() {
        let mixed = |epoch, index| {
            let mut b = batch(6);
            b.mix_with(&config(0.8, 1.0), 11, epoch, index);
            b
        };
        assert_eq!(mixed(2, 5), mixed(2, 5));
        assert_ne!(mixed(2, 5).mix, mixed(2, 6).mix);
        assert_ne!(mixed(2, 5).mix, mixed(3, 5).mix);
        // Nothing to mix: one image, or no method on.
        let mut single = batch(1);
        single.mix_with(&config(0.8, 1.0), 11, 1, 1);
        assert_eq!(single, batch(1));
        let mut off = batch(4);
        off.mix_with(&config(0.0, 0.0), 11, 1, 1);
        assert_eq!(off, batch(4));
    }

    #[test]
    fn the_dominant_label_is_the_one_with_the_larger_share() {
        let mix = Mix { partner_labels: vec![2, 1], lam: 0.3, kind: MixKind::Mixup };
        assert_eq!(mix.dominant_labels(&[1, 2]), [2, 1]);
        assert_eq!(Mix { lam: 0.5, ..mix }.dominant_labels(&[1, 2]), [1, 2]);
    }
}
