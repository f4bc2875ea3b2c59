//! `vit export`: the ONNX models it writes, checked by an independent runtime. ONNX Runtime
//! (through `crates/vit-onnx/tests/onnxruntime_check.py`, with `onnx.checker` first) must
//! compute the logits of the `vit` model the file came from, for a run's checkpoint, imported
//! Hugging Face and timm models (class token, mean pool with fc_norm) and a flatten head.

#[path = "../../vit-data/tests/common/mod.rs"]
mod common;
mod support;

use std::path::Path;
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use common::tmp_dir;
use vit_model::{CheckpointMeta, HeadKind, InferencePrecision, Vit, VitConfig};

fn vit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vit")).args(args).env_remove("VIT_DATA_DIR").output().expect("the vit binary runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

/// Exports `checkpoint` with `precision`, computes the model's logits on seeded inputs of
/// batch 1 and 7 in that precision, and has ONNX Runtime compare; returns the largest
/// difference it saw.
fn check_export(python: &Path, dir: &Path, name: &str, checkpoint: &Path, precision: &str, tolerance: f32) -> f32 {
    let onnx = dir.join(format!("{name}-{precision}.onnx"));
    let out = vit(&["export", &s(checkpoint), "-o", &s(&onnx), "--precision", precision]);
    assert!(out.status.success(), "{name}: {}", text(&out));
    assert!(text(&out).contains("[batch, "), "{}", text(&out));

    let (model, _store, meta) = Vit::load(checkpoint, &Device::Cpu).unwrap();
    let model = model.for_inference(precision.parse::<InferencePrecision>().unwrap()).unwrap();
    let [h, w] = meta.config.image_size;
    let c = meta.config.channels;
    let mut cases = Vec::new();
    for (i, batch) in [1usize, 7].into_iter().enumerate() {
        let values = vit_rng::normal(batch * h * w * c, 17 + i as u64);
        let images = Tensor::from_vec(values.clone(), (batch, h, w, c), &Device::Cpu).unwrap();
        let logits: Vec<f32> = model.forward(&images, false).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let (input, output) = (format!("{name}-{precision}-x{batch}.f32"), format!("{name}-{precision}-y{batch}.f32"));
        write_f32(&dir.join(&input), &values);
        write_f32(&dir.join(&output), &logits);
        cases.push(serde_json::json!({
            "input": input, "logits": output, "shape": [batch, h, w, c], "tolerance": tolerance,
        }));
    }
    let spec = serde_json::json!({
        "model": onnx.file_name().unwrap().to_str().unwrap(),
        "class_names": meta.class_names,
        "precision": precision,
        "cases": cases,
    });
    let spec_path = dir.join(format!("{name}-{precision}.json"));
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vit-onnx/tests/onnxruntime_check.py");
    let run = Command::new(python).arg(&script).arg(&spec_path).output().expect("python runs");
    let log = text(&run);
    assert!(run.status.success() && log.contains("OK"), "{name} ({precision}): {log}");
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["max_abs_diff"].as_f64().unwrap() as f32)
        .fold(0.0, f32::max)
}

/// A checkpoint of the Keras example's flatten head (LayerNorm, flatten, an MLP head), on an
/// input whose sides are not a multiple of the patch (the last row and column are dropped).
fn flatten_checkpoint(path: &Path) {
    let cfg = VitConfig {
        image_size: [14, 13],
        channels: 3,
        patch_size: 4,
        projection_dim: 16,
        num_heads: 2,
        key_dim: 8,
        num_layers: 2,
        mlp_units: vec![32, 16],
        head: HeadKind::Flatten,
        head_units: vec![24],
        num_classes: 5,
        layer_scale: Some(0.5),
        ..VitConfig::keras_cifar100()
    };
    let (_model, store) = Vit::init(&cfg, 3, &Device::Cpu).unwrap();
    let names = (0..5).map(|i| format!("class {i}")).collect();
    vit_model::checkpoint::save(path, store.varmap(), &CheckpointMeta::new(cfg, names)).unwrap();
}

#[test]
fn exported_models_compute_the_logits_of_vit_in_onnx_runtime() {
    let Some(python) = support::test_python("onnx, onnxruntime, numpy") else { return };
    let dir = tmp_dir("export");
    // The default run's checkpoint (the default recipe, cut to one short epoch).
    let run = dir.join("run");
    let out = vit(&["train", "--device", "cpu", "--epochs", "1", "--limit-train", "512", "--out", &s(&run), "--quiet"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut checkpoints = vec![("default-run".to_string(), run.join("best.safetensors"))];
    // Imported models: Hugging Face (class token), timm (class token; mean pool with fc_norm).
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vit-model/tests/fixtures");
    for source in ["hf_vit", "timm_hub", "timm_hub_avg"] {
        let imported = dir.join(format!("{source}.safetensors"));
        let out = vit(&["import", &s(&fixtures.join(source)), "-o", &s(&imported)]);
        assert!(out.status.success(), "{}", text(&out));
        checkpoints.push((source.to_string(), imported));
    }
    let flatten = dir.join("flatten.safetensors");
    flatten_checkpoint(&flatten);
    checkpoints.push(("flatten".to_string(), flatten));

    for (name, checkpoint) in &checkpoints {
        let diff = check_export(&python, &dir, name, checkpoint, "f32", 1e-4);
        eprintln!("{name} f32: largest logit difference {diff:e}");
        let diff = check_export(&python, &dir, name, checkpoint, "int8", 1e-4);
        eprintln!("{name} int8: largest logit difference {diff:e}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn export_refuses_a_folder_or_the_checkpoint_itself_as_its_output() {
    let dir = tmp_dir("export-args");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vit-model/tests/fixtures/written_by_8ad85a7");
    let checkpoint = dir.join("run.safetensors");
    std::fs::copy(fixture.join("run.safetensors"), &checkpoint).unwrap();
    let out = vit(&["export", &s(&checkpoint), "-o", &s(&dir)]);
    assert!(!out.status.success() && text(&out).contains("is a folder"), "{}", text(&out));
    let out = vit(&["export", &s(&checkpoint), "-o", &s(&checkpoint)]);
    assert!(!out.status.success() && text(&out).contains("is the checkpoint itself"), "{}", text(&out));
    let missing = dir.join("missing.safetensors");
    let out = vit(&["export", &s(&missing), "-o", &s(&dir.join("m.onnx"))]);
    assert!(!out.status.success() && text(&out).contains("missing.safetensors"), "{}", text(&out));
    let out = vit(&["export", &s(&checkpoint), "-o", &s(&dir.join("m.onnx")), "--precision", "bf16"]);
    assert!(!out.status.success() && text(&out).contains("f32, int8"), "{}", text(&out));
    // The checkpoint is untouched, and a good export writes one file and no temporary.
    let out = vit(&["export", &s(&checkpoint), "-o", &s(&dir.join("m.onnx"))]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("[batch, 28, 28, 1]") && text(&out).contains("[batch, 10]"), "{}", text(&out));
    let mut files: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, ["m.onnx", "run.safetensors"]);
    assert_eq!(std::fs::read(&checkpoint).unwrap(), std::fs::read(fixture.join("run.safetensors")).unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}
