//! The fused kernels equal the composed candle ops, in forward and backward, on every path.

use candle_core::{DType, Device, Tensor, Var};
use vit_kernels::composed;

mod common;
use common::randn;

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-6);
    diff / scale
}

#[test]
fn fused_softmax_matches_composed_forward_and_backward() {
    for shape in [vec![3, 7], vec![2, 4, 49, 49], vec![1, 1]] {
        let x = Var::from_tensor(&randn(&shape, 1)).unwrap();
        let upstream = randn(&shape, 2);
        let fused = vit_kernels::softmax_last_dim(&x).unwrap();
        let reference = composed::softmax_last_dim(&x).unwrap();
        assert!(max_rel_diff(&fused, &reference) < 1e-6);
        let g_fused = (fused * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (reference * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (g_fused.get(&x).unwrap(), g_ref.get(&x).unwrap());
        assert!(max_rel_diff(a, b) < 1e-5, "softmax grad {shape:?}: {}", max_rel_diff(a, b));
    }
}

#[test]
fn fused_layer_norm_matches_composed_forward_and_backward() {
    for shape in [vec![5, 64], vec![2, 49, 64], vec![3, 7]] {
        let d = *shape.last().unwrap();
        let x = Var::from_tensor(&randn(&shape, 3)).unwrap();
        let w = Var::from_tensor(&randn(&[d], 4)).unwrap();
        let b = Var::from_tensor(&randn(&[d], 5)).unwrap();
        let upstream = randn(&shape, 6);
        let fused = vit_kernels::layer_norm(&x, &w, &b, 1e-6).unwrap();
        let reference = composed::layer_norm(&x, &w, &b, 1e-6).unwrap();
        assert!(max_rel_diff(&fused, &reference) < 1e-5);
        let g_fused = (fused * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (reference * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in [("x", &x), ("weight", &w), ("bias", &b)] {
            let (a, r) = (g_fused.get(var).unwrap(), g_ref.get(var).unwrap());
            assert!(max_rel_diff(a, r) < 1e-4, "layer_norm d{name} {shape:?}: {}", max_rel_diff(a, r));
        }
    }
}

#[test]
fn fused_ops_accept_non_contiguous_input() {
    let x = randn(&[4, 6], 7).t().unwrap();
    let reference = composed::softmax_last_dim(&x).unwrap();
    assert!(max_rel_diff(&vit_kernels::softmax_last_dim(&x).unwrap(), &reference) < 1e-6);
}

#[test]
fn other_dtypes_take_the_composed_path() {
    let x = randn(&[3, 5], 8).to_dtype(DType::F64).unwrap();
    let y = vit_kernels::softmax_last_dim(&x).unwrap();
    let sums = y.sum(1).unwrap().to_vec1::<f64>().unwrap();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-12));
}

#[test]
fn fused_dense_matches_composed_forward_and_backward() {
    // Up to 4 rows with 128 or more outputs take the split over columns (batch 1).
    for (rows, inputs, outputs) in
        [(7, 5, 3), (3000, 64, 48), (1, 1, 1), (300, 9, 200), (1, 30, 200), (4, 9, 1000), (50, 300, 300)]
    {
        let x = Var::from_tensor(&randn(&[rows, inputs], 21)).unwrap();
        let w = Var::from_tensor(&randn(&[outputs, inputs], 22)).unwrap();
        let b = Var::from_tensor(&randn(&[outputs], 23)).unwrap();
        let upstream = randn(&[rows, outputs], 24);
        let fused = vit_kernels::dense(&x, &w, Some(&b)).unwrap();
        let reference = composed::dense(&x, &w, Some(&b)).unwrap();
        assert!(max_rel_diff(&fused, &reference) < 1e-6, "forward [{rows}, {inputs}] -> {outputs}");
        let gf = (fused * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (reference * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        for (which, var) in [("x", &x), ("weight", &w), ("bias", &b)] {
            let (a, r) = (gf.get(var).unwrap(), gr.get(var).unwrap());
            assert_eq!(a.dims(), r.dims());
            assert!(max_rel_diff(a, r) < 1e-5, "d{which} [{rows}, {inputs}] -> {outputs}: {}", max_rel_diff(a, r));
        }
    }
    // An input outside the graph (the patches) gets no gradient; the parameters still do.
    let x = randn(&[4, 6], 25).detach();
    let w = Var::from_tensor(&randn(&[3, 6], 26)).unwrap();
    let b = Var::from_tensor(&randn(&[3], 27)).unwrap();
    let grads = vit_kernels::dense(&x, &w, Some(&b)).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none() && grads.get(&w).is_some() && grads.get(&b).is_some());
    // Degenerate sizes give empty results rather than a panic.
    for (rows, outputs) in [(0, 3), (5, 0), (1, 0)] {
        let (x, w) = (
            randn(&[rows.max(1), 6], 29).narrow(0, 0, rows).unwrap(),
            Tensor::zeros((outputs, 6), DType::F32, &Device::Cpu).unwrap(),
        );
        let y = vit_kernels::dense(&x, &w, Some(&Tensor::zeros(outputs, DType::F32, &Device::Cpu).unwrap())).unwrap();
        assert_eq!(y.dims(), [rows, outputs]);
    }
    let err = vit_kernels::dense(&randn(&[4, 5], 28), &w, Some(&b)).unwrap_err().to_string();
    assert!(err.contains("do not fit input [4, 5]"), "{err}");
}

#[test]
fn fused_gelu_matches_composed_forward_and_backward() {
    for shape in [vec![7, 5], vec![3000, 64], vec![1], vec![2, 3, 40_000]] {
        let x = Var::from_tensor(&randn(&shape, 21)).unwrap();
        let upstream = randn(&shape, 23);
        let f = vit_kernels::gelu(&x).unwrap();
        let r = composed::gelu(&x).unwrap();
        assert!(max_rel_diff(&f, &r) < 1e-6, "forward {shape:?}");
        let gf = (f * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (r * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        // Absolute: candle's GELU backward uses 0.398942 for 1/sqrt(2 pi), so where the
        // derivative is near 0 (x near -0.75) a relative error would measure that alone.
        let (a, r) = (gf.get(&x).unwrap(), gr.get(&x).unwrap());
        let err = (a - r).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let scale = r.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
        assert!(err < 2e-5 * scale, "dx {shape:?}: {err}");
    }
}

#[test]
fn fast_erf_is_within_f32_resolution_of_libm() {
    let mut worst = 0f32;
    for i in -60_000..=60_000 {
        let x = i as f32 / 10_000.0;
        worst = worst.max((vit_kernels::erf(x) - candle_core::cpu::erf::erf_f32(x)).abs());
    }
    assert!(worst < 1e-6, "max |erf - libm erff| = {worst}");
}

#[test]
fn fast_exp_is_within_a_few_ulp_of_std() {
    let mut worst = 0f32;
    for i in -870_000..=880_000 {
        let x = i as f32 / 10_000.0;
        let (got, want) = (vit_kernels::exp(x), x.exp());
        worst = worst.max(((got - want) / want).abs());
    }
    assert!(worst < 4e-7, "max relative error {worst}");
    assert_eq!(vit_kernels::exp(0.0), 1.0);
    assert!(vit_kernels::exp(-200.0) < 1e-37 && vit_kernels::exp(-200.0) >= 0.0);
}

vit_kernels::device_tests! {
    fn softmax_and_layer_norm_match_composed_forward_and_backward_on_every_device(device: &Device) {
        // CPU: this crate's fused kernels; GPU: candle's fused kernels with the attached backward.
        let on = |t: Tensor| Var::from_tensor(&t.to_device(device).unwrap()).unwrap();
        let (x, w, b) = (on(randn(&[4, 9, 64], 61)), on(randn(&[64], 62)), on(randn(&[64], 63)));
        let upstream = randn(&[4, 9, 64], 64).to_device(device).unwrap();
        let pairs = [
            ("softmax", vit_kernels::softmax_last_dim(&x).unwrap(), composed::softmax_last_dim(&x).unwrap()),
            ("layer_norm", vit_kernels::layer_norm(&x, &w, &b, 1e-6).unwrap(), composed::layer_norm(&x, &w, &b, 1e-6).unwrap()),
        ];
        for (op, ours, reference) in pairs {
            assert!(max_rel_diff(&ours, &reference) < 1e-5, "{op} forward: {}", max_rel_diff(&ours, &reference));
            let g1 = (&ours * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (&reference * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, var) in [("x", &x), ("weight", &w), ("bias", &b)] {
                match (g1.get(var), g2.get(var)) {
                    (Some(a), Some(r)) => {
                        assert!(max_rel_diff(a, r) < 1e-4, "{op} d{name}: {}", max_rel_diff(a, r));
                        assert!(!a.track_op(), "{op}: d{name} holds a graph");
                    }
                    (None, None) => {}
                    _ => panic!("{op}: d{name} present on one side only"),
                }
            }
        }
    }

    fn half_precision_softmax_and_layer_norm_compute_in_f32_and_carry_gradients(device: &Device) {
        let x = Var::from_tensor(&randn(&[6, 49], 42).to_device(device).unwrap()).unwrap();
        let w = Var::from_tensor(&randn(&[49], 43).to_device(device).unwrap()).unwrap();
        let b = Var::from_tensor(&randn(&[49], 44).to_device(device).unwrap()).unwrap();
        let want_softmax = composed::softmax_last_dim(&x).unwrap();
        let want_norm = composed::layer_norm(&x, &w, &b, 1e-6).unwrap();
        for dtype in [DType::BF16, DType::F16] {
            let half = |t: &Tensor| t.to_dtype(dtype).unwrap();
            let softmax = vit_kernels::softmax_last_dim(&half(&x)).unwrap();
            let norm = vit_kernels::layer_norm(&half(&x), &half(&w), &half(&b), 1e-6).unwrap();
            assert_eq!((softmax.dtype(), norm.dtype()), (dtype, dtype));
            let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            // Only the input's and the output's rounding: bf16 keeps 8 bits of mantissa.
            assert!(max_rel_diff(&f32(&softmax), &want_softmax) < 1e-2, "{dtype:?} softmax");
            assert!(max_rel_diff(&f32(&norm), &want_norm) < 2e-2, "{dtype:?} layer_norm");
            // Weighted: the plain sum of a softmax is 1 whatever its input, so its gradient is
            // zero and would prove nothing.
            let upstream = randn(&[6, 49], 45).to_device(device).unwrap();
            let weighted = (f32(&softmax) * &upstream).unwrap().sum_all().unwrap();
            let through_softmax = weighted.backward().unwrap();
            let g = through_softmax.get(&x).unwrap_or_else(|| panic!("{dtype:?}: no gradient through the softmax"));
            let g_norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(g_norm.is_finite() && g_norm > 1e-6, "{dtype:?}: softmax gradient norm {g_norm}");
            let grads = (weighted + f32(&norm).sqr().unwrap().sum_all().unwrap()).unwrap().backward().unwrap();
            for (name, var) in [("x", &x), ("weight", &w), ("bias", &b)] {
                let g = grads.get(var).unwrap_or_else(|| panic!("{dtype:?}: {name} has no gradient"));
                assert_eq!(g.dtype(), DType::F32);
                let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(norm.is_finite() && norm > 0.0, "{dtype:?}: {name} gradient norm {norm}");
            }
        }
    }
}

#[test]
fn dense_gradients_are_bit_identical_with_any_number_of_threads() {
    // Long enough in the shared dimension (rows) for the weight gradient's split over tasks.
    let x = Var::from_tensor(&randn(&[9000, 24], 90)).unwrap();
    let w = Var::from_tensor(&randn(&[16, 24], 91)).unwrap();
    let b = Var::from_tensor(&randn(&[16], 92)).unwrap();
    let upstream = randn(&[9000, 16], 93);
    let grads = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let y = vit_kernels::dense(&x, &w, Some(&b)).unwrap();
            let g = (y * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            [&x, &w, &b].map(|v| g.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())
        })
    };
    let one = grads(1);
    for threads in [2, 3, 8] {
        assert_eq!(grads(threads), one, "{threads} threads");
    }
}
