//! `vit bench`: throughput measurements of the real model at the two reference configurations, printed in
//! the same `ANCHOR key=value ...` format as the PyTorch and Keras reference scripts, so that
//! `cargo xtask bench --vs-reference` can set them side by side.
//!
//! - config K: the `keras_cifar100` preset (the Keras example), training batch 256;
//! - config M: the `mnist` preset, training batch 128;
//! - configs Ti, S, B: the standard ViT-Ti/16, ViT-S/16 and ViT-B/16 at 224x224 with 1000
//!   classes, as `std_vit.py` measures them: training and inference at batch 32;
//! - modes: `train` (forward + backward + AdamW step), `infer` (batch 256; 32 for Ti, S, B),
//!   `latency` (batch 1), and `matmul` (the machine's fp32 2048x2048 matmul rate through
//!   candle).
//!
//! Run one mode per process so that the peak memory belongs to that mode.

use std::time::Instant;

use anyhow::{Result, anyhow};
use candle_core::{DType, Device, Tensor};
use clap::ValueEnum;
use vit_blocks::SeededVarMap;
use vit_model::{InferencePrecision, Vit, VitConfig};
use vit_train::Precision;
use vit_train::metrics::cross_entropy;
use vit_train::optim::{AdamW, AdamWConfig, params_of};

use crate::args::device_name;

/// A reference configuration, named as in the reference scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchConfig {
    /// The Keras example (`keras_cifar100`), training batch 256.
    #[value(name = "K")]
    K,
    /// The `mnist` preset, training batch 128.
    #[value(name = "M")]
    M,
    /// ViT-Ti/16 at 224, 1000 classes, batch 32.
    #[value(name = "Ti")]
    Ti,
    /// ViT-S/16 at 224, 1000 classes, batch 32.
    #[value(name = "S")]
    S,
    /// ViT-B/16 at 224, 1000 classes, batch 32.
    #[value(name = "B")]
    B,
}

impl BenchConfig {
    /// The name in the `ANCHOR` line (`cfg=`), as the reference scripts write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::K => "K",
            Self::M => "M",
            Self::Ti => "tiny",
            Self::S => "small",
            Self::B => "base",
        }
    }

    /// Whether this is one of the standard ViTs that `std_vit.py` measures.
    pub fn is_standard(self) -> bool {
        matches!(self, Self::Ti | Self::S | Self::B)
    }
}

/// The number format of a measurement: a training precision, or int8 (inference only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchPrecision {
    /// Everything in f32.
    F32,
    /// bfloat16 compute, f32 master weights.
    Bf16,
    /// float16 compute, f32 master weights.
    F16,
    /// int8 dense layers (inference and latency only).
    Int8,
}

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// Forward, backward and AdamW step.
    Train,
    /// Inference at batch 256.
    Infer,
    /// Batch-1 inference latency.
    Latency,
    /// The machine's fp32 2048x2048 matmul rate through candle (`--precision bf16`: through
    /// this project's bf16 kernel, the right operand packed once, as a layer's weight is).
    Matmul,
}

/// One measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// `key=value` pairs in print order.
    pub fields: Vec<(String, String)>,
}

impl BenchResult {
    /// The `ANCHOR ...` line.
    pub fn line(&self) -> String {
        let parts: Vec<String> = self.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("ANCHOR {}", parts.join(" "))
    }
}

/// Peak resident memory of this process in MiB (`VmHWM`), if the platform tells.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 { xs[m] } else { 0.5 * (xs[m - 1] + xs[m]) }
}

/// The model and training batch of a reference configuration.
pub fn config(which: BenchConfig) -> (VitConfig, usize) {
    match which {
        BenchConfig::K => (VitConfig::keras_cifar100(), 256),
        BenchConfig::M => (VitConfig::mnist(), 128),
        BenchConfig::Ti => (VitConfig::vit_tiny_16(), 32),
        BenchConfig::S => (VitConfig::vit_small_16(), 32),
        BenchConfig::B => (VitConfig::vit_base_16(), 32),
    }
}

/// Measures `mode` on config `which` computing in `precision` (`bf16` and `f16` keep `f32`
/// master weights in training, as training does; `int8` is for inference and latency only);
/// `iters` and `warmup` of 0 pick the reference scripts' defaults.
pub fn run(
    which: BenchConfig,
    mode: BenchMode,
    iters: usize,
    warmup: usize,
    precision: BenchPrecision,
    device: &Device,
) -> Result<BenchResult> {
    let (cfg, train_batch) = config(which);
    let big = cfg.image_size[0] >= 64;
    let (batch, auto_iters, auto_warm) = match mode {
        // std_vit.py's counts: train 1 + 3, infer 2 + 5, latency 5 + 30.
        BenchMode::Train if which.is_standard() => (train_batch, 3, 1),
        BenchMode::Infer if which.is_standard() => (32, 5, 2),
        BenchMode::Latency if which.is_standard() => (1, 30, 5),
        BenchMode::Train => (train_batch, if big { 6 } else { 20 }, if big { 2 } else { 5 }),
        BenchMode::Infer => (256, if big { 6 } else { 20 }, if big { 2 } else { 5 }),
        BenchMode::Latency => (1, if big { 50 } else { 200 }, if big { 10 } else { 20 }),
        BenchMode::Matmul if precision == BenchPrecision::Bf16 => return matmul_bf16(iters.max(1), device),
        BenchMode::Matmul => return matmul(iters.max(1), device),
    };
    let name = which.name();
    let train = mode == BenchMode::Train;
    let (train_precision, inference_precision) = match precision {
        BenchPrecision::F32 => (Precision::F32, InferencePrecision::F32),
        BenchPrecision::Bf16 => (Precision::Bf16, InferencePrecision::Bf16),
        BenchPrecision::F16 => (Precision::F16, InferencePrecision::F32),
        BenchPrecision::Int8 => (Precision::F32, InferencePrecision::Int8),
    };
    if train && precision == BenchPrecision::Int8 {
        return Err(anyhow!("--precision int8 measures inference (--mode infer or latency), not training"));
    }
    if !train && precision == BenchPrecision::F16 {
        return Err(anyhow!("--precision f16 measures training; inference runs in f32, bf16 or int8"));
    }
    let mode = match mode {
        BenchMode::Train => "train",
        BenchMode::Infer => "infer",
        _ => "latency",
    };
    let (iters, warmup) = (if iters == 0 { auto_iters } else { iters }, if warmup == 0 { auto_warm } else { warmup });
    let (model, store): (Vit, SeededVarMap) = Vit::init(&cfg, 0, device)?;
    let [h, w] = cfg.image_size;
    let pixels: Vec<f32> =
        (0..batch * h * w * cfg.channels).map(|i| vit_rng::unit_f32(vit_rng::splitmix64(i as u64))).collect();
    let images = Tensor::from_vec(pixels, (batch, h, w, cfg.channels), device)?;
    let labels: Vec<u32> = (0..batch as u32).map(|i| (i * 7919) % cfg.num_classes as u32).collect();
    let labels = Tensor::new(labels.as_slice(), device)?;
    let dtype = train_precision.compute_dtype();
    // Training holds the variables and the optimizer; inference runs outside autograd, as `vit
    // eval` and `vit predict` do, on its own form of the weights only (the trained variables
    // dropped, as `Classifier::in_precision` does), so that peak memory is what serving needs.
    let (mut training, inference) = if train {
        let params = params_of(&model, &store).map_err(|e| anyhow!(e))?;
        let optimizer = AdamW::new(&params, AdamWConfig { weight_decay: 1e-4, ..AdamWConfig::default() })?;
        (Some((model, store, optimizer)), None)
    } else {
        let inference = model.for_inference(inference_precision)?;
        drop((model, store));
        (None, Some(inference))
    };
    let mut step = || -> Result<()> {
        if let Some((model, _store, optimizer)) = training.as_mut() {
            let net = model.for_compute(dtype)?;
            let loss = cross_entropy(&net.forward(&images, true)?, &labels, 0.0)?;
            let grads = loss.backward()?;
            optimizer.step(&grads, 1e-3, 1.0)?;
            loss.to_scalar::<f32>()?;
        } else if let Some(inference) = &inference {
            inference.forward(&images, false)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
        }
        Ok(())
    };
    let first = Instant::now();
    step()?;
    let first_s = first.elapsed().as_secs_f64();
    for _ in 1..warmup {
        step()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        step()?;
        times.push(t.elapsed().as_secs_f64());
    }
    let min = times.iter().copied().fold(f64::MAX, f64::min);
    let med = median(times);
    let img_per_s = batch as f64 / med;
    let flops = cfg.forward_flops() as f64 * if train { 3.0 } else { 1.0 };
    let mut fields = vec![
        (
            "fw",
            if precision == BenchPrecision::F32 {
                "vit-rs".to_string()
            } else {
                format!("vit-rs-{}", precision_name(precision))
            },
        ),
        ("device", device_name(device).to_string()),
        ("cfg", name.to_string()),
        ("mode", mode.to_string()),
        ("batch", batch.to_string()),
        ("threads", rayon::current_num_threads().to_string()),
        ("median_s", format!("{med:.5}")),
        ("min_s", format!("{min:.5}")),
        ("img_per_s", format!("{img_per_s:.4}")),
        ("gflops", format!("{:.4}", img_per_s * flops / 1e9)),
    ];
    if mode == "latency" {
        fields.push(("latency_ms", format!("{:.4}", med * 1e3)));
    }
    fields.push(("first_iter_s", format!("{first_s:.4}")));
    fields.push(("iters", iters.to_string()));
    fields.push(("warmup", warmup.to_string()));
    fields.push(("peak_rss_mb", format!("{:.1}", peak_rss_mb().unwrap_or(f64::NAN))));
    fields.push(("int8_kernel", vit_kernels::Int8Kernel::detect().name().to_string()));
    fields.push(("bf16_kernel", vit_kernels::Bf16Kernel::detect().name().to_string()));
    fields.push(("row_kernels", vit_kernels::isa::row_kernels().to_string()));
    Ok(BenchResult { fields: fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect() })
}

/// The `--precision` value as written on the command line.
pub fn precision_name(precision: BenchPrecision) -> &'static str {
    match precision {
        BenchPrecision::F32 => "f32",
        BenchPrecision::Bf16 => "bf16",
        BenchPrecision::F16 => "f16",
        BenchPrecision::Int8 => "int8",
    }
}

/// The bf16 rate of `vit_kernels::bf16` on a 2048x2048 product (CPU only): the right operand
/// packed once, as inference packs a weight; the left converted as it is packed, every call.
fn matmul_bf16(iters: usize, device: &Device) -> Result<BenchResult> {
    use vit_kernels::bf16::{PackedRight, Strided, gemm_packed};
    use vit_kernels::isa::Bf16Kernel;
    if !device.is_cpu() {
        return Err(anyhow!("--mode matmul --precision bf16 measures the CPU's bf16 kernels: use --device cpu"));
    }
    let n = 2048;
    // Values in [-1, 1) of a fixed pattern: the rate does not depend on them.
    let values = |salt: u64| -> Vec<f32> {
        (0..n * n).map(|i| (vit_rng::splitmix64(i as u64 ^ salt) >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect()
    };
    let (a, b) = (values(1), values(2));
    let right = PackedRight::new(Strided::row_major(&b, n, n))?;
    let kernel = Bf16Kernel::detect();
    let mut out = vec![0f32; n * n];
    for _ in 0..3 {
        gemm_packed(Strided::row_major(&a, n, n), &right, &mut out, false, kernel)?;
    }
    let mut times = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        gemm_packed(Strided::row_major(&a, n, n), &right, &mut out, false, kernel)?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(matmul_result(&[("fw", "vit-rs"), ("bench", "matmul_bf16"), ("kernel", kernel.name())], n, times))
}

fn matmul(iters: usize, device: &Device) -> Result<BenchResult> {
    let n = 2048;
    let a = Tensor::randn(0f32, 1., (n, n), device)?;
    let b = Tensor::randn(0f32, 1., (n, n), device)?;
    for _ in 0..3 {
        a.matmul(&b)?.sum_all()?.to_scalar::<f32>()?;
    }
    let mut times = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        c.device().synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(matmul_result(&[("fw", "vit-rs-candle"), ("bench", "matmul_fp32")], n, times))
}

/// The `ANCHOR` fields of an `n x n` product timed `times` (seconds): `what` first, then the
/// size, the threads, the median time and its rate.
fn matmul_result(what: &[(&str, &str)], n: usize, times: Vec<f64>) -> BenchResult {
    let med = median(times);
    let mut fields: Vec<(String, String)> = what.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    fields.extend([
        ("n".to_string(), n.to_string()),
        ("threads".to_string(), rayon::current_num_threads().to_string()),
        ("median_ms".to_string(), format!("{:.3}", med * 1e3)),
        ("gflops_median".to_string(), format!("{:.2}", 2.0 * (n as f64).powi(3) / med / 1e9)),
    ]);
    BenchResult { fields }
}
