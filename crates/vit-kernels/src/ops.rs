//! The ops, each with a backward pass: every entry point asks [`select`] for its path and runs
//! the fused CPU kernel, candle's GPU kernel with an attached backward, or the composed
//! reference. Tests prove the paths equal in forward and backward.

use std::sync::Arc;

use candle_core::{D, DType, Result, Tensor};

use crate::activation::Act;
use crate::attached;
use crate::attention::{FusedAttention, FusedQkvAttention};
use crate::composed::{self, AttentionDims};
use crate::dense::Dense;
use crate::dense_bf16::{Bf16Weight, DenseBf16};
use crate::dense_f32::{DenseF32, F32Weight};
use crate::dropout::DropoutMask;
use crate::int8::{DenseInt8, Int8Weight};
use crate::isa::{Bf16Kernel, Int8Kernel, bf16_matmuls};
use crate::layer_norm::LayerNorm;
use crate::path::{KernelPath, is_half, select};
use crate::softmax::Softmax;

/// Softmax over the last dimension. `bf16` and `f16` input is computed in `f32` and returned
/// in its own dtype.
///
/// # Shapes
/// - `x`: `[.., N]`; returns the same shape.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if is_half(x.dtype()) {
        return softmax_last_dim(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype());
    }
    match select(&[x]) {
        KernelPath::CpuFused => x.contiguous()?.apply_op1(Softmax),
        KernelPath::GpuAttached => attached::softmax_last_dim(x),
        KernelPath::Composed => composed::softmax_last_dim(x),
    }
}

/// LayerNorm over the last dimension, `(x - mean) / sqrt(var + eps) * weight + bias`, with
/// gradients for `x`, `weight` and `bias`. `bf16` and `f16` input is computed in `f32`.
///
/// # Shapes
/// - `x`: `[.., D]`; `weight`, `bias`: `[D]`; returns the shape of `x`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if is_half(x.dtype()) {
        let f32 = |t: &Tensor| t.to_dtype(DType::F32);
        return layer_norm(&f32(x)?, &f32(weight)?, &f32(bias)?, eps)?.to_dtype(x.dtype());
    }
    match select(&[x, weight, bias]) {
        KernelPath::CpuFused => {
            let d = x.dim(D::Minus1)?;
            if weight.dims() != [d] || bias.dims() != [d] {
                candle_core::bail!(
                    "layer_norm: weight {:?} and bias {:?} must be [{d}] for input {:?}",
                    weight.dims(),
                    bias.dims(),
                    x.dims()
                );
            }
            x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, LayerNorm { eps: eps as f32 })
        }
        KernelPath::GpuAttached => attached::layer_norm(x, weight, bias, eps),
        KernelPath::Composed => composed::layer_norm(x, weight, bias, eps),
    }
}

/// A dense layer, `x W^T + bias`, with gradients for all three. On the CPU with `f32` and a
/// bias it is one graph node: the bias is the matrix product's starting value, and the
/// backward pass runs two products with the transposes in the strides and sums the bias
/// gradient over rows in parallel (candle's broadcast backward does that in one
/// single-threaded loop).
///
/// # Shapes
/// - `x`: `[R, in]` (2-D for the fused path), `weight`: `[out, in]`, `bias`: `[out]`; returns
///   `[R, out]`.
pub fn dense(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) if select(&[x, weight, b]) == KernelPath::CpuFused && x.rank() == 2 => x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &b.contiguous()?,
            Dense { gelu: false, bf16: bf16_matmuls() },
        ),
        _ => composed::dense(x, weight, bias),
    }
}

/// `x` as the contiguous input of a dense layer prepared for inference, which runs on 2-D
/// `f32` on the CPU; otherwise an error naming the op `name`.
fn cpu_rows(x: &Tensor, name: &str) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 || x.rank() != 2 {
        candle_core::bail!(
            "{name}: runs on 2-D f32 input on the CPU, got {:?} {:?} on {:?}",
            x.dims(),
            x.dtype(),
            x.device().location()
        );
    }
    x.contiguous()
}

/// A dense layer with int8 weights, `x W^T + b` (GELU of it with `gelu`), for inference on the
/// CPU: `x` is quantized per row as it is packed, the products run on the fastest int8 kernel
/// of the CPU ([`Int8Kernel::detect`]) and the dequantization, the bias and GELU are applied to
/// each block of the output while it is in cache. The input's gradient goes through the
/// dequantized weights (for relevance maps); the weights get none.
///
/// # Shapes
/// - `x`: `[R, in]` `f32` on the CPU; returns `[R, out]` `f32`.
pub fn dense_int8(x: &Tensor, weight: &Arc<Int8Weight>, gelu: bool) -> Result<Tensor> {
    dense_int8_with(x, weight, gelu, Int8Kernel::detect())
}

/// [`dense_int8`] on a given kernel (tests compare them).
pub fn dense_int8_with(x: &Tensor, weight: &Arc<Int8Weight>, gelu: bool, kernel: Int8Kernel) -> Result<Tensor> {
    cpu_rows(x, "dense_int8")?.apply_op1(DenseInt8 { weight: weight.clone(), gelu, kernel })
}

/// A dense layer with its weight packed once as bf16 ([`Bf16Weight`]), `x W^T + b` (GELU of
/// it with `gelu`), for inference on the CPU: `x` is rounded to bf16 as it is packed, the
/// products are summed in `f32` on the fastest bf16 kernel of the CPU
/// ([`Bf16Kernel::detect`]), the bias is the sums' starting value. The input's gradient goes
/// through the `f32` weight rounded to bf16 (for relevance maps); the weight gets none.
///
/// # Shapes
/// - `x`: `[R, in]` `f32` on the CPU; returns `[R, out]` `f32`.
pub fn dense_bf16(x: &Tensor, weight: &Arc<Bf16Weight>, gelu: bool) -> Result<Tensor> {
    dense_bf16_with(x, weight, gelu, Bf16Kernel::detect())
}

/// [`dense_bf16`] on a given kernel (tests compare them).
pub fn dense_bf16_with(x: &Tensor, weight: &Arc<Bf16Weight>, gelu: bool, kernel: Bf16Kernel) -> Result<Tensor> {
    cpu_rows(x, "dense_bf16")?.apply_op1(DenseBf16 { weight: weight.clone(), gelu, kernel })
}

/// A dense layer whose `f32` weight is stored once, transposed in panels of 64 output channels
/// ([`F32Weight`]), `x W^T + b` (GELU of it with `gelu`), for inference on the CPU: the same
/// products as [`dense`] and [`dense_gelu`] (within f32 rounding: the order of the sums may
/// differ), without packing the weight on every call.
/// The input's gradient goes through the weight (for relevance maps); the weight gets none.
///
/// # Shapes
/// - `x`: `[R, in]` `f32` on the CPU; returns `[R, out]` `f32`.
pub fn dense_f32_transposed(x: &Tensor, weight: &Arc<F32Weight>, gelu: bool) -> Result<Tensor> {
    cpu_rows(x, "dense_f32_transposed")?.apply_op1(DenseF32 { weight: weight.clone(), gelu })
}

/// The exact (erf) GELU, with gradients; one pass forward and backward on the CPU with `f32`.
///
/// # Shapes
/// - `x`: any; returns the same shape.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    match select(&[x]) {
        KernelPath::CpuFused => x.contiguous()?.apply_op1(Act { gelu: true, mask: None }),
        _ => composed::gelu(x),
    }
}

/// `gelu(dense(x, weight, bias))`. Outside autograd (inference) on the CPU with `f32`, GELU
/// runs on each block of the product while it is still in cache.
///
/// # Shapes
/// - `x`: `[R, in]`, `weight`: `[out, in]`, `bias`: `[out]`; returns `[R, out]`.
pub fn dense_gelu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b)
            if select(&[x, weight, b]) == KernelPath::CpuFused
                && ![x, weight, b].iter().any(|t| t.track_op())
                && x.rank() == 2 =>
        {
            x.contiguous()?.apply_op3_no_bwd(
                &weight.contiguous()?,
                &b.contiguous()?,
                &Dense { gelu: true, bf16: bf16_matmuls() },
            )
        }
        _ => gelu(&dense(x, weight, bias)?),
    }
}

/// `dropout(act(dense(x, weight, bias)))`, `act` GELU when `gelu` and the identity otherwise,
/// the dropout only with a `mask` (training). On the CPU with `f32` and a bias the activation
/// and the dropout run as one pass after the product (and one pass backward): the same values
/// and masks as the separate ops.
///
/// # Shapes
/// - `x`: `[R, in]`, `weight`: `[out, in]`, `bias`: `[out]`; returns `[R, out]`.
pub fn dense_dropout(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    gelu: bool,
    mask: Option<&DropoutMask>,
) -> Result<Tensor> {
    match (mask, bias) {
        (Some(mask), Some(b)) if select(&[x, weight, b]) == KernelPath::CpuFused => {
            dense(x, weight, bias)?.contiguous()?.apply_op1(Act { gelu, mask: Some(*mask) })
        }
        _ => {
            let y = if gelu { dense_gelu(x, weight, bias)? } else { dense(x, weight, bias)? };
            match mask {
                Some(mask) => dropout(&y, mask),
                None => Ok(y),
            }
        }
    }
}

/// `x * mask` (inverted dropout). On the CPU with `f32` the mask is never stored: the backward
/// pass draws it again.
///
/// # Shapes
/// - `x`: any; returns the same shape.
pub fn dropout(x: &Tensor, mask: &DropoutMask) -> Result<Tensor> {
    match select(&[x]) {
        KernelPath::CpuFused => x.contiguous()?.apply_op1(*mask),
        _ => composed::dropout(x, mask),
    }
}

/// Multi-head scaled dot-product attention, `softmax(q k^T / sqrt(key_dim)) v` per head, with
/// dropout on the weights when `mask` is given.
///
/// On the CPU with `f32` all heads run in one kernel, parallel over images and heads, that reads
/// the projections in place through strides and stores no scores or dropout mask (the backward
/// pass draws the same mask again). In `train`ing, when the inputs record a graph, it keeps the
/// `[B, H, N, N]` weights for the backward pass; otherwise the backward pass would recompute
/// them. Elsewhere it runs [`attention_with_weights`].
///
/// # Shapes
/// - `q`, `k`: `[B * N, H * key_dim]` (or `[B, N, H * key_dim]`), `v`: the same with
///   `value_dim`; returns the shape of `v` with `H * value_dim`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    dims: &AttentionDims,
    mask: Option<&DropoutMask>,
    train: bool,
) -> Result<Tensor> {
    if select(&[q, k, v]) != KernelPath::CpuFused {
        return Ok(attention_with_weights(q, k, v, dims, mask)?.0);
    }
    let row_strides = (dims.heads * dims.key_dim, dims.heads * dims.value_dim);
    let kernel = fused_attention(dims, mask, train && q.track_op(), row_strides);
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, kernel)
}

/// [`attention`] on the output of one projection to query, key and value side by side,
/// `[B * N, H * (2 * key_dim + value_dim)]` (query, then key, then value columns, each head's
/// `key_dim` or `value_dim` columns in a row): the same values as `attention` on its three column
/// blocks, with the gradient of the whole matrix. On the CPU with `f32` the kernel reads the
/// blocks in place; elsewhere they are cut out and passed to [`attention`].
///
/// Why: at inference the three projections of a block read the same input, and one product
/// with their weights side by side replaces three small ones (at batch 1 on ViT-Ti, three
/// `197 x 192 x 192` products; measured in `docs/measurements/cpu-2026-12-06-qkv.md`).
///
/// # Shapes
/// - `qkv`: `[B * N, H * (2 * key_dim + value_dim)]` (or `[B, N, ..]`); returns
///   `[B * N, H * value_dim]` (or `[B, N, ..]`).
pub fn attention_qkv(qkv: &Tensor, dims: &AttentionDims, mask: Option<&DropoutMask>, train: bool) -> Result<Tensor> {
    let (qk_width, v_width) = (dims.heads * dims.key_dim, dims.heads * dims.value_dim);
    let width = 2 * qk_width + v_width;
    let last = qkv.rank().checked_sub(1).map(|d| qkv.dim(d)).transpose()?;
    if last != Some(width) {
        candle_core::bail!(
            "attention_qkv: expected query, key and value side by side, {width} columns for {} heads of key_dim {} and \
             value_dim {}, got shape {:?}",
            dims.heads,
            dims.key_dim,
            dims.value_dim,
            qkv.dims()
        );
    }
    if select(&[qkv]) != KernelPath::CpuFused {
        let axis = qkv.rank() - 1;
        let (q, k, v) = (
            qkv.narrow(axis, 0, qk_width)?,
            qkv.narrow(axis, qk_width, qk_width)?,
            qkv.narrow(axis, 2 * qk_width, v_width)?,
        );
        return attention(&q, &k, &v, dims, mask, train);
    }
    let kernel = fused_attention(dims, mask, train && qkv.track_op(), (width, width));
    qkv.contiguous()?.apply_op1(FusedQkvAttention(kernel))
}

/// The CPU attention kernel for `dims`, reading rows `row_strides` apart (q and k, v); with
/// `keep_weights`, it keeps the weights for the backward pass.
fn fused_attention(
    dims: &AttentionDims,
    mask: Option<&DropoutMask>,
    keep_weights: bool,
    row_strides: (usize, usize),
) -> FusedAttention {
    FusedAttention {
        batch: dims.batch,
        tokens: dims.tokens,
        heads: dims.heads,
        key_dim: dims.key_dim,
        value_dim: dims.value_dim,
        scale: dims.scale() as f32,
        mask: mask.copied(),
        saved_weights: keep_weights.then(Arc::default),
        bf16: bf16_matmuls(),
        row_strides,
    }
}

/// [`attention`] built from this module's softmax and dropout, also returning the weights
/// `[B, H, N, N]` (after the softmax, before dropout), for attention maps.
///
/// # Shapes
/// - as [`attention`]; the weights are `[B, H, N, N]`.
pub fn attention_with_weights(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    dims: &AttentionDims,
    mask: Option<&DropoutMask>,
) -> Result<(Tensor, Tensor)> {
    composed::attention_with(q, k, v, dims, mask, None, softmax_last_dim, dropout)
}

/// Inference attention whose weights are multiplied by `probe` (`[B, H, N, N]`, all ones
/// for the true output) before they mix the values, also returning the weights.
///
/// Why: candle keeps gradients of variables only, not of the attention weights inside the
/// graph. With `probe` a variable of ones, the gradient of a score with respect to `probe` is
/// `∂score/∂weights ⊙ weights`, the gradient-weighted attention of Chefer et al. (2021).
///
/// # Shapes
/// - as [`attention`]; `probe` and the weights are `[B, H, N, N]`.
pub fn attention_with_probe(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    dims: &AttentionDims,
    probe: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let expected = [dims.batch, dims.heads, dims.tokens, dims.tokens];
    if probe.dims() != expected {
        candle_core::bail!("attention probe: expected shape {expected:?}, got {:?}", probe.dims());
    }
    composed::attention_with(q, k, v, dims, None, Some(probe), softmax_last_dim, dropout)
}
