//! Attention on one projection's output (query, key and value side by side) equals attention on
//! the three matrices: the fused kernel on the CPU, the composed ops elsewhere, in forward and
//! backward.

use candle_core::{DType, Tensor, Var};
use vit_kernels::{AttentionDims, DropoutMask, composed, with_bf16_matmuls};
use vit_rng::SharedRng;

mod common;
use common::randn;

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_dtype(DType::F64).unwrap(), b.to_dtype(DType::F64).unwrap());
    let diff = (&a - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap().max(1e-6);
    diff / scale
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

/// `(batch, tokens, heads, key_dim, value_dim)`: value_dim unlike key_dim, token counts that are
/// no multiple of a vector, one image.
const SHAPES: [(usize, usize, usize, usize, usize); 4] =
    [(2, 7, 3, 8, 6), (1, 13, 2, 5, 5), (3, 9, 4, 16, 12), (1, 1, 1, 3, 2)];

#[test]
fn fused_qkv_equals_the_three_matrices_forward_and_backward() {
    for (case, &(batch, tokens, heads, key_dim, value_dim)) in SHAPES.iter().enumerate() {
        let dims = AttentionDims { batch, tokens, heads, key_dim, value_dim };
        let rows = batch * tokens;
        let seed = 10 * case as u64;
        let q = Var::from_tensor(&randn(&[rows, heads * key_dim], seed)).unwrap();
        let k = Var::from_tensor(&randn(&[rows, heads * key_dim], seed + 1)).unwrap();
        let v = Var::from_tensor(&randn(&[rows, heads * value_dim], seed + 2)).unwrap();
        let upstream = randn(&[rows, heads * value_dim], seed + 3);
        for (p, train) in [(0.0, false), (0.25, false), (0.0, true), (0.25, true)] {
            let mask =
                (p > 0.0).then(|| DropoutMask::draw(&SharedRng::new(seed + 4), p, batch * heads * tokens * tokens));
            let qkv = Tensor::cat(&[q.as_tensor(), k.as_tensor(), v.as_tensor()], 1).unwrap();
            let fused = vit_kernels::attention_qkv(&qkv, &dims, mask.as_ref(), train).unwrap();
            let separate = vit_kernels::attention(&q, &k, &v, &dims, mask.as_ref(), train).unwrap();
            let (reference, _) = composed::attention(&q, &k, &v, &dims, mask.as_ref()).unwrap();
            let at = format!("{dims:?}, p {p}, train {train}");
            // The same kernel on the same values read through other strides.
            assert_eq!(bits(&fused), bits(&separate), "{at}: forward");
            assert!(max_rel_diff(&fused, &reference) < 1e-5, "{at}: forward against composed");
            let g_fused = (&fused * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            let g_ref = (&reference * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            let g_sep = (&separate * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, var) in [("q", &q), ("k", &k), ("v", &v)] {
                let (a, s, r) = (g_fused.get(var).unwrap(), g_sep.get(var).unwrap(), g_ref.get(var).unwrap());
                assert_eq!(bits(a), bits(s), "{at}: d{name} against the three matrices");
                if name == "k" {
                    // Shift-invariant softmax: the key's gradient sums to nearly nothing per
                    // query, so compare it against the largest gradient of the three.
                    let scale = g_ref.get(&q).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                    let diff = (a - r).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                    assert!(diff <= 1e-4 * scale.max(1.0), "{at}: dk differs by {diff}");
                } else {
                    assert!(max_rel_diff(a, r) < 1e-4, "{at}: d{name} against composed: {}", max_rel_diff(a, r));
                }
            }
        }
    }
}

#[test]
fn fused_qkv_with_bf16_products_equals_the_three_matrices() {
    let dims = AttentionDims { batch: 2, tokens: 11, heads: 3, key_dim: 8, value_dim: 8 };
    let (q, k, v) = (randn(&[22, 24], 40), randn(&[22, 24], 41), randn(&[22, 24], 42));
    let qkv = Tensor::cat(&[&q, &k, &v], 1).unwrap();
    let fused = with_bf16_matmuls(true, || vit_kernels::attention_qkv(&qkv, &dims, None, false)).unwrap();
    let separate = with_bf16_matmuls(true, || vit_kernels::attention(&q, &k, &v, &dims, None, false)).unwrap();
    assert_eq!(bits(&fused), bits(&separate));
}

#[test]
fn other_dtypes_cut_the_blocks_out_for_the_composed_path() {
    let dims = AttentionDims { batch: 2, tokens: 5, heads: 2, key_dim: 4, value_dim: 3 };
    let f64 = |t: Tensor| t.to_dtype(DType::F64).unwrap();
    let (q, k, v) = (f64(randn(&[2, 5, 8], 50)), f64(randn(&[2, 5, 8], 51)), f64(randn(&[2, 5, 6], 52)));
    let qkv = Tensor::cat(&[&q, &k, &v], 2).unwrap();
    let fused = vit_kernels::attention_qkv(&qkv, &dims, None, false).unwrap();
    let (reference, _) = composed::attention(&q, &k, &v, &dims, None).unwrap();
    assert_eq!(fused.dims(), [2, 5, 6]);
    assert!(max_rel_diff(&fused, &reference) < 1e-12);
}

#[test]
fn a_projection_of_the_wrong_width_is_an_error_naming_the_expected_one() {
    let dims = AttentionDims { batch: 1, tokens: 4, heads: 2, key_dim: 4, value_dim: 4 };
    let err = vit_kernels::attention_qkv(&randn(&[4, 23], 60), &dims, None, false).unwrap_err().to_string();
    assert!(err.contains("24 columns") && err.contains("[4, 23]"), "{err}");
    let err = vit_kernels::attention_qkv(&randn(&[5, 24], 61), &dims, None, false).unwrap_err().to_string();
    assert!(err.contains("1 images of 4 tokens"), "{err}");
}

#[test]
fn heads_that_the_threads_do_not_divide_are_cut_by_queries_with_the_same_values() {
    // One image of ViT-Ti's attention: 3 heads of 64 over 197 tokens. On 2 threads each head's
    // queries run as two tasks; on 1 thread as one. Dropout and the kept weights included.
    let dims = AttentionDims { batch: 1, tokens: 197, heads: 3, key_dim: 64, value_dim: 64 };
    let (q, k, v) = (randn(&[197, 192], 70), randn(&[197, 192], 71), randn(&[197, 192], 72));
    let upstream = randn(&[197, 192], 73);
    for (p, train) in [(0.0, false), (0.1, true)] {
        let mask = (p > 0.0).then(|| DropoutMask::draw(&SharedRng::new(74), p, 3 * 197 * 197));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let (q, k, v) =
                    (Var::from_tensor(&q).unwrap(), Var::from_tensor(&k).unwrap(), Var::from_tensor(&v).unwrap());
                let y = vit_kernels::attention(&q, &k, &v, &dims, mask.as_ref(), train).unwrap();
                let grads = (&y * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
                let dq = grads.get(&q).unwrap().clone();
                (y, dq)
            })
        };
        let ((one, dq_one), (two, dq_two)) = (run(1), run(2));
        assert_eq!(bits(&one), bits(&two), "p {p}: forward");
        assert_eq!(bits(&dq_one), bits(&dq_two), "p {p}: the backward pass reads the kept weights");
        let (reference, _) = composed::attention(&q, &k, &v, &dims, mask.as_ref()).unwrap();
        assert!(max_rel_diff(&two, &reference) < 1e-5, "p {p}: against composed");
    }
}
