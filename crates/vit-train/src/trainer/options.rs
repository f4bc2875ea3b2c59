//! What a caller asks of a training run.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use candle_core::Device;

use crate::recipe::Recipe;

/// Everything a training run needs besides the recipe.
pub struct TrainOptions {
    /// The recipe (on resume, the one saved in the run directory is used instead).
    pub recipe: Recipe,
    /// Where the recipe came from, for error messages.
    pub recipe_origin: PathBuf,
    /// Data directory (else the recipe's `data.dir`, else `VIT_DATA_DIR`).
    pub data_dir: Option<PathBuf>,
    /// The run directory: config, metrics, checkpoints.
    pub run_dir: PathBuf,
    /// Where to compute.
    pub device: Device,
    /// Continue the run in `run_dir` from its last checkpoint.
    pub resume: bool,
    /// Set (e.g. by Ctrl-C) to save a checkpoint and stop after the current step.
    pub stop: Arc<AtomicBool>,
    /// Stop as if interrupted after this many steps in all (to test resuming).
    pub stop_after_steps: Option<u64>,
    /// Write a [`StepRecord`](super::StepRecord) to `steps.jsonl` and `steps.csv` every this many steps.
    pub step_metrics_every: Option<usize>,
}
