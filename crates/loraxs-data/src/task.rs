//! The GLUE tasks: where their files are, how their rows are laid out, and
//! how they are scored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::metrics::Metric;
use crate::{DataError, Result};

/// A GLUE task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GlueTask {
    /// Corpus of Linguistic Acceptability (Matthews correlation).
    Cola,
    /// Stanford Sentiment Treebank (accuracy).
    Sst2,
    /// Microsoft Research Paraphrase Corpus (accuracy, F1).
    Mrpc,
    /// Semantic Textual Similarity Benchmark (Pearson, Spearman; regression).
    Stsb,
    /// Quora Question Pairs (accuracy, F1).
    Qqp,
    /// Multi-Genre NLI (accuracy; matched and mismatched dev sets).
    Mnli,
    /// Question NLI (accuracy).
    Qnli,
    /// Recognising Textual Entailment (accuracy).
    Rte,
}

/// A split of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// `train.tsv`.
    Train,
    /// `dev.tsv` (MNLI: `dev_matched.tsv`).
    Dev,
    /// MNLI's `dev_mismatched.tsv`.
    DevMismatched,
}

impl GlueTask {
    /// Every task, in the paper's column order.
    pub const ALL: [GlueTask; 8] = [
        GlueTask::Mnli,
        GlueTask::Sst2,
        GlueTask::Cola,
        GlueTask::Qqp,
        GlueTask::Qnli,
        GlueTask::Rte,
        GlueTask::Mrpc,
        GlueTask::Stsb,
    ];

    /// The lower-case name used on the command line (`sst2`, `stsb`, …).
    pub fn name(self) -> &'static str {
        match self {
            GlueTask::Cola => "cola",
            GlueTask::Sst2 => "sst2",
            GlueTask::Mrpc => "mrpc",
            GlueTask::Stsb => "stsb",
            GlueTask::Qqp => "qqp",
            GlueTask::Mnli => "mnli",
            GlueTask::Qnli => "qnli",
            GlueTask::Rte => "rte",
        }
    }

    /// The folder name of the GLUE download (`SST-2`, `STS-B`, …).
    pub fn folder(self) -> &'static str {
        match self {
            GlueTask::Cola => "CoLA",
            GlueTask::Sst2 => "SST-2",
            GlueTask::Mrpc => "MRPC",
            GlueTask::Stsb => "STS-B",
            GlueTask::Qqp => "QQP",
            GlueTask::Mnli => "MNLI",
            GlueTask::Qnli => "QNLI",
            GlueTask::Rte => "RTE",
        }
    }

    /// Parses a name: `sst2`, `SST-2`, `sst-2` all work.
    pub fn parse(name: &str) -> Option<Self> {
        let key: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_lowercase();
        GlueTask::ALL.into_iter().find(|t| t.name() == key)
    }

    /// Outputs of the model: classes, or 1 for STS-B's regression.
    pub fn num_labels(self) -> usize {
        match self {
            GlueTask::Stsb => 1,
            GlueTask::Mnli => 3,
            _ => 2,
        }
    }

    /// Names of the classes in label order, as the GLUE datasets of the
    /// Hugging Face hub name them (`negative`, `positive` for SST-2); empty
    /// for STS-B's regression.
    pub fn label_names(self) -> &'static [&'static str] {
        match self {
            GlueTask::Cola => &["unacceptable", "acceptable"],
            GlueTask::Sst2 => &["negative", "positive"],
            GlueTask::Mrpc => &["not_equivalent", "equivalent"],
            GlueTask::Stsb => &[],
            GlueTask::Qqp => &["not_duplicate", "duplicate"],
            GlueTask::Mnli => &["entailment", "neutral", "contradiction"],
            GlueTask::Qnli | GlueTask::Rte => &["entailment", "not_entailment"],
        }
    }

    /// Whether the task is scored as regression.
    pub fn is_regression(self) -> bool {
        self == GlueTask::Stsb
    }

    /// The metrics reported, the first being the task's headline metric
    /// (the one the paper's table shows).
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            GlueTask::Cola => &[Metric::Matthews],
            GlueTask::Mrpc | GlueTask::Qqp => &[Metric::Accuracy, Metric::F1],
            GlueTask::Stsb => &[Metric::Pearson, Metric::Spearman],
            _ => &[Metric::Accuracy],
        }
    }

    /// The dev splits evaluated (MNLI has two).
    pub fn dev_splits(self) -> &'static [Split] {
        match self {
            GlueTask::Mnli => &[Split::Dev, Split::DevMismatched],
            _ => &[Split::Dev],
        }
    }

    /// The file of `split` under `data_dir` (`<dir>/glue/<TASK>/…`).
    pub fn path(self, data_dir: &Path, split: Split) -> PathBuf {
        let file = match (self, split) {
            (_, Split::Train) => "train.tsv",
            (GlueTask::Mnli, Split::Dev) => "dev_matched.tsv",
            (_, Split::Dev) => "dev.tsv",
            (_, Split::DevMismatched) => "dev_mismatched.tsv",
        };
        data_dir.join("glue").join(self.folder()).join(file)
    }

    /// Whether the files of `split` exist.
    pub fn has(self, data_dir: &Path, split: Split) -> bool {
        self.path(data_dir, split).is_file()
    }
}

impl core::fmt::Display for GlueTask {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.folder())
    }
}

/// The data folder: `explicit` if given, else `$LORAXS_DATA_DIR`.
pub fn data_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    match explicit {
        Some(dir) => Ok(dir.to_path_buf()),
        None => std::env::var_os("LORAXS_DATA_DIR")
            .map(PathBuf::from)
            .ok_or(DataError::NoDataDir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_cover_every_class() {
        for task in GlueTask::ALL {
            let names = task.label_names();
            if task.is_regression() {
                assert!(names.is_empty(), "{task:?}");
            } else {
                assert_eq!(names.len(), task.num_labels(), "{task:?}");
            }
        }
        // Where the files spell the classes out, the names are theirs, in
        // the same order (class 0 of RTE is `entailment`).
        assert_eq!(GlueTask::Rte.label_names()[0], "entailment");
        assert_eq!(GlueTask::Mnli.label_names()[2], "contradiction");
    }
}
