//! Proof that `extract_patches` is TF's `extract_patches` and that `reconstruct` inverts it.

use candle_core::{DType, Device, Tensor, Var};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use vit_patches::{
    Coverage, Padding, PatchError, PatchSpec, extract_patch_tokens, extract_patch_tokens_nchw, extract_patches,
    extract_patches_gather, extract_patches_nchw, reconstruct, reconstruct_with_coverage,
};

/// The defining formula, written as loops, independently of the crate's geometry code.
fn naive(x: &[f32], (b, h, w, c): (usize, usize, usize, usize), spec: &PatchSpec) -> (Vec<f32>, [usize; 4]) {
    let (kh, kw) = spec.size;
    let (sh, sw) = spec.stride;
    let (rh, rw) = spec.rate;
    let (eh, ew) = (kh + (kh - 1) * (rh - 1), kw + (kw - 1) * (rw - 1));
    let (oh, ow, pt, pl) = match spec.padding {
        Padding::Valid => ((h - eh + sh) / sh, (w - ew + sw) / sw, 0, 0),
        Padding::Same => {
            let (oh, ow) = (h.div_ceil(sh), w.div_ceil(sw));
            let ph = ((oh - 1) * sh + eh).saturating_sub(h);
            let pw = ((ow - 1) * sw + ew).saturating_sub(w);
            (oh, ow, ph / 2, pw / 2)
        }
    };
    let mut out = Vec::with_capacity(b * oh * ow * kh * kw * c);
    for bi in 0..b {
        for i in 0..oh {
            for j in 0..ow {
                for u in 0..kh {
                    for v in 0..kw {
                        for ci in 0..c {
                            let y = (i * sh + u * rh) as isize - pt as isize;
                            let xx = (j * sw + v * rw) as isize - pl as isize;
                            let inside = (0..h as isize).contains(&y) && (0..w as isize).contains(&xx);
                            out.push(if inside { x[((bi * h + y as usize) * w + xx as usize) * c + ci] } else { 0.0 });
                        }
                    }
                }
            }
        }
    }
    (out, [b, oh, ow, kh * kw * c])
}

fn image_1_to_100() -> Tensor {
    Tensor::arange(1f32, 101., &Device::Cpu).unwrap().reshape((1, 10, 10, 1)).unwrap()
}

fn patch(p: &Tensor, i: usize, j: usize) -> Vec<f32> {
    p.get(0).unwrap().get(i).unwrap().get(j).unwrap().to_vec1().unwrap()
}

#[test]
fn tf_documentation_golden_vectors() {
    let x = image_1_to_100();
    let spec = PatchSpec::new(3, 3).with_stride(5, 5);
    let p = extract_patches(&x, &spec).unwrap();
    assert_eq!(p.dims(), [1, 2, 2, 9]);
    assert_eq!(patch(&p, 0, 0), [1., 2., 3., 11., 12., 13., 21., 22., 23.]);
    assert_eq!(patch(&p, 1, 1), [56., 57., 58., 66., 67., 68., 76., 77., 78.]);

    let dilated = spec.with_rate(2, 2);
    let p = extract_patches(&x, &dilated).unwrap();
    assert_eq!(p.dims(), [1, 2, 2, 9]);
    assert_eq!(patch(&p, 0, 0), [1., 3., 5., 21., 23., 25., 41., 43., 45.]);
    assert_eq!(patch(&p, 1, 1), [56., 58., 60., 76., 78., 80., 96., 98., 100.]);
}

#[test]
fn same_padding_puts_the_smaller_half_first() {
    // 10 wide, size 4, stride 3: out = 4, total pad = 3*3 + 4 - 10 = 3, so 1 before, 2 after.
    let spec = PatchSpec::new(4, 4).with_stride(3, 3).with_padding(Padding::Same);
    let g = spec.geometry(10, 10).unwrap();
    assert_eq!(g.out, (4, 4));
    assert_eq!(g.pad_before, (1, 1));
    assert_eq!(g.pad_after, (2, 2));
    let p = extract_patches(&image_1_to_100(), &spec).unwrap();
    assert_eq!(p.dims(), [1, 4, 4, 16]);
    assert_eq!(patch(&p, 0, 0), [0., 0., 0., 0., 0., 1., 2., 3., 0., 11., 12., 13., 0., 21., 22., 23.]);
}

#[test]
fn channels_are_the_fastest_axis() {
    let x = Tensor::arange(0f32, 2. * 2. * 3., &Device::Cpu).unwrap().reshape((1, 2, 2, 3)).unwrap();
    let p = extract_patches(&x, &PatchSpec::square(2)).unwrap();
    assert_eq!(patch(&p, 0, 0), (0..12).map(|v| v as f32).collect::<Vec<_>>());
}

#[test]
fn nchw_entry_points_match_nhwc() {
    let x = vit_rng::tensors::normal(0f32, 1., (2, 3, 9, 7), 1, &Device::Cpu).unwrap();
    let nhwc = x.permute((0, 2, 3, 1)).unwrap();
    for spec in [PatchSpec::square(3), PatchSpec::new(2, 3).with_stride(1, 2).with_padding(Padding::Same)] {
        let a = extract_patches_nchw(&x, &spec).unwrap();
        let b = extract_patches(&nhwc, &spec).unwrap();
        assert_eq!(a.dims(), b.dims());
        assert_eq!(flat(&a), flat(&b));
        let t = extract_patch_tokens_nchw(&x, &spec).unwrap();
        let g = spec.geometry(9, 7).unwrap();
        assert_eq!(t.dims(), [2, g.num_patches(), spec.patch_dim(3)]);
        assert_eq!(flat(&t), flat(&b));
    }
}

#[test]
fn every_dtype_works() {
    let x = image_1_to_100();
    let spec = PatchSpec::new(3, 3).with_stride(2, 2).with_rate(2, 1).with_padding(Padding::Same);
    let want = flat(&extract_patches(&x, &spec).unwrap());
    for dtype in [DType::F64, DType::F16, DType::BF16, DType::U32, DType::U8] {
        let got = extract_patches(&x.to_dtype(dtype).unwrap(), &spec).unwrap();
        assert_eq!(got.dtype(), dtype);
        assert_eq!(flat(&got), want, "{dtype:?}");
    }
}

#[test]
fn gradient_of_the_sum_counts_how_often_each_pixel_is_read() {
    let spec = PatchSpec::new(3, 2).with_stride(2, 1).with_rate(1, 2).with_padding(Padding::Same);
    let x = Var::from_tensor(&vit_rng::tensors::normal(0f32, 1., (2, 7, 6, 2), 2, &Device::Cpu).unwrap()).unwrap();
    for path in [extract_patches, extract_patches_gather] {
        let grads = path(&x, &spec).unwrap().sum_all().unwrap().backward().unwrap();
        let grad = grads.get(&x).expect("images receive a gradient");
        let coverage = Coverage::new(&spec, 7, 6).unwrap();
        assert_eq!(grad.dims(), x.dims());
        for (n, value) in flat(grad).into_iter().enumerate() {
            let (y, x) = ((n / 2 / 6) % 7, (n / 2) % 6);
            assert_eq!(value, coverage.count(y, x) as f32, "pixel ({y}, {x})");
        }
    }
}

#[test]
fn errors_name_the_argument_and_value() {
    let x = image_1_to_100();
    let err = extract_patches(&x, &PatchSpec::new(0, 3)).unwrap_err();
    assert!(matches!(err, PatchError::ZeroArgument { argument: "size", value: (0, 3) }), "{err}");
    let err = extract_patches(&x, &PatchSpec::square(2).with_stride(2, 0)).unwrap_err();
    assert!(matches!(err, PatchError::ZeroArgument { argument: "stride", .. }), "{err}");
    let err = extract_patches(&x, &PatchSpec::square(2).with_rate(0, 1)).unwrap_err();
    assert!(matches!(err, PatchError::ZeroArgument { argument: "rate", .. }), "{err}");
    assert!(err.to_string().contains("`rate`"));

    let err = extract_patches(&x.squeeze(0).unwrap(), &PatchSpec::square(2)).unwrap_err();
    assert!(matches!(err, PatchError::WrongRank { argument: "images", expected: 4, .. }), "{err}");
    assert!(err.to_string().contains("[10, 10, 1]"), "{err}");

    let err = extract_patches(&x, &PatchSpec::new(4, 4).with_rate(4, 1)).unwrap_err();
    assert!(
        matches!(err, PatchError::PatchLargerThanImage { axis: "height", effective_size: 13, extent: 10 }),
        "{err}"
    );
    // SAME pads instead of failing.
    assert!(extract_patches(&x, &PatchSpec::new(4, 4).with_rate(4, 1).with_padding(Padding::Same)).is_ok());

    let spec = PatchSpec::square(5);
    let p = extract_patches(&x, &spec).unwrap();
    let err = reconstruct(&p, (15, 10), &spec).unwrap_err();
    assert!(matches!(err, PatchError::PatchShapeMismatch { .. }), "{err}");
    let err = reconstruct(&p.narrow(3, 0, 24).unwrap(), (10, 10), &spec).unwrap_err();
    assert!(matches!(err, PatchError::ChannelsUnknown { patch_dim: 24, kernel_area: 25 }), "{err}");
}

#[test]
fn uncovered_pixels_are_an_error_or_a_zero_count() {
    let x = image_1_to_100();
    // VALID with 3x3 tiles leaves the last row and column of a 10x10 image unread.
    let spec = PatchSpec::square(3);
    let p = extract_patches(&x, &spec).unwrap();
    let err = reconstruct(&p, (10, 10), &spec).unwrap_err();
    assert!(matches!(err, PatchError::UncoveredPixel { row: 0, col: 9, uncovered: 19, .. }), "{err}");
    let (image, coverage) = reconstruct_with_coverage(&p, (10, 10), &spec).unwrap();
    assert_eq!(coverage.uncovered(), 19);
    let image = flat(&image);
    for y in 0..10 {
        for xx in 0..10 {
            let want = if y < 9 && xx < 9 { (y * 10 + xx + 1) as f32 } else { 0.0 };
            assert_eq!(image[y * 10 + xx], want);
            assert_eq!(coverage.count(y, xx), u32::from(y < 9 && xx < 9));
        }
    }
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

prop_compose! {
    fn arb_case()(
        b in 1usize..3, h in 1usize..13, w in 1usize..13, c in 1usize..4,
        size in (1usize..5, 1usize..5), stride in (1usize..5, 1usize..5), rate in (1usize..4, 1usize..4),
        same in any::<bool>(), seed in any::<u64>(),
    ) -> ((usize, usize, usize, usize), PatchSpec, u64) {
        let spec = PatchSpec::new(size.0, size.1)
            .with_stride(stride.0, stride.1)
            .with_rate(rate.0, rate.1)
            .with_padding(if same { Padding::Same } else { Padding::Valid });
        ((b, h, w, c), spec, seed)
    }
}

fn random_image(shape: (usize, usize, usize, usize), seed: u64) -> (Vec<f32>, Tensor) {
    // A small LCG keeps cases reproducible from proptest's seed alone.
    let mut state = seed | 1;
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let t = Tensor::from_vec(data.clone(), shape, &Device::Cpu).unwrap();
    (data, t)
}

proptest! {
    // A fixed seed keeps `cargo test` deterministic; no failure files are written into the tree.
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(20_260_101),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn matches_the_formula_and_shapes(((b, h, w, c), spec, seed) in arb_case()) {
        let (data, x) = random_image((b, h, w, c), seed);
        let (ek_h, ek_w) = spec.effective_size();
        let fits = spec.padding == Padding::Same || (ek_h <= h && ek_w <= w);
        let got = extract_patches(&x, &spec);
        if !fits {
            let rejected = matches!(got, Err(PatchError::PatchLargerThanImage { .. }));
            prop_assert!(rejected, "expected PatchLargerThanImage");
            return Ok(());
        }
        let got = got.unwrap();
        let (want, want_shape) = naive(&data, (b, h, w, c), &spec);
        prop_assert_eq!(got.dims(), &want_shape[..]);
        let g = spec.geometry(h, w).unwrap();
        prop_assert_eq!((g.out.0, g.out.1), (want_shape[1], want_shape[2]));
        prop_assert_eq!(flat(&got), want);
        let gathered = extract_patches_gather(&x, &spec).unwrap();
        prop_assert_eq!(flat(&gathered), flat(&got));
        let tokens = extract_patch_tokens(&x, &spec).unwrap();
        prop_assert_eq!(tokens.dims(), &[b, g.num_patches(), spec.patch_dim(c)][..]);
    }

    #[test]
    fn reconstruct_inverts_extract(((b, h, w, c), spec, seed) in arb_case()) {
        let (_, x) = random_image((b, h, w, c), seed);
        let Ok(patches) = extract_patches(&x, &spec) else { return Ok(()) };
        let coverage = Coverage::new(&spec, h, w).unwrap();
        match reconstruct(&patches, (h, w), &spec) {
            Ok(back) => {
                prop_assert_eq!(coverage.uncovered(), 0);
                let err = max_abs_diff(&back, &x);
                if coverage.overlaps() {
                    prop_assert!(err <= 1e-6, "overlapping spec, max error {}", err);
                } else {
                    prop_assert_eq!(err, 0.0);
                }
            }
            Err(PatchError::UncoveredPixel { row, col, uncovered, .. }) => {
                prop_assert_eq!(uncovered, coverage.uncovered());
                prop_assert_eq!(coverage.count(row, col), 0);
            }
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }

    #[test]
    fn tiling_fast_path_equals_gather(
        b in 1usize..3, h in 1usize..20, w in 1usize..20, c in 1usize..4,
        kh in 1usize..6, kw in 1usize..6, same in any::<bool>(), seed in any::<u64>(),
    ) {
        let spec = PatchSpec::new(kh, kw).with_padding(if same { Padding::Same } else { Padding::Valid });
        prop_assume!(same || (kh <= h && kw <= w));
        let (_, x) = random_image((b, h, w, c), seed);
        let fast = extract_patches(&x, &spec).unwrap();
        let gathered = extract_patches_gather(&x, &spec).unwrap();
        prop_assert_eq!(flat(&fast), flat(&gathered));
    }
}
