//! timm import: a small random ViT written by timm's own `save_for_hub` writer
//! (`tests/parity/make_timm_hub.py`) gives timm's logits, and variants this model cannot
//! express are errors naming the argument.

use std::path::Path;

use candle_core::{Device, Tensor};
use vit_blocks::ModuleTree;
use vit_model::HeadKind;
use vit_model::import::timm;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/timm_hub")
}

#[test]
fn a_timm_hub_checkpoint_imports_and_gives_timms_logits() {
    check(&fixture(), HeadKind::ClassToken, false);
}

#[test]
fn an_average_pooled_timm_model_with_fc_norm_imports_and_gives_timms_logits() {
    check(&fixture().with_file_name("timm_hub_avg"), HeadKind::MeanPool, true);
}

#[test]
fn a_model_without_qkv_biases_saved_as_pytorch_model_bin_imports_and_gives_timms_logits() {
    let dir = fixture().with_file_name("timm_hub_no_qkv_bias_bin");
    assert!(!dir.join("model.safetensors").exists(), "the fixture holds only pytorch_model.bin");
    check(&dir, HeadKind::ClassToken, false);
    let (model, _, meta) = timm::load(&dir, &Device::Cpu).unwrap();
    assert!(!meta.config.qkv_bias);
    let names: Vec<String> = model.parameters().into_iter().map(|p| p.name).collect();
    assert!(!names.iter().any(|n| n.ends_with("attention.query.bias")), "{names:?}");
    assert!(names.iter().any(|n| n == "blocks.0.attention.output.bias"), "{names:?}");
    // The bare state dict, from the same pickle: the missing qkv bias is read from the tensors.
    let (bare, _, bare_meta) =
        timm::load_state_dict(dir.join("pytorch_model.bin"), "vit_tiny_patch16_224", Some(2), None, &Device::Cpu)
            .unwrap();
    assert!(!bare_meta.config.qkv_bias);
    let x = vit_rng::tensors::uniform(0f32, 1., (2, 8, 8, 3), 1, &Device::Cpu).unwrap();
    assert_eq!(
        bare.forward(&x, false).unwrap().to_vec2::<f32>().unwrap(),
        model.forward(&x, false).unwrap().to_vec2::<f32>().unwrap()
    );
    // A file that is no PyTorch zip says so, naming itself.
    let junk = std::env::temp_dir().join(format!("vit-junk-{}.bin", std::process::id()));
    std::fs::write(&junk, b"not a zip").unwrap();
    let err = vit_model::import::read_weights(&junk, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("vit-junk") && err.contains("PyTorch"), "{err}");
    std::fs::remove_file(junk).unwrap();
}

#[test]
fn bare_state_dicts_import_with_the_architecture_named() {
    for (dir, head) in
        [(fixture(), HeadKind::ClassToken), (fixture().with_file_name("timm_hub_avg"), HeadKind::MeanPool)]
    {
        let (model, _, meta) =
            timm::load_state_dict(dir.join("model.safetensors"), "vit_tiny_patch16_224", Some(2), None, &Device::Cpu)
                .unwrap();
        assert_eq!((meta.config.head, meta.config.image_size, meta.config.num_layers), (head, [8, 8], 2));
        assert_eq!(meta.preprocessing, None, "no normalisation is known for a bare state dict");
        let (hub, _, _) = timm::load(&dir, &Device::Cpu).unwrap();
        let x = vit_rng::tensors::uniform(0f32, 1., (2, 8, 8, 3), 2, &Device::Cpu).unwrap();
        assert_eq!(
            model.forward(&x, false).unwrap().to_vec2::<f32>().unwrap(),
            hub.forward(&x, false).unwrap().to_vec2::<f32>().unwrap()
        );
    }
    let err = timm::load_state_dict(
        fixture().join("model.safetensors"),
        "vit_tiny_patch16_224",
        Some(2),
        Some((vec![0.5], vec![0.5])),
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("do not fit 3 channels"), "{err}");
    // The head count is not in the shapes: the architecture's 3 do not divide the width 16.
    let err =
        timm::load_state_dict(fixture().join("model.safetensors"), "vit_tiny_patch16_224", None, None, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
    assert!(err.contains("not a multiple of num_heads 3"), "{err}");
}

fn check(dir: &Path, head: HeadKind, fc_norm: bool) {
    let (model, store, meta) = timm::load(dir, &Device::Cpu).unwrap();
    let cfg = &meta.config;
    assert_eq!((cfg.image_size, cfg.patch_size, cfg.projection_dim, cfg.num_layers), ([8, 8], 2, 16, 2));
    assert_eq!((cfg.num_heads, cfg.key_dim, cfg.num_classes, cfg.head, cfg.fc_norm), (2, 8, 4, head, fc_norm));
    assert_eq!(cfg.mlp_units, [64, 16]);
    assert_eq!(meta.class_names.len(), 4);
    assert_eq!(meta.preprocessing.as_ref().unwrap().normalizer.mean, [0.5; 3]);
    assert_eq!(store.vars().len(), model.parameters().len());

    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    // timm's input: (pixels - mean) / std, NCHW; ours takes NHWC.
    let images = ((&expected["images"] - 0.5).unwrap() / 0.5).unwrap();
    let nchw: Tensor = images.permute((0, 3, 1, 2)).unwrap();
    let check = (nchw - &expected["normalized"]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(check < 1e-6, "the test normalises as timm does: {check}");
    let logits = model.forward(&images, false).unwrap();
    let err = (&logits - &expected["logits"]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(err < 1e-5, "logits differ from timm's by {err}");
    eprintln!("timm hub import ({head:?}, fc_norm {fc_norm}): logits max abs error {err:.2e}");
}

#[test]
fn timm_variants_this_model_cannot_express_are_errors_naming_the_argument() {
    let dir = std::env::temp_dir().join(format!("vit-timm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = std::fs::read_to_string(fixture().join("config.json")).unwrap();
    for (from, to, expected) in [
        ("\"global_pool\": \"token\"\n  },", "\"global_pool\": \"avg\"\n  },", "global_pool `avg`"),
        ("\"in_chans\": 3,", "\"in_chans\": 3, \"reg_tokens\": 4,", "model_args.reg_tokens"),
        ("\"vit_tiny_patch16_224\"", "\"convnext_tiny\"", "no timm ViT"),
        ("\"vit_tiny_patch16_224\"", "\"vit_gigantic_patch16_224\"", "unknown size `gigantic`"),
    ] {
        assert!(config.contains(from), "{from}");
        std::fs::write(dir.join("config.json"), config.replace(from, to)).unwrap();
        let err = timm::config_from_timm(&dir.join("config.json")).unwrap_err().to_string();
        assert!(err.contains(expected) && err.contains("config.json"), "{expected}: {err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sharded_weights_load_through_their_index() {
    let dir = std::env::temp_dir().join(format!("vit-timm-shards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture().join("config.json"), dir.join("config.json")).unwrap();
    let all = candle_core::safetensors::load(fixture().join("model.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (shard, part) in [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)] {
        let tensors: std::collections::HashMap<String, Tensor> =
            part.iter().map(|n| ((*n).clone(), all[*n].clone())).collect();
        candle_core::safetensors::save(&tensors, dir.join(shard)).unwrap();
        for n in part {
            map.insert((*n).clone(), serde_json::Value::String(shard.into()));
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let (sharded, _, _) = timm::load(&dir, &Device::Cpu).unwrap();
    let (whole, _, _) = timm::load(fixture(), &Device::Cpu).unwrap();
    let x = vit_rng::tensors::uniform(0f32, 1., (2, 8, 8, 3), 3, &Device::Cpu).unwrap();
    let (a, b) = (sharded.forward(&x, false).unwrap(), whole.forward(&x, false).unwrap());
    assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    // An index naming a tensor its shard lacks, or a shard outside the directory, is an error.
    let mut broken = index.clone();
    broken["weight_map"]["head.weight"] = serde_json::Value::String("model-00001-of-00002.safetensors".into());
    std::fs::write(dir.join("model.safetensors.index.json"), broken.to_string()).unwrap();
    let err = timm::load(&dir, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("head.weight") && err.contains("index.json"), "{err}");
    broken["weight_map"]["head.weight"] = serde_json::Value::String("../elsewhere.safetensors".into());
    std::fs::write(dir.join("model.safetensors.index.json"), broken.to_string()).unwrap();
    assert!(timm::load(&dir, &Device::Cpu).err().unwrap().to_string().contains("not a file beside"));
    std::fs::remove_dir_all(dir).unwrap();
}
