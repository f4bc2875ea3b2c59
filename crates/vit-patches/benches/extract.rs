//! Throughput of patch extraction at the shapes of the two reference models:
//! the Keras example (`[256, 72, 72, 3]`, patch 6) and MNIST (`[128, 28, 28, 1]`, patch 4),
//! through the reshape/permute fast path and the general gather path.

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vit_patches::{PatchSpec, extract_patches, extract_patches_gather};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("extract_patches");
    for (shape, patch) in [((256, 72, 72, 3), 6), ((128, 28, 28, 1), 4)] {
        let images = Tensor::randn(0f32, 1., shape, &Device::Cpu).unwrap();
        let spec = PatchSpec::square(patch);
        let label = format!("{}x{}x{}x{}/p{}", shape.0, shape.1, shape.2, shape.3, patch);
        group.throughput(Throughput::Elements(shape.0 as u64));
        group.bench_with_input(BenchmarkId::new("fast", &label), &images, |b, x| {
            b.iter(|| extract_patches(x, &spec).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("gather", &label), &images, |b, x| {
            b.iter(|| extract_patches_gather(x, &spec).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
