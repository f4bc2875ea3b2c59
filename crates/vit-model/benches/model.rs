//! Whole-model inference at the two reference presets: the Keras example (`keras_cifar100`,
//! 72x72x3) and `mnist` (28x28x1). Training throughput against PyTorch and Keras is measured by
//! `cargo xtask bench`, which runs the reference scripts in the same run.

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vit_model::{Vit, VitConfig};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("vit_forward");
    group.sample_size(10);
    for (name, cfg, batch) in [("keras_cifar100", VitConfig::keras_cifar100(), 32), ("mnist", VitConfig::mnist(), 128)]
    {
        let (model, _store) = Vit::init(&cfg, 0, &Device::Cpu).unwrap();
        let [h, w] = cfg.image_size;
        let images = Tensor::rand(0f32, 1., (batch, h, w, cfg.channels), &Device::Cpu).unwrap();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("inference", name), &images, |b, x| {
            b.iter(|| model.forward(x, false).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
