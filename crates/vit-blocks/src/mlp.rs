//! The MLP that carries its own residual connection.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use vit_rng::SharedRng;

use crate::ModuleTree;
use crate::{Dropout, Linear, NamedParameter, WeightMap};

/// Shape and regularisation of an [`Mlp`].
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    /// Width of the input (and of the residual stream).
    pub dim: usize,
    /// Units of each dense layer, e.g. `[2 * dim, dim]` in the Keras example. The last must
    /// equal `dim` for the residual to be added.
    pub hidden_units: Vec<usize>,
    /// Dropout after each dense layer.
    pub dropout: f32,
    /// GELU after the last layer too (Keras example: yes; standard ViT: no).
    pub activation_on_last: bool,
}

/// Dense layers with GELU (exact, erf-based, as Keras and PyTorch use by default) and dropout
/// after each, whose output is added to a residual stream inside the module.
///
/// In the Keras example a block ends with `x = mlp(LayerNorm(x2)) + x2`. Here the MLP owns that
/// addition ([`forward_residual`](Self::forward_residual): `residual + branch`, an ordinary add
/// after the last layer's output): a block is two residual units, each closed by one module.
/// With stochastic depth or layer scale the block takes the branch alone
/// ([`branch_t`](Self::branch_t)), scales or drops it, and adds the residual itself.
/// Parameters: `layers.{i}.weight`, `layers.{i}.bias`.
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Linear>,
    dropout: Dropout,
    activation_on_last: bool,
}

impl Mlp {
    /// Builds the layers; dropout masks are drawn from `rng`.
    pub fn new(cfg: &MlpConfig, rng: SharedRng, vb: VarBuilder) -> Result<Self> {
        match cfg.hidden_units.last() {
            Some(&last) if last == cfg.dim => {}
            _ => candle_core::bail!(
                "mlp: the last of hidden_units {:?} must equal dim {} so that the residual can be added",
                cfg.hidden_units,
                cfg.dim
            ),
        }
        let mut layers = Vec::with_capacity(cfg.hidden_units.len());
        let mut prev = cfg.dim;
        for (i, &units) in cfg.hidden_units.iter().enumerate() {
            layers.push(Linear::new(prev, units, true, vb.pp(format!("layers.{i}")))?);
            prev = units;
        }
        Ok(Self { layers, dropout: Dropout::new(cfg.dropout, rng)?, activation_on_last: cfg.activation_on_last })
    }

    /// The dense stack alone, without the residual: what a block scales or drops (layer
    /// scale, stochastic depth) before adding it.
    ///
    /// # Shapes
    /// - `x`: `[.., dim]`; returns `[.., dim]`.
    pub fn branch_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let gelu = i < last || self.activation_on_last;
            h = layer.forward_dropout(&h, gelu, &self.dropout, train)?;
        }
        Ok(h)
    }

    /// `residual + stack(x)`: the block's second residual unit, `x` being the normalised stream.
    ///
    /// # Shapes
    /// - `x`, `residual`: `[.., dim]`; returns `[.., dim]`.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.forward_residual_t(x, residual, false)
    }

    /// [`forward_residual`](Self::forward_residual) with dropout when `train`.
    pub fn forward_residual_t(&self, x: &Tensor, residual: &Tensor, train: bool) -> Result<Tensor> {
        residual + self.branch_t(x, train)?
    }

    /// `x + stack(x)`: the MLP as a residual unit on its own input.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_residual_t(x, x, train)
    }
}

impl ModuleTree for Mlp {
    /// The same layers with `f` applied to each parameter.
    fn map_weights(&self, f: &dyn WeightMap) -> Result<Self> {
        Ok(Self { layers: self.layers.iter().map(|l| l.map_weights(f)).collect::<Result<_>>()?, ..self.clone() })
    }

    /// Its parameters, layer by layer.
    fn parameters(&self) -> Vec<NamedParameter> {
        self.layers.iter().flat_map(Linear::parameters).collect()
    }
}

impl Module for Mlp {
    /// Inference: `x + stack(x)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }
}
