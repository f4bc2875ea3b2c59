//! Project automation, run as `cargo xtask <command>` (the alias lives in `.cargo/config.toml`).
//!
//! - `cargo xtask ci`: the layering check, format check, clippy, tests and docs, exactly as CI
//!   runs them.
//! - `cargo xtask layers`: the layering check alone (crates depend only on crates below them;
//!   no source files import each other in a circle).
//! - `cargo xtask faults`: kill, signal and starve training runs, and check they resume exactly.
//! - `cargo xtask fuzz [--seconds N]`: the fuzz targets of `fuzz/`, on nightly.
//! - `cargo xtask train [ARGS]`: builds the `vit` binary in release mode and runs `vit train ARGS`.
//! - `cargo xtask bench [--vs-reference]`: the model against PyTorch and Keras, side by side.
//! - `cargo xtask time-to-accuracy`: wall time to given MNIST test accuracies, against PyTorch.
//!
//! Plain `std` only, so that the xtask itself builds in seconds.

mod bench;
mod faults;
mod fuzz;
mod layers;
mod time_to_accuracy;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  ci               layers, cargo fmt --check, clippy -D warnings, cargo test, cargo doc (warnings denied)
  layers [DIR]     crates depend only on crates listed before them in Cargo.toml's members;
                   no source files of a crate import each other in a circle
                   (DIR: another checkout of the workspace; default this one)
  faults [OPTIONS] fault injection on real runs of the release `vit`: SIGKILL at --kills N (20)
                   moments of a seeded draw (--seed S), SIGTERM, a full disk (tmpfs, root);
                   each resumed run must end bit-identical to an uninterrupted one
  fuzz [OPTIONS]   run the libFuzzer targets of fuzz/ (nightly + cargo-fuzz), seeded with
                   fuzz/inputs/; crashing inputs are copied there, to be committed
      --seconds N        per target (default 60)   --targets idx,cifar,checkpoint,...
  train [ARGS]     build `vit` in release mode and run `vit train ARGS`
                   (no ARGS: the embedded default data set)
  bench [OPTIONS]  measure the model (configs K and M, and the standard ViT-Ti/S/B-16 at 224:
                   training, inference, batch-1 latency, peak memory, GFLOP/s against the
                   matmul peak); writes target/bench/bench.json
      --vs-reference     also run the reference scripts (PyTorch and Keras for K and M;
                         std_vit.py's PyTorch and ONNX Runtime sides for Ti, S, B), alternating,
                         and print each figure's ratio to the best peer of its precision class
      --python PATH      reference interpreter (default: .venv-reference/bin/python or
                         $VIT_REFERENCE_PYTHON)
      --anchors DIR      reference scripts (default: ../shared/anchors or $VIT_ANCHORS_DIR)
      --configs K,M[,Ti,S,B]  --modes train,infer,latency  --rounds 3  --threads 2  --out FILE
      --precisions f32,bf16,int8   for Ti, S, B: the precision classes to measure
      --vit PATH         measure this `vit` binary instead of building this tree's (e.g. an
                         older build, to compare two versions with the same references)
      --criterion        run the criterion micro-benchmarks instead
  time-to-accuracy [OPTIONS]
                   one recipe (the mnist preset on the full MNIST, test set evaluated each epoch)
                   run by `vit train` and by xtask/time-to-accuracy/torch_mnist.py, alternating;
                   prints the wall time from start to each target test top-1 and the ratio;
                   writes target/time-to-accuracy/result.json
      --targets 0.97,0.985  --rounds 2  --epochs 5  --threads 2  --out FILE
      --data-dir DIR     MNIST (default $VIT_DATA_DIR)
      --python PATH      interpreter with torch and numpy (default .venv-reference/bin/python
                         or $VIT_REFERENCE_PYTHON)   --vit PATH: this `vit` binary instead
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "ci" => ci(),
        "fuzz" => fuzz::run(&workspace_root(), rest),
        "faults" => faults(rest),
        "layers" => layers::check(&rest.first().map(PathBuf::from).unwrap_or_else(workspace_root)),
        "train" => train(rest),
        "bench" => bench(rest),
        "time-to-accuracy" => time_to_accuracy(rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Runs one named step, printing it first and its wall time after (CI has a time budget, and
/// the log should say which step spends it); a failure names the step.
fn step(name: &str, mut command: Command) -> Result<(), String> {
    println!("==> {name}");
    let started = std::time::Instant::now();
    let status = command.status().map_err(|e| format!("step `{name}` could not start: {e}"))?;
    println!("==> {name}: {:.0} s", started.elapsed().as_secs_f64());
    if status.success() { Ok(()) } else { Err(format!("step `{name}` failed ({status})")) }
}

fn ci() -> Result<(), String> {
    println!("==> layering check");
    layers::check(&workspace_root())?;

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    step("cargo fmt --check", fmt)?;

    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    step("cargo clippy --workspace --all-targets -- -D warnings", clippy)?;

    let mut test = cargo();
    test.args(["test", "--workspace"]);
    step("cargo test --workspace", test)?;

    // Data-parallel training needs MPI from the system, so it is its own build and test:
    // clippy and the test with the `mpi` feature. Skipped, and said so, where there is no
    // MPI (`.ci/run` installs Open MPI where it can).
    if mpi_available() {
        let mut clippy = cargo();
        clippy.args(["clippy", "-p", "vit-cli", "--features", "mpi", "--all-targets", "--", "-D", "warnings"]);
        step("cargo clippy -p vit-cli --features mpi (MPI backend)", clippy)?;
        let mut test = cargo();
        test.args(["test", "-p", "vit-cli", "--features", "mpi", "--test", "distributed"]);
        step("cargo test -p vit-cli --features mpi --test distributed (mpirun, 2 ranks)", test)?;
    } else {
        println!(
            "==> SKIPPED: distributed training test: no `mpirun` or no MPI headers (apt-get install openmpi-bin libopenmpi-dev libclang-dev)"
        );
    }

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    step("cargo doc --workspace --no-deps (warnings denied)", doc)?;

    println!("==> ci: all steps passed");
    Ok(())
}

/// Whether MPI can be built against and run: `mpirun` runs and `mpicc` (Open MPI's or MPICH's
/// compiler wrapper, which the `mpi` crate's build asks for the flags) is there.
fn mpi_available() -> bool {
    let runs =
        |program: &str, arg: &str| Command::new(program).arg(arg).output().map(|o| o.status.success()).unwrap_or(false);
    runs("mpirun", "--version") && runs("mpicc", "--showme:version")
}

/// The package that holds the `vit` binary; until it exists, `train` says so.
fn vit_package_exists() -> bool {
    workspace_root().join("crates/vit-cli/Cargo.toml").exists()
}

fn train(args: &[String]) -> Result<(), String> {
    if !vit_package_exists() {
        return Err("the `vit` command (crates/vit-cli) is not built yet".into());
    }
    let mut command = cargo();
    command.args(["run", "--release", "--package", "vit-cli", "--bin", "vit", "--", "train"]);
    command.args(args);
    step("vit train", command)
}

fn release_vit() -> Result<PathBuf, String> {
    let root = workspace_root();
    let mut build = cargo();
    build.args(["build", "--release", "--package", "vit-cli", "--bin", "vit"]);
    step("cargo build --release --bin vit", build)?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(|d| root.join(d)).unwrap_or_else(|| root.join("target"));
    Ok(target.join("release/vit"))
}

fn faults(args: &[String]) -> Result<(), String> {
    let options = faults::Options::parse(args, &workspace_root())?;
    faults::run(&release_vit()?, &options)
}

fn bench(args: &[String]) -> Result<(), String> {
    if args.first().map(String::as_str) == Some("--criterion") {
        let mut command = cargo();
        command.args(["bench", "--workspace"]);
        if args.len() > 1 {
            command.arg("--").args(&args[1..]);
        }
        return step("cargo bench", command);
    }
    let root = workspace_root();
    let options = bench::Options::parse(args, &root)?;
    if let Some(vit) = &options.vit {
        return bench::run(&root, vit, &options);
    }
    bench::run(&root, &release_vit()?, &options)
}

fn time_to_accuracy(args: &[String]) -> Result<(), String> {
    let root = workspace_root();
    let options = time_to_accuracy::Options::parse(args, &root)?;
    let vit = match &options.vit {
        Some(vit) => vit.clone(),
        None => release_vit()?,
    };
    time_to_accuracy::run(&root, &vit, &options)
}
