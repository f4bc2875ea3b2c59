//! One training step: the compute-dtype cast, forward, loss, the NaN guard, the backward pass
//! with loss scaling, gradient clipping and the optimizer update.

use candle_core::{DType, Tensor, Var};
use vit_model::Vit;

use crate::TrainError;
use crate::distributed::Collective;
use crate::loss_scale::LossScaler;
use crate::metrics::{SUMMED_COUNTS, Tally, cross_entropy, mixed_cross_entropy};
use crate::optim::{AdamW, global_grad_norm};

/// What one step did.
pub(crate) enum StepOutcome {
    /// The step ran (or, for an `f16` overflow, was skipped by the loss scaler).
    Taken {
        /// The global batch's mean loss.
        loss: f32,
        /// The global batch's counts (images, top-1 and top-5 hits, non-finite rows).
        counts: Tally,
        /// Some rank was asked to stop (a signal, a step limit): all stop after this step.
        stop: bool,
        /// The loss scaler skipped the update.
        skipped: bool,
    },
    /// The loss was NaN or infinite: nothing was updated.
    NonFiniteLoss(f32),
    /// The loss was finite but the gradients were not (and no loss scaler was there to skip
    /// the step): nothing was updated.
    NonFiniteGradient(f64),
}

/// This rank's part of a step: with [`SingleProcess`](crate::distributed::SingleProcess), the
/// whole batch.
pub(crate) struct ShardStep<'a> {
    pub comm: &'a mut dyn Collective,
    /// This shard's share of the global batch (its rows / the batch's rows).
    pub weight: f64,
    /// This shard's labels.
    pub labels: &'a [u32],
    /// This rank was asked to stop.
    pub stop: bool,
}

/// What a step trains toward: the labels and, for a mixed batch, the partners' labels and the
/// share `lam` of each row's own.
pub(crate) struct Targets {
    pub labels: Tensor,
    pub mixed: Option<(Tensor, f64)>,
}

impl Targets {
    /// The targets of `batch`, whose `labels` are already on the device (the partners' labels
    /// are put beside them).
    pub fn of(batch: &vit_data::Batch, labels: Tensor) -> Result<Self, TrainError> {
        let mixed = match &batch.mix {
            Some(mix) => Some((Tensor::new(mix.partner_labels.as_slice(), labels.device())?, f64::from(mix.lam))),
            None => None,
        };
        Ok(Self { labels, mixed })
    }

    /// Rows `first..first + len`.
    pub fn narrow(&self, first: usize, len: usize) -> Result<Self, TrainError> {
        let mixed = match &self.mixed {
            Some((partner, lam)) => Some((partner.narrow(0, first, len)?, *lam)),
            None => None,
        };
        Ok(Self { labels: self.labels.narrow(0, first, len)?, mixed })
    }

    fn loss(&self, logits: &Tensor, smoothing: f64) -> candle_core::Result<Tensor> {
        match &self.mixed {
            Some((partner, lam)) => mixed_cross_entropy(logits, &self.labels, partner, *lam, smoothing),
            None => cross_entropy(logits, &self.labels, smoothing),
        }
    }
}

/// The fixed settings of a run's steps.
pub(crate) struct Stepper {
    /// Every variable, in name order: the gradient norm sums them in this order, so that it
    /// rounds the same in every run (and a resumed run ends where an uninterrupted one does).
    pub vars: Vec<Var>,
    pub compute_dtype: DType,
    pub label_smoothing: f64,
    pub clip_grad_norm: Option<f64>,
}

impl Stepper {
    /// One step of `model` on `images` (NHWC, this rank's rows of the global batch) toward
    /// `targets` at learning rate `lr`, the gradients, loss and counts summed across the
    /// shard's ranks before the update.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        model: &Vit,
        optimizer: &mut AdamW,
        scaler: &mut LossScaler,
        images: &Tensor,
        targets: &Targets,
        lr: f64,
        shard: ShardStep<'_>,
    ) -> Result<StepOutcome, TrainError> {
        let compute_model;
        let net = if self.compute_dtype == DType::F32 {
            model
        } else {
            compute_model = model.for_compute(self.compute_dtype)?;
            &compute_model
        };
        let logits = net.forward(images, true)?;
        let loss = targets.loss(&logits, self.label_smoothing)?;
        let loss_value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if shard.comm.is_single_process() && !loss_value.is_finite() {
            // Alone, no rank waits for this one's sums: stop before the backward pass.
            return Ok(StepOutcome::NonFiniteLoss(loss_value));
        }
        let loss_scale = scaler.scale;
        let mut grads = if loss_scale == 1.0 { loss.backward()? } else { (&loss * loss_scale)?.backward()? };
        let logits_rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        // The ranks agree on everything below from here on: the loss, the gradients, the norm,
        // the skip decision, the update.
        let (loss_value, counts, stop) = self.reduce(&mut grads, loss_value, &logits_rows, shard)?;
        if !loss_value.is_finite() {
            return Ok(StepOutcome::NonFiniteLoss(loss_value));
        }
        // Always measured: a finite loss can still have infinite or NaN gradients, and one
        // step with them (an infinite norm times a clip factor of 0 is NaN) poisons every weight.
        let norm = global_grad_norm(&grads, &self.vars)? / loss_scale;
        if !norm.is_finite() && !scaler.is_enabled() {
            return Ok(StepOutcome::NonFiniteGradient(norm));
        }
        let clip = match self.clip_grad_norm {
            Some(max) if norm > max => max / norm,
            _ => 1.0,
        };
        let skipped = !scaler.update(norm * loss_scale);
        if !skipped {
            optimizer.step(&grads, lr, clip / loss_scale)?;
        }
        Ok(StepOutcome::Taken { loss: loss_value, counts, stop, skipped })
    }

    /// Sums the shard-weighted gradients, loss and counts across ranks in one fused buffer and
    /// puts the summed gradients back in `grads`. Returns the global batch's loss and counts,
    /// and whether any rank was asked to stop. A single process sums nothing.
    fn reduce(
        &self,
        grads: &mut candle_core::backprop::GradStore,
        loss: f32,
        logits: &[Vec<f32>],
        shard: ShardStep<'_>,
    ) -> Result<(f32, Tally, bool), TrainError> {
        let weight = shard.weight;
        let mut tally = Tally::new(logits.first().map_or(0, Vec::len));
        tally.add(logits, shard.labels, 0.0);
        if shard.comm.is_single_process() {
            tally.loss_sum = f64::from(loss) * tally.count as f64;
            return Ok((loss, tally, shard.stop));
        }
        tally.loss_sum = f64::from(loss) * weight;
        let mut parts = Vec::with_capacity(self.vars.len() + 1);
        let mut present = Vec::with_capacity(self.vars.len());
        for var in &self.vars {
            // A variable without a gradient (frozen, or outside this step's graph) is left
            // out on every rank alike: the graph is the same on all of them.
            match grads.get(var.as_tensor()) {
                Some(g) => {
                    present.push(true);
                    parts.push((g.to_dtype(DType::F32)?.flatten_all()? * weight)?);
                }
                None => present.push(false),
            }
        }
        // The counts in the layout every sum across ranks uses, the loss sum standing for this
        // shard's share of the global mean, then the stop flag.
        let mut tail = tally.counts_for_sum().to_vec();
        tail.push(f32::from(u8::from(shard.stop)));
        let device = self.vars.first().map_or(candle_core::Device::Cpu, |v| v.device().clone());
        parts.push(Tensor::new(tail.as_slice(), &device)?);
        // One buffer on the gradients' device: NCCL sums it there; other backends copy it out.
        let summed = shard.comm.all_reduce_sum_tensor(&Tensor::cat(&parts, 0)?)?;
        let mut at = 0;
        for (var, present) in self.vars.iter().zip(present) {
            if !present {
                continue;
            }
            let t = var.as_tensor();
            let n = t.elem_count();
            grads.insert(t, summed.narrow(0, at, n)?.reshape(t.shape())?.to_dtype(t.dtype())?);
            at += n;
        }
        let rest = summed.narrow(0, at, tail.len())?.to_vec1::<f32>()?;
        let mut counts = Tally::from_sum(&rest[..SUMMED_COUNTS], 0);
        // Each shard added its share of the global batch's mean loss.
        let loss = counts.loss_sum as f32;
        counts.loss_sum = f64::from(loss) * counts.count as f64;
        Ok((loss, counts, rest[SUMMED_COUNTS] > 0.0))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use vit_model::{HeadKind, VitConfig};

    use super::*;
    use crate::distributed::SingleProcess;
    use crate::optim::{AdamWConfig, params_of};

    #[test]
    fn a_finite_loss_whose_gradient_norm_overflows_changes_no_weight() {
        let cfg = VitConfig {
            image_size: [8, 8],
            channels: 1,
            patch_size: 4,
            projection_dim: 8,
            num_heads: 2,
            key_dim: 4,
            num_layers: 1,
            mlp_units: vec![8],
            head: HeadKind::MeanPool,
            dropout: 0.0,
            num_classes: 3,
            ..VitConfig::mnist()
        };
        let (model, store) = Vit::init(&cfg, 1, &Device::Cpu).unwrap();
        let params = params_of(&model, &store).unwrap();
        // A classifier 1e30 times too large: the logits (about 1e30) and the loss stay finite,
        // but the squares of the gradients behind it overflow.
        let classifier = store.vars()["head.classifier.weight"].clone();
        classifier.set(&(classifier.as_tensor() * 1e30).unwrap()).unwrap();
        let values = || -> Vec<Vec<u32>> {
            store
                .vars()
                .values()
                .map(|v| v.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect())
                .collect()
        };
        let before = values();
        let mut optimizer = AdamW::new(&params, AdamWConfig::default()).unwrap();
        let stepper = Stepper {
            vars: store.vars().into_values().collect(),
            compute_dtype: DType::F32,
            label_smoothing: 0.0,
            clip_grad_norm: Some(1.0),
        };
        let images = vit_rng::tensors::uniform(0f32, 1., (4, 8, 8, 1), 1, &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 1, 2, 0], &Device::Cpu).unwrap();
        let targets = Targets { labels, mixed: None };
        let shard = ShardStep { comm: &mut SingleProcess, weight: 1.0, labels: &[0, 1, 2, 0], stop: false };
        let outcome =
            stepper.step(&model, &mut optimizer, &mut LossScaler::disabled(), &images, &targets, 1e-3, shard).unwrap();
        match outcome {
            StepOutcome::NonFiniteGradient(norm) => assert!(!norm.is_finite()),
            StepOutcome::Taken { loss, .. } => panic!("the step was taken (loss {loss})"),
            StepOutcome::NonFiniteLoss(loss) => panic!("the loss was not finite ({loss}): the test needs a finite one"),
        }
        assert_eq!(optimizer.step_count(), 0);
        assert!(values() == before, "a weight changed");
    }
}
