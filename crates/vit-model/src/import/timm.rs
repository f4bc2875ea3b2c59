//! Import of timm ViTs as timm saves them for the Hugging Face hub: a directory with
//! `config.json` (`architecture`, `model_args`, `pretrained_cfg`) and `model.safetensors` in
//! timm's names (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.attn.qkv`,
//! `mlp.fc1`, `norm`, `head`).
//!
//! The sizes come from the architecture's name (`vit_{tiny,small,base,large,huge}_patch{P}_{S}`,
//! `deit_{tiny,small,base}_patch16_{S}`), with the recorded `model_args` over them. The fused
//! `qkv` is split into query, key and value; the patch convolution `[D, C, p, p]` becomes the
//! linear layer over TF-ordered patches; the normalisation of `pretrained_cfg` goes into the
//! checkpoint metadata. Class-token models and average-pooled ones without a class token
//! (with or without `fc_norm`) are read; variants this model cannot express (registers, no
//! qkv bias, positions without the class token) are errors naming the argument.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;
use serde_json::Value;
use vit_blocks::SeededVarMap;

use vit_data::augment::Normalizer;
use vit_data::{Interpolation, Preprocessing, ResizeSpec};

use crate::checkpoint::CheckpointMeta;
use crate::{HeadKind, ModelError, Vit, VitConfig};

#[derive(Deserialize)]
struct TimmConfig {
    architecture: String,
    #[serde(default)]
    num_classes: Option<usize>,
    #[serde(default)]
    global_pool: Option<String>,
    #[serde(default)]
    model_args: serde_json::Map<String, Value>,
    #[serde(default)]
    pretrained_cfg: serde_json::Map<String, Value>,
    #[serde(default)]
    label_names: Option<Vec<String>>,
}

/// `(width, depth, heads)` of timm's named ViT sizes.
fn named_size(size: &str) -> Option<(usize, usize, usize)> {
    Some(match size {
        "tiny" => (192, 12, 3),
        "small" => (384, 12, 6),
        "base" => (768, 12, 12),
        "large" => (1024, 24, 16),
        "huge" => (1280, 32, 16),
        _ => return None,
    })
}

/// Reads a timm `config.json` into a [`VitConfig`], the class names and the preprocessing of
/// its `pretrained_cfg`: the normalisation and the resize with its centre crop (timm's
/// defaults, bilinear and 0.875, where the config names none).
pub fn config_from_timm(path: &Path) -> Result<(VitConfig, Vec<String>, Preprocessing), ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    config_from_json(&text, path)
}

fn config_from_json(text: &str, path: &Path) -> Result<(VitConfig, Vec<String>, Preprocessing), ModelError> {
    let bad = |message: String| ModelError::ConfigParse { path: path.into(), message };
    let timm: TimmConfig = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    // `vit_base_patch16_224.augreg_in21k` -> size `base`, patch 16, resolution 224.
    let name = timm.architecture.split('.').next().unwrap_or_default();
    let parts: Vec<&str> = name.split('_').collect();
    let (dim, depth, heads, patch, image) = match parts[..] {
        ["vit" | "deit", size, patch, image, ..] => {
            let (d, l, h) =
                named_size(size).ok_or_else(|| bad(format!("architecture `{name}`: unknown size `{size}`")))?;
            let patch = patch.strip_prefix("patch").and_then(|p| p.parse().ok());
            match (patch, image.parse::<usize>().ok()) {
                (Some(p), Some(s)) => (d, l, h, p, s),
                _ => return Err(bad(format!("architecture `{name}`: expected vit_<size>_patch<P>_<resolution>"))),
            }
        }
        _ => return Err(bad(format!("architecture `{name}` is no timm ViT this import reads (vit_*, deit_*)"))),
    };
    let mut cfg = VitConfig {
        image_size: [image, image],
        patch_size: patch,
        num_layers: depth,
        num_classes: timm.num_classes.unwrap_or(1000),
        ..VitConfig::standard(dim, heads)
    };
    let mut mlp_ratio = 4.0;
    let (mut class_token, mut fc_norm) = (true, None);
    let mut global_pool = timm.global_pool.clone().unwrap_or_else(|| "token".into());
    let whole = |key: &str, v: &Value| {
        v.as_u64().map(|n| n as usize).ok_or_else(|| bad(format!("model_args.{key}: expected a whole number, got {v}")))
    };
    for (key, v) in &timm.model_args {
        match key.as_str() {
            "img_size" => {
                cfg.image_size = match v {
                    Value::Array(a) if a.len() == 2 => [whole(key, &a[0])?, whole(key, &a[1])?],
                    v => [whole(key, v)?; 2],
                }
            }
            "patch_size" => cfg.patch_size = whole(key, v)?,
            "embed_dim" => cfg.projection_dim = whole(key, v)?,
            "depth" => cfg.num_layers = whole(key, v)?,
            "num_heads" => cfg.num_heads = whole(key, v)?,
            "num_classes" => cfg.num_classes = whole(key, v)?,
            "in_chans" => cfg.channels = whole(key, v)?,
            "mlp_ratio" => mlp_ratio = v.as_f64().ok_or_else(|| bad(format!("model_args.mlp_ratio: got {v}")))?,
            "global_pool" => global_pool = v.as_str().unwrap_or_default().to_string(),
            "init_values" => cfg.layer_scale = v.as_f64(),
            "class_token" if v.is_boolean() => class_token = v == &Value::Bool(true),
            "fc_norm" if v.is_null() || v.is_boolean() => fc_norm = v.as_bool(),
            "qkv_bias" if v.is_boolean() => cfg.qkv_bias = v == &Value::Bool(true),
            "no_embed_class" if v.is_null() || v == &Value::Bool(false) => {}
            "reg_tokens" if v.as_u64() == Some(0) => {}
            "dynamic_img_size" | "drop_rate" | "drop_path_rate" | "attn_drop_rate" | "pos_drop_rate" => {}
            other => return Err(bad(format!("model_args.{other} = {v}: this model has no such variant"))),
        }
    }
    if cfg.num_heads == 0 || !cfg.projection_dim.is_multiple_of(cfg.num_heads) {
        return Err(bad(format!("embed_dim {} is not a multiple of num_heads {}", cfg.projection_dim, cfg.num_heads)));
    }
    cfg.key_dim = cfg.projection_dim / cfg.num_heads;
    let hidden = mlp_ratio * cfg.projection_dim as f64;
    if hidden.fract() != 0.0 || hidden < 1.0 {
        return Err(bad(format!(
            "mlp_ratio {mlp_ratio} x embed_dim {} is no whole number of units",
            cfg.projection_dim
        )));
    }
    cfg.mlp_units = vec![hidden as usize, cfg.projection_dim];
    cfg.head = match (global_pool.as_str(), class_token) {
        ("token", true) => HeadKind::ClassToken,
        ("avg", false) => {
            // timm normalises after average pooling unless fc_norm is turned off.
            cfg.fc_norm = fc_norm.unwrap_or(true);
            HeadKind::MeanPool
        }
        (pool, token) => {
            return Err(bad(format!(
                "global_pool `{pool}` with class_token {token}: this model reads `token` with a class token and \
                 `avg` without one"
            )));
        }
    };
    if cfg.num_classes == 0 {
        return Err(bad("num_classes 0 (no classifier): start a model of your classes from it with init_from".into()));
    }
    cfg.validate().map_err(|e| bad(e.to_string()))?;
    let names = match timm.label_names {
        Some(names) if names.len() == cfg.num_classes => names,
        _ => (0..cfg.num_classes).map(|i| format!("class_{i}")).collect(),
    };
    let preprocessing = preprocessing_from_timm(&timm.pretrained_cfg, &cfg, &bad)?;
    Ok((cfg, names, preprocessing))
}

/// The preprocessing timm's `pretrained_cfg` declares for a model of `cfg`: the normalisation
/// (ImageNet's where it names none) and the resize with its centre crop (bilinear and 0.875
/// where it names none). `bad` turns a message into the error naming the config file.
fn preprocessing_from_timm(
    pretrained_cfg: &serde_json::Map<String, Value>,
    cfg: &VitConfig,
    bad: &dyn Fn(String) -> ModelError,
) -> Result<Preprocessing, ModelError> {
    let channel_stats = |key: &str| -> Result<Vec<f64>, ModelError> {
        match pretrained_cfg.get(key) {
            None => Ok(vec![if key == "mean" { 0.485 } else { 0.229 }; cfg.channels]),
            Some(v) => serde_json::from_value::<Vec<f64>>(v.clone())
                .ok()
                .filter(|s| s.len() == cfg.channels && s.iter().all(|x| x.is_finite()))
                .ok_or_else(|| bad(format!("pretrained_cfg.{key} = {v}: expected {} numbers", cfg.channels))),
        }
    };
    let (mean, std) = (channel_stats("mean")?, channel_stats("std")?);
    if std.iter().any(|s| *s <= 0.0) {
        return Err(bad(format!("pretrained_cfg.std {std:?} must be positive")));
    }
    let text_of = |key: &str, default: &str| -> Result<String, ModelError> {
        match pretrained_cfg.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(bad(format!("pretrained_cfg.{key} = {v}: expected a string"))),
        }
    };
    let name = text_of("interpolation", "bilinear")?;
    // timm's names only (not the PIL codes or aliases `parse` also takes).
    let interpolation = Interpolation::parse(&name)
        .filter(|i| i.name() == name)
        .ok_or_else(|| bad(format!("pretrained_cfg.interpolation `{name}`: expected bilinear, bicubic or nearest")))?;
    let crop_mode = text_of("crop_mode", "center")?;
    if crop_mode != "center" {
        return Err(bad(format!("pretrained_cfg.crop_mode `{crop_mode}`: only `center` is supported")));
    }
    let crop_pct = match pretrained_cfg.get("crop_pct") {
        None => 0.875,
        Some(v) => v
            .as_f64()
            .filter(|c| *c > 0.0 && *c <= 1.0)
            .ok_or_else(|| bad(format!("pretrained_cfg.crop_pct = {v}: expected a number in (0, 1]")))?,
    };
    let preprocessing = Preprocessing {
        resize: Some(ResizeSpec { interpolation, crop_pct: Some(crop_pct) }),
        normalizer: Normalizer::from_f64(&mean, &std),
        ..Preprocessing::identity((cfg.image_size[0], cfg.image_size[1]), cfg.channels)
    };
    Ok(preprocessing)
}

/// Renames and reshapes timm's tensors into this crate's parameter names; a tensor it does
/// not know is an error naming it.
pub fn import_tensors(
    timm: &HashMap<String, Tensor>,
    cfg: &VitConfig,
    path: &Path,
) -> Result<HashMap<String, Tensor>, ModelError> {
    let unknown = |name: &str, t: &Tensor| ModelError::UnexpectedTensor {
        path: path.into(),
        name: name.into(),
        found: t.dims().to_vec(),
    };
    let mut out = HashMap::new();
    for (name, t) in timm {
        let mut put = |k: String, v: Tensor| -> Result<(), ModelError> {
            out.insert(k, v.contiguous()?);
            Ok(())
        };
        match name.as_str() {
            "patch_embed.proj.weight" => {
                put("patch_encoder.projection.weight".into(), super::patch_kernel_to_linear(t, cfg, name, path)?)?;
            }
            "patch_embed.proj.bias" => put("patch_encoder.projection.bias".into(), t.clone())?,
            "cls_token" => put("patch_encoder.class_token".into(), t.clone())?,
            "pos_embed" => put("patch_encoder.position_embedding.weight".into(), t.squeeze(0)?)?,
            "norm.weight" | "norm.bias" => put(name.clone(), t.clone())?,
            // timm's average-pooled models normalise after pooling (their `norm` is empty).
            "fc_norm.weight" | "fc_norm.bias" if cfg.fc_norm => put(format!("norm.{}", &name[8..]), t.clone())?,
            "head.weight" | "head.bias" => put(format!("head.classifier.{}", &name[5..]), t.clone())?,
            _ => {
                let rest = name.strip_prefix("blocks.").ok_or_else(|| unknown(name, t))?;
                let (index, rest) = rest.split_once('.').ok_or_else(|| unknown(name, t))?;
                let block = format!("blocks.{index}");
                match rest {
                    "attn.qkv.weight" | "attn.qkv.bias" => {
                        let kind = &rest[9..];
                        let third = t.dim(0)? / 3;
                        for (i, part) in ["query", "key", "value"].into_iter().enumerate() {
                            put(format!("{block}.attention.{part}.{kind}"), t.narrow(0, i * third, third)?)?;
                        }
                    }
                    "ls1.gamma" | "ls2.gamma" => put(format!("{block}.layer_scale{}", &rest[2..3]), t.clone())?,
                    _ => {
                        let (module, kind) = rest.rsplit_once('.').ok_or_else(|| unknown(name, t))?;
                        let ours = match module {
                            "norm1" => "norm1",
                            "norm2" => "norm2",
                            "attn.proj" => "attention.output",
                            "mlp.fc1" => "mlp.layers.0",
                            "mlp.fc2" => "mlp.layers.1",
                            _ => return Err(unknown(name, t)),
                        };
                        put(format!("{block}.{ours}.{kind}"), t.clone())?;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Loads a timm ViT saved for the hub (a directory with `config.json` and the weights
/// [`super::weights_in`] finds) as a trainable model, with the class names (`label_names`,
/// else `class_<i>`) and the normalisation of its `pretrained_cfg` in the metadata.
pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<(Vit, SeededVarMap, CheckpointMeta), ModelError> {
    let dir = dir.as_ref();
    let (config, class_names, preprocessing) = config_from_timm(&dir.join("config.json"))?;
    let weights = super::weights_in(dir)?;
    let tensors = import_tensors(&super::read_weights(&weights, device)?, &config, &weights)?;
    let (model, store) = Vit::from_tensors(&config, tensors, &weights, device)?;
    Ok((
        model,
        store,
        CheckpointMeta { preprocessing: Some(preprocessing), ..CheckpointMeta::new(config, class_names) },
    ))
}

/// Loads a bare timm state dict (a safetensors file of timm's tensor names, no config) as
/// the architecture `architecture` names (`vit_small_patch16_224`, say), its head count
/// `num_heads` when given (it is not in the shapes; else the architecture's), every other
/// size read from the tensors: width and resolution from
/// `pos_embed`, depth from the blocks, MLP width from `fc1`, classes from `head`, class token
/// or average pooling (with `fc_norm` when its tensors are there). No normalisation is known
/// for such a file: the checkpoint records none unless `mean_std` gives it.
pub fn load_state_dict(
    weights: impl AsRef<Path>,
    architecture: &str,
    num_heads: Option<usize>,
    mean_std: Option<(Vec<f64>, Vec<f64>)>,
    device: &Device,
) -> Result<(Vit, SeededVarMap, CheckpointMeta), ModelError> {
    let weights = weights.as_ref();
    let timm = super::read_weights(weights, device)?;
    let bad = |message: String| ModelError::ConfigParse { path: weights.into(), message };
    let dims = |name: &str| timm.get(name).map(|t| t.dims().to_vec()).ok_or_else(|| bad(format!("no tensor `{name}`")));
    let pos = dims("pos_embed")?;
    let proj = dims("patch_embed.proj.weight")?;
    let (&[_, tokens, dim], &[_, channels, patch, _]) = (&pos[..], &proj[..]) else {
        return Err(bad(format!(
            "pos_embed {pos:?} and patch_embed.proj.weight {proj:?} are not [1, N, D] and [D, C, p, p]"
        )));
    };
    let class_token = timm.contains_key("cls_token");
    let grid = ((tokens - usize::from(class_token)) as f64).sqrt() as usize;
    if grid * grid + usize::from(class_token) != tokens {
        return Err(bad(format!(
            "pos_embed holds {tokens} tokens: no square grid{}",
            if class_token { " and a class token" } else { "" }
        )));
    }
    let depth = (0..).take_while(|i| timm.contains_key(&format!("blocks.{i}.norm1.weight"))).count();
    let hidden = dims("blocks.0.mlp.fc1.weight")?[0];
    let classes = dims("head.weight")?[0];
    let pool = if class_token { "token" } else { "avg" };
    let mut config = serde_json::json!({
        "architecture": architecture,
        "num_classes": classes,
        "global_pool": pool,
        "model_args": {
            "img_size": grid * patch, "patch_size": patch, "embed_dim": dim, "depth": depth, "in_chans": channels,
            "mlp_ratio": hidden as f64 / dim as f64, "num_classes": classes, "class_token": class_token,
            "global_pool": pool, "fc_norm": timm.contains_key("fc_norm.weight"),
            "qkv_bias": timm.contains_key("blocks.0.attn.qkv.bias"),
        },
    });
    if let Some(heads) = num_heads {
        config["model_args"]["num_heads"] = serde_json::json!(heads);
    }
    if timm.contains_key("blocks.0.ls1.gamma") {
        // The value is only the initial one; the tensors carry the trained scales.
        config["model_args"]["init_values"] = serde_json::json!(1.0);
    }
    // The synthesised config has no pretrained_cfg: its default normalisation is no knowledge.
    let (cfg, class_names, _) = config_from_json(&config.to_string(), weights)?;
    let tensors = import_tensors(&timm, &cfg, weights)?;
    drop(timm);
    let (model, store) = Vit::from_tensors(&cfg, tensors, weights, device)?;
    let mut meta = CheckpointMeta::new(cfg, class_names);
    if let Some((mean, std)) = mean_std {
        let channels = meta.config.channels;
        if mean.len() != channels || std.len() != channels || std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(bad(format!("mean {mean:?} and std {std:?} do not fit {channels} channels")));
        }
        let mut prep = meta.preprocessing();
        prep.normalizer = Normalizer::from_f64(&mean, &std);
        meta.preprocessing = Some(prep);
    }
    Ok((model, store, meta))
}
