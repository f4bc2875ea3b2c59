//! The reference versions of every op, from candle ops that have a backward pass. They run on
//! every device and dtype; the fused kernels are tested against them.

use candle_core::{D, Result, Tensor};

use crate::dropout::DropoutMask;

/// Softmax over the last dimension: `exp(x - max) / sum(exp(x - max))`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// `x W^T + bias`.
pub fn dense(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&weight.t()?)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// The exact (erf) GELU.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

/// LayerNorm over the last dimension.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(weight)?.broadcast_add(bias)
}

/// `x * mask`, the mask as a tensor ([`DropoutMask::to_tensor`]).
pub fn dropout(x: &Tensor, mask: &DropoutMask) -> Result<Tensor> {
    x * mask.to_tensor(x.shape(), x.device())?.to_dtype(x.dtype())?
}

/// The sizes of a multi-head attention: `q` and `k` are `[batch * tokens, heads * key_dim]`
/// (or `[batch, tokens, heads * key_dim]`), `v` the same with `value_dim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttentionDims {
    /// Images.
    pub batch: usize,
    /// Tokens per image.
    pub tokens: usize,
    /// Heads.
    pub heads: usize,
    /// Per-head query and key size.
    pub key_dim: usize,
    /// Per-head value size.
    pub value_dim: usize,
}

impl AttentionDims {
    /// `1 / sqrt(key_dim)`, the scale of the scores.
    pub fn scale(&self) -> f64 {
        1.0 / (self.key_dim as f64).sqrt()
    }
}

/// `softmax(q k^T / sqrt(key_dim)) v` over the heads, with dropout on the weights when `mask`
/// is given; returns the output (the shape of `v`'s rows with the value width) and the weights
/// `[batch, heads, tokens, tokens]` after the softmax, before dropout.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    dims: &AttentionDims,
    mask: Option<&DropoutMask>,
) -> Result<(Tensor, Tensor)> {
    attention_with(q, k, v, dims, mask, None, softmax_last_dim, dropout)
}

/// [`attention`] with the softmax and dropout given: the composed references here, or the
/// dispatched ops of [`crate::ops`]. A `gate` `[B, H, N, N]` multiplies the weights before they
/// mix the values (see [`crate::ops::attention_with_probe`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    dims: &AttentionDims,
    mask: Option<&DropoutMask>,
    gate: Option<&Tensor>,
    softmax: fn(&Tensor) -> Result<Tensor>,
    dropout: fn(&Tensor, &DropoutMask) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    let &AttentionDims { batch: b, tokens: n, heads: h, key_dim: dk, value_dim: dv } = dims;
    let heads = |t: &Tensor, d: usize| t.reshape((b, n, h, d))?.transpose(1, 2)?.contiguous();
    // Scaling the query (as Keras does) touches N*dk values instead of N*N scores.
    let q = (heads(q, dk)? * dims.scale())?;
    let (k, v_heads) = (heads(k, dk)?, heads(v, dv)?);
    let weights = softmax(&q.matmul(&k.t()?)?)?; // [B, H, N, N]
    let dropped = match mask {
        Some(mask) => dropout(&weights, mask)?,
        None => weights.clone(),
    };
    let dropped = match gate {
        Some(gate) => dropped.broadcast_mul(gate)?,
        None => dropped,
    };
    let mixed = dropped.matmul(&v_heads)?.transpose(1, 2)?; // [B, N, H, dv]
    let merged = if v.rank() == 2 { mixed.reshape((b * n, h * dv))? } else { mixed.reshape((b, n, h * dv))? };
    Ok((merged, weights))
}
