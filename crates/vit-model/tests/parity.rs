//! The Rust model against PyTorch: logits, loss and the gradient of every parameter.
//!
//! Fixtures are made by `tests/parity/make_fixtures.py` (see its docstring) and committed.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use vit_blocks::{SeededVarMap, SharedRng};
use vit_model::{Vit, VitConfig, checkpoint};

/// max |a - b| / max |b|
fn relative_error(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    diff / scale.max(1e-12)
}

fn check(name: &str, device: &Device, tolerance: f32) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/parity_{name}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let cfg: VitConfig = serde_json::from_str(&header.metadata().as_ref().unwrap()["vit.config"]).unwrap();
    let all = candle_core::safetensors::load_buffer(&bytes, device).unwrap();
    let section = |prefix: &str| -> HashMap<String, Tensor> {
        all.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone()))).collect()
    };
    let params = section("param.");
    let torch_grads = section("grad.");

    let store = SeededVarMap::new(0);
    let model = Vit::new(&cfg, store.var_builder(DType::F32, device), SharedRng::new(0)).unwrap();
    checkpoint::assign(store.varmap(), &params, &path).unwrap();

    let logits = model.forward(&all["input.images"], false).unwrap();
    let torch_logits = &all["output.logits"];
    let max_abs = (&logits - torch_logits).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(max_abs < 1e-4 * tolerance, "{name}: logits differ from PyTorch by {max_abs}");

    let labels = all["input.labels"].to_dtype(DType::U32).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
    let torch_loss = all["output.loss"].to_vec1::<f32>().unwrap()[0];
    let ours = loss.to_scalar::<f32>().unwrap();
    assert!((ours - torch_loss).abs() < 1e-5 * tolerance, "{name}: loss {ours} vs PyTorch {torch_loss}");

    let grads = loss.backward().unwrap();
    let vars = store.varmap().data().lock().unwrap();
    let mut worst = (0f32, String::new());
    assert_eq!(vars.len(), torch_grads.len(), "{name}: parameter count");
    for (param, var) in vars.iter() {
        let ours = grads.get(var).unwrap_or_else(|| panic!("{name}: {param} has no gradient"));
        let theirs = &torch_grads[param];
        if param.ends_with("attention.key.bias") {
            // Softmax ignores a shift shared by all keys, so q.(k + b) = q.k + q.b leaves the
            // attention unchanged: this gradient is zero analytically (PyTorch: ~1e-17).
            let max = ours.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(max < 1e-6 * tolerance, "{name}: {param} should have a zero gradient, got {max}");
            continue;
        }
        let err = relative_error(ours, theirs);
        assert!(err < 1e-3 * tolerance, "{name}: gradient of {param} differs from PyTorch by {err} (relative)");
        if err > worst.0 {
            worst = (err, param.clone());
        }
    }
    eprintln!(
        "{name}: logits max abs error {max_abs:.2e}; worst gradient relative error {:.2e} ({})",
        worst.0, worst.1
    );
}

// GPUs sum in other orders (and TF32 may be on for matmuls): a looser, documented tolerance.
fn tolerance(device: &Device) -> f32 {
    if device.is_cpu() { 1.0 } else { 10.0 }
}

vit_blocks::device_tests! {
    fn keras_flatten_head_matches_pytorch(device: &Device) {
        check("flatten", device, tolerance(device));
    }

    fn class_token_head_matches_pytorch(device: &Device) {
        check("class_token", device, tolerance(device));
    }
}
