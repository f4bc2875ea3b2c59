//! Import of Hugging Face / timm ViT weights (the `google/vit-base-patch16-224` layout).
//!
//! The patch embedding there is a convolution with kernel `[D, C, p, p]` over NCHW images; here
//! it is a linear layer over TF-ordered patches (row, column, channel fastest), so the kernel is
//! permuted to `[D, p, p, C]` and flattened. The attention's `query`/`key`/`value`/`output.dense`,
//! `layernorm_before`/`after`, `intermediate.dense`/`output.dense` map onto the blocks.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;
use vit_blocks::SeededVarMap;

use vit_data::augment::Normalizer;
use vit_data::{Interpolation, Preprocessing, ResizeSpec};

use crate::checkpoint::CheckpointMeta;
use crate::{ModelError, Vit, VitConfig};

#[derive(Deserialize)]
struct HfConfig {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_image")]
    image_size: usize,
    #[serde(default = "default_patch")]
    patch_size: usize,
    #[serde(default = "default_channels")]
    num_channels: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    id2label: BTreeMap<String, String>,
    #[serde(default = "default_qkv_bias")]
    qkv_bias: bool,
}

fn default_qkv_bias() -> bool {
    true
}

fn default_image() -> usize {
    224
}
fn default_patch() -> usize {
    16
}
fn default_channels() -> usize {
    3
}
fn default_eps() -> f64 {
    1e-12
}

/// Reads a Hugging Face `config.json` of a ViT into a [`VitConfig`] and the class names
/// (from `id2label`, in id order; `class_{i}` where absent).
pub fn config_from_hf(path: impl AsRef<Path>) -> Result<(VitConfig, Vec<String>), ModelError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    let hf: HfConfig = serde_json::from_str(&text)
        .map_err(|e| ModelError::ConfigParse { path: path.into(), message: e.to_string() })?;
    if hf.num_attention_heads == 0 || !hf.hidden_size.is_multiple_of(hf.num_attention_heads) {
        return Err(ModelError::ConfigParse {
            path: path.into(),
            message: format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                hf.hidden_size, hf.num_attention_heads
            ),
        });
    }
    let num_classes = hf.id2label.len().max(1);
    let mut names = vec![String::new(); num_classes];
    for (id, label) in &hf.id2label {
        match id.parse::<usize>() {
            Ok(i) if i < num_classes => names[i] = label.clone(),
            _ => {
                return Err(ModelError::ConfigParse {
                    path: path.into(),
                    message: format!("id2label key `{id}` is not an id below {num_classes}"),
                });
            }
        }
    }
    for (i, name) in names.iter_mut().enumerate() {
        if name.is_empty() {
            *name = format!("class_{i}");
        }
    }
    let d = hf.hidden_size;
    let cfg = VitConfig {
        image_size: [hf.image_size, hf.image_size],
        channels: hf.num_channels,
        patch_size: hf.patch_size,
        num_layers: hf.num_hidden_layers,
        mlp_units: vec![hf.intermediate_size, d],
        layer_norm_eps: hf.layer_norm_eps,
        num_classes,
        qkv_bias: hf.qkv_bias,
        ..VitConfig::standard(d, hf.num_attention_heads)
    };
    cfg.validate()?;
    Ok((cfg, names))
}

/// Renames and reshapes Hugging Face ViT tensors into this crate's parameter names. The
/// pooler (`ViTModel`'s, which `ViTForImageClassification` does not use) is left out; any
/// other tensor without a counterpart is an error naming it, as `path` is named in errors.
pub fn import_tensors(
    hf: &HashMap<String, Tensor>,
    cfg: &VitConfig,
    path: &Path,
) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut out = HashMap::new();
    for (name, t) in hf {
        let key = name.strip_prefix("vit.").unwrap_or(name);
        let mapped = match key {
            "embeddings.cls_token" => Some(("patch_encoder.class_token".to_string(), t.clone())),
            "embeddings.position_embeddings" => {
                Some(("patch_encoder.position_embedding.weight".to_string(), t.squeeze(0)?))
            }
            "embeddings.patch_embeddings.projection.weight" => Some((
                "patch_encoder.projection.weight".to_string(),
                super::patch_kernel_to_linear(t, cfg, name, path)?,
            )),
            "embeddings.patch_embeddings.projection.bias" => {
                Some(("patch_encoder.projection.bias".to_string(), t.clone()))
            }
            "layernorm.weight" => Some(("norm.weight".to_string(), t.clone())),
            "layernorm.bias" => Some(("norm.bias".to_string(), t.clone())),
            "classifier.weight" => Some(("head.classifier.weight".to_string(), t.clone())),
            "classifier.bias" => Some(("head.classifier.bias".to_string(), t.clone())),
            _ if key.starts_with("pooler.") => None,
            _ => match block_key(key) {
                Some(k) => Some((k, t.clone())),
                None => {
                    return Err(ModelError::UnexpectedTensor {
                        path: path.into(),
                        name: name.clone(),
                        found: t.dims().to_vec(),
                    });
                }
            },
        };
        if let Some((k, v)) = mapped {
            out.insert(k, v.contiguous()?);
        }
    }
    Ok(out)
}

fn block_key(key: &str) -> Option<String> {
    let rest = key.strip_prefix("encoder.layer.")?;
    let (index, rest) = rest.split_once('.')?;
    let (module, param) = rest.rsplit_once('.')?;
    let ours = match module {
        "layernorm_before" => "norm1",
        "layernorm_after" => "norm2",
        "attention.attention.query" => "attention.query",
        "attention.attention.key" => "attention.key",
        "attention.attention.value" => "attention.value",
        "attention.output.dense" => "attention.output",
        "intermediate.dense" => "mlp.layers.0",
        "output.dense" => "mlp.layers.1",
        _ => return None,
    };
    Some(format!("blocks.{index}.{ours}.{param}"))
}

/// The preprocessing a Hugging Face ViT expects, from the `preprocessor_config.json` beside
/// its `config.json`, or, without one, `ViTImageProcessor`'s defaults: the normalisation
/// (`image_mean`, `image_std` of pixels rescaled to `[0, 1]`; mean 0.5 and std 0.5 per channel
/// by default, as Google's ViTs were trained) and the resize (the image stretched to `size`,
/// which must be the model's, with `resample`, bilinear by default).
pub fn preprocessing_from_hf(config_json: &Path, cfg: &VitConfig) -> Result<Preprocessing, ModelError> {
    let channels = cfg.channels;
    #[derive(Deserialize)]
    struct Processor {
        #[serde(default = "half")]
        image_mean: Vec<f64>,
        #[serde(default = "half")]
        image_std: Vec<f64>,
        #[serde(default = "yes")]
        do_normalize: bool,
        #[serde(default = "yes")]
        do_rescale: bool,
        #[serde(default = "rescale")]
        rescale_factor: f64,
        #[serde(default = "yes")]
        do_resize: bool,
        #[serde(default = "bilinear")]
        resample: u32,
        #[serde(default)]
        size: Option<serde_json::Value>,
        #[serde(default)]
        do_center_crop: bool,
    }
    fn bilinear() -> u32 {
        2
    }
    fn half() -> Vec<f64> {
        vec![0.5; 3]
    }
    fn yes() -> bool {
        true
    }
    fn rescale() -> f64 {
        1.0 / 255.0
    }
    let path = config_json.with_file_name("preprocessor_config.json");
    let processor: Processor = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| ModelError::ConfigParse { path: path.clone(), message: e.to_string() })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::from_str("{}").expect("defaults"),
        Err(e) => return Err(ModelError::io(&path, e)),
    };
    let bad = |message: String| ModelError::ConfigParse { path: path.clone(), message };
    if !processor.do_rescale || (processor.rescale_factor - 1.0 / 255.0).abs() > 1e-9 {
        return Err(bad(format!(
            "rescales pixels by {} (do_rescale {}); this crate reads pixels as value / 255",
            processor.rescale_factor, processor.do_rescale
        )));
    }
    let (mean, std) = if processor.do_normalize {
        (processor.image_mean, processor.image_std)
    } else {
        (vec![0.0; channels], vec![1.0; channels])
    };
    if mean.len() != channels || std.len() != channels || std.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
        return Err(bad(format!("image_mean {mean:?} and image_std {std:?} do not fit {channels} channels")));
    }
    let mut prep = Preprocessing::identity((cfg.image_size[0], cfg.image_size[1]), channels);
    prep.normalizer = Normalizer::from_f64(&mean, &std);
    if processor.do_center_crop {
        return Err(bad(
            "do_center_crop: a centre crop after the resize is not supported for Hugging Face processors".into()
        ));
    }
    if let Some(size) = &processor.size {
        let side = |key: &str| size.get(key).and_then(serde_json::Value::as_u64).map(|v| v as usize);
        if (side("height"), side("width")) != (Some(cfg.image_size[0]), Some(cfg.image_size[1])) {
            return Err(bad(format!(
                "size {size}: expected {{\"height\": {}, \"width\": {}}}, the model's input",
                cfg.image_size[0], cfg.image_size[1]
            )));
        }
    }
    if processor.do_resize {
        let interpolation = Interpolation::parse(&processor.resample.to_string()).ok_or_else(|| {
            bad(format!("resample {}: expected 0 (nearest), 2 (bilinear) or 3 (bicubic)", processor.resample))
        })?;
        prep.resize = Some(ResizeSpec { interpolation, crop_pct: None });
    }
    prep.validate().map_err(|(_, message)| bad(message))?;
    Ok(prep)
}

/// Loads a Hugging Face ViT (`config.json`, and `model.safetensors` or the
/// `model.safetensors.index.json` of its shards) as a trainable model.
/// Images go in as NHWC; the metadata records the normalisation the checkpoint expects
/// ([`preprocessing_from_hf`]: for Google's ViTs, mean 0.5 and std 0.5 per channel), so
/// `vit eval` and `vit predict` prepare images as the model was trained.
pub fn load(
    config_json: impl AsRef<Path>,
    weights: impl AsRef<Path>,
    device: &Device,
) -> Result<(Vit, SeededVarMap, CheckpointMeta), ModelError> {
    let config_json = config_json.as_ref();
    let (config, class_names) = config_from_hf(config_json)?;
    let weights = weights.as_ref();
    let tensors = import_tensors(&super::read_weights(weights, device)?, &config, weights)?;
    let (model, store) = Vit::from_tensors(&config, tensors, weights, device)?;
    let preprocessing = Some(preprocessing_from_hf(config_json, &config)?);
    Ok((model, store, CheckpointMeta { preprocessing, ..CheckpointMeta::new(config, class_names) }))
}
