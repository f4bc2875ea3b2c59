//! AdamW, the schedule and the loss against their definitions.

use candle_core::{Device, Tensor, Var};
use vit_train::LossScaler;
use vit_train::metrics::{Tally, cross_entropy, top_k};
use vit_train::optim::{AdamW, AdamWConfig, Param};
use vit_train::schedule::Schedule;

#[test]
fn adamw_matches_pytorch_step_for_step() {
    check_against_pytorch(AdamW::new);
}

#[test]
fn the_tensor_op_path_that_gpus_take_matches_pytorch_too() {
    check_against_pytorch(AdamW::new_with_tensor_ops);
}

type Build = fn(&[Param], AdamWConfig) -> candle_core::Result<AdamW>;

fn param(name: &str, var: &Var, weight_decay: bool) -> Param {
    Param { name: name.into(), var: var.clone(), weight_decay, lr_scale: 1.0 }
}

fn check_against_pytorch(build: Build) {
    // torch.optim.AdamW(lr=0.1, eps=1e-7; weight_decay 0.01 on `w`, 0 on `w.bias`), three steps
    // with these gradients; the expected values were printed by torch 2.15.
    let w = Var::new(&[0.5f32, -1.0, 2.0], &Device::Cpu).unwrap();
    let b = Var::new(&[0.1f32, 0.2], &Device::Cpu).unwrap();
    let vars = [param("w", &w, true), param("w.bias", &b, false)];
    let mut opt = build(&vars, AdamWConfig { weight_decay: 0.01, eps: 1e-7, ..AdamWConfig::default() }).unwrap();
    let grads = [([0.3f32, -0.2, 1.0], [0.5f32, -0.5]), ([0.1, 0.4, -2.0], [0.0, 1.0]), ([-0.3, 0.0, 0.5], [0.2, 0.2])];
    for (gw, gb) in grads {
        // A loss whose gradients are exactly gw and gb: sum(w * gw) + sum(b * gb).
        let loss = (w.as_tensor() * Tensor::new(&gw, &Device::Cpu).unwrap()).unwrap().sum_all().unwrap();
        let loss =
            (loss + (b.as_tensor() * Tensor::new(&gb, &Device::Cpu).unwrap()).unwrap().sum_all().unwrap()).unwrap();
        opt.step(&loss.backward().unwrap(), 0.1, 1.0).unwrap();
    }
    let close = |got: Vec<f32>, want: &[f32]| {
        assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{got:?} vs torch {want:?}");
    };
    close(w.to_vec1().unwrap(), &[0.3068435, -0.9620766, 1.9444487]);
    close(b.to_vec1().unwrap(), &[-0.13883562, 0.22427702]);
    assert_eq!(opt.step_count(), 3);
}

#[test]
fn schedule_warms_up_linearly_then_follows_a_cosine() {
    let s = Schedule { peak: 1.0, min_lr: 0.1, warmup: 10, total: 110 };
    assert!((s.lr(0) - 0.1).abs() < 1e-12);
    assert!((s.lr(9) - 1.0).abs() < 1e-12);
    assert!((s.lr(10) - 1.0).abs() < 1e-12);
    assert!((s.lr(60) - 0.55).abs() < 1e-12, "half way: (1 + 0.1) / 2");
    assert!((s.lr(110) - 0.1).abs() < 1e-12);
    assert!((s.lr(500) - 0.1).abs() < 1e-12);
}

#[test]
fn label_smoothing_and_top_k_follow_their_definitions() {
    let logits = Tensor::new(&[[2.0f32, 0.0, -1.0], [0.5, 0.5, 3.0]], &Device::Cpu).unwrap();
    let labels = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
    let log_p: Vec<Vec<f32>> = candle_nn::ops::log_softmax(&logits, 1).unwrap().to_vec2().unwrap();
    let nll = -(log_p[0][0] + log_p[1][1]) / 2.0;
    let uniform = -(log_p[0].iter().sum::<f32>() + log_p[1].iter().sum::<f32>()) / 6.0;
    let plain = cross_entropy(&logits, &labels, 0.0).unwrap().to_scalar::<f32>().unwrap();
    let smooth = cross_entropy(&logits, &labels, 0.1).unwrap().to_scalar::<f32>().unwrap();
    assert!((plain - nll).abs() < 1e-6);
    assert!((smooth - (0.9 * nll + 0.1 * uniform)).abs() < 1e-6);

    let mut tally = Tally::new(3);
    tally.add(&logits.to_vec2().unwrap(), &[0, 1], 0.5);
    assert_eq!((tally.top1, tally.count), (1, 2));
    assert_eq!(tally.confusion, vec![vec![1, 0, 0], vec![0, 0, 1], vec![0, 0, 0]]);
    assert_eq!(top_k(&[0.1, 0.7, 0.2], 2), vec![(1, 0.7), (2, 0.2)]);
}

#[test]
fn optimizer_state_moves_between_the_host_and_the_tensor_paths() {
    let make = || Var::new(&[0.5f32, -1.0, 2.0, 0.25], &Device::Cpu).unwrap();
    let (a, b) = (make(), make());
    let cfg = AdamWConfig::default();
    let mut host = AdamW::new(&[param("w", &a, true)], cfg).unwrap();
    let mut tensor = AdamW::new_with_tensor_ops(&[param("w", &b, true)], cfg).unwrap();
    let g = Tensor::new(&[0.3f32, -0.2, 1.0, 0.0], &Device::Cpu).unwrap();
    let loss = |w: &Var| (w.as_tensor() * &g).unwrap().sum_all().unwrap().backward().unwrap();
    host.step(&loss(&a), 0.1, 1.0).unwrap();
    // The host optimizer's state, loaded into the tensor-path optimizer, continues identically.
    tensor.load_state(&host.state(&Device::Cpu).unwrap().into_iter().collect()).unwrap();
    b.set(a.as_tensor()).unwrap();
    host.step(&loss(&a), 0.1, 1.0).unwrap();
    tensor.step(&loss(&b), 0.1, 1.0).unwrap();
    assert_eq!(tensor.step_count(), 2);
    let (x, y) = (a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
    assert!(x.iter().zip(&y).all(|(p, q)| (p - q).abs() < 1e-6), "{x:?} vs {y:?}");
}

#[test]
fn the_f16_loss_scaler_backs_off_on_overflow_and_grows_after_good_steps() {
    let mut scaler = LossScaler { growth_interval: 3, ..LossScaler::default() };
    assert_eq!(scaler.scale, 65536.0);
    assert!(!scaler.update(f64::INFINITY), "an overflowed step must be skipped");
    assert_eq!(scaler.scale, 32768.0);
    assert!(!scaler.update(f64::NAN));
    assert_eq!(scaler.scale, 16384.0);
    assert!(scaler.update(10.0) && scaler.update(10.0));
    assert_eq!(scaler.scale, 16384.0);
    assert!(scaler.update(10.0));
    assert_eq!((scaler.scale, scaler.good_steps), (32768.0, 0), "three good steps double it");
    // Never below 1, and a disabled scaler takes every step unscaled.
    let mut tiny = LossScaler { scale: 1.0, ..LossScaler::default() };
    tiny.update(f64::INFINITY);
    assert_eq!(tiny.scale, 1.0);
    let mut off = LossScaler::disabled();
    assert!(!off.is_enabled() && off.update(f64::INFINITY) && off.scale == 1.0);
}

#[test]
fn accuracy_counts_no_nan_and_no_tie_as_a_hit_and_an_empty_set_is_nan() {
    let mut tally = Tally::new(3);
    // All NaN (a model whose weights are NaN), one NaN beside the label, all equal, +inf.
    let rows = vec![
        vec![f32::NAN; 3],
        vec![f32::NAN, 5.0, 0.0],
        vec![1.0, 1.0, 1.0],
        vec![1.0, 1.0, 1.0],
        vec![0.0, f32::INFINITY, 0.0],
        vec![0.0, 2.0, 1.0],
    ];
    tally.add(&rows, &[0, 1, 1, 0, 1, 1], 0.0);
    assert_eq!(tally.count, 6);
    assert_eq!(tally.non_finite, 3, "{tally:?}");
    // A tie goes to the first index, as argmax does: label 0 of a flat row is a hit, label 1 not.
    assert_eq!(tally.top1, 2, "{tally:?}");
    let diagonal: usize = (0..3).map(|i| tally.confusion[i][i]).sum();
    assert_eq!(diagonal, tally.top1, "top-1 and the confusion matrix's argmax agree");
    assert_eq!(tally.confusion.iter().flatten().sum::<usize>(), 3, "non-finite rows stay out of the matrix");
    assert_eq!(tally.top5, 3, "a tie ranks below the first index, but within 5 of 3 classes");
    let empty = Tally::new(3);
    assert!(empty.top1().is_nan() && empty.top5().is_nan() && empty.loss().is_nan());
    assert!(empty.per_class().iter().all(|a| a.is_nan()));
}

#[test]
fn a_bad_optimizer_state_is_an_error_and_leaves_the_optimizer_as_it_was() {
    let w = Var::new(&[0.5f32, -1.0], &Device::Cpu).unwrap();
    let mut opt = AdamW::new(&[param("w", &w, true)], AdamWConfig::default()).unwrap();
    let good = opt.state(&Device::Cpu).unwrap();
    let with = |key: &str, t: Tensor| {
        let mut s: std::collections::HashMap<String, Tensor> = good.clone().into_iter().collect();
        s.insert(key.into(), t);
        s
    };
    let f32s = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
    let f64s = |v: &[f64]| Tensor::new(v, &Device::Cpu).unwrap();
    for (state, expected) in [
        (with("step", f64s(&[])), "`step`"),
        (with("step", f64s(&[-1.0])), "`step`"),
        (with("step", f64s(&[1.5])), "`step`"),
        (with("v.w", f32s(&[1.0, -2.0])), "`v.w` holds -2"),
        (with("m.w", f32s(&[f32::NAN, 0.0])), "`m.w` holds NaN"),
        (with("m.w", f32s(&[1.0])), "has 1 values, expected 2"),
        (with("m.other", f32s(&[1.0])), "`m.other`"),
    ] {
        let err = opt.load_state(&state).unwrap_err();
        assert!(err.contains(expected), "{expected}: {err}");
        assert_eq!(opt.step_count(), 0);
    }
    opt.load_state(&good.into_iter().collect()).unwrap();
}

#[test]
fn freezing_and_layer_wise_decay_give_the_parameters_and_rates_they_claim() {
    use vit_train::optim::{FineTuning, select_trainable};
    let names = [
        "patch_encoder.projection.weight",
        "blocks.0.norm1.weight",
        "blocks.1.mlp.layers.0.weight",
        "norm.weight",
        "head.classifier.weight",
    ];
    let params =
        || -> Vec<Param> { names.iter().map(|n| param(n, &Var::new(&[0f32], &Device::Cpu).unwrap(), true)).collect() };
    let rates = |ps: Vec<Param>| -> Vec<(String, f64)> { ps.into_iter().map(|p| (p.name, p.lr_scale)).collect() };
    // Two blocks, decay 0.5: the patch encoder is layer 0, block i layer i + 1, the rest layer 3.
    let tuning = |t: FineTuning| select_trainable(params(), 2, &t);
    let decayed = rates(tuning(FineTuning { layer_decay: Some(0.5), ..FineTuning::default() }));
    let want: Vec<(String, f64)> = names.iter().map(|n| n.to_string()).zip([0.125, 0.25, 0.5, 1.0, 1.0]).collect();
    assert_eq!(decayed, want);
    // A lower backbone rate multiplies everything but the head, on top of the decay.
    let both =
        rates(tuning(FineTuning { layer_decay: Some(0.5), backbone_lr_scale: Some(0.1), ..FineTuning::default() }));
    let want: Vec<f64> = vec![0.0125, 0.025, 0.05, 0.1, 1.0];
    for ((name, got), want) in both.iter().zip(want) {
        assert!((got - want).abs() < 1e-12, "{name}: {got} vs {want}");
    }
    let probe = rates(tuning(FineTuning { freeze_backbone: true, ..FineTuning::default() }));
    assert_eq!(probe, [("head.classifier.weight".to_string(), 1.0)]);
    let first_frozen: Vec<String> =
        tuning(FineTuning { frozen_blocks: 1, ..FineTuning::default() }).into_iter().map(|p| p.name).collect();
    assert_eq!(first_frozen, ["blocks.1.mlp.layers.0.weight", "norm.weight", "head.classifier.weight"]);
}
