//! A dense layer that is correct on any input layout.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::{Dropout, ops};

/// A function applied to every parameter of a layer by `map_weights`: a cast to the compute
/// dtype for mixed precision, a detach, a move to another device.
pub type WeightMap<'a> = dyn Fn(&Tensor) -> Result<Tensor> + 'a;

/// `y = x W^T + b` over the last dimension, with `weight: [out, in]` and `bias: [out]`
/// (PyTorch's layout). Initialised as Keras' `Dense`: Glorot-uniform weight, zero bias.
///
/// candle's CPU batched matmul gives wrong results for some non-contiguous 3-D inputs (see
/// the crate docs); this layer flattens its input to a contiguous 2-D matrix first, which is
/// also the fastest shape for the matmul.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A layer from `in_dim` to `out_dim` features, with parameters `vb/weight` and `vb/bias`.
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let bound = (6.0 / (in_dim + out_dim) as f64).sqrt();
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", Init::Uniform { lo: -bound, up: bound })?;
        let bias = if bias { Some(vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?) } else { None };
        Ok(Self { weight, bias })
    }

    /// A layer from existing tensors.
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// The same layer outside autograd (see [`crate::TransformerBlock::detached`]).
    pub fn detached(&self) -> Self {
        Self { weight: self.weight.detach(), bias: self.bias.as_ref().map(Tensor::detach) }
    }

    /// The same layer with `f` applied to each parameter (see [`crate::TransformerBlock::map_weights`]).
    pub fn map_weights(&self, f: &WeightMap) -> Result<Self> {
        Ok(Self { weight: f(&self.weight)?, bias: self.bias.as_ref().map(f).transpose()? })
    }

    /// The weight, `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[out]`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Linear {
    /// `gelu(x W^T + b)` with the exact GELU. On the CPU in `f32` the product starts from the
    /// bias, and outside autograd (a detached layer) GELU runs on each block of the product
    /// while it is in cache.
    ///
    /// # Shapes
    /// - `x`: `[.., in]`; returns `[.., out]`.
    pub fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, true, None)
    }

    /// `dropout(forward(x))`, or with `gelu`, `dropout(forward_gelu(x))`, the dropout only when
    /// `train`. On the CPU in `f32` the activation and the dropout run as one pass after the
    /// product (and one pass backward): the same values and masks as the separate calls.
    ///
    /// # Shapes
    /// - `x`: `[.., in]`; returns `[.., out]`.
    pub fn forward_dropout(&self, x: &Tensor, gelu: bool, dropout: &Dropout, train: bool) -> Result<Tensor> {
        let active = train && dropout.p() > 0.0;
        let fusable = self.bias.as_ref().is_some_and(ops::fused_eligible) && ops::fused_eligible(&self.weight);
        if active && fusable && ops::fused_eligible(x) {
            return self.apply(x, gelu, Some(dropout));
        }
        dropout.forward_t(&self.apply(x, gelu, None)?, train)
    }

    fn apply(&self, x: &Tensor, gelu: bool, dropout: Option<&Dropout>) -> Result<Tensor> {
        let in_dim = x.dim(D::Minus1)?;
        let mut out_dims = x.dims().to_vec();
        *out_dims.last_mut().expect("rank >= 1") = self.weight.dim(0)?;
        let rows = x.elem_count() / in_dim.max(1);
        // A 2-D input is used as it is: each reshape is a graph node whose backward allocates
        // a zeroed gradient and adds into it (see TransformerBlock, which feeds rows).
        let flat = x.rank() == 2;
        let x = x.contiguous()?;
        let x = if flat { x } else { x.reshape((rows, in_dim))? };
        let y = match dropout {
            // Only reached where `forward_dropout` found the fused path eligible.
            Some(dropout) => {
                let y = ops::dense(&x, &self.weight, self.bias.as_ref())?;
                ops::act_dropout(&y, gelu, dropout.reserve(y.elem_count()))?
            }
            None if gelu => ops::dense_gelu(&x, &self.weight, self.bias.as_ref())?,
            None => ops::dense(&x, &self.weight, self.bias.as_ref())?,
        };
        if flat { Ok(y) } else { y.reshape(out_dims) }
    }
}

impl Module for Linear {
    /// # Shapes
    /// - `x`: `[.., in]`; returns `[.., out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false, None)
    }
}
