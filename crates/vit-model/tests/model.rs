//! Presets, shapes, gradients, checkpoints and their errors.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use vit_blocks::ModuleTree;
use vit_model::checkpoint::{self, CheckpointMeta};
use vit_model::{HeadKind, ModelError, PositionEmbedding, Summary, Vit, VitConfig, group_thousands};

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vit-model-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny(head: HeadKind) -> VitConfig {
    VitConfig {
        image_size: [8, 8],
        channels: 3,
        patch_size: 2,
        projection_dim: 16,
        num_heads: 2,
        key_dim: 12,
        num_layers: 2,
        mlp_units: vec![32, 16],
        head,
        head_units: vec![24],
        head_dropout: 0.2,
        num_classes: 5,
        ..VitConfig::keras_cifar100()
    }
}

fn meta(config: &VitConfig) -> CheckpointMeta {
    CheckpointMeta {
        config: config.clone(),
        class_names: (0..config.num_classes).map(|i| format!("c{i}")).collect(),
        preprocessing: None,
        extra: BTreeMap::from([("note".to_string(), "kept".to_string())]),
    }
}

fn param_count(store: &vit_blocks::SeededVarMap) -> usize {
    store.varmap().all_vars().iter().map(|v| v.elem_count()).sum()
}

#[test]
fn the_model_names_every_parameter_and_which_take_weight_decay() {
    // Every head and every optional part: class token, learned and sin-cos positions, layer
    // scale, head MLP.
    for cfg in [
        VitConfig { layer_scale: Some(0.1), ..tiny(HeadKind::ClassToken) },
        VitConfig { position: PositionEmbedding::SinCos2d, ..tiny(HeadKind::MeanPool) },
        tiny(HeadKind::Flatten),
    ] {
        let (model, store) = Vit::init(&cfg, 3, &Device::Cpu).unwrap();
        let listed: Vec<String> = model.parameters().into_iter().map(|p| p.name).collect();
        let mut sorted = listed.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), listed.len(), "a parameter is listed twice");
        assert_eq!(sorted, store.vars().into_keys().collect::<Vec<_>>(), "listed parameters differ from the store");
        for p in model.parameters() {
            let var = &store.vars()[&p.name];
            assert_eq!(p.tensor.id(), var.as_tensor().id(), "{}: not the variable's tensor", p.name);
        }
        let no_decay = model.no_weight_decay();
        for name in &listed {
            // Biases, norms, positions, the class token and layer scales take no weight decay.
            let exempt = name.ends_with(".bias")
                || name.contains("norm")
                || name.contains("position_embedding")
                || name.contains("class_token")
                || name.contains("layer_scale");
            assert_eq!(no_decay.contains(name), exempt, "{name}");
        }
    }
    let (model, _) =
        Vit::init(&VitConfig { layer_scale: Some(0.1), ..tiny(HeadKind::ClassToken) }, 3, &Device::Cpu).unwrap();
    let no_decay = model.no_weight_decay();
    for name in [
        "blocks.0.attention.query.bias",
        "blocks.1.norm1.weight",
        "norm.weight",
        "patch_encoder.position_embedding.weight",
        "patch_encoder.class_token",
        "blocks.1.layer_scale1",
    ] {
        assert!(no_decay.contains(name), "{name}");
    }
    assert!(!no_decay.contains("blocks.0.attention.query.weight") && !no_decay.contains("head.classifier.weight"));
}

#[test]
fn presets_have_the_published_parameter_counts() {
    // Keras' model.summary() of the example: 21,759,012; timm's ViT-Ti/S/B-16 at 224 with 1000 classes.
    assert_eq!(Summary::of(&VitConfig::keras_cifar100()).total_parameters(), 21_759_012);
    assert_eq!(Summary::of(&VitConfig::vit_tiny_16()).total_parameters(), 5_717_416);
    assert_eq!(Summary::of(&VitConfig::vit_small_16()).total_parameters(), 22_050_664);
    assert_eq!(Summary::of(&VitConfig::vit_base_16()).total_parameters(), 86_567_656);
    for name in VitConfig::PRESETS {
        let cfg = VitConfig::preset(name).unwrap();
        cfg.validate().unwrap();
        assert_eq!(VitConfig::preset(&name.replace('_', "-")), Some(cfg));
    }
    assert_eq!(VitConfig::preset("nope"), None);
    assert_eq!(VitConfig::mnist().num_patches(), 49);
    assert_eq!(VitConfig::keras_cifar100().num_patches(), 144);
    // The anchors' analytic count: 0.403 GFLOP per forward image for the Keras example.
    let gflop = VitConfig::keras_cifar100().forward_flops() as f64 / 1e9;
    assert!((gflop - 0.403).abs() < 0.001, "{gflop}");
}

#[test]
fn summary_matches_the_built_model() {
    for cfg in [
        VitConfig::keras_cifar100(),
        VitConfig::mnist(),
        tiny(HeadKind::ClassToken),
        VitConfig { layer_scale: Some(0.1), position: PositionEmbedding::SinCos2d, ..tiny(HeadKind::MeanPool) },
    ] {
        let (model, store) = Vit::init(&cfg, 0, &Device::Cpu).unwrap();
        assert_eq!(model.summary().total_parameters(), param_count(&store), "{cfg:?}");
    }
    let text = Summary::of(&VitConfig::keras_cifar100()).to_string();
    assert!(text.contains("blocks.7") && text.contains("(B, 144, 64)") && text.contains("21,759,012"), "{text}");
    assert_eq!(group_thousands(1234567), "1,234,567");
    assert_eq!(group_thousands(12), "12");
}

#[test]
fn forward_shapes_and_input_checks() {
    for head in [HeadKind::Flatten, HeadKind::ClassToken, HeadKind::MeanPool] {
        let cfg = tiny(head);
        let (model, _) = Vit::init(&cfg, 1, &Device::Cpu).unwrap();
        let x = vit_rng::tensors::uniform(0f32, 1., (3, 8, 8, 3), 1, &Device::Cpu).unwrap();
        let (logits, attention) = model.forward_with_attention(&x, false).unwrap();
        assert_eq!(logits.dims(), [3, 5]);
        assert_eq!(attention.len(), 2);
        assert_eq!(attention[0].dims(), [3, 2, cfg.num_tokens(), cfg.num_tokens()]);
        let p = model.predict_proba(&x).unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
        assert!(p.iter().all(|s| (s - 1.0).abs() < 1e-5));
        // Dropout changes training outputs but inference is deterministic.
        let a = model.forward(&x, false).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(a, model.forward(&x, false).unwrap().to_vec2::<f32>().unwrap());
        assert_ne!(a, model.forward(&x, true).unwrap().to_vec2::<f32>().unwrap());
        let err = model.forward(&Tensor::zeros((3, 3, 8, 8), DType::F32, &Device::Cpu).unwrap(), false).unwrap_err();
        assert!(err.to_string().contains("must be [B, 8, 8, 3] (NHWC), got [3, 3, 8, 8]"), "{err}");
    }
}

vit_kernels::device_tests! {
fn every_trainable_parameter_gets_a_nonzero_gradient(device: &Device) {
    // bf16 and f16: the mixed-precision step, whose gradients reach the f32 variables through
    // the casts of `with_compute_dtype`.
    for (dtype, zero) in [(DType::F32, 1e-10), (DType::BF16, 1e-6), (DType::F16, 1e-6)] {
        for head in [HeadKind::Flatten, HeadKind::ClassToken, HeadKind::MeanPool] {
            let cfg = VitConfig { drop_path: 0.1, ..tiny(head) };
            let (model, store) = Vit::init(&cfg, 2, device).unwrap();
            let model = model.with_compute_dtype(dtype).unwrap();
            let x = vit_rng::tensors::uniform(0f32, 1., (4, 8, 8, 3), 2, device).unwrap();
            let labels = Tensor::new(&[0u32, 1, 2, 3], device).unwrap();
            let loss = candle_nn::loss::cross_entropy(&model.forward(&x, true).unwrap(), &labels).unwrap();
            let grads = loss.backward().unwrap();
            let vars = store.varmap().data().lock().unwrap();
            assert!(vars.len() > 30);
            for (name, var) in vars.iter() {
                let g = grads.get(var).unwrap_or_else(|| panic!("{dtype:?} {head:?}: {name} has no gradient"));
                assert_eq!(g.dtype(), DType::F32, "{dtype:?} {head:?}: {name}");
                // A gradient that tracks ops holds the step's graph (and leaks it into AdamW).
                assert!(!g.track_op(), "{dtype:?} {head:?}: the gradient of {name} holds a graph");
                let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(norm.is_finite(), "{dtype:?} {head:?}: {name} gradient norm {norm}");
                if name.ends_with("attention.key.bias") {
                    // Analytically zero: softmax ignores a shift shared by all keys (see parity.rs).
                    assert!(norm < zero, "{dtype:?} {head:?}: {name} gradient norm {norm}, expected ~0");
                } else {
                    assert!(norm > 0.0, "{dtype:?} {head:?}: {name} has an all-zero gradient");
                }
            }
        }
    }
}
}

#[test]
fn checkpoint_round_trip_is_bit_identical() {
    let dir = tmp_dir("roundtrip");
    let cfg = tiny(HeadKind::ClassToken);
    let (model, store) = Vit::init(&cfg, 3, &Device::Cpu).unwrap();
    let path = dir.join("m.safetensors");
    checkpoint::save(&path, store.varmap(), &meta(&cfg)).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["m.safetensors"], "no temporary file is left behind");
    let (reloaded, _, m) = Vit::load(&path, &Device::Cpu).unwrap();
    assert_eq!(m, meta(&cfg));
    let x = vit_rng::tensors::uniform(0f32, 1., (2, 8, 8, 3), 3, &Device::Cpu).unwrap();
    let a = model.forward(&x, false).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = reloaded.forward(&x, false).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_checkpoints_give_named_errors() {
    let dir = tmp_dir("bad");
    let cfg = tiny(HeadKind::Flatten);
    let (_, store) = Vit::init(&cfg, 4, &Device::Cpu).unwrap();
    let tensors: BTreeMap<String, Tensor> =
        store.varmap().data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    let write = |name: &str, t: &BTreeMap<String, Tensor>| {
        let path = dir.join(name);
        checkpoint::save_tensors(&path, t, &meta(&cfg)).unwrap();
        path
    };

    let mut missing = tensors.clone();
    missing.remove("blocks.1.attention.key.bias");
    let err = Vit::load(write("missing.safetensors", &missing), &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingTensor { name, expected, .. } if name == "blocks.1.attention.key.bias" && expected == &[24]),
        "{err}"
    );
    assert!(err.to_string().contains("missing.safetensors"), "{err}");

    let mut misshapen = tensors.clone();
    misshapen.insert("head.classifier.weight".into(), Tensor::zeros((7, 24), DType::F32, &Device::Cpu).unwrap());
    let err = Vit::load(write("shape.safetensors", &misshapen), &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, ModelError::ShapeMismatch { name, expected, found, .. }
            if name == "head.classifier.weight" && expected == &[5, 24] && found == &[7, 24]),
        "{err}"
    );
    assert!(err.to_string().contains("expected [5, 24]"), "{err}");

    let mut extra = tensors.clone();
    extra.insert("blocks.9.norm1.weight".into(), Tensor::zeros(16, DType::F32, &Device::Cpu).unwrap());
    let err = Vit::load(write("extra.safetensors", &extra), &Device::Cpu).unwrap_err();
    assert!(matches!(&err, ModelError::UnexpectedTensor { name, .. } if name == "blocks.9.norm1.weight"), "{err}");

    // A safetensors file without our metadata, a truncated file, a missing file.
    let plain = dir.join("plain.safetensors");
    candle_core::safetensors::save(
        &HashMap::from([("w".to_string(), Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap())]),
        &plain,
    )
    .unwrap();
    let err = Vit::load(&plain, &Device::Cpu).unwrap_err();
    assert!(matches!(&err, ModelError::Metadata { key, .. } if key == "vit.format"), "{err}");
    let good = write("good.safetensors", &tensors);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = Vit::load(&truncated, &Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err}");
    assert!(err.to_string().contains("truncated.safetensors"), "{err}");
    let err = Vit::load(dir.join("absent.safetensors"), &Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");

    // Metadata that disagrees with itself or with the tensors: fewer class names than classes,
    // and a config far larger than the tensors (which would allocate before any tensor check).
    let raw = |name: &str, config: &VitConfig, class_names: usize| {
        let metadata = HashMap::from([
            ("vit.format".to_string(), "vit-rs/1".to_string()),
            ("vit.config".to_string(), serde_json::to_string(config).unwrap()),
            ("vit.class_names".to_string(), serde_json::to_string(&vec!["c"; class_names]).unwrap()),
        ]);
        let path = dir.join(name);
        std::fs::write(&path, safetensors::serialize(tensors.iter(), Some(metadata)).unwrap()).unwrap();
        path
    };
    let err = Vit::load(raw("names.safetensors", &cfg, 3), &Device::Cpu).unwrap_err();
    assert!(matches!(&err, ModelError::Metadata { key, .. } if key == "vit.class_names"), "{err}");
    assert!(err.to_string().contains("holds 3 names, but the config has 5 classes"), "{err}");
    let absurd = VitConfig { num_layers: 1000, projection_dim: 4096, mlp_units: vec![4096], ..cfg.clone() };
    let err = Vit::load(raw("absurd.safetensors", &absurd, 5), &Device::Cpu).unwrap_err();
    assert!(matches!(&err, ModelError::Metadata { key, .. } if key == "vit.config"), "{err}");
    assert!(err.to_string().contains("parameters, but the file's tensors hold"), "{err}");
    let beyond = VitConfig { num_layers: 1 << 20, ..cfg.clone() };
    let err = Vit::load(raw("beyond.safetensors", &beyond, 5), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("num_layers"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn config_files_round_trip_and_errors_name_the_field() {
    let dir = tmp_dir("config");
    let cfg = VitConfig::keras_cifar100();
    let toml_path = dir.join("k.toml");
    std::fs::write(&toml_path, cfg.to_toml()).unwrap();
    assert_eq!(VitConfig::from_file(&toml_path).unwrap(), cfg);
    let json_path = dir.join("k.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    assert_eq!(VitConfig::from_file(&json_path).unwrap(), cfg);

    let typo = dir.join("typo.toml");
    std::fs::write(&typo, cfg.to_toml().replace("num_heads", "num_head")).unwrap();
    let err = VitConfig::from_file(&typo).unwrap_err().to_string();
    assert!(err.contains("typo.toml") && err.contains("num_head"), "{err}");

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, cfg.to_toml().replace("mlp_units = [128, 64]", "mlp_units = [128, 32]")).unwrap();
    let err = VitConfig::from_file(&bad).unwrap_err();
    assert!(matches!(err, ModelError::InvalidConfig { field: "mlp_units", .. }), "{err}");
    let err = VitConfig { head_dropout: 1.0, ..cfg }.validate().unwrap_err();
    assert!(matches!(err, ModelError::InvalidConfig { field: "head_dropout", .. }), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_detached_model_gives_the_same_logits_without_a_graph() {
    let cfg = tiny(HeadKind::ClassToken);
    let (model, _) = Vit::init(&cfg, 5, &Device::Cpu).unwrap();
    let x = vit_rng::tensors::uniform(0f32, 1., (2, 8, 8, 3), 4, &Device::Cpu).unwrap();
    let tracked = model.forward(&x, false).unwrap();
    let detached = model.detached().forward(&x, false).unwrap();
    assert_eq!(tracked.to_vec2::<f32>().unwrap(), detached.to_vec2::<f32>().unwrap());
    assert!(tracked.track_op() && !detached.track_op());
}

/// The metadata entries of a checkpoint file as written, read without this crate, each value
/// as the JSON it holds (or the string).
fn raw_metadata(path: &std::path::Path) -> BTreeMap<String, serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let json = |v: String| serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v));
    header.metadata().clone().unwrap_or_default().into_iter().map(|(k, v)| (k, json(v))).collect()
}

#[test]
fn checkpoints_written_before_typed_preprocessing_read_and_write_the_same_entries() {
    use vit_data::augment::Normalizer;
    use vit_data::{Interpolation, Preprocessing, ResizeSpec};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/written_by_8ad85a7");
    let out = tmp_dir("typed-preprocessing");

    let (_, store, meta) = Vit::load(dir.join("run.safetensors"), &Device::Cpu).unwrap();
    let expected = Preprocessing {
        read_size: (28, 28),
        normalizer: Normalizer { mean: vec![0.125_515_97], std: vec![0.302_118_1] },
        ..Preprocessing::identity((28, 28), 1)
    };
    assert_eq!(meta.preprocessing.as_ref(), Some(&expected));
    assert!(meta.extra.contains_key("train.recipe"), "the other entries are kept");
    assert!(!meta.extra.keys().any(|k| k.starts_with("data.")), "{:?}", meta.extra.keys());
    checkpoint::save(out.join("run.safetensors"), store.varmap(), &meta).unwrap();
    assert_eq!(raw_metadata(&out.join("run.safetensors")), raw_metadata(&dir.join("run.safetensors")));

    let (_, store, meta) = Vit::load(dir.join("timm_import.safetensors"), &Device::Cpu).unwrap();
    let prep = meta.preprocessing.clone().unwrap();
    assert_eq!(prep.resize, Some(ResizeSpec { interpolation: Interpolation::Bicubic, crop_pct: Some(0.9) }));
    assert_eq!((prep.normalizer.mean, prep.input, prep.channels), (vec![0.5; 3], (8, 8), 3));
    checkpoint::save(out.join("timm.safetensors"), store.varmap(), &meta).unwrap();
    let (mut old, new) =
        (raw_metadata(&dir.join("timm_import.safetensors")), raw_metadata(&out.join("timm.safetensors")));
    // Written again, the import also records the size it reads images at: its input.
    old.insert("data.image_size".into(), serde_json::json!([8, 8]));
    assert_eq!(new, old);
    assert_eq!(checkpoint::read_meta(out.join("timm.safetensors")).unwrap(), meta);

    // The entries have one owner: metadata that puts them among the extra ones is refused.
    let mut stray = meta.clone();
    stray.extra.insert("data.normalizer".into(), "{}".into());
    let err = checkpoint::save(out.join("stray.safetensors"), store.varmap(), &stray).unwrap_err().to_string();
    assert!(err.contains("data.normalizer") && err.contains("CheckpointMeta::preprocessing"), "{err}");
    std::fs::remove_dir_all(&out).unwrap();
}
