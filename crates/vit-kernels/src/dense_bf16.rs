//! A dense layer whose weight is packed once in bf16 (inference with `--precision bf16` on the
//! CPU): the packed weight and the op over it. The product itself is [`crate::bf16`]'s; the
//! backward pass (for relevance maps) multiplies through the `f32` weight with
//! [`crate::dense`]'s product op, so this file sits above both.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

use crate::bf16::{PackedRight, dense_rows};
use crate::dense::{Product, prepared_fwd, prepared_input_grad};
use crate::isa::Bf16Kernel;

/// A dense layer's weight packed once as bf16 for inference (`x W^T + b`), with its bias,
/// and the `f32` weight for the input's gradient (relevance maps).
pub struct Bf16Weight {
    packed: PackedRight,
    bias: Vec<f32>,
    /// `[out, in]` in `f32`, as given.
    weight: Tensor,
}

impl std::fmt::Debug for Bf16Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (rows, cols) = self.packed.dims();
        write!(f, "Bf16Weight([{cols}, {rows}])")
    }
}

impl Bf16Weight {
    /// Packs `weight: [out, in]` and keeps `bias: [out]` (zeros without one).
    pub fn from_tensors(weight: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        let weight = weight.to_dtype(DType::F32)?.contiguous()?;
        let packed = PackedRight::weight(&weight.flatten_all()?.to_vec1::<f32>()?, out_dim, in_dim)?;
        let bias = match bias {
            Some(b) => b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0.0; out_dim],
        };
        if bias.len() != out_dim {
            candle_core::bail!("bf16 weight: a bias of {} values for {out_dim} outputs", bias.len());
        }
        Ok(Self { packed, bias, weight })
    }

    /// Output channels.
    pub fn out_dim(&self) -> usize {
        self.packed.dims().1
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.packed.dims().0
    }
}

/// `x W^T + b` (GELU of it with `gelu`) with a packed bf16 weight.
pub(crate) struct DenseBf16 {
    pub weight: Arc<Bf16Weight>,
    pub gelu: bool,
    pub kernel: Bf16Kernel,
}

impl DenseBf16 {
    fn rows(&self, x: &[f32], rows: usize, gelu: bool) -> candle_core::Result<Vec<f32>> {
        dense_rows(x, rows, &self.weight.packed, &self.weight.bias, gelu, self.kernel)
    }
}

impl CustomOp1 for DenseBf16 {
    fn name(&self) -> &'static str {
        "vit-dense-bf16"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = (self.weight.in_dim(), self.weight.out_dim());
        prepared_fwd(self.name(), (storage, layout), dims, self.gelu, |x, rows, gelu| self.rows(x, rows, gelu))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let product = Product { bf16: Some(self.kernel), ..Product::default() };
        let rows_of = |x: &[f32], rows, gelu| self.rows(x, rows, gelu);
        Ok(Some(prepared_input_grad(x, grad, self.gelu, rows_of, &self.weight.weight, product)?))
    }
}
