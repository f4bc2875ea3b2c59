use std::path::PathBuf;

use vit_data::DataError;

/// Why training, evaluation or prediction stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading the data failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The model or a checkpoint failed.
    #[error(transparent)]
    Model(#[from] vit_model::ModelError),
    /// candle failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A recipe is invalid.
    #[error("{path}: invalid recipe: {message}")]
    Recipe {
        /// The recipe file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        message: String,
    },
    /// The data does not fit the model.
    #[error("data set `{dataset}` does not fit the model: {message}")]
    Mismatch {
        /// The data set.
        dataset: String,
        /// What differs.
        message: String,
    },
    /// The loss became NaN or infinite; nothing was saved from that step.
    #[error(
        "loss is {loss} at epoch {epoch}, step {step} (learning rate {lr:.3e}): training stopped; the last good \
         checkpoint is {last_good} (try a lower learning rate or gradient clipping)"
    )]
    NonFiniteLoss {
        /// The loss value.
        loss: f32,
        /// 1-based epoch.
        epoch: usize,
        /// Global step.
        step: u64,
        /// Learning rate at that step.
        lr: f64,
        /// The last checkpoint written, if any.
        last_good: String,
    },
    /// A model and its parameter store disagree (a parameter the store lacks, or a variable
    /// the model does not list): training would leave something untrained.
    #[error("the model and its parameters disagree: {message}")]
    Inconsistent {
        /// What differs.
        message: String,
    },
    /// The loss was finite but a gradient was NaN or infinite; nothing was saved from that step.
    #[error(
        "gradient norm is {norm} at epoch {epoch}, step {step} (learning rate {lr:.3e}) although the loss is finite: \
         training stopped before the weights changed; the last good checkpoint is {last_good} (try a lower \
         learning rate or gradient clipping)"
    )]
    NonFiniteGradient {
        /// The global gradient norm.
        norm: f64,
        /// 1-based epoch.
        epoch: usize,
        /// Global step.
        step: u64,
        /// Learning rate at that step.
        lr: f64,
        /// The last checkpoint written, if any.
        last_good: String,
    },
    /// The model gave NaN or infinite logits on evaluation images: its weights cannot be right.
    #[error(
        "{split}: {count} of {images} images got NaN or infinite logits at epoch {epoch}: the weights are not \
         finite; nothing was saved from this epoch"
    )]
    NonFiniteLogits {
        /// The split evaluated.
        split: String,
        /// Images with a non-finite logit.
        count: usize,
        /// Images evaluated.
        images: usize,
        /// 1-based epoch.
        epoch: usize,
    },
    /// A resume found inconsistent files.
    /// Data-parallel training failed: a collective, or ranks that disagree.
    #[error("distributed training: {message}")]
    Distributed {
        /// What went wrong, naming the ranks involved.
        message: String,
    },
    #[error("cannot resume from {path}: {message}")]
    Resume {
        /// The run directory or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        Self::Io { path: path.into(), message: e.to_string() }
    }
}
