//! The row kernels' AVX-512 build against their AVX2 build (or baseline), bit for bit, forward
//! and backward, through the public ops that run them. A binary of its own: switching the
//! build is process-wide.

use std::sync::Arc;

use candle_core::{Tensor, Var};
use vit_kernels::{AttentionDims, Bf16Kernel, Bf16Weight, isa};

mod common;
use common::randn;

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

/// Every output and gradient of a small pass through softmax, LayerNorm, GELU, the fused
/// attention, the f32 and bf16 dense layers, as bits.
fn run_everything() -> Vec<(&'static str, Vec<u32>)> {
    // Odd widths, so that every kernel has a vector body and a scalar tail.
    let (rows, width, hidden) = (2 * 37, 3 * 23, 101);
    let x = Var::from_tensor(&randn(&[rows, width], 1)).unwrap();
    let gamma = Var::from_tensor(&randn(&[width], 2)).unwrap();
    let beta = Var::from_tensor(&randn(&[width], 3)).unwrap();
    let w1 = Var::from_tensor(&(randn(&[hidden, width], 4) * 0.1).unwrap()).unwrap();
    let b1 = Var::from_tensor(&randn(&[hidden], 5)).unwrap();
    let w2 = Var::from_tensor(&(randn(&[3 * width, hidden], 6) * 0.1).unwrap()).unwrap();
    let dims = AttentionDims { batch: 2, tokens: 37, heads: 3, key_dim: 23, value_dim: 23 };
    let normed = vit_kernels::layer_norm(&x, &gamma, &beta, 1e-6).unwrap();
    let h = vit_kernels::gelu(&vit_kernels::dense(&normed, &w1, Some(&b1)).unwrap()).unwrap();
    let qkv = vit_kernels::dense(&h, &w2, None).unwrap();
    let (q, k, v) = (
        qkv.narrow(1, 0, width).unwrap(),
        qkv.narrow(1, width, width).unwrap(),
        qkv.narrow(1, 2 * width, width).unwrap(),
    );
    let attended = vit_kernels::attention(&q, &k, &v, &dims, None, true).unwrap();
    let probabilities = vit_kernels::softmax_last_dim(&attended).unwrap();
    let upstream = randn(&[rows, width], 7);
    let grads = (probabilities.clone() * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![("forward", bits(&probabilities))];
    for (name, var) in [("x", &x), ("gamma", &gamma), ("beta", &beta), ("w1", &w1), ("b1", &b1), ("w2", &w2)] {
        out.push((name, bits(grads.get(var).unwrap())));
    }
    // The inference layers: bf16 dense with its conversions and fused epilogue, f32 dense+GELU.
    let packed = Arc::new(Bf16Weight::from_tensors(&w1, Some(&b1)).unwrap());
    for kernel in Bf16Kernel::available() {
        let y = vit_kernels::dense_bf16_with(&normed.detach(), &packed, true, kernel).unwrap();
        out.push(("dense_bf16_gelu", bits(&y)));
    }
    out.push(("dense_gelu", bits(&vit_kernels::dense_gelu(&normed.detach(), &w1, Some(&b1)).unwrap())));
    out
}

#[test]
fn the_avx512_build_of_the_row_kernels_gives_the_avx2_builds_bits() {
    isa::allow_avx512_rows(true);
    let wide_build = isa::row_kernels();
    let wide = run_everything();
    isa::allow_avx512_rows(false);
    let narrow_build = isa::row_kernels();
    let narrow = run_everything();
    isa::allow_avx512_rows(true);
    eprintln!("row kernels compared: {wide_build} against {narrow_build}");
    assert_eq!(wide.len(), narrow.len());
    for ((name, a), (_, b)) in wide.iter().zip(&narrow) {
        assert_eq!(a.len(), b.len(), "{name}");
        let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
        assert_eq!(differ, 0, "{name}: {differ} of {} values differ between {wide_build} and {narrow_build}", a.len());
    }
}
