//! A dense layer whose `f32` weight is stored transposed once, for inference (`--precision
//! f32` on the CPU): the weight and the op over it. The product is [`crate::dense`]'s; only
//! the weight's layout differs, so the values are the trained layer's within f32 rounding
//! (`gemm` may sum a product in another order when an operand's layout changes).
//!
//! Why: a trained layer keeps `W: [out, in]`, which the product reads as `W^T` column by
//! column, and the `gemm` crate then packs it one value at a time on every call. At batch 1
//! that packing was a fifth of a ViT-S forward pass; stored as `W^T: [in, out]`, it is packed
//! with whole-vector loads.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

use crate::cpu::f32_slice;
use crate::dense::{Product, WeightF32, dense_f32, prepared_fwd, prepared_input_grad};

/// A dense layer's `f32` weight stored transposed for inference (`x W^T + b`), with its bias.
pub struct F32Weight {
    /// `W^T: [in, out]`, contiguous; also what the input's gradient multiplies by.
    transposed: Tensor,
    bias: Vec<f32>,
}

impl std::fmt::Debug for F32Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "F32Weight([{}, {}] stored transposed)", self.out_dim(), self.in_dim())
    }
}

impl F32Weight {
    /// Stores `weight: [out, in]` (any float dtype, on the CPU) as `f32` `[in, out]` and keeps
    /// `bias: [out]` (zeros without one).
    pub fn from_tensors(weight: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Self> {
        let (out_dim, _) = weight.dims2()?;
        if !weight.device().is_cpu() {
            candle_core::bail!(
                "f32 weight: stored for the CPU, and this weight is on {:?}",
                weight.device().location()
            );
        }
        let transposed = weight.to_dtype(DType::F32)?.t()?.contiguous()?;
        let bias = match bias {
            Some(b) => b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0.0; out_dim],
        };
        if bias.len() != out_dim {
            candle_core::bail!("f32 weight: a bias of {} values for {out_dim} outputs", bias.len());
        }
        Ok(Self { transposed, bias })
    }

    /// `W^T: [in, out]`, contiguous. `transposed().t()` is the weight as given, in the same
    /// memory.
    pub fn transposed(&self) -> &Tensor {
        &self.transposed
    }

    /// Output channels.
    pub fn out_dim(&self) -> usize {
        self.transposed.dims()[1]
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.transposed.dims()[0]
    }
}

/// `x W^T + b` (GELU of it with `gelu`) on a weight stored transposed.
pub(crate) struct DenseF32 {
    pub weight: Arc<F32Weight>,
    pub gelu: bool,
}

impl DenseF32 {
    fn rows(&self, x: &[f32], rows: usize, gelu: bool) -> candle_core::Result<Vec<f32>> {
        let (in_dim, out_dim) = (self.weight.in_dim(), self.weight.out_dim());
        // A read lock for the call: the weight, outside autograd, is never written.
        let (storage, layout) = self.weight.transposed.storage_and_layout();
        let data = match &*storage {
            candle_core::Storage::Cpu(cpu) => f32_slice(cpu, layout, "vit-dense-f32")?,
            _ => candle_core::bail!("vit-dense-f32: the weight is not on the CPU"),
        };
        let weight = WeightF32 { data, out_dim, strides: (out_dim, 1) };
        Ok(dense_f32(x, (rows, in_dim), weight, &self.weight.bias, gelu))
    }
}

impl CustomOp1 for DenseF32 {
    fn name(&self) -> &'static str {
        "vit-dense-f32"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = (self.weight.in_dim(), self.weight.out_dim());
        prepared_fwd(self.name(), (storage, layout), dims, self.gelu, |x, rows, gelu| self.rows(x, rows, gelu))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // grad · W, with W = (W^T)^T.
        let product = Product { transpose_rhs: true, ..Product::default() };
        let rows_of = |x: &[f32], rows, gelu| self.rows(x, rows, gelu);
        Ok(Some(prepared_input_grad(x, grad, self.gelu, rows_of, &self.weight.transposed, product)?))
    }
}
