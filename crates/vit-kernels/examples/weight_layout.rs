//! How the weight's layout changes a dense layer's `f32` product at batch 1 (197 tokens):
//! `gemm` on `W: [out, in]` read as `W^T` (a trained layer) against `W^T` stored `[in, out]`
//! (inference until b078a06), each split over two threads by output columns, and the
//! inference op on the weight in panels of 64 output channels (`vit_kernels::F32Weight`, bias
//! included). Microseconds per product, the median of five rounds; run with 2 threads
//! (`RAYON_NUM_THREADS=2` on a larger machine).
//! Run: `cargo run --release -p vit-kernels --example weight_layout`
//! (figures: `docs/measurements/cpu-2026-12-06-f32-latency.md`).

use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;
use vit_kernels::F32Weight;

#[allow(clippy::too_many_arguments)]
unsafe fn prod(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    ldd: usize,
    lhs: *const f32,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            ldd as isize,
            true,
            lhs,
            1,
            k as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

fn main() {
    let shapes = [
        (197, 192, 576),
        (197, 192, 768),
        (197, 768, 192),
        (197, 192, 192),
        (197, 384, 1152),
        (197, 384, 1536),
        (197, 1536, 384),
        (197, 384, 384),
        (197, 768, 2304),
        (197, 768, 3072),
        (197, 3072, 768),
        (197, 768, 768),
    ];
    for (m, k, n) in shapes {
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 104729) % 997) as f32 / 997.0).collect(); // [n, k]
        let mut wt = vec![0f32; k * n]; // [k, n]
        for j in 0..n {
            for p in 0..k {
                wt[p * n + j] = w[j * k + p];
            }
        }
        let mut out = vec![0f32; m * n];
        let per = n.div_ceil(2);
        let run = |out: &mut Vec<f32>, transposed: bool| {
            let dst = out.as_mut_ptr() as usize;
            (0..2).into_par_iter().for_each(|t| {
                let c0 = t * per;
                let c1 = n.min(c0 + per);
                unsafe {
                    if transposed {
                        prod(m, c1 - c0, k, (dst as *mut f32).add(c0), n, x.as_ptr(), wt.as_ptr().add(c0), n, 1);
                    } else {
                        prod(m, c1 - c0, k, (dst as *mut f32).add(c0), n, x.as_ptr(), w.as_ptr().add(c0 * k), 1, k);
                    }
                }
            });
        };
        let panels = Arc::new(
            F32Weight::from_tensors(&Tensor::from_vec(w.clone(), (n, k), &Device::Cpu).unwrap(), None).unwrap(),
        );
        let input = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
        let mut res = [Vec::new(), Vec::new(), Vec::new()];
        for round in 0..6 {
            for (i, times) in res.iter_mut().enumerate() {
                let iters = 200;
                let s = Instant::now();
                for _ in 0..iters {
                    match i {
                        2 => drop(vit_kernels::dense_f32_transposed(&input, &panels, false).unwrap()),
                        _ => run(&mut out, i == 1),
                    }
                }
                if round > 0 {
                    times.push(s.elapsed().as_secs_f64() * 1e6 / iters as f64);
                }
            }
        }
        for r in res.iter_mut() {
            r.sort_by(|a, b| a.partial_cmp(b).unwrap());
        }
        println!(
            "{m}x{k}x{n}: W [out,in] {:.1} us, W^T [in,out] {:.1} us, panels (the op) {:.1} us",
            res[0][2], res[1][2], res[2][2]
        );
    }
}
