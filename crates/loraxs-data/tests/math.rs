//! GSM8K as shipped (`$LORAXS_DATA_DIR/gsm8k/{train,test}.jsonl`): every
//! line reads, and every reference answer scores as an exact match of
//! itself through the extraction the evaluation uses.

use loraxs_data::math::{MathFormat, exact_match, extract_answer, gsm8k_path, read_math};

#[test]
fn gsm8k_reads_and_its_answers_extract() {
    let Some(dir) = loraxs_models::testing::test_data_dir() else {
        return;
    };
    for (split, rows) in [("train", 7473), ("test", 1319)] {
        let examples = read_math(&gsm8k_path(&dir, split), MathFormat::Gsm8k).unwrap();
        assert_eq!(examples.len(), rows, "{split}");
        for (i, e) in examples.iter().enumerate() {
            assert!(
                exact_match(&e.response, &e.answer),
                "{split} line {}: answer `{}` not extracted from its own solution",
                i + 1,
                e.answer
            );
        }
    }
    let test = read_math(&gsm8k_path(&dir, "test"), MathFormat::Gsm8k).unwrap();
    // The first test problem (Janet's ducks): 18 dollars.
    assert!(test[0].question.starts_with("Janet"));
    assert_eq!(test[0].answer, "18");
    assert_eq!(extract_answer(&test[0].response), Some(18.0));
    // Answers with thousands separators (line 3: Josh's house, 70,000).
    assert_eq!(test[2].answer, "70000");
    assert!(exact_match("He made #### 70,000", &test[2].answer));
}
