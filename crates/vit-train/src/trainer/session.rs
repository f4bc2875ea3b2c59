//! A run being trained, and how it starts: the recipe, data, model, optimizer and state, fresh
//! or read back from the run directory.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use vit_blocks::SeededVarMap;
use vit_data::Preprocessing;
use vit_data::augment::Normalizer;
use vit_model::{CheckpointMeta, Vit, VitConfig};

use super::data::{Data, prepare_data};
use super::ema::Ema;
use super::observer::{RunStarted, TrainObserver};
use super::options::TrainOptions;
use super::report::EpochRecord;
use super::run_dir::RunDir;
use super::state::TrainState;
use super::step::Stepper;
use super::step_log::StepLog;
use crate::TrainError;
use crate::distributed::Collective;
use crate::loss_scale::LossScaler;
use crate::optim::{AdamW, AdamWConfig, params_of, select_trainable};
use crate::recipe::{Precision, Recipe};
use crate::schedule::Schedule;

/// Everything a run holds while it trains. The parts of the loop are its methods, one file
/// each: the epoch of steps (`epoch.rs`), the end of an epoch and its checkpoints
/// (`checkpoints.rs`), the final test (`final_test.rs`).
pub(super) struct Session<'c> {
    /// The ranks of data-parallel training; [`SingleProcess`](crate::distributed::SingleProcess)
    /// alone.
    pub comm: &'c mut dyn Collective,
    /// Rank 0: it writes the run directory and tells its observer.
    pub root: bool,
    pub device: Device,
    pub run: RunDir,
    pub recipe: Recipe,
    pub cfg: VitConfig,
    pub data: Data,
    /// What every checkpoint of the run records besides the weights.
    pub meta: CheckpointMeta,
    pub schedule: Schedule,
    pub steps_per_epoch: usize,
    pub model: Vit,
    pub store: SeededVarMap,
    pub state: TrainState,
    pub optimizer: AdamW,
    /// The trainable variables, in name order.
    pub vars: Vec<(String, Var)>,
    /// The moving average of the weights (`train.ema_decay`).
    pub ema: Option<Ema>,
    pub stepper: Stepper,
    /// The records of the epochs done, `metrics.jsonl`.
    pub records: Vec<EpochRecord>,
    pub step_log: Option<StepLog>,
    /// When this process started training (the state records earlier sessions' time).
    pub started: Instant,
    pub stop: Arc<AtomicBool>,
    pub stop_after_steps: Option<u64>,
}

/// The model and state a run starts from: fresh (perhaps from other weights), or the last
/// checkpoint's.
struct Start {
    model: Vit,
    store: SeededVarMap,
    state: TrainState,
    /// The optimizer's and the moving average's saved tensors (resume only).
    optimizer: Option<HashMap<String, Tensor>>,
    ema: Option<HashMap<String, Tensor>>,
    initialized_from: Option<(PathBuf, String)>,
}

impl<'c> Session<'c> {
    /// The run `opts` asks for, fresh or resumed, as one rank of `comm`; `observer` is told it
    /// started.
    pub fn prepare(
        opts: &TrainOptions,
        comm: &'c mut dyn Collective,
        observer: &mut dyn TrainObserver,
    ) -> Result<Self, TrainError> {
        let root = comm.rank() == 0;
        // Only rank 0 creates the directory and clears what a killed process left there: another
        // rank doing so could remove a file rank 0 is writing.
        let run = if root { RunDir::create(&opts.run_dir)? } else { RunDir::at(&opts.run_dir) };
        let (recipe, origin) = if opts.resume {
            (run.read_recipe()?, run.config_path())
        } else {
            if root {
                run.ensure_empty()?;
            }
            (opts.recipe.clone(), opts.recipe_origin.clone())
        };
        recipe.validate(&origin)?;
        let cfg = recipe.model_config(&origin)?;
        let normalizer = inherited_normalizer(&recipe, &run, opts.resume)?;
        let data = prepare_data(&recipe, &cfg, opts.data_dir.as_deref(), normalizer)?;
        check_batches_fit_the_ranks(&recipe, &data, &*comm)?;
        let steps_per_epoch = data.train.len().div_ceil(recipe.train.batch_size);
        let schedule = schedule(&recipe, steps_per_epoch);
        let start = if opts.resume {
            resumed(&run, &opts.device)?
        } else {
            if root {
                run.write_recipe(&recipe)?;
            }
            fresh(&recipe, &cfg, &data, &opts.device)?
        };
        let Trainables { optimizer, vars, ema, stepper } = trainables(&start, &recipe, &cfg, &run)?;
        let Start { model, store, state, initialized_from, .. } = start;
        let records = if opts.resume { run.read_metrics(state.epochs_done)? } else { Vec::new() };
        observer.run_started(&RunStarted {
            recipe: recipe.name.clone(),
            dataset: data.train.name.clone(),
            images: (data.train.len(), data.val.as_ref().map_or(0, |v| v.len()), data.test.len()),
            device: format!("{:?}", opts.device),
            parameters: model.summary().total_parameters(),
            run_dir: run.path().to_path_buf(),
            resumed_after: opts.resume.then_some((state.epochs_done, state.step)),
            initialized_from,
            skipped_images: data.skipped.clone(),
        });
        let step_log = match opts.step_metrics_every {
            Some(every) if root => Some(StepLog::open(run.path(), every, if opts.resume { state.step } else { 0 })?),
            _ => None,
        };
        let meta = checkpoint_meta(&cfg, &data, &recipe);
        Ok(Self {
            comm,
            root,
            device: opts.device.clone(),
            run,
            recipe,
            cfg,
            data,
            meta,
            schedule,
            steps_per_epoch,
            model,
            store,
            state,
            optimizer,
            vars,
            ema,
            stepper,
            records,
            step_log,
            started: Instant::now(),
            stop: opts.stop.clone(),
            stop_after_steps: opts.stop_after_steps,
        })
    }
}

/// What the optimizer updates, and how.
struct Trainables {
    optimizer: AdamW,
    vars: Vec<(String, Var)>,
    ema: Option<Ema>,
    stepper: Stepper,
}

/// The trainable variables of `start` (all, or those the fine-tuning settings leave free), in
/// name order, with AdamW and the moving average over them, restored on resume.
fn trainables(start: &Start, recipe: &Recipe, cfg: &VitConfig, run: &RunDir) -> Result<Trainables, TrainError> {
    let t = &recipe.train;
    let params = params_of(&start.model, &start.store).map_err(|message| TrainError::Inconsistent { message })?;
    let params = select_trainable(params, cfg.num_layers, &t.fine_tuning());
    let mut optimizer = AdamW::new(&params, AdamWConfig { weight_decay: t.weight_decay, ..AdamWConfig::default() })?;
    if let Some(tensors) = &start.optimizer {
        run.restore_optimizer(&mut optimizer, tensors, &start.state)?;
    }
    let mut vars: Vec<(String, Var)> = params.into_iter().map(|p| (p.name, p.var)).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let ema = match (t.ema_decay, &start.ema) {
        (None, _) => None,
        (Some(decay), Some(saved)) => Some(Ema::restore(decay, &vars, saved).map_err(|message| {
            TrainError::Resume { path: run.last_path(), message: format!("train.ema_decay is set, but {message}") }
        })?),
        (Some(decay), None) => Some(Ema::new(decay, &vars)?),
    };
    let stepper = Stepper {
        vars: vars.iter().map(|(_, v)| v.clone()).collect(),
        compute_dtype: t.precision.compute_dtype(),
        label_smoothing: t.label_smoothing,
        clip_grad_norm: t.clip_grad_norm,
    };
    Ok(Trainables { optimizer, vars, ema, stepper })
}

/// The normaliser the weights the run starts from expect (a pretrained model's statistics, when
/// its checkpoint records them; a resumed run's own), or `None` to fit the training split's.
fn inherited_normalizer(recipe: &Recipe, run: &RunDir, resume: bool) -> Result<Option<Normalizer>, TrainError> {
    let recorded = if resume { Some(run.last_path()).filter(|p| p.exists()) } else { recipe.train.init_from.clone() };
    let Some(path) = recorded else { return Ok(None) };
    let meta = vit_model::checkpoint::read_meta(&path)?;
    Ok(meta.preprocessing.map(|prep| prep.normalizer))
}

/// Errs unless every rank gets rows of every batch: the global batch, and the epoch's last
/// batch in data-parallel training, hold at least one row per rank.
fn check_batches_fit_the_ranks(recipe: &Recipe, data: &Data, comm: &dyn Collective) -> Result<(), TrainError> {
    let (world, batch) = (comm.world_size(), recipe.train.batch_size);
    if batch < world {
        return Err(TrainError::Distributed {
            message: format!("train.batch_size {batch} is the global batch: it must be at least the {world} ranks"),
        });
    }
    let last_batch = data.train.len() % batch;
    if !comm.is_single_process() && last_batch != 0 && last_batch < world {
        return Err(TrainError::Distributed {
            message: format!(
                "the last batch of each epoch holds {last_batch} of the {} training images, fewer than the {world} ranks: choose another train.batch_size or data.limit_train",
                data.train.len()
            ),
        });
    }
    Ok(())
}

/// Warm-up then cosine decay over the run's steps.
fn schedule(recipe: &Recipe, steps_per_epoch: usize) -> Schedule {
    let t = &recipe.train;
    Schedule {
        peak: t.learning_rate,
        min_lr: t.min_learning_rate,
        warmup: (t.warmup_epochs * steps_per_epoch as f64).round() as u64,
        total: (t.epochs * steps_per_epoch) as u64,
    }
}

/// A new model from the recipe's seed, its weights taken from `train.init_from` where it
/// names a checkpoint.
fn fresh(recipe: &Recipe, cfg: &VitConfig, data: &Data, device: &Device) -> Result<Start, TrainError> {
    let t = &recipe.train;
    let (model, store) = Vit::init(cfg, t.seed, device)?;
    let mut initialized_from = None;
    if let Some(path) = &t.init_from {
        let source = vit_model::checkpoint::load(path, device)?;
        // The head carries over only to the same classes; other classes, even as many, get a
        // fresh one.
        let keep_head = source.meta.class_names == data.train.class_names;
        let transfer = vit_model::init_from(&store, cfg, &source, keep_head)?;
        initialized_from = Some((path.clone(), transfer.to_string()));
    }
    let scaler = if t.precision == Precision::F16 { LossScaler::default() } else { LossScaler::disabled() };
    let state = TrainState::fresh(model.rng().state(), scaler);
    Ok(Start { model, store, state, optimizer: None, ema: None, initialized_from })
}

/// The last checkpoint of the run directory, its dropout stream where it stopped.
fn resumed(run: &RunDir, device: &Device) -> Result<Start, TrainError> {
    let last = run.load_last(device)?;
    last.model.rng().set_state(last.state.rng.into());
    Ok(Start {
        model: last.model,
        store: last.store,
        state: last.state,
        optimizer: Some(last.optimizer),
        ema: Some(last.ema),
        initialized_from: None,
    })
}

/// The metadata every checkpoint of the run carries: the config, the class names, how to
/// prepare images, and the recipe.
fn checkpoint_meta(cfg: &VitConfig, data: &Data, recipe: &Recipe) -> CheckpointMeta {
    let preprocessing = Preprocessing {
        read_size: (data.train.height, data.train.width),
        normalizer: data.pipeline.normalizer.clone(),
        ..Preprocessing::identity((cfg.image_size[0], cfg.image_size[1]), cfg.channels)
    };
    CheckpointMeta {
        preprocessing: Some(preprocessing),
        extra: BTreeMap::from([("train.recipe".into(), recipe.to_toml())]),
        ..CheckpointMeta::new(cfg.clone(), data.train.class_names.clone())
    }
}
