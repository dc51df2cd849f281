//! Task heads on top of a [`loraxs_models::Encoder`]: sequence
//! classification (`num_labels ≥ 2`, cross-entropy) and regression
//! (`num_labels = 1`, mean squared error, e.g. STS-B). Heads train with the
//! adapter and are stored in the same adapter file under `head.`;
//! [`export`] lays a stored head out as transformers'
//! `…ForSequenceClassification` class for exports.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use loraxs_heads::{HeadConfig, HeadStyle};
//!
//! let device = Default::default();
//! let head = HeadConfig::new(HeadStyle::Roberta, 8, 3).init::<NdArray<f32>>(&device);
//! let hidden = Tensor::<NdArray<f32>, 3>::ones([2, 5, 8], &device);
//! let logits = head.forward(hidden, None);
//! assert_eq!(logits.dims(), [2, 3]);
//! assert_eq!(head.param_count().head, 8 * 8 + 8 + 8 * 3 + 3);
//! ```

pub mod export;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use loraxs::interop::{tensor_values, torch_weight, trainable_named, transpose};
use loraxs::{AdapterError, AdapterFile, ParamCount, StoredTensor};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Why a head could not be stored in or loaded from an adapter file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// The file lacks a tensor the head needs.
    #[error("head tensor `{tensor}` is missing")]
    MissingTensor {
        /// The tensor.
        tensor: String,
    },
    /// A head tensor has another shape than the head.
    #[error("head tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The tensor.
        tensor: String,
        /// The head's shape.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// The adapter file refused a tensor.
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    /// No transformers class holds this head on this base (see
    /// [`export`]).
    #[error("the head cannot be exported: {reason}")]
    NoTransformersClass {
        /// Why.
        reason: String,
    },
}

/// The stored tensor `name` of an adapter file, checked to have `shape`.
pub(crate) fn stored_tensor<'a>(
    file: &'a AdapterFile,
    name: &str,
    shape: Vec<usize>,
) -> Result<&'a StoredTensor, HeadError> {
    let t = file.tensors.get(name).ok_or_else(|| HeadError::MissingTensor {
        tensor: name.to_string(),
    })?;
    if t.shape != shape {
        return Err(HeadError::ShapeMismatch {
            tensor: name.to_string(),
            expected: shape,
            found: t.shape.clone(),
        });
    }
    Ok(t)
}

/// Which Hugging Face head layout to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadStyle {
    /// `RobertaClassificationHead`: first token → dropout → dense → tanh →
    /// dropout → out_proj.
    Roberta,
    /// `BertForSequenceClassification`: the encoder's pooled output →
    /// dropout → classifier.
    Bert,
}

/// Configuration of a task head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// Layout.
    pub style: HeadStyle,
    /// Width of the encoder.
    pub hidden_size: usize,
    /// Outputs: classes, or 1 for regression.
    pub num_labels: usize,
    /// Dropout (Hugging Face uses the encoder's hidden dropout, 0.1).
    pub dropout: f64,
    /// Seed of the weight initialisation (normal, std 0.02, zero bias).
    pub seed: u64,
}

impl HeadConfig {
    /// A head with dropout 0.1 and seed 0.
    pub fn new(style: HeadStyle, hidden_size: usize, num_labels: usize) -> Self {
        Self {
            style,
            hidden_size,
            num_labels,
            dropout: 0.1,
            seed: 0,
        }
    }

    /// Builds the head with trainable, freshly initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Head<B> {
        assert!(self.num_labels >= 1, "num_labels must be at least 1");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed);
        let mut linear = |d_out: usize, d_in: usize, name: &str| {
            // Box–Muller draws of N(0, 0.02²), as Hugging Face initialises heads.
            let weight: Vec<f32> = (0..d_out * d_in)
                .map(|_| {
                    let (u1, u2) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
                    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * 0.02) as f32
                })
                .collect();
            let l =
                loraxs::interop::linear_from_torch::<B>(weight, d_out, d_in, Some(vec![0.0; d_out]), device);
            loraxs::interop::linear_trainable_named(l, name)
        };
        let h = self.hidden_size;
        let dense = (self.style == HeadStyle::Roberta).then(|| linear(h, h, "head.dense"));
        let out_proj = linear(self.num_labels, h, "head.out_proj");
        Head {
            dense,
            out_proj,
            dropout: DropoutConfig::new(self.dropout).init(),
            num_labels: self.num_labels,
        }
    }
}

/// A classification or regression head.
#[derive(Module, Debug)]
pub struct Head<B: Backend> {
    /// `dense` (RoBERTa style only).
    pub dense: Option<Linear<B>>,
    /// `out_proj` / `classifier`.
    pub out_proj: Linear<B>,
    /// Dropout.
    pub dropout: Dropout,
    /// Outputs.
    pub num_labels: usize,
}

impl<B: Backend> Head<B> {
    /// Logits (`[batch, num_labels]`) from the encoder's last hidden state
    /// (RoBERTa style) or pooled output (BERT style).
    ///
    /// # Panics
    /// A BERT-style head needs `pooled`.
    pub fn forward(&self, hidden: Tensor<B, 3>, pooled: Option<Tensor<B, 2>>) -> Tensor<B, 2> {
        match &self.dense {
            Some(dense) => {
                let [b, _, h] = hidden.dims();
                let first = hidden.slice([0..b, 0..1, 0..h]).reshape([b, h]);
                let x = dense.forward(self.dropout.forward(first)).tanh();
                self.out_proj.forward(self.dropout.forward(x))
            }
            None => {
                let pooled = pooled.expect("a BERT-style head needs the encoder's pooled output");
                self.out_proj.forward(self.dropout.forward(pooled))
            }
        }
    }

    /// Cross-entropy over `labels` (classification) or mean squared error
    /// against `targets` (regression, `num_labels = 1`).
    pub fn loss(
        &self,
        logits: Tensor<B, 2>,
        labels: Option<Tensor<B, 1, Int>>,
        targets: Option<Tensor<B, 1>>,
    ) -> Tensor<B, 1> {
        if self.num_labels == 1 {
            let targets = targets.expect("regression needs float targets");
            let [b, _] = logits.dims();
            (logits.reshape([b]) - targets).powf_scalar(2.0).mean()
        } else {
            let labels = labels.expect("classification needs integer labels");
            CrossEntropyLossConfig::new()
                .init(&logits.device())
                .forward(logits, labels)
        }
    }

    /// Trainable values of the head.
    pub fn param_count(&self) -> ParamCount {
        let linear =
            |l: &Linear<B>| l.weight.shape().num_elements() + l.bias.as_ref().map_or(0, |b| b.dims()[0]);
        ParamCount::head(self.dense.as_ref().map_or(0, linear) + linear(&self.out_proj))
    }

    /// Adds the head's tensors (`head.dense.*`, `head.out_proj.*`, PyTorch
    /// layout) to an adapter file.
    pub fn store(&self, file: &mut AdapterFile) -> Result<(), AdapterError> {
        let mut put = |name: &str, l: &Linear<B>| -> Result<(), AdapterError> {
            let [d_in, d_out] = l.weight.dims();
            file.insert_head_tensor(&format!("head.{name}.weight"), vec![d_out, d_in], torch_weight(l))?;
            if let Some(b) = &l.bias {
                file.insert_head_tensor(&format!("head.{name}.bias"), vec![d_out], tensor_values(b.val()))?;
            }
            Ok(())
        };
        if let Some(dense) = &self.dense {
            put("dense", dense)?;
        }
        put("out_proj", &self.out_proj)
    }

    /// Loads the head's tensors from an adapter file, checking every name
    /// and shape.
    pub fn load(mut self, file: &AdapterFile) -> Result<Self, HeadError> {
        let get = |name: &str, shape: Vec<usize>| stored_tensor(file, name, shape);
        let load = |name: &str, l: Linear<B>| -> Result<Linear<B>, HeadError> {
            let [d_in, d_out] = l.weight.dims();
            let device = l.weight.device();
            let w = get(&format!("head.{name}.weight"), vec![d_out, d_in])?;
            let b = get(&format!("head.{name}.bias"), vec![d_out])?;
            let weight = transpose(&w.values, d_out, d_in);
            let weight = Tensor::<B, 2>::from_data(TensorData::new(weight, [d_in, d_out]), &device);
            let bias = Tensor::<B, 1>::from_data(TensorData::new(b.values.clone(), [d_out]), &device);
            Ok(Linear {
                weight: trainable_named(weight, &format!("head.{name}.weight")),
                bias: Some(trainable_named(bias, &format!("head.{name}.bias"))),
            })
        };
        if let Some(dense) = self.dense.take() {
            self.dense = Some(load("dense", dense)?);
        }
        self.out_proj = load("out_proj", self.out_proj)?;
        Ok(self)
    }
}

/// An encoder and a task head, trained together (the adapter inside the
/// encoder, the head on top).
#[derive(Module, Debug)]
pub struct SequenceClassifier<B: Backend> {
    /// The (adapted) encoder.
    pub encoder: loraxs_models::Encoder<B>,
    /// The task head.
    pub head: Head<B>,
}

impl<B: loraxs_models::KernelBackend> SequenceClassifier<B> {
    /// Logits (`[batch, num_labels]`).
    pub fn forward(&self, input: loraxs_models::EncoderInput<B>) -> Tensor<B, 2> {
        let out = self.encoder.forward(input);
        self.head.forward(out.hidden, out.pooled)
    }
}

impl<B: Backend> SequenceClassifier<B> {
    /// Parameters by group: adapter (per `config`), head, frozen.
    pub fn param_count(&self, config: Option<&loraxs::AdapterConfig>) -> ParamCount {
        loraxs::param_count(&self.encoder, config) + self.head.param_count()
    }
}
