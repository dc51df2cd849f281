//! `train-data-parallel`: the GLUE trainer (the `train-glue-sst2` run:
//! LoRA-XS r=16 on MiniLM, batch 32) with 1 and 2 data-parallel peers
//! (threads on the CPU backend, gradients summed by burn's collective),
//! alternated round by round; and the cost of one step's all-reduce over
//! 2 peers for LoRA-XS r=16, LoRA r=8 and full fine-tuning (each
//! trainable tensor of the model summed once, as
//! `GradientsParams::all_reduce` does every step).
//!
//! On a 2-core machine the two peers share the cores that one peer's
//! matrix products already use: the figure says what data parallelism
//! costs there, not what it gains on separate devices.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::backend::Autodiff;
use burn::collective::{
    CollectiveConfig, PeerId, ReduceOperation, all_reduce, finish_collective, register, reset_collective,
};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use loraxs::AdapterConfig;
use loraxs_heads::{HeadConfig, HeadStyle, SequenceClassifier};
use loraxs_models::ModelDir;
use loraxs_train::{DataParallel, StepObserver, TrainOptions};
use serde::Serialize;

use crate::workload::{Options, Report, Variant, Workload, median};

/// The figures of `train-data-parallel` beyond the row's own.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleStats {
    /// Training examples per second with 1 and 2 peers (median round).
    pub examples_per_s: [f64; 2],
    /// One step's gradient all-reduce over 2 peers, per method.
    pub allreduce: Vec<AllReduceCost>,
}

/// What one step's all-reduce moves and costs for one method.
#[derive(Debug, Clone, Serialize)]
pub struct AllReduceCost {
    /// `lora-xs r=16`, `lora r=8`, `full`.
    pub method: String,
    /// Trainable values (adapter and head).
    pub values: usize,
    /// Bytes each peer contributes per step (f32).
    pub bytes_per_peer: usize,
    /// Trainable tensors (one all-reduce each).
    pub tensors: usize,
    /// Median time of the whole step's all-reduce, milliseconds.
    pub median_ms: f64,
}

/// Runs `train-data-parallel` on backend `B`.
pub fn run<B: loraxs_models::KernelBackend>(options: &Options, device: &B::Device) -> Result<Report, String> {
    let model = ModelDir::new(&options.model).map_err(|e| e.to_string())?;
    let data_dir = loraxs_data::data_dir(options.data_dir.as_deref()).map_err(|e| e.to_string())?;
    let mut run = Workload::TrainGlueSst2.glue_run().expect("a GLUE run");
    let skip = options.warmup.max(1);
    let steps = skip + options.reps.max(2);
    run.train_subset = Some(run.batch_size * steps);
    let rounds = 2;
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut setup = 0;
    for round in 0..rounds {
        for k in 0..2 {
            let which = (k + round) % 2;
            let peers = which + 1;
            let log = Arc::new(Mutex::new((None::<Instant>, 0usize, Vec::<f64>::new(), 0usize)));
            let observer = {
                let log = log.clone();
                StepObserver::new(move |s| {
                    let now = Instant::now();
                    let mut log = log.lock().expect("log");
                    if log.1 >= skip
                        && let Some(last) = log.0
                    {
                        log.2.push((now - last).as_secs_f64() * 1e3);
                        log.3 += s.examples;
                    }
                    log.1 += 1;
                    log.0 = Some(Instant::now());
                })
            };
            let train_options = TrainOptions {
                quiet: true,
                backend: options.backend.clone(),
                on_step: Some(observer),
                parallel: DataParallel::new(peers),
                ..Default::default()
            };
            if setup == 0 {
                setup = crate::memory::reset_peak();
            }
            loraxs_train::train::<Autodiff<B>>(&run, &model, &data_dir, device, &train_options)
                .map_err(|e| format!("{peers} peer(s): {e}"))?;
            let log = log.lock().expect("log");
            let total: f64 = log.2.iter().sum();
            rates[which].push(log.3 as f64 / (total / 1e3));
            times[which].extend(&log.2);
        }
    }
    let variants: Vec<Variant> = (0..2)
        .map(|i| Variant {
            workload: format!("{} peer{}", i + 1, if i == 0 { "" } else { "s" }),
            times_ms: times[i].clone(),
            median_ms: median(&times[i]),
            ratio_to_base: median(&times[i]) / median(&times[0]),
            ratio_quartiles: [f64::NAN, f64::NAN],
            requests_per_s: None,
            latency_ms: None,
        })
        .collect();
    let mut allreduce = Vec::new();
    for (name, adapter) in [
        ("lora-xs r=16", Some(AdapterConfig::lora_xs(16))),
        ("lora r=8", Some(AdapterConfig::lora(8))),
        ("full", None),
    ] {
        allreduce.push(allreduce_cost::<B>(name, adapter, &model, options, device)?);
    }
    let examples_per_s = [median(&rates[0]), median(&rates[1])];
    let mut report = crate::workload::report(options, times[0].clone(), setup, crate::memory::peak_rss());
    report.variants = Some(variants);
    report.examples_per_s = Some(examples_per_s[0]);
    report.scale = Some(ScaleStats {
        examples_per_s,
        allreduce,
    });
    Ok(report)
}

/// Shapes of the trainable float parameters.
struct Trainable(Vec<Vec<usize>>);

impl<B: Backend> ModuleVisitor<B> for Trainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if param.is_require_grad() {
            self.0.push(param.val().dims().to_vec());
        }
    }
}

fn allreduce_cost<B: loraxs_models::KernelBackend>(
    method: &str,
    adapter: Option<AdapterConfig>,
    model: &ModelDir,
    options: &Options,
    device: &B::Device,
) -> Result<AllReduceCost, String> {
    type AB<B> = Autodiff<B>;
    let (encoder, _) = model.encoder::<AB<B>>(device).map_err(|e| e.to_string())?;
    let encoder = match &adapter {
        Some(config) => loraxs::inject(encoder, config).map_err(|e| e.to_string())?.model,
        None => encoder.map(&mut crate::workload::TrainAll),
    };
    let head = HeadConfig::new(HeadStyle::Roberta, encoder.hidden_size(), 2).init::<AB<B>>(device);
    let classifier = SequenceClassifier { encoder, head };
    let mut trainable = Trainable(Vec::new());
    classifier.visit(&mut trainable);
    drop(classifier);
    let shapes = trainable.0;
    let values: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    let reps = options.reps.max(3) + options.warmup;
    reset_collective::<B>();
    let config = CollectiveConfig::default().with_num_devices(2);
    let timed = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2u32)
            .map(|id| {
                let (shapes, config, device) = (&shapes, config.clone(), device.clone());
                scope.spawn(move || -> Result<Vec<f64>, String> {
                    let peer = PeerId::from(id);
                    register::<B>(peer, device.clone(), config).map_err(|e| format!("{e:?}"))?;
                    let tensors: Vec<Tensor<B, 1>> = shapes
                        .iter()
                        .map(|s| Tensor::ones([s.iter().product::<usize>()], &device))
                        .collect();
                    let mut times = Vec::new();
                    for _ in 0..reps {
                        let started = Instant::now();
                        for t in &tensors {
                            let summed = all_reduce::<B>(
                                peer,
                                t.clone().into_primitive().tensor(),
                                ReduceOperation::Sum,
                            )
                            .map_err(|e| format!("{e:?}"))?;
                            drop(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(summed)));
                        }
                        B::sync(&device).map_err(|e| format!("{e:?}"))?;
                        times.push(started.elapsed().as_secs_f64() * 1e3);
                    }
                    finish_collective::<B>(peer).map_err(|e| format!("{e:?}"))?;
                    Ok(times)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "an all-reduce peer panicked".to_string())?)
            .collect::<Result<Vec<_>, String>>()
    })?;
    reset_collective::<B>();
    let times = &timed[0][options.warmup.min(timed[0].len() - 1)..];
    Ok(AllReduceCost {
        method: method.into(),
        values,
        bytes_per_peer: values * 4,
        tensors: shapes.len(),
        median_ms: median(times),
    })
}
