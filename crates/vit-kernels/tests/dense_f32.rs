//! A dense layer whose `f32` weight is stored for inference: the trained layer's
//! forward values within f32 rounding (the product reads the weight in another layout, and
//! `gemm` may then sum in another order), GELU fused likewise, both against the f64 product,
//! and the input's gradient too, on every path of the forward product (a narrow weight stored
//! `[in, out]` through the trained layer's paths; a wide one in panels, one image's rows in
//! chunks by panels or blocks of rows over every panel, a narrow last panel), with one and two
//! threads.

use std::sync::Arc;

use candle_core::{Tensor, Var};
use vit_kernels::F32Weight;

mod common;
use common::randn;

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// `a · b` in f64 for row-major `a: [m, k]`, `b: [k, n]`.
fn product_f64(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = f64::from(a[i * k + p]);
            for j in 0..n {
                out[i * n + j] += x * f64::from(b[p * n + j]);
            }
        }
    }
    out
}

fn check(rows: usize, k: usize, n: usize, with_bias: bool, seed: u64) {
    let x = Var::from_tensor(&randn(&[rows, k], seed)).unwrap();
    let w = randn(&[n, k], seed + 1);
    let b = with_bias.then(|| randn(&[n], seed + 2));
    let stored = Arc::new(F32Weight::from_tensors(&w, b.as_ref()).unwrap());
    assert_eq!((stored.out_dim(), stored.in_dim()), (n, k));
    assert_eq!(format!("{stored:?}").contains("in panels"), k.min(n) >= 384, "{stored:?}");
    assert_eq!(host(&stored.weight_rows(0..n).unwrap()), host(&w), "the stored weight is the weight");
    if n > 2 {
        assert_eq!(host(&stored.weight_rows(1..n - 1).unwrap()), host(&w.narrow(0, 1, n - 2).unwrap()), "rows");
    }
    let shape = format!("{rows}x{k}x{n} bias {with_bias}");

    // Forward, with and without GELU: the trained layer's values within f32 rounding.
    let close = |a: &[f32], b: &[f32], what: &str| {
        assert_eq!(a.len(), b.len());
        for (i, (p, q)) in a.iter().zip(b).enumerate() {
            assert!((p - q).abs() <= 2e-6 * (1.0 + q.abs()) * (k as f32).sqrt(), "{shape} {what} {i}: {p} vs {q}");
        }
    };
    let y = vit_kernels::dense_f32_transposed(&x, &stored, false).unwrap();
    let trained = vit_kernels::dense(&x.as_detached_tensor(), &w, b.as_ref()).unwrap();
    close(&host(&y), &host(&trained), "forward");
    let fused = vit_kernels::dense_f32_transposed(&x, &stored, true).unwrap();
    let trained_gelu = vit_kernels::dense_gelu(&x.as_detached_tensor(), &w, b.as_ref()).unwrap();
    close(&host(&fused), &host(&trained_gelu), "fused GELU");
    // GELU fused into the product: GELU of the plain output, to the bit.
    assert_eq!(host(&fused), host(&vit_kernels::gelu(&y).unwrap()), "{shape}: fused GELU");

    // Against f64: x W^T + b.
    let (xs, ws) = (host(&x), host(&w));
    let wt: Vec<f32> = (0..k * n).map(|i| ws[(i % n) * k + i / n]).collect();
    let bs = b.as_ref().map(host).unwrap_or_else(|| vec![0.0; n]);
    let want = product_f64(&xs, &wt, (rows, k, n));
    for (i, (o, w)) in host(&y).iter().zip(&want).enumerate() {
        let w = w + f64::from(bs[i % n]);
        assert!(
            (f64::from(*o) - w).abs() <= 1e-5 * (1.0 + w.abs()) * (k as f64).sqrt(),
            "{shape} forward {i}: {o} vs {w}"
        );
    }

    // The input's gradient, g W, plain and through GELU (against the trained layer's GELU
    // composed with its product); the weight gets none.
    let upstream = randn(&[rows, n], seed + 3);
    let grads = (y * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
    let want = product_f64(&host(&upstream), &ws, (rows, n, k));
    for (i, (o, w)) in host(grads.get(&x).unwrap()).iter().zip(&want).enumerate() {
        assert!(
            (f64::from(*o) - w).abs() <= 1e-5 * (1.0 + w.abs()) * (n as f64).sqrt(),
            "{shape} grad x {i}: {o} vs {w}"
        );
    }
    let grads = (fused * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
    let through_gelu = (vit_kernels::gelu(&vit_kernels::dense(&x, &w, b.as_ref()).unwrap()).unwrap() * &upstream)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (i, (o, w)) in host(grads.get(&x).unwrap()).iter().zip(host(through_gelu.get(&x).unwrap())).enumerate() {
        assert!((o - w).abs() <= 1e-4 * (1.0 + w.abs()), "{shape} grad x through GELU {i}: {o} vs {w}");
    }
}

#[test]
fn a_dense_layer_on_a_weight_stored_for_inference_computes_what_the_trained_one_does() {
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            // Narrow weights, stored [in, out]: the trained layer's paths.
            check(1, 77, 130, true, 10); // few rows
            check(3, 64, 129, false, 20); // few rows, no bias
            check(45, 77, 130, true, 30); // blocks of rows, a small weight
            check(197, 128, 600, true, 40); // one image split over output columns
            check(300, 96, 700, false, 60); // one parallel product
            // Wide weights, in panels.
            check(197, 384, 450, true, 70); // one image: chunks of rows by panels, a narrow last panel
            check(48, 400, 384, false, 75); // one chunk of rows
            check(401, 390, 385, true, 80); // blocks of rows over every panel, the last block short
        });
    }
}

#[test]
fn sizes_that_do_not_fit_are_refused() {
    let (k, n) = (40, 30);
    let w = randn(&[n, k], 70);
    let stored = Arc::new(F32Weight::from_tensors(&w, None).unwrap());
    assert!(vit_kernels::dense_f32_transposed(&randn(&[3, k + 1], 71), &stored, false).is_err());
    assert!(vit_kernels::dense_f32_transposed(&randn(&[2, 3, k], 72), &stored, false).is_err());
    assert!(F32Weight::from_tensors(&w, Some(&randn(&[n + 1], 73))).is_err());
}
