//! Adapter layers at 4096 tokens × 768 features, r = 16: forward+backward
//! of LoRA-XS, LoRA and a trainable plain linear layer (full fine-tuning),
//! the inference forward with the adapter merged and unmerged, and the
//! merge itself, on every CPU backend compiled in.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::{Tensor, backend::Backend};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use loraxs::interop::set_linear_trainable;
use loraxs::{AdapterConfig, AdapterLayer, LoraLinear, LoraXsLinear};
use loraxs_benches::frozen_linear;

const TOKENS: usize = 4096;
const DIM: usize = 768;
const RANK: usize = 16;

fn input<B: Backend>(device: &B::Device) -> Tensor<B, 2> {
    let x = loraxs_benches::weight(TOKENS, DIM, 3);
    Tensor::from_data(burn::tensor::TensorData::new(x, [TOKENS, DIM]), device)
}

/// Forward, mean loss, backward: one training step without the optimiser.
fn step<B: burn::tensor::backend::AutodiffBackend>(
    forward: impl Fn(Tensor<B, 2>) -> Tensor<B, 2>,
    x: &Tensor<B, 2>,
) {
    let loss = forward(x.clone()).mean();
    let _grads = loss.backward();
}

fn train_backend<B: burn::tensor::backend::AutodiffBackend>(c: &mut Criterion, backend: &str) {
    let device = B::Device::default();
    let mut group = c.benchmark_group(format!("train_step_{TOKENS}x{DIM}_r{RANK}"));
    group.sample_size(10);
    // As inside a network: the gradient must also flow back to the input.
    let x = input::<B>(&device).require_grad();

    let xs = LoraXsLinear::from_linear(
        frozen_linear::<B>(DIM, DIM, 1, &device),
        &AdapterConfig::lora_xs(RANK),
        "m",
    )
    .unwrap()
    .0;
    group.bench_function(BenchmarkId::new("lora_xs", backend), |b| {
        b.iter(|| step(|x| xs.forward(x), &x))
    });

    let lora = LoraLinear::from_linear(
        frozen_linear::<B>(DIM, DIM, 1, &device),
        &AdapterConfig::lora(RANK),
        "m",
    )
    .unwrap()
    .0;
    group.bench_function(BenchmarkId::new("lora", backend), |b| {
        b.iter(|| step(|x| lora.forward(x), &x))
    });

    let full = set_linear_trainable(frozen_linear::<B>(DIM, DIM, 1, &device), true);
    group.bench_function(BenchmarkId::new("full", backend), |b| {
        b.iter(|| step(|x| full.forward(x), &x))
    });
    group.finish();
}

fn infer_backend<B: Backend>(c: &mut Criterion, backend: &str) {
    let device = B::Device::default();
    let mut group = c.benchmark_group(format!("inference_{TOKENS}x{DIM}_r{RANK}"));
    group.sample_size(10);
    let x = input::<B>(&device);
    let base = frozen_linear::<B>(DIM, DIM, 1, &device);
    let xs = LoraXsLinear::from_linear(base.clone(), &AdapterConfig::lora_xs(RANK), "m")
        .unwrap()
        .0;
    let merged = xs.clone().merge();
    let sync = |t: Tensor<B, 2>| t.into_data();
    group.bench_function(BenchmarkId::new("base", backend), |b| {
        b.iter(|| sync(base.forward(x.clone())))
    });
    group.bench_function(BenchmarkId::new("lora_xs_unmerged", backend), |b| {
        b.iter(|| sync(xs.forward(x.clone())))
    });
    group.bench_function(BenchmarkId::new("lora_xs_merged", backend), |b| {
        b.iter(|| sync(merged.forward(x.clone())))
    });
    group.bench_function(BenchmarkId::new("merge", backend), |b| {
        b.iter(|| sync(xs.clone().merge().base.weight.val()))
    });
    group.finish();
}

fn adapters(c: &mut Criterion) {
    train_backend::<Autodiff<NdArray<f32>>>(c, "ndarray");
    train_backend::<Autodiff<Flex>>(c, "flex");
    infer_backend::<NdArray<f32>>(c, "ndarray");
    infer_backend::<Flex>(c, "flex");
    #[cfg(feature = "cuda")]
    {
        train_backend::<Autodiff<burn::backend::Cuda>>(c, "cuda");
        infer_backend::<burn::backend::Cuda>(c, "cuda");
    }
}

criterion_group!(benches, adapters);
criterion_main!(benches);
