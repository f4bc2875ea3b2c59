//! Training recipes: model, data, augmentation and optimisation in one TOML file.

use std::path::{Path, PathBuf};

use candle_core::DType;
use serde::{Deserialize, Serialize};
use vit_data::DatasetKind;
use vit_data::augment::AugmentConfig;
use vit_model::VitConfig;

use crate::TrainError;

/// Which data and how to split it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// The data set.
    pub dataset: DatasetKind,
    /// Its directory; otherwise `--data-dir` or `VIT_DATA_DIR` (plus the data set's sub-folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Fraction of the training split held out for validation (Keras' `validation_split`); 0:
    /// none, so no model is chosen and the last epoch's is tested.
    #[serde(default)]
    pub validation_split: f64,
    /// Evaluate on the test split after every epoch, in the validation's place: for
    /// time-to-accuracy measurements, where the test accuracy over time is the result. The
    /// model is then chosen on the test set, so the final test score is optimistic, and the
    /// run's summary says so. Needs `validation_split = 0`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub validate_on_test: bool,
    /// Use only the first N training images (a quick run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_train: Option<usize>,
    /// Use only these classes (of training and test split alike), relabelled in this order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<u32>>,
    /// Image folders: leave out images that cannot be read or decoded (the run lists them)
    /// instead of stopping at the first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_unreadable: bool,
    /// Image folders: keep the images in their files and decode them as batches are made
    /// (`true`), or decode them all into memory first (`false`); unset, they are streamed when
    /// decoded they would take more than half the memory available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Learning rate at the end of the cosine decay.
    #[serde(default)]
    pub min_learning_rate: f64,
    /// Warm-up length in epochs (fractions allowed).
    #[serde(default)]
    pub warmup_epochs: f64,
    /// AdamW's decoupled weight decay (not applied to biases, norms, positions, class token).
    #[serde(default)]
    pub weight_decay: f64,
    /// Clip gradients to this global L2 norm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_grad_norm: Option<f64>,
    /// Label smoothing of the cross-entropy targets.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Seed of weights, data order, augmentation and dropout.
    #[serde(default)]
    pub seed: u64,
    /// Batch size for evaluation.
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
    /// The dtype of the forward and backward passes (the weights stay `f32`).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// A checkpoint to start from instead of random weights (fine-tuning): tensors of the same
    /// shape are copied, a learned position table of another grid is resampled, a head for
    /// another number of classes starts fresh (see `vit_model::init_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    /// Train the head alone (a linear probe): every other parameter keeps its value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub freeze_backbone: bool,
    /// Keep the patch encoder and the first N blocks as they are; train the rest.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frozen_blocks: usize,
    /// Layer-wise learning-rate decay in (0, 1]: each layer below the head trains at this
    /// factor of the rate of the layer above it (timm's `layer_decay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_decay: Option<f64>,
    /// Everything but the head trains at this share of the learning rate (a positive number;
    /// 0.1 is common when fine-tuning), on top of `layer_decay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone_lr_scale: Option<f64>,
    /// Keep an exponential moving average of the weights with this decay in (0, 1) (e.g.
    /// 0.9998; warmed up over the first updates), validated each epoch beside the raw weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
    /// Choose (and save as `best.safetensors`, and test) the moving average at its best
    /// validation top-1 instead of the raw weights. Needs `ema_decay`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub select_by_ema: bool,
}

impl TrainSpec {
    /// The recipe's fine-tuning options.
    pub fn fine_tuning(&self) -> crate::optim::FineTuning {
        crate::optim::FineTuning {
            freeze_backbone: self.freeze_backbone,
            frozen_blocks: self.frozen_blocks,
            layer_decay: self.layer_decay,
            backbone_lr_scale: self.backbone_lr_scale,
        }
    }
}

/// The compute precision of training.
///
/// `bf16` and `f16` are mixed precision: the `f32` variables are the master weights, the
/// optimizer updates them in `f32`, and each step casts them to the compute dtype on the way
/// into the model. Softmax, LayerNorm, the logits and the loss stay in `f32`. `f16` adds
/// dynamic loss scaling ([`crate::LossScaler`]); `bf16` needs none. Both are meant for
/// GPUs: on a CPU, candle has no fast half-precision kernels and they run slower than `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in `f32`.
    #[default]
    F32,
    /// `bfloat16` compute with `f32` master weights.
    Bf16,
    /// `float16` compute with `f32` master weights and dynamic loss scaling.
    F16,
}

impl Precision {
    /// The dtype the model computes in.
    pub fn compute_dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
        }
    }

    /// Whether this is plain `f32` (the default, left out of saved recipes).
    pub fn is_f32(&self) -> bool {
        *self == Self::F32
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            other => Err(format!("precision must be f32, bf16 or f16, not `{other}`")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        })
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn default_eval_batch() -> usize {
    256
}

/// A whole training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// A short name, used for the run directory.
    pub name: String,
    /// The model: `preset = "..."` plus any `VitConfig` field to override.
    pub model: toml::Table,
    /// The data.
    pub data: DataSpec,
    /// Augmentation (training only).
    #[serde(default)]
    pub augment: AugmentConfig,
    /// Optimisation.
    pub train: TrainSpec,
}

/// The recipes shipped with the crate, by name.
pub const BUILTIN: [(&str, &str); 7] = [
    ("default", include_str!("../recipes/default.toml")),
    ("mnist", include_str!("../recipes/mnist.toml")),
    ("fashion-mnist", include_str!("../recipes/fashion-mnist.toml")),
    ("cifar10", include_str!("../recipes/cifar10.toml")),
    ("keras-cifar100", include_str!("../recipes/keras-cifar100.toml")),
    ("digits-0-4", include_str!("../recipes/digits-0-4.toml")),
    ("digits-5-9", include_str!("../recipes/digits-5-9.toml")),
];

/// The fine-tuning recipe that [`Recipe::fine_tune`] completes with a checkpoint's model and a
/// data set's classes (its `[model]` is laid over the checkpoint's config).
pub const FINE_TUNE: &str = include_str!("../recipes/finetune.toml");

impl Recipe {
    /// The recipe to fine-tune the checkpoint at `init` on `dataset` (in `data_dir`, else
    /// `VIT_DATA_DIR`), with no recipe file: [`FINE_TUNE`]'s settings, the checkpoint's model
    /// (every field of its config; `[model]` of [`FINE_TUNE`] over it) with as many outputs as
    /// the data has classes. The result is a whole recipe: saved as a run's `config.toml`, it
    /// repeats the run.
    pub fn fine_tune(init: &Path, dataset: DatasetKind, data_dir: Option<&Path>) -> Result<Self, TrainError> {
        let origin = PathBuf::from(format!("<fine-tuning recipe for {}>", init.display()));
        let mut recipe: Self = toml::from_str(FINE_TUNE)
            .map_err(|e| TrainError::Recipe { path: origin.clone(), message: e.to_string() })?;
        let meta = vit_model::checkpoint::read_meta(init)?;
        let classes = vit_data::class_names(&dataset, data_dir)?;
        let mut model = toml::Table::try_from(&meta.config).expect("a config serialises");
        model.extend(std::mem::take(&mut recipe.model));
        model.insert("num_classes".into(), toml::Value::Integer(classes.len() as i64));
        recipe.model = model;
        recipe.data.dataset = dataset;
        recipe.data.dir = data_dir.map(Path::to_path_buf);
        recipe.train.init_from = Some(init.to_path_buf());
        recipe.validate(&origin)?;
        Ok(recipe)
    }

    /// Parses TOML; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, TrainError> {
        let recipe: Self =
            toml::from_str(text).map_err(|e| TrainError::Recipe { path: origin.into(), message: e.to_string() })?;
        recipe.validate(origin)?;
        Ok(recipe)
    }

    /// A built-in recipe by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Self, TrainError> {
        if let Some((name, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::parse(text, &PathBuf::from(format!("<builtin recipe {name}>")));
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io {
            path: path.into(),
            message: format!(
                "{e} (built-in recipes: {})",
                BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        })?;
        Self::parse(&text, path)
    }

    /// The recipe as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a recipe always serialises")
    }

    /// The model config: the preset with the other keys of `[model]` overriding its fields.
    pub fn model_config(&self, origin: &Path) -> Result<VitConfig, TrainError> {
        let bad = |message: String| TrainError::Recipe { path: origin.into(), message };
        let mut table = self.model.clone();
        let base = match table.remove("preset") {
            Some(toml::Value::String(name)) => VitConfig::preset(&name).ok_or_else(|| {
                bad(format!("[model] preset `{name}` is unknown; presets: {}", VitConfig::PRESETS.join(", ")))
            })?,
            Some(other) => return Err(bad(format!("[model] preset must be a string, got {other}"))),
            None => {
                return toml::Value::Table(table.clone())
                    .try_into::<VitConfig>()
                    .map_err(|e| bad(format!("[model]: {e}")))
                    .and_then(|c| c.validate().map(|_| c).map_err(|e| bad(e.to_string())));
            }
        };
        // The preset's table lacks the fields that serialise to nothing at their default
        // (`qkv_bias = true`, `fc_norm = false`, ...), so a key is not checked against it: the
        // config's own deserialiser (which denies unknown fields) is the one list of fields.
        let mut merged = toml::Table::try_from(&base).expect("config serialises");
        merged.extend(table);
        let cfg: VitConfig = toml::Value::Table(merged).try_into().map_err(|e| bad(format!("[model]: {e}")))?;
        cfg.validate().map_err(|e| bad(e.to_string()))?;
        Ok(cfg)
    }

    /// Checks every field: ranges, finiteness and the model config. [`parse`](Self::parse)
    /// runs it, and so does training, on the recipe it is given (one built or changed in code,
    /// or by command-line overrides, is checked too). The error names the origin and the field.
    pub fn validate(&self, origin: &Path) -> Result<(), TrainError> {
        let bad = |field: &str, what: String| {
            Err(TrainError::Recipe { path: origin.into(), message: format!("`{field}` {what}") })
        };
        let t = &self.train;
        if t.epochs == 0 {
            return bad("train.epochs", "must be at least 1, got 0".into());
        }
        if t.batch_size == 0 {
            return bad("train.batch_size", "must be at least 1, got 0".into());
        }
        if t.eval_batch_size == 0 {
            return bad("train.eval_batch_size", "must be at least 1, got 0".into());
        }
        if !(t.learning_rate > 0.0 && t.learning_rate.is_finite()) {
            return bad("train.learning_rate", format!("must be a positive number, got {}", t.learning_rate));
        }
        if !(0.0..=t.learning_rate).contains(&t.min_learning_rate) {
            return bad(
                "train.min_learning_rate",
                format!("must be in [0, learning_rate = {}], got {}", t.learning_rate, t.min_learning_rate),
            );
        }
        for (field, value) in [("train.warmup_epochs", t.warmup_epochs), ("train.weight_decay", t.weight_decay)] {
            if !(value >= 0.0 && value.is_finite()) {
                return bad(field, format!("must be a number of at least 0, got {value}"));
            }
        }
        if t.warmup_epochs > t.epochs as f64 {
            return bad("train.warmup_epochs", format!("is {}, more than the {} epochs", t.warmup_epochs, t.epochs));
        }
        if let Some(c) = t.clip_grad_norm.filter(|c| !(*c > 0.0 && c.is_finite())) {
            return bad("train.clip_grad_norm", format!("must be a positive number, got {c}"));
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return bad("train.label_smoothing", format!("must be in [0, 1), got {}", t.label_smoothing));
        }
        if !(0.0..1.0).contains(&self.data.validation_split) {
            return bad("data.validation_split", format!("must be in [0, 1), got {}", self.data.validation_split));
        }
        if self.data.validate_on_test && self.data.validation_split > 0.0 {
            return bad(
                "data.validate_on_test",
                format!(
                    "evaluates on the test split instead of a validation split; set data.validation_split = 0, not {}",
                    self.data.validation_split
                ),
            );
        }
        if let Some(d) = t.ema_decay.filter(|d| !(*d > 0.0 && *d < 1.0)) {
            return bad("train.ema_decay", format!("must be in (0, 1), got {d}"));
        }
        if t.select_by_ema && t.ema_decay.is_none() {
            return bad("train.select_by_ema", "chooses by the moving average: set train.ema_decay too".into());
        }
        if let Some(s) = t.backbone_lr_scale.filter(|s| !(*s > 0.0 && s.is_finite())) {
            return bad("train.backbone_lr_scale", format!("must be a positive number, got {s}"));
        }
        if let Some(d) = t.layer_decay.filter(|d| !(*d > 0.0 && *d <= 1.0)) {
            return bad("train.layer_decay", format!("must be in (0, 1], got {d}"));
        }
        if t.freeze_backbone && t.frozen_blocks > 0 {
            return bad(
                "train.frozen_blocks",
                "cannot be given with freeze_backbone, which freezes every block".into(),
            );
        }
        if let Some(classes) = &self.data.classes {
            let mut sorted = classes.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if classes.is_empty() || sorted.len() != classes.len() {
                return bad("data.classes", format!("must list distinct classes, got {classes:?}"));
            }
        }
        if self.data.limit_train == Some(0) {
            return bad("data.limit_train", "must be at least 1 (or absent for every image), got 0".into());
        }
        if let Err(message) = self.augment.validate() {
            return Err(TrainError::Recipe { path: origin.into(), message });
        }
        let cfg = self.model_config(origin)?;
        if t.frozen_blocks > cfg.num_layers {
            return bad(
                "train.frozen_blocks",
                format!("is {}, but the model has {} blocks", t.frozen_blocks, cfg.num_layers),
            );
        }
        Ok(())
    }
}
