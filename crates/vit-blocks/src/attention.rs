//! Multi-head self-attention with Keras' `MultiHeadAttention` semantics.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use vit_kernels::AttentionDims;
use vit_rng::SharedRng;

use crate::ModuleTree;
use crate::{Dropout, Linear, NamedParameter, WeightMap};

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
    /// Whether query, key and value have biases (with `bias`): timm's `qkv_bias`, off in
    /// some models while the output projection keeps its bias.
    pub qkv_bias: bool,
    /// Dropout on the attention weights (after the softmax).
    pub dropout: f32,
}

impl AttentionConfig {
    /// `num_heads` heads of `key_dim` over a `dim`-wide stream, with biases and no dropout.
    pub fn new(dim: usize, num_heads: usize, key_dim: usize) -> Self {
        Self { dim, num_heads, key_dim, value_dim: None, bias: true, qkv_bias: true, dropout: 0.0 }
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
/// of key_dim 64 the inner width is 256. Parameters: `query`, `key`, `value`, `output`. The
/// attention itself is [`vit_kernels::attention`].
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    /// Query, key and value as one layer, their weights side by side, once an inference form
    /// fused them ([`WeightMap::fused`]): one product of the input per block instead of three
    /// small ones, and the attention reads its output in place. `query`, `key` and `value`
    /// are then views of its weights, for `parameters`.
    qkv: Option<Linear>,
    dropout: Dropout,
    num_heads: usize,
    key_dim: usize,
    value_dim: usize,
}

impl MultiHeadAttention {
    /// Builds the layer; dropout masks are drawn from `rng`.
    pub fn new(cfg: &AttentionConfig, rng: SharedRng, vb: VarBuilder) -> Result<Self> {
        let (h, dk, dv) = (cfg.num_heads, cfg.key_dim, cfg.value_dim());
        let qkv_bias = cfg.bias && cfg.qkv_bias;
        if h == 0 || dk == 0 || dv == 0 || cfg.dim == 0 {
            candle_core::bail!("attention: dim, num_heads, key_dim and value_dim must be positive, got {cfg:?}");
        }
        Ok(Self {
            query: Linear::new(cfg.dim, h * dk, qkv_bias, vb.pp("query"))?,
            key: Linear::new(cfg.dim, h * dk, qkv_bias, vb.pp("key"))?,
            value: Linear::new(cfg.dim, h * dv, qkv_bias, vb.pp("value"))?,
            output: Linear::new(h * dv, cfg.dim, cfg.bias, vb.pp("output"))?,
            qkv: None,
            dropout: Dropout::new(cfg.dropout, rng)?,
            num_heads: h,
            key_dim: dk,
            value_dim: dv,
        })
    }

    /// Self-attention over the tokens of `x`; dropout only when `train`.
    ///
    /// # Shapes
    /// - `x`: `[B, N, dim]`; returns `[B, N, dim]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        self.forward_rows(x, b, n, train)
    }

    /// [`forward_t`](Self::forward_t) on the tokens of `batch` images flattened to rows, as
    /// [`crate::TransformerBlock`] runs it: no reshape enters the graph.
    ///
    /// # Shapes
    /// - `rows`: `[batch * tokens, dim]` (or `[batch, tokens, dim]`); returns the same shape.
    pub(crate) fn forward_rows(&self, rows: &Tensor, batch: usize, tokens: usize, train: bool) -> Result<Tensor> {
        let dims = self.dims(batch, tokens);
        let mask = self.dropout.mask(batch * self.num_heads * tokens * tokens, train);
        let mixed = match &self.qkv {
            Some(qkv) => vit_kernels::attention_qkv(&qkv.forward(rows)?, &dims, mask.as_ref(), train)?,
            None => {
                let (q, k, v) = (self.query.forward(rows)?, self.key.forward(rows)?, self.value.forward(rows)?);
                vit_kernels::attention(&q, &k, &v, &dims, mask.as_ref(), train)?
            }
        };
        self.output.forward(&mixed)
    }

    /// Like [`forward_t`](Self::forward_t), also returning the attention weights (after the
    /// softmax, before dropout), for attention maps.
    ///
    /// # Shapes
    /// - `x`: `[B, N, dim]`; returns `[B, N, dim]` and weights `[B, num_heads, N, N]`.
    pub fn forward_with_weights(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let (b, n, _) = x.dims3()?;
        let mask = self.dropout.mask(b * self.num_heads * n * n, train);
        let (q, k, v) = self.projections(x)?;
        let (mixed, weights) = vit_kernels::attention_with_weights(&q, &k, &v, &self.dims(b, n), mask.as_ref())?;
        Ok((self.output.forward(&mixed)?, weights))
    }

    /// Inference with the attention weights multiplied by `probe` before they mix the values,
    /// also returning the weights. A `probe` of ones changes nothing; as a variable, its
    /// gradient is the gradient-weighted attention `∂score/∂weights ⊙ weights` that relevance
    /// maps need (candle keeps no gradient for the weights themselves).
    ///
    /// # Shapes
    /// - `x`: `[B, N, dim]`, `probe`: `[B, num_heads, N, N]`; returns `[B, N, dim]` and the
    ///   weights `[B, num_heads, N, N]`.
    pub fn forward_with_probe(&self, x: &Tensor, probe: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, n, _) = x.dims3()?;
        let (q, k, v) = self.projections(x)?;
        let (mixed, weights) = vit_kernels::attention_with_probe(&q, &k, &v, &self.dims(b, n), probe)?;
        Ok((self.output.forward(&mixed)?, weights))
    }

    /// Query, key and value of `x`: three products, or one when they are fused, cut into its
    /// column blocks.
    ///
    /// # Shapes
    /// - `x`: `[.., dim]`; returns `[.., H * key_dim]` twice and `[.., H * value_dim]`.
    fn projections(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let Some(qkv) = &self.qkv else {
            return Ok((self.query.forward(x)?, self.key.forward(x)?, self.value.forward(x)?));
        };
        let all = qkv.forward(x)?;
        let (last, qk) = (all.rank() - 1, self.num_heads * self.key_dim);
        Ok((
            all.narrow(last, 0, qk)?,
            all.narrow(last, qk, qk)?,
            all.narrow(last, 2 * qk, self.num_heads * self.value_dim)?,
        ))
    }

    /// Whether query, key and value run as one fused layer ([`WeightMap::fused`]).
    pub fn is_qkv_fused(&self) -> bool {
        self.qkv.is_some()
    }

    fn dims(&self, batch: usize, tokens: usize) -> AttentionDims {
        AttentionDims { batch, tokens, heads: self.num_heads, key_dim: self.key_dim, value_dim: self.value_dim }
    }
}

impl ModuleTree for MultiHeadAttention {
    /// The same layer with `f` applied to each parameter.
    fn map_weights(&self, f: &dyn WeightMap) -> Result<Self> {
        let projections = [&self.query, &self.key, &self.value];
        let prefix =
            self.query.prefix().rsplit_once('.').map_or("qkv".to_string(), |(parent, _)| format!("{parent}.qkv"));
        if let Some(qkv) = f.fused(&prefix, &projections)? {
            let [query, key, value]: [Linear; 3] =
                qkv.split_outputs(&projections)?.try_into().expect("three layers cut from three");
            return Ok(Self { query, key, value, output: self.output.map_weights(f)?, qkv: Some(qkv), ..self.clone() });
        }
        Ok(Self {
            query: self.query.map_weights(f)?,
            key: self.key.map_weights(f)?,
            value: self.value.map_weights(f)?,
            output: self.output.map_weights(f)?,
            qkv: self.qkv.as_ref().map(|l| l.map_weights(f)).transpose()?,
            ..self.clone()
        })
    }

    /// Its parameters, projection by projection.
    fn parameters(&self) -> Vec<NamedParameter> {
        [&self.query, &self.key, &self.value, &self.output].iter().flat_map(|l| l.parameters()).collect()
    }
}

impl Module for MultiHeadAttention {
    /// Inference: [`forward_t`](Self::forward_t) with `train = false`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }
}
