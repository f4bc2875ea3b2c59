//! What a run writes down: one record per epoch (`metrics.jsonl`), the final report
//! (`summary.json`), and how the run ended.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Steps taken by the end of the epoch.
    pub step: u64,
    /// Mean training loss (with label smoothing, dropout on).
    pub train_loss: f64,
    /// Training top-1 accuracy.
    pub train_top1: f64,
    /// Training top-5 accuracy.
    pub train_top5: f64,
    /// Validation loss (`null` without a validation split).
    pub val_loss: Option<f64>,
    /// Validation top-1 accuracy (`null` without a validation split).
    pub val_top1: Option<f64>,
    /// Validation top-5 accuracy (`null` without a validation split).
    pub val_top5: Option<f64>,
    /// Validation loss of the weights' moving average (with `train.ema_decay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_val_loss: Option<f64>,
    /// Validation top-1 of the moving average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_val_top1: Option<f64>,
    /// Validation top-5 of the moving average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_val_top5: Option<f64>,
    /// Learning rate at the last step of the epoch.
    pub learning_rate: f64,
    /// Seconds of training steps in the epoch (evaluation excluded).
    pub train_seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

/// What a finished run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// How the tested model was chosen.
    pub model_selection: String,
    /// Epoch with the best validation top-1 (1-based); `null` without a validation split,
    /// when the last epoch's model is tested.
    pub best_epoch: Option<usize>,
    /// That validation top-1.
    pub best_val_top1: Option<f64>,
    /// Test loss of the tested model.
    pub test_loss: f64,
    /// Test top-1 of the tested model.
    pub test_top1: f64,
    /// Test top-5 of the tested model.
    pub test_top5: f64,
    /// Test images.
    pub test_images: usize,
    /// The test confusion matrix, `[true class][predicted class]` (empty in summaries written
    /// before it was recorded).
    #[serde(default)]
    pub test_confusion: Vec<Vec<usize>>,
    /// Wall time of the whole run, including earlier sessions of a resumed run.
    pub wall_seconds: f64,
    /// Training images per second over all epochs (steps only).
    pub images_per_second: f64,
    /// The run directory.
    pub run_dir: PathBuf,
}

/// How a run ended.
#[derive(Debug)]
pub enum TrainOutcome {
    /// All epochs ran; the chosen model was evaluated on the test set.
    Finished(TrainReport),
    /// Stopped early (Ctrl-C); `vit train --resume` continues exactly.
    Interrupted {
        /// The checkpoint written.
        checkpoint: PathBuf,
        /// Steps done.
        step: u64,
    },
}
