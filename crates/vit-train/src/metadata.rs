//! What a checkpoint must carry, besides the model, to prepare new images as in training:
//! the normalisation statistics and the data's native image size.

use std::collections::BTreeMap;
use std::path::Path;

use vit_data::ResizeSpec;
use vit_data::augment::Normalizer;
use vit_model::{CheckpointMeta, ModelError};

use crate::TrainError;

use vit_model::checkpoint::{DATA_SIZE_KEY, NORMALIZER_KEY, RESIZE_KEY};

/// Stores the pipeline's normaliser and the data's `(height, width)` in checkpoint metadata.
pub fn put_pipeline(extra: &mut BTreeMap<String, String>, normalizer: &Normalizer, data_size: (usize, usize)) {
    extra.insert(NORMALIZER_KEY.into(), serde_json::to_string(normalizer).expect("normaliser serialises"));
    extra.insert(DATA_SIZE_KEY.into(), serde_json::to_string(&data_size).expect("size serialises"));
}

/// Reads them back from the metadata of the checkpoint at `path`, checked against its config:
/// statistics for as many channels as the model takes, finite, with positive deviations, and
/// an image size of at least 1x1 and at most 2^14 a side. Checkpoints without them (imported
/// weights) get the identity normaliser and the model's own input size; malformed ones are an
/// error naming the key.
pub fn pipeline_of(meta: &CheckpointMeta, path: &Path) -> Result<(Normalizer, (usize, usize)), TrainError> {
    let bad = |key: &str, message: String| {
        TrainError::Model(ModelError::Metadata { path: path.into(), key: key.into(), message })
    };
    let channels = meta.config.channels;
    let normalizer = match meta.extra.get(NORMALIZER_KEY) {
        None => Normalizer::identity(channels),
        Some(text) => {
            let n: Normalizer = serde_json::from_str(text).map_err(|e| bad(NORMALIZER_KEY, e.to_string()))?;
            if n.mean.len() != channels || n.std.len() != channels {
                return Err(bad(
                    NORMALIZER_KEY,
                    format!(
                        "holds {} means and {} deviations for a model of {channels} channels",
                        n.mean.len(),
                        n.std.len()
                    ),
                ));
            }
            if n.mean.iter().chain(&n.std).any(|v| !v.is_finite()) || n.std.iter().any(|&s| s <= 0.0) {
                return Err(bad(NORMALIZER_KEY, format!("{n:?} is not finite with positive deviations")));
            }
            n
        }
    };
    let size = match meta.extra.get(DATA_SIZE_KEY) {
        None => (meta.config.image_size[0], meta.config.image_size[1]),
        Some(text) => {
            let (h, w): (usize, usize) = serde_json::from_str(text).map_err(|e| bad(DATA_SIZE_KEY, e.to_string()))?;
            if !(1..=1 << 14).contains(&h) || !(1..=1 << 14).contains(&w) {
                return Err(bad(DATA_SIZE_KEY, format!("{h}x{w}: each side must be 1 to 16384 pixels")));
            }
            (h, w)
        }
    };
    Ok((normalizer, size))
}

/// How the checkpoint at `path` says an image of any size is brought to its input (imported
/// weights record their source's resize and crop); `None` when it says nothing, and images
/// are then resized as its training data was. A malformed entry is an error naming the key.
pub fn resize_of(meta: &CheckpointMeta, path: &Path) -> Result<Option<ResizeSpec>, TrainError> {
    let Some(text) = meta.extra.get(RESIZE_KEY) else { return Ok(None) };
    let bad = |message: String| {
        TrainError::Model(ModelError::Metadata { path: path.into(), key: RESIZE_KEY.into(), message })
    };
    let spec: ResizeSpec = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    spec.validate().map_err(bad)?;
    Ok(Some(spec))
}
