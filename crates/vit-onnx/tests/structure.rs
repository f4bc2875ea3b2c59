//! The exported file's structure, read back with the same protobuf messages: what any ONNX
//! consumer relies on before it computes anything. (The numbers themselves are checked by ONNX
//! Runtime in `crates/vit-cli/tests/export.rs`.)

use std::collections::HashSet;

use candle_core::Device;
use prost::Message;
use vit_model::{CheckpointMeta, HeadKind, Vit, VitConfig};
use vit_onnx::proto::{ModelProto, tensor_proto::DataType, tensor_shape_proto::dimension::Value};
use vit_onnx::{ExportError, ExportPrecision, export};

fn small(head: HeadKind) -> (Vit, CheckpointMeta) {
    let cfg = VitConfig {
        num_layers: 2,
        projection_dim: 16,
        num_heads: 2,
        key_dim: 8,
        mlp_units: vec![32, 16],
        head,
        num_classes: 3,
        ..VitConfig::mnist()
    };
    let (model, _store) = Vit::init(&cfg, 11, &Device::Cpu).unwrap();
    let meta = CheckpointMeta::new(cfg, vec!["a".into(), "b".into(), "c".into()]);
    (model, meta)
}

fn dims(value: &vit_onnx::proto::ValueInfoProto) -> Vec<String> {
    let Some(vit_onnx::proto::type_proto::Value::TensorType(t)) = value.r#type.as_ref().unwrap().value.as_ref() else {
        panic!("not a tensor: {value:?}")
    };
    assert_eq!(t.elem_type, Some(DataType::Float as i32));
    t.shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value.as_ref().unwrap() {
            Value::DimValue(n) => n.to_string(),
            Value::DimParam(p) => p.clone(),
        })
        .collect()
}

/// Every node reads only the graph's input, initializers and outputs of nodes before it, and
/// no two nodes write the same value: the graph is in topological order, as ONNX requires.
fn assert_topologically_ordered(model: &ModelProto) {
    let graph = model.graph.as_ref().unwrap();
    let mut known: HashSet<&str> = graph.input.iter().map(|i| i.name()).collect();
    known.extend(graph.initializer.iter().map(|t| t.name()));
    for node in &graph.node {
        for input in &node.input {
            assert!(known.contains(input.as_str()), "{} reads {input} before it is written", node.name());
        }
        for output in &node.output {
            assert!(known.insert(output), "{output} is written twice");
        }
    }
    for output in &graph.output {
        assert!(known.contains(output.name()), "the graph output {} is never written", output.name());
    }
}

#[test]
fn the_file_declares_opset_17_a_dynamic_batch_and_what_a_consumer_needs() {
    for head in [HeadKind::ClassToken, HeadKind::MeanPool, HeadKind::Flatten] {
        let (model, meta) = small(head);
        let exported = export(&model, &meta, ExportPrecision::F32).unwrap();
        // What is written reads back as the same message.
        let bytes = vit_onnx::encode(&exported).unwrap();
        let read = ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(read, exported);
        assert_eq!(read.ir_version, Some(vit_onnx::IR_VERSION));
        assert_eq!(read.opset_import.len(), 1);
        assert_eq!((read.opset_import[0].domain(), read.opset_import[0].version()), ("", 17));
        let graph = read.graph.as_ref().unwrap();
        assert_eq!(graph.input.len(), 1);
        assert_eq!(graph.input[0].name(), "images");
        assert_eq!(dims(&graph.input[0]), ["batch", "28", "28", "1"]);
        assert_eq!(graph.output[0].name(), "logits");
        assert_eq!(dims(&graph.output[0]), ["batch", "3"]);
        assert_topologically_ordered(&read);
        let meta_value = |key: &str| read.metadata_props.iter().find(|p| p.key() == key).unwrap().value().to_string();
        assert_eq!(meta_value("vit.class_names"), r#"["a","b","c"]"#);
        assert_eq!(meta_value("vit.precision"), "f32");
        let prep: serde_json::Value = serde_json::from_str(&meta_value("vit.preprocessing")).unwrap();
        assert_eq!(prep["layout"], "NHWC");
        assert_eq!(prep["steps"][0], serde_json::json!({"op": "convert", "mode": "L"}));
        let config: VitConfig = serde_json::from_str(&meta_value("vit.config")).unwrap();
        assert_eq!(&config, model.config());
        // Every parameter is in the file once (query, key and value as one stacked weight).
        let floats: usize = graph
            .initializer
            .iter()
            .filter(|t| t.data_type == Some(DataType::Float as i32) && !t.dims.is_empty())
            .map(|t| t.dims.iter().product::<i64>() as usize)
            .sum();
        assert_eq!(floats, model.summary().total_parameters(), "{head:?}");
    }
}

#[test]
fn int8_dense_layers_are_integer_products_of_int8_weights() {
    let (model, meta) = small(HeadKind::ClassToken);
    let exported = export(&model, &meta, ExportPrecision::Int8).unwrap();
    assert_topologically_ordered(&exported);
    let graph = exported.graph.as_ref().unwrap();
    // 1 projection + 2 blocks x (qkv + output + 2 MLP layers) + classifier.
    let products = graph.node.iter().filter(|n| n.op_type() == "MatMulInteger").count();
    assert_eq!(products, 1 + 2 * 4 + 1);
    // The only float products left are the two of each block's attention.
    assert_eq!(graph.node.iter().filter(|n| n.op_type() == "MatMul").count(), 2 * 2);
    let int8_values: usize = graph
        .initializer
        .iter()
        .filter(|t| t.data_type == Some(DataType::Int8 as i32))
        .map(|t| t.raw_data().len())
        .sum();
    let cfg = model.config();
    let dense = cfg.patch_dim() * 16 + 2 * (16 * 48 + 16 * 16 + 16 * 32 + 32 * 16) + 16 * 3;
    assert_eq!(int8_values, dense);
}

#[test]
fn metadata_that_does_not_fit_the_model_is_refused() {
    let (model, mut meta) = small(HeadKind::MeanPool);
    meta.class_names.pop();
    let err = export(&model, &meta, ExportPrecision::F32).unwrap_err();
    assert!(matches!(err, ExportError::Metadata(_)), "{err}");
    assert!(err.to_string().contains("2 class names for a model of 3 classes"), "{err}");
    let (model, mut meta) = small(HeadKind::MeanPool);
    meta.config.num_layers = 3;
    let err = export(&model, &meta, ExportPrecision::F32).unwrap_err();
    assert!(err.to_string().contains("another configuration"), "{err}");
}
