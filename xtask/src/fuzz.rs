//! `cargo xtask fuzz [--seconds N] [--targets a,b]`: every libFuzzer target of `fuzz/` for N
//! seconds each, seeded with the committed `fuzz/inputs/<target>/`; every input that crashes
//! a target (or times out, or runs out of memory) is copied there, to be committed and
//! replayed by `cargo test`.

use std::path::Path;
use std::process::Command;

const TARGETS: [&str; 6] = ["idx", "cifar", "checkpoint", "optimizer_state", "recipe", "image"];

pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let mut seconds = 60u64;
    let mut targets: Vec<String> = TARGETS.iter().map(|t| t.to_string()).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--seconds" => {
                seconds = value("--seconds")?.parse().map_err(|e| format!("--seconds: {e}"))?;
                if seconds == 0 {
                    return Err("--seconds must be at least 1".into());
                }
            }
            "--targets" => {
                targets = value("--targets")?.split(',').map(String::from).collect();
                if let Some(bad) = targets.iter().find(|t| !TARGETS.contains(&t.as_str())) {
                    return Err(format!("--targets: no target `{bad}`; the targets are {}", TARGETS.join(", ")));
                }
            }
            other => return Err(format!("fuzz: unknown option `{other}`")),
        }
    }
    let works = |args: &[&str]| Command::new("cargo").args(args).output().is_ok_and(|o| o.status.success());
    if !works(&["+nightly", "--version"]) {
        return Err("fuzzing needs the nightly toolchain, which is not installed: `rustup toolchain install \
                    nightly` (cargo test replays the committed inputs on stable without it)"
            .into());
    }
    if !works(&["+nightly", "fuzz", "--version"]) {
        return Err("fuzzing needs cargo-fuzz, which is not installed: `cargo install cargo-fuzz`".into());
    }
    let fuzz = root.join("fuzz");
    let mut rows = Vec::new();
    for target in &targets {
        let inputs = fuzz.join("inputs").join(target);
        let corpus = fuzz.join("corpus").join(target);
        let artifacts = fuzz.join("artifacts").join(target);
        std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
        let before = files_in(&artifacts);
        println!("==> fuzz {target} for {seconds} s");
        let out = Command::new("cargo")
            .current_dir(&fuzz)
            .args(["+nightly", "fuzz", "run", target])
            .arg(&corpus)
            .arg(&inputs)
            .args(["--", &format!("-max_total_time={seconds}"), "-rss_limit_mb=4096", "-timeout=20"])
            .output()
            .map_err(|e| format!("cargo fuzz run {target}: {e}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let executions = log
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("Done "))
            .and_then(|l| l.split_whitespace().next().map(String::from))
            .unwrap_or_else(|| "?".into());
        let found: Vec<String> = files_in(&artifacts).into_iter().filter(|f| !before.contains(f)).collect();
        for name in &found {
            let copy = inputs.join(name);
            std::fs::copy(artifacts.join(name), &copy).map_err(|e| format!("{}: {e}", copy.display()))?;
            println!("    found {name}: copied to {}", copy.display());
        }
        if !out.status.success() && found.is_empty() {
            return Err(format!("cargo fuzz run {target} failed without an artifact:\n{log}"));
        }
        rows.push((target.clone(), executions, found.len()));
    }
    println!("\n{:<16} {:>14} {:>10}  ({seconds} s each)", "target", "executions", "findings");
    for (target, executions, found) in &rows {
        println!("{target:<16} {executions:>14} {found:>10}");
    }
    let total: usize = rows.iter().map(|r| r.2).sum();
    if total > 0 {
        return Err(format!(
            "{total} inputs crashed a target: they are in fuzz/inputs/, fix the readers and commit them"
        ));
    }
    Ok(())
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}
