//! LoRA-XS in your own burn model: a small two-block MLP classifier (not a
//! transformer) adapted, trained a few steps, saved and reloaded.
//!
//! ```text
//! cargo run -p loraxs --example own_model
//! ```
//!
//! What a model needs: its linear layers held as `AdaptedLinear`, and one
//! `AdapterHost::linears_mut` that visits them with dotted names. Targets
//! then select layers by name suffix, as PEFT does.

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use loraxs::interop::{linear_from_torch, tensor_values};
use loraxs::{AdaptedLinear, AdapterConfig, AdapterHost, SaveOptions, TargetModules, inject, load_adapter};

const WIDTH: usize = 32;
const CLASSES: usize = 3;

/// Two residual blocks and a classifier: the "pretrained" model.
#[derive(Module, Debug)]
struct Mlp<B: Backend> {
    blocks: Vec<Block<B>>,
    classifier: AdaptedLinear<B>,
}

#[derive(Module, Debug)]
struct Block<B: Backend> {
    up: AdaptedLinear<B>,
    down: AdaptedLinear<B>,
}

impl<B: Backend> Mlp<B> {
    /// Deterministic "pretrained" weights.
    fn pretrained(device: &B::Device) -> Self {
        let mut seed = 0usize;
        let mut linear = |d_out: usize, d_in: usize| -> AdaptedLinear<B> {
            seed += 1;
            let w = (0..d_out * d_in)
                .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 1000.0 - 0.5)
                .map(|v| v / (d_in as f32).sqrt())
                .collect();
            linear_from_torch(w, d_out, d_in, Some(vec![0.0; d_out]), device).into()
        };
        let blocks = (0..2)
            .map(|_| Block {
                up: linear(2 * WIDTH, WIDTH),
                down: linear(WIDTH, 2 * WIDTH),
            })
            .collect();
        Self {
            blocks,
            classifier: linear(CLASSES, WIDTH),
        }
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let mut h = x;
        for block in &self.blocks {
            h = h.clone() + block.down.forward(block.up.forward(h).tanh());
        }
        self.classifier.forward(h)
    }
}

impl<B: Backend> AdapterHost<B> for Mlp<B> {
    fn linears_mut(&mut self, visit: &mut dyn FnMut(&str, &mut AdaptedLinear<B>)) {
        for (i, block) in self.blocks.iter_mut().enumerate() {
            visit(&format!("blocks.{i}.up"), &mut block.up);
            visit(&format!("blocks.{i}.down"), &mut block.down);
        }
        visit("classifier", &mut self.classifier);
    }
}

/// A toy task: the class is which third of the input carries the signal.
fn batch<B: Backend>(device: &B::Device) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    let n = 24;
    let mut x = vec![0.0f32; n * WIDTH];
    let mut y = Vec::with_capacity(n);
    for row in 0..n {
        let class = row % CLASSES;
        for col in 0..WIDTH {
            let in_third = col * CLASSES / WIDTH == class;
            x[row * WIDTH + col] = if in_third {
                1.0
            } else {
                0.1 * ((row + col) % 5) as f32 - 0.2
            };
        }
        y.push(class as i64);
    }
    (
        Tensor::from_data(TensorData::new(x, [n, WIDTH]), device),
        Tensor::from_data(TensorData::new(y, [n]), device),
    )
}

type B = NdArray<f32>;
type AB = Autodiff<B>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Default::default();
    // LoRA-XS r=4 on the blocks' projections; the classifier stays frozen.
    let config = AdapterConfig::lora_xs(4).with_targets(TargetModules::new(["up", "down"]));
    let mut adapted = inject(Mlp::<AB>::pretrained(&device), &config)?;
    let count = adapted.param_count();
    println!(
        "adapted {} modules: {} trainable values (r² each), {} frozen",
        adapted.report.modules.len(),
        count.adapter,
        count.frozen
    );
    assert_eq!(count.adapter, 4 * 4 * 4);

    let (x, y) = batch::<AB>(&device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut optim = AdamConfig::new().init::<AB, Mlp<AB>>();
    let mut losses = Vec::new();
    for _ in 0..30 {
        let loss = loss_fn.forward(adapted.model.forward(x.clone()), y.clone());
        losses.push(tensor_values(loss.clone())[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &adapted.model);
        assert_eq!(grads.len(), 4, "only the four R matrices train");
        adapted.model = optim.step(5e-2, adapted.model, grads);
    }
    println!(
        "loss {:.4} → {:.4} in 30 steps",
        losses[0],
        losses[losses.len() - 1]
    );
    assert!(
        losses[losses.len() - 1] < losses[0],
        "training must lower the loss"
    );

    // Save only R (and the config and a fingerprint of the base weights).
    let dir = std::env::temp_dir().join(format!("loraxs-own-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("mlp.safetensors");
    let trained = adapted.map(|m| m.valid());
    let file = trained.save(&path, SaveOptions::default())?;
    println!(
        "saved {} values to {} ({} bytes)",
        file.stored_values(),
        path.display(),
        std::fs::metadata(&path)?.len()
    );

    // Load into a fresh copy of the pretrained model (inference backend).
    let (loaded, _) = load_adapter(Mlp::<B>::pretrained(&device), &path)?;
    let (x, _) = batch::<B>(&device);
    let before = tensor_values(trained.model.forward(x.clone()));
    let after = tensor_values(loaded.model.forward(x.clone()));
    assert_eq!(before, after, "a reloaded adapter reproduces the trained outputs");
    // Merged for serving: the plain model, within float rounding.
    let merged = tensor_values(loaded.merge_and_unload().forward(x));
    let diff = merged
        .iter()
        .zip(&before)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("reloaded: identical outputs; merged: max |Δ| {diff:.2e}");
    assert!(diff < 1e-4);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// `cargo test` runs the example end to end.
    #[test]
    fn the_example_runs() {
        super::main().unwrap();
    }
}
