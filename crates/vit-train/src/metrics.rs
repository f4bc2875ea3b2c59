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
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

impl Tally {
    /// An empty tally for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self { count: 0, top1: 0, top5: 0, loss_sum: 0.0, confusion: vec![vec![0; classes]; classes] }
    }

    /// Adds a batch: logits `[B, K]` as rows, labels, and the batch's mean loss.
    pub fn add(&mut self, logits: &[Vec<f32>], labels: &[u32], mean_loss: f64) {
        for (row, &label) in logits.iter().zip(labels) {
            let target = row[label as usize];
            // Rank of the label: how many classes score strictly higher (ties favour the label).
            let rank = row.iter().filter(|&&v| v > target).count();
            self.top1 += usize::from(rank == 0);
            self.top5 += usize::from(rank < 5);
            let predicted = argmax(row);
            self.confusion[label as usize][predicted] += 1;
        }
        self.count += labels.len();
        self.loss_sum += mean_loss * labels.len() as f64;
    }

    /// Top-1 accuracy in `[0, 1]`.
    pub fn top1(&self) -> f64 {
        self.top1 as f64 / self.count.max(1) as f64
    }

    /// Top-5 accuracy in `[0, 1]`.
    pub fn top5(&self) -> f64 {
        self.top5 as f64 / self.count.max(1) as f64
    }

    /// Mean loss.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.count.max(1) as f64
    }

    /// Accuracy per true class.
    pub fn per_class(&self) -> Vec<f64> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(i, row)| row[i] as f64 / row.iter().sum::<usize>().max(1) as f64)
            .collect()
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// Indices and values of the `k` largest entries, largest first.
pub fn top_k(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, row[i])).collect()
}
