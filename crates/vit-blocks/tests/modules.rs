//! The modules equal their composed versions (the attention kernel against the attention built
//! from candle ops, the fused dense-GELU-dropout against the separate ops) and carry gradients
//! to every parameter.

use candle_core::{DType, Device, Module, Tensor, Var};
use vit_blocks::{
    AttentionConfig, BlockConfig, Dropout, Linear, Mlp, MlpConfig, MultiHeadAttention, SeededVarMap, SharedRng,
    TransformerBlock,
};
use vit_blocks::{ModuleTree, PackBf16, QuantizeInt8, TransposeF32, WeightMap};
use vit_kernels::composed;

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-6);
    diff / scale
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let store = SeededVarMap::new(seed);
    store
        .var_builder(DType::F32, &Device::Cpu)
        .get_with_hints(shape, "x", candle_nn::Init::Randn { mean: 0.0, stdev: 2.0 })
        .unwrap()
}

#[test]
fn linear_is_correct_on_transposed_input() {
    let store = SeededVarMap::new(9);
    let layer = Linear::new(5, 3, true, store.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let x = randn(&[2, 5, 4], 10).transpose(1, 2).unwrap(); // [2, 4, 5], non-contiguous
    let got = layer.forward(&x).unwrap();
    let want = x.contiguous().unwrap().broadcast_matmul(&layer.weight().t().unwrap()).unwrap();
    let want = want.broadcast_add(layer.bias().unwrap()).unwrap();
    assert!(max_rel_diff(&got, &want) < 1e-6);
}

#[test]
fn seeded_store_is_reproducible_and_name_dependent() {
    let a = randn(&[100], 11);
    let b = randn(&[100], 11);
    assert_eq!(a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
    let c = randn(&[100], 12);
    assert_ne!(a.to_vec1::<f32>().unwrap(), c.to_vec1::<f32>().unwrap());
    let std = a.sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    assert!((1.5..2.5).contains(&std), "stdev 2 asked, got {std}");
}

#[test]
fn dropout_is_seeded_resumable_and_inverted() {
    let rng = SharedRng::new(13);
    let dropout = Dropout::new(0.25, rng.clone()).unwrap();
    let x = Tensor::ones((1000,), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(dropout.forward_t(&x, false).unwrap().to_vec1::<f32>().unwrap(), vec![1.0; 1000]);
    let saved = rng.state();
    let first = dropout.forward_t(&x, true).unwrap().to_vec1::<f32>().unwrap();
    let kept = first.iter().filter(|&&v| v > 0.0).count();
    assert!((700..800).contains(&kept), "kept {kept} of 1000 at p=0.25");
    assert!(first.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    let second = dropout.forward_t(&x, true).unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(first, second);
    rng.set_state(saved);
    assert_eq!(dropout.forward_t(&x, true).unwrap().to_vec1::<f32>().unwrap(), first);
    assert!(Dropout::new(1.0, rng).is_err());
}

#[test]
fn dropout_masks_are_unbiased_and_uncorrelated_between_neighbours() {
    let dropout = Dropout::new(0.5, SharedRng::new(60)).unwrap();
    let x = Tensor::ones((200_000,), DType::F32, &Device::Cpu).unwrap();
    let kept: Vec<bool> =
        dropout.forward_t(&x, true).unwrap().to_vec1::<f32>().unwrap().iter().map(|&v| v > 0.0).collect();
    let rate = kept.iter().filter(|&&k| k).count() as f64 / kept.len() as f64;
    // Binomial standard deviation at n = 200,000: 0.0011; the bounds are about 5 of them.
    assert!((rate - 0.5).abs() < 0.006, "keep rate {rate}");
    for lag in [1, 2, 3, 4, 64] {
        let both = kept.iter().zip(&kept[lag..]).filter(|&(a, b)| *a && *b).count() as f64 / (kept.len() - lag) as f64;
        assert!((both - 0.25).abs() < 0.006, "lag {lag}: both kept {both}, expected 0.25");
    }
}

fn keras_block(drop_path: f32, layer_scale: Option<f64>) -> BlockConfig {
    BlockConfig {
        attention: AttentionConfig { dropout: 0.1, value_dim: Some(8), ..AttentionConfig::new(16, 2, 12) },
        mlp: MlpConfig { dim: 16, hidden_units: vec![32, 16], dropout: 0.1, activation_on_last: true },
        layer_norm_eps: 1e-6,
        drop_path,
        layer_scale,
    }
}

#[test]
fn a_block_on_rows_equals_the_block_on_images_dropout_included() {
    // forward_t runs the block on flattened rows with the fused kernels; forward_with_attention
    // runs it on [B, N, D] with the composed attention. Same draws, same values within rounding.
    let store = SeededVarMap::new(80);
    let rng = SharedRng::new(81);
    let block =
        TransformerBlock::new(&keras_block(0.0, None), rng.clone(), store.var_builder(DType::F32, &Device::Cpu))
            .unwrap();
    let x = Var::from_tensor(&randn(&[3, 6, 16], 82)).unwrap();
    let upstream = randn(&[3, 6, 16], 83);
    let start = rng.state();
    let rows = block.forward_t(&x, true).unwrap();
    let g1 = (&rows * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
    rng.set_state(start);
    let (images, _) = block.forward_with_attention(&x, true).unwrap();
    let g2 = (&images * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(rows.dims(), [3, 6, 16]);
    assert!(max_rel_diff(&rows, &images) < 1e-5, "forward: {}", max_rel_diff(&rows, &images));
    let mut vars: Vec<(String, Var)> = store.varmap().data().lock().unwrap().clone().into_iter().collect();
    vars.push(("x".into(), x.clone()));
    for (name, var) in vars {
        let (a, b) = (g1.get(&var).unwrap(), g2.get(&var).unwrap());
        if name.ends_with("key.bias") {
            continue; // analytically zero: compared in the attention test
        }
        assert!(max_rel_diff(a, b) < 1e-4, "d{name}: {}", max_rel_diff(a, b));
    }
}

#[test]
fn every_block_parameter_receives_a_nonzero_gradient() {
    for (drop_path, layer_scale) in [(0.0, None), (0.2, Some(0.1))] {
        let store = SeededVarMap::new(14);
        let cfg = keras_block(drop_path, layer_scale);
        let block =
            TransformerBlock::new(&cfg, SharedRng::new(1), store.var_builder(DType::F32, &Device::Cpu)).unwrap();
        let x = randn(&[4, 9, 16], 15);
        let loss = block.forward_t(&x, true).unwrap().sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        let vars = store.varmap().data().lock().unwrap().clone();
        let expected = if layer_scale.is_some() { 18 } else { 16 };
        assert_eq!(vars.len(), expected, "{:?}", vars.keys().collect::<Vec<_>>());
        for (name, var) in vars {
            let g = grads.get(&var).unwrap_or_else(|| panic!("{name} has no gradient"));
            let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            if name == "attention.key.bias" {
                // Analytically zero: softmax ignores a shift shared by all keys, so only
                // rounding noise reaches it (in PyTorch and Keras alike).
                assert!(norm < 1e-10, "{name} gradient norm {norm}, expected ~0");
            } else {
                assert!(norm > 0.0, "{name} has an all-zero gradient");
            }
        }
    }
}

#[test]
fn attention_weights_are_distributions_and_shapes_follow_keras() {
    let store = SeededVarMap::new(16);
    let cfg = keras_block(0.0, None).attention;
    let mha = MultiHeadAttention::new(&cfg, SharedRng::new(2), store.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let shapes: Vec<_> = {
        let data = store.varmap().data().lock().unwrap();
        let mut s: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect();
        s.sort();
        s
    };
    assert!(shapes.contains(&("query.weight".into(), vec![24, 16])));
    assert!(shapes.contains(&("value.weight".into(), vec![16, 16])));
    assert!(shapes.contains(&("output.weight".into(), vec![16, 16])));
    let x = randn(&[2, 5, 16], 17);
    let (y, w) = mha.forward_with_weights(&x, false).unwrap();
    assert_eq!(y.dims(), [2, 5, 16]);
    assert_eq!(w.dims(), [2, 2, 5, 5]);
    let sums = w.sum(3).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
}

#[test]
fn fused_attention_matches_composed_forward_and_backward_dropout_included() {
    // value_dim differs from key_dim, N is not a multiple of 4 (dropout draws straddle rows).
    // In training the weights are kept for the backward pass; otherwise it recomputes them.
    for (dropout, train, n) in [(0.0, false, 7), (0.2, false, 7), (0.0, true, 9), (0.2, true, 7), (0.1, true, 12)] {
        let store = SeededVarMap::new(50);
        let cfg = AttentionConfig { dropout, value_dim: Some(6), ..AttentionConfig::new(16, 3, 8) };
        let rng = SharedRng::new(51);
        let mha = MultiHeadAttention::new(&cfg, rng.clone(), store.var_builder(DType::F32, &Device::Cpu)).unwrap();
        let x = Var::from_tensor(&randn(&[2, n, 16], 52)).unwrap();
        let upstream = randn(&[2, n, 16], 53);
        let start = rng.state();
        let fused = mha.forward_t(&x, train).unwrap(); // CPU f32: the fused kernel
        let fused_grads = (&fused * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        rng.set_state(start);
        let (composed, _) = mha.forward_with_weights(&x, train).unwrap(); // composed candle ops
        let composed_grads = (&composed * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_rel_diff(&fused, &composed) < 1e-5, "p {dropout}: {}", max_rel_diff(&fused, &composed));
        let mut vars: Vec<(String, Var)> = store.varmap().data().lock().unwrap().clone().into_iter().collect();
        vars.push(("x".into(), x.clone()));
        for (name, var) in vars {
            let (a, b) = (fused_grads.get(&var), composed_grads.get(&var));
            let (a, b) = (a.unwrap_or_else(|| panic!("{name}: no fused gradient")), b.unwrap());
            if name == "key.bias" {
                // Analytically zero (softmax is shift-invariant): compare absolutely.
                let max = a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(max < 1e-4, "p {dropout}: key.bias gradient {max}");
                continue;
            }
            assert!(max_rel_diff(a, b) < 1e-4, "p {dropout}: d{name} differs by {}", max_rel_diff(a, b));
        }
    }
}

#[test]
fn dense_layer_with_fused_dropout_equals_the_separate_ops() {
    for (gelu, p) in [(true, 0.3), (false, 0.3), (true, 0.0)] {
        let store = SeededVarMap::new(70);
        let layer = Linear::new(12, 10, true, store.var_builder(DType::F32, &Device::Cpu)).unwrap();
        let rng = SharedRng::new(71);
        let dropout = Dropout::new(p, rng.clone()).unwrap();
        let x = Var::from_tensor(&randn(&[3, 7, 12], 72)).unwrap();
        let upstream = randn(&[3, 7, 10], 73);
        let start = rng.state();
        let fused = layer.forward_dropout(&x, gelu, &dropout, true).unwrap();
        let g1 = (&fused * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        rng.set_state(start);
        let plain = if gelu { layer.forward_gelu(&x) } else { layer.forward(&x) }.unwrap();
        let separate = dropout.forward_t(&plain, true).unwrap();
        let g2 = (&separate * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(bits(&fused), bits(&separate), "gelu {gelu}, p {p}: forward");
        let mut vars: Vec<(String, Var)> = store.varmap().data().lock().unwrap().clone().into_iter().collect();
        vars.push(("x".into(), x.clone()));
        for (name, var) in vars {
            assert_eq!(bits(g1.get(&var).unwrap()), bits(g2.get(&var).unwrap()), "gelu {gelu}, p {p}: d{name}");
        }
        // Inference on a detached layer (GELU in place) gives the same values.
        let inference = layer.detached();
        let detached = if gelu { inference.forward_gelu(&x) } else { inference.forward(&x) }.unwrap();
        assert_eq!(bits(&detached), bits(&plain), "gelu {gelu}: detached forward");
    }
}

#[test]
fn mlp_adds_its_own_residual() {
    let store = SeededVarMap::new(18);
    let cfg = keras_block(0.0, None).mlp;
    let mlp = Mlp::new(&cfg, SharedRng::new(3), store.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let x = randn(&[3, 16], 19);
    let residual = randn(&[3, 16], 20);
    let with = mlp.forward_residual(&x, &residual).unwrap();
    let branch = mlp.branch_t(&x, false).unwrap();
    assert!(max_rel_diff(&with, &(branch + &residual).unwrap()) < 1e-7);
    assert!(max_rel_diff(&mlp.forward(&x).unwrap(), &(mlp.branch_t(&x, false).unwrap() + &x).unwrap()) < 1e-7);
    let bad = MlpConfig { hidden_units: vec![32, 8], ..cfg };
    let err =
        Mlp::new(&bad, SharedRng::new(3), SeededVarMap::new(0).var_builder(DType::F32, &Device::Cpu)).unwrap_err();
    assert!(err.to_string().contains("must equal dim 16"), "{err}");
}

#[test]
fn detached_dense_layer_with_gelu_matches_composed() {
    // Row blocks with a small weight, batch 1 split over columns, one large product.
    for (rows, inputs, outputs) in [(700, 64, 96), (1, 300, 256), (50, 300, 300)] {
        let store = SeededVarMap::new(80);
        let layer = Linear::new(inputs, outputs, true, store.var_builder(DType::F32, &Device::Cpu)).unwrap();
        let x = randn(&[rows, inputs], 81);
        let fused = layer.detached().forward_gelu(&x).unwrap();
        let reference = composed::gelu(&composed::dense(&x, &layer.weight(), layer.bias()).unwrap()).unwrap();
        assert!(max_rel_diff(&fused, &reference) < 1e-5, "[{rows}, {inputs}] -> {outputs}");
    }
}

#[test]
fn fused_dropout_equals_the_mask_path_and_its_gradient_reuses_the_mask() {
    let rng = SharedRng::new(31);
    let dropout = Dropout::new(0.3, rng.clone()).unwrap();
    let x = Var::from_tensor(&randn(&[3, 1000], 32)).unwrap();
    let upstream = randn(&[3, 1000], 33);
    let start = rng.state();
    // f32 on the CPU: the fused kernel, mask never stored.
    let fused = dropout.forward_t(&x, true).unwrap();
    let grads = (&fused * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
    // f64 takes the explicit-mask path; the same stream position gives the same mask.
    rng.set_state(start);
    let ones = Tensor::ones((3, 1000), DType::F64, &Device::Cpu).unwrap();
    let mask = dropout.forward_t(&ones, true).unwrap().to_dtype(DType::F32).unwrap();
    let want = (x.as_tensor() * &mask).unwrap();
    assert_eq!(
        fused.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    let want_grad = (&upstream * &mask).unwrap();
    assert!(max_rel_diff(grads.get(&x).unwrap(), &want_grad) < 1e-7);
    let kept = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().filter(|&&m| m > 0.0).count();
    assert!((1950..2250).contains(&kept), "kept {kept} of 3000 at p = 0.3");
}

vit_kernels::device_tests! {
    fn dropout_on_every_device_is_seeded_resumable_and_inverted(device: &Device) {
        for dtype in [DType::F32, DType::BF16] {
            let rng = SharedRng::new(41);
            let dropout = Dropout::new(0.25, rng.clone()).unwrap();
            let x = Tensor::ones((4000,), dtype, device).unwrap();
            let saved = rng.state();
            let first = dropout.forward_t(&x, true).unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
            let kept = first.iter().filter(|&&v| v > 0.0).count();
            assert!((2850..3150).contains(&kept), "{dtype:?}: kept {kept} of 4000 at p = 0.25");
            // 1/0.75 rounds to 1.3359375 in bf16.
            assert!(first.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 5e-3), "{dtype:?}: not inverted");
            let second = dropout.forward_t(&x, true).unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
            assert_ne!(first, second, "{dtype:?}: two calls drew the same mask");
            rng.set_state(saved);
            let again = dropout.forward_t(&x, true).unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(again, first, "{dtype:?}: the same stream position must give the same mask");
        }
    }
}

#[test]
fn drop_path_drops_whole_samples_at_its_rate_scales_the_kept_and_passes_gradients_through_its_mask() {
    let rng = SharedRng::new(80);
    let drop_path = vit_blocks::DropPath::new(0.25, rng.clone()).unwrap();
    let (b, n, d) = (4000, 3, 5);
    let x = Var::from_tensor(&Tensor::ones((b, n, d), DType::F32, &Device::Cpu).unwrap()).unwrap();
    assert_eq!(
        drop_path.forward_t(&x, false).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(),
        (b * n * d) as f32
    );
    let start = rng.state();
    let y = drop_path.forward_t(&x, true).unwrap();
    let rows: Vec<Vec<f32>> = y.reshape((b, n * d)).unwrap().to_vec2().unwrap();
    let mut kept = 0;
    for row in &rows {
        // Per sample: every element dropped, or every element kept and scaled by 1 / (1 - p).
        let first = row[0];
        assert!(row.iter().all(|&v| v == first), "a sample was dropped in part");
        assert!(first == 0.0 || (first - 1.0 / 0.75).abs() < 1e-6, "kept value {first}");
        kept += usize::from(first > 0.0);
    }
    // Binomial standard deviation at n = 4,000, p = 0.75: 0.0068; the bounds are 5 of them.
    let rate = kept as f64 / b as f64;
    assert!((rate - 0.75).abs() < 0.035, "keep rate {rate}");
    // The gradient is the mask times the upstream gradient.
    let upstream = randn(&[b, n, d], 81);
    let grads = (&y * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
    let want = (&upstream * &y).unwrap(); // x is all ones, so y is the mask itself
    assert!(max_rel_diff(grads.get(&x).unwrap(), &want) < 1e-6);
    // The same stream position gives the same samples dropped.
    rng.set_state(start);
    assert_eq!(drop_path.forward_t(&x, true).unwrap().reshape((b, n * d)).unwrap().to_vec2::<f32>().unwrap(), rows);
    assert!(vit_blocks::DropPath::new(1.0, rng).is_err());
}

/// A dense-layer map that never fuses: the inference forms one layer at a time.
struct Apart<'a>(&'a dyn WeightMap);

impl WeightMap for Apart<'_> {
    fn tensor(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        self.0.tensor(t)
    }

    fn linear(&self, layer: &Linear) -> candle_core::Result<Linear> {
        self.0.linear(layer)
    }
}

#[test]
fn inference_forms_fuse_query_key_and_value_into_one_layer_with_the_same_values() {
    // value_dim unlike key_dim; without biases on the projections, and with.
    for qkv_bias in [true, false] {
        let store = SeededVarMap::new(90);
        let cfg = AttentionConfig { value_dim: Some(6), qkv_bias, ..AttentionConfig::new(16, 3, 8) };
        let mha =
            MultiHeadAttention::new(&cfg, SharedRng::new(91), store.var_builder(DType::F32, &Device::Cpu)).unwrap();
        let x = randn(&[2, 9, 16], 92);
        let reference = mha.detached().forward(&x).unwrap();
        let (_, reference_weights) = mha.forward_with_weights(&x, false).unwrap();
        let maps: [(&str, &dyn WeightMap, f32); 3] =
            [("f32", &TransposeF32, 1e-6), ("bf16", &PackBf16, 2e-2), ("int8", &QuantizeInt8, 5e-2)];
        for (name, map, tolerance) in maps {
            let fused = mha.map_weights(map).unwrap();
            let apart = mha.map_weights(&Apart(map)).unwrap();
            assert!(fused.is_qkv_fused() && !apart.is_qkv_fused(), "{name}");
            let (y_fused, y_apart) = (fused.forward(&x).unwrap(), apart.forward(&x).unwrap());
            // One product of the three weights side by side: the three products' values.
            assert!(max_rel_diff(&y_fused, &y_apart) < 1e-6, "{name}: {}", max_rel_diff(&y_fused, &y_apart));
            assert!(max_rel_diff(&y_fused, &reference) < tolerance, "{name}: {}", max_rel_diff(&y_fused, &reference));
            // The attention maps read the fused layer's column blocks.
            let (_, weights) = fused.forward_with_weights(&x, false).unwrap();
            assert!(max_rel_diff(&weights, &reference_weights) < tolerance, "{name}: attention weights");
            // The parameters are the trained ones, by name, whatever the form.
            let (got, want) = (fused.parameters(), mha.parameters());
            assert_eq!(got.len(), want.len(), "{name}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!((&g.name, g.tensor.dims()), (&w.name, w.tensor.dims()), "{name}");
                assert_eq!(max_rel_diff(&g.tensor, &w.tensor), 0.0, "{name}: {}", g.name);
            }
            // A second map (a detach) keeps the fused layer.
            assert!(fused.detached().is_qkv_fused(), "{name}");
        }
    }
}

#[test]
fn layers_side_by_side_stack_weights_and_biases_and_cut_back_out() {
    let store = SeededVarMap::new(95);
    let vb = store.var_builder(DType::F32, &Device::Cpu);
    let with_bias = Linear::new(5, 3, true, vb.pp("a")).unwrap();
    let without = Linear::new(5, 2, false, vb.pp("b")).unwrap();
    let both = Linear::concat("ab", &[&with_bias, &without]).unwrap();
    let x = randn(&[4, 5], 96);
    let y = both.forward(&x).unwrap();
    let want = Tensor::cat(&[with_bias.forward(&x).unwrap(), without.forward(&x).unwrap()], 1).unwrap();
    assert!(max_rel_diff(&y, &want) < 1e-6);
    let bias = both.bias().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(&bias[3..], &[0.0, 0.0], "a layer without a bias adds zeros");
    let parts = both.split_outputs(&[&with_bias, &without]).unwrap();
    assert_eq!((parts[0].prefix(), parts[1].prefix()), ("a", "b"));
    assert!(parts[1].bias().is_none());
    assert_eq!(max_rel_diff(&parts[0].weight(), &with_bias.weight()), 0.0);
    let narrower = Linear::new(4, 2, true, vb.pp("c")).unwrap();
    let err = Linear::concat("ac", &[&with_bias, &narrower]).unwrap_err().to_string();
    assert!(err.contains("c takes 4 inputs and a takes 5"), "{err}");
}
