//! Pretrained weights from other libraries, read into this crate's parameter layout.
//!
//! - [`hf`]: Hugging Face `transformers` ViTs (the `google/vit-base-patch16-224` layout).
//! - [`timm`]: timm ViTs as timm saves them for the hub (`timm/vit_base_patch16_224.*`,
//!   DeiT), class-token models.
//!
//! Each records the preprocessing its weights expect in the checkpoint metadata.

pub mod hf;
pub mod timm;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::{ModelError, VitConfig};

/// A patch embedding's convolution kernel `[D, C, p, p]` (over NCHW images, as PyTorch
/// libraries store it) as this crate's linear layer over TF-ordered patches `[D, p * p * C]`
/// (row, column, channel fastest); `name` and `path` name the tensor in the error when its
/// shape does not fit `cfg`.
pub(crate) fn patch_kernel_to_linear(
    t: &Tensor,
    cfg: &VitConfig,
    name: &str,
    path: &Path,
) -> Result<Tensor, ModelError> {
    let (d, c, kh, kw) = t.dims4()?;
    if c != cfg.channels || kh != cfg.patch_size || kw != cfg.patch_size {
        return Err(ModelError::ShapeMismatch {
            path: path.into(),
            name: name.into(),
            expected: vec![cfg.projection_dim, cfg.channels, cfg.patch_size, cfg.patch_size],
            found: t.dims().to_vec(),
        });
    }
    Ok(t.permute((0, 2, 3, 1))?.reshape((d, kh * kw * c))?)
}

/// The tensors of a safetensors file (memory-mapped), of the shards a
/// `*.safetensors.index.json` lists (its `weight_map`, as the hub splits large models: every
/// tensor the index names must be in the shard it names, and a shard is a file beside the
/// index), or of a PyTorch file (`.bin`, `.pth`, `.pt`: `torch.save`'s zip of a state dict, read
/// without Python and without running any of its pickle).
pub fn read_weights(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, ModelError> {
    let load = |file: &Path| {
        let bytes = crate::checkpoint::map_file(file)?;
        candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| ModelError::Safetensors { path: file.into(), message: e.to_string() })
    };
    let name = path.to_string_lossy();
    if [".bin", ".pth", ".pt"].iter().any(|ext| name.ends_with(ext)) {
        return read_pytorch(path, device);
    }
    if !name.ends_with(".index.json") {
        return load(path);
    }
    let bad = |message: String| ModelError::ConfigParse { path: path.into(), message };
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    let index: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map =
        index.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut shards: Vec<&str> = Vec::new();
    for (name, shard) in map {
        let shard = shard.as_str().ok_or_else(|| bad(format!("weight_map.{name}: expected a file name")))?;
        if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
            return Err(bad(format!("weight_map.{name}: `{shard}` is not a file beside the index")));
        }
        if !shards.contains(&shard) {
            shards.push(shard);
        }
    }
    let mut tensors = HashMap::new();
    for shard in shards {
        let file = path.with_file_name(shard);
        for (name, tensor) in load(&file)? {
            if map.get(&name).and_then(|s| s.as_str()) == Some(shard) {
                tensors.insert(name, tensor);
            }
        }
    }
    if let Some(name) = map.keys().find(|k| !tensors.contains_key(*k)) {
        return Err(bad(format!("`{name}` is not in the shard `{}` the index names", map[name])));
    }
    Ok(tensors)
}

/// The tensors of a PyTorch state dict as `torch.save` writes it (a zip holding `data.pkl` and
/// the storages), a bare dict or one under `state_dict` / `model` (as training scripts save).
fn read_pytorch(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, ModelError> {
    let bad = |e: candle_core::Error| ModelError::Safetensors {
        path: path.into(),
        message: format!(
            "not a PyTorch state dict candle can read ({e}); save it with torch.save(model.state_dict(), ...) or as safetensors"
        ),
    };
    let mut found = Vec::new();
    for key in [None, Some("state_dict"), Some("model")] {
        found = candle_core::pickle::read_all_with_key(path, key).map_err(bad)?;
        if !found.is_empty() {
            break;
        }
    }
    if found.is_empty() {
        return Err(ModelError::Safetensors {
            path: path.into(),
            message: "holds no tensors (looked at the top level, `state_dict` and `model`)".into(),
        });
    }
    found.into_iter().map(|(name, t)| Ok((name, t.to_device(device)?))).collect()
}

/// The weights of a model directory as the hub stores them, in the order the libraries look
/// for them: `model.safetensors`, `model.safetensors.index.json` (shards), `pytorch_model.bin`.
pub fn weights_in(dir: &Path) -> Result<std::path::PathBuf, ModelError> {
    const NAMES: [&str; 3] = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"];
    NAMES.iter().map(|name| dir.join(name)).find(|p| p.is_file()).ok_or_else(|| {
        let message = format!("no weights: expected one of {}", NAMES.join(", "));
        ModelError::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, message))
    })
}
