//! ONNX export of vit-rs Vision Transformers.
//!
//! [`export`] writes a [`Vit`] as an ONNX model (opset [`OPSET`]) computing the same logits
//! from the same input as `vit predict` after its preprocessing: one input [`INPUT`], float32
//! `[batch, height, width, channels]` (NHWC, normalised), one output [`OUTPUT`], float32
//! `[batch, num_classes]`, the batch dimension dynamic. The file carries what a consumer needs
//! besides: the class names in output order ([`CLASS_NAMES_KEY`], a JSON array) and the
//! preprocessing as steps ([`PREPROCESSING_KEY`], JSON; see [`PreprocessingDescription`]),
//! in the model's `metadata_props`.
//!
//! [`ExportPrecision::Int8`] writes the int8 model of `vit --precision int8`: weights int8
//! per output channel, activations quantized per token at run time, integer products
//! (`MatMulInteger`), the attention in float32.
//!
//! The file format comes from the official `onnx.proto` compiled by prost: no byte of it is
//! written by hand.
//!
//! ```
//! use candle_core::Device;
//! use vit_model::{CheckpointMeta, Vit, VitConfig};
//! use vit_onnx::{ExportPrecision, export};
//!
//! let cfg = VitConfig { num_layers: 1, num_classes: 3, ..VitConfig::mnist() };
//! let (model, _store) = Vit::init(&cfg, 7, &Device::Cpu)?;
//! let meta = CheckpointMeta::new(cfg, vec!["cat".into(), "dog".into(), "fox".into()]);
//! let onnx = export(&model, &meta, ExportPrecision::F32)?;
//! let bytes = vit_onnx::encode(&onnx)?;
//! assert!(bytes.len() > 4 * model.summary().total_parameters());
//! let names = onnx.metadata_props.iter().find(|p| p.key() == vit_onnx::CLASS_NAMES_KEY).unwrap();
//! assert_eq!(names.value(), r#"["cat","dog","fox"]"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod graph;
mod metadata;
mod quantize;
mod vit_graph;

use std::path::Path;

use candle_core::Device;
use prost::Message;
use vit_model::{CheckpointMeta, Vit};

pub use error::ExportError;
pub use metadata::{PreprocessingDescription, Step};

#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto;

use graph::{Dim, GraphBuilder, float_value};
use proto::{ModelProto, OperatorSetIdProto, StringStringEntryProto};

/// The operator set the graph is written in (`LayerNormalization` is in it since 17).
pub const OPSET: i64 = 17;
/// The IR version of the file: 8, the one ONNX 1.12 paired with opset 17, so that runtimes
/// from then on read it.
pub const IR_VERSION: i64 = 8;
/// Name of the graph's input.
pub const INPUT: &str = "images";
/// Name of the graph's output.
pub const OUTPUT: &str = "logits";
/// Metadata key of the class names (JSON array, in the order of the logits).
pub const CLASS_NAMES_KEY: &str = "vit.class_names";
/// Metadata key of the preprocessing ([`PreprocessingDescription`] as JSON).
pub const PREPROCESSING_KEY: &str = "vit.preprocessing";
/// Metadata key of the model's `VitConfig` (JSON).
pub const CONFIG_KEY: &str = "vit.config";
/// Metadata key of the number format of the dense layers (`f32` or `int8`).
pub const PRECISION_KEY: &str = "vit.precision";

/// The number format of the exported dense layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportPrecision {
    /// float32 throughout: the logits of `vit predict`.
    #[default]
    F32,
    /// int8 dense layers as `vit --precision int8` computes them.
    Int8,
}

impl ExportPrecision {
    /// `f32` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Int8 => "int8",
        }
    }
}

/// The ONNX model of `model`, described by `meta` (its class names and preprocessing).
pub fn export(model: &Vit, meta: &CheckpointMeta, precision: ExportPrecision) -> Result<ModelProto, ExportError> {
    let cfg = model.config();
    if meta.config != *cfg {
        return Err(ExportError::Metadata("the metadata describes another configuration than the model's".into()));
    }
    if meta.class_names.len() != cfg.num_classes {
        return Err(ExportError::Metadata(format!(
            "{} class names for a model of {} classes",
            meta.class_names.len(),
            cfg.num_classes
        )));
    }
    let mut g = GraphBuilder::new();
    let form = match precision {
        ExportPrecision::F32 => vit_graph::DenseForm::Float32,
        ExportPrecision::Int8 => vit_graph::DenseForm::Int8,
    };
    let logits = vit_graph::build(&mut g, model, INPUT, form)?;
    // The last node writes the graph's output under its public name.
    g.node_into("Identity", &[&logits], &[], &[OUTPUT]);
    let [h, w] = cfg.image_size;
    let batch = Dim::Named("batch");
    let input = float_value(
        INPUT,
        &[batch.clone(), Dim::Fixed(h), Dim::Fixed(w), Dim::Fixed(cfg.channels)],
        "images, NHWC, float32, prepared as the `vit.preprocessing` metadata says",
    );
    let output = float_value(OUTPUT, &[batch, Dim::Fixed(cfg.num_classes)], "logits, classes as `vit.class_names`");
    let description = PreprocessingDescription::of(&meta.preprocessing());
    let doc = format!(
        "Vision Transformer exported by vit-rs {}: {} of {h}x{w}x{} NHWC to {} of {} classes ({} dense layers).",
        env!("CARGO_PKG_VERSION"),
        INPUT,
        cfg.channels,
        OUTPUT,
        cfg.num_classes,
        precision.name()
    );
    let graph = g.finish("vit", vec![input], vec![output], &doc);
    let entry = |key: &str, value: String| StringStringEntryProto { key: Some(key.into()), value: Some(value) };
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        producer_name: Some("vit-rs".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        model_version: Some(1),
        doc_string: Some(doc),
        graph: Some(graph),
        metadata_props: vec![
            entry(CLASS_NAMES_KEY, json(&meta.class_names)),
            entry(PREPROCESSING_KEY, description.to_json()),
            entry(CONFIG_KEY, json(cfg)),
            entry(PRECISION_KEY, precision.name().into()),
        ],
        ..Default::default()
    })
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

/// The ONNX model of the checkpoint at `path` (loaded on the CPU).
pub fn export_checkpoint(path: impl AsRef<Path>, precision: ExportPrecision) -> Result<ModelProto, ExportError> {
    let (model, _store, meta) = Vit::load(path, &Device::Cpu)?;
    export(&model, &meta, precision)
}

/// The file's bytes; a model over protobuf's 2 GiB limit is an error.
pub fn encode(model: &ModelProto) -> Result<Vec<u8>, ExportError> {
    let bytes = model.encoded_len();
    if bytes > i32::MAX as usize {
        return Err(ExportError::TooLarge { bytes });
    }
    Ok(model.encode_to_vec())
}

/// Writes `model` to `path` atomically (a new file renamed over the old one); returns the
/// number of bytes written.
pub fn write(model: &ModelProto, path: impl AsRef<Path>) -> Result<usize, ExportError> {
    let path = path.as_ref();
    let bytes = encode(model)?;
    vit_model::checkpoint::write_atomically(path, &bytes)?;
    Ok(bytes.len())
}
