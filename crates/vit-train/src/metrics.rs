//! Loss with label smoothing, top-k accuracy and the confusion matrix.

use candle_core::{D, Result, Tensor};

/// Mean cross-entropy from logits with label smoothing `smoothing`: the target puts
/// `1 - smoothing` on the label and spreads `smoothing` evenly over all classes.
///
/// # Shapes
/// - `logits`: `[B, K]`, `labels`: `[B]` (u32); returns a scalar.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_p.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?; // [B]
    let nll = picked.neg()?.mean_all()?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = log_p.mean(D::Minus1)?.neg()?.mean_all()?;
    (nll * (1.0 - smoothing))? + (uniform * smoothing)?
}

/// Mean cross-entropy against mixed targets (mixup, cutmix): each row is `lam` of its label
/// and `1 - lam` of its partner's, each smoothed by `smoothing` as [`cross_entropy`] does.
/// The same as timm's `SoftTargetCrossEntropy` on `Mixup`'s targets; with `lam = 1`, plain
/// [`cross_entropy`].
///
/// # Shapes
/// - `logits`: `[B, K]`, `labels` and `partner_labels`: `[B]` (u32); returns a scalar.
pub fn mixed_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    partner_labels: &Tensor,
    lam: f64,
    smoothing: f64,
) -> Result<Tensor> {
    // The loss is linear in the target, so the mixed target's loss is the mix of the losses.
    let own = cross_entropy(logits, labels, smoothing)?;
    if lam == 1.0 {
        return Ok(own);
    }
    let partner = cross_entropy(logits, partner_labels, smoothing)?;
    (own * lam)? + (partner * (1.0 - lam))?
}

/// Running counts of top-1 and top-5 hits, loss and a confusion matrix.
///
/// A row counts as a top-k hit only when every logit in it is finite and fewer than `k`
/// classes rank above the label: a class ranks above it with a greater logit, or with an equal
/// one and a lower index (the class [`argmax`] would pick), so ties and NaN never score. Rows
/// with a non-finite logit are counted in [`non_finite`](Self::non_finite), never as hits,
/// and left out of the confusion matrix. Over no images every figure is NaN: there is no
/// accuracy of nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    /// Images seen.
    pub count: usize,
    /// Top-1 hits.
    pub top1: usize,
    /// Top-5 hits.
    pub top5: usize,
    /// Sum of per-batch mean losses times batch sizes.
    pub loss_sum: f64,
    /// `confusion[true][predicted]`, over the images whose logits were all finite.
    pub confusion: Vec<Vec<usize>>,
    /// Images with a NaN or infinite logit (or a label outside the logits).
    pub non_finite: usize,
}

impl Tally {
    /// An empty tally for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self { count: 0, top1: 0, top5: 0, loss_sum: 0.0, confusion: vec![vec![0; classes]; classes], non_finite: 0 }
    }

    /// Adds a batch: logits `[B, K]` as rows, labels, and the batch's mean loss.
    pub fn add(&mut self, logits: &[Vec<f32>], labels: &[u32], mean_loss: f64) {
        for (row, &label) in logits.iter().zip(labels) {
            let label = label as usize;
            let target = row.get(label).copied();
            let cell = self.confusion.get(label).map(|r| r.len() == row.len()).unwrap_or(false);
            match target {
                Some(target) if cell && row.iter().all(|v| v.is_finite()) => {
                    let rank =
                        row.iter().enumerate().filter(|&(j, &v)| v > target || (v == target && j < label)).count();
                    self.top1 += usize::from(rank == 0);
                    self.top5 += usize::from(rank < 5);
                    self.confusion[label][argmax(row)] += 1;
                }
                _ => self.non_finite += 1,
            }
        }
        self.count += labels.len();
        self.loss_sum += mean_loss * labels.len() as f64;
    }

    /// Adds counts made elsewhere (the other ranks' shards of a batch, summed): `count` images
    /// with `top1` and `top5` hits and `non_finite` unusable rows, of mean loss `mean_loss`.
    pub fn add_counts(&mut self, count: usize, top1: usize, top5: usize, non_finite: usize, mean_loss: f64) {
        self.count += count;
        self.top1 += top1;
        self.top5 += top5;
        self.non_finite += non_finite;
        self.loss_sum += mean_loss * count as f64;
    }

    /// Top-1 accuracy in `[0, 1]`; NaN over no images.
    pub fn top1(&self) -> f64 {
        self.share(self.top1)
    }

    /// Top-5 accuracy in `[0, 1]`; NaN over no images.
    pub fn top5(&self) -> f64 {
        self.share(self.top5)
    }

    /// Mean loss; NaN over no images.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.count as f64
    }

    fn share(&self, hits: usize) -> f64 {
        if self.count == 0 { f64::NAN } else { hits as f64 / self.count as f64 }
    }

    /// The counts a sum across ranks carries, in the one layout that the training step and the
    /// evaluation both use: images, top-1 hits, top-5 hits, non-finite rows, loss sum (counts
    /// below 2^24 are exact in `f32`).
    pub(crate) fn counts_for_sum(&self) -> [f32; SUMMED_COUNTS] {
        [self.count as f32, self.top1 as f32, self.top5 as f32, self.non_finite as f32, self.loss_sum as f32]
    }

    /// The tally summed across ranks: the counts of [`counts_for_sum`](Self::counts_for_sum),
    /// then, with `classes > 0`, the `classes x classes` confusion matrix row by row.
    pub(crate) fn from_sum(summed: &[f32], classes: usize) -> Self {
        let count = |v: f32| v.round() as usize;
        let confusion = summed[SUMMED_COUNTS..]
            .chunks(classes.max(1))
            .take(classes)
            .map(|row| row.iter().map(|&v| count(v)).collect())
            .collect();
        Self {
            count: count(summed[0]),
            top1: count(summed[1]),
            top5: count(summed[2]),
            non_finite: count(summed[3]),
            loss_sum: f64::from(summed[4]),
            confusion,
        }
    }

    /// Accuracy per true class (NaN for a class with no images).
    pub fn per_class(&self) -> Vec<f64> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(i, row)| match row.iter().sum::<usize>() {
                0 => f64::NAN,
                n => row[i] as f64 / n as f64,
            })
            .collect()
    }
}

/// Values [`Tally::counts_for_sum`] lays out.
pub(crate) const SUMMED_COUNTS: usize = 5;

/// Index of the largest value (the first on ties); rows with NaN are the caller's to reject
/// (see [`Tally`]).
pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// Indices and values of the `k` largest entries, largest first (from `vit_model::inference`).
pub use vit_model::inference::top_k;

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// The loss of soft targets `-sum_k t_k log softmax(z)_k`, in f64, with timm's
    /// `mixup_target`: one-hot smoothed to `off = s / K`, `on = 1 - s + off`, then mixed.
    fn soft_target_loss(logits: &[Vec<f32>], labels: &[u32], partner: &[u32], lam: f64, s: f64) -> f64 {
        let rows = logits.iter().zip(labels.iter().zip(partner)).map(|(row, (&a, &b))| {
            let k = row.len();
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            let log_z = row.iter().map(|&v| (f64::from(v) - max).exp()).sum::<f64>().ln() + max;
            let off = s / k as f64;
            let target = |label: u32, j: usize| if j == label as usize { 1.0 - s + off } else { off };
            (0..k)
                .map(|j| -(lam * target(a, j) + (1.0 - lam) * target(b, j)) * (f64::from(row[j]) - log_z))
                .sum::<f64>()
        });
        rows.sum::<f64>() / logits.len() as f64
    }

    #[test]
    fn the_mixed_loss_is_the_soft_target_loss_of_the_mixed_targets() {
        let rows = vec![vec![1.0f32, -2.0, 0.5, 3.0], vec![0.1, 0.2, -0.3, 0.0], vec![-1.0, 2.0, 2.5, -0.5]];
        let (labels, partner) = ([3u32, 0, 2], [2u32, 0, 3]);
        let device = Device::Cpu;
        let logits = Tensor::new(rows.clone(), &device).unwrap();
        let (a, b) = (Tensor::new(&labels, &device).unwrap(), Tensor::new(&partner, &device).unwrap());
        for (lam, s) in [(1.0, 0.0), (0.7, 0.0), (0.3, 0.1), (0.0, 0.05)] {
            let got = mixed_cross_entropy(&logits, &a, &b, lam, s).unwrap().to_scalar::<f32>().unwrap();
            let want = soft_target_loss(&rows, &labels, &partner, lam, s);
            assert!((f64::from(got) - want).abs() < 1e-5, "lam {lam}, smoothing {s}: {got} vs {want}");
        }
    }

    #[test]
    fn the_mixed_loss_has_the_gradient_of_the_mixed_targets() {
        // d loss / d z = (softmax(z) - t) / B: checked against the targets built by hand.
        let rows = vec![vec![0.3f32, -1.0, 2.0], vec![1.5, 0.0, -0.5]];
        let device = Device::Cpu;
        let logits = candle_core::Var::new(rows.clone(), &device).unwrap();
        let a = Tensor::new(&[2u32, 0], &device).unwrap();
        let b = Tensor::new(&[1u32, 0], &device).unwrap();
        let (lam, s) = (0.6, 0.1);
        let loss = mixed_cross_entropy(logits.as_tensor(), &a, &b, lam, s).unwrap();
        let grad = loss.backward().unwrap().get(logits.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        for (i, (row, (la, lb))) in rows.iter().zip([(2usize, 1usize), (0, 0)]).enumerate() {
            let z: f64 = row.iter().map(|&v| f64::from(v).exp()).sum();
            for j in 0..3 {
                let off = s / 3.0;
                let t = |l: usize| if j == l { 1.0 - s + off } else { off };
                let want = (f64::from(row[j]).exp() / z - (lam * t(la) + (1.0 - lam) * t(lb))) / 2.0;
                assert!((f64::from(grad[i][j]) - want).abs() < 1e-6, "({i}, {j}): {} vs {want}", grad[i][j]);
            }
        }
    }
}
