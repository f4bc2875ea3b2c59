//! Seeded test inputs shared by the kernel tests (candle's CPU `randn` is not seeded).

use candle_core::{Device, Tensor};
use vit_kernels::rng::{fnv1a64, splitmix64, unit_f32};

/// The values `vit_blocks::SeededVarMap::new(seed)` gives a parameter named `x` with
/// `Init::Randn { mean: 0, stdev: 2 }`, drawn here without the modules crate above this one.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    let stream = splitmix64(seed ^ fnv1a64(b"x"));
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|i| {
            let a = splitmix64(stream ^ splitmix64(2 * i as u64));
            let b = splitmix64(stream ^ splitmix64(2 * i as u64 + 1));
            let u1 = unit_f32(a).max(f32::MIN_POSITIVE);
            let u2 = unit_f32(b);
            2.0 * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}
