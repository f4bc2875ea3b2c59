//! The pre-norm transformer block.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use vit_rng::SharedRng;

use crate::ModuleTree;
use crate::{
    AttentionConfig, DropPath, LayerNorm, LayerScale, Mlp, MlpConfig, MultiHeadAttention, NamedParameter, WeightMap,
};

/// Everything a [`TransformerBlock`] needs.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockConfig {
    /// The attention half.
    pub attention: AttentionConfig,
    /// The MLP half; `mlp.dim` must equal `attention.dim`.
    pub mlp: MlpConfig,
    /// LayerNorm epsilon (Keras example: 1e-6).
    pub layer_norm_eps: f64,
    /// Stochastic depth: probability of dropping each residual branch per sample in training.
    pub drop_path: f32,
    /// Layer scale: a learned per-channel scale on each branch, initialised to this value.
    pub layer_scale: Option<f64>,
}

/// `x2 = x + Attention(LayerNorm(x)); out = Mlp(LayerNorm(x2)) + x2`, the MLP adding its own
/// residual. With stochastic depth or layer scale the branches are scaled or dropped before
/// their residual is added.
///
/// Parameters: `norm1`, `attention`, `norm2`, `mlp`, and `layer_scale1`, `layer_scale2` when
/// layer scale is on.
#[derive(Debug, Clone)]
pub struct TransformerBlock {
    norm1: LayerNorm,
    attention: MultiHeadAttention,
    norm2: LayerNorm,
    mlp: Mlp,
    layer_scale: Option<(LayerScale, LayerScale)>,
    drop_path: DropPath,
}

impl TransformerBlock {
    /// Builds the block; dropout and stochastic-depth masks are drawn from `rng`.
    pub fn new(cfg: &BlockConfig, rng: SharedRng, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.attention.dim;
        if cfg.mlp.dim != dim {
            candle_core::bail!("block: mlp.dim {} differs from attention.dim {dim}", cfg.mlp.dim);
        }
        if !(0.0..1.0).contains(&cfg.drop_path) {
            candle_core::bail!("block: drop_path must be in [0, 1), got {}", cfg.drop_path);
        }
        let drop_path = DropPath::new(cfg.drop_path, rng.clone())?;
        let layer_scale = match cfg.layer_scale {
            Some(init) => Some((
                LayerScale::new(dim, init, "layer_scale1", vb.clone())?,
                LayerScale::new(dim, init, "layer_scale2", vb.clone())?,
            )),
            None => None,
        };
        Ok(Self {
            norm1: LayerNorm::new(dim, cfg.layer_norm_eps, vb.pp("norm1"))?,
            attention: MultiHeadAttention::new(&cfg.attention, rng.clone(), vb.pp("attention"))?,
            norm2: LayerNorm::new(dim, cfg.layer_norm_eps, vb.pp("norm2"))?,
            mlp: Mlp::new(&cfg.mlp, rng, vb.pp("mlp"))?,
            layer_scale,
            drop_path,
        })
    }

    /// The attention layer, e.g. to read attention maps.
    pub fn attention(&self) -> &MultiHeadAttention {
        &self.attention
    }

    /// One block; dropout and stochastic depth only when `train`.
    ///
    /// # Shapes
    /// - `x`: `[B, N, dim]`; returns `[B, N, dim]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.run(x, train, false, None)?.0)
    }

    /// Like [`forward_t`](Self::forward_t), also returning the attention weights
    /// `[B, num_heads, N, N]`.
    pub fn forward_with_attention(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        match self.run(x, train, true, None)? {
            (out, Some(weights)) => Ok((out, weights)),
            (_, None) => candle_core::bail!("block: the attention weights were asked for but not returned"),
        }
    }

    /// Inference with the attention weights multiplied by `probe` before they mix the values
    /// (see [`MultiHeadAttention::forward_with_probe`]), also returning the weights.
    ///
    /// # Shapes
    /// - `x`: `[B, N, dim]`, `probe`: `[B, num_heads, N, N]`; returns `[B, N, dim]` and the
    ///   weights `[B, num_heads, N, N]`.
    pub fn forward_with_probe(&self, x: &Tensor, probe: &Tensor) -> Result<(Tensor, Tensor)> {
        match self.run(x, false, true, Some(probe))? {
            (out, Some(weights)) => Ok((out, weights)),
            (_, None) => candle_core::bail!("block: the attention weights were asked for but not returned"),
        }
    }

    fn run(
        &self,
        x: &Tensor,
        train: bool,
        want_weights: bool,
        probe: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let plain = self.layer_scale.is_none() && !self.drop_path.is_active(train);
        if plain && !want_weights {
            // The tokens of all images as rows, one reshape in and one out: the layers inside
            // take rows as they are, and every reshape saved is a zeroed gradient and an add
            // saved in candle's backward pass.
            let (b, n, d) = x.dims3()?;
            let rows = x.reshape((b * n, d))?;
            let x2 = (&rows + self.attention.forward_rows(&self.norm1.forward(&rows)?, b, n, train)?)?;
            let out = self.mlp.forward_residual_t(&self.norm2.forward(&x2)?, &x2, train)?;
            return Ok((out.reshape((b, n, d))?, None));
        }
        let normed = self.norm1.forward(x)?;
        let (attended, weights) = if want_weights {
            let (a, w) = match probe {
                Some(probe) => self.attention.forward_with_probe(&normed, probe)?,
                None => self.attention.forward_with_weights(&normed, train)?,
            };
            (a, Some(w))
        } else {
            (self.attention.forward_t(&normed, train)?, None)
        };
        if plain {
            let x2 = (x + attended)?;
            let out = self.mlp.forward_residual_t(&self.norm2.forward(&x2)?, &x2, train)?;
            return Ok((out, weights));
        }
        let x2 = (x + self.scale_and_drop(attended, 0, train)?)?;
        let branch = self.mlp.branch_t(&self.norm2.forward(&x2)?, train)?;
        let out = (&x2 + self.scale_and_drop(branch, 1, train)?)?;
        Ok((out, weights))
    }

    fn scale_and_drop(&self, branch: Tensor, which: usize, train: bool) -> Result<Tensor> {
        let branch = match &self.layer_scale {
            Some((first, second)) => (if which == 0 { first } else { second }).forward(&branch)?,
            None => branch,
        };
        self.drop_path.forward_t(&branch, train)
    }
}

impl ModuleTree for TransformerBlock {
    /// The same block with `f` applied to each parameter; the result shares the dropout stream.
    /// With `|w| w.to_dtype(DType::BF16)` it is the block for a mixed-precision step: the `f32`
    /// variables stay the master weights and receive `f32` gradients through the cast.
    fn map_weights(&self, f: &dyn WeightMap) -> Result<Self> {
        Ok(Self {
            norm1: self.norm1.map_weights(f)?,
            attention: self.attention.map_weights(f)?,
            norm2: self.norm2.map_weights(f)?,
            mlp: self.mlp.map_weights(f)?,
            layer_scale: self
                .layer_scale
                .as_ref()
                .map(|(a, b)| Ok::<_, candle_core::Error>((a.map_weights(f)?, b.map_weights(f)?)))
                .transpose()?,
            drop_path: self.drop_path.clone(),
        })
    }

    /// Its parameters.
    fn parameters(&self) -> Vec<NamedParameter> {
        let mut out = self.norm1.parameters();
        out.extend(self.attention.parameters());
        out.extend(self.norm2.parameters());
        out.extend(self.mlp.parameters());
        if let Some((a, b)) = &self.layer_scale {
            out.extend(a.parameters());
            out.extend(b.parameters());
        }
        out
    }
}

impl Module for TransformerBlock {
    /// Inference: [`forward_t`](Self::forward_t) with `train = false`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }
}
