//! Multi-head self-attention with Keras' `MultiHeadAttention` semantics.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::attention_kernel::FusedAttention;
use crate::{Dropout, Linear, SharedRng, WeightMap, ops};

/// Shape and regularisation of a [`MultiHeadAttention`].
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionConfig {
    /// Width of the token stream (input and output features).
    pub dim: usize,
    /// Number of heads.
    pub num_heads: usize,
    /// Size of each head's query and key, independent of `dim` (Keras' `key_dim`).
    pub key_dim: usize,
    /// Size of each head's value; `None` means `key_dim` (Keras' default).
    pub value_dim: Option<usize>,
    /// Whether the four projections have biases.
    pub bias: bool,
    /// Dropout on the attention weights (after the softmax).
    pub dropout: f32,
}

impl AttentionConfig {
    /// `num_heads` heads of `key_dim` over a `dim`-wide stream, with biases and no dropout.
    pub fn new(dim: usize, num_heads: usize, key_dim: usize) -> Self {
        Self { dim, num_heads, key_dim, value_dim: None, bias: true, dropout: 0.0 }
    }

    /// The per-head value size.
    pub fn value_dim(&self) -> usize {
        self.value_dim.unwrap_or(self.key_dim)
    }
}

/// Self-attention: `softmax(Q K^T / sqrt(key_dim)) V` over `num_heads` heads.
///
/// Q, K and V project `dim -> num_heads * key_dim` (value: `num_heads * value_dim`) and the
/// output projects back to `dim`, as Keras does: with the Keras example's width 64 and 4 heads
/// of key_dim 64 the inner width is 256. Parameters: `query`, `key`, `value`, `output`.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    dropout: Dropout,
    num_heads: usize,
    key_dim: usize,
    value_dim: usize,
}

impl MultiHeadAttention {
    /// Builds the layer; dropout masks are drawn from `rng`.
    pub fn new(cfg: &AttentionConfig, rng: SharedRng, vb: VarBuilder) -> Result<Self> {
        let (h, dk, dv) = (cfg.num_heads, cfg.key_dim, cfg.value_dim());
        if h == 0 || dk == 0 || dv == 0 || cfg.dim == 0 {
            candle_core::bail!("attention: dim, num_heads, key_dim and value_dim must be positive, got {cfg:?}");
        }
        Ok(Self {
            query: Linear::new(cfg.dim, h * dk, cfg.bias, vb.pp("query"))?,
            key: Linear::new(cfg.dim, h * dk, cfg.bias, vb.pp("key"))?,
            value: Linear::new(cfg.dim, h * dv, cfg.bias, vb.pp("value"))?,
            output: Linear::new(h * dv, cfg.dim, cfg.bias, vb.pp("output"))?,
            dropout: Dropout::new(cfg.dropout, rng)?,
            num_heads: h,
            key_dim: dk,
            value_dim: dv,
        })
    }

    /// The same layer outside autograd.
    pub fn detached(&self) -> Self {
        Self {
            query: self.query.detached(),
            key: self.key.detached(),
            value: self.value.detached(),
            output: self.output.detached(),
            ..self.clone()
        }
    }

    /// The same layer with `f` applied to each parameter.
    pub fn map_weights(&self, f: &WeightMap) -> Result<Self> {
        Ok(Self {
            query: self.query.map_weights(f)?,
            key: self.key.map_weights(f)?,
            value: self.value.map_weights(f)?,
            output: self.output.map_weights(f)?,
            ..self.clone()
        })
    }

    /// Self-attention over the tokens of `x`; dropout only when `train`.
    ///
    /// # Shapes
    /// - `x`: `[B, N, dim]`; returns `[B, N, dim]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let (b, n, _) = x.dims3()?;
            return self.attend_fused(x, b, n, train);
        }
        Ok(self.attend(x, train)?.0)
    }

    /// [`forward_t`](Self::forward_t) on the tokens of `batch` images flattened to rows, as
    /// [`crate::TransformerBlock`] runs it: on the CPU no reshape enters the graph.
    ///
    /// # Shapes
    /// - `rows`: `[batch * tokens, dim]`; returns `[batch * tokens, dim]`.
    pub(crate) fn forward_rows(&self, rows: &Tensor, batch: usize, tokens: usize, train: bool) -> Result<Tensor> {
        if rows.device().is_cpu() && rows.dtype() == DType::F32 {
            return self.attend_fused(rows, batch, tokens, train);
        }
        let dim = rows.dim(1)?;
        self.forward_t(&rows.reshape((batch, tokens, dim))?, train)?.reshape((batch * tokens, dim))
    }

    /// The CPU path: all heads in one kernel that never materialises the `[B, H, N, N]`
    /// weights outside training (see `attention_kernel`); equal to [`attend`](Self::attend)
    /// within rounding, dropout masks included.
    fn attend_fused(&self, x: &Tensor, b: usize, n: usize, train: bool) -> Result<Tensor> {
        let mask = (train && self.dropout.p() > 0.0).then(|| self.dropout.reserve(b * self.num_heads * n * n));
        let (q, k, v) = (self.query.forward(x)?, self.key.forward(x)?, self.value.forward(x)?);
        let kernel = FusedAttention {
            batch: b,
            tokens: n,
            heads: self.num_heads,
            key_dim: self.key_dim,
            value_dim: self.value_dim,
            scale: (1.0 / (self.key_dim as f64).sqrt()) as f32,
            mask,
            // Training keeps the weights for the backward pass rather than recomputing them.
            saved_weights: (train && q.track_op()).then(Default::default),
        };
        let mixed = q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, kernel)?;
        self.output.forward(&mixed)
    }

    /// Like [`forward_t`](Self::forward_t), also returning the attention weights (after the
    /// softmax, before dropout), for attention maps.
    ///
    /// # Shapes
    /// - `x`: `[B, N, dim]`; returns `[B, N, dim]` and weights `[B, num_heads, N, N]`.
    pub fn forward_with_weights(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        self.attend(x, train)
    }

    fn attend(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let (b, n, _) = x.dims3()?;
        let scale = 1.0 / (self.key_dim as f64).sqrt();
        let heads = |t: Tensor, d: usize| t.reshape((b, n, self.num_heads, d))?.transpose(1, 2)?.contiguous();
        // Scaling the query (as Keras does) touches N*dk values instead of N*N scores.
        let q = (heads(self.query.forward(x)?, self.key_dim)? * scale)?;
        let k = heads(self.key.forward(x)?, self.key_dim)?;
        let v = heads(self.value.forward(x)?, self.value_dim)?;
        let weights = ops::softmax_last_dim(&q.matmul(&k.t()?)?)?; // [B, H, N, N]
        let mixed = self.dropout.forward_t(&weights, train)?.matmul(&v)?; // [B, H, N, dv]
        let merged = mixed.transpose(1, 2)?.reshape((b, n, self.num_heads * self.value_dim))?;
        Ok((self.output.forward(&merged)?, weights))
    }
}

impl Module for MultiHeadAttention {
    /// Inference: [`forward_t`](Self::forward_t) with `train = false`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }
}
