//! The experiment layer on its own: profiles, planning, the results file
//! and the table, with no training.

use std::collections::BTreeMap;
use std::path::Path;

use loraxs::{AdapterConfig, Factors, Method};
use loraxs_data::{GlueTask, Split};
use loraxs_experiments::{
    BUILT_IN, ExperimentError, Overrides, Profile, Results, figure_paths, glue_table, param_points, plan,
    write_report,
};
use loraxs_train::{EpochRecord, RunConfig, RunRecord};

/// A data folder where `tasks` have (empty) train and dev files.
fn data_dir(tasks: &[GlueTask]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for &task in tasks {
        for &split in [Split::Train].iter().chain(task.dev_splits()) {
            let path = task.path(dir.path(), split);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
    }
    dir
}

#[test]
fn every_built_in_profile_parses_and_plans() {
    let data = data_dir(&GlueTask::ALL);
    for (name, _) in BUILT_IN {
        let profile = Profile::load(name).unwrap();
        assert_eq!(profile.name, name);
        assert!(!profile.doc.is_empty(), "{name}: say what the profile is for");
        let plan = plan(&profile, &Overrides::default(), data.path(), Path::new("ckpt")).unwrap();
        assert!(!plan.runs.is_empty(), "{name}");
        // Keys name runs uniquely: the results file de-duplicates by them.
        let mut keys = plan.keys();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), plan.runs.len(), "{name}: duplicate run keys");
    }
}

#[test]
fn the_paper_grid_plans_every_rate_pair_seed_and_rank_with_mnli_first() {
    let profile = Profile::load("paper").unwrap();
    let data = data_dir(&[GlueTask::Mnli, GlueTask::Rte, GlueTask::Sst2]);
    let plan = plan(&profile, &Overrides::default(), data.path(), Path::new("ckpt")).unwrap();
    // MNLI and SST-2: 3 × 3 rates; RTE: 2 × 2; × 5 seeds × 6 ranks.
    let per = |task| plan.runs.iter().filter(|r| r.task == task).count();
    assert_eq!(per(GlueTask::Mnli), 9 * 5 * 6);
    assert_eq!(per(GlueTask::Sst2), 9 * 5 * 6);
    assert_eq!(per(GlueTask::Rte), 4 * 5 * 6);
    assert_eq!(plan.runs[0].task, GlueTask::Mnli, "MNLI runs first");
    // RTE starts from the MNLI adapter of its rank and seed, 50 epochs.
    let rte = plan
        .runs
        .iter()
        .find(|r| r.task == GlueTask::Rte && r.adapter.rank == 12 && r.seed == 3)
        .unwrap();
    assert_eq!(rte.epochs, 50);
    let from = rte.init_from.as_ref().unwrap().to_string_lossy().into_owned();
    assert!(from.starts_with("ckpt/mnli-lora-xs-r12-s3-"), "{from}");
    assert!(from.ends_with("/adapter.safetensors"), "{from}");
    assert_eq!(rte.warmup_ratio, 0.0);
    // Missing tasks are skipped with a note naming the file.
    assert!(plan.notes.iter().any(|n| n.starts_with("CoLA: skipped, missing")));
}

#[test]
fn the_study_profiles_beside_the_built_in_ones_still_parse_and_plan() {
    // Studies documented in docs/glue.md are run from these files by path;
    // a schema change must not leave them unrunnable.
    let data = data_dir(&GlueTask::ALL);
    let study = Profile::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/profiles/glue-cola-study.json"
    ))
    .unwrap();
    assert_eq!(study.name, "cola-study");
    let keys = plan(&study, &Overrides::default(), data.path(), Path::new("c"))
        .unwrap()
        .keys();
    assert_eq!(
        keys,
        [
            "cola-lora-xs-r16-s0-lr0.01-hlr0.002-e10-nall-w4-do0",
            "cola-lora-xs-r16-s0-lr0.03-hlr0.002-e10-nall-w4-do0",
            "cola-lora-r8-s0-lr0.003-hlr0.002-e10-nall-w4-do0",
        ]
    );
}

#[test]
fn a_table_of_records_is_planned_without_the_data() {
    // `report glue` on a machine without the GLUE files must still pick the
    // profile's records (not every record of the file, superseded rates
    // included): it plans with no data folder.
    let profile = Profile::load("standard").unwrap();
    let data = data_dir(&GlueTask::ALL);
    let with = plan(&profile, &Overrides::default(), data.path(), Path::new("c")).unwrap();
    let without =
        loraxs_experiments::plan_with(&profile, &Overrides::default(), None, Path::new("c")).unwrap();
    assert_eq!(with.keys(), without.keys());
    let empty = tempfile::tempdir().unwrap();
    assert!(
        plan(&profile, &Overrides::default(), empty.path(), Path::new("c"))
            .unwrap()
            .runs
            .is_empty()
    );
}

#[test]
fn a_piece_of_a_profile_is_tabulated_with_the_whole_profile() {
    // `reproduce --tasks cola --seeds 2 --lr 0.05` trains a piece; its table
    // is drawn from the plan of `recipe_only`: every task, method and seed of
    // the profile, with the piece's recipe (the rate) kept.
    let profile = Profile::load("standard").unwrap();
    let data = data_dir(&GlueTask::ALL);
    let piece = Overrides {
        tasks: Some(vec!["cola".into()]),
        methods: Some(vec!["lora".into()]),
        ranks: Some(vec![4]),
        seeds: Some(vec![2]),
        lr: Some(0.05),
        ..Default::default()
    };
    let whole = piece.recipe_only();
    assert_eq!(whole.lr, Some(0.05));
    assert!(
        whole.tasks.is_none() && whole.methods.is_none() && whole.ranks.is_none() && whole.seeds.is_none()
    );
    let piece_keys = plan(&profile, &piece, data.path(), Path::new("c"))
        .unwrap()
        .keys();
    let whole_plan = plan(&profile, &whole, data.path(), Path::new("c")).unwrap();
    let full = plan(&profile, &Overrides::default(), data.path(), Path::new("c")).unwrap();
    assert_eq!(piece_keys.len(), 1);
    assert_eq!(whole_plan.runs.len(), full.runs.len());
    assert!(whole_plan.runs.iter().all(|r| r.lr == 0.05));
    let tasks: std::collections::BTreeSet<_> = whole_plan.runs.iter().map(|r| r.task).collect();
    assert_eq!(tasks.len(), profile.tasks.len());
    // The piece's own rank is not the profile's: the table adds it.
    assert!(!whole_plan.keys().contains(&piece_keys[0]));
}

#[test]
fn overrides_replace_the_profile_and_bad_values_name_the_field() {
    let profile = Profile::load("quick").unwrap();
    let data = data_dir(&[GlueTask::Sst2, GlueTask::Rte]);
    let overrides = Overrides {
        tasks: Some(vec!["rte".into()]),
        methods: Some(vec!["lora-xs-random".into(), "full".into()]),
        ranks: Some(vec![2, 3]),
        seeds: Some(vec![7]),
        lr: Some(0.5),
        train_subset: Some(0),
        ..Default::default()
    };
    let mut profile_with_settings = profile.clone();
    let xs = profile.method_settings["lora-xs"].clone();
    profile_with_settings
        .method_settings
        .insert("lora-xs-random".into(), xs.clone());
    profile_with_settings.method_settings.insert("full".into(), xs);
    let planned = plan(&profile_with_settings, &overrides, data.path(), Path::new("c")).unwrap();
    // Random factors at two ranks, full fine-tuning once (no rank).
    assert_eq!(planned.runs.len(), 3);
    assert!(
        planned
            .runs
            .iter()
            .all(|r| r.task == GlueTask::Rte && r.seed == 7 && r.lr == 0.5)
    );
    assert!(planned.runs.iter().all(|r| r.train_subset.is_none()));
    assert_eq!(planned.runs[0].adapter.factors, Factors::Random);
    assert_eq!(planned.runs[2].adapter.method, Method::Full);

    let err = |o: Overrides| {
        plan(&profile, &o, data.path(), Path::new("c"))
            .unwrap_err()
            .to_string()
    };
    let e = err(Overrides {
        tasks: Some(vec!["mnlii".into()]),
        ..Default::default()
    });
    assert!(
        e.starts_with("profile quick: unknown task `mnlii`: expected one of"),
        "{e}"
    );
    let e = err(Overrides {
        methods: Some(vec!["vera".into()]),
        ..Default::default()
    });
    assert_eq!(e, "profile quick: no `method_settings` for method `vera`");
    let bad = Profile::from_json("broken", r#"{"model": "minilm"}"#).unwrap_err();
    assert!(
        bad.to_string().starts_with("profile broken: missing field"),
        "{bad}"
    );
    assert!(matches!(
        Profile::load("nope"),
        Err(ExperimentError::Profile { .. })
    ));
}

fn record(task: GlueTask, preset: &str, rank: usize, seed: u64, lr: f64, value: f64) -> RunRecord {
    let adapter = AdapterConfig::preset(preset, rank).unwrap().with_seed(seed);
    let mut config = RunConfig::new(task, adapter, lr, 1e-3, 2);
    config.seed = seed;
    let metric = task.metrics()[0].name().to_string();
    let best = EpochRecord {
        epoch: 2,
        train_loss: 0.5,
        metrics: BTreeMap::from([(metric.clone(), value)]),
        step_losses: vec![0.7, 0.5],
    };
    RunRecord {
        key: config.key(),
        config,
        epochs: vec![best.clone()],
        best,
        metric,
        trainable_adapter: rank * rank * 24,
        trainable_head: 100,
        train_examples: 10,
        wall_seconds: 60.0,
        examples_per_second: 1.0,
        backend: "flex".into(),
        model: "minilm".into(),
        git_commit: "abc".into(),
        constant_baseline: BTreeMap::from([(task.metrics()[0].name().to_string(), 0.5)]),
    }
}

#[test]
fn the_table_takes_the_median_over_seeds_of_the_best_rate_pair() {
    let records = vec![
        // LoRA-XS on RTE: lr 1e-3 → seeds 0.6, 0.7, 0.2 (median 0.6); lr 1e-4 → 0.5, 0.55 (0.525).
        record(GlueTask::Rte, "lora-xs", 4, 0, 1e-3, 0.6),
        record(GlueTask::Rte, "lora-xs", 4, 1, 1e-3, 0.7),
        record(GlueTask::Rte, "lora-xs", 4, 2, 1e-3, 0.2),
        record(GlueTask::Rte, "lora-xs", 4, 0, 1e-4, 0.5),
        record(GlueTask::Rte, "lora-xs", 4, 1, 1e-4, 0.55),
        record(GlueTask::Sst2, "lora-xs", 4, 0, 1e-3, 0.9),
        // LoRA on RTE only: no average.
        record(GlueTask::Rte, "lora", 8, 0, 1e-3, 0.65),
    ];
    let table = glue_table("unit", &records, &["SST-2 note".into()]);
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| LoRA") || l.starts_with("| Best"))
        .collect();
    assert_eq!(
        rows,
        [
            // The reference: each record kept 0.5 as its best constant prediction.
            "| Best constant prediction | 0 | 0 | 50.0 | 50.0 | 50.0 |",
            "| LoRA (r=8) | 1536 | 100 | – | 65.0 (1 seed) | – |",
            "| LoRA-XS (r=4) | 384 | 100 | 90.0 (1 seed) | 60.0 (20.0–70.0, 3 seeds, best of 2 lr pairs) | 75.0 |",
        ],
        "{table}"
    );
    // A median less than 2 points above the reference is flagged.
    let mut flagged = records.clone();
    flagged.push(record(GlueTask::Sst2, "lora", 8, 0, 1e-3, 0.512));
    let table = glue_table("unit", &flagged, &[]);
    assert!(
        table.contains("| LoRA (r=8) | 1536 | 100 | 51.2 (1 seed) ‡ | 65.0 (1 seed) | 58.1 |"),
        "{table}"
    );
    // Records written before the reference was kept leave its row out.
    let old: Vec<RunRecord> = records
        .iter()
        .cloned()
        .map(|mut r| {
            r.constant_baseline.clear();
            r
        })
        .collect();
    assert!(!glue_table("unit", &old, &[]).contains("| Best constant"));
    let table = glue_table("unit", &records, &["SST-2 note".into()]);
    assert!(table.contains("| | | | accuracy | accuracy | |"), "{table}");
    assert!(table.contains("7 runs; model minilm; backend flex; total wall time 7.0 min"));
    assert!(table.ends_with("\n- SST-2 note\n"), "{table}");
}

#[test]
fn a_torn_last_line_is_reported_and_replaced_by_the_next_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let mut results = Results::open(&path).unwrap();
    assert!(results.records.is_empty());
    let first = record(GlueTask::Rte, "lora-xs", 4, 0, 1e-3, 0.6);
    let second = record(GlueTask::Rte, "lora-xs", 4, 1, 1e-3, 0.7);
    results.append(first.clone()).unwrap();
    // A run killed while writing its record: half a line, no newline.
    let line = serde_json::to_string(&second).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&line.as_bytes()[..line.len() / 2]);
    std::fs::write(&path, &bytes).unwrap();

    let mut results = Results::open(&path).unwrap();
    assert_eq!(results.records, vec![first.clone()]);
    assert!(results.torn_tail.is_some());
    assert!(
        results.has(&first.key) && !results.has(&second.key),
        "the torn run runs again"
    );
    results.append(second.clone()).unwrap();
    let reread = Results::open(&path).unwrap();
    assert_eq!(reread.records, vec![first, second]);
    assert!(reread.torn_tail.is_none());

    // A damaged complete line is an error naming the line, not skipped.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.insert_str(0, "{\"key\": 3}\n");
    std::fs::write(&path, text).unwrap();
    let err = Results::open(&path).unwrap_err().to_string();
    assert!(err.contains("results.jsonl:1: not a run record"), "{err}");
}

#[test]
fn the_committed_quick_table_is_the_table_of_its_committed_records() {
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/results");
    let records = Results::open(results.join("glue-quick.jsonl")).unwrap().records;
    assert_eq!(records.len(), 10);
    let committed = std::fs::read_to_string(results.join("glue-quick.md")).unwrap();
    let table = glue_table("quick", &records, &[]);
    // Every table line and the summary line, as written from these records
    // (the committed file adds a note at the top and the run's notes).
    let lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with('|') || l.contains(" runs; model "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(lines(&table), lines(&committed));
    // Header (3), reference row, two methods, summary, runs header (2), runs.
    assert_eq!(lines(&table).len(), 3 + 1 + 2 + 1 + 2 + 10, "{table}");
    assert!(table.contains("| Best constant prediction | 0 | 0 |"), "{table}");
}

#[test]
fn the_runs_table_lists_each_record_with_its_start_and_best_epoch() {
    let mut from_mnli = record(GlueTask::Mrpc, "lora-xs", 4, 1, 2e-3, 0.8125);
    from_mnli.config.init_from = Some("mnli/adapter.safetensors".into());
    from_mnli.best.epoch = 3;
    from_mnli.wall_seconds = 12.4;
    let table = glue_table("unit", &[from_mnli], &[]);
    assert!(
        table.contains(
            "| MRPC | LoRA-XS (r=4) | 1 | 10 | 2 | 2e-3 | 1e-3 | MNLI adapter | 81.2 | 3 | 0.8125 | 12 |"
        ),
        "{table}"
    );
    assert!(
        table.contains("| LoRA-XS (r=4) | 384 | 100 | 81.2 (1 seed) | 81.2 |"),
        "{table}"
    );
}

#[test]
fn the_report_draws_the_papers_figures_from_the_records() {
    let mut records = vec![
        record(GlueTask::Sst2, "lora-xs", 4, 0, 1e-3, 0.80),
        record(GlueTask::Sst2, "lora-xs", 4, 1, 1e-3, 0.84),
        record(GlueTask::Sst2, "lora-xs", 4, 2, 1e-3, 0.82),
        record(GlueTask::Sst2, "lora-xs", 8, 0, 1e-3, 0.86),
        record(GlueTask::Sst2, "lora", 8, 0, 1e-3, 0.88),
        record(GlueTask::Stsb, "lora-xs", 4, 0, 1e-3, 0.30),
    ];
    // Parameter points: the median over seeds per rank, sorted by size.
    let points = param_points(&records);
    assert_eq!(
        points[&GlueTask::Sst2]["lora-xs"],
        vec![(384.0, 82.0), (1536.0, 86.0)]
    );
    assert_eq!(points[&GlueTask::Sst2]["lora"], vec![(1536.0, 88.0)]);
    assert_eq!(points[&GlueTask::Stsb]["lora-xs"], vec![(384.0, 30.0)]);
    records[5].epochs[0].step_losses = (0..200).map(|i| 3.0 / (1.0 + i as f32)).collect();

    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("glue-unit.jsonl");
    let table = write_report("unit", &records, &[], &results).unwrap();
    let text = std::fs::read_to_string(&table).unwrap();
    let figures = figure_paths(&results);
    assert_eq!(figures[0].file_name().unwrap(), "glue-unit-params.svg");
    assert!(
        text.contains("[dev metric against trainable values](glue-unit-params.svg)"),
        "{text}"
    );
    for figure in &figures {
        let svg = std::fs::read_to_string(figure).unwrap();
        assert!(svg.starts_with("<svg"), "{}", figure.display());
        for caption in ["SST-2", "STS-B"] {
            assert!(svg.contains(caption), "{} lacks {caption}", figure.display());
        }
    }
    let params = std::fs::read_to_string(&figures[0]).unwrap();
    // Three LoRA-XS points and one LoRA point, a legend, the reference.
    assert_eq!(params.matches("<circle").count(), 4, "{params}");
    assert!(params.contains("LoRA-XS") && params.contains("best constant prediction"));
    // The loss panel of STS-B draws its 200 steps as one polyline.
    let loss = std::fs::read_to_string(&figures[1]).unwrap();
    assert!(loss.contains("<polyline"), "no loss curve drawn");
    // A method's runs share a colour whatever their rank, so they share
    // one legend entry naming the ranks; two panels fill the grid, so each
    // panel carries its own legend.
    let dev = std::fs::read_to_string(&figures[2]).unwrap();
    assert_eq!(svg_texts(&dev, "LoRA-XS (r=4, 8)"), 2, "{dev}");
    assert_eq!(svg_texts(&dev, "LoRA-XS (r=4)"), 0, "{dev}");
    assert_eq!(svg_texts(&dev, "best constant prediction"), 2, "{dev}");
}

/// How often `text` is a text element of `svg` (plotters writes each on a
/// line of its own).
fn svg_texts(svg: &str, text: &str) -> usize {
    svg.matches(&format!("\n{text}\n</text>")).count()
}

#[test]
fn five_tasks_share_one_legend_in_the_grids_spare_cell() {
    let tasks = [
        GlueTask::Sst2,
        GlueTask::Cola,
        GlueTask::Rte,
        GlueTask::Mrpc,
        GlueTask::Stsb,
    ];
    let records: Vec<RunRecord> = tasks
        .iter()
        .flat_map(|&t| {
            [
                record(t, "lora-xs", 16, 0, 1e-2, 0.6),
                record(t, "lora", 8, 0, 3e-3, 0.7),
                record(t, "full", 0, 0, 5e-5, 0.8),
            ]
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("glue-five.jsonl");
    write_report("five", &records, &[], &results).unwrap();
    // The parameters figure shows the rank on its x axis and names the
    // methods alone; the per-run figures name the rank too.
    let [params, loss, dev] = figure_paths(&results);
    for (figure, entries) in [
        (params, ["LoRA-XS", "LoRA", "Full FT", "best constant prediction"]),
        (
            dev,
            [
                "LoRA-XS (r=16)",
                "LoRA (r=8)",
                "Full FT",
                "best constant prediction",
            ],
        ),
        (loss, ["LoRA-XS (r=16)", "LoRA (r=8)", "Full FT", "LoRA (r=8)"]),
    ] {
        let svg = std::fs::read_to_string(&figure).unwrap();
        for entry in entries {
            assert_eq!(
                svg_texts(&svg, entry),
                1,
                "{} names {entry} once, in the spare cell",
                figure.display()
            );
        }
    }
}

#[test]
fn runs_that_differ_in_window_or_dropout_are_rows_of_their_own_not_seeds() {
    let plain = record(GlueTask::Stsb, "lora-xs", 4, 0, 1e-2, 0.2);
    let mut no_dropout = record(GlueTask::Stsb, "lora-xs", 4, 0, 1e-2, 0.6);
    no_dropout.config.encoder_dropout = Some(0.0);
    let mut wide = record(GlueTask::Stsb, "lora-xs", 4, 0, 1e-2, 0.1);
    wide.config.bucket_window = 50;
    let study = [plain.clone(), no_dropout, wide];
    let table = glue_table("study", &study, &[]);
    // The parameters figure keeps them apart too.
    let points = param_points(&study);
    let families: Vec<&String> = points[&GlueTask::Stsb].keys().collect();
    assert_eq!(
        families,
        [
            "lora-xs · window 4, dropout 0",
            "lora-xs · window 4, dropout model",
            "lora-xs · window 50, dropout model"
        ]
    );
    for row in [
        // The records' reference is 50: 20 and 10 are flagged.
        "| LoRA-XS (r=4) · window 4, dropout model | 384 | 100 | 20.0 (1 seed) ‡ |",
        "| LoRA-XS (r=4) · window 4, dropout 0 | 384 | 100 | 60.0 (1 seed) |",
        "| LoRA-XS (r=4) · window 50, dropout model | 384 | 100 | 10.0 (1 seed) ‡ |",
    ] {
        assert!(table.contains(row), "{row} in {table}");
    }
    assert!(!table.contains("3 seeds"), "{table}");
    // One variant: plain labels and a line naming the settings.
    let table = glue_table("unit", &[plain], &[]);
    assert!(table.contains("| LoRA-XS (r=4) | 384 |"), "{table}");
    assert!(table.contains("Every run: window 4, dropout model."), "{table}");
}

#[test]
fn math_profiles_parse_and_the_paper_profile_is_the_authors_recipe() {
    use loraxs_experiments::{MATH_BUILT_IN, MathProfile};
    for (name, _) in MATH_BUILT_IN {
        let p = MathProfile::load(name).unwrap();
        assert!(!p.runs().unwrap().is_empty(), "{name}");
    }
    let paper = MathProfile::load("paper").unwrap();
    let runs = paper.runs().unwrap();
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!((r.adapter.rank, r.adapter.alpha, r.lr), (64, 64.0, 4e-3));
    assert_eq!(r.adapter.scale(), 1.0);
    assert_eq!(r.adapter.targets, loraxs::TargetModules::paper_decoder());
    assert_eq!(
        (r.micro_batch * r.accumulation, r.max_length, r.epochs),
        (128, 512, 2)
    );
    assert_eq!(
        (r.warmup_ratio, r.weight_decay, r.train_subset),
        (0.02, 0.0, Some(100_000))
    );
    assert_eq!(r.prompt, loraxs_train::PromptStyle::Alpaca);

    // A misspelt field is refused, naming it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("math-typo.json");
    let text = include_str!("../profiles/math-smoke.json").replace("\"epochs\"", "\"epoch\"");
    std::fs::write(&path, text).unwrap();
    let e = MathProfile::load(path.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("unknown field `epoch`"), "{e}");
}

#[test]
fn the_math_table_lists_every_planned_row() {
    use loraxs_experiments::{BaseRecord, MathProfile, MathRecord, math_table};
    let p = MathProfile::load("smoke").unwrap();
    let base = MathRecord::Base(BaseRecord {
        key: p.base_key(),
        metrics: [
            ("accuracy".to_string(), 0.25),
            ("accuracy_flexible".to_string(), 0.5),
            ("answer_loss".to_string(), 1.5),
        ]
        .into_iter()
        .collect(),
        eval_examples: 4,
        wall_seconds: 12.0,
        backend: "flex".into(),
        model: "smollm2".into(),
        git_commit: "x".into(),
    });
    let table = math_table(&p, &[base]);
    assert!(
        table.contains("| base model, no adapter | 0 | – | 25.0 % (4 problems) | 50.0 % | 1.5000 |"),
        "{table}"
    );
    assert!(
        table.contains("| LoRA-XS r=8, lr 4e-3, seed 0 | | | not run |"),
        "{table}"
    );
}

// ---- Export with a task head (`cargo xtask export` without --drop-head) ----

/// A LoRA-XS adapter of MiniLM (seeded, clearly non-zero `R`, random
/// factors) with a task
/// head of `style` and `labels` outputs, larger than a fresh head so that
/// the logits differ visibly; label names when given.
fn adapter_with_head(
    model: &loraxs_models::ModelDir,
    style: loraxs_heads::HeadStyle,
    labels: usize,
    names: Option<Vec<String>>,
) -> (
    loraxs_heads::SequenceClassifier<burn::backend::NdArray<f32>>,
    loraxs::AdapterFile,
) {
    type B = burn::backend::NdArray<f32>;
    let device = Default::default();
    let (encoder, _) = model.encoder::<B>(&device).unwrap();
    // Seeded random factors: the same bytes on every CPU, where SVD factors
    // differ in their last bits between AVX2 and AVX-512 machines (see
    // loraxs-models' export test).
    let config = AdapterConfig::lora_xs(16)
        .with_alpha(8.0)
        .with_seed(3)
        .with_factors(Factors::Random)
        .with_r_init(loraxs::RInit::Gaussian { std: 0.5 });
    let hidden = encoder.hidden_size();
    let adapted = loraxs::inject(encoder, &config).unwrap();
    let mut file = adapted.to_file(loraxs::SaveOptions::default()).unwrap();
    let mut head_config = loraxs_heads::HeadConfig::new(style, hidden, labels);
    head_config.seed = 5;
    let head = head_config.init::<B>(&device);
    let head = loraxs_heads::Head {
        out_proj: burn::nn::Linear {
            weight: head.out_proj.weight.map(|w| w.mul_scalar(25.0)),
            bias: head.out_proj.bias,
        },
        ..head
    };
    head.store(&mut file).unwrap();
    if let Some(names) = names {
        file.set_labels(names).unwrap();
    }
    let classifier = loraxs_heads::SequenceClassifier {
        encoder: adapted.model,
        head,
    };
    (classifier, file)
}

#[test]
fn exports_carry_the_task_head() {
    use loraxs_experiments::{ExportFormat, ExportRequest, export};
    use loraxs_heads::HeadStyle;
    let Some(model) = loraxs_models::testing::test_model() else {
        return;
    };
    let model_dir = loraxs_models::default_model_dir();
    let names = vec!["negative".to_string(), "positive".to_string()];
    // The GLUE trainer's RoBERTa-style head (a trained pooler on BERT) with
    // label names, and a BERT-style head (the base's pooler) without.
    for (style, labels, names, fixture) in [
        (
            HeadStyle::Roberta,
            2,
            Some(names.clone()),
            "minilm_export_head_roberta",
        ),
        (HeadStyle::Bert, 3, None, "minilm_export_head_bert"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let (classifier, file) = adapter_with_head(&model, style, labels, names.clone());
        let adapter = out.path().join("adapter.safetensors");
        file.save(&adapter).unwrap();
        let request = |to, dir: &str| ExportRequest {
            model: model_dir.clone(),
            adapter: adapter.clone(),
            to,
            out: out.path().join(dir),
            pad_rank: false,
            module_prefix: String::new(),
            drop_head: false,
        };
        let said = export(&request(ExportFormat::Peft, "peft")).unwrap();
        assert!(said.contains("BertForSequenceClassification"), "{said}");
        export(&request(ExportFormat::Merged, "merged")).unwrap();
        let peft_dir = out.path().join("peft");
        let merged_dir = out.path().join("merged");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(peft_dir.join("adapter_config.json")).unwrap())
                .unwrap();
        assert_eq!(config["task_type"], "SEQ_CLS");
        let saved = if style == HeadStyle::Roberta {
            serde_json::json!(["pooler", "classifier"])
        } else {
            serde_json::json!(["classifier"])
        };
        assert_eq!(config["modules_to_save"], saved);

        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{fixture}.safetensors"));
        let record = match std::env::var_os("LORAXS_TORCH_PYTHON") {
            Some(python) => {
                let target = if std::env::var_os("LORAXS_UPDATE_FIXTURES").is_some() {
                    fixture.clone()
                } else {
                    out.path().join("record.safetensors")
                };
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/check_export.py");
                let status = std::process::Command::new(python)
                    .arg(script)
                    .args(["--classify", &labels.to_string()])
                    .args([&model_dir, &peft_dir, &merged_dir, &target])
                    .status()
                    .unwrap();
                assert!(status.success(), "tools/check_export.py --classify failed");
                target
            }
            None => fixture,
        };
        let bytes = std::fs::read(&record).unwrap_or_else(|e| panic!("{}: {e}", record.display()));
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        // The record describes the files just written, up to round-off
        // (else: rerun with LORAXS_TORCH_PYTHON=<python with torch,
        // transformers, peft> LORAXS_UPDATE_FIXTURES=1).
        let what = record.display().to_string();
        loraxs_models::testing::same_tensors(
            &peft_dir.join("adapter_model.safetensors"),
            &meta["adapter_checksum"],
            &what,
        );
        loraxs_models::testing::same_tensors(
            &merged_dir.join("model.safetensors"),
            &meta["merged_checksum"],
            &what,
        );
        let floats = |name: &str| -> Vec<f32> {
            st.tensor(name)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let ids = |name: &str| -> Vec<u32> {
            st.tensor(name)
                .unwrap()
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
                .collect()
        };
        let shape = st.tensor("input_ids").unwrap().shape().to_vec();
        let input_ids = ids("input_ids");
        let batch = loraxs_models::TokenBatch {
            batch: shape[0],
            seq_len: shape[1],
            token_type_ids: vec![0; input_ids.len()],
            input_ids,
            attention_mask: ids("attention_mask"),
        };
        let device = Default::default();
        let ours: Vec<f32> = classifier
            .forward(classifier.encoder.input(&batch, &device).unwrap())
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap();
        let max = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert_eq!(ours.len(), 2 * labels);
        // The exported head is what transformers used: a fresh head gives
        // other logits.
        assert!(
            max(&ours, &floats("fresh_logits")) > 1e-2,
            "{style:?}: the test head is too small"
        );
        // PEFT left the base alone: with the adapter disabled it computes
        // what the fresh model did (a head written over the base's pooler
        // instead of kept under modules_to_save would not).
        let disabled = max(&floats("disabled_logits"), &floats("fresh_logits"));
        assert!(disabled <= 1e-6, "{style:?}: PEFT's base changed: {disabled}");
        let peft = max(&ours, &floats("peft_logits"));
        let merged = max(&ours, &floats("merged_logits"));
        eprintln!(
            "{style:?} head: max |Δ logit| loraxs vs PEFT {peft:.2e}, vs the merged folder {merged:.2e}"
        );
        assert!(
            peft <= 1e-4,
            "{style:?}: loraxs vs PEFT with modules_to_save: {peft}"
        );
        assert!(
            merged <= 1e-4,
            "{style:?}: loraxs vs the merged classifier folder: {merged}"
        );
        assert_eq!(meta["merged_class"], "BertForSequenceClassification");
        let expected: Vec<String> =
            names.unwrap_or_else(|| (0..labels).map(|i| format!("LABEL_{i}")).collect());
        let id2label: serde_json::Value = serde_json::from_str(&meta["merged_id2label"]).unwrap();
        for (i, name) in expected.iter().enumerate() {
            assert_eq!(id2label[i.to_string()], *name.as_str());
        }
    }
}
