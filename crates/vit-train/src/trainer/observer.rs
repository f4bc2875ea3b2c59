//! How a training run tells the outside what it is doing, without printing anything itself:
//! the `vit` command renders these events as progress bars, lines and plots; a library user
//! may log them, or ignore them with [`Silent`].

use std::path::{Path, PathBuf};

use crate::trainer::report::EpochRecord;

/// A run about to train.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStarted {
    /// The recipe's name.
    pub recipe: String,
    /// The training split's name.
    pub dataset: String,
    /// Images in the training, validation and test splits.
    pub images: (usize, usize, usize),
    /// The device, as candle writes it.
    pub device: String,
    /// Trainable parameters.
    pub parameters: usize,
    /// The run directory.
    pub run_dir: PathBuf,
    /// For a resumed run: epochs done and steps taken before.
    pub resumed_after: Option<(usize, u64)>,
    /// For a run started from a checkpoint's weights: the checkpoint, and what was taken from it.
    pub initialized_from: Option<(PathBuf, String)>,
    /// Images left out because they could not be read (`data.skip_unreadable`), with why.
    pub skipped_images: Vec<vit_data::SkippedImage>,
}

/// The running figures of the epoch in progress, after a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepProgress {
    /// 1-based epoch.
    pub epoch: usize,
    /// Steps of this epoch done (on resume, counting those of the earlier session).
    pub steps_done: usize,
    /// Steps in the epoch.
    pub steps_per_epoch: usize,
    /// Mean training loss of the epoch so far.
    pub loss: f64,
    /// Training top-1 of the epoch so far.
    pub top1: f64,
    /// Training images per second in this session's part of the epoch.
    pub images_per_second: f64,
}

/// Why an epoch ended before its last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochEnd {
    /// Interrupted (Ctrl-C, a stop request): a checkpoint is being saved.
    Interrupted,
    /// The loss stopped being finite: training fails.
    Diverged,
}

/// Receives the events of a training run. Every method does nothing by default.
pub trait TrainObserver {
    /// Data loaded and model built, before the first step.
    fn run_started(&mut self, _run: &RunStarted) {}
    /// An epoch begins (`steps_done` of its steps were done in an earlier session).
    fn epoch_started(&mut self, _epoch: usize, _epochs: usize, _steps_per_epoch: usize, _steps_done: usize) {}
    /// A training step finished.
    fn step_finished(&mut self, _progress: &StepProgress) {}
    /// An epoch ends early.
    fn epoch_stopped(&mut self, _why: EpochEnd) {}
    /// The training steps of an epoch are done; validation begins.
    fn epoch_trained(&mut self) {}
    /// Evaluation of `split` (`validation` or `test`) begins: `images` to classify.
    fn evaluation_started(&mut self, _split: &str, _images: usize) {}
    /// Images of the evaluation in progress done so far.
    fn evaluation_progress(&mut self, _images_done: usize) {}
    /// The evaluation in progress is done.
    fn evaluation_finished(&mut self) {}
    /// An epoch is validated and its line written to `metrics.jsonl`; `history` holds every
    /// epoch's record so far, this one last.
    fn epoch_finished(&mut self, _history: &[EpochRecord], _run_dir: &Path) {}
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl TrainObserver for Silent {}
