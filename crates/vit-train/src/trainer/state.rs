//! Where a run stands: everything besides the weights and the optimizer that an exact resume
//! needs, saved in the last checkpoint's metadata.

use serde::{Deserialize, Serialize};
use vit_blocks::RngState;

use crate::LossScaler;
use crate::metrics::Tally;

/// The resumable state of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TrainState {
    pub epochs_done: usize,
    pub batch_in_epoch: usize,
    pub step: u64,
    /// The dropout stream of the model.
    pub rng: SavedRng,
    pub best_val_top1: f64,
    pub best_epoch: usize,
    /// The running training figures of an epoch interrupted part-way.
    pub partial: EpochTally,
    pub elapsed_seconds: f64,
    pub train_seconds: f64,
    pub images_trained: u64,
    /// `f16` loss scaling (disabled otherwise); runs saved before it existed had none.
    #[serde(default = "LossScaler::disabled")]
    pub loss_scaler: LossScaler,
    /// Steps skipped because `f16` gradients overflowed: the optimizer took `step - skipped`.
    #[serde(default)]
    pub skipped_steps: u64,
}

impl TrainState {
    /// The state of a run that has not taken a step.
    pub fn fresh(rng: RngState, loss_scaler: LossScaler) -> Self {
        Self {
            epochs_done: 0,
            batch_in_epoch: 0,
            step: 0,
            rng: rng.into(),
            // Below any accuracy, and unlike -inf it survives JSON (a Ctrl-C in epoch 1).
            best_val_top1: -1.0,
            best_epoch: 0,
            partial: EpochTally::default(),
            elapsed_seconds: 0.0,
            train_seconds: 0.0,
            images_trained: 0,
            loss_scaler,
            skipped_steps: 0,
        }
    }
}

/// A saved [`RngState`]; earlier versions wrote it as a `[seed, counter]` pair, which still
/// reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RngForm")]
pub(crate) struct SavedRng {
    pub seed: u64,
    pub counter: u64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RngForm {
    Named { seed: u64, counter: u64 },
    Pair(u64, u64),
}

impl From<RngForm> for SavedRng {
    fn from(form: RngForm) -> Self {
        match form {
            RngForm::Named { seed, counter } | RngForm::Pair(seed, counter) => Self { seed, counter },
        }
    }
}

impl From<RngState> for SavedRng {
    fn from(s: RngState) -> Self {
        Self { seed: s.seed, counter: s.counter }
    }
}

impl From<SavedRng> for RngState {
    fn from(s: SavedRng) -> Self {
        Self { seed: s.seed, counter: s.counter }
    }
}

/// The counts of a [`Tally`] that a part-done epoch carries over (not its confusion matrix);
/// earlier versions wrote them as a `[count, top1, top5, loss_sum]` tuple, which still reads.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(from = "TallyForm")]
pub(crate) struct EpochTally {
    pub count: usize,
    pub top1: usize,
    pub top5: usize,
    pub loss_sum: f64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TallyForm {
    Named { count: usize, top1: usize, top5: usize, loss_sum: f64 },
    Tuple(usize, usize, usize, f64),
}

impl From<TallyForm> for EpochTally {
    fn from(form: TallyForm) -> Self {
        match form {
            TallyForm::Named { count, top1, top5, loss_sum } | TallyForm::Tuple(count, top1, top5, loss_sum) => {
                Self { count, top1, top5, loss_sum }
            }
        }
    }
}

impl EpochTally {
    /// The counts of `tally`.
    pub fn of(tally: &Tally) -> Self {
        Self { count: tally.count, top1: tally.top1, top5: tally.top5, loss_sum: tally.loss_sum }
    }

    /// A tally for `classes` classes that starts from these counts.
    pub fn resume(&self, classes: usize) -> Tally {
        Tally { count: self.count, top1: self.top1, top5: self.top5, loss_sum: self.loss_sum, ..Tally::new(classes) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_back_from_json_are_the_numbers_written() {
        // Found by `cargo xtask faults`: without serde_json's float_roundtrip this epoch's
        // validation loss came back an ulp off after a resume.
        for x in [2.0684897899627686f64, 0.1 + 0.2, 1.0 / 3.0, 5e-324, f64::MAX] {
            let back: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x:e}");
        }
    }

    #[test]
    fn states_written_with_tuples_by_earlier_versions_still_read() {
        let old = r#"{"epochs_done":1,"batch_in_epoch":2,"step":7,"rng":[5,96],"best_val_top1":0.5,"best_epoch":1,
            "partial":[32,20,30,41.5],"elapsed_seconds":3.0,"train_seconds":2.0,"images_trained":224}"#;
        let state: TrainState = serde_json::from_str(old).unwrap();
        assert_eq!(state.rng, SavedRng { seed: 5, counter: 96 });
        assert_eq!(state.partial, EpochTally { count: 32, top1: 20, top5: 30, loss_sum: 41.5 });
        assert_eq!(state.loss_scaler, LossScaler::disabled());
        let again: TrainState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(again, state);
    }
}
