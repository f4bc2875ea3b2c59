//! One transformer block, forward and forward + backward, at the two reference presets'
//! shapes: the Keras example (batch 256, 144 tokens, width 64, 4 heads of key_dim 64, MLP
//! [128, 64]) and MNIST (batch 128, 49 tokens, width 64, 4 heads of 16).

use candle_core::{DType, Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vit_blocks::{AttentionConfig, BlockConfig, MlpConfig, SeededVarMap, SharedRng, TransformerBlock};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("transformer_block");
    group.sample_size(10);
    for (name, batch, tokens, heads, key_dim) in [("keras", 256, 144, 4, 64), ("mnist", 128, 49, 4, 16)] {
        let store = SeededVarMap::new(0);
        let cfg = BlockConfig {
            attention: AttentionConfig { dropout: 0.1, ..AttentionConfig::new(64, heads, key_dim) },
            mlp: MlpConfig { dim: 64, hidden_units: vec![128, 64], dropout: 0.1, activation_on_last: true },
            layer_norm_eps: 1e-6,
            drop_path: 0.0,
            layer_scale: None,
        };
        let block =
            TransformerBlock::new(&cfg, SharedRng::new(0), store.var_builder(DType::F32, &Device::Cpu)).unwrap();
        let x = Tensor::randn(0f32, 1., (batch, tokens, 64), &Device::Cpu).unwrap();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("forward", name), &x, |b, x| {
            b.iter(|| block.forward_t(x, false).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("forward_backward", name), &x, |b, x| {
            b.iter(|| block.forward_t(x, true).unwrap().sqr().unwrap().mean_all().unwrap().backward().unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
