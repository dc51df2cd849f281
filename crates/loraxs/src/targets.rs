//! Target-module selection by dotted name, as PEFT does it.

use serde::{Deserialize, Serialize};

/// Patterns selecting linear layers by their dotted Hugging Face name.
///
/// A pattern matches a module when it equals the module's full name or is a
/// suffix of it starting at a dot (PEFT's rule): `output.dense` matches both
/// `encoder.layer.0.output.dense` and `encoder.layer.0.attention.output.dense`,
/// but `dense` does not match `encoder.layer.0.attention.output.xdense`.
///
/// ```
/// use loraxs::TargetModules;
/// let t = TargetModules::paper_glue();
/// assert!(t.matches("encoder.layer.3.attention.self.query"));
/// assert!(t.matches("encoder.layer.3.attention.output.dense"));
/// assert!(t.matches("encoder.layer.3.output.dense"));
/// assert!(!t.matches("encoder.layer.3.intermediate.dense"));
/// assert!(!t.matches("encoder.layer.3.attention.self.key"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TargetModules(Vec<String>);

impl TargetModules {
    /// Targets from a list of patterns.
    pub fn new<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> Self {
        Self(patterns.into_iter().map(Into::into).collect())
    }

    /// The paper's GLUE targets in BERT/RoBERTa naming: `query`, `value`,
    /// `attention.output.dense` and the FFN down projection `output.dense`.
    pub fn paper_glue() -> Self {
        Self::new(["query", "value", "attention.output.dense", "output.dense"])
    }

    /// The paper's decoder targets (its math runs) in Llama naming: every
    /// attention and MLP projection.
    pub fn paper_decoder() -> Self {
        Self::new([
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ])
    }

    /// The patterns.
    pub fn patterns(&self) -> &[String] {
        &self.0
    }

    /// True when there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any pattern selects the module called `name`.
    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|p| pattern_matches(p, name))
    }
}

/// PEFT's suffix rule for one pattern.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    name == pattern || name.strip_suffix(pattern).is_some_and(|head| head.ends_with('.'))
}
