//! Math word problems for decoder fine-tuning: GSM8K (`{"question",
//! "answer"}` JSON lines, the answer ending `#### 42`) and MetaMathQA
//! (`{"query", "response"}`, the response ending `The answer is: 42`, as a
//! JSON array or JSON lines), with final-answer extraction and exact match
//! as the authors' evaluation scores them.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{DataError, Result};

/// One problem with its worked solution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MathExample {
    /// The problem statement.
    pub question: String,
    /// The worked solution the model learns to write, ending with the
    /// final-answer marker.
    pub response: String,
    /// The final answer as written after the marker (`18`, `70,000`).
    pub answer: String,
}

/// Which file layout to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MathFormat {
    /// GSM8K: `question`, `answer` (ending `#### N`).
    Gsm8k,
    /// MetaMathQA: `query`, `response` (ending `The answer is: N`).
    MetaMath,
}

/// The markers after which a final answer stands, in the order they are
/// tried when scoring generated text.
pub const ANSWER_MARKERS: [&str; 2] = ["####", "The answer is:"];

fn bad(path: &Path, line: usize, reason: String) -> DataError {
    DataError::Row {
        path: path.to_path_buf(),
        line,
        reason,
    }
}

fn field<'a>(v: &'a Value, key: &str, path: &Path, line: usize) -> Result<&'a str> {
    match v.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(bad(path, line, format!("`{key}` is empty"))),
        Some(other) => Err(bad(path, line, format!("`{key}` is not a string: {other}"))),
        None => Err(bad(path, line, format!("no `{key}` field"))),
    }
}

fn example(v: &Value, format: MathFormat, path: &Path, line: usize) -> Result<MathExample> {
    let (q, r, marker) = match format {
        MathFormat::Gsm8k => ("question", "answer", "####"),
        MathFormat::MetaMath => ("query", "response", "The answer is:"),
    };
    let question = field(v, q, path, line)?.to_string();
    let response = field(v, r, path, line)?.to_string();
    let answer = match response.rfind(marker) {
        Some(i) => response[i + marker.len()..].trim().to_string(),
        None => {
            return Err(bad(
                path,
                line,
                format!("`{r}` has no final-answer marker `{marker}`"),
            ));
        }
    };
    if answer.is_empty() {
        return Err(bad(path, line, format!("`{r}` has nothing after `{marker}`")));
    }
    Ok(MathExample {
        question,
        response,
        answer,
    })
}

/// Parses a math dataset: JSON lines, or (MetaMathQA's release) one JSON
/// array. Every line must hold a problem: an empty or malformed line is an
/// error naming the file and line, never skipped.
pub fn parse_math(text: &str, format: MathFormat, path: &Path) -> Result<Vec<MathExample>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<Value> =
            serde_json::from_str(text).map_err(|e| bad(path, e.line(), format!("not a JSON array: {e}")))?;
        return items
            .iter()
            .enumerate()
            .map(|(i, v)| example(v, format, path, i + 1))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| match e {
                // In an array the "line" is the element's position.
                DataError::Row { path, line, reason } => DataError::Element {
                    path,
                    index: line,
                    reason,
                },
                other => other,
            });
    }
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    // A file's final newline is not an empty line.
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            return Err(bad(
                path,
                n,
                "empty line (expected one JSON object per line)".into(),
            ));
        }
        let v: Value = serde_json::from_str(line).map_err(|e| bad(path, n, format!("not JSON: {e}")))?;
        out.push(example(&v, format, path, n)?);
    }
    if out.is_empty() {
        return Err(DataError::Empty { path: path.into() });
    }
    Ok(out)
}

/// Reads a math dataset file.
pub fn read_math(path: &Path, format: MathFormat) -> Result<Vec<MathExample>> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.into(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        DataError::Encoding {
            path: path.into(),
            line,
        }
    })?;
    parse_math(&text, format, path)
}

/// GSM8K's split file under a data folder: `<dir>/gsm8k/{train,test}.jsonl`.
pub fn gsm8k_path(data_dir: &Path, split: &str) -> PathBuf {
    data_dir.join("gsm8k").join(format!("{split}.jsonl"))
}

/// The number after the last final-answer marker of `text` (commas, `$`
/// and a trailing period dropped), or `None` when there is no marker or no
/// number follows it. Generated text is cut at the first line after the
/// marker, so later rambling does not count.
pub fn extract_answer(text: &str) -> Option<f64> {
    let (i, marker) = ANSWER_MARKERS
        .iter()
        .filter_map(|m| text.rfind(m).map(|i| (i, *m)))
        .max_by_key(|(i, _)| *i)?;
    let after = text[i + marker.len()..].lines().next().unwrap_or("");
    first_number(after)
}

/// The first number in `s`: optional sign, digits with thousands commas,
/// optional decimals.
fn first_number(s: &str) -> Option<f64> {
    let chars: Vec<char> = s.chars().collect();
    let start = chars.iter().position(|c| c.is_ascii_digit())?;
    let negative = start > 0 && chars[start - 1] == '-';
    let mut digits = String::new();
    let mut j = start;
    while j < chars.len() {
        let c = chars[j];
        if c.is_ascii_digit() {
            digits.push(c);
        } else if c == ',' && j + 1 < chars.len() && chars[j + 1].is_ascii_digit() {
            // thousands separator
        } else if c == '.' && j + 1 < chars.len() && chars[j + 1].is_ascii_digit() && !digits.contains('.') {
            digits.push('.');
        } else {
            break;
        }
        j += 1;
    }
    let v: f64 = digits.parse().ok()?;
    Some(if negative { -v } else { v })
}

/// A GSM8K solution without its calculator annotations (`<<16-3-4=9>>`),
/// which are tool calls of the original dataset, not text to learn.
pub fn strip_calculator(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<<") {
        match rest[start..].find(">>") {
            Some(end) => {
                out.push_str(&rest[..start]);
                rest = &rest[start + end + 2..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// Whether generated text's final answer equals the reference answer
/// (numerically, to 1e-4 as the authors' evaluation compares). Strict: the
/// answer must follow a final-answer marker.
pub fn exact_match(generated: &str, reference: &str) -> bool {
    match (extract_answer(generated), first_number(reference)) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-4,
        _ => false,
    }
}

/// The last number of `text` (for answers written without a marker).
pub fn last_number(text: &str) -> Option<f64> {
    let chars: Vec<char> = text.chars().collect();
    let end = chars.iter().rposition(|c| c.is_ascii_digit())?;
    let mut start = end;
    while start > 0 {
        let c = chars[start - 1];
        let digit_before = start >= 2 && chars[start - 2].is_ascii_digit();
        if c.is_ascii_digit() || ((c == ',' || c == '.') && digit_before) {
            start -= 1;
        } else {
            break;
        }
    }
    let s: String = chars[start.saturating_sub(1)..=end].iter().collect();
    first_number(&s)
}

/// [`exact_match`], or where the text has no marker, its last number
/// (the "flexible" extraction of common GSM8K harnesses: it credits a
/// model that solves a problem without the dataset's answer format, such
/// as a base model).
pub fn flexible_match(generated: &str, reference: &str) -> bool {
    let found = extract_answer(generated).or_else(|| {
        ANSWER_MARKERS
            .iter()
            .all(|m| !generated.contains(m))
            .then(|| last_number(generated))
            .flatten()
    });
    match (found, first_number(reference)) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-4,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_after_the_marker() {
        assert_eq!(extract_answer("so 9 * 2 = 18\n#### 18"), Some(18.0));
        assert_eq!(extract_answer("#### 70,000"), Some(70000.0));
        assert_eq!(extract_answer("The answer is: $-3.5."), Some(-3.5));
        assert_eq!(extract_answer("#### 12\nThen #### 14 more"), Some(14.0));
        assert_eq!(extract_answer("#### 5\nQuestion: what about 7?"), Some(5.0));
        assert_eq!(extract_answer("it is 42"), None);
        assert_eq!(extract_answer("####"), None);
        assert!(exact_match("... #### 1,000", "1000"));
        assert!(!exact_match("... #### 999", "1000"));
        assert!(!exact_match("1000", "1000"));
        assert!(flexible_match("so she makes $18 a day.", "18"));
        assert!(flexible_match("the total is 1,250.", "1250"));
        assert!(flexible_match("a loss of -3 dollars", "-3"));
        assert!(!flexible_match("#### 17 and later 18", "18"));
        assert!(!flexible_match("no number", "18"));
    }

    #[test]
    fn calculator_annotations_are_dropped() {
        assert_eq!(
            strip_calculator("16 - 3 - 4 = <<16-3-4=9>>9 eggs, $<<9*2=18>>18\n#### 18"),
            "16 - 3 - 4 = 9 eggs, $18\n#### 18"
        );
        assert_eq!(strip_calculator("a << b"), "a << b");
    }

    #[test]
    fn bad_lines_are_named() {
        let p = Path::new("t.jsonl");
        let ok = "{\"question\": \"q\", \"answer\": \"a\\n#### 3\"}\n";
        assert_eq!(parse_math(ok, MathFormat::Gsm8k, p).unwrap()[0].answer, "3");
        let e = parse_math(&format!("{ok}\n{ok}"), MathFormat::Gsm8k, p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.jsonl:2: empty line (expected one JSON object per line)"
        );
        let e = parse_math(
            "{\"question\": \"q\", \"answer\": \"no marker\"}",
            MathFormat::Gsm8k,
            p,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.jsonl:1: `answer` has no final-answer marker `####`"
        );
        let e = parse_math("{\"question\": \"q\"}", MathFormat::Gsm8k, p).unwrap_err();
        assert_eq!(e.to_string(), "t.jsonl:1: no `answer` field");
        let e = parse_math("{\"question\": \"q\", ", MathFormat::Gsm8k, p).unwrap_err();
        assert!(e.to_string().starts_with("t.jsonl:1: not JSON"), "{e}");
        let mm = "[{\"query\": \"q\", \"response\": \"r The answer is: 7\"}, {\"query\": \"q\"}]";
        let e = parse_math(mm, MathFormat::MetaMath, p).unwrap_err();
        assert_eq!(e.to_string(), "t.jsonl: element 2: no `response` field");
        let mm = "[{\"query\": \"q\", \"response\": \"r The answer is: 7\"}]";
        assert_eq!(parse_math(mm, MathFormat::MetaMath, p).unwrap()[0].answer, "7");
    }
}
