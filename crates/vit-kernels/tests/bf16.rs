//! The bf16 matrix products: the rounding to bf16 against the `half` crate, every kernel the
//! CPU runs against the f64 product of the rounded operands, and a dense layer under
//! `with_bf16_matmuls` (forward and both gradients) likewise.

use candle_core::{Tensor, Var};
use vit_kernels::bf16::{Strided, from_bf16, gemm, to_bf16};
use vit_kernels::{Bf16Kernel, with_bf16_matmuls};

mod common;
use common::randn;

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn round(v: f32) -> f64 {
    f64::from(from_bf16(to_bf16(v)))
}

/// `a (m x k) · b (k x n)` in f64 over the bf16-rounded values, with the bound on f32
/// summation error for each entry: `k * 2^-23 * sum |a b|` plus a tiny absolute slack.
fn reference(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let (mut sum, mut abs) = (0f64, 0f64);
            for p in 0..k {
                let t = round(a[i * k + p]) * round(b[p * n + j]);
                sum += t;
                abs += t.abs();
            }
            out.push((sum, (k as f64) * 2f64.powi(-23) * abs + 1e-30));
        }
    }
    out
}

#[test]
fn rounding_to_bf16_matches_the_half_crate() {
    let mut values: Vec<f32> = host(&randn(&[4096], 11)).into_iter().map(|v| v * 1e3).collect();
    values.extend([0.0, -0.0, 1.0, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN_POSITIVE, 1e-40]);
    // Ties: exactly half-way between two bf16 values, both parities.
    values.extend([f32::from_bits(0x3F80_8000), f32::from_bits(0x3F81_8000), f32::from_bits(0xBF80_8000)]);
    for v in values {
        assert_eq!(to_bf16(v), half::bf16::from_f32(v).to_bits(), "{v:e}");
        assert_eq!(from_bf16(to_bf16(v)), half::bf16::from_f32(v).to_f32());
    }
    assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
}

#[test]
fn every_kernel_sums_the_rounded_products_within_f32_rounding() {
    let kernels = Bf16Kernel::available();
    eprintln!("bf16 kernels on this CPU: {kernels:?}");
    // Batch 1, sizes not a multiple of 32 or 64, a long shared dimension.
    for (i, &(m, k, n)) in
        [(1, 1, 1), (1, 192, 576), (5, 7, 3), (33, 31, 65), (70, 130, 129), (40, 1030, 20)].iter().enumerate()
    {
        let a = host(&randn(&[m, k], 700 + i as u64));
        let b = host(&randn(&[k, n], 800 + i as u64));
        let want = reference(&a, &b, (m, k, n));
        for &kernel in &kernels {
            let mut out = vec![f32::NAN; m * n];
            gemm(Strided::row_major(&a, m, k), Strided::row_major(&b, k, n), &mut out, false, kernel).unwrap();
            for (o, (w, bound)) in out.iter().zip(&want) {
                assert!((f64::from(*o) - w).abs() <= *bound, "{kernel:?} {m}x{k}x{n}: {o} vs {w} (bound {bound})");
            }
            // Accumulating adds to what is there; transposed operands read through strides.
            let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
            let mut acc = vec![1.0f32; m * n];
            gemm(Strided::row_major(&a, m, k), Strided::row_major(&bt, n, k).t(), &mut acc, true, kernel).unwrap();
            for (o, (w, bound)) in acc.iter().zip(&want) {
                assert!((f64::from(*o) - (w + 1.0)).abs() <= bound + 1e-6 * (w + 1.0).abs(), "{kernel:?} accumulate");
            }
        }
    }
}

#[test]
fn shapes_that_do_not_chain_are_refused() {
    let a = [0f32; 6];
    let mut out = [0f32; 4];
    let err = gemm(Strided::row_major(&a, 2, 3), Strided::row_major(&a, 2, 3), &mut out, false, Bf16Kernel::Portable);
    assert!(err.unwrap_err().to_string().contains("2x3 by 2x3"));
    let short = Strided { data: &a, rows: 3, cols: 3, row_stride: 3, col_stride: 1 };
    assert!(gemm(short, short, &mut [0f32; 9], false, Bf16Kernel::Portable).is_err());
}

#[test]
fn a_dense_layer_under_bf16_matmuls_computes_forward_and_gradients_from_rounded_operands() {
    let (rows, k, n) = (37, 50, 70);
    let x = Var::from_tensor(&randn(&[rows, k], 901)).unwrap();
    let w = Var::from_tensor(&randn(&[n, k], 902)).unwrap();
    let b = Var::from_tensor(&randn(&[n], 903)).unwrap();
    let upstream = randn(&[rows, n], 904);
    let y = with_bf16_matmuls(true, || vit_kernels::dense(&x, &w, Some(&b))).unwrap();
    // The setting is restored: a layer built now runs in f32.
    let f32_y = vit_kernels::dense(&x, &w, Some(&b)).unwrap();
    assert_ne!(host(&y), host(&f32_y), "the bf16 layer gave the f32 layer's values");
    let grads = (y.clone() * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
    let (xs, ws, bs, us) = (host(&x), host(&w), host(&b), host(&upstream));
    let wt: Vec<f32> = (0..k * n).map(|i| ws[(i % n) * k + i / n]).collect();
    let forward = reference(&xs, &wt, (rows, k, n));
    for (i, (o, (want, bound))) in host(&y).iter().zip(&forward).enumerate() {
        let want = want + f64::from(bs[i % n]);
        assert!((f64::from(*o) - want).abs() <= bound + 1e-6 * want.abs(), "forward {i}: {o} vs {want}");
    }
    // grad x = g W, grad W = g^T x, both from rounded operands; grad b = column sums of g.
    let grad_x = reference(&us, &ws, (rows, n, k));
    for (o, (want, bound)) in host(grads.get(&x).unwrap()).iter().zip(&grad_x) {
        assert!((f64::from(*o) - want).abs() <= *bound, "grad x: {o} vs {want}");
    }
    let ut: Vec<f32> = (0..n * rows).map(|i| us[(i % rows) * n + i / rows]).collect();
    let grad_w = reference(&ut, &xs, (n, rows, k));
    for (o, (want, bound)) in host(grads.get(&w).unwrap()).iter().zip(&grad_w) {
        assert!((f64::from(*o) - want).abs() <= *bound, "grad w: {o} vs {want}");
    }
    let grad_b = host(grads.get(&b).unwrap());
    for (j, g) in grad_b.iter().enumerate() {
        let want: f64 = (0..rows).map(|r| f64::from(us[r * n + j])).sum();
        assert!((f64::from(*g) - want).abs() <= 1e-4 * want.abs().max(1.0));
    }
}

/// `‖a - b‖ / ‖b‖`.
fn relative_error(a: &[f32], b: &[f64]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm).sqrt()
}

/// Attention of one image in f64, `softmax(scale · r(Q) r(K)^T) r(V)` per head, with `r` the
/// rounding to bf16 where `rounded` (as the bf16 products round their operands, the weights
/// included), else the identity.
fn attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (n, heads, d): (usize, usize, usize),
    rounded: bool,
) -> Vec<f64> {
    let r = |x: f32| if rounded { round(x) } else { f64::from(x) };
    let scale = 1.0 / (d as f64).sqrt();
    let width = heads * d;
    let mut out = vec![0f64; n * width];
    for h in 0..heads {
        for i in 0..n {
            let scores: Vec<f64> = (0..n)
                .map(|j| scale * (0..d).map(|c| r(q[i * width + h * d + c]) * r(k[j * width + h * d + c])).sum::<f64>())
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = exps.iter().sum();
            for c in 0..d {
                out[i * width + h * d + c] =
                    (0..n).map(|j| r((exps[j] / total) as f32) * r(v[j * width + h * d + c])).sum::<f64>();
            }
        }
    }
    out
}

#[test]
fn attention_under_bf16_matmuls_rounds_its_products_operands_and_nothing_else() {
    let (n, heads, d) = (29, 3, 20);
    let dims = vit_kernels::AttentionDims { batch: 1, tokens: n, heads, key_dim: d, value_dim: d };
    let (q, k, v) = (
        Var::from_tensor(&randn(&[n, heads * d], 31)).unwrap(),
        Var::from_tensor(&randn(&[n, heads * d], 32)).unwrap(),
        Var::from_tensor(&randn(&[n, heads * d], 33)).unwrap(),
    );
    let y16 = with_bf16_matmuls(true, || vit_kernels::attention(&q, &k, &v, &dims, None, true)).unwrap();
    let y32 = vit_kernels::attention(&q, &k, &v, &dims, None, true).unwrap();
    let (qs, ks, vs) = (host(&q), host(&k), host(&v));
    let rounded = attention_reference(&qs, &ks, &vs, (n, heads, d), true);
    let exact = attention_reference(&qs, &ks, &vs, (n, heads, d), false);
    // Against the same roundings in f64: only f32 sums and an occasional weight rounded the other
    // way (its f32 value a hair from the f64 one) apart.
    let e = relative_error(&host(&y16), &rounded);
    assert!(e < 1e-5, "bf16 attention against the rounded f64 reference: {e:e}");
    // Against exact attention: bf16's error, which f32 attention does not have.
    let (e16, e32) = (relative_error(&host(&y16), &exact), relative_error(&host(&y32), &exact));
    assert!(e16 > 10.0 * e32 && e16 < 1e-2, "bf16 {e16:e}, f32 {e32:e} against exact attention");
    // The backward pass runs its four products in bf16 too: gradients near f32's, not equal.
    let upstream = randn(&[n, heads * d], 34);
    let g16 = (y16 * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
    let g32 = (y32 * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
    for (name, var) in [("q", &q), ("k", &k), ("v", &v)] {
        let (a, b) = (host(g16.get(var).unwrap()), host(g32.get(var).unwrap()));
        let b64: Vec<f64> = b.iter().map(|&x| f64::from(x)).collect();
        let e = relative_error(&a, &b64);
        assert!(e > 1e-5 && e < 2e-2, "grad {name}: bf16 against f32 {e:e}");
    }
}

#[test]
fn a_dense_layer_with_a_packed_bf16_weight_computes_what_the_unpacked_one_does() {
    let (rows, k, n) = (45, 77, 130);
    let x = Var::from_tensor(&randn(&[rows, k], 951)).unwrap();
    let w = randn(&[n, k], 952);
    let b = randn(&[n], 953);
    let packed = std::sync::Arc::new(vit_kernels::Bf16Weight::from_tensors(&w, Some(&b)).unwrap());
    assert_eq!((packed.out_dim(), packed.in_dim()), (n, k));
    let (xs, ws, bs) = (host(&x), host(&w), host(&b));
    let wt: Vec<f32> = (0..k * n).map(|i| ws[(i % n) * k + i / n]).collect();
    let forward = reference(&xs, &wt, (rows, k, n));
    let upstream = randn(&[rows, n], 954);
    let us = host(&upstream);
    let grad_x = reference(&us, &ws, (rows, n, k));
    for kernel in Bf16Kernel::available() {
        let y = vit_kernels::dense_bf16_with(&x, &packed, false, kernel).unwrap();
        for (i, (o, (want, bound))) in host(&y).iter().zip(&forward).enumerate() {
            let want = want + f64::from(bs[i % n]);
            assert!((f64::from(*o) - want).abs() <= bound + 1e-6 * want.abs(), "{kernel:?} forward {i}: {o} vs {want}");
        }
        // GELU fused into the product's blocks: GELU of the plain output.
        let fused = host(&vit_kernels::dense_bf16_with(&x, &packed, true, kernel).unwrap());
        let separate = host(&vit_kernels::gelu(&y).unwrap());
        assert_eq!(fused, separate, "{kernel:?}: fused GELU");
        // The input's gradient (relevance maps): g W from rounded operands; the weight gets none.
        let grads = (y * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        for (o, (want, bound)) in host(grads.get(&x).unwrap()).iter().zip(&grad_x) {
            assert!((f64::from(*o) - want).abs() <= *bound, "{kernel:?} grad x: {o} vs {want}");
        }
    }
    // Sizes that do not fit are refused where they enter.
    assert!(vit_kernels::dense_bf16(&randn(&[3, k + 1], 955), &packed, false).is_err());
    assert!(vit_kernels::Bf16Weight::from_tensors(&w, Some(&randn(&[n + 1], 956))).is_err());
}

/// Runs of values rounded to bf16 (AVX512-BF16's conversion instruction where the CPU has it)
/// are `to_bf16` of each: ties to even, infinities, signed zeros, NaN kept NaN, a tail that is
/// not a whole vector; only values below f32's normal range differ, flushed to zero there.
#[test]
fn runs_round_to_bf16_as_each_value_does() {
    let mut values: Vec<f32> = host(&randn(&[1000], 77)).iter().map(|v| v * 1e3).collect();
    let ties = [1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -(1.0 + 1.0 / 256.0), 65504.0, 3.0e38];
    values.extend(ties);
    values.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN_POSITIVE]);
    // Below the normal range, first (inside a whole vector of 16) and last (in the tail).
    let tiny = f32::MIN_POSITIVE / 4.0;
    values.insert(0, tiny);
    values.push(tiny);
    let mut out = vec![0u16; values.len()];
    vit_kernels::bf16::to_bf16_run(&mut out, &values);
    let fast = vit_kernels::isa::bf16_conversions();
    for (i, (&v, &o)) in values.iter().zip(&out).enumerate() {
        if v.is_nan() {
            assert!(from_bf16(o).is_nan(), "NaN at {i} became {o:#06x}");
        } else if v == tiny && fast && i < values.len() - values.len() % 16 {
            assert_eq!(from_bf16(o), 0.0, "{v} at {i}: flushed by the instruction");
        } else {
            assert_eq!(o, to_bf16(v), "{v} at {i}");
        }
    }
    // Ties round to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7.
    assert_eq!(from_bf16(out[1001]), 1.0);
    assert_eq!(from_bf16(out[1002]), 1.0 + 4.0 / 256.0);
}
