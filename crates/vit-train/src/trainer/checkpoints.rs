//! The end of an epoch: validation (of the weights and of their moving average), the epoch's
//! record, and the checkpoint policy: `best.safetensors` when validation improved, and
//! `last.safetensors`, which resume reads, after every epoch and on a stop.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::Tensor;
use vit_model::Vit;

use super::epoch::EpochProgress;
use super::evaluation::evaluate_finite;
use super::observer::TrainObserver;
use super::report::EpochRecord;
use super::session::Session;
use super::state::EpochTally;
use crate::TrainError;
use crate::metrics::Tally;

impl Session<'_> {
    /// Validates the epoch just trained, records it, and saves what the policy says.
    pub fn finish_epoch(&mut self, trained: EpochProgress, observer: &mut dyn TrainObserver) -> Result<(), TrainError> {
        let epoch = self.state.epochs_done + 1;
        let val = self.validate(&self.model.clone(), "validation", epoch, observer)?;
        // The moving average, as a model of the store's weights with the averaged ones in.
        let ema_weights = self.averaged_weights();
        let ema_val = match &ema_weights {
            Some(weights) if self.data.val.is_some() => {
                let tensors = weights.clone().into_iter().collect();
                let averaged = Vit::from_tensors(&self.cfg, tensors, &self.run.last_path(), &self.device)?.0;
                self.validate(&averaged, "validation (moving average)", epoch, observer)?
            }
            _ => None,
        };
        let mut record = epoch_record(epoch, self.state.step, &trained, val.as_ref());
        record.ema_val_loss = ema_val.as_ref().map(Tally::loss);
        record.ema_val_top1 = ema_val.as_ref().map(Tally::top1);
        record.ema_val_top5 = ema_val.as_ref().map(Tally::top5);
        self.records.push(record);
        self.state.epochs_done = epoch;
        self.state.batch_in_epoch = 0;
        self.state.partial = EpochTally::default();
        let judged = if self.recipe.train.select_by_ema { ema_val.as_ref() } else { val.as_ref() };
        let improved = judged.is_some_and(|val| val.top1() > self.state.best_val_top1);
        if let Some(val) = judged.filter(|_| improved) {
            self.state.best_val_top1 = val.top1();
            self.state.best_epoch = epoch;
        }
        self.state.rng = self.model.rng().state().into();
        // Metrics first: a crash before the checkpoint leaves a line that resume drops.
        if self.root {
            self.run.write_metrics(&self.records)?;
        }
        if improved && self.root {
            match (self.recipe.train.select_by_ema, &ema_weights) {
                (true, Some(weights)) => self.run.save_best_tensors(weights, &self.meta)?,
                _ => self.run.save_best(&self.store, &self.meta)?,
            }
        }
        self.save_progress()?;
        if !self.comm.is_single_process() {
            // Every rank past rank 0's writes (a later read of best.safetensors sees them), and
            // still holding the same weights.
            self.comm.barrier()?;
            self.check_ranks_agree()?;
        }
        observer.epoch_finished(&self.records, self.run.path());
        Ok(())
    }

    /// `model` evaluated on the validation split, if there is one.
    fn validate(
        &mut self,
        model: &Vit,
        split: &str,
        epoch: usize,
        observer: &mut dyn TrainObserver,
    ) -> Result<Option<Tally>, TrainError> {
        let Some(val) = &self.data.val else { return Ok(None) };
        let (pipeline, batch) = (&self.data.pipeline, self.recipe.train.eval_batch_size);
        evaluate_finite(model, val, pipeline, batch, &self.device, (split, epoch), observer, &mut *self.comm).map(Some)
    }

    /// The last checkpoint (rank 0 writes it), with the wall time of this session added to the
    /// time the state records.
    pub fn save_progress(&self) -> Result<PathBuf, TrainError> {
        if !self.root {
            return Ok(self.run.last_path());
        }
        let mut saved = self.state.clone();
        saved.elapsed_seconds += self.started.elapsed().as_secs_f64();
        self.run.save_last(&self.store, &self.optimizer, self.ema.as_ref(), &self.meta, &saved, &self.device)
    }

    /// Every parameter, the trainable ones replaced by their moving average; `None` without one.
    pub fn averaged_weights(&self) -> Option<BTreeMap<String, Tensor>> {
        let ema = self.ema.as_ref()?;
        let mut weights: BTreeMap<String, Tensor> =
            self.store.vars().into_iter().map(|(name, var)| (name, var.as_tensor().clone())).collect();
        for (name, average) in ema.tensors() {
            weights.insert(name.clone(), average.clone());
        }
        Some(weights)
    }
}

/// The record of an epoch: its training figures and validation (the moving average's added by
/// the caller).
fn epoch_record(epoch: usize, step: u64, trained: &EpochProgress, val: Option<&Tally>) -> EpochRecord {
    let train = &trained.tally;
    EpochRecord {
        epoch,
        step,
        train_loss: train.loss(),
        train_top1: train.top1(),
        train_top5: train.top5(),
        val_loss: val.map(Tally::loss),
        val_top1: val.map(Tally::top1),
        val_top5: val.map(Tally::top5),
        ema_val_loss: None,
        ema_val_top1: None,
        ema_val_top5: None,
        learning_rate: trained.lr,
        train_seconds: trained.seconds,
        images_per_second: trained.images as f64 / trained.seconds.max(1e-9),
    }
}
