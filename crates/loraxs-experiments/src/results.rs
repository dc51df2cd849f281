//! The results file: one JSON line per finished run, the source every
//! table is derived from. A run killed while appending leaves a torn last
//! line; reading reports it and the next append replaces it, so that run
//! simply runs again.

use std::io::Write;
use std::path::{Path, PathBuf};

use loraxs_train::RunRecord;

use crate::{ExperimentError, Result};

/// A results file and what it holds.
#[derive(Debug, Clone)]
pub struct Results {
    path: PathBuf,
    /// Every complete record, in file order.
    pub records: Vec<RunRecord>,
    /// Bytes of complete lines: a torn tail starts here.
    complete_len: usize,
    /// The torn last line, if any (no newline and not valid JSON).
    pub torn_tail: Option<String>,
}

impl Results {
    /// Reads `path` (an absent file holds no records). A line that does
    /// not parse is an error naming `file:line`, except a last line without
    /// a newline, which is a write cut short and is reported in
    /// [`Results::torn_tail`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(ExperimentError::Results {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let mut records = Vec::new();
        let mut offset = 0;
        let mut torn_tail = None;
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let terminated = line.ends_with('\n');
            let body = line.trim();
            if !body.is_empty() {
                match serde_json::from_str::<RunRecord>(body) {
                    Ok(record) => records.push(record),
                    Err(_) if !terminated => {
                        torn_tail = Some(body.to_string());
                        break;
                    }
                    Err(e) => {
                        return Err(ExperimentError::Results {
                            path: PathBuf::from(format!("{}:{}", path.display(), i + 1)),
                            reason: format!("not a run record: {e}"),
                        });
                    }
                }
            }
            offset += line.len();
        }
        Ok(Self {
            path,
            records,
            complete_len: offset,
            torn_tail,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the run with this key has a record.
    pub fn has(&self, key: &str) -> bool {
        self.records.iter().any(|r| r.key == key)
    }

    /// The records of these keys, in file order.
    pub fn of(&self, keys: &[String]) -> Vec<RunRecord> {
        self.records
            .iter()
            .filter(|r| keys.contains(&r.key))
            .cloned()
            .collect()
    }

    /// Appends `record` as one line (dropping a torn tail first).
    pub fn append(&mut self, record: RunRecord) -> Result<()> {
        let fail = |e: std::io::Error| ExperimentError::Results {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(fail)?;
        if self.torn_tail.take().is_some() {
            file.set_len(self.complete_len as u64).map_err(fail)?;
        }
        let mut line = serde_json::to_string(&record).expect("records serialise");
        line.push('\n');
        file.write_all(line.as_bytes()).map_err(fail)?;
        self.complete_len += line.len();
        self.records.push(record);
        Ok(())
    }
}
