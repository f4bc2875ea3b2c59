//! The int8 dense kernels: every kernel the CPU runs gives the same outputs to the bit, and
//! those outputs are within the quantization's own error bound of the `f64` product.

use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use vit_kernels::int8::{Int8Weight, MAX_IN, PANEL, TILE_ROWS};
use vit_kernels::{Int8Kernel, dense_int8_with};

mod common;
use common::randn;

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Shapes `(rows, in, out)`: batch 1, rows not a multiple of the tile, widths not a multiple
/// of 4 or of the panel, and the standard ViTs' widths.
const SHAPES: [(usize, usize, usize); 9] = [
    (1, 1, 1),
    (1, 192, 576),
    (5, 7, 3),
    (TILE_ROWS + 1, 13, PANEL + 1),
    (13, 64, 2 * PANEL - 1),
    (50, 130, 70),
    (197, 384, 384),
    (97, 768, 3),
    (3, 1030, 257),
];

#[test]
fn every_kernel_gives_the_same_outputs_to_the_bit() {
    let kernels = Int8Kernel::available();
    eprintln!("int8 kernels on this CPU: {kernels:?}");
    for (i, &(rows, k, n)) in SHAPES.iter().enumerate() {
        let seed = 100 + 3 * i as u64;
        let x = randn(&[rows, k], seed);
        let w = randn(&[n, k], seed + 1);
        let b = randn(&[n], seed + 2);
        let q = Arc::new(Int8Weight::from_tensors(&w, Some(&b)).unwrap());
        for gelu in [false, true] {
            let outputs: Vec<Vec<f32>> =
                kernels.iter().map(|&kernel| host(&dense_int8_with(&x, &q, gelu, kernel).unwrap())).collect();
            for (kernel, out) in kernels.iter().zip(&outputs) {
                assert_eq!(out.len(), rows * n);
                let same = out.iter().zip(&outputs[0]).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{kernel:?} differs from the portable kernel at {rows}x{k}x{n}, gelu {gelu}");
            }
        }
    }
}

#[test]
fn outputs_lie_within_the_quantization_error_of_the_exact_product() {
    for kernel in Int8Kernel::available() {
        for (i, &(rows, k, n)) in SHAPES.iter().enumerate() {
            let seed = 200 + 3 * i as u64;
            // Shifted inputs, as after a GELU: the per-row zero point matters.
            let x = (randn(&[rows, k], seed) + 0.7).unwrap();
            let w = randn(&[n, k], seed + 1);
            let b = randn(&[n], seed + 2);
            let q = Arc::new(Int8Weight::from_tensors(&w, Some(&b)).unwrap());
            let out = host(&dense_int8_with(&x, &q, false, kernel).unwrap());
            let (xs, ws, bs) = (host(&x), host(&w), host(&b));
            let mut worst = 0f64;
            for r in 0..rows {
                let row = &xs[r * k..(r + 1) * k];
                let (lo, hi) = row.iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
                let step_x = f64::from((hi - lo) / 255.0);
                for c in 0..n {
                    let wrow = &ws[c * k..(c + 1) * k];
                    let step_w = f64::from(wrow.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0);
                    let exact: f64 = row.iter().zip(wrow).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>()
                        + f64::from(bs[c]);
                    // |x w - x^ w^| <= |x| step_w / 2 + |w| step_x / 2 + step_x step_w / 4 per
                    // term, plus f32 rounding of the dequantization.
                    let bound: f64 = row
                        .iter()
                        .zip(wrow)
                        .map(|(&a, &b)| {
                            f64::from(a).abs() * step_w / 2. + f64::from(b).abs() * step_x / 2. + step_x * step_w / 4.
                        })
                        .sum::<f64>()
                        + 1e-5 * exact.abs().max(1.0);
                    let err = (f64::from(out[r * n + c]) - exact).abs();
                    assert!(err <= bound, "{kernel:?} {rows}x{k}x{n} [{r},{c}]: error {err} over bound {bound}");
                    worst = worst.max(err / bound);
                }
            }
            assert!(worst > 0.0, "the bound is never approached: the test checks nothing");
        }
    }
}

#[test]
fn gelu_is_applied_after_the_bias() {
    let (x, w, b) = (randn(&[9, 20], 301), randn(&[70, 20], 302), randn(&[70], 303));
    let q = Arc::new(Int8Weight::from_tensors(&w, Some(&b)).unwrap());
    for kernel in Int8Kernel::available() {
        let plain = dense_int8_with(&x, &q, false, kernel).unwrap();
        let fused = host(&dense_int8_with(&x, &q, true, kernel).unwrap());
        let separate = host(&vit_kernels::gelu(&plain).unwrap());
        for (a, b) in fused.iter().zip(&separate) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{kernel:?}: {a} vs {b}");
        }
    }
}

#[test]
fn the_packed_weights_dequantize_to_within_half_a_step() {
    let (n, k) = (70, 13);
    let w = host(&randn(&[n, k], 401));
    let q = Int8Weight::quantize(&w, n, k, None).unwrap();
    let back = q.dequantized();
    for c in 0..n {
        let step = w[c * k..(c + 1) * k].iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        for j in 0..k {
            assert!((back[c * k + j] - w[c * k + j]).abs() <= step / 2. + 1e-7);
        }
    }
}

#[test]
fn a_row_that_is_not_finite_gives_nan_not_a_number_that_looks_right() {
    let mut x = host(&randn(&[3, 8], 501));
    x[8 + 2] = f32::NAN;
    let q = Int8Weight::quantize(&host(&randn(&[4, 8], 502)), 4, 8, None).unwrap();
    for kernel in Int8Kernel::available() {
        let out = q.forward_rows(&x, 3, false, kernel).unwrap();
        assert!(out[4..8].iter().all(|v| v.is_nan()), "{kernel:?}: {:?}", &out[4..8]);
        assert!(out[..4].iter().chain(&out[8..]).all(|v| v.is_finite()));
    }
}

#[test]
fn weights_that_cannot_be_quantized_are_refused() {
    let err = |r: candle_core::Result<Int8Weight>| r.unwrap_err().to_string();
    assert!(err(Int8Weight::quantize(&[1.0; 5], 2, 3, None)).contains("5 values"));
    assert!(err(Int8Weight::quantize(&[1.0, f32::NAN], 1, 2, None)).contains("not finite"));
    assert!(err(Int8Weight::quantize(&[1.0; 4], 2, 2, Some(&[0.0; 3]))).contains("bias"));
    assert!(err(Int8Weight::quantize(&vec![0.0; MAX_IN + 1], 1, MAX_IN + 1, None)).contains("overflow"));
    let q = Arc::new(Int8Weight::quantize(&[1.0; 6], 2, 3, None).unwrap());
    let x = Tensor::zeros((2, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(dense_int8_with(&x, &q, false, Int8Kernel::Portable).unwrap_err().to_string().contains("width 4"));
}

#[test]
fn the_input_gradient_runs_through_the_dequantized_weights() {
    let (x, w, b, upstream) = (randn(&[7, 20], 601), randn(&[70, 20], 602), randn(&[70], 603), randn(&[7, 70], 604));
    let q = Arc::new(Int8Weight::from_tensors(&w, Some(&b)).unwrap());
    let dequantized = Tensor::from_vec(q.dequantized(), (70, 20), &Device::Cpu).unwrap();
    for kernel in Int8Kernel::available() {
        for gelu in [false, true] {
            let x = Var::from_tensor(&x).unwrap();
            let y = dense_int8_with(&x, &q, gelu, kernel).unwrap();
            let grads = (y * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            let got = host(grads.get(&x).unwrap());
            // Independently: GELU's gradient (candle's composed GELU) at the int8 product,
            // then through the dequantized weights.
            let pre = Var::from_tensor(&dense_int8_with(x.as_tensor(), &q, false, kernel).unwrap()).unwrap();
            let upstream_pre = if gelu {
                let g = (vit_kernels::composed::gelu(&pre).unwrap() * &upstream).unwrap().sum_all().unwrap();
                g.backward().unwrap().get(&pre).unwrap().clone()
            } else {
                upstream.clone()
            };
            let want = host(&upstream_pre.matmul(&dequantized).unwrap());
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let tolerance = 1e-5;
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= tolerance * scale, "{kernel:?} gelu {gelu}: {a} vs {b}");
            }
        }
    }
}
