//! Reading GLUE files: every layout, every error, and the real files.

use std::path::Path;

use loraxs_data::{DataError, GlueTask, Label, Split, parse, read_split};

fn p() -> &'static Path {
    Path::new("t.tsv")
}

#[test]
fn cola_has_no_header_and_may_lack_a_final_newline() {
    let tsv = b"gj04\t1\t\tThe sailors rode the breeze.\ngj04\t0\t*\tThe more books.";
    let ex = parse(GlueTask::Cola, tsv, p()).unwrap();
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[1].text_a, "The more books.");
    assert_eq!(ex[1].label, Label::Class(0));
    assert_eq!(ex[0].text_b, None);
}

#[test]
fn mrpc_strips_the_bom_and_keeps_quotes() {
    let tsv =
        "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said \"no\".\t\"No,\" he said.\n";
    let ex = parse(GlueTask::Mrpc, tsv.as_bytes(), p()).unwrap();
    assert_eq!(ex[0].text_a, "He said \"no\".");
    assert_eq!(ex[0].text_b.as_deref(), Some("\"No,\" he said."));
    assert_eq!(ex[0].label, Label::Class(1));
}

#[test]
fn stsb_scores_and_crlf_lines() {
    let header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore";
    let tsv = format!("{header}\r\n0\tg\tf\t2012\t0\tn\tn\tA man.\tA person.\t4.250\r\n");
    let ex = parse(GlueTask::Stsb, tsv.as_bytes(), p()).unwrap();
    assert_eq!(ex[0].label, Label::Score(4.25));
    let bad = format!("{header}\n0\tg\tf\t2012\t0\tn\tn\tA man.\tA person.\t5.5\n");
    let err = parse(GlueTask::Stsb, bad.as_bytes(), p()).unwrap_err();
    assert_eq!(err.to_string(), "t.tsv:2: score `5.5` is not a number in [0, 5]");
}

#[test]
fn nli_labels_map_in_hugging_face_order() {
    let mnli = "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label\n\
                0\t1\t1\tg\tx\tx\tx\tx\tA.\tB.\tneutral\tneutral\n\
                1\t1\t1\tg\tx\tx\tx\tx\tA.\tB.\tcontradiction\tcontradiction\n";
    let ex = parse(GlueTask::Mnli, mnli.as_bytes(), p()).unwrap();
    assert_eq!(
        ex.iter().map(|e| e.label).collect::<Vec<_>>(),
        vec![Label::Class(1), Label::Class(2)]
    );
    let qnli = "index\tquestion\tsentence\tlabel\n0\tWhy?\tBecause.\tnot_entailment\n";
    assert_eq!(
        parse(GlueTask::Qnli, qnli.as_bytes(), p()).unwrap()[0].label,
        Label::Class(1)
    );
    let qqp = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n0\t1\t2\tA?\tB?\t1\n";
    assert_eq!(
        parse(GlueTask::Qqp, qqp.as_bytes(), p()).unwrap()[0]
            .text_b
            .as_deref(),
        Some("B?")
    );
}

#[test]
fn bad_rows_name_file_and_line() {
    let cases: Vec<(GlueTask, &str, &str)> = vec![
        (
            GlueTask::Sst2,
            "sentence\tlabel\ngood .\t1\nbad .\n",
            "t.tsv:3: expected 2 tab-separated fields, found 1",
        ),
        (
            GlueTask::Sst2,
            "sentence\tlabel\ngood .\t1\nbad .\t2\n",
            "t.tsv:3: label `2` is not one of 0, 1",
        ),
        (
            GlueTask::Sst2,
            "sentence\tlabel\n\ngood .\t1\n",
            "t.tsv:2: expected 2 tab-separated fields, found 1",
        ),
        (
            GlueTask::Rte,
            "index\ts1\ts2\tlabel\n",
            "t.tsv:1: header has no column `sentence1` (found: index | s1 | s2 | label)",
        ),
        (
            GlueTask::Rte,
            "index\tsentence1\tsentence2\tlabel\n0\tA\tB\tmaybe\n",
            "t.tsv:2: label `maybe` is not one of entailment, not_entailment",
        ),
        (GlueTask::Sst2, "sentence\tlabel\n", "t.tsv: no data rows"),
        (GlueTask::Cola, "", "t.tsv: no data rows"),
        (
            GlueTask::Cola,
            "gj04\t1\tThe sailors.\n",
            "t.tsv:1: expected 4 tab-separated fields, found 3",
        ),
    ];
    for (task, text, message) in cases {
        let err = parse(task, text.as_bytes(), p()).unwrap_err();
        assert_eq!(err.to_string(), message, "{task}");
    }
    let err = parse(GlueTask::Sst2, b"sentence\tlabel\nca\xfft\t1\n", p()).unwrap_err();
    assert!(matches!(err, DataError::Encoding { line: 2, .. }));
}

#[test]
fn missing_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_split(GlueTask::Mnli, dir.path(), Split::Dev).unwrap_err();
    assert!(err.to_string().starts_with("MNLI: "), "{err}");
    assert!(
        err.to_string().contains("glue/MNLI/dev_matched.tsv not found"),
        "{err}"
    );
    assert!(!GlueTask::Qnli.has(dir.path(), Split::Train));
}

#[test]
fn task_names() {
    assert_eq!(GlueTask::parse("SST-2"), Some(GlueTask::Sst2));
    assert_eq!(GlueTask::parse("sts-b"), Some(GlueTask::Stsb));
    assert_eq!(GlueTask::parse("cola"), Some(GlueTask::Cola));
    assert_eq!(GlueTask::parse("wnli"), None);
}

/// The real GLUE files: every row of every available split parses, and the
/// counts match the canonical split sizes.
#[test]
fn real_glue_files() {
    // The workspace's one rule: skipped loudly when absent, a failure under CI.
    let Some(dir) = loraxs_models::testing::test_data_dir() else {
        return;
    };
    let dir = dir.as_path();
    let expected = [
        (GlueTask::Cola, Split::Train, 8_551),
        (GlueTask::Cola, Split::Dev, 1_043),
        (GlueTask::Sst2, Split::Train, 67_349),
        (GlueTask::Sst2, Split::Dev, 872),
        (GlueTask::Mrpc, Split::Train, 3_668),
        (GlueTask::Mrpc, Split::Dev, 408),
        (GlueTask::Stsb, Split::Train, 5_749),
        (GlueTask::Stsb, Split::Dev, 1_500),
        (GlueTask::Rte, Split::Train, 2_490),
        (GlueTask::Rte, Split::Dev, 277),
        (GlueTask::Qnli, Split::Dev, 5_463),
    ];
    for (task, split, rows) in expected {
        if !task.has(dir, split) {
            panic!("{task} {split:?} is missing from {}", dir.display());
        }
        let ex = read_split(task, dir, split).unwrap();
        assert_eq!(ex.len(), rows, "{task} {split:?}");
        let positives = ex.iter().filter(|e| e.label == Label::Class(1)).count();
        if !task.is_regression() {
            assert!(positives > 0 && positives < rows, "{task}: both classes present");
        }
    }
}
