//! `vit train`: a recipe, its overrides, the run directory, Ctrl-C, and the report.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::Args;
use vit_data::DatasetKind;
use vit_train::{Recipe, TrainOptions, TrainOutcome, train};

use crate::args::{DeviceArg, PrecisionArg, at_least_one, at_least_zero, dataset_parser, device_name, positive_number};
use crate::progress::Progress;

#[derive(Args)]
pub struct TrainArgs {
    /// A built-in recipe (default, mnist, fashion-mnist, cifar10, keras-cifar100, digits-0-4,
    /// digits-5-9) or a TOML file. Default: `default`; with --init, the fine-tuning recipe
    /// (the checkpoint's model, a head for the data's classes; see `recipes/finetune.toml`).
    #[arg(long)]
    recipe: Option<String>,
    /// The data set to train on, in the recipe's place (with --init and no --recipe: `folder`,
    /// an image folder in --data-dir).
    #[arg(long, value_parser = dataset_parser(&DatasetKind::ALL))]
    data: Option<DatasetKind>,
    /// Data directory (else the recipe's, else $VIT_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run directory (default: `runs/<recipe name>`, numbered if taken).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint, with the recipe saved in that run
    /// (recipe and override flags are ignored).
    #[arg(long)]
    resume: bool,
    /// Override the recipe's number of epochs (at least 1).
    #[arg(long, value_parser = at_least_one)]
    epochs: Option<usize>,
    /// Override the recipe's batch size (at least 1).
    #[arg(long, value_parser = at_least_one)]
    batch_size: Option<usize>,
    /// Override the recipe's peak learning rate (a positive number).
    #[arg(long, value_parser = positive_number)]
    lr: Option<f64>,
    /// Override the recipe's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Use only the first N training images (at least 1).
    #[arg(long, value_parser = at_least_one)]
    limit_train: Option<usize>,
    /// Start from this checkpoint's weights (fine-tuning; the recipe's `init_from`). Without
    /// --recipe, fine-tunes with no recipe file: `vit train --init model.safetensors
    /// --data-dir my-images/`.
    #[arg(long, value_name = "CHECKPOINT")]
    init: Option<PathBuf>,
    /// Image folders: skip images that cannot be read or decoded (each is listed) instead of
    /// stopping at the first (the recipe's `data.skip_unreadable`).
    #[arg(long)]
    skip_unreadable: bool,
    /// Override the recipe's compute precision: f32, or bf16/f16 (mixed precision, for GPUs:
    /// f32 master weights, f16 with dynamic loss scaling).
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
    /// No progress bars or per-epoch lines.
    #[arg(long)]
    quiet: bool,
    /// When standard error is no terminal (no progress bar): print a progress line every N
    /// seconds (0: after every step).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS", value_parser = at_least_zero)]
    log_every: f64,
    /// Write per-step metrics to `steps.jsonl` and `steps.csv` in the run directory every N
    /// steps (at least 1).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    log_steps: Option<usize>,
    /// Do not write `report.html` (and its pictures) when the run finishes.
    #[arg(long)]
    no_report: bool,
    /// Data-parallel training, one process per rank: `mpirun -n N vit train --distributed mpi`
    /// (a binary built with `--features mpi`), or on GPUs `mpirun -n N vit --device cuda train
    /// --distributed nccl` (built with `--features nccl`; each rank takes the GPU of its rank
    /// on its machine).
    #[arg(long, value_enum)]
    distributed: Option<DistributedArg>,
    /// Stop as if interrupted after this many steps in all (for tests of resuming).
    #[arg(long, hide = true)]
    stop_after_steps: Option<u64>,
}

/// Ends an interrupted run: the shell's convention, 128 + the signal (130 for Ctrl-C, 143 for
/// SIGTERM); 0 when it stopped where it was told to (`--stop-after-steps`), with no signal.
fn exit_interrupted(signal: usize) -> Result<()> {
    if signal == 0 {
        return Ok(());
    }
    std::process::exit(128 + signal as i32)
}

/// The communication engine of data-parallel training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DistributedArg {
    /// MPI (Open MPI, MPICH) between processes on CPUs.
    Mpi,
    /// NCCL between GPUs, bootstrapped over MPI.
    Nccl,
}

/// Runs `opts` as one rank of an MPI job: rank 0 shows progress and writes the run; an error
/// on any rank is printed with its rank and ends the whole job (MPI_Abort), so that no rank
/// waits forever for one that failed.
#[cfg(feature = "mpi")]
fn train_mpi(opts: TrainOptions, progress: &mut Progress) -> Result<(TrainOutcome, usize)> {
    use vit_train::distributed::Collective;
    let mut comm = vit_train::distributed::mpi::MpiCollective::init()?;
    let outcome = train_rank(opts, progress, &mut comm).unwrap_or_else(|e| abort_job(&comm, &e));
    Ok((outcome, comm.rank()))
}

#[cfg(not(feature = "mpi"))]
fn train_mpi(_opts: TrainOptions, _progress: &mut Progress) -> Result<(TrainOutcome, usize)> {
    bail!(
        "--distributed mpi: this vit was built without MPI; build it with `cargo build --release -p vit-cli --features mpi` (needs openmpi-bin libopenmpi-dev libclang-dev)"
    )
}

/// Runs one rank of an NCCL job: MPI starts first and says which GPU this rank takes (its rank
/// on its machine); the ranks then join NCCL's communicator, and train as [`train_mpi`] does.
/// Returns the outcome, the rank and the device.
#[cfg(feature = "nccl")]
fn train_nccl(
    device: DeviceArg,
    options: impl FnOnce(Device) -> TrainOptions,
    progress: &mut Progress,
    quiet: bool,
) -> Result<(TrainOutcome, usize, Device)> {
    use vit_train::distributed::Collective;
    use vit_train::distributed::nccl::{NcclCollective, NcclComm};
    let mpi = vit_train::distributed::mpi::MpiCollective::init()?;
    let device = device.open_local_gpu(mpi.local_rank()).unwrap_or_else(|e| abort_job(&mpi, &e));
    if !quiet && mpi.rank() == 0 {
        println!("device: {} ({} ranks, one GPU each)", device_name(&device), mpi.world_size());
    }
    let nccl = NcclComm::join(&mpi, &device).unwrap_or_else(|e| abort_job(&mpi, &e));
    let mut comm = NcclCollective::new(mpi, nccl);
    let outcome = train_rank(options(device.clone()), progress, &mut comm);
    let outcome = outcome.unwrap_or_else(|e| abort_job(comm.mpi(), &e));
    Ok((outcome, comm.rank(), device))
}

#[cfg(not(feature = "nccl"))]
fn train_nccl(
    _device: DeviceArg,
    _options: impl FnOnce(Device) -> TrainOptions,
    _progress: &mut Progress,
    _quiet: bool,
) -> Result<(TrainOutcome, usize, Device)> {
    bail!(
        "--distributed nccl: this vit was built without NCCL; build it with `cargo build --release -p vit-cli --features nccl` (a CUDA build, see the README's \"Accelerators\" section, with libnccl and MPI)"
    )
}

/// Trains as one rank of `comm`'s job: rank 0 reports to `progress`, the others to no one.
#[cfg(feature = "mpi")]
fn train_rank(
    opts: TrainOptions,
    progress: &mut Progress,
    comm: &mut dyn vit_train::distributed::Collective,
) -> Result<TrainOutcome, vit_train::TrainError> {
    if comm.rank() == 0 {
        vit_train::train_with(opts, progress, comm)
    } else {
        vit_train::train_with(opts, &mut vit_train::Silent, comm)
    }
}

/// Prints `error` with this rank and ends the whole MPI job at once, so that no rank waits
/// forever for one that failed.
#[cfg(feature = "mpi")]
fn abort_job(mpi: &vit_train::distributed::mpi::MpiCollective, error: &dyn std::fmt::Display) -> ! {
    use vit_train::distributed::Collective;
    eprintln!("error: rank {} of {}: {error:#}", mpi.rank(), mpi.world_size());
    mpi.abort(1)
}

/// `runs/<name>`, or `runs/<name>-2`, `-3`, ... if taken: a new run never overwrites an old one.
fn fresh_run_dir(name: &str) -> PathBuf {
    let base = Path::new("runs");
    std::iter::once(base.join(name))
        .chain((2..).map(|i| base.join(format!("{name}-{i}"))))
        .find(|p| !p.exists())
        .expect("an unused name exists")
}

/// Sets the returned flag on SIGINT (Ctrl-C) and SIGTERM (what a scheduler or `docker stop`
/// sends) and records which came: training then saves its state after the step in progress
/// and stops. A second signal exits at once with 128 + its number: the state on disk is the
/// previous one or the new one, each file being committed by a rename.
fn stop_on_signals() -> Result<(Arc<AtomicBool>, Arc<AtomicUsize>)> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    let signal = Arc::new(AtomicUsize::new(0));
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so that it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, stop.clone())
            .context("installing the signal handlers")?;
        signal_hook::flag::register_usize(sig, signal.clone(), sig as usize)
            .context("installing the signal handlers")?;
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handlers")?;
    }
    Ok((stop, signal))
}

pub fn run(args: TrainArgs, device: DeviceArg) -> Result<()> {
    let (origin, mut recipe) = match (&args.recipe, &args.init) {
        (None, Some(init)) => {
            let dataset = args.data.clone().unwrap_or(DatasetKind::Folder);
            let recipe = Recipe::fine_tune(init, dataset, args.data_dir.as_deref())
                .with_context(|| format!("fine-tuning {} (--init) with no --recipe", init.display()))?;
            (PathBuf::from("<fine-tuning recipe>"), recipe)
        }
        (name, _) => {
            let name = name.as_deref().unwrap_or("default");
            let mut recipe = Recipe::load(name)?;
            if let Some(dataset) = &args.data {
                recipe.data.dataset = dataset.clone();
            }
            (PathBuf::from(name), recipe)
        }
    };
    if let Some(e) = args.epochs {
        recipe.train.epochs = e;
    }
    if let Some(b) = args.batch_size {
        recipe.train.batch_size = b;
    }
    if let Some(lr) = args.lr {
        recipe.train.learning_rate = lr;
    }
    if let Some(s) = args.seed {
        recipe.train.seed = s;
    }
    if args.limit_train.is_some() {
        recipe.data.limit_train = args.limit_train;
    }
    if let Some(p) = args.precision {
        recipe.train.precision = p.into();
    }
    if args.skip_unreadable {
        recipe.data.skip_unreadable = true;
    }
    if args.init.is_some() {
        recipe.train.init_from = args.init;
    }
    recipe.validate(&origin).context("the recipe with the command line's overrides")?;
    let run_dir = match args.out {
        Some(dir) => dir,
        None if args.resume => bail!("--resume needs --out <RUN DIR>: the run to continue"),
        None => fresh_run_dir(&recipe.name),
    };
    let (stop, signal) = stop_on_signals()?;
    let report_data_dir = args.data_dir.clone();
    let options = |device: Device| TrainOptions {
        recipe,
        recipe_origin: origin,
        data_dir: args.data_dir,
        run_dir,
        device,
        resume: args.resume,
        stop,
        stop_after_steps: args.stop_after_steps,
        step_metrics_every: args.log_steps,
    };
    let mut progress = Progress::new(args.quiet, Duration::from_secs_f64(args.log_every));
    let opened = |device: DeviceArg| -> Result<Device> {
        let device = device.open()?;
        if !args.quiet {
            println!("device: {}", device_name(&device));
        }
        Ok(device)
    };
    let (outcome, rank, device) = match args.distributed {
        None => {
            let device = opened(device)?;
            (train(options(device.clone()), &mut progress)?, 0, device)
        }
        Some(DistributedArg::Mpi) => {
            let device = opened(device)?;
            let (outcome, rank) = train_mpi(options(device.clone()), &mut progress)?;
            (outcome, rank, device)
        }
        // Each rank opens the GPU of its local rank, which only MPI knows.
        Some(DistributedArg::Nccl) => train_nccl(device, options, &mut progress, args.quiet)?,
    };
    if rank != 0 {
        // Rank 0 reports and writes the report; the others end with it.
        return match outcome {
            TrainOutcome::Interrupted { .. } => exit_interrupted(signal.load(Ordering::SeqCst)),
            TrainOutcome::Finished(_) => Ok(()),
        };
    }
    match outcome {
        TrainOutcome::Finished(r) => {
            let chosen = match (r.best_epoch, r.best_val_top1) {
                (Some(epoch), Some(top1)) => format!("best epoch {epoch} (val top-1 {top1:.4})"),
                _ => "no validation split: the last epoch's model".to_string(),
            };
            println!(
                "done: {chosen}; test top-1 {:.4}, top-5 {:.4} on {} images; {:.1} s, {:.0} img/s; run dir {}",
                r.test_top1,
                r.test_top5,
                r.test_images,
                r.wall_seconds,
                r.images_per_second,
                r.run_dir.display()
            );
            if !args.no_report {
                // The run is saved whatever happens here: a picture that cannot be drawn is a
                // warning, not a failed run.
                match crate::commands::report::write_report(&r.run_dir, report_data_dir.as_deref(), &device, 24, 4) {
                    Ok(page) => {
                        if !args.quiet {
                            println!("report: {}", page.display());
                        }
                    }
                    Err(e) => eprintln!("warning: the report of {} could not be written: {e:#}", r.run_dir.display()),
                }
            }
        }
        TrainOutcome::Interrupted { checkpoint, step } => {
            println!(
                "interrupted at step {step}; saved {}; continue with `vit train --resume --out {}`",
                checkpoint.display(),
                checkpoint.parent().unwrap_or(Path::new(".")).display()
            );
            return exit_interrupted(signal.load(Ordering::SeqCst));
        }
    }
    Ok(())
}
