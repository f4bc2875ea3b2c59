//! Hugging Face ViT import: the conv patch embedding becomes the linear projection over
//! TF-ordered patches, and every tensor finds its place.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use vit_data::augment::Normalizer;
use vit_model::HeadKind;
use vit_model::import::hf;
use vit_patches::extract_patch_tokens;

#[test]
fn hugging_face_vit_imports_with_the_conv_kernel_permuted() {
    let dir = std::env::temp_dir().join(format!("vit-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = r#"{
        "architectures": ["ViTForImageClassification"], "hidden_size": 8, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 16, "image_size": 12, "patch_size": 4,
        "num_channels": 3, "layer_norm_eps": 1e-12, "id2label": {"0": "cat", "1": "dog", "2": "owl"}
    }"#;
    std::fs::write(dir.join("config.json"), config).unwrap();
    let dev = Device::Cpu;
    // Each tensor from its own seed: equal query and key weights could hide a swap.
    let drawn = std::cell::Cell::new(0u64);
    let r = |shape: &[usize]| {
        drawn.set(drawn.get() + 1);
        vit_rng::tensors::normal(0f32, 0.5, shape, drawn.get(), &dev).unwrap()
    };
    let mut t: HashMap<String, Tensor> = HashMap::from([
        ("vit.embeddings.cls_token".into(), r(&[1, 1, 8])),
        ("vit.embeddings.position_embeddings".into(), r(&[1, 10, 8])),
        ("vit.embeddings.patch_embeddings.projection.weight".into(), r(&[8, 3, 4, 4])),
        ("vit.embeddings.patch_embeddings.projection.bias".into(), r(&[8])),
        ("vit.layernorm.weight".into(), r(&[8])),
        ("vit.layernorm.bias".into(), r(&[8])),
        ("vit.pooler.dense.weight".into(), r(&[8, 8])),
        ("classifier.weight".into(), r(&[3, 8])),
        ("classifier.bias".into(), r(&[3])),
    ]);
    for i in 0..2 {
        let p = format!("vit.encoder.layer.{i}");
        for (m, shape) in [
            ("layernorm_before", vec![8]),
            ("layernorm_after", vec![8]),
            ("attention.attention.query", vec![8, 8]),
            ("attention.attention.key", vec![8, 8]),
            ("attention.attention.value", vec![8, 8]),
            ("attention.output.dense", vec![8, 8]),
            ("intermediate.dense", vec![16, 8]),
            ("output.dense", vec![8, 16]),
        ] {
            let bias = vec![shape[0]];
            let weight = if m.starts_with("layernorm") { bias.clone() } else { shape };
            t.insert(format!("{p}.{m}.weight"), r(&weight));
            t.insert(format!("{p}.{m}.bias"), r(&bias));
        }
    }
    let weights = dir.join("model.safetensors");
    candle_core::safetensors::save(&t, &weights).unwrap();

    let (model, store, meta) = hf::load(dir.join("config.json"), &weights, &dev).unwrap();
    assert_eq!(meta.class_names, ["cat", "dog", "owl"]);
    assert_eq!(meta.config.head, HeadKind::ClassToken);
    assert_eq!(meta.config.layer_norm_eps, 1e-12);
    assert!(!meta.config.mlp_activation_on_last);
    // Every parameter came from the file (the pooler is not used by the classifier).
    let ours: usize = store.varmap().all_vars().iter().map(|v| v.elem_count()).sum();
    let theirs: usize = t.iter().filter(|(k, _)| !k.contains("pooler")).map(|(_, v)| v.elem_count()).sum();
    assert_eq!(ours, theirs);

    // The imported projection over TF-ordered patches equals the conv over NCHW images.
    let images = vit_rng::tensors::uniform(0f32, 1., (2, 12, 12, 3), 1000, &dev).unwrap();
    let conv = images
        .permute((0, 3, 1, 2))
        .unwrap()
        .contiguous()
        .unwrap()
        .conv2d(&t["vit.embeddings.patch_embeddings.projection.weight"], 0, 4, 1, 1)
        .unwrap() // [B, D, 3, 3]
        .flatten_from(2)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .broadcast_add(&t["vit.embeddings.patch_embeddings.projection.bias"])
        .unwrap();
    let tokens = extract_patch_tokens(&images, &meta.config.patch_spec()).unwrap();
    let encoded = model.encoder().forward(&tokens).unwrap(); // [B, 1 + 9, D]
    let positions = model.encoder().position_table().narrow(0, 1, 9).unwrap();
    let projected = encoded.narrow(1, 1, 9).unwrap().broadcast_sub(&positions).unwrap();
    let err = (projected - conv).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(err < 1e-5, "projection differs from the conv by {err}");

    let logits = model.forward(&images, false).unwrap();
    assert_eq!(logits.dims(), [2, 3]);
    assert_eq!(logits.dtype(), DType::F32);

    // The preprocessing goes with the weights: ViTImageProcessor's mean = std = 0.5 without a
    // preprocessor_config.json, its own values with one, and a processor this crate cannot
    // follow is an error, not pixels fed in another scale.
    let normalizer = meta.preprocessing.as_ref().unwrap().normalizer.clone();
    assert_eq!(normalizer, Normalizer { mean: vec![0.5; 3], std: vec![0.5; 3] });
    let processor = dir.join("preprocessor_config.json");
    std::fs::write(&processor, r#"{"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}"#).unwrap();
    let (_, _, meta) = hf::load(dir.join("config.json"), &weights, &dev).unwrap();
    assert_eq!(meta.preprocessing.as_ref().unwrap().normalizer.std, [0.229, 0.224, 0.225]);
    std::fs::write(&processor, r#"{"rescale_factor": 1.0}"#).unwrap();
    let err = hf::load(dir.join("config.json"), &weights, &dev).err().unwrap().to_string();
    assert!(err.contains("preprocessor_config.json") && err.contains("rescales pixels by 1"), "{err}");
    std::fs::remove_file(&processor).unwrap();

    // A tensor the layout does not know is an error naming it, not silently dropped.
    let mut unknown = t.clone();
    unknown.insert("vit.encoder.layer.0.attention.attention.rotary.weight".into(), r(&[8]));
    let odd = dir.join("odd.safetensors");
    candle_core::safetensors::save(&unknown, &odd).unwrap();
    let err = hf::load(dir.join("config.json"), &odd, &dev).err().unwrap().to_string();
    assert!(err.contains("rotary.weight") && err.contains("odd.safetensors"), "{err}");

    // `qkv_bias: false`: no bias on query, key and value, the output projection keeps its own.
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"num_channels\"", "\"qkv_bias\": false, \"num_channels\""),
    )
    .unwrap();
    let mut plain = t.clone();
    plain.retain(|name, _| !["query.bias", "key.bias", "value.bias"].iter().any(|end| name.ends_with(end)));
    let no_bias = dir.join("no_bias.safetensors");
    candle_core::safetensors::save(&plain, &no_bias).unwrap();
    let (model, store, meta) = hf::load(dir.join("config.json"), &no_bias, &dev).unwrap();
    assert!(!meta.config.qkv_bias);
    assert_eq!(store.vars().len(), plain.len() - 1, "every tensor but the pooler's is a parameter");
    assert_eq!(model.summary().total_parameters() as u64, meta.config.parameter_count().unwrap());
    // The same file is incomplete for a config with biases: the error names the tensor.
    std::fs::write(dir.join("config.json"), config).unwrap();
    let err = hf::load(dir.join("config.json"), &no_bias, &dev).err().unwrap().to_string();
    assert!(err.contains("attention.") && err.contains(".bias` is missing"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A small random `ViTForImageClassification` saved by `transformers` itself
/// (`tests/parity/make_hf_vit.py`): the import gives transformers' logits, and the recorded
/// preprocessing is the processor's.
#[test]
fn a_transformers_checkpoint_imports_and_gives_its_logits() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_vit");
    let (model, store, meta) = hf::load(dir.join("config.json"), dir.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(meta.class_names, ["cat", "dog", "owl"]);
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let normalizer = meta.preprocessing.as_ref().unwrap().normalizer.clone();
    assert_eq!(normalizer, Normalizer { mean: vec![0.5; 3], std: vec![0.5; 3] });
    // The processor's pixel values are ours: (pixel - mean) / std.
    let images = ((&expected["images"] - 0.5).unwrap() / 0.5).unwrap();
    let nchw = images.permute((0, 3, 1, 2)).unwrap();
    let pixels =
        (nchw - &expected["pixel_values"]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(pixels < 1e-5, "pixel values differ from the processor's by {pixels}");
    let logits = model.forward(&images, false).unwrap();
    let err = (&logits - &expected["logits"]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(err < 1e-5, "logits differ from transformers' by {err}");

    // The gradient of the same loss, per parameter, against transformers' (mapped to our names
    // and layouts the way the weights are).
    let labels = expected["labels"].to_dtype(DType::U32).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
    let loss_err = (loss.to_scalar::<f32>().unwrap() - expected["loss"].to_vec1::<f32>().unwrap()[0]).abs();
    assert!(loss_err < 1e-5, "loss differs by {loss_err}");
    let grads = loss.backward().unwrap();
    let theirs: HashMap<String, Tensor> =
        expected.iter().filter_map(|(k, v)| k.strip_prefix("grad.").map(|k| (k.to_string(), v.clone()))).collect();
    let theirs = hf::import_tensors(&theirs, &meta.config, &dir.join("expected.safetensors")).unwrap();
    let vars = store.vars();
    assert_eq!(theirs.len(), vars.len());
    let mut worst = 0f32;
    for (name, var) in &vars {
        let (ours, reference) = (grads.get(var).unwrap(), &theirs[name]);
        let scale = reference.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let diff = (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        if name.ends_with("attention.key.bias") {
            assert!(diff < 1e-6, "{name}: {diff}"); // zero analytically on both sides
            continue;
        }
        assert!(diff / scale.max(1e-12) < 1e-3, "{name}: gradient differs by {} relative", diff / scale);
        worst = worst.max(diff / scale.max(1e-12));
    }
    eprintln!(
        "transformers import: logits max abs error {err:.2e}, pixel values {pixels:.2e}, loss {loss_err:.2e}, \
         worst gradient {worst:.2e} relative"
    );
}
