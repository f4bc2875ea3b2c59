//! `VitConfig`: every hyper-parameter of the model, with named presets, loadable from TOML or
//! JSON.

use std::path::Path;

use serde::{Deserialize, Serialize};
use vit_blocks::{AttentionConfig, BlockConfig, MlpConfig};
use vit_encoder::{PatchEncoderConfig, PositionEmbedding};
use vit_patches::PatchSpec;

use crate::ModelError;

/// How the token sequence becomes one vector per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// LayerNorm, flatten all tokens, dropout, then the head MLP (the Keras example).
    Flatten,
    /// A class token is prepended; LayerNorm and its final state feed the head (standard ViT).
    ClassToken,
    /// LayerNorm, then the mean over tokens.
    MeanPool,
}

/// Every hyper-parameter of a [`Vit`](crate::Vit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    /// Input `[height, width]` the model is built for (after any resizing).
    pub image_size: [usize; 2],
    /// Input channels.
    pub channels: usize,
    /// Side of the square, non-overlapping patches.
    pub patch_size: usize,
    /// Width of the token stream.
    pub projection_dim: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Per-head query/key size (Keras' `key_dim`), independent of `projection_dim`.
    pub key_dim: usize,
    /// Per-head value size; `None` means `key_dim`.
    #[serde(default)]
    pub value_dim: Option<usize>,
    /// Transformer blocks.
    pub num_layers: usize,
    /// Units of the block MLP's dense layers; the last must equal `projection_dim`.
    pub mlp_units: Vec<usize>,
    /// GELU after the block MLP's last layer too (Keras example: true; standard ViT: false).
    #[serde(default = "yes")]
    pub mlp_activation_on_last: bool,
    /// Dropout on attention weights and after each block MLP layer.
    #[serde(default)]
    pub dropout: f32,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// The head.
    pub head: HeadKind,
    /// Hidden units of the head MLP (GELU and `head_dropout` after each).
    #[serde(default)]
    pub head_units: Vec<usize>,
    /// Dropout before and inside the head MLP.
    #[serde(default)]
    pub head_dropout: f32,
    /// Number of classes (logits).
    pub num_classes: usize,
    /// Position embedding.
    #[serde(default)]
    pub position: PositionEmbedding,
    /// Stochastic depth rate, the same for every block.
    #[serde(default)]
    pub drop_path: f32,
    /// Layer scale initial value, if used.
    #[serde(default)]
    pub layer_scale: Option<f64>,
    /// With the mean-pool head: the final LayerNorm after pooling instead of before (timm's
    /// `fc_norm`, the default of its average-pooled ViTs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fc_norm: bool,
    /// Whether query, key and value have biases (timm's `qkv_bias`, Hugging Face's too); the
    /// attention's output projection always has one.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub qkv_bias: bool,
}

fn is_true(value: &bool) -> bool {
    *value
}

fn yes() -> bool {
    true
}

fn default_eps() -> f64 {
    1e-6
}

/// A preset: its name, a shorter name it also answers to, and its config.
type Preset = (&'static str, &'static str, fn() -> VitConfig);

/// Every preset, in the order [`VitConfig::PRESETS`] lists them.
const PRESET_TABLE: [Preset; 5] = [
    ("keras_cifar100", "keras_cifar100", VitConfig::keras_cifar100),
    ("mnist", "mnist", VitConfig::mnist),
    ("vit_tiny_16", "vit_ti_16", VitConfig::vit_tiny_16),
    ("vit_small_16", "vit_s_16", VitConfig::vit_small_16),
    ("vit_base_16", "vit_b_16", VitConfig::vit_base_16),
];

impl VitConfig {
    /// The Keras example, "Image classification with Vision Transformer", exactly: CIFAR-100
    /// resized to 72x72x3, 6x6 patches (144), width 64, 4 heads of key_dim 64, 8 blocks, MLP
    /// [128, 64], dropout 0.1, then LayerNorm, flatten, dropout 0.5, head [2048, 1024] with GELU
    /// and dropout 0.5, 100 logits: 21,759,012 parameters.
    pub fn keras_cifar100() -> Self {
        Self {
            image_size: [72, 72],
            channels: 3,
            patch_size: 6,
            projection_dim: 64,
            num_heads: 4,
            key_dim: 64,
            value_dim: None,
            num_layers: 8,
            mlp_units: vec![128, 64],
            mlp_activation_on_last: true,
            dropout: 0.1,
            layer_norm_eps: 1e-6,
            head: HeadKind::Flatten,
            head_units: vec![2048, 1024],
            head_dropout: 0.5,
            num_classes: 100,
            position: PositionEmbedding::Learned,
            drop_path: 0.0,
            layer_scale: None,
            fc_norm: false,
            qkv_bias: true,
        }
    }

    /// A small ViT for MNIST: 28x28x1, 4x4 patches (49), width 64, 6 blocks of 4 heads of 16,
    /// the Keras block MLP [128, 64], mean-pool head, 10 classes.
    pub fn mnist() -> Self {
        Self {
            image_size: [28, 28],
            channels: 1,
            key_dim: 16,
            num_layers: 6,
            patch_size: 4,
            head: HeadKind::MeanPool,
            head_units: vec![],
            head_dropout: 0.0,
            num_classes: 10,
            ..Self::keras_cifar100()
        }
    }

    /// The original ViT layout (Dosovitskiy et al., as timm and Hugging Face build it) of width
    /// `dim` with `heads` heads: 224x224x3, 16x16 patches, 12 blocks, MLP ratio 4, class token,
    /// 1000 classes. The presets and the weight imports start from it.
    pub(crate) fn standard(dim: usize, heads: usize) -> Self {
        Self {
            image_size: [224, 224],
            channels: 3,
            patch_size: 16,
            projection_dim: dim,
            num_heads: heads,
            key_dim: dim / heads,
            value_dim: None,
            num_layers: 12,
            mlp_units: vec![4 * dim, dim],
            mlp_activation_on_last: false,
            dropout: 0.0,
            layer_norm_eps: 1e-6,
            head: HeadKind::ClassToken,
            head_units: vec![],
            head_dropout: 0.0,
            num_classes: 1000,
            position: PositionEmbedding::Learned,
            drop_path: 0.0,
            layer_scale: None,
            fc_norm: false,
            qkv_bias: true,
        }
    }

    /// ViT-Ti/16 at 224 (Touvron et al.): width 192, 3 heads, 12 blocks, 5.7M parameters.
    pub fn vit_tiny_16() -> Self {
        Self::standard(192, 3)
    }

    /// ViT-S/16 at 224: width 384, 6 heads, 12 blocks, 22M parameters.
    pub fn vit_small_16() -> Self {
        Self::standard(384, 6)
    }

    /// ViT-B/16 at 224 (Dosovitskiy et al.): width 768, 12 heads, 12 blocks, 86.6M parameters.
    pub fn vit_base_16() -> Self {
        Self::standard(768, 12)
    }

    /// The preset of that name: `keras_cifar100`, `mnist`, `vit_tiny_16`, `vit_small_16`,
    /// `vit_base_16` (dashes work too).
    pub fn preset(name: &str) -> Option<Self> {
        let name = name.replace('-', "_");
        PRESET_TABLE.iter().find(|(full, short, _)| name == *full || name == *short).map(|(_, _, make)| make())
    }

    /// Names accepted by [`preset`](Self::preset).
    pub const PRESETS: [&'static str; PRESET_TABLE.len()] = {
        let mut names = [""; PRESET_TABLE.len()];
        let mut i = 0;
        while i < names.len() {
            names[i] = PRESET_TABLE[i].0;
            i += 1;
        }
        names
    };

    /// Reads a config from a `.toml` or `.json` file (by extension; otherwise TOML) and
    /// validates it. Errors name the file and the field.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.to_string())
        };
        let cfg: Self = parsed.map_err(|message| ModelError::ConfigParse { path: path.into(), message })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a VitConfig always serialises")
    }

    /// Checks ranges and consistency; the error names the field.
    pub fn validate(&self) -> Result<(), ModelError> {
        let positive = [
            ("channels", self.channels),
            ("patch_size", self.patch_size),
            ("projection_dim", self.projection_dim),
            ("num_heads", self.num_heads),
            ("key_dim", self.key_dim),
            ("num_classes", self.num_classes),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ModelError::invalid(field, "must be at least 1, got 0"));
            }
        }
        let [h, w] = self.image_size;
        if h < self.patch_size || w < self.patch_size {
            return Err(ModelError::invalid(
                "image_size",
                format!("{:?} must be at least patch_size {} on both axes", self.image_size, self.patch_size),
            ));
        }
        if self.mlp_units.last() != Some(&self.projection_dim) {
            return Err(ModelError::invalid(
                "mlp_units",
                format!(
                    "{:?} must end with projection_dim {} (the MLP adds its residual)",
                    self.mlp_units, self.projection_dim
                ),
            ));
        }
        for (field, p) in
            [("dropout", self.dropout), ("head_dropout", self.head_dropout), ("drop_path", self.drop_path)]
        {
            if !(0.0..1.0).contains(&p) {
                return Err(ModelError::invalid(field, format!("must be in [0, 1), got {p}")));
            }
        }
        if self.position == PositionEmbedding::SinCos2d && !self.projection_dim.is_multiple_of(4) {
            return Err(ModelError::invalid("projection_dim", "must be a multiple of 4 for sincos2d positions"));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(ModelError::invalid("layer_norm_eps", "must be positive"));
        }
        if self.fc_norm && self.head != HeadKind::MeanPool {
            return Err(ModelError::invalid("fc_norm", "normalises after mean pooling: it needs head = \"mean_pool\""));
        }
        if let Some(v) = self.layer_scale.filter(|v| !v.is_finite()) {
            return Err(ModelError::invalid("layer_scale", format!("must be finite, got {v}")));
        }
        // Sizes a file could state to make loading allocate without bound: each stays within
        // what a ViT has ever needed by a wide margin, and the whole model within 2^36 values.
        let limits = [
            ("image_size", self.image_size[0].max(self.image_size[1]), 1 << 14),
            ("channels", self.channels, 1 << 10),
            ("projection_dim", self.projection_dim, 1 << 16),
            ("num_heads", self.num_heads, 1 << 10),
            ("key_dim", self.key_dim, 1 << 16),
            ("value_dim", self.value_dim.unwrap_or(0), 1 << 16),
            ("num_layers", self.num_layers, 1 << 10),
            ("num_classes", self.num_classes, 1 << 24),
            ("num_tokens", self.num_tokens(), 1 << 16),
        ];
        for (field, value, most) in limits {
            if value > most {
                return Err(ModelError::invalid(
                    field,
                    format!("is {value}, more than the {most} this crate supports"),
                ));
            }
        }
        for (field, units) in [("mlp_units", &self.mlp_units), ("head_units", &self.head_units)] {
            if let Some(&u) = units.iter().find(|&&u| u == 0 || u > 1 << 20) {
                return Err(ModelError::invalid(field, format!("holds {u}: every layer needs 1 to 2^20 units")));
            }
        }
        match self.parameter_count() {
            Some(n) if n <= 1 << 36 => Ok(()),
            n => Err(ModelError::invalid(
                "num_layers",
                format!(
                    "the model would hold {} parameters, more than 2^36",
                    n.map_or("too many".into(), |n| n.to_string())
                ),
            )),
        }
    }

    /// The number of parameters (what a checkpoint of this config holds), in checked
    /// arithmetic: `None` if it does not fit in a `u64`.
    pub fn parameter_count(&self) -> Option<u64> {
        let mul = |a: usize, b: usize| (a as u64).checked_mul(b as u64);
        let dense = |i: usize, o: usize| mul(i, o)?.checked_add(o as u64);
        let (d, h, dk, dv) =
            (self.projection_dim, self.num_heads, self.key_dim, self.value_dim.unwrap_or(self.key_dim));
        let qkv = |o: usize| -> Option<u64> {
            let full = dense(d, o)?;
            Some(if self.qkv_bias { full } else { full - o as u64 })
        };
        let mut block = [qkv(mul(h, dk)? as usize)?, qkv(mul(h, dk)? as usize)?, qkv(mul(h, dv)? as usize)?]
            .into_iter()
            .try_fold(0u64, |a, b| a.checked_add(b))?;
        block = block.checked_add(dense(mul(h, dv)? as usize, d)?)?.checked_add(4 * d as u64)?;
        let mut prev = d;
        for &u in &self.mlp_units {
            block = block.checked_add(dense(prev, u)?)?;
            prev = u;
        }
        if self.layer_scale.is_some() {
            block = block.checked_add(2 * d as u64)?;
        }
        let (tokens, patch) = (self.num_tokens(), self.patch_dim());
        let positions = if self.position == PositionEmbedding::Learned { mul(tokens, d)? } else { 0 };
        let class_token = if self.head == HeadKind::ClassToken { d as u64 } else { 0 };
        let mut total = dense(patch, d)?.checked_add(positions)?.checked_add(class_token)?;
        total = total.checked_add(block.checked_mul(self.num_layers as u64)?)?.checked_add(2 * d as u64)?;
        let mut prev = match self.head {
            HeadKind::Flatten => mul(tokens, d)? as usize,
            HeadKind::ClassToken | HeadKind::MeanPool => d,
        };
        for &u in self.head_units.iter().chain([&self.num_classes]) {
            total = total.checked_add(dense(prev, u)?)?;
            prev = u;
        }
        Some(total)
    }

    /// The patch spec: square, non-overlapping, VALID.
    pub fn patch_spec(&self) -> PatchSpec {
        PatchSpec::square(self.patch_size)
    }

    /// The patch grid `(rows, cols)`.
    pub fn grid(&self) -> (usize, usize) {
        (self.image_size[0] / self.patch_size, self.image_size[1] / self.patch_size)
    }

    /// Number of patches.
    pub fn num_patches(&self) -> usize {
        let (r, c) = self.grid();
        r * c
    }

    /// Number of tokens in the stream (patches, plus the class token).
    pub fn num_tokens(&self) -> usize {
        self.num_patches() + usize::from(self.head == HeadKind::ClassToken)
    }

    /// Length of one flattened patch.
    pub fn patch_dim(&self) -> usize {
        self.patch_size * self.patch_size * self.channels
    }

    /// The encoder's config.
    pub fn encoder(&self) -> PatchEncoderConfig {
        PatchEncoderConfig {
            patch: self.patch_spec(),
            channels: self.channels,
            grid: self.grid(),
            projection_dim: self.projection_dim,
            class_token: self.head == HeadKind::ClassToken,
            position: self.position,
        }
    }

    /// One block's config.
    pub fn block(&self) -> BlockConfig {
        BlockConfig {
            attention: AttentionConfig {
                dim: self.projection_dim,
                num_heads: self.num_heads,
                key_dim: self.key_dim,
                value_dim: self.value_dim,
                bias: true,
                qkv_bias: self.qkv_bias,
                dropout: self.dropout,
            },
            mlp: MlpConfig {
                dim: self.projection_dim,
                hidden_units: self.mlp_units.clone(),
                dropout: self.dropout,
                activation_on_last: self.mlp_activation_on_last,
            },
            layer_norm_eps: self.layer_norm_eps,
            drop_path: self.drop_path,
            layer_scale: self.layer_scale,
        }
    }

    /// Input width of the head MLP.
    pub fn head_input_dim(&self) -> usize {
        match self.head {
            HeadKind::Flatten => self.num_tokens() * self.projection_dim,
            HeadKind::ClassToken | HeadKind::MeanPool => self.projection_dim,
        }
    }

    /// Multiply-add FLOPs (2 per multiply-add) of the matrix products in one forward pass for
    /// one image: patch projection, Q/K/V/O, the two attention products, block MLPs and head.
    /// Training costs about three times this.
    pub fn forward_flops(&self) -> u64 {
        // In f64 (exact below 2^53, which every real model is), so that no config overflows it.
        let mm = |m: usize, k: usize, n: usize| 2.0 * m as f64 * k as f64 * n as f64;
        let (n, d) = (self.num_tokens(), self.projection_dim);
        let (h, dk, dv) = (self.num_heads, self.key_dim, self.value_dim.unwrap_or(self.key_dim));
        let mut block = 2.0 * mm(n, d, h * dk) + mm(n, d, h * dv) + mm(n, h * dv, d);
        block += h as f64 * (mm(n, dk, n) + mm(n, n, dv));
        let mut prev = d;
        for &u in &self.mlp_units {
            block += mm(n, prev, u);
            prev = u;
        }
        let mut head = 0.0;
        let mut prev = self.head_input_dim();
        for &u in self.head_units.iter().chain([&self.num_classes]) {
            head += mm(1, prev, u);
            prev = u;
        }
        (mm(self.num_patches(), self.patch_dim(), d) + self.num_layers as f64 * block + head) as u64
    }
}
