//! The training and evaluation harness: fine-tune an adapter and a task
//! head on a GLUE task with AdamW (separate adapter and head learning
//! rates), a linear schedule with warm-up, dev evaluation and a checkpoint
//! after every epoch, exact resume, and one JSON record per finished run;
//! and, on the same loop, causal-LM fine-tuning of a decoder on math
//! problems ([`train_causal`]: response-only loss, gradient accumulation,
//! cosine schedule, evaluation by generation and exact match).
//!
//! ```
//! use loraxs::AdapterConfig;
//! use loraxs_data::GlueTask;
//! use loraxs_train::{LinearSchedule, RunConfig};
//!
//! let run = RunConfig::new(GlueTask::Rte, AdapterConfig::lora_xs(16), 1e-3, 1e-3, 3);
//! assert_eq!(run.warmup_ratio, 0.0); // as in the paper's RTE script
//! assert!(run.key().starts_with("rte-lora-xs-r16-s0"));
//!
//! let schedule = LinearSchedule::new(1e-3, 0.5, 10);
//! assert_eq!(schedule.at(5), 1e-3);
//! ```

mod causal;
mod config;
mod engine;
mod error;
mod optim;
mod parallel;
mod record;
mod schedule;
mod trainer;

pub use causal::{
    ALPACA_PROMPT, CausalExample, CausalRunConfig, CausalRunRecord, MathData, MathEval, PromptStyle,
    causal_epoch_steps, eval_problems, evaluate_base, prompt_text, response_nll, tokenize_math, train_causal,
};
pub use config::{DEFAULT_BUCKET_WINDOW, RunConfig};
pub use error::TrainError;
pub use parallel::{DataParallel, Nodes, peer_devices, run_orchestrator};
pub use record::{EpochRecord, Metrics, RunRecord};
pub use schedule::{CosineSchedule, LinearSchedule, Schedule};
pub use trainer::{
    StepInfo, StepObserver, TrainOptions, best_epoch, constant_baseline, epoch_batches, evaluate, predict,
    score, subset_indices, train,
};
