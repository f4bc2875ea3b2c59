//! The run directory and its files: `config.toml` (the recipe), `metrics.jsonl`,
//! `best.safetensors`, `last.safetensors`, `summary.json`.
//!
//! `last.safetensors` is the whole resumable state in one file: the model's tensors, the
//! optimizer's moments (`train.optimizer.*` tensors) and the [`TrainState`] in the metadata,
//! committed by one rename. A crash, a full disk or a second signal at any moment leaves
//! either the previous state or the new one. Runs written before this layout kept the
//! optimizer in `last.optimizer.safetensors`; they still resume.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use vit_blocks::SeededVarMap;
use vit_model::Vit;
use vit_model::checkpoint::{self, CheckpointMeta};

use crate::TrainError;
use crate::optim::AdamW;
use crate::recipe::Recipe;
use crate::trainer::report::{EpochRecord, TrainReport};
use crate::trainer::state::TrainState;

const CONFIG: &str = "config.toml";
const BEST: &str = "best.safetensors";
const LAST: &str = "last.safetensors";
/// Where runs before the one-file state kept the optimizer.
const LAST_OPTIMIZER: &str = "last.optimizer.safetensors";
/// The prefix of the optimizer's tensors in `last.safetensors`.
const OPTIMIZER_PREFIX: &str = "train.optimizer.";
const METRICS: &str = "metrics.jsonl";
const SUMMARY: &str = "summary.json";
/// The checkpoint metadata key of the [`TrainState`].
const STATE_KEY: &str = "train.state";

/// What `last.safetensors` holds.
pub(crate) struct LastState {
    pub model: Vit,
    pub store: SeededVarMap,
    pub state: TrainState,
    pub optimizer: HashMap<String, Tensor>,
    /// The weights' moving average, by parameter name (empty without one).
    pub ema: HashMap<String, Tensor>,
}

/// What a run directory holds, as [`read_run`] finds it: for reports.
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// The recipe the run was started with.
    pub recipe: Recipe,
    /// That recipe's file, `config.toml`.
    pub recipe_path: PathBuf,
    /// Every epoch recorded so far.
    pub history: Vec<EpochRecord>,
    /// The final report, once the run finished.
    pub summary: Option<TrainReport>,
    /// The model to show: the best checkpoint, else the last.
    pub checkpoint: PathBuf,
}

/// Reads the run directory at `dir` without changing anything in it.
pub fn read_run(dir: &Path) -> Result<RunFiles, TrainError> {
    if !dir.is_dir() {
        return Err(TrainError::io(dir, "not a directory: expected a run directory (`vit train --out DIR`)"));
    }
    let run = RunDir { path: dir.to_path_buf() };
    let recipe = run.read_recipe()?;
    let history = run.read_metrics(usize::MAX)?;
    let summary_path = dir.join(SUMMARY);
    let summary = match std::fs::read_to_string(&summary_path) {
        Ok(text) => Some(serde_json::from_str(&text).map_err(|e| TrainError::io(&summary_path, e.to_string()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(TrainError::io(&summary_path, e)),
    };
    let checkpoint = [run.best_path(), run.last_path()].into_iter().find(|p| p.is_file()).ok_or_else(|| {
        TrainError::io(dir, "holds no checkpoint (best.safetensors or last.safetensors): the run saved no model yet")
    })?;
    Ok(RunFiles { recipe, recipe_path: run.config_path(), history, summary, checkpoint })
}

/// A run directory.
pub(crate) struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The directory at `path`, created if needed, without the temporary files a killed
    /// process may have left (`.<file>.tmp-<pid>`, see `checkpoint::write_atomically`).
    /// The directory at `path` as it is, changing nothing: for the ranks of data-parallel
    /// training other than rank 0, which only read it.
    pub fn at(path: &Path) -> Self {
        Self { path: path.to_path_buf() }
    }

    pub fn create(path: &Path) -> Result<Self, TrainError> {
        std::fs::create_dir_all(path).map_err(|e| TrainError::io(path, e))?;
        let entries = std::fs::read_dir(path).map_err(|e| TrainError::io(path, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self { path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config_path(&self) -> PathBuf {
        self.path.join(CONFIG)
    }

    pub fn best_path(&self) -> PathBuf {
        self.path.join(BEST)
    }

    pub fn last_path(&self) -> PathBuf {
        self.path.join(LAST)
    }

    /// An error unless the directory holds no run yet: a new run never overwrites an old one.
    pub fn ensure_empty(&self) -> Result<(), TrainError> {
        if self.last_path().exists() {
            return Err(TrainError::Resume {
                path: self.path.clone(),
                message: "the directory already holds a run: pass --resume to continue it, or choose another --out"
                    .into(),
            });
        }
        Ok(())
    }

    /// The recipe the run was started with.
    pub fn read_recipe(&self) -> Result<Recipe, TrainError> {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::Resume {
            path: path.clone(),
            message: format!("{e}: is this a run directory?"),
        })?;
        Recipe::parse(&text, &path)
    }

    pub fn write_recipe(&self, recipe: &Recipe) -> Result<(), TrainError> {
        checkpoint::write_atomically(&self.config_path(), recipe.to_toml().as_bytes())?;
        Ok(())
    }

    /// The model, its store, the state and the optimizer's tensors of the last checkpoint
    /// (`m.<name>`, `v.<name>`, `step`, as [`AdamW::load_state`] takes them).
    pub fn load_last(&self, device: &Device) -> Result<LastState, TrainError> {
        let path = self.last_path();
        let checkpoint = checkpoint::load(&path, device)?;
        let (model, store) = Vit::from_checkpoint(&checkpoint, device)?;
        let raw = checkpoint.meta.extra.get(STATE_KEY).ok_or_else(|| TrainError::Resume {
            path: path.clone(),
            message: format!("metadata `{STATE_KEY}` is missing"),
        })?;
        let state: TrainState = serde_json::from_str(raw)
            .map_err(|e| TrainError::Resume { path: path.clone(), message: format!("`{STATE_KEY}`: {e}") })?;
        let mut ema = HashMap::new();
        let optimizer: HashMap<String, Tensor> = if checkpoint.training.is_empty() {
            // A run from before the one-file state.
            let path = self.path.join(LAST_OPTIMIZER);
            candle_core::safetensors::load(&path, &Device::Cpu)
                .map_err(|e| TrainError::Resume { path: path.clone(), message: e.to_string() })?
        } else {
            let mut optimizer = HashMap::new();
            for (name, tensor) in checkpoint.training {
                if let Some(key) = name.strip_prefix(super::ema::EMA_PREFIX) {
                    ema.insert(key.to_string(), tensor);
                    continue;
                }
                match name.strip_prefix(OPTIMIZER_PREFIX) {
                    Some(key) => optimizer.insert(key.to_string(), tensor),
                    None => {
                        return Err(TrainError::Resume {
                            path,
                            message: format!("tensor `{name}` is no part of a run's state this version knows"),
                        });
                    }
                };
            }
            optimizer
        };
        Ok(LastState { model, store, state, optimizer, ema })
    }

    /// Restores `optimizer` from `tensors` and checks that it took the steps the state says.
    pub fn restore_optimizer(
        &self,
        optimizer: &mut AdamW,
        tensors: &HashMap<String, Tensor>,
        state: &TrainState,
    ) -> Result<(), TrainError> {
        let path = self.last_path();
        optimizer.load_state(tensors).map_err(|message| TrainError::Resume { path: path.clone(), message })?;
        if optimizer.step_count() + state.skipped_steps != state.step {
            return Err(TrainError::Resume {
                path,
                message: format!(
                    "optimizer is at step {} but the checkpoint at step {} with {} skipped",
                    optimizer.step_count(),
                    state.step,
                    state.skipped_steps
                ),
            });
        }
        Ok(())
    }

    /// The whole state in `last.safetensors`: the model, the optimizer and `state`, in one
    /// file committed by one rename.
    pub fn save_last(
        &self,
        store: &SeededVarMap,
        optimizer: &AdamW,
        ema: Option<&super::ema::Ema>,
        meta: &CheckpointMeta,
        state: &TrainState,
        device: &Device,
    ) -> Result<PathBuf, TrainError> {
        let mut meta = meta.clone();
        meta.extra.insert(STATE_KEY.into(), serde_json::to_string(state).expect("state serialises"));
        let mut training: BTreeMap<String, Tensor> =
            optimizer.state(device)?.into_iter().map(|(k, v)| (format!("{OPTIMIZER_PREFIX}{k}"), v)).collect();
        training.extend(ema.map(super::ema::Ema::checkpoint_tensors).unwrap_or_default());
        let path = self.last_path();
        checkpoint::save_with_training(&path, store.varmap(), &training, &meta)?;
        // The optimizer file of the old layout would now be stale.
        let _ = std::fs::remove_file(self.path.join(LAST_OPTIMIZER));
        Ok(path)
    }

    pub fn save_best(&self, store: &SeededVarMap, meta: &CheckpointMeta) -> Result<(), TrainError> {
        checkpoint::save(self.best_path(), store.varmap(), meta)?;
        Ok(())
    }

    /// `best.safetensors` from tensors by name (the moving average's weights).
    pub fn save_best_tensors(
        &self,
        tensors: &BTreeMap<String, Tensor>,
        meta: &CheckpointMeta,
    ) -> Result<(), TrainError> {
        checkpoint::save_tensors(&self.best_path(), tensors, meta)?;
        Ok(())
    }

    /// Rewrites `metrics.jsonl` with `records`, one JSON line each.
    pub fn write_metrics(&self, records: &[EpochRecord]) -> Result<(), TrainError> {
        let mut text = String::new();
        for r in records {
            text.push_str(&serde_json::to_string(r).expect("record serialises"));
            text.push('\n');
        }
        checkpoint::write_atomically(&self.path.join(METRICS), text.as_bytes())?;
        Ok(())
    }

    /// The records of the first `epochs_done` epochs (a line written after the last checkpoint
    /// belongs to an epoch that resume runs again).
    pub fn read_metrics(&self, epochs_done: usize) -> Result<Vec<EpochRecord>, TrainError> {
        let path = self.path.join(METRICS);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(TrainError::io(&path, e)),
        };
        let mut records = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let r: EpochRecord =
                serde_json::from_str(line).map_err(|e| TrainError::io(&path, format!("line {}: {e}", i + 1)))?;
            if r.epoch <= epochs_done {
                records.push(r);
            }
        }
        Ok(records)
    }

    pub fn write_summary(&self, report: &TrainReport) -> Result<(), TrainError> {
        let text = serde_json::to_string_pretty(report).expect("report serialises");
        checkpoint::write_atomically(&self.path.join(SUMMARY), text.as_bytes())?;
        Ok(())
    }
}
