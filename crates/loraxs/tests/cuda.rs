//! The layers on the CUDA backend agree with ndarray. Built only with
//! `--features cuda`; the tests need an NVIDIA GPU and are ignored unless
//! asked for: `cargo test -p loraxs --features cuda --test cuda -- --ignored`.
#![cfg(feature = "cuda")]

mod common;

use burn::backend::{Autodiff, Cuda, NdArray};
use common::{Toy, input, relative_diff};
use loraxs::interop::{linear_from_torch, tensor_values, trainable};
use loraxs::{AdaptedLinear, AdapterConfig, AdapterHost, inject, merge};

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn lora_xs_on_cuda_matches_ndarray() {
    let cuda = Default::default();
    let cpu = Default::default();
    let config = AdapterConfig::lora_xs(4).with_r_init(loraxs::RInit::Gaussian { std: 0.1 });
    let on_gpu = inject(Toy::<Cuda>::new(1, &cuda), &config).unwrap().model;
    let on_cpu = inject(Toy::<NdArray<f32>>::new(1, &cpu), &config).unwrap().model;
    let y_gpu = tensor_values(on_gpu.forward(input(&cuda)));
    let y_cpu = tensor_values(on_cpu.forward(input(&cpu)));
    let d = relative_diff(&y_gpu, &y_cpu);
    eprintln!("cuda vs ndarray: relative difference {d:.2e}");
    assert!(d < 1e-4, "{d}");
    let merged = merge(on_gpu);
    let dm = relative_diff(&tensor_values(merged.forward(input(&cuda))), &y_gpu);
    eprintln!("cuda merged vs unmerged: relative difference {dm:.2e}");
    assert!(dm < 1e-5, "{dm}");
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gradient_reaches_r_only_on_cuda() {
    let device = Default::default();
    let model = inject(Toy::<Autodiff<Cuda>>::new(1, &device), &AdapterConfig::lora_xs(4))
        .unwrap()
        .model;
    let grads = model.forward(input(&device)).powf_scalar(2.0).mean().backward();
    let mut r_grads = 0;
    model.linears(&mut |name, layer| {
        assert!(layer.base().weight.val().grad(&grads).is_none(), "{name}");
        if let AdaptedLinear::LoraXs(l) = layer {
            assert!(
                l.a.val().grad(&grads).is_none() && l.b.val().grad(&grads).is_none(),
                "{name}"
            );
            assert!(l.r.val().grad(&grads).is_some(), "{name}");
            r_grads += 1;
        }
    });
    assert_eq!(r_grads, 8);
}
