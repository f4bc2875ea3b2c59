//! Per-step metrics, `steps.jsonl` and `steps.csv` beside the per-epoch `metrics.jsonl`: one
//! line every N steps, appended as training goes. On resume both files are cut back to the
//! steps the checkpoint holds, so that a resumed run's log equals an uninterrupted one's.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vit_model::checkpoint;

use crate::TrainError;

const JSONL: &str = "steps.jsonl";
const CSV: &str = "steps.csv";
const CSV_HEADER: &str = "epoch,step,loss,epoch_loss,epoch_top1,learning_rate,images_per_second,train_seconds";

/// One line of `steps.jsonl` (and of `steps.csv`, in the same order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Steps taken, this one included.
    pub step: u64,
    /// This step's mean training loss.
    pub loss: f64,
    /// Mean training loss of the epoch so far.
    pub epoch_loss: f64,
    /// Training top-1 of the epoch so far.
    pub epoch_top1: f64,
    /// The learning rate of this step.
    pub learning_rate: f64,
    /// This step's images per second.
    pub images_per_second: f64,
    /// Seconds of training steps in the whole run so far.
    pub train_seconds: f64,
}

impl StepRecord {
    fn csv_line(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{}",
            self.epoch,
            self.step,
            self.loss,
            self.epoch_loss,
            self.epoch_top1,
            self.learning_rate,
            self.images_per_second,
            self.train_seconds
        )
    }
}

/// The open per-step log of a run.
pub(crate) struct StepLog {
    every: u64,
    jsonl: (PathBuf, File),
    csv: (PathBuf, File),
}

impl StepLog {
    /// The log in `dir`, keeping the records of the first `steps_done` steps (none for a new
    /// run), writing one record every `every` steps.
    pub fn open(dir: &Path, every: usize, steps_done: u64) -> Result<Self, TrainError> {
        let jsonl_path = dir.join(JSONL);
        let kept = read_steps(&jsonl_path)?.into_iter().filter(|r| r.step <= steps_done).collect::<Vec<_>>();
        let mut jsonl = String::new();
        let mut csv = format!("{CSV_HEADER}\n");
        for r in &kept {
            jsonl.push_str(&serde_json::to_string(r).expect("a step record serialises"));
            jsonl.push('\n');
            csv.push_str(&r.csv_line());
            csv.push('\n');
        }
        let csv_path = dir.join(CSV);
        checkpoint::write_atomically(&jsonl_path, jsonl.as_bytes())?;
        checkpoint::write_atomically(&csv_path, csv.as_bytes())?;
        let append = |path: &Path| OpenOptions::new().append(true).open(path).map_err(|e| TrainError::io(path, e));
        Ok(Self {
            every: every.max(1) as u64,
            jsonl: (jsonl_path.clone(), append(&jsonl_path)?),
            csv: (csv_path.clone(), append(&csv_path)?),
        })
    }

    /// Appends `record` if its step is one to log.
    pub fn record(&mut self, record: &StepRecord) -> Result<(), TrainError> {
        if !record.step.is_multiple_of(self.every) {
            return Ok(());
        }
        let line = serde_json::to_string(record).expect("a step record serialises");
        let (path, file) = &mut self.jsonl;
        writeln!(file, "{line}").map_err(|e| TrainError::io(path.as_path(), e))?;
        let (path, file) = &mut self.csv;
        writeln!(file, "{}", record.csv_line()).map_err(|e| TrainError::io(path.as_path(), e))
    }
}

/// The records of a `steps.jsonl` (none if it does not exist). A last line cut short by a
/// crash is dropped; any other line that does not parse is an error naming it.
pub fn read_steps(path: &Path) -> Result<Vec<StepRecord>, TrainError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<StepRecord>(line) {
            Ok(r) => records.push(r),
            Err(_) if i + 1 == lines.len() && !complete => break,
            Err(e) => return Err(TrainError::io(path, format!("line {}: {e}", i + 1))),
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: u64) -> StepRecord {
        StepRecord {
            epoch: 1,
            step,
            loss: 1.0 / step as f64,
            epoch_loss: 0.5,
            epoch_top1: 0.25,
            learning_rate: 1e-3,
            images_per_second: 10.0,
            train_seconds: step as f64,
        }
    }

    #[test]
    fn resume_cuts_the_log_back_to_the_checkpoint_and_a_torn_line_is_dropped() {
        let dir = std::env::temp_dir().join(format!("vit-steplog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = StepLog::open(&dir, 2, 0).unwrap();
        for step in 1..=6 {
            log.record(&record(step)).unwrap();
        }
        drop(log);
        let steps: Vec<u64> = read_steps(&dir.join(JSONL)).unwrap().iter().map(|r| r.step).collect();
        assert_eq!(steps, [2, 4, 6]);
        // A crash in the middle of a line, then a resume from the checkpoint at step 4.
        let mut file = OpenOptions::new().append(true).open(dir.join(JSONL)).unwrap();
        write!(file, "{{\"epoch\":1,\"st").unwrap();
        drop(file);
        assert_eq!(read_steps(&dir.join(JSONL)).unwrap().len(), 3);
        let mut log = StepLog::open(&dir, 2, 4).unwrap();
        log.record(&record(5)).unwrap();
        log.record(&record(6)).unwrap();
        drop(log);
        let again = read_steps(&dir.join(JSONL)).unwrap();
        assert_eq!(again, vec![record(2), record(4), record(6)]);
        let csv = std::fs::read_to_string(dir.join(CSV)).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines.len(), 4);
        assert!(lines[3].starts_with("1,6,"), "{}", lines[3]);
        // A broken line that is not the last is an error naming the line.
        std::fs::write(dir.join(JSONL), "nonsense\n{}\n").unwrap();
        let err = read_steps(&dir.join(JSONL)).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
