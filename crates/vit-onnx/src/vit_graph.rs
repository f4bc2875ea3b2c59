//! The ViT as an ONNX graph, layer by layer in the order of [`Vit::forward`] at inference:
//! patches (TensorFlow's `extract_patches`, VALID, stride = size), the patch projection, the
//! class token and positions, the pre-norm blocks, the final LayerNorm, pooling, the head.
//!
//! Dropout and stochastic depth are the identity at inference and are left out. Two exact
//! rewrites make the graph faster in any runtime: query, key and value are one product (the
//! weights side by side, then a `Split`), and the score scale `1/sqrt(key_dim)` is folded
//! into the query's weight and bias.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use vit_model::{HeadKind, ModuleTree, Vit, VitConfig};

use crate::ExportError;
use crate::graph::{Attr, GraphBuilder};
use crate::quantize::{QuantizedDense, quantize_per_output_channel};

/// How the dense layers are stored and computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DenseForm {
    /// `MatMul` and `Add` on float32 weights.
    Float32,
    /// int8 weights per output channel, activations quantized per row at run time
    /// (`MatMulInteger`), as `vit`'s `--precision int8`.
    Int8,
}

/// The model's parameters by checkpoint name, as float32.
pub(crate) struct Weights {
    by_name: HashMap<String, Tensor>,
}

impl Weights {
    pub(crate) fn of(model: &Vit) -> Self {
        let by_name = model.parameters().into_iter().map(|p| (p.name, p.tensor)).collect();
        Self { by_name }
    }

    /// `name`'s values (row-major) and dimensions.
    fn get(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), ExportError> {
        let tensor = self.by_name.get(name).ok_or_else(|| ExportError::MissingParameter(name.to_string()))?;
        values(tensor)
    }

    fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

pub(crate) fn values(tensor: &Tensor) -> Result<(Vec<usize>, Vec<f32>), ExportError> {
    let dims = tensor.dims().to_vec();
    let flat = tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok((dims, flat))
}

/// `[rows, cols]` row-major to `[cols, rows]`.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// A dense layer's weight `[out, in]` and bias `[out]` (zeros when it has none), in float32.
struct DenseWeights {
    out_dim: usize,
    in_dim: usize,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl DenseWeights {
    fn read(weights: &Weights, prefix: &str) -> Result<Self, ExportError> {
        let (dims, weight) = weights.get(&format!("{prefix}.weight"))?;
        let [out_dim, in_dim] = dims[..] else {
            return Err(ExportError::Shape(format!("{prefix}.weight is {dims:?}, expected [out, in]")));
        };
        let bias_name = format!("{prefix}.bias");
        let bias = if weights.has(&bias_name) { Some(weights.get(&bias_name)?.1) } else { None };
        Ok(Self { out_dim, in_dim, weight, bias })
    }

    /// The layers side by side as one: their outputs concatenated.
    fn stacked(parts: &[DenseWeights]) -> Self {
        let in_dim = parts[0].in_dim;
        let out_dim = parts.iter().map(|p| p.out_dim).sum();
        let weight = parts.iter().flat_map(|p| p.weight.iter().copied()).collect();
        let bias = parts
            .iter()
            .any(|p| p.bias.is_some())
            .then(|| parts.iter().flat_map(|p| p.bias.clone().unwrap_or_else(|| vec![0.0; p.out_dim])).collect());
        Self { out_dim, in_dim, weight, bias }
    }

    /// Every weight and bias multiplied by `factor`.
    fn scaled(mut self, factor: f32) -> Self {
        self.weight.iter_mut().for_each(|w| *w *= factor);
        if let Some(b) = &mut self.bias {
            b.iter_mut().for_each(|v| *v *= factor);
        }
        self
    }
}

/// Writes the graph of `model` into `g`, reading `input` (`[B, H, W, C]`), and returns the
/// name of the logits (`[B, num_classes]`).
pub(crate) fn build(g: &mut GraphBuilder, model: &Vit, input: &str, form: DenseForm) -> Result<String, ExportError> {
    let cfg = model.config();
    let weights = Weights::of(model);
    let mut emit = Emitter { g, weights: &weights, form };
    let tokens = emit.patch_tokens(cfg, input)?;
    let mut x = emit.embed(cfg, model, &tokens, input)?;
    for i in 0..cfg.num_layers {
        x = emit.block(cfg, i, &x)?;
    }
    let pooled = match cfg.head {
        HeadKind::ClassToken => {
            let normed = emit.layer_norm(&x, "norm", cfg.layer_norm_eps)?;
            let first = emit.g.int64s("class_index", &[], &[0]);
            emit.g.node("Gather", &[&normed, &first], &[("axis", Attr::Int(1))])
        }
        HeadKind::MeanPool if cfg.fc_norm => {
            let mean = emit.g.node("ReduceMean", &[&x], &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))]);
            emit.layer_norm(&mean, "norm", cfg.layer_norm_eps)?
        }
        HeadKind::MeanPool => {
            let normed = emit.layer_norm(&x, "norm", cfg.layer_norm_eps)?;
            emit.g.node("ReduceMean", &[&normed], &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))])
        }
        HeadKind::Flatten => {
            let normed = emit.layer_norm(&x, "norm", cfg.layer_norm_eps)?;
            emit.g.node("Flatten", &[&normed], &[("axis", Attr::Int(1))])
        }
    };
    let mut h = pooled;
    for j in 0..cfg.head_units.len() {
        h = emit.dense(&h, &format!("head.layers.{j}"), true)?;
    }
    emit.dense(&h, "head.classifier", false)
}

struct Emitter<'a> {
    g: &'a mut GraphBuilder,
    weights: &'a Weights,
    form: DenseForm,
}

impl Emitter<'_> {
    /// `[B, H, W, C]` to `[B, N, p*p*C]`, each patch's values in (row, column, channel) order
    /// as TensorFlow's `extract_patches` lays them out; rows and columns that do not fill a
    /// patch are dropped (VALID).
    fn patch_tokens(&mut self, cfg: &VitConfig, input: &str) -> Result<String, ExportError> {
        let p = cfg.patch_size;
        let (rows, cols) = cfg.grid();
        let [h, w] = cfg.image_size;
        let mut images = input.to_string();
        if rows * p != h || cols * p != w {
            let starts = self.g.int64_vector("slice_starts", &[0, 0]);
            let ends = self.g.int64_vector("slice_ends", &[(rows * p) as i64, (cols * p) as i64]);
            let axes = self.g.int64_vector("slice_axes", &[1, 2]);
            images = self.g.node("Slice", &[&images, &starts, &ends, &axes], &[]);
        }
        let c = cfg.channels as i64;
        let (r, q, pi) = (rows as i64, cols as i64, p as i64);
        let split = self.g.int64_vector("patch_grid", &[-1, r, pi, q, pi, c]);
        let grid = self.g.node("Reshape", &[&images, &split], &[]);
        let ordered = self.g.node("Transpose", &[&grid], &[("perm", Attr::Ints(vec![0, 1, 3, 2, 4, 5]))]);
        let flat = self.g.int64_vector("patch_rows", &[-1, r * q, pi * pi * c]);
        Ok(self.g.node("Reshape", &[&ordered, &flat], &[]))
    }

    /// The patch projection, the class token (first) and the position table.
    fn embed(&mut self, cfg: &VitConfig, model: &Vit, tokens: &str, input: &str) -> Result<String, ExportError> {
        let mut x = self.dense(tokens, "patch_encoder.projection", false)?;
        let d = cfg.projection_dim;
        if cfg.head == HeadKind::ClassToken {
            let (_, token) = self.weights.get("patch_encoder.class_token")?;
            let token = self.g.initializer("patch_encoder.class_token", &[1, 1, d], &token);
            let batch = self.g.node("Shape", &[input], &[("start", Attr::Int(0)), ("end", Attr::Int(1))]);
            let rest = self.g.int64_vector("token_shape", &[1, d as i64]);
            let shape = self.g.node("Concat", &[&batch, &rest], &[("axis", Attr::Int(0))]);
            let tokens = self.g.node("Expand", &[&token, &shape], &[]);
            x = self.g.node("Concat", &[&tokens, &x], &[("axis", Attr::Int(1))]);
        }
        // The table the model adds, learned or computed (sin-cos): the same either way.
        let (dims, table) = values(model.encoder().position_table())?;
        let table = self.g.initializer("patch_encoder.position_embedding.weight", &dims, &table);
        Ok(self.g.node("Add", &[&x, &table], &[]))
    }

    /// One pre-norm block: `x + attention(norm1(x))`, then `x + mlp(norm2(x))`, each branch
    /// multiplied by its layer scale when the model has them.
    fn block(&mut self, cfg: &VitConfig, i: usize, x: &str) -> Result<String, ExportError> {
        let prefix = format!("blocks.{i}");
        let normed = self.layer_norm(x, &format!("{prefix}.norm1"), cfg.layer_norm_eps)?;
        let attended = self.attention(cfg, &format!("{prefix}.attention"), &normed)?;
        let attended = self.layer_scale(&attended, &format!("{prefix}.layer_scale1"))?;
        let x = self.g.node("Add", &[x, &attended], &[]);
        let normed = self.layer_norm(&x, &format!("{prefix}.norm2"), cfg.layer_norm_eps)?;
        let mut h = normed;
        let last = cfg.mlp_units.len() - 1;
        for j in 0..cfg.mlp_units.len() {
            h = self.dense(&h, &format!("{prefix}.mlp.layers.{j}"), j < last || cfg.mlp_activation_on_last)?;
        }
        let h = self.layer_scale(&h, &format!("{prefix}.layer_scale2"))?;
        Ok(self.g.node("Add", &[&x, &h], &[]))
    }

    fn layer_scale(&mut self, x: &str, name: &str) -> Result<String, ExportError> {
        if !self.weights.has(name) {
            return Ok(x.to_string());
        }
        let (dims, gamma) = self.weights.get(name)?;
        let gamma = self.g.initializer(name, &dims, &gamma);
        Ok(self.g.node("Mul", &[x, &gamma], &[]))
    }

    /// Multi-head self-attention on `[B, T, D]`: one product for query, key and value.
    fn attention(&mut self, cfg: &VitConfig, prefix: &str, x: &str) -> Result<String, ExportError> {
        let (heads, dk) = (cfg.num_heads as i64, cfg.key_dim as i64);
        let dv = cfg.value_dim.unwrap_or(cfg.key_dim) as i64;
        let scale = 1.0 / (cfg.key_dim as f64).sqrt();
        let query = DenseWeights::read(self.weights, &format!("{prefix}.query"))?.scaled(scale as f32);
        let key = DenseWeights::read(self.weights, &format!("{prefix}.key"))?;
        let value = DenseWeights::read(self.weights, &format!("{prefix}.value"))?;
        let qkv = DenseWeights::stacked(&[query, key, value]);
        let qkv = self.dense_from(x, &format!("{prefix}.qkv"), &qkv, false)?;
        let sizes = self.g.int64_vector("qkv_sizes", &[heads * dk, heads * dk, heads * dv]);
        let parts = self.g.node_n("Split", &[&qkv, &sizes], &[("axis", Attr::Int(-1))], 3);
        let heads_of = |g: &mut GraphBuilder, t: &str, size: i64, perm: Vec<i64>| {
            let shape = g.int64_vector("head_shape", &[0, 0, heads, size]);
            let split = g.node("Reshape", &[t, &shape], &[]);
            g.node("Transpose", &[&split], &[("perm", Attr::Ints(perm))])
        };
        let q = heads_of(self.g, &parts[0], dk, vec![0, 2, 1, 3]); // [B, H, T, dk]
        let k = heads_of(self.g, &parts[1], dk, vec![0, 2, 3, 1]); // [B, H, dk, T]
        let v = heads_of(self.g, &parts[2], dv, vec![0, 2, 1, 3]); // [B, H, T, dv]
        let scores = self.g.node("MatMul", &[&q, &k], &[]);
        let weights = self.g.node("Softmax", &[&scores], &[("axis", Attr::Int(-1))]);
        let mixed = self.g.node("MatMul", &[&weights, &v], &[]);
        let tokens_first = self.g.node("Transpose", &[&mixed], &[("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
        let merged_shape = self.g.int64_vector("merged_shape", &[0, 0, heads * dv]);
        let merged = self.g.node("Reshape", &[&tokens_first, &merged_shape], &[]);
        self.dense(&merged, &format!("{prefix}.output"), false)
    }

    fn layer_norm(&mut self, x: &str, prefix: &str, eps: f64) -> Result<String, ExportError> {
        let (dims, scale) = self.weights.get(&format!("{prefix}.weight"))?;
        let (bias_dims, bias) = self.weights.get(&format!("{prefix}.bias"))?;
        let scale = self.g.initializer(&format!("{prefix}.weight"), &dims, &scale);
        let bias = self.g.initializer(&format!("{prefix}.bias"), &bias_dims, &bias);
        let attrs = [("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps as f32))];
        Ok(self.g.node("LayerNormalization", &[x, &scale, &bias], &attrs))
    }

    /// The checkpoint's dense layer `prefix` on `x`, with the exact (erf) GELU after it when
    /// `gelu`.
    fn dense(&mut self, x: &str, prefix: &str, gelu: bool) -> Result<String, ExportError> {
        let layer = DenseWeights::read(self.weights, prefix)?;
        self.dense_from(x, prefix, &layer, gelu)
    }

    fn dense_from(&mut self, x: &str, prefix: &str, layer: &DenseWeights, gelu: bool) -> Result<String, ExportError> {
        let y = match self.form {
            DenseForm::Float32 => {
                let w = transpose(&layer.weight, layer.out_dim, layer.in_dim);
                let w = self.g.initializer(&format!("{prefix}.weight_t"), &[layer.in_dim, layer.out_dim], &w);
                let y = self.g.node("MatMul", &[x, &w], &[]);
                match &layer.bias {
                    Some(b) => {
                        let b = self.g.initializer(&format!("{prefix}.bias"), &[layer.out_dim], b);
                        self.g.node("Add", &[&y, &b], &[])
                    }
                    None => y,
                }
            }
            DenseForm::Int8 => {
                let q = quantize_per_output_channel(&layer.weight, layer.out_dim, layer.in_dim);
                let bias = layer.bias.clone().unwrap_or_else(|| vec![0.0; layer.out_dim]);
                QuantizedDense { prefix, quantized: &q, bias: &bias }.emit(self.g, x)
            }
        };
        Ok(if gelu { self.gelu(&y) } else { y })
    }

    /// `x * 0.5 * (1 + erf(x / sqrt(2)))`, the exact GELU, in the form PyTorch exports it so
    /// that runtimes fuse it into one operator.
    fn gelu(&mut self, x: &str) -> String {
        let root2 = self.g.scalar("sqrt2", std::f32::consts::SQRT_2);
        let one = self.g.scalar("one", 1.0);
        let half = self.g.scalar("half", 0.5);
        let scaled = self.g.node("Div", &[x, &root2], &[]);
        let erf = self.g.node("Erf", &[&scaled], &[]);
        let shifted = self.g.node("Add", &[&erf, &one], &[]);
        let product = self.g.node("Mul", &[x, &shifted], &[]);
        self.g.node("Mul", &[&product, &half], &[])
    }
}
