//! Scale-out from the command line, on MiniLM and the real RTE/MRPC data
//! (skipped loudly without them, a failure under CI): a grid trained
//! `--jobs 2` at a time writes the records a one-at-a-time run writes; two
//! processes never append to one results file; two nodes on loopback
//! (burn's collective over WebSockets, an orchestrator process) train the
//! run one process trains.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use loraxs_experiments::{Results, ResultsLock};
use loraxs_train::RunRecord;

const BIN: &str = env!("CARGO_BIN_EXE_loraxs-experiments");

fn inputs() -> Option<(PathBuf, PathBuf)> {
    Some((
        loraxs_models::testing::test_model()?.dir,
        loraxs_models::testing::test_data_dir()?,
    ))
}

/// `reproduce glue` on the smoke profile, narrowed by `extra`.
fn reproduce(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["reproduce", "glue", "--profile", "smoke", "--quiet"])
        .arg("--model")
        .arg(model)
        .arg("--data-dir")
        .arg(data)
        .arg("--results")
        .arg(out.join("results.jsonl"))
        .arg("--checkpoints")
        .arg(out.join("ckpt"))
        .args(extra);
    cmd
}

fn records(out: &Path) -> Vec<RunRecord> {
    let mut records = Results::open(out.join("results.jsonl")).unwrap().records;
    records.sort_by(|a, b| a.key.cmp(&b.key));
    records
}

/// Same runs, same epochs, step losses and dev metrics equal up to float
/// rounding (thread counts change the order of sums).
fn assert_same_runs(a: &[RunRecord], b: &[RunRecord], what: &str) {
    let keys = |r: &[RunRecord]| r.iter().map(|r| r.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(a), keys(b), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.epochs.len(), y.epochs.len(), "{what}: {}", x.key);
        for (e, f) in x.epochs.iter().zip(&y.epochs) {
            assert_eq!(e.step_losses.len(), f.step_losses.len(), "{what}: {}", x.key);
            for (l, m) in e.step_losses.iter().zip(&f.step_losses) {
                assert!(
                    (l - m).abs() <= 1e-4 * l.abs().max(1.0),
                    "{what}: {} epoch {}: step loss {l} vs {m}",
                    x.key,
                    e.epoch
                );
            }
            for (name, v) in &e.metrics {
                let w = f.metrics[name];
                assert!(
                    (v - w).abs() <= 1e-6 || (v.is_nan() && w.is_nan()),
                    "{what}: {} epoch {}: {name} {v} vs {w}",
                    x.key,
                    e.epoch
                );
            }
        }
    }
}

fn run_ok(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_grid_run_two_jobs_at_a_time_writes_the_records_of_one_at_a_time() {
    let Some((model, data)) = inputs() else { return };
    let narrow = ["--tasks", "rte,mrpc", "--methods", "lora-xs"];
    let one = tempfile::tempdir().unwrap();
    run_ok(reproduce(&model, &data, one.path(), &narrow), "one at a time");
    let two = tempfile::tempdir().unwrap();
    let mut cmd = reproduce(&model, &data, two.path(), &narrow);
    cmd.args(["--jobs", "2"]);
    run_ok(cmd, "--jobs 2");
    let (a, b) = (records(one.path()), records(two.path()));
    assert_eq!(a.len(), 2);
    assert_same_runs(&a, &b, "--jobs 2");
    // The table was written from the records, and no run left its
    // hand-over files behind.
    assert!(two.path().join("results.md").is_file());
    for r in &b {
        assert!(!two.path().join("ckpt").join(&r.key).join("record.json").exists());
    }
}

#[test]
fn each_piece_of_a_profile_rewrites_the_whole_profiles_table() {
    // The standard profile is run in pieces (`--tasks`, `--seeds`); the
    // table each piece writes must hold every record of the profile, not
    // the piece's alone.
    let Some((model, data)) = inputs() else { return };
    let out = tempfile::tempdir().unwrap();
    for task in ["rte", "mrpc"] {
        run_ok(
            reproduce(
                &model,
                &data,
                out.path(),
                &["--tasks", task, "--methods", "lora-xs"],
            ),
            task,
        );
    }
    assert_eq!(records(out.path()).len(), 2);
    let table = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    let header = table.lines().find(|l| l.starts_with("| method")).unwrap();
    assert!(header.contains("RTE") && header.contains("MRPC"), "{header}");
}

#[test]
fn two_processes_never_append_to_one_results_file() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("glue.jsonl");
    let held = ResultsLock::take(&results).unwrap();
    let err = ResultsLock::take(&results)
        .err()
        .expect("the file is held")
        .to_string();
    assert!(
        err.contains("another process is writing this results file"),
        "{err}"
    );
    assert!(err.contains("glue.jsonl"), "{err}");
    drop(held);
    ResultsLock::take(&results).expect("free again once the holder is gone");

    // And from the command line, while another process holds it.
    let Some((model, data)) = inputs() else { return };
    let _held = ResultsLock::take(&dir.path().join("results.jsonl")).unwrap();
    let out = reproduce(
        &model,
        &data,
        dir.path(),
        &["--tasks", "rte", "--methods", "lora-xs"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another process is writing"), "{stderr}");
    assert!(!dir.path().join("results.jsonl").exists(), "nothing written");
}

/// Kills a child process when dropped (a failed assertion must not leave
/// an orchestrator or a node behind).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn two_nodes_on_loopback_train_the_run_one_process_trains() {
    let Some((model, data)) = inputs() else { return };
    // Dropout off: each node would draw its own masks. Two epochs, so that
    // the nodes also meet at the leader's evaluation and checkpoint.
    let narrow = [
        "--tasks",
        "rte",
        "--methods",
        "lora-xs",
        "--epochs",
        "2",
        "--encoder-dropout",
        "0",
        "--head-dropout",
        "0",
    ];
    let alone = tempfile::tempdir().unwrap();
    run_ok(reproduce(&model, &data, alone.path(), &narrow), "one process");

    let port = free_port();
    let _orchestrator = Reaped(
        Command::new(BIN)
            .args(["orchestrator", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let nodes = tempfile::tempdir().unwrap();
    let node = |rank: u32| {
        let mut cmd = reproduce(&model, &data, nodes.path(), &narrow);
        cmd.args(["--nodes", "2", "--node-rank", &rank.to_string()])
            .arg("--orchestrator")
            .arg(format!("ws://127.0.0.1:{port}"))
            .arg("--node-address")
            .arg(format!("ws://127.0.0.1:{}", free_port()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Reaped(cmd.spawn().unwrap())
    };
    let mut leader = node(0);
    let mut follower = node(1);
    let wait = |child: &mut Reaped, what: &str| {
        // Bounded: a node that hangs fails the test instead of CI.
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                let mut stderr = String::new();
                use std::io::Read;
                child
                    .0
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
                assert!(status.success(), "{what}: {status}\n{stderr}");
                return;
            }
            assert!(
                started.elapsed().as_secs() < 300,
                "{what} did not finish within 5 minutes"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait(&mut leader, "node 0");
    wait(&mut follower, "node 1");
    let (a, b) = (records(alone.path()), records(nodes.path()));
    assert_eq!(b.len(), 1, "node 0 alone wrote the record");
    assert_same_runs(&a, &b, "two nodes");
}
