//! One epoch of steps: batches in the epoch's order, each step through the `Collective`
//! (the whole batch for a single process, this rank's rows in data-parallel training), the
//! running figures, the step log, and a stop asked for part-way.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::time::Instant;

use vit_data::{Batch, Loader, shuffled};
use vit_rng::BatchShard;

use super::observer::{EpochEnd, StepProgress, TrainObserver};
use super::report::TrainOutcome;
use super::session::Session;
use super::state::EpochTally;
use super::step::{ShardStep, StepOutcome, Targets};
use super::step_log::StepRecord;
use crate::TrainError;
use crate::distributed::{shard_rows, weights_checksum};
use crate::metrics::Tally;

/// Steps between the checks that every rank holds the same weights.
const CHECK_EVERY: u64 = 100;

/// The training figures of an epoch so far.
pub(super) struct EpochProgress {
    pub tally: Tally,
    /// The learning rate of the last step.
    pub lr: f64,
    /// Seconds spent in steps, and the images they took, in this session.
    pub seconds: f64,
    pub images: usize,
}

/// How an epoch's steps ended.
pub(super) enum EpochSteps {
    /// Every batch was taken.
    Done(EpochProgress),
    /// A stop was asked for part-way; the run was saved.
    Interrupted(TrainOutcome),
}

impl Session<'_> {
    /// The steps of the next epoch, from where the state says it stands.
    pub fn train_epoch(&mut self, observer: &mut dyn TrainObserver) -> Result<EpochSteps, TrainError> {
        let epoch = self.state.epochs_done + 1;
        let t = &self.recipe.train;
        let order = shuffled(self.data.train.len(), t.seed, epoch as u64);
        let augment = Some((self.recipe.augment.clone(), t.seed, epoch as u64));
        let (train, pipeline) = (self.data.train.clone(), self.data.pipeline.clone());
        let loader = Loader::spawn(train, pipeline, order, t.batch_size, self.state.batch_in_epoch, augment)?;
        let mut progress = EpochProgress {
            tally: self.state.partial.resume(self.cfg.num_classes),
            lr: self.schedule.lr(self.state.step),
            seconds: 0.0,
            images: 0,
        };
        observer.epoch_started(epoch, t.epochs, self.steps_per_epoch, self.state.batch_in_epoch);
        for batch in loader {
            let stop = self.train_step(&batch?, epoch, &mut progress, observer)?;
            if stop && self.state.batch_in_epoch < self.steps_per_epoch {
                observer.epoch_stopped(EpochEnd::Interrupted);
                self.state.partial = EpochTally::of(&progress.tally);
                self.state.rng = self.model.rng().state().into();
                let checkpoint = self.save_progress()?;
                return Ok(EpochSteps::Interrupted(TrainOutcome::Interrupted { checkpoint, step: self.state.step }));
            }
        }
        observer.epoch_trained();
        Ok(EpochSteps::Done(progress))
    }

    /// One optimizer step on `batch`, its figures added to `progress`; whether a stop was
    /// asked for (by any rank).
    fn train_step(
        &mut self,
        batch: &Batch,
        epoch: usize,
        progress: &mut EpochProgress,
        observer: &mut dyn TrainObserver,
    ) -> Result<bool, TrainError> {
        let step_start = Instant::now();
        let lr = self.schedule.lr(self.state.step);
        progress.lr = lr;
        let (images, labels) = batch.to_tensors(&self.device)?;
        let targets = Targets::of(batch, labels)?;
        // A mixed image is counted as right when the model picks the label with the larger
        // share (timm reports no training accuracy under mixup; this one is labelled so).
        let tally_labels: Cow<[u32]> = match &batch.mix {
            Some(mix) => mix.dominant_labels(&batch.labels).into(),
            None => batch.labels.as_slice().into(),
        };
        let asked_to_stop = self.stop.load(Ordering::SeqCst) || self.stop_after_steps == Some(self.state.step + 1);
        // This rank's rows of the global batch (all of them alone); dropout keyed by the
        // global row, so that a sample's dropout is the same whatever the number of ranks.
        let (first, len) = shard_rows(batch.len(), self.comm.rank(), self.comm.world_size());
        self.model.rng().set_shard(Some(BatchShard { first, len, global: batch.len() }));
        let shard = ShardStep {
            comm: &mut *self.comm,
            weight: len as f64 / batch.len() as f64,
            labels: &tally_labels[first..first + len],
            stop: asked_to_stop,
        };
        let (images, targets) = (images.narrow(0, first, len)?, targets.narrow(first, len)?);
        let outcome = self.stepper.step(
            &self.model,
            &mut self.optimizer,
            &mut self.state.loss_scaler,
            &images,
            &targets,
            lr,
            shard,
        );
        self.model.rng().set_shard(None);
        let (loss, counts, stop, skipped) = match outcome? {
            StepOutcome::Taken { loss, counts, stop, skipped } => (loss, counts, stop, skipped),
            StepOutcome::NonFiniteLoss(loss) => {
                observer.epoch_stopped(EpochEnd::Diverged);
                let (step, last_good) = (self.state.step, self.last_good());
                return Err(TrainError::NonFiniteLoss { loss, epoch, step, lr, last_good });
            }
            StepOutcome::NonFiniteGradient(norm) => {
                observer.epoch_stopped(EpochEnd::Diverged);
                let (step, last_good) = (self.state.step, self.last_good());
                return Err(TrainError::NonFiniteGradient { norm, epoch, step, lr, last_good });
            }
        };
        self.state.skipped_steps += u64::from(skipped);
        if let Some(ema) = self.ema.as_mut().filter(|_| !skipped) {
            // One update per optimizer step taken, numbered as the optimizer counts them.
            ema.update(&self.vars, self.optimizer.step_count().saturating_sub(1))?;
        }
        progress.tally.add_counts(counts.count, counts.top1, counts.top5, counts.non_finite, f64::from(loss));
        let seconds = step_start.elapsed().as_secs_f64();
        self.record_step(batch.len(), seconds, loss, epoch, progress, observer)?;
        if !self.comm.is_single_process() && self.state.step.is_multiple_of(CHECK_EVERY) {
            self.check_ranks_agree()?;
        }
        Ok(stop)
    }

    /// Counts a step of `images` that took `seconds`, in the state, the step log and the
    /// observer.
    fn record_step(
        &mut self,
        images: usize,
        seconds: f64,
        loss: f32,
        epoch: usize,
        progress: &mut EpochProgress,
        observer: &mut dyn TrainObserver,
    ) -> Result<(), TrainError> {
        self.state.step += 1;
        self.state.batch_in_epoch += 1;
        progress.seconds += seconds;
        progress.images += images;
        self.state.train_seconds += seconds;
        self.state.images_trained += images as u64;
        if let Some(log) = self.step_log.as_mut() {
            log.record(&StepRecord {
                epoch,
                step: self.state.step,
                loss: f64::from(loss),
                epoch_loss: progress.tally.loss(),
                epoch_top1: progress.tally.top1(),
                learning_rate: progress.lr,
                images_per_second: images as f64 / seconds.max(1e-9),
                train_seconds: self.state.train_seconds,
            })?;
        }
        observer.step_finished(&StepProgress {
            epoch,
            steps_done: self.state.batch_in_epoch,
            steps_per_epoch: self.steps_per_epoch,
            loss: progress.tally.loss(),
            top1: progress.tally.top1(),
            images_per_second: progress.images as f64 / progress.seconds.max(1e-9),
        });
        Ok(())
    }

    /// The last checkpoint a diverged run can go back to, for its error.
    fn last_good(&self) -> String {
        let last = self.run.last_path();
        if last.exists() { last.display().to_string() } else { "none (no checkpoint was written yet)".into() }
    }

    /// Errs, naming the ranks, unless every rank's weights have the same checksum: a silent
    /// divergence between ranks (a bit flip, a missed update) stops the run.
    pub fn check_ranks_agree(&mut self) -> Result<(), TrainError> {
        let mut values = Vec::new();
        for var in &self.stepper.vars {
            values.extend(var.as_tensor().to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        }
        let sums = self.comm.all_gather_u64(weights_checksum(values))?;
        let odd: Vec<usize> = (0..sums.len()).filter(|&r| sums[r] != sums[0]).collect();
        if odd.is_empty() {
            return Ok(());
        }
        let step = self.state.step;
        Err(TrainError::Distributed {
            message: format!("after step {step} the weights of ranks {odd:?} differ from rank 0's: the ranks diverged"),
        })
    }
}
