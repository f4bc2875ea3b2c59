//! Dynamic loss scaling for `f16` mixed precision.

use serde::{Deserialize, Serialize};

/// Dynamic loss scaling for `f16` training, as `torch.amp.GradScaler` does it: the loss is
/// multiplied by `scale` before the backward pass so that small gradients survive `f16`'s
/// narrow exponent; a step whose gradients overflow is skipped and halves the scale, and
/// every `growth_interval` good steps in a row double it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// The current factor.
    pub scale: f64,
    /// Good steps since the last change of scale.
    pub good_steps: u64,
    /// Good steps in a row before the scale doubles.
    pub growth_interval: u64,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self { scale: 65536.0, good_steps: 0, growth_interval: 2000 }
    }
}

impl LossScaler {
    /// A scaler that never scales (`f32` and `bf16`, whose exponent is as wide as `f32`'s).
    pub fn disabled() -> Self {
        Self { scale: 1.0, good_steps: 0, growth_interval: u64::MAX }
    }

    /// Whether it scales at all.
    pub fn is_enabled(&self) -> bool {
        self.growth_interval != u64::MAX
    }

    /// Records a step whose scaled gradients had global norm `scaled_norm`; returns whether the
    /// optimizer may take the step (false: the gradients overflowed, skip it).
    pub fn update(&mut self, scaled_norm: f64) -> bool {
        if !self.is_enabled() {
            return true;
        }
        if !scaled_norm.is_finite() {
            self.scale = (self.scale * 0.5).max(1.0);
            self.good_steps = 0;
            return false;
        }
        self.good_steps += 1;
        if self.good_steps >= self.growth_interval {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
        true
    }
}
