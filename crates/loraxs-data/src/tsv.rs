//! Reading the original GLUE TSV files: fields split on tabs with no quote
//! processing (sentences contain `"`), every row checked.

use std::path::Path;

use crate::task::{GlueTask, Split};
use crate::{DataError, Result};

/// A gold label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Label {
    /// A class index.
    Class(usize),
    /// A similarity score in [0, 5] (STS-B).
    Score(f32),
}

/// One labelled example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// First (or only) sentence.
    pub text_a: String,
    /// Second sentence of a pair.
    pub text_b: Option<String>,
    /// Gold label.
    pub label: Label,
}

/// Where a task's fields are: by header name, or by position for CoLA,
/// whose files have no header.
struct Layout {
    header: bool,
    text_a: &'static str,
    text_b: Option<&'static str>,
    label: &'static str,
    /// Label strings in class order; empty means numeric (`0`, `1`, …) or a
    /// score.
    classes: &'static [&'static str],
}

fn layout(task: GlueTask) -> Layout {
    let l = |text_a, text_b, label, classes| Layout {
        header: true,
        text_a,
        text_b,
        label,
        classes,
    };
    match task {
        GlueTask::Cola => Layout {
            header: false,
            text_a: "3",
            text_b: None,
            label: "1",
            classes: &[],
        },
        GlueTask::Sst2 => l("sentence", None, "label", &[]),
        GlueTask::Mrpc => l("#1 String", Some("#2 String"), "Quality", &[]),
        GlueTask::Stsb => l("sentence1", Some("sentence2"), "score", &[]),
        GlueTask::Qqp => l("question1", Some("question2"), "is_duplicate", &[]),
        // Hugging Face's class order: entailment, neutral, contradiction.
        GlueTask::Mnli => l(
            "sentence1",
            Some("sentence2"),
            "gold_label",
            &["entailment", "neutral", "contradiction"],
        ),
        GlueTask::Qnli => l(
            "question",
            Some("sentence"),
            "label",
            &["entailment", "not_entailment"],
        ),
        GlueTask::Rte => l(
            "sentence1",
            Some("sentence2"),
            "label",
            &["entailment", "not_entailment"],
        ),
    }
}

/// Reads every example of `task`'s `split` from `data_dir`.
pub fn read_split(task: GlueTask, data_dir: &Path, split: Split) -> Result<Vec<Example>> {
    let path = task.path(data_dir, split);
    if !path.is_file() {
        return Err(DataError::MissingFile {
            task: task.folder(),
            path,
        });
    }
    let bytes = std::fs::read(&path).map_err(|source| DataError::Io {
        path: path.clone(),
        source,
    })?;
    parse(task, &bytes, &path)
}

/// Parses the bytes of a GLUE TSV file of `task`; `path` names it in errors.
pub fn parse(task: GlueTask, bytes: &[u8], path: &Path) -> Result<Vec<Example>> {
    let layout = layout(task);
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf".as_slice()).unwrap_or(bytes);
    let mut lines = bytes.split(|&b| b == b'\n').enumerate().map(|(i, raw)| {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        std::str::from_utf8(raw)
            .map(|s| (i + 1, s))
            .map_err(|_| DataError::Encoding {
                path: path.into(),
                line: i + 1,
            })
    });

    // Column positions from the header, or fixed for CoLA.
    let (width, columns) = if layout.header {
        let (_, header) = lines
            .next()
            .ok_or_else(|| DataError::Empty { path: path.into() })??;
        let names: Vec<&str> = header.split('\t').collect();
        let find = |column: &'static str| {
            names
                .iter()
                .position(|n| n.trim() == column)
                .ok_or_else(|| DataError::Header {
                    path: path.into(),
                    column,
                    found: header.replace('\t', " | "),
                })
        };
        let cols = (
            find(layout.text_a)?,
            layout.text_b.map(find).transpose()?,
            find(layout.label)?,
        );
        (names.len(), cols)
    } else {
        (4, (3, None, 1))
    };
    let (a, b, label_col) = columns;

    let mut examples = Vec::new();
    let total = bytes.split(|&b| b == b'\n').count();
    for item in lines {
        let (line, text) = item?;
        // A final newline leaves one empty piece after it; nothing else may be empty.
        if text.is_empty() && line == total {
            continue;
        }
        let fields: Vec<&str> = text.split('\t').collect();
        if fields.len() != width {
            return Err(DataError::FieldCount {
                path: path.into(),
                line,
                expected: width,
                found: fields.len(),
            });
        }
        let raw_label = fields[label_col].trim();
        let label = if task.is_regression() {
            match raw_label.parse::<f32>() {
                Ok(score) if (0.0..=5.0).contains(&score) => Label::Score(score),
                _ => {
                    return Err(DataError::Score {
                        path: path.into(),
                        line,
                        value: raw_label.into(),
                    });
                }
            }
        } else if layout.classes.is_empty() {
            match raw_label.parse::<usize>() {
                Ok(class) if class < task.num_labels() => Label::Class(class),
                _ => {
                    let expected = (0..task.num_labels())
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(DataError::Label {
                        path: path.into(),
                        line,
                        value: raw_label.into(),
                        expected,
                    });
                }
            }
        } else {
            match layout.classes.iter().position(|c| *c == raw_label) {
                Some(class) => Label::Class(class),
                None => {
                    return Err(DataError::Label {
                        path: path.into(),
                        line,
                        value: raw_label.into(),
                        expected: layout.classes.join(", "),
                    });
                }
            }
        };
        examples.push(Example {
            text_a: fields[a].to_string(),
            text_b: b.map(|b| fields[b].to_string()),
            label,
        });
    }
    if examples.is_empty() {
        return Err(DataError::Empty { path: path.into() });
    }
    Ok(examples)
}
