//! # vit-train
//!
//! Train and evaluate the Vision Transformers of [`vit_model`] on the data of [`vit_data`]:
//! recipes, the training loop with exact resume, AdamW over the parameters the model lists,
//! the learning-rate schedule, metrics and evaluation over data sets (classifying images
//! without a trainer is `vit_model::inference`). No printing or terminal
//! code: a run reports its progress to a [`TrainObserver`] (the `vit` command of `vit-cli`
//! draws progress bars and plots from it).
//!
//! - [`recipe`]: TOML recipes (built in: `default`, `mnist`, `fashion-mnist`, `cifar10`,
//!   `keras-cifar100`, `digits-0-4`, `digits-5-9`).
//! - [`trainer`]: the loop; best/last checkpoints written atomically, exact resume (weights,
//!   optimizer, schedule, data order, augmentation and dropout streams), a NaN guard,
//!   `metrics.jsonl`, `summary.json`.
//! - [`optim`]: AdamW with decoupled weight decay on the parameters the model says decay
//!   (`Vit::parameters`); [`schedule`]: warm-up + cosine; [`loss_scale`]: `f16` loss scaling.
//! - [`metrics`], [`evaluate()`]: loss with label smoothing, top-k, the confusion matrix;
//!   inference over a data set.
//! - [`distributed`]: data-parallel training ([`train_with`] over a
//!   [`distributed::Collective`]): MPI between processes (feature `mpi`), NCCL between GPUs
//!   (feature `nccl`).
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::AtomicBool;
//! use vit_train::{Recipe, Silent, TrainOptions, TrainOutcome, train};
//!
//! // The built-in default recipe (the embedded MNIST subset), cut to a few steps.
//! let mut recipe = Recipe::load("default")?;
//! recipe.train.epochs = 1;
//! recipe.data.limit_train = Some(300);
//! recipe.model.insert("num_layers".into(), toml::Value::Integer(1));
//! let run_dir = std::env::temp_dir().join(format!("vit-train-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&run_dir);
//! let opts = TrainOptions {
//!     recipe,
//!     recipe_origin: "default".into(),
//!     data_dir: None,
//!     run_dir: run_dir.clone(),
//!     device: candle_core::Device::Cpu,
//!     resume: false,
//!     stop: Arc::new(AtomicBool::new(false)),
//!     stop_after_steps: None,
//!     step_metrics_every: None,
//! };
//! let TrainOutcome::Finished(report) = train(opts, &mut Silent)? else { unreachable!() };
//! assert_eq!(report.test_images, 10_000);
//! assert!(run_dir.join("best.safetensors").is_file());
//! # std::fs::remove_dir_all(&run_dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod distributed;
mod error;
pub mod evaluate;
pub mod loss_scale;
pub mod metrics;
pub mod optim;
pub mod recipe;
pub mod schedule;
pub mod trainer;

pub use error::TrainError;
pub use evaluate::{PrecisionComparison, check_fits, evaluate, evaluate_against, evaluate_observed};
pub use loss_scale::LossScaler;
pub use recipe::{Precision, Recipe};
pub use trainer::{
    EpochEnd, EpochRecord, RunStarted, Silent, StepProgress, StepRecord, TrainObserver, TrainOptions, TrainOutcome,
    TrainReport, read_steps, train, train_with,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
