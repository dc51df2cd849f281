//! Tensor plumbing between burn and the layouts checkpoints use: frozen
//! and trainable parameters with stable ids, plain linear layers in
//! PyTorch layout (`out × in`), host-side values and transposes.
//!
//! Model code (loaders, tests, benchmarks) uses these; the adapter API
//! itself lives at the crate root.
//!
//! burn decides what trains through the `require_grad` flag of each
//! parameter on an autodiff backend: a frozen parameter gets no gradient, is
//! skipped by the optimiser and costs no backward matmul. Build training
//! modules directly on the autodiff backend so these flags hold.

use burn::module::{Param, ParamId};
use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData, backend::Backend};

/// A parameter that never receives a gradient.
pub fn frozen<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::initialized(ParamId::new(), tensor.detach().set_require_grad(false))
}

/// A parameter the optimiser updates.
pub fn trainable<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::initialized(ParamId::new(), tensor.detach().require_grad())
}

/// A trainable parameter whose id is derived from `key` (e.g.
/// `encoder.layer.0.attention.self.query.lora_xs.R`) instead of drawn at
/// random: optimiser state and checkpoints are keyed by parameter id, so
/// stable ids let a restarted run pick its optimiser state up again.
pub fn trainable_named<B: Backend, const D: usize>(tensor: Tensor<B, D>, key: &str) -> Param<Tensor<B, D>> {
    Param::initialized(ParamId::from(stable_id(key)), tensor.detach().require_grad())
}

/// FNV-1a of `key`: stable across runs, machines and Rust versions.
pub fn stable_id(key: &str) -> u64 {
    crate::init::fnv1a(key.bytes())
}

/// A whole linear layer made trainable with ids from `name`
/// (`name.weight`, `name.bias`).
pub fn linear_trainable_named<B: Backend>(linear: Linear<B>, name: &str) -> Linear<B> {
    Linear {
        weight: trainable_named(linear.weight.val(), &format!("{name}.weight")),
        bias: linear
            .bias
            .map(|b| trainable_named(b.val(), &format!("{name}.bias"))),
    }
}

/// Re-flags an existing parameter, keeping its id (optimiser state is keyed
/// by id).
pub fn set_trainable<B: Backend, const D: usize>(
    param: Param<Tensor<B, D>>,
    trainable: bool,
) -> Param<Tensor<B, D>> {
    let (id, tensor, _) = param.consume();
    let tensor = if trainable {
        tensor.detach().require_grad()
    } else {
        tensor.detach().set_require_grad(false)
    };
    Param::initialized(id, tensor)
}

/// Freezes or unfreezes a whole linear layer.
pub fn set_linear_trainable<B: Backend>(linear: Linear<B>, trainable: bool) -> Linear<B> {
    Linear {
        weight: set_trainable(linear.weight, trainable),
        bias: linear.bias.map(|b| set_trainable(b, trainable)),
    }
}

/// A frozen linear layer from a weight in PyTorch layout (`out × in`,
/// row-major) and an optional bias, as Hugging Face checkpoints store them.
pub fn linear_from_torch<B: Backend>(
    weight: Vec<f32>,
    d_out: usize,
    d_in: usize,
    bias: Option<Vec<f32>>,
    device: &B::Device,
) -> Linear<B> {
    assert_eq!(weight.len(), d_out * d_in, "weight must hold out × in values");
    // Transposed on the host so the tensor is contiguous in burn's layout: a
    // strided view would send every matmul down another kernel path (and
    // a reloaded copy would then round differently from the original).
    let w = tensor2(transpose(&weight, d_out, d_in), [d_in, d_out], device);
    Linear {
        weight: frozen(w),
        bias: bias.map(|b| {
            assert_eq!(b.len(), d_out, "bias must hold out values");
            frozen(Tensor::from_data(TensorData::new(b, [d_out]), device))
        }),
    }
}

/// `(d_in, d_out)` of a burn linear layer (weight stored `in × out`).
pub fn linear_dims<B: Backend>(linear: &Linear<B>) -> (usize, usize) {
    let [d_in, d_out] = linear.weight.dims();
    (d_in, d_out)
}

/// The weight of a linear layer in PyTorch layout (`out × in`, row-major).
pub fn torch_weight<B: Backend>(linear: &Linear<B>) -> Vec<f32> {
    // Read the contiguous burn layout and transpose on the host: reading a
    // transposed view element by element is ~10× slower on ndarray.
    let (d_in, d_out) = linear_dims(linear);
    transpose(&tensor_values(linear.weight.val()), d_in, d_out)
}

/// A 2-D tensor from row-major values.
pub fn tensor2<B: Backend>(values: Vec<f32>, shape: [usize; 2], device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// The values of a float tensor as `f32`, row-major.
pub fn tensor_values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("a float tensor converted to f32 holds f32 values")
}

/// Transposes a row-major `rows × cols` buffer.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(values.len(), rows * cols, "buffer must hold rows × cols values");
    // 32×32 tiles keep both the rows read and the rows written in cache.
    const TILE: usize = 32;
    let mut out = vec![0.0; values.len()];
    for i0 in (0..rows).step_by(TILE) {
        for j0 in (0..cols).step_by(TILE) {
            for i in i0..(i0 + TILE).min(rows) {
                for j in j0..(j0 + TILE).min(cols) {
                    out[j * rows + i] = values[i * cols + j];
                }
            }
        }
    }
    out
}

/// Replaces a parameter's values, keeping its id and trainability.
/// `torch_layout`: the values are a matrix in PyTorch orientation, the
/// transpose of burn's 2-D layout (a stored `out × in` weight or `r × in`
/// factor); they are transposed on the host so the tensor stays contiguous,
/// exactly like the one that was saved (layout changes matmul rounding).
pub fn replace_values<B: Backend, const D: usize>(
    param: Param<Tensor<B, D>>,
    values: &[f32],
    torch_layout: bool,
) -> Param<Tensor<B, D>> {
    param.map(|old| {
        let dims = old.shape().dims::<D>();
        let require_grad = old.is_require_grad();
        let device = old.device();
        let values = if torch_layout {
            assert_eq!(D, 2, "only matrices are stored transposed");
            transpose(values, dims[1], dims[0])
        } else {
            values.to_vec()
        };
        let tensor = Tensor::from_data(TensorData::new(values, dims), &device);
        tensor.set_require_grad(require_grad)
    })
}

/// The values of a burn-layout matrix parameter (`in × out`) in PyTorch
/// orientation (`out × in`).
pub fn torch_values<B: Backend>(param: &Param<Tensor<B, 2>>) -> Vec<f32> {
    let [rows, cols] = param.dims();
    transpose(&tensor_values(param.val()), rows, cols)
}
