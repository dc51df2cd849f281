//! A short real run on MiniLM and RTE: it trains, evaluates, records, and a
//! run stopped after an epoch and resumed ends exactly like one that was
//! never stopped.

use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use loraxs::AdapterConfig;
use loraxs_data::GlueTask;
use loraxs_models::ModelDir;
use loraxs_train::{RunConfig, TrainOptions, train};

type B = Autodiff<Flex>;

/// The backend's random generator (dropout) is global: runs that must be
/// reproducible cannot overlap in one process.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The model and the data, under the workspace's one rule
/// (`loraxs_models::testing`: skipped loudly when absent, a failure under CI).
fn inputs() -> Option<(ModelDir, PathBuf)> {
    Some((
        loraxs_models::testing::test_model()?,
        loraxs_models::testing::test_data_dir()?,
    ))
}

fn config() -> RunConfig {
    let mut c = RunConfig::new(GlueTask::Rte, AdapterConfig::lora_xs(4), 1e-3, 1e-3, 2);
    c.batch_size = 8;
    c.max_length = 64;
    c.train_subset = Some(48);
    c.eval_subset = Some(24);
    c.max_steps_per_epoch = Some(3);
    c.seed = 3;
    c
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((model, data)) = inputs() else { return };
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let options = |sub: &str| TrainOptions {
        checkpoint_dir: Some(dir.path().join(sub)),
        resume: true,
        quiet: true,
        backend: "flex".into(),
        model: "all-MiniLM-L6-v2".into(),
        git_commit: "test".into(),
        stop_after_epochs: None,
    };
    let config = config();
    let whole = train::<B>(&config, &model, &data, &device, &options("a"))
        .unwrap()
        .unwrap();
    assert_eq!(whole.epochs.len(), 2);
    assert_eq!(whole.trainable_adapter, 24 * 16);
    assert_eq!(whole.train_examples, 48);
    assert!(whole.best.metrics.contains_key("accuracy"));
    assert!(whole.epochs.iter().all(|e| e.train_loss.is_finite()));

    let mut stopped = options("b");
    stopped.stop_after_epochs = Some(1);
    assert!(
        train::<B>(&config, &model, &data, &device, &stopped)
            .unwrap()
            .is_none()
    );
    assert!(
        dir.path()
            .join("b")
            .join(config.key())
            .join("state.json")
            .is_file()
    );
    let resumed = train::<B>(&config, &model, &data, &device, &options("b"))
        .unwrap()
        .unwrap();
    assert_eq!(resumed.epochs, whole.epochs, "resume must replay exactly");

    // A finished checkpoint resumes to the same record without training.
    let again = train::<B>(&config, &model, &data, &device, &options("a"))
        .unwrap()
        .unwrap();
    assert_eq!(again.epochs, whole.epochs);
}

#[test]
fn a_diverging_run_stops_with_a_clear_message() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((model, data)) = inputs() else { return };
    let mut config = config();
    config.lr = 1e12;
    config.head_lr = 1e12;
    config.epochs = 3;
    config.max_steps_per_epoch = Some(4);
    let options = TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let err = train::<B>(&config, &model, &data, &Default::default(), &options).unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("the loss is"), "{message}");
    assert!(message.contains("lower the learning rates"), "{message}");
}
