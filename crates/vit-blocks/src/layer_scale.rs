//! Layer scale as a module.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::ModuleTree;
use crate::{NamedParameter, WeightMap};

/// A learned per-channel scale on a residual branch (CaiT, DeiT III), initialised to a small
/// constant.
#[derive(Debug, Clone)]
pub struct LayerScale {
    gamma: Tensor,
    prefix: String,
    name: String,
}

impl LayerScale {
    /// A scale over `dim` channels, initialised to `init`, stored as the parameter `vb/name`
    /// (the block's `layer_scale1` and `layer_scale2`).
    pub fn new(dim: usize, init: f64, name: &str, vb: VarBuilder) -> Result<Self> {
        let gamma = vb.get_with_hints(dim, name, Init::Const(init))?;
        Ok(Self { gamma, prefix: vb.prefix(), name: name.to_string() })
    }

    /// Scales `branch` channel by channel.
    ///
    /// # Shapes
    /// - `branch`: `[.., dim]`; returns the same shape.
    pub fn forward(&self, branch: &Tensor) -> Result<Tensor> {
        branch.broadcast_mul(&self.gamma)
    }
}

impl ModuleTree for LayerScale {
    /// The same layer with `f` applied to its parameter.
    fn map_weights(&self, f: &dyn WeightMap) -> Result<Self> {
        Ok(Self { gamma: f.tensor(&self.gamma)?, ..self.clone() })
    }

    /// Its parameter (no weight decay).
    fn parameters(&self) -> Vec<NamedParameter> {
        vec![NamedParameter::new(&self.prefix, &self.name, &self.gamma, false)]
    }
}
