//! Seeded test inputs shared by the kernel tests (candle's CPU `randn` is not seeded).

use candle_core::{Device, Tensor};
use vit_rng::{named_stream, normal_at};

/// The values `vit_blocks::SeededVarMap::new(seed)` gives a parameter named `x` with
/// `Init::Randn { mean: 0, stdev: 2 }`, drawn here without the modules crate above this one.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    let stream = named_stream(seed, b"x");
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n as u64).map(|i| normal_at(stream, i, 0.0, 2.0)).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}
