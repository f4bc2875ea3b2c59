//! LayerNorm that carries gradients.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::ModuleTree;
use crate::{NamedParameter, WeightMap};

/// LayerNorm over the last dimension with a learned scale (`weight`) and shift (`bias`).
///
/// Unlike `candle_nn::LayerNorm`, whose fused path records no backward pass, this one always
/// carries gradients to its input and both parameters (see [`vit_kernels::layer_norm`]).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    prefix: String,
}

impl LayerNorm {
    /// A LayerNorm over `dim` features, parameters `vb/weight` (ones) and `vb/bias` (zeros).
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias, eps, prefix: vb.prefix() })
    }
}

impl ModuleTree for LayerNorm {
    /// The same layer with `f` applied to each parameter.
    fn map_weights(&self, f: &dyn WeightMap) -> Result<Self> {
        Ok(Self { weight: f.tensor(&self.weight)?, bias: f.tensor(&self.bias)?, ..self.clone() })
    }

    /// Its parameters, neither with weight decay.
    fn parameters(&self) -> Vec<NamedParameter> {
        vec![
            NamedParameter::new(&self.prefix, "weight", &self.weight, false),
            NamedParameter::new(&self.prefix, "bias", &self.bias, false),
        ]
    }
}

impl Module for LayerNorm {
    /// # Shapes
    /// - `x`: `[.., dim]`; returns the same shape.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        vit_kernels::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}
