//! The training loop: epochs of AdamW steps, validation, best/last checkpoints, exact resume,
//! a NaN guard, `metrics.jsonl` and `curves.png`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use vit_blocks::{RngState, SeededVarMap};
use vit_model::checkpoint::{self, CheckpointMeta};
use vit_model::{Vit, VitConfig};

use crate::augment::{Normalizer, shuffled};
use crate::data::{Dataset, load_splits};
use crate::loader::{Loader, Pipeline};
use crate::metrics::{Tally, cross_entropy};
use crate::optim::{AdamW, AdamWConfig, LossScaler, Schedule, global_grad_norm};
use crate::plot;
use crate::recipe::{Precision, Recipe};
use crate::{TrainError, metadata};

/// Everything a training run needs besides the recipe.
pub struct TrainOptions {
    /// The recipe (on resume, the one saved in the run directory is used instead).
    pub recipe: Recipe,
    /// Where the recipe came from, for error messages.
    pub recipe_origin: PathBuf,
    /// Data directory (else the recipe's `data.dir`, else `VIT_DATA_DIR`).
    pub data_dir: Option<PathBuf>,
    /// The run directory: config, metrics, checkpoints, curves.
    pub run_dir: PathBuf,
    /// Where to compute.
    pub device: Device,
    /// Continue the run in `run_dir` from its last checkpoint.
    pub resume: bool,
    /// Print progress bars and one line per epoch.
    pub verbose: bool,
    /// Set (e.g. by Ctrl-C) to save a checkpoint and stop after the current step.
    pub stop: Arc<AtomicBool>,
    /// Stop as if interrupted after this many steps in all (to test resuming).
    pub stop_after_steps: Option<u64>,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Steps taken by the end of the epoch.
    pub step: u64,
    /// Mean training loss (with label smoothing, dropout on).
    pub train_loss: f64,
    /// Training top-1 accuracy.
    pub train_top1: f64,
    /// Training top-5 accuracy.
    pub train_top5: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Validation top-1 accuracy.
    pub val_top1: f64,
    /// Validation top-5 accuracy.
    pub val_top5: f64,
    /// Learning rate at the last step of the epoch.
    pub learning_rate: f64,
    /// Seconds of training steps in the epoch (evaluation excluded).
    pub train_seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

/// What a finished run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Epoch with the best validation top-1 (1-based).
    pub best_epoch: usize,
    /// That validation top-1.
    pub best_val_top1: f64,
    /// Test loss of the best checkpoint.
    pub test_loss: f64,
    /// Test top-1 of the best checkpoint.
    pub test_top1: f64,
    /// Test top-5 of the best checkpoint.
    pub test_top5: f64,
    /// Test images.
    pub test_images: usize,
    /// Wall time of the whole run, including earlier sessions of a resumed run.
    pub wall_seconds: f64,
    /// Training images per second over all epochs (steps only).
    pub images_per_second: f64,
    /// The run directory.
    pub run_dir: PathBuf,
}

/// How a run ended.
#[derive(Debug)]
pub enum TrainOutcome {
    /// All epochs ran; the best checkpoint was evaluated on the test set.
    Finished(TrainReport),
    /// Stopped early (Ctrl-C); `vit train --resume` continues exactly.
    Interrupted {
        /// The checkpoint written.
        checkpoint: PathBuf,
        /// Steps done.
        step: u64,
    },
}

/// Where a run stands, saved in the last checkpoint's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TrainState {
    epochs_done: usize,
    batch_in_epoch: usize,
    step: u64,
    rng: (u64, u64),
    best_val_top1: f64,
    best_epoch: usize,
    partial: (usize, usize, usize, f64),
    elapsed_seconds: f64,
    train_seconds: f64,
    images_trained: u64,
    /// `f16` loss scaling (disabled otherwise); runs saved before it existed had none.
    #[serde(default = "LossScaler::disabled")]
    loss_scaler: LossScaler,
    /// Steps skipped because `f16` gradients overflowed: the optimizer took `step - skipped`.
    #[serde(default)]
    skipped_steps: u64,
}

impl TrainState {
    /// Records where the dropout stream stands.
    fn capture_rng(&mut self, model: &Vit) {
        let rng = model.rng().state();
        self.rng = (rng.seed, rng.counter);
    }
}

const STATE_KEY: &str = "train.state";
const BEST: &str = "best.safetensors";
const LAST: &str = "last.safetensors";
const LAST_OPTIMIZER: &str = "last.optimizer.safetensors";
const METRICS: &str = "metrics.jsonl";

/// The prepared data of a run.
struct Data {
    train: Arc<Dataset>,
    val: Arc<Dataset>,
    test: Arc<Dataset>,
    pipeline: Pipeline,
}

fn prepare_data(recipe: &Recipe, cfg: &VitConfig, data_dir: Option<&Path>) -> Result<Data, TrainError> {
    let size = (cfg.image_size[0], cfg.image_size[1]);
    let dir = data_dir.or(recipe.data.dir.as_deref());
    let (mut train, test) = load_splits(&recipe.data.dataset, dir, size, cfg.channels)?;
    if let Some(limit) = recipe.data.limit_train {
        let keep: Vec<usize> = (0..limit.min(train.len())).collect();
        train = train.select(&keep, train.name.clone());
    }
    check_fits(&train, cfg)?;
    check_fits(&test, cfg)?;
    let (train, val) = if recipe.data.validation_split > 0.0 {
        train.split_validation(recipe.data.validation_split)
    } else {
        (train, test.clone())
    };
    let normalizer = Normalizer::fit(&train);
    Ok(Data {
        train: Arc::new(train),
        val: Arc::new(val),
        test: Arc::new(test),
        pipeline: Pipeline { size, normalizer },
    })
}

/// Checks that `data` has the channels and classes the model `cfg` takes.
pub fn check_fits(data: &Dataset, cfg: &VitConfig) -> Result<(), TrainError> {
    let mismatch = |message: String| Err(TrainError::Mismatch { dataset: data.name.clone(), message });
    if data.channels != cfg.channels {
        return mismatch(format!("images have {} channels, the model takes {}", data.channels, cfg.channels));
    }
    if data.num_classes() != cfg.num_classes {
        return mismatch(format!("{} classes, the model has {} outputs", data.num_classes(), cfg.num_classes));
    }
    Ok(())
}

/// Inference over a whole data set: loss, top-1, top-5 and the confusion matrix.
pub fn evaluate(
    model: &Vit,
    data: &Arc<Dataset>,
    pipeline: &Pipeline,
    batch_size: usize,
    device: &Device,
) -> Result<Tally, TrainError> {
    let mut tally = Tally::new(data.num_classes());
    let model = model.detached();
    let (h, w) = pipeline.size;
    let order: Vec<usize> = (0..data.len()).collect();
    for batch in Loader::spawn(data.clone(), pipeline.clone(), order, batch_size, 0, None) {
        let n = batch.labels.len();
        let x = Tensor::from_vec(batch.images, (n, h, w, data.channels), device)?;
        let logits = model.forward(&x, false)?;
        let labels = Tensor::new(batch.labels.as_slice(), device)?;
        let loss = cross_entropy(&logits, &labels, 0.0)?.to_scalar::<f32>()?;
        tally.add(&logits.to_dtype(DType::F32)?.to_vec2::<f32>()?, &batch.labels, f64::from(loss));
    }
    Ok(tally)
}

fn meta_for(cfg: &VitConfig, data: &Data, recipe: &Recipe, state: Option<&TrainState>) -> CheckpointMeta {
    let mut extra = BTreeMap::new();
    metadata::put_pipeline(&mut extra, &data.pipeline.normalizer, (data.train.height, data.train.width));
    extra.insert("train.recipe".into(), recipe.to_toml());
    if let Some(s) = state {
        extra.insert(STATE_KEY.into(), serde_json::to_string(s).expect("state serialises"));
    }
    CheckpointMeta { config: cfg.clone(), class_names: data.train.class_names.clone(), extra }
}

fn save_last(
    run_dir: &Path,
    store: &SeededVarMap,
    optimizer: &AdamW,
    meta: &CheckpointMeta,
    device: &Device,
) -> Result<PathBuf, TrainError> {
    // The optimizer first: a crash between the two files leaves a checkpoint whose step does not
    // match the optimizer's, which resume detects, rather than a silently stale optimizer.
    let state = optimizer.state(device)?;
    let bytes =
        safetensors::serialize(state.iter(), None).map_err(|e| TrainError::io(run_dir.join(LAST_OPTIMIZER), e))?;
    checkpoint::write_atomically(&run_dir.join(LAST_OPTIMIZER), &bytes)?;
    let path = run_dir.join(LAST);
    checkpoint::save(&path, store.varmap(), meta)?;
    Ok(path)
}

fn append_metrics(run_dir: &Path, records: &[EpochRecord]) -> Result<(), TrainError> {
    let path = run_dir.join(METRICS);
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r).expect("record serialises"));
        text.push('\n');
    }
    checkpoint::write_atomically(&path, text.as_bytes())?;
    Ok(())
}

fn read_metrics(run_dir: &Path, epochs_done: usize) -> Result<Vec<EpochRecord>, TrainError> {
    let path = run_dir.join(METRICS);
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

/// Runs (or resumes) training as the options say.
pub fn train(opts: TrainOptions) -> Result<TrainOutcome, TrainError> {
    let run_dir = opts.run_dir.clone();
    let device = opts.device.clone();
    std::fs::create_dir_all(&run_dir).map_err(|e| TrainError::io(&run_dir, e))?;
    let config_path = run_dir.join("config.toml");

    // The recipe, model, optimizer and state: fresh, or from the run directory.
    let (recipe, origin) = if opts.resume {
        let text = std::fs::read_to_string(&config_path).map_err(|e| TrainError::Resume {
            path: config_path.clone(),
            message: format!("{e}: is this a run directory?"),
        })?;
        (Recipe::parse(&text, &config_path)?, config_path.clone())
    } else {
        if run_dir.join(LAST).exists() {
            return Err(TrainError::Resume {
                path: run_dir.clone(),
                message: "the directory already holds a run: pass --resume to continue it, or choose another --out"
                    .into(),
            });
        }
        (opts.recipe.clone(), opts.recipe_origin.clone())
    };
    let cfg = recipe.model_config(&origin)?;
    let data = prepare_data(&recipe, &cfg, opts.data_dir.as_deref())?;
    let t = &recipe.train;
    let steps_per_epoch = data.train.len().div_ceil(t.batch_size);
    let schedule = Schedule {
        peak: t.learning_rate,
        min_lr: t.min_learning_rate,
        warmup: (t.warmup_epochs * steps_per_epoch as f64).round() as u64,
        total: (t.epochs * steps_per_epoch) as u64,
    };

    let (model, store, mut state) = if opts.resume {
        let (model, store, meta) = Vit::load(run_dir.join(LAST), &device)?;
        let raw = meta.extra.get(STATE_KEY).ok_or_else(|| TrainError::Resume {
            path: run_dir.join(LAST),
            message: format!("metadata `{STATE_KEY}` is missing"),
        })?;
        let state: TrainState = serde_json::from_str(raw)
            .map_err(|e| TrainError::Resume { path: run_dir.join(LAST), message: format!("`{STATE_KEY}`: {e}") })?;
        model.rng().set_state(RngState { seed: state.rng.0, counter: state.rng.1 });
        (model, store, state)
    } else {
        std::fs::write(&config_path, recipe.to_toml()).map_err(|e| TrainError::io(&config_path, e))?;
        let (model, store) = Vit::init(&cfg, t.seed, &device)?;
        let mut state = TrainState {
            epochs_done: 0,
            batch_in_epoch: 0,
            step: 0,
            rng: (0, 0),
            // Below any accuracy, and unlike -inf it survives JSON (a Ctrl-C in epoch 1).
            best_val_top1: -1.0,
            best_epoch: 0,
            partial: (0, 0, 0, 0.0),
            elapsed_seconds: 0.0,
            train_seconds: 0.0,
            images_trained: 0,
            loss_scaler: if t.precision == Precision::F16 { LossScaler::default() } else { LossScaler::disabled() },
            skipped_steps: 0,
        };
        state.capture_rng(&model);
        (model, store, state)
    };
    let vars: HashMap<String, candle_core::Var> = store.varmap().data().lock().expect("varmap lock").clone();
    // In name order: a HashMap's order changes from run to run, and so would the rounding of the
    // gradient norm, and a resumed run would not end where an uninterrupted one does.
    let all_vars: Vec<candle_core::Var> = vars.iter().collect::<BTreeMap<_, _>>().into_values().cloned().collect();
    let mut optimizer = AdamW::new(&vars, AdamWConfig { weight_decay: t.weight_decay, ..AdamWConfig::default() })?;
    if opts.resume {
        let path = run_dir.join(LAST_OPTIMIZER);
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| TrainError::Resume { path: path.clone(), message: e.to_string() })?;
        optimizer.load_state(&tensors).map_err(|message| TrainError::Resume { path: path.clone(), message })?;
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
    }
    let mut records = if opts.resume { read_metrics(&run_dir, state.epochs_done)? } else { Vec::new() };
    if opts.verbose {
        println!(
            "training {} on {} ({} train / {} validation / {} test images) on {:?}; {} parameters; run dir {}",
            recipe.name,
            data.train.name,
            data.train.len(),
            data.val.len(),
            data.test.len(),
            device,
            vit_model::group_thousands(model.summary().total_parameters()),
            run_dir.display()
        );
        if opts.resume {
            println!("resuming after epoch {}, step {}", state.epochs_done, state.step);
        }
    }

    let session_start = Instant::now();
    // The last checkpoint, with the wall time of this session added to the state it records.
    let save_progress = |state: &TrainState, optimizer: &AdamW| -> Result<PathBuf, TrainError> {
        let mut saved = state.clone();
        saved.elapsed_seconds += session_start.elapsed().as_secs_f64();
        save_last(&run_dir, &store, optimizer, &meta_for(&cfg, &data, &recipe, Some(&saved)), &device)
    };
    let (h, w) = data.pipeline.size;
    let c = cfg.channels;
    let compute_dtype = t.precision.compute_dtype();
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
        );
        let mut tally = Tally::new(cfg.num_classes);
        (tally.count, tally.top1, tally.top5, tally.loss_sum) = state.partial;
        let bar = progress_bar(opts.verbose, steps_per_epoch as u64, epoch, t.epochs);
        bar.set_position(state.batch_in_epoch as u64);
        let mut epoch_train_seconds = 0.0;
        let mut epoch_images = 0usize;
        let mut lr = schedule.lr(state.step);
        for batch in loader {
            let step_start = Instant::now();
            lr = schedule.lr(state.step);
            let n = batch.labels.len();
            let x = Tensor::from_vec(batch.images, (n, h, w, c), &device)?;
            let labels = Tensor::new(batch.labels.as_slice(), &device)?;
            let compute_model;
            let net = if compute_dtype == DType::F32 {
                &model
            } else {
                compute_model = model.with_compute_dtype(compute_dtype)?;
                &compute_model
            };
            let logits = net.forward(&x, true)?;
            let loss = cross_entropy(&logits, &labels, t.label_smoothing)?;
            let loss_value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            if !loss_value.is_finite() {
                bar.abandon();
                let last = run_dir.join(LAST);
                return Err(TrainError::NonFiniteLoss {
                    loss: loss_value,
                    epoch,
                    step: state.step,
                    lr,
                    last_good: if last.exists() {
                        last.display().to_string()
                    } else {
                        "none (no checkpoint was written yet)".into()
                    },
                });
            }
            let loss_scale = state.loss_scaler.scale;
            let grads = if loss_scale == 1.0 { loss.backward()? } else { (&loss * loss_scale)?.backward()? };
            let norm = if t.clip_grad_norm.is_some() || state.loss_scaler.is_enabled() {
                global_grad_norm(&grads, &all_vars)? / loss_scale
            } else {
                0.0
            };
            let clip = match t.clip_grad_norm {
                Some(max) if norm > max => max / norm,
                _ => 1.0,
            };
            if state.loss_scaler.update(norm * loss_scale) {
                optimizer.step(&grads, lr, clip / loss_scale)?;
            } else {
                state.skipped_steps += 1;
            }
            tally.add(&logits.to_dtype(DType::F32)?.to_vec2::<f32>()?, &batch.labels, f64::from(loss_value));
            state.step += 1;
            state.batch_in_epoch += 1;
            let seconds = step_start.elapsed().as_secs_f64();
            epoch_train_seconds += seconds;
            epoch_images += n;
            state.train_seconds += seconds;
            state.images_trained += n as u64;
            bar.set_message(format!(
                "loss {:.4}  acc {:.4}  {:.0} img/s",
                tally.loss(),
                tally.top1(),
                epoch_images as f64 / epoch_train_seconds.max(1e-9)
            ));
            bar.inc(1);
            let interrupted = opts.stop.load(Ordering::SeqCst) || opts.stop_after_steps == Some(state.step);
            if interrupted && state.batch_in_epoch < steps_per_epoch {
                bar.abandon_with_message("interrupted: saving");
                state.partial = (tally.count, tally.top1, tally.top5, tally.loss_sum);
                state.capture_rng(&model);
                let checkpoint = save_progress(&state, &optimizer)?;
                return Ok(TrainOutcome::Interrupted { checkpoint, step: state.step });
            }
        }
        bar.finish_and_clear();

        let val = evaluate(&model, &data.val, &data.pipeline, t.eval_batch_size, &device)?;
        let record = EpochRecord {
            epoch,
            step: state.step,
            train_loss: tally.loss(),
            train_top1: tally.top1(),
            train_top5: tally.top5(),
            val_loss: val.loss(),
            val_top1: val.top1(),
            val_top5: val.top5(),
            learning_rate: lr,
            train_seconds: epoch_train_seconds,
            images_per_second: epoch_images as f64 / epoch_train_seconds.max(1e-9),
        };
        if opts.verbose {
            println!(
                "epoch {epoch:>3}/{}  loss {:.4}  acc {:.4}  val_loss {:.4}  val_acc {:.4}  val_top5 {:.4}  lr {:.2e}  {:.0} img/s",
                t.epochs,
                record.train_loss,
                record.train_top1,
                record.val_loss,
                record.val_top1,
                record.val_top5,
                lr,
                record.images_per_second
            );
        }
        records.push(record);
        state.epochs_done = epoch;
        state.batch_in_epoch = 0;
        state.partial = (0, 0, 0, 0.0);
        let improved = val.top1() > state.best_val_top1;
        if improved {
            state.best_val_top1 = val.top1();
            state.best_epoch = epoch;
        }
        state.capture_rng(&model);
        // Metrics first: a crash before the checkpoint leaves a line that resume drops.
        append_metrics(&run_dir, &records)?;
        if improved {
            checkpoint::save(run_dir.join(BEST), store.varmap(), &meta_for(&cfg, &data, &recipe, None))?;
        }
        save_progress(&state, &optimizer)?;
        if let Err(e) = plot::write_curves(&run_dir.join("curves.png"), &records) {
            eprintln!("warning: {}: could not draw the curves: {e}", run_dir.join("curves.png").display());
        }
    }

    // The best checkpoint, evaluated once on the test set.
    let (best, _, _) = Vit::load(run_dir.join(BEST), &device)?;
    let test = evaluate(&best, &data.test, &data.pipeline, t.eval_batch_size, &device)?;
    let report = TrainReport {
        best_epoch: state.best_epoch,
        best_val_top1: state.best_val_top1,
        test_loss: test.loss(),
        test_top1: test.top1(),
        test_top5: test.top5(),
        test_images: test.count,
        wall_seconds: state.elapsed_seconds + session_start.elapsed().as_secs_f64(),
        images_per_second: state.images_trained as f64 / state.train_seconds.max(1e-9),
        run_dir: run_dir.clone(),
    };
    let summary = run_dir.join("summary.json");
    let text = serde_json::to_string_pretty(&report).expect("report serialises");
    checkpoint::write_atomically(&summary, text.as_bytes())?;
    Ok(TrainOutcome::Finished(report))
}

fn progress_bar(verbose: bool, len: u64, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    if !verbose {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "epoch {epoch:>3}/{epochs} [{{bar:30}}] {{pos}}/{{len}} {{msg}} ({{elapsed}}<{{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}
