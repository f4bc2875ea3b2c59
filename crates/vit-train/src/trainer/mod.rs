//! The training loop: epochs of steps, validation, best/last checkpoints, exact resume, a NaN
//! guard and `metrics.jsonl`. [`train_with`] reads as the run goes; each part is a file:
//!
//! - `session.rs`: the run being trained, and how it starts (fresh, from other weights, or
//!   resumed from the run directory); `data.rs`: its data and normaliser;
//! - `epoch.rs`: one epoch of steps, each through the [`Collective`] (`step.rs`: one step);
//! - `checkpoints.rs`: the end of an epoch: validation, the record, best and last checkpoints;
//! - `final_test.rs`: the chosen model on the test set, `summary.json`;
//! - `evaluation.rs`: validation and test, shared across ranks;
//! - beside them: the run directory and its files (`run_dir.rs`), the resumable state
//!   (`state.rs`), the moving average (`ema.rs`), what a run records (`report.rs`,
//!   `step_log.rs`) and the events it reports ([`TrainObserver`]).

mod checkpoints;
mod data;
mod ema;
mod epoch;
mod evaluation;
mod final_test;
mod observer;
mod options;
mod report;
mod run_dir;
mod session;
mod state;
mod step;
mod step_log;

pub use data::load_recipe_splits;
pub use observer::{EpochEnd, RunStarted, Silent, StepProgress, TrainObserver};
pub use options::TrainOptions;
pub use report::{EpochRecord, TrainOutcome, TrainReport};
pub use run_dir::{RunFiles, read_run};
pub use step_log::{StepRecord, read_steps};

use crate::TrainError;
use crate::distributed::{Collective, SingleProcess};
use epoch::EpochSteps;
use session::Session;

/// Runs (or resumes) training as the options say, telling `observer` how it goes.
pub fn train(opts: TrainOptions, observer: &mut dyn TrainObserver) -> Result<TrainOutcome, TrainError> {
    train_with(opts, observer, &mut SingleProcess)
}

/// [`train`] as one rank of data-parallel training over `comm` (see [`crate::distributed`]).
/// Every rank runs this with the same options; rank 0 writes the run directory and tells its
/// observer, and every rank returns the same outcome. [`SingleProcess`] is [`train`].
pub fn train_with(
    opts: TrainOptions,
    observer: &mut dyn TrainObserver,
    comm: &mut dyn Collective,
) -> Result<TrainOutcome, TrainError> {
    let mut run = Session::prepare(&opts, comm, observer)?;
    while run.state.epochs_done < run.recipe.train.epochs {
        match run.train_epoch(observer)? {
            EpochSteps::Done(trained) => run.finish_epoch(trained, observer)?,
            EpochSteps::Interrupted(outcome) => return Ok(outcome),
        }
    }
    run.final_test(observer)
}
