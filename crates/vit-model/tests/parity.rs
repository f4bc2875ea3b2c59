//! The Rust model against PyTorch: logits, loss and the gradient of every parameter.
//!
//! Fixtures are made by `tests/parity/make_fixtures.py` (the Keras-style model written out in
//! PyTorch) and `tests/parity/make_timm_fixtures.py` (timm's own VisionTransformer: class token
//! with layer scale, mean pool with sin-cos positions), see their docstrings, and committed.

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

/// Bounds on the differences from PyTorch's float64 reference.
#[derive(Debug, Clone, Copy)]
struct Tolerance {
    /// max |logits - torch logits|
    logits: f32,
    /// |loss - torch loss|
    loss: f32,
    /// max |grad - torch grad| / max |torch grad|, per parameter
    gradient: f32,
    /// max |grad| of `attention.key.bias`, zero analytically
    zero_gradient: f32,
}

impl Tolerance {
    /// f32 on the CPU; GPUs sum in other orders (and TF32 may be on for matmuls): 10x looser.
    fn f32(device: &Device) -> Self {
        let k = if device.is_cpu() { 1.0 } else { 10.0 };
        Self { logits: 1e-4 * k, loss: 1e-5 * k, gradient: 1e-3 * k, zero_gradient: 1e-6 * k }
    }

    /// Mixed precision: about three times the errors measured on the CPU (bf16: logits 2.1e-2,
    /// loss 1.9e-3, gradients 3.3e-2; f16: 2.2e-3, 1.1e-4, 6.0e-3). bf16 keeps 8 bits of
    /// mantissa, f16 11, against f32's 24.
    fn mixed(dtype: DType) -> Self {
        match dtype {
            DType::BF16 => Self { logits: 6e-2, loss: 6e-3, gradient: 1e-1, zero_gradient: 1e-3 },
            DType::F16 => Self { logits: 1e-2, loss: 1e-3, gradient: 2e-2, zero_gradient: 1e-4 },
            other => panic!("no mixed-precision tolerance for {other:?}"),
        }
    }
}

/// Compares the model computing in `dtype` (f32 weights, cast on the way in for bf16/f16) with
/// PyTorch's float64 reference.
fn check(name: &str, device: &Device, dtype: DType, tol: Tolerance) {
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

    let model = model.with_compute_dtype(dtype).unwrap();
    let logits = model.forward(&all["input.images"], false).unwrap();
    let torch_logits = &all["output.logits"];
    let max_abs = (&logits - torch_logits).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(max_abs < tol.logits, "{name}: logits differ from PyTorch by {max_abs}");

    let labels = all["input.labels"].to_dtype(DType::U32).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
    let torch_loss = all["output.loss"].to_vec1::<f32>().unwrap()[0];
    let ours = loss.to_scalar::<f32>().unwrap();
    let loss_error = (ours - torch_loss).abs();
    assert!(loss_error < tol.loss, "{name}: loss {ours} vs PyTorch {torch_loss}");

    let grads = loss.backward().unwrap();
    let vars = store.varmap().data().lock().unwrap();
    let mut worst = (0f32, String::new());
    assert_eq!(vars.len(), torch_grads.len(), "{name}: parameter count");
    for (param, var) in vars.iter() {
        let ours = grads.get(var).unwrap_or_else(|| panic!("{name}: {param} has no gradient"));
        assert_eq!(ours.dtype(), DType::F32, "{name}: the master weight {param} must get an f32 gradient");
        let theirs = &torch_grads[param];
        if param.ends_with("attention.key.bias") {
            // Softmax ignores a shift shared by all keys, so q.(k + b) = q.k + q.b leaves the
            // attention unchanged: this gradient is zero analytically (PyTorch: ~1e-17).
            let max = ours.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(max < tol.zero_gradient, "{name}: {param} should have a zero gradient, got {max}");
            continue;
        }
        let err = relative_error(ours, theirs);
        assert!(err < tol.gradient, "{name}: gradient of {param} differs from PyTorch by {err} (relative)");
        if err > worst.0 {
            worst = (err, param.clone());
        }
    }
    eprintln!(
        "{name} ({dtype:?}): logits max abs error {max_abs:.2e}, loss error {:.2e}; worst gradient relative error {:.2e} ({})",
        loss_error, worst.0, worst.1
    );
}

vit_kernels::device_tests! {
    fn keras_flatten_head_matches_pytorch(device: &Device) {
        check("flatten", device, DType::F32, Tolerance::f32(device));
    }

    fn class_token_head_matches_pytorch(device: &Device) {
        check("class_token", device, DType::F32, Tolerance::f32(device));
    }

    fn timm_class_token_with_layer_scale_matches(device: &Device) {
        check("timm_class_token_layer_scale", device, DType::F32, Tolerance::f32(device));
    }

    fn timm_mean_pool_with_sincos_positions_matches(device: &Device) {
        check("timm_mean_pool_sincos", device, DType::F32, Tolerance::f32(device));
    }

    fn bf16_mixed_precision_matches_pytorch_loosely(device: &Device) {
        check("flatten", device, DType::BF16, Tolerance::mixed(DType::BF16));
        check("class_token", device, DType::BF16, Tolerance::mixed(DType::BF16));
    }

    fn f16_mixed_precision_matches_pytorch_loosely(device: &Device) {
        check("flatten", device, DType::F16, Tolerance::mixed(DType::F16));
        check("class_token", device, DType::F16, Tolerance::mixed(DType::F16));
    }
}
