use candle_core::{DType, Device, Module, Tensor, Var};
use vit_blocks::SeededVarMap;
use vit_encoder::{Interpolation, PatchEncoder, PatchEncoderConfig, PositionEmbedding, resize_grid, sincos_2d};
use vit_patches::PatchSpec;

fn vec2(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

#[test]
fn output_is_projection_plus_position_and_class_token_comes_first() {
    let store = SeededVarMap::new(1);
    let cfg = PatchEncoderConfig { class_token: true, ..PatchEncoderConfig::new(PatchSpec::new(2, 2), 1, (2, 3), 8) };
    let enc = PatchEncoder::new(&cfg, store.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let names: Vec<(String, Vec<usize>)> = {
        let mut v: Vec<_> =
            store.varmap().data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect();
        v.sort();
        v
    };
    assert_eq!(
        names,
        [
            ("class_token".to_string(), vec![1, 1, 8]),
            ("position_embedding.weight".to_string(), vec![7, 8]),
            ("projection.bias".to_string(), vec![8]),
            ("projection.weight".to_string(), vec![8, 4]),
        ]
    );
    let patches = Tensor::zeros((2, 6, 4), DType::F32, &Device::Cpu).unwrap();
    let out = enc.forward(&patches).unwrap();
    assert_eq!(out.dims(), [2, 7, 8]);
    // Zero patches and zero bias: each token is its position row (plus the class token for row 0).
    let data = store.varmap().data().lock().unwrap();
    let pos = data["position_embedding.weight"].as_tensor().clone();
    let cls = data["class_token"].as_tensor().reshape((1, 8)).unwrap();
    let want =
        Tensor::cat(&[&(pos.narrow(0, 0, 1).unwrap() + cls).unwrap(), &pos.narrow(0, 1, 6).unwrap()], 0).unwrap();
    assert_eq!(vec2(&out.get(1).unwrap()), vec2(&want));
    let err = enc.forward(&Tensor::zeros((2, 5, 4), DType::F32, &Device::Cpu).unwrap()).unwrap_err();
    assert!(err.to_string().contains("expected 6 for a 2x3 grid"), "{err}");
}

#[test]
fn sincos_has_no_parameters_and_known_values() {
    let store = SeededVarMap::new(2);
    let cfg = PatchEncoderConfig {
        position: PositionEmbedding::SinCos2d,
        ..PatchEncoderConfig::new(PatchSpec::new(2, 2), 1, (3, 3), 8)
    };
    let enc = PatchEncoder::new(&cfg, store.var_builder(DType::F32, &Device::Cpu)).unwrap();
    assert!(!store.varmap().data().lock().unwrap().contains_key("position_embedding.weight"));
    let table = vec2(enc.position_table());
    // Position (row 0, col 0): sin 0 = 0, cos 0 = 1 in both halves.
    assert_eq!(table[0], [0., 0., 1., 1., 0., 0., 1., 1.]);
    // Row 1, col 2 at the lowest frequency 1, columns first as MAE and big_vision lay it out
    // (checked against timm's table by the parity test `timm_mean_pool_sincos`): sin(2) and
    // cos(2) of the column, then sin(1) and cos(1) of the row.
    let t = &table[5];
    assert!((t[0] - 2f32.sin()).abs() < 1e-6 && (t[2] - 2f32.cos()).abs() < 1e-6, "{t:?}");
    assert!((t[4] - 1f32.sin()).abs() < 1e-6 && (t[6] - 1f32.cos()).abs() < 1e-6, "{t:?}");
    assert!(sincos_2d(2, 2, 6, &Device::Cpu).is_err());
}

#[test]
fn resizing_to_the_same_grid_is_the_identity_and_keeps_the_class_token() {
    let table = vit_rng::tensors::normal(0f32, 1., (1 + 12, 5), 1, &Device::Cpu).unwrap();
    for interpolation in [Interpolation::Bilinear, Interpolation::Bicubic] {
        let same = resize_grid(&table, (3, 4), (3, 4), true, interpolation).unwrap();
        let diff = (same - &table).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6, "{interpolation:?}: {diff}");
        let larger = resize_grid(&table, (3, 4), (5, 7), true, interpolation).unwrap();
        assert_eq!(larger.dims(), [36, 5]);
        assert_eq!(vec2(&larger.narrow(0, 0, 1).unwrap()), vec2(&table.narrow(0, 0, 1).unwrap()));
    }
}

#[test]
fn resizing_matches_pytorch_interpolate() {
    // Expected values printed by torch 2.15's F.interpolate(..., align_corners=False), modes
    // bilinear and bicubic, on the same grids.
    let table = Tensor::new(&[[0f32], [1.], [2.], [3.]], &Device::Cpu).unwrap();
    let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let up = flat(resize_grid(&table, (1, 4), (1, 8), false, Interpolation::Bilinear).unwrap());
    assert_eq!(up, [0., 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.]);
    let down = flat(resize_grid(&table, (1, 4), (1, 2), false, Interpolation::Bilinear).unwrap());
    assert_eq!(down, [0.5, 2.5]);
    let close = |got: Vec<f32>, torch: &[f32]| {
        assert!(got.iter().zip(torch).all(|(a, b)| (a - b).abs() < 1e-5), "{got:?} vs torch {torch:?}");
    };
    let cubic = flat(resize_grid(&table, (1, 4), (1, 8), false, Interpolation::Bicubic).unwrap());
    close(cubic, &[-0.10546875, 0.19140625, 0.66796875, 1.296875, 1.703125, 2.3320312, 2.8085938, 3.1054688]);
    let cubic = flat(resize_grid(&table, (1, 4), (1, 3), false, Interpolation::Bicubic).unwrap());
    close(cubic, &[0.12615734, 1.5, 2.873843]);
    // A 2x3 grid to 3x5, bicubic, both axes at once.
    let grid = Tensor::new(&[[0f32], [1.], [5.], [2.], [-1.], [3.]], &Device::Cpu).unwrap();
    let cubic = flat(resize_grid(&grid, (2, 3), (3, 5), false, Interpolation::Bicubic).unwrap());
    #[rustfmt::skip]
    close(cubic, &[
        -0.30294448, 0.06111231, 1.1736114, 3.718612, 5.557613,
        1.0960002, 0.32400054, 0.0, 2.3760006, 4.3840003,
        2.494944, 0.58688873, -1.1736108, 1.0333905, 3.21039,
    ]);
}

#[test]
fn gradients_reach_every_parameter_through_a_resized_grid() {
    let store = SeededVarMap::new(3);
    let cfg = PatchEncoderConfig { class_token: true, ..PatchEncoderConfig::new(PatchSpec::new(1, 3), 1, (2, 2), 4) };
    let enc = PatchEncoder::new(&cfg, store.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let enc = enc.with_grid((3, 3), Interpolation::Bilinear).unwrap();
    let patches = Var::from_tensor(&vit_rng::tensors::normal(0f32, 1., (2, 9, 3), 2, &Device::Cpu).unwrap()).unwrap();
    let grads = enc.forward(&patches).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
    for (name, var) in store.varmap().data().lock().unwrap().iter() {
        let g = grads.get(var).unwrap_or_else(|| panic!("{name}: no gradient"));
        assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "{name}: zero gradient");
    }
}
