//! `vit`: train, evaluate and run Vision Transformers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::{Parser, Subcommand};
use vit_model::{Vit, VitConfig};
use vit_train::data::{DatasetKind, load_splits};
use vit_train::loader::Pipeline;
use vit_train::metadata::pipeline_of;
use vit_train::predict::{draw_patches, predict_files};
use vit_train::trainer::check_fits;
use vit_train::{Precision, Recipe, TrainOptions, TrainOutcome, evaluate, train};

// candle allocates and frees large tensors at every op; glibc's malloc hands those back to the
// kernel each time, so every op page-faults afresh. mimalloc keeps them (2-2.7x on a step).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "vit", version, about = "Train, evaluate and run Vision Transformers (candle)")]
struct Cli {
    /// Where to compute: `auto` (CUDA, then Metal, then CPU), `cpu`, `cuda[:N]` or `metal`.
    #[arg(long, global = true, default_value = "auto")]
    device: String,
    /// Worker threads for the CPU (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a recipe (default: the embedded MNIST subset).
    Train {
        /// A built-in recipe (default, mnist, fashion-mnist, cifar10, keras-cifar100) or a TOML file.
        #[arg(long, default_value = "default")]
        recipe: String,
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
        /// Override the recipe's number of epochs.
        #[arg(long)]
        epochs: Option<usize>,
        /// Override the recipe's batch size.
        #[arg(long)]
        batch_size: Option<usize>,
        /// Override the recipe's peak learning rate.
        #[arg(long)]
        lr: Option<f64>,
        /// Override the recipe's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Use only the first N training images.
        #[arg(long)]
        limit_train: Option<usize>,
        /// Override the recipe's compute precision: f32, or bf16/f16 (mixed precision, for
        /// GPUs: f32 master weights, f16 with dynamic loss scaling).
        #[arg(long)]
        precision: Option<Precision>,
        /// No progress bars or per-epoch lines.
        #[arg(long)]
        quiet: bool,
    },
    /// Evaluate a checkpoint: top-1, top-5, per-class accuracy and the confusion matrix.
    Eval {
        /// The checkpoint (.safetensors).
        checkpoint: PathBuf,
        /// The data set: embedded-mnist, mnist, fashion-mnist, cifar10, cifar100, folder.
        #[arg(long)]
        data: String,
        /// Data directory (else $VIT_DATA_DIR).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Batch size.
        #[arg(long, default_value_t = 256)]
        batch_size: usize,
    },
    /// Print the five most probable classes of each image.
    Predict {
        /// The checkpoint (.safetensors).
        checkpoint: PathBuf,
        /// Image files.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// How many classes to show.
        #[arg(long, default_value_t = 5)]
        top: usize,
    },
    /// Draw an image and its patches, as the Keras example does.
    Patches {
        /// The image file.
        image: PathBuf,
        /// Patch side in pixels.
        #[arg(long, default_value_t = 6)]
        size: usize,
        /// Resize the image to this side first.
        #[arg(long, default_value_t = 72)]
        resize: usize,
        /// Output PNG.
        #[arg(long, short, default_value = "patches.png")]
        output: PathBuf,
    },
    /// Download a public data set (needs curl; tar for CIFAR) and check it.
    Download {
        /// mnist, fashion-mnist, cifar10 or cifar100.
        dataset: String,
        /// Cache directory (pass it as --data-dir afterwards).
        #[arg(long, default_value = "data")]
        dir: PathBuf,
    },
    /// Measure the model at a reference configuration (K: the Keras example, M: mnist), one mode
    /// per process; prints one `ANCHOR key=value ...` line like the reference scripts.
    Bench {
        /// K or M.
        #[arg(long, default_value = "K")]
        config: String,
        /// train, infer, latency or matmul.
        #[arg(long, default_value = "train")]
        mode: String,
        /// Timed iterations (0: the reference scripts' default).
        #[arg(long, default_value_t = 0)]
        iters: usize,
        /// Warm-up iterations (0: the reference scripts' default).
        #[arg(long, default_value_t = 0)]
        warmup: usize,
        /// Compute precision: f32, or bf16/f16 with f32 master weights.
        #[arg(long, default_value = "f32")]
        precision: Precision,
    },
    /// Print a model preset's (or a config file's) layers, shapes and parameter counts.
    Summary {
        /// A preset name or a config file (.toml/.json).
        #[arg(default_value = "keras_cifar100")]
        model: String,
    },
}

fn device(spec: &str) -> Result<Device> {
    Ok(match spec {
        "cpu" => Device::Cpu,
        "metal" => Device::new_metal(0).context("--device metal: this build has no Metal support or no GPU")?,
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                Device::new_cuda(0)?
            } else if candle_core::utils::metal_is_available() {
                Device::new_metal(0)?
            } else {
                Device::Cpu
            }
        }
        s if s == "cuda" || s.starts_with("cuda:") => {
            let n = s.strip_prefix("cuda:").map(str::parse).transpose().context("--device cuda:N needs a number")?;
            Device::new_cuda(n.unwrap_or(0)).with_context(|| {
                format!("--device {s}: this build has no CUDA support (build with --features cuda) or no such GPU")
            })?
        }
        other => bail!("--device must be auto, cpu, cuda[:N] or metal, not `{other}`"),
    })
}

/// `runs/<name>`, or `runs/<name>-2`, `-3`, ... if taken: a new run never overwrites an old one.
fn fresh_run_dir(name: &str) -> PathBuf {
    let base = Path::new("runs");
    std::iter::once(base.join(name))
        .chain((2..).map(|i| base.join(format!("{name}-{i}"))))
        .find(|p| !p.exists())
        .expect("an unused name exists")
}

fn describe(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (between `eager_commit_delay` = 14 and
/// `use_numa_nodes` = 16, which libmimalloc-sys names).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> Result<()> {
    // Training frees and re-allocates the same large tensors at every step; returning them to the
    // kernel between steps makes each one page-fault afresh (about 10% of a step on config M).
    // SAFETY: sets a global allocator option before any thread is started.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cli = Cli::parse();
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // candle's elementwise pool spins 25,000 times after each op before it parks; on few
        // cores that spinning takes the core from the rayon workers running the next kernel
        // (config M trained 25% faster with 100).
        // SAFETY: nothing else runs yet; no other thread reads the environment.
        unsafe { std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100") };
    }
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = cli.threads {
        // Both of candle's CPU pools read this: rayon (matmul) and its own elementwise pool.
        // SAFETY: nothing else runs yet; no other thread reads the environment.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
        pool = pool.num_threads(n);
    }
    let pool = pool.build().context("--threads")?;
    // The whole command runs on a worker of the pool: each parallel kernel then splits between
    // this thread and the others, instead of the main thread handing every kernel to the pool
    // and sleeping until it is done (a wake-up and a context switch per kernel).
    pool.install(|| run(cli))
}

fn run(cli: Cli) -> Result<()> {
    let device = device(&cli.device)?;
    match cli.command {
        Command::Train {
            recipe,
            data_dir,
            out,
            resume,
            epochs,
            batch_size,
            lr,
            seed,
            limit_train,
            precision,
            quiet,
        } => {
            let origin = PathBuf::from(&recipe);
            let mut recipe = Recipe::load(&recipe)?;
            if let Some(e) = epochs {
                recipe.train.epochs = e;
            }
            if let Some(b) = batch_size {
                recipe.train.batch_size = b;
            }
            if let Some(lr) = lr {
                recipe.train.learning_rate = lr;
            }
            if let Some(s) = seed {
                recipe.train.seed = s;
            }
            if limit_train.is_some() {
                recipe.data.limit_train = limit_train;
            }
            if let Some(p) = precision {
                recipe.train.precision = p;
            }
            let run_dir = match out {
                Some(dir) => dir,
                None if resume => bail!("--resume needs --out <RUN DIR>: the run to continue"),
                None => fresh_run_dir(&recipe.name),
            };
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            ctrlc::set_handler(move || {
                if flag.swap(true, Ordering::SeqCst) {
                    eprintln!("\nsecond Ctrl-C: exiting without saving");
                    std::process::exit(130);
                }
                eprintln!("\nCtrl-C: saving a checkpoint after this step (press again to quit at once)");
            })
            .context("installing the Ctrl-C handler")?;
            if !quiet {
                println!("device: {}", describe(&device));
            }
            let opts = TrainOptions {
                recipe,
                recipe_origin: origin,
                data_dir,
                run_dir,
                device,
                resume,
                verbose: !quiet,
                stop,
                stop_after_steps: None,
            };
            match train(opts)? {
                TrainOutcome::Finished(r) => {
                    println!(
                        "done: best epoch {} (val top-1 {:.4}); test top-1 {:.4}, top-5 {:.4} on {} images; {:.1} s, {:.0} img/s; run dir {}",
                        r.best_epoch,
                        r.best_val_top1,
                        r.test_top1,
                        r.test_top5,
                        r.test_images,
                        r.wall_seconds,
                        r.images_per_second,
                        r.run_dir.display()
                    );
                }
                TrainOutcome::Interrupted { checkpoint, step } => {
                    println!(
                        "interrupted at step {step}; saved {}; continue with `vit train --resume --out {}`",
                        checkpoint.display(),
                        checkpoint.parent().unwrap_or(Path::new(".")).display()
                    );
                    std::process::exit(130);
                }
            }
        }
        Command::Eval { checkpoint, data, data_dir, batch_size } => {
            let (model, _, meta) = Vit::load(&checkpoint, &device)?;
            let kind = DatasetKind::parse(&data).with_context(|| {
                format!("--data `{data}`: expected embedded-mnist, mnist, fashion-mnist, cifar10, cifar100 or folder")
            })?;
            let cfg = &meta.config;
            let (normalizer, data_size) = pipeline_of(&meta);
            let (_, test) = load_splits(&kind, data_dir.as_deref(), data_size, cfg.channels)?;
            check_fits(&test, cfg).with_context(|| checkpoint.display().to_string())?;
            let pipeline = Pipeline { size: (cfg.image_size[0], cfg.image_size[1]), normalizer };
            let test = std::sync::Arc::new(test);
            let tally = evaluate(&model, &test, &pipeline, batch_size, &device)?;
            println!("{}: {} images", test.name, tally.count);
            println!("loss {:.4}  top-1 {:.4}  top-5 {:.4}", tally.loss(), tally.top1(), tally.top5());
            println!("\nper class:");
            for (name, acc) in meta.class_names.iter().zip(tally.per_class()) {
                println!("  {name:<20} {acc:.4}");
            }
            if cfg.num_classes <= 20 {
                println!("\nconfusion matrix (rows: true class, columns: predicted):");
                for (name, row) in meta.class_names.iter().zip(&tally.confusion) {
                    let cells: Vec<String> = row.iter().map(|n| format!("{n:>5}")).collect();
                    println!("  {name:<12} {}", cells.join(""));
                }
            }
        }
        Command::Predict { checkpoint, images, top } => {
            let (model, _, meta) = Vit::load(&checkpoint, &device)?;
            let results = predict_files(&model, &meta, &images, top, &device)?;
            for (file, best) in images.iter().zip(results) {
                println!("{}", file.display());
                for (name, p) in best {
                    println!("  {:>6.2}%  {name}", p * 100.0);
                }
            }
        }
        Command::Patches { image, size, resize, output } => {
            let n = draw_patches(&image, &output, size, resize)?;
            println!(
                "{}: {resize}x{resize} image, {size}x{size} patches: {n} patches of {} values; wrote {}",
                image.display(),
                size * size * 3,
                output.display()
            );
        }
        Command::Download { dataset, dir } => {
            let kind = DatasetKind::parse(&dataset)
                .with_context(|| format!("`{dataset}`: expected mnist, fashion-mnist, cifar10 or cifar100"))?;
            let dir = vit_train::download::download(&kind, &dir)?;
            println!("{dataset} is ready: pass --data-dir {}", dir.display());
        }
        Command::Bench { config, mode, iters, warmup, precision } => {
            println!("{}", vit_train::bench::run(&config, &mode, iters, warmup, precision, &device)?.line());
        }
        Command::Summary { model } => {
            let cfg = match VitConfig::preset(&model) {
                Some(c) => c,
                None => VitConfig::from_file(&model).with_context(|| {
                    format!("`{model}` is neither a preset ({}) nor a config file", VitConfig::PRESETS.join(", "))
                })?,
            };
            println!("{}", vit_model::Summary::of(&cfg));
            println!("forward: {:.3} GFLOP per image (matrix products)", cfg.forward_flops() as f64 / 1e9);
        }
    }
    Ok(())
}
