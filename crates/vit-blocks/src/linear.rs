//! A dense layer that is correct on any input layout, and the walks over a module tree
//! ([`ModuleTree`], [`WeightMap`]) that every module, this one first, implements.

use std::ops::Range;
use std::sync::Arc;

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use vit_kernels::{Bf16Weight, F32Weight, Int8Weight};

use crate::{Dropout, NamedParameter};

/// What `map_weights` applies to a module tree: a function of each parameter (a cast to the
/// compute dtype for mixed precision, a detach, a move to another device), and of each dense
/// layer as a whole, which by default is that function of its weight and bias. Any
/// `Fn(&Tensor) -> Result<Tensor>` is one; [`QuantizeInt8`], [`PackBf16`] and
/// [`TransposeF32`] replace each dense layer by its int8, packed bf16 or transposed `f32` form.
pub trait WeightMap {
    /// The new value of one parameter.
    fn tensor(&self, t: &Tensor) -> Result<Tensor>;

    /// The new form of one dense layer: by default its parameters mapped by
    /// [`tensor`](Self::tensor).
    fn linear(&self, layer: &Linear) -> Result<Linear> {
        layer.map_tensors(self)
    }

    /// Dense layers that read the same input (query, key and value) as one layer named
    /// `prefix`, their outputs side by side, in this map's form of a dense layer; or `None`, the
    /// default, to map them one by one. The inference forms ([`PackBf16`], [`TransposeF32`],
    /// [`QuantizeInt8`]) fuse them: one product of the input instead of several small ones.
    fn fused(&self, prefix: &str, layers: &[&Linear]) -> Result<Option<Linear>> {
        let _ = (prefix, layers);
        Ok(None)
    }
}

impl<F: Fn(&Tensor) -> Result<Tensor>> WeightMap for F {
    fn tensor(&self, t: &Tensor) -> Result<Tensor> {
        self(t)
    }
}

/// A module, or a tree of them (a block, a whole model): its parameters, and the same tree with
/// a function of each weight applied.
pub trait ModuleTree: Sized {
    /// Every parameter with its checkpoint name and whether weight decay applies, in the order
    /// of the tree. An optimizer takes these instead of guessing from names.
    fn parameters(&self) -> Vec<NamedParameter>;

    /// The same tree with `f` applied to each parameter and each dense layer (a cast for mixed
    /// precision, int8 or packed bf16 dense layers for inference); it shares the dropout
    /// stream.
    fn map_weights(&self, f: &dyn WeightMap) -> Result<Self>;

    /// The same tree with its parameters outside autograd, for inference. It shares storage
    /// with the trained variables, but no operation keeps its inputs for a backward pass, so
    /// activations are freed as they are consumed (inference at batch 256 on the Keras example
    /// needs a fraction of the memory). Train with the tree itself; evaluate with this.
    fn detached(&self) -> Self {
        self.map_weights(&Detach).expect("detaching a tensor cannot fail")
    }
}

/// Every parameter outside autograd; a dense layer keeps its packed int8 or bf16 form, made
/// from the same values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Detach;

impl WeightMap for Detach {
    fn tensor(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.detach())
    }

    fn linear(&self, layer: &Linear) -> Result<Linear> {
        Ok(Linear {
            weight: layer.weight.detach(),
            bias: layer.bias.as_ref().map(Tensor::detach),
            prefix: layer.prefix.clone(),
            packed: layer.packed.clone(),
        })
    }
}

/// Every dense layer packed as bf16 for inference ([`Linear::packed_bf16`]); other
/// parameters stay as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct PackBf16;

impl WeightMap for PackBf16 {
    fn tensor(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }

    fn linear(&self, layer: &Linear) -> Result<Linear> {
        layer.packed_bf16()
    }

    fn fused(&self, prefix: &str, layers: &[&Linear]) -> Result<Option<Linear>> {
        self.linear(&Linear::concat(prefix, layers)?).map(Some)
    }
}

/// Every dense layer's `f32` weight stored transposed for inference
/// ([`Linear::transposed_f32`]); other parameters stay as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransposeF32;

impl WeightMap for TransposeF32 {
    fn tensor(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }

    fn linear(&self, layer: &Linear) -> Result<Linear> {
        layer.transposed_f32()
    }

    fn fused(&self, prefix: &str, layers: &[&Linear]) -> Result<Option<Linear>> {
        self.linear(&Linear::concat(prefix, layers)?).map(Some)
    }
}

/// Every dense layer quantized to int8 for inference ([`Linear::quantized_int8`]); other
/// parameters stay as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuantizeInt8;

impl WeightMap for QuantizeInt8 {
    fn tensor(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }

    fn linear(&self, layer: &Linear) -> Result<Linear> {
        layer.quantized_int8()
    }

    fn fused(&self, prefix: &str, layers: &[&Linear]) -> Result<Option<Linear>> {
        self.linear(&Linear::concat(prefix, layers)?).map(Some)
    }
}

/// `y = x W^T + b` over the last dimension, with `weight: [out, in]` and `bias: [out]`
/// (PyTorch's layout). Initialised as Keras' `Dense`: Glorot-uniform weight, zero bias.
///
/// candle 0.11's CPU batched matmul gives wrong results for some non-contiguous 3-D inputs
/// (`candle_nn::Linear` on `x.transpose(1, 2)`); this layer flattens its input to a contiguous
/// 2-D matrix first, which is also the shape the dense kernels take.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
    prefix: String,
    /// The packed form that the forward passes run, once
    /// [`quantized_int8`](Self::quantized_int8), [`packed_bf16`](Self::packed_bf16) or
    /// [`transposed_f32`](Self::transposed_f32) made one; the `f32` weight and bias stay for
    /// `parameters` and checkpoints.
    packed: Option<Packed>,
}

/// Where a layer's `[out, in]` weight lives.
#[derive(Debug, Clone)]
enum Weight {
    /// A tensor: the variable in training, its detached value, a cast.
    Tensor(Tensor),
    /// Output rows of a weight stored in panels for `f32` inference ([`F32Weight`]), its only
    /// copy: copied out when asked for (checkpoints, another form).
    Panels(Arc<F32Weight>, Range<usize>),
}

impl Weight {
    /// The weight as a tensor (a copy out of the panels).
    fn tensor(&self) -> Result<Tensor> {
        match self {
            Self::Tensor(t) => Ok(t.clone()),
            Self::Panels(w, rows) => w.weight_rows(rows.clone()),
        }
    }

    fn out_dim(&self) -> Result<usize> {
        match self {
            Self::Tensor(t) => t.dim(0),
            Self::Panels(_, rows) => Ok(rows.len()),
        }
    }

    fn in_dim(&self) -> Result<usize> {
        match self {
            Self::Tensor(t) => t.dim(1),
            Self::Panels(w, _) => Ok(w.in_dim()),
        }
    }

    fn detach(&self) -> Self {
        match self {
            Self::Tensor(t) => Self::Tensor(t.detach()),
            panels => panels.clone(),
        }
    }

    /// Output rows `start..start + len`, without a copy.
    fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        Ok(match self {
            Self::Tensor(t) => Self::Tensor(t.narrow(0, start, len)?),
            Self::Panels(w, rows) => Self::Panels(w.clone(), rows.start + start..rows.start + start + len),
        })
    }

    /// Where it is, when not on the CPU.
    fn off_cpu(&self) -> Option<candle_core::DeviceLocation> {
        match self {
            Self::Tensor(t) if !t.device().is_cpu() => Some(t.device().location()),
            _ => None,
        }
    }
}

/// A dense layer's weight prepared once for inference on the CPU.
#[derive(Debug, Clone)]
enum Packed {
    Int8(Arc<Int8Weight>),
    Bf16(Arc<Bf16Weight>),
    F32(Arc<F32Weight>),
}

impl Linear {
    /// A layer from `in_dim` to `out_dim` features, with parameters `vb/weight` and `vb/bias`.
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let bound = (6.0 / (in_dim + out_dim) as f64).sqrt();
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", Init::Uniform { lo: -bound, up: bound })?;
        let bias = if bias { Some(vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?) } else { None };
        Ok(Self { weight: Weight::Tensor(weight), bias, prefix: vb.prefix(), packed: None })
    }

    /// A layer from existing tensors, its parameters named `prefix.weight` and `prefix.bias`.
    pub fn from_weights(prefix: &str, weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight: Weight::Tensor(weight), bias, prefix: prefix.to_string(), packed: None }
    }

    /// `layers` (the same input width, on one device) as one layer named `prefix` whose outputs
    /// are theirs side by side: their weights stacked, `[sum of out, in]`, and their biases (zeros
    /// for a layer without one; no bias if none has one). Outside autograd: a form for inference.
    pub fn concat(prefix: &str, layers: &[&Linear]) -> Result<Self> {
        let Some(first) = layers.first() else {
            candle_core::bail!("{prefix}: no dense layers to put side by side");
        };
        let in_dim = first.weight.in_dim()?;
        for layer in layers {
            if layer.weight.in_dim()? != in_dim {
                candle_core::bail!(
                    "{prefix}: {} takes {} inputs and {} takes {in_dim}; only layers of one input width are put side by side",
                    layer.prefix,
                    layer.weight.in_dim()?,
                    first.prefix
                );
            }
        }
        let weights = layers.iter().map(|l| Ok(l.weight.tensor()?.detach())).collect::<Result<Vec<_>>>()?;
        let weight = Tensor::cat(&weights, 0)?;
        let bias = if layers.iter().any(|l| l.bias.is_some()) {
            let biases = layers
                .iter()
                .map(|l| match &l.bias {
                    Some(b) => Ok(b.detach()),
                    None => Tensor::zeros(l.weight.out_dim()?, weight.dtype(), weight.device()),
                })
                .collect::<Result<Vec<_>>>()?;
            Some(Tensor::cat(&biases, 0)?)
        } else {
            None
        };
        Ok(Self { weight: Weight::Tensor(weight), bias, prefix: prefix.to_string(), packed: None })
    }

    /// The layers that [`concat`](Self::concat) put side by side in this one, cut out of its
    /// weight and bias (views of the same memory, outside autograd, named and with a bias as
    /// `like`), to stand for them in `parameters` and checkpoints.
    pub fn split_outputs(&self, like: &[&Linear]) -> Result<Vec<Linear>> {
        let mut start = 0;
        let mut out = Vec::with_capacity(like.len());
        for layer in like {
            let width = layer.weight.out_dim()?;
            if start + width > self.weight.out_dim()? {
                candle_core::bail!(
                    "{}: {} outputs, fewer than the layers cut from it",
                    self.prefix,
                    self.weight.out_dim()?
                );
            }
            let bias = match (&layer.bias, &self.bias) {
                (Some(_), Some(b)) => Some(b.narrow(0, start, width)?),
                _ => None,
            };
            out.push(Self {
                weight: self.weight.narrow(start, width)?,
                bias,
                prefix: layer.prefix.clone(),
                packed: None,
            });
            start += width;
        }
        Ok(out)
    }

    /// The same layer with `f` applied to its weight and bias; a packed form is dropped, since
    /// it was made from the old values.
    pub fn map_tensors(&self, f: &(impl WeightMap + ?Sized)) -> Result<Self> {
        Ok(Self {
            weight: Weight::Tensor(f.tensor(&self.weight.tensor()?)?),
            bias: self.bias.as_ref().map(|b| f.tensor(b)).transpose()?,
            prefix: self.prefix.clone(),
            packed: None,
        })
    }

    /// The same layer, outside autograd, whose forward passes run in int8 on the CPU: the
    /// weight quantized once per output channel, the input per row at run time
    /// ([`vit_kernels::dense_int8`]). For inference only: training it is an error.
    pub fn quantized_int8(&self) -> Result<Self> {
        self.check_cpu("int8")?;
        let int8 = Int8Weight::from_tensors(&self.weight.tensor()?, self.bias.as_ref())
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", self.prefix)))?;
        Ok(Self { packed: Some(Packed::Int8(Arc::new(int8))), ..self.detached() })
    }

    /// The same layer, outside autograd, whose forward passes multiply in bf16 with `f32` sums
    /// on the CPU, the weight packed once ([`vit_kernels::dense_bf16`]). For inference only:
    /// training it is an error (training in bf16 packs the weights at each step instead).
    pub fn packed_bf16(&self) -> Result<Self> {
        self.check_cpu("bf16 (packed)")?;
        let bf16 = Bf16Weight::from_tensors(&self.weight.tensor()?, self.bias.as_ref())
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", self.prefix)))?;
        Ok(Self { packed: Some(Packed::Bf16(Arc::new(bf16))), ..self.detached() })
    }

    /// The same layer, outside autograd, whose forward passes read the `f32` weight stored
    /// transposed in panels of 64 output channels ([`vit_kernels::F32Weight`],
    /// [`vit_kernels::dense_f32_transposed`]): the same values within f32 rounding, faster for
    /// few rows (one image). The panels are the layer's only copy of the weight;
    /// [`weight`](Self::weight) and `parameters` copy it out. For inference only.
    pub fn transposed_f32(&self) -> Result<Self> {
        self.check_cpu("f32 (transposed)")?;
        let f32w = Arc::new(
            F32Weight::from_tensors(&self.weight.tensor()?, self.bias.as_ref())
                .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", self.prefix)))?,
        );
        let weight = Weight::Panels(f32w.clone(), 0..f32w.out_dim());
        Ok(Self { weight, packed: Some(Packed::F32(f32w)), ..self.detached() })
    }

    fn check_cpu(&self, what: &str) -> Result<()> {
        if let Some(location) = self.weight.off_cpu() {
            candle_core::bail!("{}: {what} inference runs on the CPU, and this layer is on {location:?}", self.prefix);
        }
        Ok(())
    }

    /// Whether the forward passes run in int8 ([`quantized_int8`](Self::quantized_int8)).
    pub fn is_int8(&self) -> bool {
        matches!(self.packed, Some(Packed::Int8(_)))
    }

    /// Whether the forward passes run on a packed bf16 weight
    /// ([`packed_bf16`](Self::packed_bf16)).
    pub fn is_packed_bf16(&self) -> bool {
        matches!(self.packed, Some(Packed::Bf16(_)))
    }

    /// Whether the forward passes read the `f32` weight stored transposed
    /// ([`transposed_f32`](Self::transposed_f32)).
    pub fn is_transposed_f32(&self) -> bool {
        matches!(self.packed, Some(Packed::F32(_)))
    }

    /// `x W^T + b` (GELU of it with `gelu`) on the packed weight, if there is one.
    fn forward_packed(&self, rows: &Tensor, gelu: bool) -> Option<Result<Tensor>> {
        Some(match self.packed.as_ref()? {
            Packed::Int8(w) => vit_kernels::dense_int8(rows, w, gelu),
            Packed::Bf16(w) => vit_kernels::dense_bf16(rows, w, gelu),
            Packed::F32(w) => vit_kernels::dense_f32_transposed(rows, w, gelu),
        })
    }

    /// The checkpoint name of its parameters, without `.weight` or `.bias`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The weight, `[out, in]`: for a layer stored for `f32` inference
    /// ([`transposed_f32`](Self::transposed_f32)), a copy out of its panels.
    pub fn weight(&self) -> Tensor {
        self.weight.tensor().expect("the stored weight's own rows")
    }

    /// The bias, `[out]`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `gelu(x W^T + b)` with the exact GELU. On the CPU in `f32` the product starts from the
    /// bias, and outside autograd (a detached layer) GELU runs on each block of the product
    /// while it is in cache.
    ///
    /// # Shapes
    /// - `x`: `[.., in]`; returns `[.., out]`.
    pub fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        self.on_rows(x, |rows| match self.forward_packed(rows, true) {
            Some(y) => y,
            None => vit_kernels::dense_gelu(rows, &self.weight.tensor()?, self.bias.as_ref()),
        })
    }

    /// `dropout(forward(x))`, or with `gelu`, `dropout(forward_gelu(x))`, the dropout only when
    /// `train`. On the CPU in `f32` the activation and the dropout run as one pass after the
    /// product (and one pass backward): the same values and masks as the separate calls.
    ///
    /// # Shapes
    /// - `x`: `[.., in]`; returns `[.., out]`.
    pub fn forward_dropout(&self, x: &Tensor, gelu: bool, dropout: &Dropout, train: bool) -> Result<Tensor> {
        if self.packed.is_some() {
            if train {
                candle_core::bail!(
                    "{}: a layer prepared for inference (int8, packed bf16, transposed f32) cannot be trained",
                    self.prefix
                );
            }
            return self.on_rows(x, |rows| self.forward_packed(rows, gelu).expect("a packed layer"));
        }
        self.on_rows(x, |rows| {
            let mask = dropout.mask(rows.dim(0)? * self.weight.out_dim()?, train);
            vit_kernels::dense_dropout(rows, &self.weight.tensor()?, self.bias.as_ref(), gelu, mask.as_ref())
        })
    }

    /// `op` on `x` as a contiguous `[rows, in]` matrix, its result shaped back to `x`'s leading
    /// dimensions. A 2-D input is used as it is: each reshape is a graph node whose backward
    /// allocates a zeroed gradient and adds into it (see `TransformerBlock`, which feeds rows).
    fn on_rows(&self, x: &Tensor, op: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let in_dim = x.dim(D::Minus1)?;
        let mut out_dims = x.dims().to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = self.weight.out_dim()?;
        }
        let rows = x.elem_count() / in_dim.max(1);
        let flat = x.rank() == 2;
        let x = x.contiguous()?;
        let y = op(&if flat { x } else { x.reshape((rows, in_dim))? })?;
        if flat { Ok(y) } else { y.reshape(out_dims) }
    }
}

impl ModuleTree for Linear {
    /// The layer as `f` maps dense layers ([`WeightMap::linear`]; see
    /// [`crate::TransformerBlock::map_weights`]).
    fn map_weights(&self, f: &dyn WeightMap) -> Result<Self> {
        f.linear(self)
    }

    /// Its parameters: the weight decays, the bias does not.
    fn parameters(&self) -> Vec<NamedParameter> {
        let weight = self.weight();
        let mut out = vec![NamedParameter::new(&self.prefix, "weight", &weight, true)];
        out.extend(self.bias.iter().map(|b| NamedParameter::new(&self.prefix, "bias", b, false)));
        out
    }
}

impl Module for Linear {
    /// # Shapes
    /// - `x`: `[.., in]`; returns `[.., out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.on_rows(x, |rows| match self.forward_packed(rows, false) {
            Some(y) => y,
            None => vit_kernels::dense(rows, &self.weight.tensor()?, self.bias.as_ref()),
        })
    }
}
