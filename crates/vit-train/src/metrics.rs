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

/// Index of the largest value (the first on ties); rows with NaN are the caller's to reject
/// (see [`Tally`]).
pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// Indices and values of the `k` largest entries, largest first.
pub fn top_k(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, row[i])).collect()
}
