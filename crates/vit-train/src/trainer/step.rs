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
    NonFiniteLoss(f32),
    /// The loss was finite but the gradients were not (and no loss scaler was there to skip
    /// the step): nothing was updated.
    NonFiniteGradient(f64),
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
            return Ok(StepOutcome::NonFiniteLoss(loss_value));
        }
        let loss_scale = scaler.scale;
        let grads = if loss_scale == 1.0 { loss.backward()? } else { (&loss * loss_scale)?.backward()? };
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
        let logits = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        Ok(StepOutcome::Taken { loss: loss_value, logits, skipped })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use vit_model::{HeadKind, VitConfig};

    use super::*;
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
        let images = Tensor::rand(0f32, 1., (4, 8, 8, 1), &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 1, 2, 0], &Device::Cpu).unwrap();
        let outcome =
            stepper.step(&model, &mut optimizer, &mut LossScaler::disabled(), &images, &labels, 1e-3).unwrap();
        match outcome {
            StepOutcome::NonFiniteGradient(norm) => assert!(!norm.is_finite()),
            StepOutcome::Taken { loss, .. } => panic!("the step was taken (loss {loss})"),
            StepOutcome::NonFiniteLoss(loss) => panic!("the loss was not finite ({loss}): the test needs a finite one"),
        }
        assert_eq!(optimizer.step_count(), 0);
        assert!(values() == before, "a weight changed");
    }
}
