//! One training step: the compute-dtype cast, forward, loss, the NaN guard, the backward pass
//! with loss scaling, gradient clipping and the optimizer update.

use candle_core::{DType, Tensor, Var};
use vit_model::Vit;

use crate::TrainError;
use crate::loss_scale::LossScaler;
use crate::metrics::cross_entropy;
use crate::optim::{AdamW, global_grad_norm};

/// What one step did.
pub(crate) enum StepOutcome {
    /// The step ran (or, for an `f16` overflow, was skipped by the loss scaler).
    Taken {
        /// The batch's mean loss.
        loss: f32,
        /// The logits, one row per image, for the running accuracy.
        logits: Vec<Vec<f32>>,
        /// The loss scaler skipped the update.
        skipped: bool,
    },
    /// The loss was NaN or infinite: nothing was updated.
    NonFinite(f32),
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
    /// One step of `model` on `images` (NHWC) and `labels` at learning rate `lr`.
    pub fn step(
        &self,
        model: &Vit,
        optimizer: &mut AdamW,
        scaler: &mut LossScaler,
        images: &Tensor,
        labels: &Tensor,
        lr: f64,
    ) -> Result<StepOutcome, TrainError> {
        let compute_model;
        let net = if self.compute_dtype == DType::F32 {
            model
        } else {
            compute_model = model.with_compute_dtype(self.compute_dtype)?;
            &compute_model
        };
        let logits = net.forward(images, true)?;
        let loss = cross_entropy(&logits, labels, self.label_smoothing)?;
        let loss_value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if !loss_value.is_finite() {
            return Ok(StepOutcome::NonFinite(loss_value));
        }
        let loss_scale = scaler.scale;
        let grads = if loss_scale == 1.0 { loss.backward()? } else { (&loss * loss_scale)?.backward()? };
        let norm = if self.clip_grad_norm.is_some() || scaler.is_enabled() {
            global_grad_norm(&grads, &self.vars)? / loss_scale
        } else {
            0.0
        };
        let clip = match self.clip_grad_norm {
            Some(max) if norm > max => max / norm,
            _ => 1.0,
        };
        let skipped = !scaler.update(norm * loss_scale);
        if !skipped {
            optimizer.step(&grads, lr, clip / loss_scale)?;
        }
        let logits = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        Ok(StepOutcome::Taken { loss: loss_value, logits, skipped })
    }
}
