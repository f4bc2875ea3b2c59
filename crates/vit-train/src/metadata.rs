//! What a checkpoint must carry, besides the model, to prepare new images as in training:
//! the normalisation statistics and the data's native image size.

use std::collections::BTreeMap;

use vit_model::CheckpointMeta;

use vit_data::augment::Normalizer;

const NORMALIZER_KEY: &str = "data.normalizer";
const DATA_SIZE_KEY: &str = "data.image_size";

/// Stores the pipeline's normaliser and the data's `(height, width)` in checkpoint metadata.
pub fn put_pipeline(extra: &mut BTreeMap<String, String>, normalizer: &Normalizer, data_size: (usize, usize)) {
    extra.insert(NORMALIZER_KEY.into(), serde_json::to_string(normalizer).expect("normaliser serialises"));
    extra.insert(DATA_SIZE_KEY.into(), serde_json::to_string(&data_size).expect("size serialises"));
}

/// Reads them back; checkpoints without them (e.g. imported weights) get the identity
/// normaliser and the model's own input size.
pub fn pipeline_of(meta: &CheckpointMeta) -> (Normalizer, (usize, usize)) {
    let normalizer = meta
        .extra
        .get(NORMALIZER_KEY)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| Normalizer::identity(meta.config.channels));
    let size = meta
        .extra
        .get(DATA_SIZE_KEY)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or((meta.config.image_size[0], meta.config.image_size[1]));
    (normalizer, size)
}
