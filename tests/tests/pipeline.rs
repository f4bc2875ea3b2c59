//! The crates composed by hand give the same logits as `Vit`, and a tiny ViT learns.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Optimizer;
use vit_blocks::{SharedRng, TransformerBlock};
use vit_encoder::PatchEncoder;
use vit_model::{HeadKind, Vit, VitConfig};
use vit_patches::extract_patch_tokens;

fn tiny() -> VitConfig {
    VitConfig {
        image_size: [8, 8],
        channels: 1,
        patch_size: 4,
        projection_dim: 16,
        num_heads: 2,
        key_dim: 8,
        num_layers: 2,
        mlp_units: vec![32, 16],
        head: HeadKind::MeanPool,
        head_units: vec![],
        head_dropout: 0.0,
        dropout: 0.0,
        num_classes: 2,
        ..VitConfig::mnist()
    }
}

#[test]
fn crates_composed_by_hand_equal_the_model() {
    let cfg = tiny();
    let (model, store) = Vit::init(&cfg, 7, &Device::Cpu).unwrap();
    let vb = store.var_builder(DType::F32, &Device::Cpu); // same store: same parameters
    let encoder = PatchEncoder::new(&cfg.encoder(), vb.pp("patch_encoder")).unwrap();
    let blocks: Vec<_> = (0..cfg.num_layers)
        .map(|i| TransformerBlock::new(&cfg.block(), SharedRng::new(0), vb.pp(format!("blocks.{i}"))).unwrap())
        .collect();
    let norm = vit_blocks::LayerNorm::new(16, cfg.layer_norm_eps, vb.pp("norm")).unwrap();
    let classifier = vit_blocks::Linear::new(16, 2, true, vb.pp("head.classifier")).unwrap();

    let images = vit_rng::tensors::uniform(0f32, 1., (3, 8, 8, 1), 1, &Device::Cpu).unwrap();
    let mut x = encoder.forward(&extract_patch_tokens(&images, &cfg.patch_spec()).unwrap()).unwrap();
    for block in &blocks {
        x = block.forward(&x).unwrap();
    }
    let by_hand = classifier.forward(&norm.forward(&x).unwrap().mean(1).unwrap()).unwrap();
    let logits = model.forward(&images, false).unwrap();
    assert_eq!(by_hand.to_vec2::<f32>().unwrap(), logits.to_vec2::<f32>().unwrap());
}

#[test]
fn a_tiny_vit_learns_which_half_of_the_image_is_lit() {
    let cfg = tiny();
    let (model, store) = Vit::init(&cfg, 8, &Device::Cpu).unwrap();
    // 16 images: class 0 has its top half brighter, class 1 its bottom half, plus noise.
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for i in 0..16u32 {
        let class = i % 2;
        for row in 0..8 {
            for col in 0..8 {
                let lit = (row < 4) == (class == 0);
                let noise = ((i * 64 + row * 8 + col).wrapping_mul(2_654_435_761) % 1000) as f32 / 4000.0;
                pixels.push(if lit { 0.8 } else { 0.2 } + noise);
            }
        }
        labels.push(class);
    }
    let images = Tensor::from_vec(pixels, (16, 8, 8, 1), &Device::Cpu).unwrap();
    let labels = Tensor::from_vec(labels, 16, &Device::Cpu).unwrap();
    let mut opt = candle_nn::AdamW::new_lr(store.varmap().all_vars(), 3e-3).unwrap();
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..60 {
        let loss = candle_nn::loss::cross_entropy(&model.forward(&images, true).unwrap(), &labels).unwrap();
        last = loss.to_scalar::<f32>().unwrap();
        first.get_or_insert(last);
        opt.backward_step(&loss).unwrap();
    }
    let predictions = model.forward(&images, false).unwrap().argmax(1).unwrap();
    let correct = predictions.eq(&labels).unwrap().to_dtype(DType::F32).unwrap().sum_all().unwrap();
    assert_eq!(correct.to_scalar::<f32>().unwrap(), 16.0, "training accuracy must reach 100%");
    assert!(last < first.unwrap() * 0.2, "loss fell only from {first:?} to {last}");
}
