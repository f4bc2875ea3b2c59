//! Softmax, LayerNorm, the dense layer and GELU, with gradients.
//!
//! candle's fused `candle_nn::ops::softmax_last_dim` and `layer_norm` (and `candle_nn::LayerNorm`
//! on its fused path) record no backward pass, so gradients silently stop there. The functions
//! here always carry gradients:
//!
//! - on the CPU with contiguous `f32` input they run fused kernels (one pass over each row,
//!   parallel over rows) whose backward is a fused kernel too;
//! - on a GPU in `f32`, softmax and LayerNorm run candle's fused forward kernels with a
//!   backward pass attached by formula (`attached`, tested against the composed versions);
//! - elsewhere they fall back to the [`composed`] versions, built from candle ops that have a
//!   backward;
//! - softmax and LayerNorm compute in `f32` when given `bf16` or `f16` input and return the
//!   input's dtype, as mixed-precision training does everywhere: their sums and variances lose
//!   too much in 8 or 11 bits of mantissa.
//!
//! The tests prove the fused kernels equal the composed versions in forward and backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::dropout::MaskDraw;

/// Rows shorter than this are batched into one rayon task so that tiny rows do not drown in
/// scheduling overhead.
const ROWS_PER_TASK_MIN_ELEMS: usize = 1 << 14;

/// Softmax over the last dimension, with gradients.
///
/// # Shapes
/// - `x`: `[.., N]`; returns the same shape.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if is_half(x.dtype()) {
        return softmax_last_dim(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype());
    }
    if fused_eligible(x) {
        x.contiguous()?.apply_op1(Softmax)
    } else if gpu_f32(&[x]) {
        crate::attached::softmax_last_dim(x)
    } else {
        composed::softmax_last_dim(x)
    }
}

/// LayerNorm over the last dimension, `(x - mean) / sqrt(var + eps) * weight + bias`, with
/// gradients for `x`, `weight` and `bias`.
///
/// # Shapes
/// - `x`: `[.., D]`; `weight`, `bias`: `[D]`; returns the shape of `x`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if is_half(x.dtype()) {
        let f32 = |t: &Tensor| t.to_dtype(DType::F32);
        return layer_norm(&f32(x)?, &f32(weight)?, &f32(bias)?, eps)?.to_dtype(x.dtype());
    }
    if fused_eligible(x) && fused_eligible(weight) && fused_eligible(bias) {
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
    } else if gpu_f32(&[x, weight, bias]) {
        crate::attached::layer_norm(x, weight, bias, eps)
    } else {
        composed::layer_norm(x, weight, bias, eps)
    }
}

fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::BF16 | DType::F16)
}

/// Off the CPU, in f32: candle's fused forward kernels with a backward attached
/// ([`crate::attached`]).
fn gpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| !t.device().is_cpu() && t.dtype() == DType::F32)
}

pub(crate) fn fused_eligible(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// The reference versions, from candle ops that have a backward. They run on every device and
/// dtype; the fused kernels are tested against them.
pub mod composed {
    use candle_core::{D, Result, Tensor};

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
}

/// The contiguous `f32` values of a CPU storage, or an error naming the kernel.
pub(crate) fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what}: fused kernel needs a contiguous input"),
    }
}

/// Splits `rows` of `width` elements into chunks of whole rows large enough to be worth a task.
pub(crate) fn chunk_rows(width: usize) -> usize {
    (ROWS_PER_TASK_MIN_ELEMS / width.max(1)).max(1) * width.max(1)
}

/// A new vector of `len` values, written by `fill(chunk_index, chunk)` over chunks of `chunk`
/// elements in parallel. Each chunk is zeroed by its own task just before `fill` overwrites it,
/// in cache, instead of the whole vector in one single-threaded pass at allocation
/// (`vec![0.0; len]`: 5% of an inference profile, as a memset inside the allocator).
pub(crate) fn par_rows(len: usize, chunk: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(chunk.max(1)).enumerate().for_each(|(c, part)| {
        part.iter_mut().for_each(|v| {
            v.write(0.0);
        });
        // SAFETY: every element of `part` was initialised just above.
        let part = unsafe { &mut *(part as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
        fill(c, part);
    });
    // SAFETY: the chunks cover 0..len, and each was initialised.
    unsafe { out.set_len(len) };
    out
}

/// Whether `f32::mul_add` is one instruction for the whole build's target (always on aarch64;
/// on x86-64 only when built for a CPU with FMA, `-C target-cpu=native` for example).
pub(crate) const FMA_BUILD: bool = cfg!(any(target_feature = "fma", target_arch = "aarch64"));

/// Defines a function whose body is compiled twice: for the baseline target, and with AVX2 and
/// FMA, chosen at run time when the CPU has them. The row kernels are elementwise polynomial
/// arithmetic (`exp`, `erf`): 8 lanes with fused multiply-adds instead of SSE2's 4 without.
/// The body sees a constant `FMA`, true where `mul_add` is one instruction, to pass to
/// [`exp_with`] and the functions built on it (elsewhere `mul_add` is a libm call).
macro_rules! simd_kernel {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn portable($($arg: $ty),*) {
                #[allow(dead_code)]
                const FMA: bool = $crate::ops::FMA_BUILD;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2_fma($($arg: $ty),*) {
                    #[allow(dead_code)]
                    const FMA: bool = true;
                    $body
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has both features.
                    return unsafe { avx2_fma($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}

pub(crate) use simd_kernel;

/// The maximum and the sum over 8 lanes, so that the reductions vectorise (a single running
/// value is a dependency chain the compiler may not reorder).
#[inline(always)]
fn lanes_fold(row: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            lanes[j] = op(lanes[j], c[j]);
        }
    }
    tail.iter().fold(lanes.into_iter().fold(init, &op), |a, &v| op(a, v))
}

simd_kernel! {
    /// Softmax of one row, in place.
    pub(crate) fn softmax_in_place(row: &mut [f32]) {
        // `f32::max` handles NaN with a compare and a blend per vector; this is one `maxps`,
        // and a NaN still reaches the sum through `exp` below.
        let max = lanes_fold(row, f32::NEG_INFINITY, |a, b| if a > b { a } else { b });
        // The exponentials and their sum in one pass, the sum over 8 lanes.
        let mut lanes = [0f32; 8];
        let mut chunks = row.chunks_exact_mut(8);
        for c in &mut chunks {
            for j in 0..8 {
                c[j] = exp_with::<FMA>(c[j] - max);
                lanes[j] += c[j];
            }
        }
        let mut sum = lanes.iter().sum::<f32>();
        for v in chunks.into_remainder() {
            *v = exp_with::<FMA>(*v - max);
            sum += *v;
        }
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "vit-softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, self.name())?;
        let n = layout.dims().last().copied().unwrap_or(1);
        let chunk = chunk_rows(n);
        let out = par_rows(x.len(), chunk, |c, out| {
            out.copy_from_slice(&x[c * chunk..][..out.len()]);
            out.chunks_exact_mut(n).for_each(softmax_in_place);
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad_res.contiguous()?, &SoftmaxBackward)?))
    }
}

/// `dx = y * (dy - sum(dy * y))`, one pass per row.
struct SoftmaxBackward;

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "vit-softmax-last-dim-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, self.name())?;
        let dy = f32_slice(s2, l2, self.name())?;
        let n = l1.dims().last().copied().unwrap_or(1);
        let chunk = chunk_rows(n);
        let dx = par_rows(y.len(), chunk, |c, dx| {
            dx.copy_from_slice(&dy[c * chunk..][..dx.len()]);
            softmax_grad_rows(dx, &y[c * chunk..][..dx.len()], n);
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

struct LayerNorm {
    eps: f32,
}

/// Mean and reciprocal standard deviation of one row, summed over 8 lanes so that it vectorises.
#[inline(always)]
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = lanes_fold(x, 0.0, |a, b| a + b) / n;
    let mut squares = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum::<f32>();
    for c in chunks {
        for j in 0..8 {
            squares[j] += (c[j] - mean) * (c[j] - mean);
        }
    }
    let var = (squares.iter().sum::<f32>() + tail) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

simd_kernel! {
    /// LayerNorm of whole rows of `w.len()`.
    fn layer_norm_rows(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
        let d = w.len();
        for (out, x) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            let (mean, rstd) = moments(x, eps);
            for i in 0..d {
                out[i] = (x[i] - mean) * rstd * w[i] + b[i];
            }
        }
    }
}

simd_kernel! {
    /// LayerNorm's backward for whole rows: writes `dx`, adds into `dw` and `db`.
    fn layer_norm_grad_rows(dx: &mut [f32], x: &[f32], g: &[f32], w: &[f32], eps: f32, dw: &mut [f32], db: &mut [f32]) {
        let d = w.len();
        for ((dx, x), g) in dx.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(g.chunks_exact(d)) {
            let (mean, rstd) = moments(x, eps);
            for i in 0..d {
                dw[i] += g[i] * (x[i] - mean) * rstd;
                db[i] += g[i];
            }
            let (mut sum_gw, mut sum_gw_xhat) = ([0f32; 8], [0f32; 8]);
            let rows = x.chunks_exact(8).zip(g.chunks_exact(8)).zip(w.chunks_exact(8));
            let tail = d - d % 8;
            for ((x, g), w) in rows {
                for j in 0..8 {
                    let gw = g[j] * w[j];
                    sum_gw[j] += gw;
                    sum_gw_xhat[j] += gw * (x[j] - mean) * rstd;
                }
            }
            for i in tail..d {
                let gw = g[i] * w[i];
                sum_gw[0] += gw;
                sum_gw_xhat[0] += gw * (x[i] - mean) * rstd;
            }
            let mean_gw = sum_gw.iter().sum::<f32>() / d as f32;
            let mean_gw_xhat = sum_gw_xhat.iter().sum::<f32>() / d as f32;
            for i in 0..d {
                let xhat = (x[i] - mean) * rstd;
                dx[i] = rstd * (g[i] * w[i] - mean_gw - xhat * mean_gw_xhat);
            }
        }
    }
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "vit-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let b = f32_slice(s3, l3, self.name())?;
        let d = w.len();
        let chunk = chunk_rows(d);
        let out = par_rows(x.len(), chunk, |c, out| layer_norm_rows(out, &x[c * chunk..][..out.len()], w, b, self.eps));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = weight.dim(0)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ws = weight.to_vec1::<f32>()?;
        let gs = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let mut dx = vec![0f32; xs.len()];
        let chunk = chunk_rows(d);
        // Each task returns its partial sums for dweight and dbias; they are added afterwards.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(chunk)
            .zip(xs.par_chunks(chunk).zip(gs.par_chunks(chunk)))
            .map(|(dx, (x, g))| {
                let mut dw = vec![0f32; d];
                let mut db = vec![0f32; d];
                layer_norm_grad_rows(dx, x, g, &ws, self.eps, &mut dw, &mut db);
                (dw, db)
            })
            .collect();
        let (mut dw, mut db) = (vec![0f32; d], vec![0f32; d]);
        for (pw, pb) in partials {
            dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
        }
        let device = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), device)?),
            Some(Tensor::from_vec(dw, d, device)?),
            Some(Tensor::from_vec(db, d, device)?),
        ))
    }
}

/// A dense layer, `x W^T + bias`, with gradients for all three. On the CPU with `f32` and a
/// bias it is one graph node: the bias is the matrix product's starting value, and the
/// backward pass runs two products with the transposes in the strides and sums the bias
/// gradient over rows in parallel (candle's broadcast backward does that in one
/// single-threaded loop, 18% of a training step in the Keras example's model).
///
/// # Shapes
/// - `x`: `[R, in]` (2-D), `weight`: `[out, in]`, `bias`: `[out]`; returns `[R, out]`.
pub fn dense(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) if fused_eligible(x) && fused_eligible(weight) && fused_eligible(b) && x.rank() == 2 => x
            .contiguous()?
            .apply_op3(&weight.contiguous()?, &b.contiguous()?, crate::dense_kernel::Dense { gelu: false }),
        _ => composed::dense(x, weight, bias),
    }
}

/// The exact (erf) GELU, with gradients; one pass forward and backward on the CPU with `f32`.
///
/// # Shapes
/// - `x`: any; returns the same shape.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if fused_eligible(x) { x.contiguous()?.apply_op1(Act { gelu: true, mask: None }) } else { composed::gelu(x) }
}

/// `gelu(dense(x, weight, bias))`. Outside autograd (inference) on the CPU with `f32`, GELU
/// runs on each block of the product while it is still in cache.
pub(crate) fn dense_gelu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) if [x, weight, b].iter().all(|t| fused_eligible(t) && !t.track_op()) && x.rank() == 2 => {
            let op = crate::dense_kernel::Dense { gelu: true };
            x.contiguous()?.apply_op3_no_bwd(&weight.contiguous()?, &b.contiguous()?, &op)
        }
        _ => gelu(&dense(x, weight, bias)?),
    }
}

/// `dropout(act(x))` in one pass forward and one backward, `act` GELU or the identity: a dense
/// layer's epilogue in training. CPU and `f32` only: callers check [`fused_eligible`] and fall
/// back to the separate ops elsewhere.
pub(crate) fn act_dropout(x: &Tensor, gelu: bool, mask: MaskDraw) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Act { gelu, mask: Some(mask) })
}

/// `a * b + c`, fused into one instruction (and one rounding) where `FMA` says it is one.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `e^x` to about 2 ulp (Cody-Waite range reduction, degree-6 Taylor polynomial, the exponent
/// set by bit arithmetic), branch-free so that loops over it vectorise. libm's `expf` is a call
/// per element; it was 11% of inference on the Keras example (the attention softmax).
#[inline]
pub fn exp(x: f32) -> f32 {
    exp_with::<FMA_BUILD>(x)
}

/// [`exp`], with fused multiply-adds when `FMA` (the polynomial in 6 instead of 12 operations:
/// softmax went from 8.4% to 5.6% of a K inference profile).
#[inline(always)]
pub(crate) fn exp_with<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer in f32.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = madd::<FMA>(x, LOG2E, ROUND);
    let n = shifted - ROUND;
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, x));
    let mut p = madd::<FMA>(r, 1.0 / 720.0, 1.0 / 120.0);
    for c in [1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = madd::<FMA>(p, r, c);
    }
    // `shifted` holds `n` in its low mantissa bits: moving them into the exponent field is
    // integer arithmetic that vectorises, where `n as i32` is a saturating scalar conversion
    // per lane. The clamp keeps `n + 127` in 1..=254, and the shift drops the high bits.
    let scale = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
    p * scale
}

/// `erf` to within 1e-6 of libm (Abramowitz and Stegun 7.1.26, 1.5e-7 in exact arithmetic), with one
/// `exp`: several times cheaper than libm's `erff`, which was 10% of a training step.
#[inline]
pub fn erf(x: f32) -> f32 {
    erf_with::<FMA_BUILD>(x)
}

#[inline(always)]
fn erf_with<const FMA: bool>(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
    let z = x.abs();
    let t = 1.0 / madd::<FMA>(P, z, 1.0);
    let mut poly = A[4];
    for a in [A[3], A[2], A[1], A[0]] {
        poly = madd::<FMA>(poly, t, a);
    }
    let y = 1.0 - poly * t * exp_with::<FMA>(-z * z);
    y.copysign(x)
}

/// The exact (erf) GELU and its derivative: `x * Phi(x)` and `Phi(x) + x * phi(x)`.
#[inline(always)]
fn gelu_and_grad<const FMA: bool>(x: f32) -> (f32, f32) {
    const INV_SQRT2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let cdf = 0.5 * (1.0 + erf_with::<FMA>(x * INV_SQRT2));
    let pdf = INV_SQRT_2PI * exp_with::<FMA>(-0.5 * x * x);
    (x * cdf, madd::<FMA>(x, pdf, cdf))
}

simd_kernel! {
    fn gelu_rows(out: &mut [f32], x: &[f32]) {
        let n = out.len().min(x.len());
        for i in 0..n {
            out[i] = gelu_and_grad::<FMA>(x[i]).0;
        }
    }
}

simd_kernel! {
    pub(crate) fn gelu_rows_in_place(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu_and_grad::<FMA>(*v).0;
        }
    }
}

simd_kernel! {
    /// `g *= gelu'(x)`: the incoming gradient becomes that of GELU's input.
    fn gelu_grad_scale(g: &mut [f32], x: &[f32]) {
        let n = g.len().min(x.len());
        for i in 0..n {
            g[i] *= gelu_and_grad::<FMA>(x[i]).1;
        }
    }
}

simd_kernel! {
    /// Softmax's backward for rows of `n`, in place: `g = y * (g - sum(g * y))` per row.
    pub(crate) fn softmax_grad_rows(g: &mut [f32], y: &[f32], n: usize) {
        for (g, y) in g.chunks_exact_mut(n).zip(y.chunks_exact(n)) {
            let mut lanes = [0f32; 8];
            let (gc, yc) = (g.chunks_exact(8), y.chunks_exact(8));
            let tail: f32 = gc.remainder().iter().zip(yc.remainder()).map(|(a, b)| a * b).sum();
            for (a, b) in gc.zip(yc) {
                for j in 0..8 {
                    lanes[j] += a[j] * b[j];
                }
            }
            let dot = lanes.iter().sum::<f32>() + tail;
            for i in 0..n {
                g[i] = y[i] * (g[i] - dot);
            }
        }
    }
}

simd_kernel! {
    /// `a *= b`, elementwise.
    pub(crate) fn mul_in_place(a: &mut [f32], b: &[f32]) {
        let n = a.len().min(b.len());
        for i in 0..n {
            a[i] *= b[i];
        }
    }
}

/// Elements per parallel task of the elementwise kernels.
const ELEMS_PER_TASK: usize = ROWS_PER_TASK_MIN_ELEMS;

/// `dropout(gelu(x))`, `dropout(x)` or `gelu(x)`, elementwise.
struct Act {
    gelu: bool,
    mask: Option<MaskDraw>,
}

impl CustomOp1 for Act {
    fn name(&self) -> &'static str {
        if self.gelu { "vit-gelu" } else { "vit-dropout" }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, self.name())?;
        let out = par_rows(x.len(), ELEMS_PER_TASK, |c, out| {
            let x = &x[c * ELEMS_PER_TASK..][..out.len()];
            if self.gelu {
                gelu_rows(out, x);
            } else {
                out.copy_from_slice(x);
            }
            if let Some(mask) = &self.mask {
                mask.scale_in_place(c * ELEMS_PER_TASK, out);
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(match (self.gelu, &self.mask) {
            (true, mask) => x.apply_op2_no_bwd(&grad, &GeluBackward { mask: *mask })?,
            // The dropout's backward: the same draws scale the gradient.
            (false, Some(mask)) => grad.apply_op1_no_bwd(mask)?,
            (false, None) => grad,
        }))
    }
}

/// `grad * mask * gelu'(x)`: GELU's backward, after the dropout's when there is a mask.
struct GeluBackward {
    mask: Option<MaskDraw>,
}

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "vit-gelu-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let out = par_rows(x.len(), ELEMS_PER_TASK, |c, out| {
            let at = c * ELEMS_PER_TASK;
            out.copy_from_slice(&g[at..][..out.len()]);
            if let Some(mask) = &self.mask {
                mask.scale_in_place(at, out);
            }
            gelu_grad_scale(out, &x[at..][..out.len()]);
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Sums a `[R, cols]` matrix over its rows, in parallel blocks of rows.
pub(crate) struct ColumnSum {
    pub cols: usize,
}

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "vit-column-sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, self.name())?;
        let n = self.cols;
        let partials: Vec<Vec<f32>> = x
            .par_chunks(chunk_rows(n))
            .map(|block| {
                let mut acc = vec![0f32; n];
                for row in block.chunks_exact(n) {
                    acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                }
                acc
            })
            .collect();
        let mut sum = vec![0f32; n];
        for p in partials {
            sum.iter_mut().zip(p).for_each(|(a, v)| *a += v);
        }
        Ok((CpuStorage::F32(sum), Shape::from(n)))
    }
}
