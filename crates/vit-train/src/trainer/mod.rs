//! The training loop: epochs of steps, validation, best/last checkpoints, exact resume, a NaN
//! guard and `metrics.jsonl`. The parts live beside it: the run directory and its files
//! (`run_dir.rs`), the resumable state (`state.rs`), one step (`step.rs`), what a run records
//! (`report.rs`), and the events a run reports ([`TrainObserver`]).

mod ema;
mod observer;
mod report;
mod run_dir;
mod state;
mod step;
mod step_log;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::Device;
use vit_data::augment::Normalizer;
use vit_data::{Dataset, FolderOptions, Loader, Pipeline, SkippedImage, load_splits_with, shuffled};
use vit_model::{CheckpointMeta, Vit, VitConfig};

pub use observer::{EpochEnd, RunStarted, Silent, StepProgress, TrainObserver};
pub use report::{EpochRecord, TrainOutcome, TrainReport};
pub use run_dir::{RunFiles, read_run};
pub use step_log::{StepRecord, read_steps};

use crate::distributed::{Collective, SingleProcess, shard_rows, weights_checksum};
use crate::evaluate::{check_fits, evaluate_rows};
use crate::loss_scale::LossScaler;
use crate::metrics::Tally;
use crate::optim::{AdamW, AdamWConfig, params_of, select_trainable};
use crate::recipe::{Precision, Recipe};
use crate::schedule::Schedule;
use crate::{TrainError, metadata};
use run_dir::RunDir;
use state::{EpochTally, TrainState};
use step::{ShardStep, StepOutcome, Stepper, Targets};
use vit_rng::BatchShard;

/// Every parameter of `store`, the trainable ones replaced by their moving average.
fn averaged_weights(store: &vit_blocks::SeededVarMap, ema: &ema::Ema) -> BTreeMap<String, candle_core::Tensor> {
    let mut weights: BTreeMap<String, candle_core::Tensor> =
        store.vars().into_iter().map(|(name, var)| (name, var.as_tensor().clone())).collect();
    for (name, average) in ema.tensors() {
        weights.insert(name.clone(), average.clone());
    }
    weights
}

/// Steps between the checks that every rank holds the same weights.
const CHECK_EVERY: u64 = 100;

/// Errs, naming the ranks, unless every rank's weights have the same checksum: a silent
/// divergence between ranks (a bit flip, a missed update) stops the run.
fn check_in_step(stepper: &Stepper, comm: &mut dyn Collective, step: u64) -> Result<(), TrainError> {
    let mut values = Vec::new();
    for var in &stepper.vars {
        values.extend(var.as_tensor().to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
    }
    let sums = comm.all_gather_u64(weights_checksum(values))?;
    let odd: Vec<usize> = (0..sums.len()).filter(|&r| sums[r] != sums[0]).collect();
    if odd.is_empty() {
        return Ok(());
    }
    Err(TrainError::Distributed {
        message: format!("after step {step} the weights of ranks {odd:?} differ from rank 0's: the ranks diverged"),
    })
}

/// Everything a training run needs besides the recipe.
pub struct TrainOptions {
    /// The recipe (on resume, the one saved in the run directory is used instead).
    pub recipe: Recipe,
    /// Where the recipe came from, for error messages.
    pub recipe_origin: PathBuf,
    /// Data directory (else the recipe's `data.dir`, else `VIT_DATA_DIR`).
    pub data_dir: Option<PathBuf>,
    /// The run directory: config, metrics, checkpoints.
    pub run_dir: PathBuf,
    /// Where to compute.
    pub device: Device,
    /// Continue the run in `run_dir` from its last checkpoint.
    pub resume: bool,
    /// Set (e.g. by Ctrl-C) to save a checkpoint and stop after the current step.
    pub stop: Arc<AtomicBool>,
    /// Stop as if interrupted after this many steps in all (to test resuming).
    pub stop_after_steps: Option<u64>,
    /// Write a [`StepRecord`] to `steps.jsonl` and `steps.csv` every this many steps.
    pub step_metrics_every: Option<usize>,
}

/// The prepared data of a run.
struct Data {
    train: Arc<Dataset>,
    /// `None` without a validation split: no model selection, the last epoch's model is tested.
    val: Option<Arc<Dataset>>,
    test: Arc<Dataset>,
    pipeline: Pipeline,
    /// Images left out as unreadable (with `data.skip_unreadable`).
    skipped: Vec<SkippedImage>,
}

/// The training and test splits of `recipe`'s data set as a model of `cfg` takes them (its
/// classes kept, when the recipe keeps some), from `data_dir`, else the recipe's, else
/// `VIT_DATA_DIR`; and the images skipped as unreadable, when the recipe allows it.
pub fn load_recipe_splits(
    recipe: &Recipe,
    cfg: &VitConfig,
    data_dir: Option<&Path>,
) -> Result<(Dataset, Dataset, Vec<SkippedImage>), TrainError> {
    let size = (cfg.image_size[0], cfg.image_size[1]);
    let dir = data_dir.or(recipe.data.dir.as_deref());
    let options = FolderOptions { skip_unreadable: recipe.data.skip_unreadable, stream: recipe.data.stream };
    let (mut train, mut test, skipped) = load_splits_with(&recipe.data.dataset, dir, size, cfg.channels, &options)?;
    if let Some(classes) = &recipe.data.classes {
        (train, test) = (train.keep_classes(classes)?, test.keep_classes(classes)?);
    }
    Ok((train, test, skipped))
}

/// The run's data; `normalizer` given (inherited from the weights the run starts from, or the
/// run's own on resume) or else fitted to the training split.
fn prepare_data(
    recipe: &Recipe,
    cfg: &VitConfig,
    data_dir: Option<&Path>,
    normalizer: Option<Normalizer>,
) -> Result<Data, TrainError> {
    let size = (cfg.image_size[0], cfg.image_size[1]);
    let (mut train, test, skipped) = load_recipe_splits(recipe, cfg, data_dir)?;
    if let Some(limit) = recipe.data.limit_train {
        let keep: Vec<usize> = (0..limit.min(train.len())).collect();
        train = train.select(&keep, train.name.clone());
    }
    check_fits(&train, cfg)?;
    check_fits(&test, cfg)?;
    // The test split is never used to choose a model (unless a time-to-accuracy recipe asks
    // for it by name): without a validation split there is no choice to make, and the last
    // epoch's model is the one tested.
    let test = Arc::new(test);
    let (train, val) = if recipe.data.validate_on_test {
        (train, Some(test.clone()))
    } else if recipe.data.validation_split > 0.0 {
        let (train, val) = train.split_validation(recipe.data.validation_split, recipe.train.seed)?;
        (train, Some(Arc::new(val)))
    } else {
        (train, None)
    };
    let normalizer = match normalizer {
        Some(n) => n,
        None => Normalizer::fit(&train)?,
    };
    Ok(Data { train: Arc::new(train), val, test, pipeline: Pipeline { size, normalizer }, skipped })
}

/// The metadata every checkpoint of the run carries: the config, the class names, how to
/// prepare images, and the recipe.
fn checkpoint_meta(cfg: &VitConfig, data: &Data, recipe: &Recipe) -> CheckpointMeta {
    let mut extra = BTreeMap::new();
    metadata::put_pipeline(&mut extra, &data.pipeline.normalizer, (data.train.height, data.train.width));
    extra.insert("train.recipe".into(), recipe.to_toml());
    CheckpointMeta { config: cfg.clone(), class_names: data.train.class_names.clone(), extra }
}

/// Runs (or resumes) training as the options say, telling `observer` how it goes.
pub fn train(opts: TrainOptions, observer: &mut dyn TrainObserver) -> Result<TrainOutcome, TrainError> {
    train_with(opts, observer, &mut SingleProcess)
}

/// [`train`] as one rank of data-parallel training over `comm` (see [`crate::distributed`]).
/// Every rank runs this with the same options; rank 0 writes the run directory and tells its
/// observer, and every rank returns the same outcome. [`SingleProcess`] is [`train`].
pub fn train_with(
    opts: TrainOptions,
    observer: &mut dyn TrainObserver,
    comm: &mut dyn Collective,
) -> Result<TrainOutcome, TrainError> {
    let (rank, world) = (comm.rank(), comm.world_size());
    // Any real backend takes the data-parallel path, even alone (`mpirun -n 1`): its
    // collectives then run as in a larger job, and give the single-process arithmetic.
    let distributed = !comm.is_single_process();
    let root = rank == 0;
    let device = opts.device.clone();
    // Only rank 0 creates the directory and clears what a killed process left there: another
    // rank doing so could remove a file rank 0 is writing.
    let run = if root { RunDir::create(&opts.run_dir)? } else { RunDir::at(&opts.run_dir) };

    // The recipe, model, optimizer and state: fresh, or from the run directory.
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
    // Images are normalised as the weights the run starts from expect (a pretrained model's
    // statistics, when its checkpoint records them), else by the training split's own; a
    // resumed run keeps what it started with.
    let recorded =
        if opts.resume { Some(run.last_path()).filter(|p| p.exists()) } else { recipe.train.init_from.clone() };
    let normalizer = match recorded {
        Some(path) => {
            let meta = vit_model::checkpoint::read_meta(&path)?;
            let recorded = meta.extra.contains_key(vit_model::checkpoint::NORMALIZER_KEY);
            if recorded { Some(metadata::pipeline_of(&meta, &path)?.0) } else { None }
        }
        None => None,
    };
    let data = prepare_data(&recipe, &cfg, opts.data_dir.as_deref(), normalizer)?;
    let t = &recipe.train;
    if t.batch_size < world {
        return Err(TrainError::Distributed {
            message: format!(
                "train.batch_size {} is the global batch: it must be at least the {world} ranks",
                t.batch_size
            ),
        });
    }
    let last_batch = data.train.len() % t.batch_size;
    if distributed && last_batch != 0 && last_batch < world {
        return Err(TrainError::Distributed {
            message: format!(
                "the last batch of each epoch holds {last_batch} of the {} training images, fewer than the {world} ranks: choose another train.batch_size or data.limit_train",
                data.train.len()
            ),
        });
    }
    let steps_per_epoch = data.train.len().div_ceil(t.batch_size);
    let schedule = Schedule {
        peak: t.learning_rate,
        min_lr: t.min_learning_rate,
        warmup: (t.warmup_epochs * steps_per_epoch as f64).round() as u64,
        total: (t.epochs * steps_per_epoch) as u64,
    };

    let mut saved_optimizer = None;
    let mut saved_ema = HashMap::new();
    let mut initialized_from = None;
    let (model, store, mut state) = if opts.resume {
        let last = run.load_last(&device)?;
        last.model.rng().set_state(last.state.rng.into());
        saved_optimizer = Some(last.optimizer);
        saved_ema = last.ema;
        (last.model, last.store, last.state)
    } else {
        if root {
            run.write_recipe(&recipe)?;
        }
        let (model, store) = Vit::init(&cfg, t.seed, &device)?;
        if let Some(path) = &t.init_from {
            let source = vit_model::checkpoint::load(path, &device)?;
            // The head carries over only to the same classes; other classes, even as many, get
            // a fresh one.
            let keep_head = source.meta.class_names == data.train.class_names;
            let transfer = vit_model::init_from(&store, &cfg, &source, keep_head)?;
            initialized_from = Some((path.clone(), transfer.to_string()));
        }
        let scaler = if t.precision == Precision::F16 { LossScaler::default() } else { LossScaler::disabled() };
        let state = TrainState::fresh(model.rng().state(), scaler);
        (model, store, state)
    };
    let params = params_of(&model, &store).map_err(|message| TrainError::Inconsistent { message })?;
    let params = select_trainable(params, cfg.num_layers, &t.fine_tuning());
    let mut optimizer = AdamW::new(&params, AdamWConfig { weight_decay: t.weight_decay, ..AdamWConfig::default() })?;
    if let Some(tensors) = saved_optimizer {
        run.restore_optimizer(&mut optimizer, &tensors, &state)?;
    }
    let mut vars: Vec<(String, candle_core::Var)> = params.into_iter().map(|p| (p.name, p.var)).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut ema = match t.ema_decay {
        None => None,
        Some(decay) if opts.resume => Some(ema::Ema::restore(decay, &vars, &saved_ema).map_err(|message| {
            TrainError::Resume { path: run.last_path(), message: format!("train.ema_decay is set, but {message}") }
        })?),
        Some(decay) => Some(ema::Ema::new(decay, &vars)?),
    };
    let stepper = Stepper {
        vars: vars.iter().map(|(_, v)| v.clone()).collect(),
        compute_dtype: t.precision.compute_dtype(),
        label_smoothing: t.label_smoothing,
        clip_grad_norm: t.clip_grad_norm,
    };
    let mut records = if opts.resume { run.read_metrics(state.epochs_done)? } else { Vec::new() };
    observer.run_started(&RunStarted {
        recipe: recipe.name.clone(),
        dataset: data.train.name.clone(),
        images: (data.train.len(), data.val.as_ref().map_or(0, |v| v.len()), data.test.len()),
        device: format!("{device:?}"),
        parameters: model.summary().total_parameters(),
        run_dir: run.path().to_path_buf(),
        resumed_after: opts.resume.then_some((state.epochs_done, state.step)),
        initialized_from,
        skipped_images: data.skipped.clone(),
    });

    let mut step_log = match opts.step_metrics_every {
        Some(every) if root => {
            Some(step_log::StepLog::open(run.path(), every, if opts.resume { state.step } else { 0 })?)
        }
        Some(_) => None,
        None => None,
    };
    let session_start = Instant::now();
    let meta = checkpoint_meta(&cfg, &data, &recipe);
    // The last checkpoint, with the wall time of this session added to the state it records.
    let save_progress =
        |state: &TrainState, optimizer: &AdamW, ema: Option<&ema::Ema>| -> Result<PathBuf, TrainError> {
            if !root {
                return Ok(run.last_path());
            }
            let mut saved = state.clone();
            saved.elapsed_seconds += session_start.elapsed().as_secs_f64();
            run.save_last(&store, optimizer, ema, &meta, &saved, &device)
        };
    while state.epochs_done < t.epochs {
        let epoch = state.epochs_done + 1;
        let order = shuffled(data.train.len(), t.seed, epoch as u64);
        let augment = Some((recipe.augment.clone(), t.seed, epoch as u64));
        let loader = Loader::spawn(
            data.train.clone(),
            data.pipeline.clone(),
            order,
            t.batch_size,
            state.batch_in_epoch,
            augment,
        )?;
        let mut tally = state.partial.resume(cfg.num_classes);
        observer.epoch_started(epoch, t.epochs, steps_per_epoch, state.batch_in_epoch);
        let mut epoch_train_seconds = 0.0;
        let mut epoch_images = 0usize;
        let mut lr = schedule.lr(state.step);
        for batch in loader {
            let batch = batch?;
            let step_start = Instant::now();
            lr = schedule.lr(state.step);
            let (images, labels) = batch.to_tensors(&device)?;
            let targets = Targets::of(&batch, labels)?;
            // A mixed image is counted as right when the model picks the label with the larger
            // share (timm reports no training accuracy under mixup; this one is labelled so).
            let tally_labels: std::borrow::Cow<[u32]> = match &batch.mix {
                Some(mix) => mix.dominant_labels(&batch.labels).into(),
                None => batch.labels.as_slice().into(),
            };
            let asked_to_stop = opts.stop.load(Ordering::SeqCst) || opts.stop_after_steps == Some(state.step + 1);
            let outcome = if distributed {
                // This rank's rows of the global batch; dropout keyed by the global row.
                let (first, len) = shard_rows(batch.len(), rank, world);
                model.rng().set_shard(Some(BatchShard { first, len, global: batch.len() }));
                let shard = ShardStep {
                    comm: &mut *comm,
                    weight: len as f64 / batch.len() as f64,
                    labels: &tally_labels[first..first + len],
                    stop: asked_to_stop,
                };
                let (images, targets) = (images.narrow(0, first, len)?, targets.narrow(first, len)?);
                let outcome =
                    stepper.step(&model, &mut optimizer, &mut state.loss_scaler, &images, &targets, lr, Some(shard));
                model.rng().set_shard(None);
                outcome?
            } else {
                stepper.step(&model, &mut optimizer, &mut state.loss_scaler, &images, &targets, lr, None)?
            };
            let last_good = || {
                let last = run.last_path();
                if last.exists() { last.display().to_string() } else { "none (no checkpoint was written yet)".into() }
            };
            let (loss, logits, skipped, global) = match outcome {
                StepOutcome::Taken { loss, logits, skipped, global } => (loss, logits, skipped, global),
                StepOutcome::NonFiniteLoss(loss) => {
                    observer.epoch_stopped(EpochEnd::Diverged);
                    return Err(TrainError::NonFiniteLoss {
                        loss,
                        epoch,
                        step: state.step,
                        lr,
                        last_good: last_good(),
                    });
                }
                StepOutcome::NonFiniteGradient(norm) => {
                    observer.epoch_stopped(EpochEnd::Diverged);
                    let step = state.step;
                    return Err(TrainError::NonFiniteGradient { norm, epoch, step, lr, last_good: last_good() });
                }
            };
            state.skipped_steps += u64::from(skipped);
            if let Some(ema) = ema.as_mut().filter(|_| !skipped) {
                // One update per optimizer step taken, numbered as the optimizer counts them.
                ema.update(&vars, optimizer.step_count().saturating_sub(1))?;
            }
            let stop_now = match global {
                Some(g) => {
                    tally.add_counts(g.count, g.top1, g.top5, g.non_finite, f64::from(loss));
                    g.stop
                }
                None => {
                    tally.add(&logits, &tally_labels, f64::from(loss));
                    asked_to_stop
                }
            };
            state.step += 1;
            state.batch_in_epoch += 1;
            let seconds = step_start.elapsed().as_secs_f64();
            epoch_train_seconds += seconds;
            epoch_images += batch.len();
            state.train_seconds += seconds;
            state.images_trained += batch.len() as u64;
            if let Some(log) = step_log.as_mut() {
                log.record(&StepRecord {
                    epoch,
                    step: state.step,
                    loss: f64::from(loss),
                    epoch_loss: tally.loss(),
                    epoch_top1: tally.top1(),
                    learning_rate: lr,
                    images_per_second: batch.len() as f64 / seconds.max(1e-9),
                    train_seconds: state.train_seconds,
                })?;
            }
            observer.step_finished(&StepProgress {
                epoch,
                steps_done: state.batch_in_epoch,
                steps_per_epoch,
                loss: tally.loss(),
                top1: tally.top1(),
                images_per_second: epoch_images as f64 / epoch_train_seconds.max(1e-9),
            });
            if distributed && state.step % CHECK_EVERY == 0 {
                check_in_step(&stepper, comm, state.step)?;
            }
            if stop_now && state.batch_in_epoch < steps_per_epoch {
                observer.epoch_stopped(EpochEnd::Interrupted);
                state.partial = EpochTally::of(&tally);
                state.rng = model.rng().state().into();
                let checkpoint = save_progress(&state, &optimizer, ema.as_ref())?;
                return Ok(TrainOutcome::Interrupted { checkpoint, step: state.step });
            }
        }
        observer.epoch_trained();

        // The validation split, if there is one, evaluated with `model`.
        let mut validate = |model: &Vit, split: &str| -> Result<Option<Tally>, TrainError> {
            let Some(val_data) = &data.val else { return Ok(None) };
            let (pipeline, batch) = (&data.pipeline, t.eval_batch_size);
            evaluate_finite(model, val_data, pipeline, batch, &device, (split, epoch), observer, comm).map(Some)
        };
        let val = validate(&model, "validation")?;
        // The moving average, as a model of the store's weights with the averaged ones in.
        let ema_weights = ema.as_ref().map(|ema| averaged_weights(&store, ema));
        let ema_val = match &ema_weights {
            Some(weights) if data.val.is_some() => {
                let averaged =
                    Vit::from_tensors(&cfg, weights.clone().into_iter().collect(), &run.last_path(), &device)?.0;
                validate(&averaged, "validation (moving average)")?
            }
            _ => None,
        };
        let mut record = epoch_record(epoch, state.step, &tally, val.as_ref(), lr, epoch_train_seconds, epoch_images);
        record.ema_val_loss = ema_val.as_ref().map(Tally::loss);
        record.ema_val_top1 = ema_val.as_ref().map(Tally::top1);
        record.ema_val_top5 = ema_val.as_ref().map(Tally::top5);
        records.push(record);
        state.epochs_done = epoch;
        state.batch_in_epoch = 0;
        state.partial = EpochTally::default();
        let judged = if t.select_by_ema { ema_val.as_ref() } else { val.as_ref() };
        let improved = judged.is_some_and(|val| val.top1() > state.best_val_top1);
        if let Some(val) = judged.filter(|_| improved) {
            state.best_val_top1 = val.top1();
            state.best_epoch = epoch;
        }
        state.rng = model.rng().state().into();
        // Metrics first: a crash before the checkpoint leaves a line that resume drops.
        if root {
            run.write_metrics(&records)?;
        }
        if improved && root {
            match (t.select_by_ema, &ema_weights) {
                (true, Some(weights)) => run.save_best_tensors(weights, &meta)?,
                _ => run.save_best(&store, &meta)?,
            }
        }
        save_progress(&state, &optimizer, ema.as_ref())?;
        if distributed {
            // Every rank past rank 0's writes (a later read of best.safetensors sees them), and
            // still holding the same weights.
            comm.barrier()?;
            check_in_step(&stepper, comm, state.step)?;
        }
        observer.epoch_finished(&records, run.path());
    }

    // The chosen model, evaluated once on the test set.
    let selected = data.val.is_some();
    let (chosen, model_selection) = if selected {
        let what =
            if t.select_by_ema { "the moving average's best validation top-1" } else { "the best validation top-1" };
        let mut message = format!("{what}, epoch {}", state.best_epoch);
        if recipe.data.validate_on_test {
            message = format!(
                "{} (data.validate_on_test: chosen on the test set itself, so the test score is optimistic)",
                message.replace("validation", "test")
            );
        }
        (Vit::load(run.best_path(), &device)?.0, message)
    } else if let (true, Some(ema)) = (t.select_by_ema, ema.as_ref()) {
        let weights = averaged_weights(&store, ema).into_iter().collect();
        let averaged = Vit::from_tensors(&cfg, weights, &run.last_path(), &device)?.0;
        (averaged, "none: no validation split, so the last epoch's moving average is tested".to_string())
    } else {
        (model, "none: no validation split, so the last epoch's model is tested".to_string())
    };
    let split = ("test", t.epochs);
    let test = evaluate_finite(&chosen, &data.test, &data.pipeline, t.eval_batch_size, &device, split, observer, comm)?;
    let report = TrainReport {
        model_selection,
        best_epoch: selected.then_some(state.best_epoch),
        best_val_top1: selected.then_some(state.best_val_top1),
        test_loss: test.loss(),
        test_top1: test.top1(),
        test_top5: test.top5(),
        test_images: test.count,
        test_confusion: test.confusion.clone(),
        wall_seconds: state.elapsed_seconds + session_start.elapsed().as_secs_f64(),
        images_per_second: state.images_trained as f64 / state.train_seconds.max(1e-9),
        run_dir: run.path().to_path_buf(),
    };
    if root {
        run.write_summary(&report)?;
    }
    Ok(TrainOutcome::Finished(report))
}

/// Evaluates `data` for the `(split, epoch)` named, told to `observer` (in data-parallel
/// training, this rank's share of it, the counts summed across ranks: each image is evaluated
/// once in the job), with NaN or infinite logits an error: weights that give them cannot be right.
#[allow(clippy::too_many_arguments)]
fn evaluate_finite(
    model: &Vit,
    data: &Arc<Dataset>,
    pipeline: &Pipeline,
    batch_size: usize,
    device: &Device,
    (split, epoch): (&str, usize),
    observer: &mut dyn TrainObserver,
    comm: &mut dyn Collective,
) -> Result<Tally, TrainError> {
    let world = comm.world_size();
    let (first, len) = shard_rows(data.len(), comm.rank(), world);
    observer.evaluation_started(split, len);
    let rows = first..first + len;
    let tally =
        evaluate_rows(model, data, rows, pipeline, batch_size, device, &mut |done| observer.evaluation_progress(done));
    observer.evaluation_finished();
    let mut tally = tally?;
    if world > 1 {
        tally = summed_across_ranks(&tally, comm)?;
    }
    if tally.non_finite > 0 {
        return Err(TrainError::NonFiniteLogits {
            split: data.name.clone(),
            count: tally.non_finite,
            images: tally.count,
            epoch,
        });
    }
    Ok(tally)
}

/// The tally of every rank's share, summed in one all-reduce (counts below 2^24 are exact in
/// `f32`).
fn summed_across_ranks(tally: &Tally, comm: &mut dyn Collective) -> Result<Tally, TrainError> {
    let classes = tally.confusion.len();
    let mut buffer =
        vec![tally.count as f32, tally.top1 as f32, tally.top5 as f32, tally.non_finite as f32, tally.loss_sum as f32];
    buffer.extend(tally.confusion.iter().flatten().map(|&n| n as f32));
    comm.all_reduce_sum(&mut buffer)?;
    let count = |v: f32| v.round() as usize;
    let confusion =
        buffer[5..].chunks(classes.max(1)).take(classes).map(|row| row.iter().map(|&v| count(v)).collect()).collect();
    Ok(Tally {
        count: count(buffer[0]),
        top1: count(buffer[1]),
        top5: count(buffer[2]),
        non_finite: count(buffer[3]),
        loss_sum: f64::from(buffer[4]),
        confusion,
    })
}

fn epoch_record(
    epoch: usize,
    step: u64,
    train: &Tally,
    val: Option<&Tally>,
    learning_rate: f64,
    train_seconds: f64,
    images: usize,
) -> EpochRecord {
    EpochRecord {
        epoch,
        step,
        train_loss: train.loss(),
        train_top1: train.top1(),
        train_top5: train.top5(),
        val_loss: val.map(Tally::loss),
        val_top1: val.map(Tally::top1),
        val_top5: val.map(Tally::top5),
        ema_val_loss: None,
        ema_val_top1: None,
        ema_val_top5: None,
        learning_rate,
        train_seconds,
        images_per_second: images as f64 / train_seconds.max(1e-9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::Collective;

    /// Rank 0 of two, whose partner holds `other`: an all-reduce adds the partner's buffer.
    struct PairedWith {
        other: Vec<f32>,
    }

    impl Collective for PairedWith {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn all_reduce_sum(&mut self, buffer: &mut [f32]) -> Result<(), TrainError> {
            assert_eq!(buffer.len(), self.other.len(), "the ranks' buffers differ in length");
            buffer.iter_mut().zip(&self.other).for_each(|(b, o)| *b += o);
            Ok(())
        }
        fn all_gather_u64(&mut self, value: u64) -> Result<Vec<u64>, TrainError> {
            Ok(vec![value, value])
        }
        fn barrier(&mut self) -> Result<(), TrainError> {
            Ok(())
        }
    }

    #[test]
    fn the_ranks_shares_of_an_evaluation_sum_to_the_whole() {
        let logits = vec![vec![2.0, 0.0, 1.0], vec![0.0, 3.0, 1.0], vec![0.0, 1.0, 2.0], vec![5.0, 1.0, 0.0]];
        let labels = [0u32, 2, 2, 1];
        let mut whole = Tally::new(3);
        whole.add(&logits, &labels, 0.5);
        let (mut first, mut second) = (Tally::new(3), Tally::new(3));
        first.add(&logits[..1], &labels[..1], 0.25);
        second.add(&logits[1..], &labels[1..], 0.5);
        // What rank 1 sends: its counts, loss sum and confusion matrix, in the same layout.
        let mut other =
            vec![second.count as f32, second.top1 as f32, second.top5 as f32, second.non_finite as f32, 1.5];
        other.extend(second.confusion.iter().flatten().map(|&n| n as f32));
        let summed = summed_across_ranks(&first, &mut PairedWith { other }).unwrap();
        assert_eq!((summed.count, summed.top1, summed.top5, summed.non_finite), (4, 2, 4, 0));
        assert_eq!(summed.confusion, whole.confusion);
        assert_eq!(summed.loss_sum, 0.25 + 1.5);
    }
}
