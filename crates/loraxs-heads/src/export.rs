//! A stored head as the head of a transformers `…ForSequenceClassification`
//! class, for exports that leave loraxs (`cargo xtask export`).
//!
//! The two head layouts map onto transformers' classes without any
//! approximation (in evaluation mode, where dropout is the identity):
//!
//! | base | loraxs head | transformers class | tensors |
//! |---|---|---|---|
//! | BERT | RoBERTa style (first token → dense → tanh → out_proj) | `BertForSequenceClassification` | `bert.pooler.dense` ← `head.dense`, `classifier` ← `head.out_proj` |
//! | BERT | BERT style (the encoder's pooler → out_proj) | `BertForSequenceClassification` | `classifier` ← `head.out_proj`; the base's own pooler |
//! | RoBERTa | RoBERTa style | `RobertaForSequenceClassification` | `classifier.dense`, `classifier.out_proj` |
//!
//! BERT's pooler *is* a dense layer with tanh on the first token, so the
//! RoBERTa-style head the GLUE trainer uses on every base is, on BERT, a
//! trained pooler plus a classifier. A BERT-style head on RoBERTa has no
//! transformers class (RoBERTa's classifier has no pooler) and is refused.

use loraxs::{AdapterFile, HEAD_OUTPUT_TENSOR};
use loraxs_models::ModelType;
use serde_json::{Map, Value, json};

use crate::HeadError;

/// A tensor as the transformers class names it: name, shape, values
/// (row-major, PyTorch orientation).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// A stored head laid out as transformers' sequence-classification class
/// for the base (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct TransformersHead {
    /// The class, e.g. `BertForSequenceClassification`.
    pub architecture: &'static str,
    /// The attribute holding the encoder in that class, with its dot
    /// (`bert.`, `roberta.`): module names of the base model gain it.
    pub base_prefix: &'static str,
    /// The modules PEFT keeps whole (`modules_to_save`), as the class
    /// names them relative to the encoder's parent.
    pub modules_to_save: Vec<&'static str>,
    /// The head's tensors under the class's names.
    pub tensors: Vec<NamedTensor>,
    /// Outputs (1: regression).
    pub num_labels: usize,
    /// The outputs' names: the file's, or transformers' default
    /// `LABEL_<i>`.
    pub labels: Vec<String>,
}

/// Lays out the head stored in `file` for a base of architecture
/// `model_type`. Errors name the missing or misshapen tensor, or say why no
/// transformers class fits.
pub fn transformers_head(file: &AdapterFile, model_type: ModelType) -> Result<TransformersHead, HeadError> {
    let out = file
        .tensors
        .get(HEAD_OUTPUT_TENSOR)
        .ok_or_else(|| HeadError::MissingTensor {
            tensor: HEAD_OUTPUT_TENSOR.to_string(),
        })?;
    let [num_labels, hidden] = out.shape[..] else {
        return Err(HeadError::ShapeMismatch {
            tensor: HEAD_OUTPUT_TENSOR.to_string(),
            expected: vec![0, 0],
            found: out.shape.clone(),
        });
    };
    let get = |name: &str, shape: Vec<usize>| crate::stored_tensor(file, name, shape);
    let linear =
        |stored: &str, named: &str, d_out: usize, d_in: usize| -> Result<[NamedTensor; 2], HeadError> {
            let w = get(&format!("head.{stored}.weight"), vec![d_out, d_in])?;
            let b = get(&format!("head.{stored}.bias"), vec![d_out])?;
            Ok([
                (format!("{named}.weight"), w.shape.clone(), w.values.clone()),
                (format!("{named}.bias"), b.shape.clone(), b.values.clone()),
            ])
        };
    let roberta_style = file.tensors.contains_key("head.dense.weight");
    let (architecture, base_prefix, modules_to_save, tensors) = match (model_type, roberta_style) {
        (ModelType::Bert, true) => {
            let mut t = linear("dense", "bert.pooler.dense", hidden, hidden)?.to_vec();
            t.extend(linear("out_proj", "classifier", num_labels, hidden)?);
            (
                "BertForSequenceClassification",
                "bert.",
                vec!["pooler", "classifier"],
                t,
            )
        }
        (ModelType::Bert, false) => (
            "BertForSequenceClassification",
            "bert.",
            vec!["classifier"],
            linear("out_proj", "classifier", num_labels, hidden)?.to_vec(),
        ),
        (ModelType::Roberta, true) => {
            let mut t = linear("dense", "classifier.dense", hidden, hidden)?.to_vec();
            t.extend(linear("out_proj", "classifier.out_proj", num_labels, hidden)?);
            (
                "RobertaForSequenceClassification",
                "roberta.",
                vec!["classifier"],
                t,
            )
        }
        (ModelType::Roberta, false) => {
            return Err(HeadError::NoTransformersClass {
                reason: "a BERT-style head (pooler → classifier) on a RoBERTa base: \
                         RobertaForSequenceClassification has no pooler"
                    .into(),
            });
        }
    };
    let labels = match &file.labels {
        Some(names) => names.clone(),
        None => (0..num_labels).map(|i| format!("LABEL_{i}")).collect(),
    };
    Ok(TransformersHead {
        architecture,
        base_prefix,
        modules_to_save,
        tensors,
        num_labels,
        labels,
    })
}

impl TransformersHead {
    /// The base's `config.json` made the config of this class:
    /// `architectures`, `id2label`/`label2id` (transformers derives
    /// `num_labels` from them) and `problem_type` (regression for one
    /// output); every other key as it was.
    pub fn config_json(&self, base: &Value) -> Value {
        let mut config = base.as_object().cloned().unwrap_or_default();
        config.insert("architectures".into(), json!([self.architecture]));
        let id2label: Map<String, Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), json!(l)))
            .collect();
        let label2id: Map<String, Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), json!(i)))
            .collect();
        config.insert("id2label".into(), Value::Object(id2label));
        config.insert("label2id".into(), Value::Object(label2id));
        let problem = if self.num_labels == 1 {
            "regression"
        } else {
            "single_label_classification"
        };
        config.insert("problem_type".into(), json!(problem));
        Value::Object(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loraxs::{AdapterConfig, AdapterFile};

    fn file(dense: bool, labels: usize) -> AdapterFile {
        let mut f = AdapterFile {
            config: AdapterConfig::lora_xs(2),
            base_fingerprint: "00".repeat(16),
            sign_convention: Default::default(),
            factors_stored: false,
            tensors: Default::default(),
            labels: None,
        };
        let h = 4;
        if dense {
            f.insert_head_tensor("head.dense.weight", vec![h, h], vec![1.0; h * h])
                .unwrap();
            f.insert_head_tensor("head.dense.bias", vec![h], vec![2.0; h])
                .unwrap();
        }
        f.insert_head_tensor("head.out_proj.weight", vec![labels, h], vec![3.0; labels * h])
            .unwrap();
        f.insert_head_tensor("head.out_proj.bias", vec![labels], vec![4.0; labels])
            .unwrap();
        f
    }

    fn names(head: &TransformersHead) -> Vec<&str> {
        head.tensors.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    #[test]
    fn each_layout_lands_under_its_class_names() {
        let h = transformers_head(&file(true, 2), ModelType::Bert).unwrap();
        assert_eq!(h.architecture, "BertForSequenceClassification");
        assert_eq!(
            names(&h),
            [
                "bert.pooler.dense.weight",
                "bert.pooler.dense.bias",
                "classifier.weight",
                "classifier.bias"
            ]
        );
        assert_eq!(h.tensors[0].2[0], 1.0);
        assert_eq!(h.tensors[3].2, vec![4.0; 2]);
        assert_eq!(h.modules_to_save, ["pooler", "classifier"]);
        assert_eq!(h.labels, ["LABEL_0", "LABEL_1"]);

        let h = transformers_head(&file(false, 3), ModelType::Bert).unwrap();
        assert_eq!(names(&h), ["classifier.weight", "classifier.bias"]);
        assert_eq!(h.tensors[0].1, vec![3, 4]);

        let h = transformers_head(&file(true, 1), ModelType::Roberta).unwrap();
        assert_eq!(h.architecture, "RobertaForSequenceClassification");
        assert_eq!(h.base_prefix, "roberta.");
        assert_eq!(
            names(&h),
            [
                "classifier.dense.weight",
                "classifier.dense.bias",
                "classifier.out_proj.weight",
                "classifier.out_proj.bias"
            ]
        );
    }

    #[test]
    fn what_has_no_class_or_is_broken_is_refused_by_name() {
        let err = transformers_head(&file(false, 2), ModelType::Roberta).unwrap_err();
        assert!(
            err.to_string()
                .contains("RobertaForSequenceClassification has no pooler"),
            "{err}"
        );
        let mut broken = file(true, 2);
        broken.tensors.remove("head.dense.bias");
        let err = transformers_head(&broken, ModelType::Bert).unwrap_err();
        assert_eq!(err.to_string(), "head tensor `head.dense.bias` is missing");
        let mut none = file(false, 2);
        none.tensors.clear();
        let err = transformers_head(&none, ModelType::Bert).unwrap_err();
        assert_eq!(err.to_string(), "head tensor `head.out_proj.weight` is missing");
    }

    #[test]
    fn the_config_names_the_class_and_the_labels() {
        let mut f = file(true, 2);
        f.set_labels(vec!["negative".into(), "positive".into()]).unwrap();
        let h = transformers_head(&f, ModelType::Bert).unwrap();
        let base = json!({"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 4});
        let c = h.config_json(&base);
        assert_eq!(c["architectures"], json!(["BertForSequenceClassification"]));
        assert_eq!(c["id2label"], json!({"0": "negative", "1": "positive"}));
        assert_eq!(c["label2id"], json!({"negative": 0, "positive": 1}));
        assert_eq!(c["problem_type"], "single_label_classification");
        assert_eq!(c["hidden_size"], 4);
        let r = transformers_head(&file(true, 1), ModelType::Bert).unwrap();
        assert_eq!(r.config_json(&base)["problem_type"], "regression");
    }
}
