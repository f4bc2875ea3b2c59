//! The one place that decides how an op runs for the device and dtype of its inputs.
//!
//! Every public op of this crate asks [`select`] and runs the path it names; no other code
//! looks at devices or dtypes to choose a kernel. GPU kernels of this crate's own, when they
//! land, get a path here too.

use candle_core::{DType, Tensor};

/// How an op runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// Every input is `f32` on the CPU: this crate's fused kernels, forward and backward
    /// (SIMD row kernels, gemm-based dense and attention kernels).
    CpuFused,
    /// Every input is `f32` on a GPU: candle's fused forward kernels where candle has one
    /// (softmax, LayerNorm) with a backward pass attached by formula; composed ops otherwise.
    GpuAttached,
    /// Anything else (other dtypes, mixed devices): the [`crate::composed`] reference ops,
    /// built from candle ops that have a backward pass.
    Composed,
}

/// The path for an op whose inputs are `inputs`.
pub fn select(inputs: &[&Tensor]) -> KernelPath {
    let f32_on = |cpu: bool| inputs.iter().all(|t| t.device().is_cpu() == cpu && t.dtype() == DType::F32);
    if f32_on(true) {
        KernelPath::CpuFused
    } else if f32_on(false) {
        KernelPath::GpuAttached
    } else {
        KernelPath::Composed
    }
}

/// `bf16` and `f16`: softmax and LayerNorm compute in `f32` for them, as mixed-precision
/// training does everywhere (their sums and variances lose too much in 8 or 11 bits of
/// mantissa).
pub(crate) fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::BF16 | DType::F16)
}
