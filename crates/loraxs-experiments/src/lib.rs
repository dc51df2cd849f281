//! The paper's experiments as data and code that can be tested: profiles
//! (`profiles/glue-*.json`), run plans, the results file (one JSON line per
//! run, the source of every table), the tables themselves, and the runner
//! that ties them to `loraxs-train`: the GLUE table and the math table
//! (decoder fine-tuning scored on GSM8K, [`reproduce_math`]). The
//! `loraxs-experiments` binary is its command line; `cargo xtask reproduce
//! glue|math` calls it.
//!
//! ```
//! use loraxs_experiments::{Overrides, Profile, plan};
//!
//! let profile = Profile::load("smoke").unwrap();
//! let dir = tempfile::tempdir().unwrap();
//! // Two tasks with their files; the others are skipped with a note.
//! for task in ["RTE", "MRPC"] {
//!     std::fs::create_dir_all(dir.path().join("glue").join(task)).unwrap();
//!     for split in ["train.tsv", "dev.tsv"] {
//!         std::fs::write(dir.path().join("glue").join(task).join(split), "").unwrap();
//!     }
//! }
//! let overrides = Overrides { methods: Some(vec!["lora-xs".into()]), ..Default::default() };
//! let plan = plan(&profile, &overrides, dir.path(), "ckpt".as_ref()).unwrap();
//! assert_eq!(plan.runs.len(), 2);
//! assert!(plan.notes.iter().any(|n| n.starts_with("SST-2: skipped")));
//! assert_eq!(plan.runs[0].adapter.rank, 4);
//! ```

#![warn(missing_docs)]

mod backend;
mod error;
mod export;
mod figures;
mod math;
mod plan;
mod profile;
mod results;
mod run;
mod stats;
mod table;

pub use backend::{BackendKind, OnBackend};
pub use error::{ExperimentError, Result};
pub use export::{ExportFormat, ExportRequest, export, import};
pub use figures::{ParamPoints, draw_glue_figures, figure_paths, param_points, smooth};
pub use math::{
    BaseRecord, MATH_BUILT_IN, MathMethod, MathProfile, MathRecord, math_table, read_math_results,
    reproduce_math, write_math_report,
};
pub use plan::{Overrides, Plan, plan, plan_with};
pub use profile::{BUILT_IN, MethodSettings, PerTask, Profile};
pub use results::Results;
pub use run::{Outcome, ResultsLock, RunSettings, report_glue, reproduce_glue, train_one, write_report};
pub use stats::median;
pub use table::{CLEAR_MARGIN, Cell, best_pair, glue_table, method_label, training_variant};
