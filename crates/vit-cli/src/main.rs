//! `vit`: train, evaluate and run Vision Transformers.
//!
//! The binary over the library crates: argument parsing, the allocator and thread set-up, one
//! file per command (`commands/`), progress rendering and plots, downloads.

mod args;
mod commands;
mod download;
mod hub;
mod progress;
mod render;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::args::{DeviceArg, parse_device};
use crate::commands::bench::{BenchConfig, BenchMode};

// candle allocates and frees large tensors at every op; glibc's malloc hands those back to the
// kernel each time, so every op page-faults afresh. mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "vit", version, about = "Train, evaluate and run Vision Transformers (candle)")]
struct Cli {
    /// Where to compute: auto (CUDA, then Metal, then CPU), cpu, cuda, cuda:N or metal.
    #[arg(long, global = true, default_value = "auto", value_parser = parse_device)]
    device: DeviceArg,
    /// Worker threads for the CPU (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a recipe (default: the embedded MNIST subset).
    Train(commands::train::TrainArgs),
    /// Evaluate a checkpoint: top-1, top-5, per-class accuracy and the confusion matrix.
    Eval(commands::eval::EvalArgs),
    /// Write pretrained Hugging Face or timm weights as a checkpoint of this project.
    Import(commands::import::ImportArgs),
    /// Print the most probable classes of each image.
    Predict(commands::predict::PredictArgs),
    /// Draw what a model looks at in each image: attention rollout, the last block's heads,
    /// relevance for the predicted (or a chosen) class.
    Explain(commands::explain::ExplainArgs),
    /// Write a checkpoint as an ONNX model (opset 17, batch dynamic) with its class names and
    /// preprocessing in the file's metadata.
    Export(commands::export::ExportArgs),
    /// Write a run's pictures and report.html, one self-contained page.
    Report(commands::report::ReportArgs),
    /// Draw an image and its patches, as the Keras example does.
    Patches(commands::patches::PatchesArgs),
    /// Download a public data set (needs curl; tar for CIFAR) and check it.
    Download(commands::download::DownloadArgs),
    /// Measure the model at a reference configuration (K: the Keras example, M: mnist), one mode
    /// per process; prints one `ANCHOR key=value ...` line like the reference scripts.
    Bench {
        /// The reference configuration.
        #[arg(long, value_enum, default_value = "K")]
        config: BenchConfig,
        /// What to measure.
        #[arg(long, value_enum, default_value = "train")]
        mode: BenchMode,
        /// Timed iterations (0: the reference scripts' default).
        #[arg(long, default_value_t = 0)]
        iters: usize,
        /// Warm-up iterations (0: the reference scripts' default).
        #[arg(long, default_value_t = 0)]
        warmup: usize,
        /// Number format: f32, bf16/f16 (f32 master weights in training), or int8 (inference).
        #[arg(long, value_enum, default_value = "f32")]
        precision: commands::bench::BenchPrecision,
    },
    /// Print a model preset's (or a config file's) layers, shapes and parameter counts.
    Summary(commands::summary::SummaryArgs),
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (between `eager_commit_delay` = 14 and
/// `use_numa_nodes` = 16, which libmimalloc-sys names).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Asks for the stack trace of a user error (a bad flag, a bad recipe field) beside its message.
const BACKTRACE_VARIABLE: &str = "VIT_BACKTRACE";

fn main() -> std::process::ExitCode {
    // anyhow records a stack trace with every error when RUST_BACKTRACE is set, and returning it
    // from main prints 30 frames of the parser after "unknown field": noise for a user error.
    // RUST_LIB_BACKTRACE decides for errors alone; panics still follow RUST_BACKTRACE.
    let wants_backtrace = std::env::var_os(BACKTRACE_VARIABLE).is_some_and(|v| v != "0");
    // SAFETY: the first statement of main; no other thread exists to read the environment.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", if wants_backtrace { "1" } else { "0" }) };
    match start() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", error_report(&error, wants_backtrace));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `error: MESSAGE`, then each cause on its own line, then the stack trace if one was asked for
/// (`VIT_BACKTRACE=1`).
fn error_report(error: &anyhow::Error, with_backtrace: bool) -> String {
    let mut report = format!("error: {error}");
    let causes: Vec<String> = error.chain().skip(1).map(|cause| cause.to_string()).collect();
    if !causes.is_empty() {
        report.push_str("\n\nCaused by:");
        for (i, cause) in causes.iter().enumerate() {
            report.push_str(&format!("\n    {i}: {cause}"));
        }
    }
    if with_backtrace {
        report.push_str(&format!("\n\nStack backtrace:\n{}", error.backtrace()));
    }
    report
}

fn start() -> Result<()> {
    // Training frees and re-allocates the same large tensors at every step; returning them to the
    // kernel between steps makes each one page-fault afresh.
    // SAFETY: sets a global allocator option before any thread is started.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // A panic on any thread (a batch thread, a rayon worker) ends the process as a failure, even
    // if the thread that panicked is not the one whose result decides the exit code.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));
    let cli = Cli::parse();
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // candle's elementwise pool spins 25,000 times after each op before it parks; on few
        // cores that spinning takes the core from the rayon workers running the next kernel.
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
    // `train` opens its device itself: a rank of an NCCL job learns its GPU from MPI first.
    let device = || cli.device.open();
    match cli.command {
        Command::Train(args) => commands::train::run(args, cli.device),
        Command::Eval(args) => commands::eval::run(args, device()?),
        Command::Predict(args) => commands::predict::run(args, device()?),
        Command::Explain(args) => commands::explain::run(args, device()?),
        Command::Report(args) => commands::report::run(args, device()?),
        Command::Import(args) => commands::import::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Patches(args) => commands::patches::run(args),
        Command::Download(args) => commands::download::run(args),
        Command::Bench { config, mode, iters, warmup, precision } => {
            let result = commands::bench::run(config, mode, iters, warmup, precision, &device()?)?;
            println!("{}", result.line());
            Ok(())
        }
        Command::Summary(args) => commands::summary::run(args),
    }
}
