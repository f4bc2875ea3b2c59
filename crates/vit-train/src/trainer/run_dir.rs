//! The run directory and its files: `config.toml` (the recipe), `metrics.jsonl`,
//! `best.safetensors`, `last.safetensors` with `last.optimizer.safetensors`, `summary.json`.

use std::collections::BTreeMap;
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
const LAST_OPTIMIZER: &str = "last.optimizer.safetensors";
const METRICS: &str = "metrics.jsonl";
const SUMMARY: &str = "summary.json";
/// The checkpoint metadata key of the [`TrainState`].
const STATE_KEY: &str = "train.state";

/// A run directory.
pub(crate) struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The directory at `path`, created if needed.
    pub fn create(path: &Path) -> Result<Self, TrainError> {
        std::fs::create_dir_all(path).map_err(|e| TrainError::io(path, e))?;
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
        let path = self.config_path();
        std::fs::write(&path, recipe.to_toml()).map_err(|e| TrainError::io(&path, e))
    }

    /// The model, its store and the state of the last checkpoint.
    pub fn load_last(&self, device: &Device) -> Result<(Vit, SeededVarMap, TrainState), TrainError> {
        let path = self.last_path();
        let (model, store, meta) = Vit::load(&path, device)?;
        let raw = meta.extra.get(STATE_KEY).ok_or_else(|| TrainError::Resume {
            path: path.clone(),
            message: format!("metadata `{STATE_KEY}` is missing"),
        })?;
        let state: TrainState = serde_json::from_str(raw)
            .map_err(|e| TrainError::Resume { path: path.clone(), message: format!("`{STATE_KEY}`: {e}") })?;
        Ok((model, store, state))
    }

    /// The optimizer state saved with the last checkpoint.
    pub fn load_optimizer(&self, optimizer: &mut AdamW) -> Result<(), TrainError> {
        let path = self.path.join(LAST_OPTIMIZER);
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| TrainError::Resume { path: path.clone(), message: e.to_string() })?;
        optimizer.load_state(&tensors).map_err(|message| TrainError::Resume { path, message })
    }

    /// Checks that the optimizer restored by [`load_optimizer`](Self::load_optimizer) took
    /// the steps the state says.
    pub fn check_optimizer(&self, optimizer: &AdamW, state: &TrainState) -> Result<(), TrainError> {
        if optimizer.step_count() + state.skipped_steps != state.step {
            return Err(TrainError::Resume {
                path: self.path.join(LAST_OPTIMIZER),
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

    /// The last checkpoint and its optimizer state, `state` in the checkpoint's metadata.
    pub fn save_last(
        &self,
        store: &SeededVarMap,
        optimizer: &AdamW,
        meta: &CheckpointMeta,
        state: &TrainState,
        device: &Device,
    ) -> Result<PathBuf, TrainError> {
        let mut meta = meta.clone();
        meta.extra.insert(STATE_KEY.into(), serde_json::to_string(state).expect("state serialises"));
        // The optimizer first: a crash between the two files leaves a checkpoint whose step does
        // not match the optimizer's, which resume detects, rather than a silently stale optimizer.
        let optimizer_path = self.path.join(LAST_OPTIMIZER);
        let tensors: BTreeMap<String, Tensor> = optimizer.state(device)?;
        let bytes = safetensors::serialize(tensors.iter(), None).map_err(|e| TrainError::io(&optimizer_path, e))?;
        checkpoint::write_atomically(&optimizer_path, &bytes)?;
        let path = self.last_path();
        checkpoint::save(&path, store.varmap(), &meta)?;
        Ok(path)
    }

    pub fn save_best(&self, store: &SeededVarMap, meta: &CheckpointMeta) -> Result<(), TrainError> {
        checkpoint::save(self.best_path(), store.varmap(), meta)?;
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
