//! Starting a model from another's weights: fine-tuning on new classes or at a new resolution.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use vit_blocks::SeededVarMap;
use vit_encoder::{Interpolation, resize_grid};

use crate::{Checkpoint, HeadKind, ModelError, VitConfig};

/// What [`init_from`] did with each tensor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Copied as they were.
    pub copied: Vec<String>,
    /// The learned position table, resampled from the source's patch grid to the model's:
    /// `(from, to)`.
    pub resampled: Option<((usize, usize), (usize, usize))>,
    /// Head parameters whose shape the new task changes (the classifier for another number of
    /// classes): kept at their fresh initial values.
    pub fresh: Vec<String>,
    /// Tensors of the source that the model does not have (a head it drops): left out.
    pub unused: Vec<String>,
}

impl std::fmt::Display for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} tensors copied", self.copied.len())?;
        if let Some((from, to)) = self.resampled {
            write!(f, ", positions resampled from a {}x{} to a {}x{} grid", from.0, from.1, to.0, to.1)?;
        }
        if !self.fresh.is_empty() {
            write!(f, ", new: {}", self.fresh.join(", "))?;
        }
        if !self.unused.is_empty() {
            write!(f, ", left out: {}", self.unused.join(", "))?;
        }
        Ok(())
    }
}

/// Copies the weights of `source` into the variables of `store`, those of a model built for
/// `cfg`: the usual start of fine-tuning. Tensors of the same name and shape are copied; a
/// learned position table of another patch grid is resampled to this one (bicubic, class
/// token kept); head parameters (`head.*`) of another shape, or that the source lacks, keep
/// their fresh values, and source head tensors the model lacks are left out. Any other
/// difference (another width, depth, patch size or channel count) is an error naming the
/// tensor and both shapes: such weights cannot start this model. Without `keep_head` (a task
/// of other classes, even as many) every head parameter starts fresh.
pub fn init_from(
    store: &SeededVarMap,
    cfg: &VitConfig,
    source: &Checkpoint,
    keep_head: bool,
) -> Result<Transfer, ModelError> {
    let path = source.path.as_path();
    let mut transfer = Transfer::default();
    let vars = store.vars();
    let tensors: &HashMap<String, Tensor> = &source.tensors;
    let positions = "patch_encoder.position_embedding.weight";
    for (name, var) in &vars {
        let head = name.starts_with("head.");
        let Some(t) = tensors.get(name) else {
            if head {
                transfer.fresh.push(name.clone());
                continue;
            }
            return Err(ModelError::MissingTensor {
                path: path.into(),
                name: name.clone(),
                expected: var.dims().to_vec(),
            });
        };
        let value = if head && !keep_head {
            transfer.fresh.push(name.clone());
            continue;
        } else if t.dims() == var.dims() {
            transfer.copied.push(name.clone());
            t.clone()
        } else if head {
            transfer.fresh.push(name.clone());
            continue;
        } else if name == positions {
            let (from, to) = (source.meta.config.grid(), cfg.grid());
            let class_token = cfg.head == HeadKind::ClassToken;
            let resized = resize_grid(&t.to_dtype(DType::F32)?, from, to, class_token, Interpolation::Bicubic)
                .map_err(|e| mismatch(path, name, var.dims(), t.dims(), &e.to_string()))?;
            transfer.resampled = Some((from, to));
            resized
        } else {
            return Err(mismatch(path, name, var.dims(), t.dims(), "only the head and the position table may differ"));
        };
        if value.dims() != var.dims() {
            return Err(mismatch(path, name, var.dims(), value.dims(), "after resampling"));
        }
        var.set(&value.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    transfer.unused = tensors.keys().filter(|k| !vars.contains_key(*k)).cloned().collect();
    transfer.unused.sort();
    if let Some(name) = transfer.unused.iter().find(|k| !k.starts_with("head.")) {
        let found = tensors[name].dims().to_vec();
        return Err(ModelError::UnexpectedTensor { path: path.into(), name: name.clone(), found });
    }
    Ok(transfer)
}

fn mismatch(path: &Path, name: &str, expected: &[usize], found: &[usize], why: &str) -> ModelError {
    ModelError::Metadata {
        path: path.into(),
        key: name.into(),
        message: format!("shape {found:?} cannot start a model whose `{name}` is {expected:?}: {why}"),
    }
}
