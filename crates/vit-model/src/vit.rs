//! The Vision Transformer classifier.

use std::collections::BTreeSet;
use std::fmt;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use vit_blocks::ModuleTree;
use vit_blocks::{
    LayerNorm, NamedParameter, PackBf16, QuantizeInt8, SeededVarMap, SharedRng, TransformerBlock, TransposeF32,
    WeightMap,
};
use vit_encoder::{PatchEncoder, PositionEmbedding};

use crate::head::ClassifierHead;
use crate::{HeadKind, InferencePrecision, ModelError, VitConfig};

/// A ViT image classifier: patches, [`PatchEncoder`], [`TransformerBlock`]s, LayerNorm and a
/// [`ClassifierHead`] (flatten + MLP as in Keras, class token, or mean pool).
///
/// Parameter names follow the module tree: `patch_encoder.*`, `blocks.{i}.*`, `norm.*`,
/// `head.layers.{j}.*`, `head.classifier.*`; [`parameters`](Self::parameters) lists them.
#[derive(Debug, Clone)]
pub struct Vit {
    cfg: VitConfig,
    encoder: PatchEncoder,
    blocks: Vec<TransformerBlock>,
    norm: LayerNorm,
    head: ClassifierHead,
    rng: SharedRng,
    /// Whether the dense layers compute their products in bf16 with f32 sums while the
    /// tensors stay f32 (mixed precision on the CPU; see [`Vit::for_compute`]).
    bf16_matmuls: bool,
}

impl Vit {
    /// Builds the model from `vb` (fresh parameters from a [`SeededVarMap`], or loaded ones from
    /// any `VarBuilder`); dropout and stochastic depth draw from `rng`.
    pub fn new(cfg: &VitConfig, vb: VarBuilder, rng: SharedRng) -> std::result::Result<Self, ModelError> {
        cfg.validate()?;
        let encoder = PatchEncoder::new(&cfg.encoder(), vb.pp("patch_encoder"))?;
        let block_cfg = cfg.block();
        let blocks = (0..cfg.num_layers)
            .map(|i| TransformerBlock::new(&block_cfg, rng.clone(), vb.pp(format!("blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = LayerNorm::new(cfg.projection_dim, cfg.layer_norm_eps, vb.pp("norm"))?;
        let head = ClassifierHead::new(cfg, rng.clone(), vb.pp("head"))?;
        Ok(Self { cfg: cfg.clone(), encoder, blocks, norm, head, rng, bf16_matmuls: false })
    }

    /// A freshly initialised, trainable model: parameters from `seed` (reproducible) in the
    /// returned store, dropout from a stream derived from the same seed.
    pub fn init(cfg: &VitConfig, seed: u64, device: &Device) -> std::result::Result<(Self, SeededVarMap), ModelError> {
        let store = SeededVarMap::new(seed);
        let model = Self::new(cfg, store.var_builder(DType::F32, device), SharedRng::new(seed ^ 0xD50F_u64))?;
        Ok((model, store))
    }

    /// The model computing in `dtype` (`bf16` or `f16` for mixed precision): each parameter is
    /// cast on the way in, so gradients flow back through the casts to the `f32` variables,
    /// which stay the master weights that the optimizer updates. Build it again after each
    /// optimizer step: it holds the casts of the values at the time of the call.
    pub fn with_compute_dtype(&self, dtype: DType) -> Result<Self> {
        self.map_weights(&|w: &Tensor| w.to_dtype(dtype))
    }

    /// The model outside autograd computing in `precision`, for inference: `f32` as
    /// [`detached`](Self::detached), on the CPU with the weights of the dense layers applied to
    /// every token stored once in panels for the CPU's product (the same logits within f32
    /// rounding, faster at batch 1), query, key and value as one layer; `bf16` on the
    /// CPU with every dense layer's weight packed as bf16 once (elsewhere its parameters cast);
    /// `int8` with every dense layer quantized (on the CPU only). Make it once, after loading:
    /// packing reads every weight.
    pub fn for_inference(&self, precision: InferencePrecision) -> Result<Self> {
        let detached = self.detached();
        let on_cpu = self.head.classifier().weight().device().is_cpu();
        match precision {
            InferencePrecision::F32 if on_cpu && self.compute_dtype() == DType::F32 => {
                // The layers applied to every token read their weights transposed; the head,
                // one row per image, keeps `[out, in]`, which gemm's matrix-vector product at
                // batch 1 reads faster (measured: docs/measurements/cpu-2026-12-06-f32-latency.md).
                let blocks = detached.blocks.iter().map(|b| b.map_weights(&TransposeF32)).collect::<Result<_>>()?;
                Ok(Self { encoder: detached.encoder.map_weights(&TransposeF32)?, blocks, ..detached })
            }
            InferencePrecision::F32 => Ok(detached),
            InferencePrecision::Bf16 if on_cpu => detached.map_weights(&PackBf16)?.for_compute(DType::BF16),
            InferencePrecision::Bf16 => detached.for_compute(DType::BF16),
            InferencePrecision::Int8 => detached.map_weights(&QuantizeInt8),
        }
    }

    /// The model computing in `dtype` for a training step or inference: `f32` as it is; on the
    /// CPU, `bf16` as f32 tensors whose dense layers multiply in bf16 with f32 sums (the
    /// bf16 kernels of `vit_kernels::bf16`; softmax, LayerNorm, GELU and the attention stay
    /// f32); elsewhere [`with_compute_dtype`](Self::with_compute_dtype). Gradients reach the
    /// f32 variables either way. Build it again after each optimizer step.
    pub fn for_compute(&self, dtype: DType) -> Result<Self> {
        let on_cpu = self.head.classifier().weight().device().is_cpu();
        match dtype {
            DType::F32 => Ok(Self { bf16_matmuls: false, ..self.clone() }),
            DType::BF16 if on_cpu => Ok(Self { bf16_matmuls: true, ..self.clone() }),
            other => self.with_compute_dtype(other),
        }
    }

    /// Whether the dense layers multiply in bf16 ([`for_compute`](Self::for_compute)).
    pub fn bf16_matmuls(&self) -> bool {
        self.bf16_matmuls
    }

    /// `f` with this model's matrix-product precision in force on this thread.
    fn in_precision<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.bf16_matmuls { vit_kernels::with_bf16_matmuls(true, f) } else { f() }
    }

    /// The dtype the model computes in (that of its parameters).
    pub fn compute_dtype(&self) -> DType {
        self.head.classifier().weight().dtype()
    }

    /// The configuration.
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// The random stream of dropout and stochastic depth (save and restore it to resume).
    pub fn rng(&self) -> &SharedRng {
        &self.rng
    }

    /// The patch encoder.
    pub fn encoder(&self) -> &PatchEncoder {
        &self.encoder
    }

    /// The classification head.
    pub fn head(&self) -> &ClassifierHead {
        &self.head
    }

    /// The names of the parameters that take no weight decay (biases, norms, position
    /// embeddings, the class token, layer scales), as timm's `no_weight_decay()`.
    pub fn no_weight_decay(&self) -> BTreeSet<String> {
        self.parameters().into_iter().filter(|p| !p.weight_decay).map(|p| p.name).collect()
    }

    /// Images to logits; dropout only when `train`.
    ///
    /// # Shapes
    /// - `images`: `[B, H, W, C]` float (NHWC), `(H, W, C)` as in the config
    /// - returns: `[B, num_classes]` logits, `f32` whatever the compute dtype
    pub fn forward(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_head(&self.forward_features(images, train)?, train)
    }

    /// Images to the normalised token stream: patches, encoder, blocks and the final LayerNorm
    /// (which `fc_norm` moves after pooling, into the head).
    ///
    /// # Shapes
    /// - `images`: `[B, H, W, C]`; returns `[B, T, D]` in the compute dtype (`T` tokens, the
    ///   class token first when there is one).
    pub fn forward_features(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.features(images, train, false, None)?.0)
    }

    /// The normalised token stream to logits.
    ///
    /// # Shapes
    /// - `features`: `[B, T, D]` (from [`forward_features`](Self::forward_features)); returns
    ///   `[B, num_classes]` in `f32`.
    pub fn forward_head(&self, features: &Tensor, train: bool) -> Result<Tensor> {
        let logits = self.in_precision(|| self.head_logits(features, train))?;
        // Logits leave in f32 whatever the compute dtype, so that the loss and the softmax of a
        // mixed-precision model are taken at full precision.
        logits.to_dtype(DType::F32)
    }

    fn head_logits(&self, features: &Tensor, train: bool) -> Result<Tensor> {
        if self.cfg.fc_norm {
            // timm's fc_norm: the final LayerNorm on the pooled vector.
            let pooled = self.norm.forward(&self.head.pool(features, train)?)?;
            self.head.classify_t(&pooled, train)
        } else {
            self.head.forward_t(features, train)
        }
    }

    /// Like [`forward`](Self::forward), also returning each block's attention weights
    /// `[B, num_heads, T, T]`.
    pub fn forward_with_attention(&self, images: &Tensor, train: bool) -> Result<(Tensor, Vec<Tensor>)> {
        let (features, attention) = self.features(images, train, true, None)?;
        Ok((self.forward_head(&features, train)?, attention))
    }

    /// Inference with each block's attention weights multiplied by its probe before they mix
    /// the values, also returning the weights: with probes of ones the logits are those of
    /// [`forward`](Self::forward), and as variables their gradients are the gradient-weighted
    /// attention maps that [`crate::explain`] needs.
    ///
    /// # Shapes
    /// - `images`: `[B, H, W, C]`; `probes`: one `[B, num_heads, T, T]` per block; returns
    ///   `[B, num_classes]` logits and one `[B, num_heads, T, T]` of weights per block.
    pub fn forward_with_attention_probes(&self, images: &Tensor, probes: &[Tensor]) -> Result<(Tensor, Vec<Tensor>)> {
        if probes.len() != self.blocks.len() {
            candle_core::bail!("vit: {} attention probes for {} blocks", probes.len(), self.blocks.len());
        }
        let (features, attention) = self.features(images, false, true, Some(probes))?;
        Ok((self.forward_head(&features, false)?, attention))
    }

    fn features(
        &self,
        images: &Tensor,
        train: bool,
        want_attention: bool,
        probes: Option<&[Tensor]>,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        self.in_precision(|| self.features_in_precision(images, train, want_attention, probes))
    }

    fn features_in_precision(
        &self,
        images: &Tensor,
        train: bool,
        want_attention: bool,
        probes: Option<&[Tensor]>,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let expected = [self.cfg.image_size[0], self.cfg.image_size[1], self.cfg.channels];
        if images.rank() != 4 || images.dims()[1..] != expected {
            candle_core::bail!(
                "vit: images must be [B, {}, {}, {}] (NHWC), got {:?}",
                expected[0],
                expected[1],
                expected[2],
                images.dims()
            );
        }
        // Images arrive as f32 from the loaders; a bf16 or f16 model computes in its own dtype.
        let images = images.to_dtype(self.compute_dtype())?;
        let mut x = self.encoder.forward_images(&images)?;
        let mut attention = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            if want_attention {
                let (next, weights) = match probes {
                    Some(probes) => block.forward_with_probe(&x, &probes[i])?,
                    None => block.forward_with_attention(&x, train)?,
                };
                attention.push(weights);
                x = next;
            } else {
                x = block.forward_t(&x, train)?;
            }
        }
        // With fc_norm the final LayerNorm comes after pooling, in `forward_head`.
        let features = if self.cfg.fc_norm { x } else { self.norm.forward(&x)? };
        Ok((features, attention))
    }

    /// Class probabilities (softmax of the logits), inference mode.
    ///
    /// # Shapes
    /// - `images`: `[B, H, W, C]`; returns `[B, num_classes]`.
    pub fn predict_proba(&self, images: &Tensor) -> Result<Tensor> {
        vit_kernels::softmax_last_dim(&self.forward(images, false)?.contiguous()?)
    }

    /// A one-screen summary, like Keras' `model.summary()`.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.cfg)
    }
}

impl ModuleTree for Vit {
    /// The same model with `f` applied to each parameter; it shares the dropout stream.
    fn map_weights(&self, f: &dyn WeightMap) -> Result<Self> {
        Ok(Self {
            encoder: self.encoder.map_weights(f)?,
            blocks: self.blocks.iter().map(|b| b.map_weights(f)).collect::<Result<_>>()?,
            norm: self.norm.map_weights(f)?,
            head: self.head.map_weights(f)?,
            ..self.clone()
        })
    }

    /// Every parameter with its checkpoint name and whether weight decay applies, in the order
    /// of the module tree. An optimizer takes these instead of guessing from names.
    fn parameters(&self) -> Vec<NamedParameter> {
        let mut out = self.encoder.parameters();
        out.extend(self.blocks.iter().flat_map(TransformerBlock::parameters));
        out.extend(self.norm.parameters());
        out.extend(self.head.parameters());
        out
    }
}

/// Layer-by-layer output shapes and parameter counts of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `(layer, output shape without the batch, parameters)`.
    pub rows: Vec<(String, Vec<usize>, usize)>,
}

impl Summary {
    /// The summary of `cfg`, computed from the config alone.
    pub fn of(cfg: &VitConfig) -> Self {
        let d = cfg.projection_dim;
        let (t, n, p) = (cfg.num_tokens(), cfg.num_patches(), cfg.patch_dim());
        let dense = |i: usize, o: usize| i * o + o;
        let (h, dk, dv) = (cfg.num_heads, cfg.key_dim, cfg.value_dim.unwrap_or(cfg.key_dim));
        let mut block = 2 * dense(d, h * dk) + dense(d, h * dv) + dense(h * dv, d) + 4 * d;
        if !cfg.qkv_bias {
            block -= 2 * h * dk + h * dv;
        }
        let mut prev = d;
        for &u in &cfg.mlp_units {
            block += dense(prev, u);
            prev = u;
        }
        if cfg.layer_scale.is_some() {
            block += 2 * d;
        }
        let class_token = usize::from(cfg.head == HeadKind::ClassToken) * d;
        let positions = if cfg.position == PositionEmbedding::Learned { t * d } else { 0 };
        let [ih, iw] = cfg.image_size;
        let mut rows = vec![
            ("input".to_string(), vec![ih, iw, cfg.channels], 0),
            ("patches".to_string(), vec![n, p], 0),
            ("patch_encoder".to_string(), vec![t, d], dense(p, d) + positions + class_token),
        ];
        for i in 0..cfg.num_layers {
            rows.push((format!("blocks.{i}"), vec![t, d], block));
        }
        rows.push(("norm".to_string(), vec![t, d], 2 * d));
        let pool = match cfg.head {
            HeadKind::Flatten => "flatten",
            HeadKind::ClassToken => "class_token",
            HeadKind::MeanPool => "mean_pool",
        };
        rows.push((pool.to_string(), vec![cfg.head_input_dim()], 0));
        let mut prev = cfg.head_input_dim();
        for (j, &u) in cfg.head_units.iter().enumerate() {
            rows.push((format!("head.layers.{j}"), vec![u], dense(prev, u)));
            prev = u;
        }
        rows.push(("head.classifier".to_string(), vec![cfg.num_classes], dense(prev, cfg.num_classes)));
        Self { rows }
    }

    /// Total number of parameters.
    pub fn total_parameters(&self) -> usize {
        self.rows.iter().map(|r| r.2).sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = |s: &[usize]| {
            let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
            format!("(B, {})", dims.join(", "))
        };
        writeln!(f, "{:<18} {:<20} {:>12}", "layer", "output shape", "parameters")?;
        writeln!(f, "{}", "-".repeat(52))?;
        for (name, dims, params) in &self.rows {
            writeln!(f, "{:<18} {:<20} {:>12}", name, shape(dims), group_thousands(*params))?;
        }
        writeln!(f, "{}", "-".repeat(52))?;
        write!(f, "total parameters: {}", group_thousands(self.total_parameters()))
    }
}

/// `21759012` -> `21,759,012`.
pub fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
