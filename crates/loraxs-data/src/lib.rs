//! GLUE in its original TSV layout: reading every task with row-level
//! checks, tokenising and batching, and the GLUE metrics; math word
//! problems (GSM8K, MetaMathQA) with answer extraction ([`math`]).
//!
//! ```
//! use loraxs_data::{GlueTask, Label, Metric, parse};
//!
//! let tsv = b"index\tsentence1\tsentence2\tlabel\n0\tA \"quoted\" cat.\tA cat.\tentailment\n";
//! let examples = parse(GlueTask::Rte, tsv, "dev.tsv".as_ref()).unwrap();
//! assert_eq!(examples[0].text_a, "A \"quoted\" cat.");
//! assert_eq!(examples[0].label, Label::Class(0));
//!
//! let bad = b"index\tsentence1\tsentence2\tlabel\n0\tA cat.\tentailment\n";
//! let err = parse(GlueTask::Rte, bad, "dev.tsv".as_ref()).unwrap_err();
//! assert_eq!(err.to_string(), "dev.tsv:2: expected 4 tab-separated fields, found 3");
//!
//! assert_eq!(GlueTask::Cola.metrics()[0], Metric::Matthews);
//! assert!((Metric::Accuracy.classification(&[1, 0, 1], &[1, 1, 1]).unwrap() - 2.0 / 3.0).abs() < 1e-12);
//! ```

mod batch;
mod error;
pub mod math;
pub mod metrics;
mod task;
mod tsv;

pub use batch::{LabelledBatch, TokenizedSet};
pub use error::{DataError, Result};
pub use metrics::{Metric, TooFewExamples};
pub use task::{GlueTask, Split, data_dir};
pub use tsv::{Example, Label, parse, read_split};
