//! Data-parallel training over MPI (Open MPI on loopback): 2 ranks of one thread give the
//! weights of 1 rank with the same global batch (augmentation, mixup and cutmix included), a
//! 2-rank checkpoint resumes in 1 rank to the same end and a 1-rank one in 2, evaluation split
//! across ranks gives the one-process scores, 1 rank gives the plain run's weights bit for bit,
//! and a killed rank ends the job with an error naming it. Built and run by `cargo xtask ci`
//! with `--features mpi` where `mpirun` is installed (`.ci/run` installs it). With
//! `--features nccl` (a CUDA build, for a GPU machine) one more test trains one NCCL rank.
#![cfg(feature = "mpi")]

#[path = "../../vit-data/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use candle_core::Device;
use common::*;

/// The `vit` binary: cargo's, or `$VIT_BIN` (a bundle run on another machine, as the GPU check
/// runs this test).
fn vit() -> String {
    std::env::var("VIT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vit").to_string())
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn mpirun(ranks: usize) -> Command {
    let mut command = Command::new("mpirun");
    command.args(["--allow-run-as-root", "--oversubscribe", "-n", &ranks.to_string(), &vit(), "--threads", "1"]);
    command.env_remove("VIT_DATA_DIR");
    command
}

fn single() -> Command {
    let mut command = Command::new(vit());
    command.args(["--threads", "2"]).env_remove("VIT_DATA_DIR");
    command
}

/// ||a - b|| / ||a|| over the model tensors of two checkpoints, and the largest such ratio of
/// one tensor. Tensors whose norm is rounding noise are left out: the key biases, whose
/// gradient is zero in exact arithmetic (a bias on every key moves every score of a row
/// alike), hold what AdamW makes of rounding (norms about 1e-5), different for any order of
/// sums; their largest difference is printed.
fn difference(a: &Path, b: &Path) -> (f64, f64, String) {
    let a = vit_model::checkpoint::load(a, &Device::Cpu).unwrap().tensors;
    let b = vit_model::checkpoint::load(b, &Device::Cpu).unwrap().tensors;
    assert_eq!(a.len(), b.len());
    let (mut num, mut den, mut worst, mut which) = (0f64, 0f64, 0f64, String::new());
    for (name, x) in &a {
        let x: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = b[name].flatten_all().unwrap().to_vec1().unwrap();
        let d: f64 = x.iter().zip(&y).map(|(p, q)| (f64::from(*p) - f64::from(*q)).powi(2)).sum();
        let n: f64 = x.iter().map(|p| f64::from(*p).powi(2)).sum();
        if n.sqrt() <= 1e-3 {
            eprintln!("  {name}: norm {:.1e}, differs by {:.1e} (rounding noise, left out)", n.sqrt(), d.sqrt());
            continue;
        }
        num += d;
        den += n;
        if (d / n).sqrt() > worst {
            worst = (d / n).sqrt();
            which = name.clone();
        }
    }
    ((num / den).sqrt(), worst, which)
}

/// `command train` of `recipe` into `out`, quiet, with `extra` flags; it must succeed.
fn train_run(command: &mut Command, recipe: &Path, out: &Path, extra: &[&str]) -> Output {
    let output = command
        .args(["train", "--recipe", recipe.to_str().unwrap(), "--out"])
        .arg(out)
        .args(["--quiet", "--no-report"])
        .args(extra)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    output
}

/// Every model tensor of a checkpoint, by name, as the bits of its values.
fn weight_bits(path: &Path) -> Vec<(String, Vec<u32>)> {
    let mut tensors: Vec<(String, Vec<u32>)> = vit_model::checkpoint::load(path, &Device::Cpu)
        .unwrap()
        .tensors
        .into_iter()
        .map(|(name, t)| {
            (name, t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect())
        })
        .collect();
    tensors.sort();
    tensors
}

#[test]
fn two_ranks_train_as_one_a_checkpoint_changes_world_size_and_a_killed_rank_ends_the_job() {
    if Command::new("mpirun").arg("--version").output().is_err() {
        panic!(
            "mpirun is not installed: apt-get install openmpi-bin libopenmpi-dev (cargo xtask ci skips this test without it)"
        );
    }
    let data = tmp_dir("mpi");
    write_pattern_mnist(&data, 4, 2);
    // Dropout, random zoom, RandAugment, erasing, mixup and cutmix on: masks and augmentation
    // are keyed by sample and batch, not by rank, and each rank takes its rows of the mix.
    let recipe = data.join("patterns.toml");
    let augmented = pattern_recipe_with(&data, 3, 3e-3, 0.1, 0.1).replace(
        "zoom = 0.1",
        "zoom = 0.1\nauto_augment = \"rand-m9-mstd0.5-inc1\"\nerase_probability = 0.25\nmixup_alpha = 0.8\ncutmix_alpha = 1.0",
    );
    assert!(augmented.contains("mixup_alpha"));
    std::fs::write(&recipe, augmented).unwrap();
    let train = |command: &mut Command, out: &str, extra: &[&str]| train_run(command, &recipe, &data.join(out), extra);
    // The run `run`'s weights against the 1-rank run's, to 1e-5 relative overall.
    let assert_ends_as_one = |run: &str, what: &str| {
        let (total, worst, which) =
            difference(&data.join("one/last.safetensors"), &data.join(run).join("last.safetensors"));
        eprintln!("{what}: relative difference {total:.2e} overall, {worst:.2e} at most ({which})");
        assert!(total < 1e-5 && worst < 1e-4, "{what}: {total} overall, {worst} in {which}");
    };
    train(&mut single(), "one", &[]);
    train(&mut mpirun(2), "two", &["--distributed", "mpi"]);
    assert_ends_as_one("two", "2 ranks vs 1");
    let records = |run: &str| std::fs::read_to_string(data.join(run).join("metrics.jsonl")).unwrap();
    let val = |text: String| -> Vec<f64> {
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["val_top1"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(val(records("one")), val(records("two")));
    // One MPI rank takes the data-parallel path too (the collectives a larger job runs), and
    // ends bit for bit where the plain run does.
    train(&mut mpirun(1), "alone", &["--distributed", "mpi"]);
    assert_eq!(weight_bits(&data.join("one/last.safetensors")), weight_bits(&data.join("alone/last.safetensors")));
    // Each rank evaluates its share of the validation and test sets; the summed counts are
    // the whole sets' (the same score and confusion matrix as one process).
    let summary = |run: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(data.join(run).join("summary.json")).unwrap()).unwrap()
    };
    let (one, two) = (summary("one"), summary("two"));
    for field in ["test_top1", "test_top5", "test_images", "test_confusion", "best_epoch"] {
        assert_eq!(one[field], two[field], "{field}");
    }

    // Stopped after 3 steps on 2 ranks, resumed on 1: the same end as the straight run.
    train(&mut mpirun(2), "moved", &["--distributed", "mpi", "--stop-after-steps", "3"]);
    assert!(!data.join("moved/summary.json").exists(), "the 2-rank part stopped early");
    let out = single()
        .args(["train", "--resume", "--quiet", "--no-report", "--out"])
        .arg(data.join("moved"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_ends_as_one("moved", "2 ranks then 1 vs 1");

    // And the other way: stopped after 3 steps on 1 rank, resumed on 2.
    train(&mut single(), "grown", &["--stop-after-steps", "3"]);
    assert!(!data.join("grown/summary.json").exists(), "the 1-rank part stopped early");
    let out = mpirun(2)
        .args(["train", "--resume", "--quiet", "--no-report", "--distributed", "mpi", "--out"])
        .arg(data.join("grown"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_ends_as_one("grown", "1 rank then 2 vs 1");

    // A rank killed mid-run: the job ends, with an error naming it, within a time-out.
    std::fs::write(&recipe, pattern_recipe_with(&data, 400, 3e-3, 0.1, 0.1)).unwrap();
    let mut job = mpirun(2)
        .args([
            "train",
            "--recipe",
            recipe.to_str().unwrap(),
            "--quiet",
            "--no-report",
            "--distributed",
            "mpi",
            "--out",
        ])
        .arg(data.join("killed"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rank_one = wait_for_rank(job.id(), 1);
    std::thread::sleep(Duration::from_millis(500));
    assert!(Command::new("kill").args(["-9", &rank_one.to_string()]).status().unwrap().success());
    let started = Instant::now();
    loop {
        if job.try_wait().unwrap().is_some() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the job outlived its killed rank by a minute");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = job.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("rank 1"), "the error names the rank: {}", text(&out));
    std::fs::remove_dir_all(data).unwrap();
}

/// The pid of `rank` of the MPI job under `parent`, found by the rank in its environment.
fn wait_for_rank(parent: u32, rank: usize) -> u32 {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
            let environ = String::from_utf8_lossy(&environ);
            let ours = environ.split('\0').any(|v| v == format!("OMPI_COMM_WORLD_RANK={rank}"));
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
            let is_vit = status.lines().next().is_some_and(|l| l.contains("vit"));
            if ours && is_vit && descends_from(pid, parent) {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("rank {rank} of the job under {parent} did not start");
}

fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..8 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
        let Some(ppid) =
            stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)).and_then(|p| p.parse().ok())
        else {
            return false;
        };
        if ppid == ancestor {
            return true;
        }
        pid = ppid;
    }
    false
}

/// One NCCL rank (`mpirun -n 1 ... --distributed nccl`: the gradients summed on the GPU by
/// NCCL) ends where the plain CUDA run does, to 1e-5 relative (GPU kernels need not sum in the
/// same order twice). Needs a CUDA GPU and `mpirun`.
#[cfg(feature = "nccl")]
#[test]
fn one_nccl_rank_trains_as_the_plain_cuda_run() {
    if Command::new("mpirun").arg("--version").output().is_err() {
        panic!("mpirun is not installed: apt-get install openmpi-bin (the NCCL job is launched by MPI)");
    }
    let data = tmp_dir("nccl");
    write_pattern_mnist(&data, 4, 2);
    let recipe = data.join("patterns.toml");
    std::fs::write(&recipe, pattern_recipe_with(&data, 3, 3e-3, 0.1, 0.1)).unwrap();
    train_run(&mut single(), &recipe, &data.join("plain"), &["--device", "cuda"]);
    train_run(&mut mpirun(1), &recipe, &data.join("nccl"), &["--device", "cuda", "--distributed", "nccl"]);
    let (total, worst, which) = difference(&data.join("plain/last.safetensors"), &data.join("nccl/last.safetensors"));
    eprintln!("1 NCCL rank vs plain CUDA: relative difference {total:.2e} overall, {worst:.2e} at most ({which})");
    assert!(total < 1e-5 && worst < 1e-4, "{total} overall, {worst} in {which}");
    std::fs::remove_dir_all(data).unwrap();
}
