//! `cargo xtask time-to-accuracy`: how long this project and PyTorch take to reach given test
//! accuracies on MNIST with the same recipe, alternating, on the same machine.
//!
//! One recipe ([`Recipe`]) is written out twice: as a TOML recipe for `vit train` and as the
//! command line of `xtask/time-to-accuracy/torch_mnist.py`. Both evaluate the test set after
//! every epoch (the project through `data.validate_on_test`). The clock starts when the process
//! is spawned and stops when the epoch line that first reaches a target is seen (the project's
//! `metrics.jsonl` line, PyTorch's `EPOCH` line), so start-up, data loading, evaluation and
//! checkpoints are inside it. A process is stopped once it has reached every target.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Options {
    pub targets: Vec<f64>,
    pub rounds: usize,
    pub python: PathBuf,
    pub data_dir: PathBuf,
    pub out: PathBuf,
    pub recipe: Recipe,
    pub vit: Option<PathBuf>,
}

/// The recipe both sides run: the `mnist` preset (205,834 parameters) on the full training set.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub min_learning_rate: f64,
    pub warmup_epochs: f64,
    pub weight_decay: f64,
    pub clip_grad_norm: f64,
    pub label_smoothing: f64,
    pub crop_padding: usize,
    pub seed: u64,
    pub threads: usize,
    pub eval_batch_size: usize,
}

/// The `mnist` preset's shape, which both models are built with.
const IMAGE: usize = 28;
const PATCH: usize = 4;
const DIM: usize = 64;
const HEADS: usize = 4;
const KEY_DIM: usize = 16;
const LAYERS: usize = 6;
const MLP: [usize; 2] = [128, 64];

impl Default for Recipe {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 128,
            learning_rate: 2e-3,
            min_learning_rate: 1e-5,
            warmup_epochs: 1.0,
            weight_decay: 0.05,
            clip_grad_norm: 1.0,
            label_smoothing: 0.05,
            crop_padding: 2,
            seed: 42,
            threads: 2,
            eval_batch_size: 256,
        }
    }
}

impl Recipe {
    /// The model's parameter count, computed from its shape (the PyTorch script checks its own
    /// against it).
    fn parameters() -> usize {
        let tokens = (IMAGE / PATCH).pow(2);
        let embed = PATCH * PATCH * DIM + DIM + tokens * DIM;
        let mut block = 4 * DIM + DIM * 3 * HEADS * KEY_DIM + 3 * HEADS * KEY_DIM + HEADS * KEY_DIM * DIM + DIM;
        let mut width = DIM;
        for units in MLP {
            block += width * units + units;
            width = units;
        }
        embed + LAYERS * block + 2 * DIM + DIM * 10 + 10
    }

    fn toml(&self, data_dir: &Path) -> String {
        format!(
            "name = \"time-to-accuracy\"\n\n[model]\npreset = \"mnist\"\nimage_size = [{IMAGE}, {IMAGE}]\npatch_size = {PATCH}\n\
             projection_dim = {DIM}\nnum_heads = {HEADS}\nkey_dim = {KEY_DIM}\nnum_layers = {LAYERS}\nmlp_units = {MLP:?}\n\
             dropout = 0.0\n\n[data]\ndataset = \"mnist\"\ndir = {data_dir:?}\nvalidate_on_test = true\n\n[augment]\n\
             crop_padding = {}\n\n[train]\nepochs = {}\nbatch_size = {}\nlearning_rate = {:e}\nmin_learning_rate = {:e}\n\
             warmup_epochs = {:?}\nweight_decay = {:?}\nclip_grad_norm = {:?}\nlabel_smoothing = {:?}\nseed = {}\n\
             eval_batch_size = {}\n",
            self.crop_padding,
            self.epochs,
            self.batch_size,
            self.learning_rate,
            self.min_learning_rate,
            self.warmup_epochs,
            self.weight_decay,
            self.clip_grad_norm,
            self.label_smoothing,
            self.seed,
            self.eval_batch_size,
        )
    }

    fn torch_args(&self, data_dir: &Path) -> Vec<String> {
        let pairs: Vec<(&str, String)> = vec![
            ("--data-dir", data_dir.display().to_string()),
            ("--epochs", self.epochs.to_string()),
            ("--batch-size", self.batch_size.to_string()),
            ("--eval-batch-size", self.eval_batch_size.to_string()),
            ("--lr", self.learning_rate.to_string()),
            ("--min-lr", self.min_learning_rate.to_string()),
            ("--warmup-epochs", self.warmup_epochs.to_string()),
            ("--weight-decay", self.weight_decay.to_string()),
            ("--clip-grad-norm", self.clip_grad_norm.to_string()),
            ("--label-smoothing", self.label_smoothing.to_string()),
            ("--crop-padding", self.crop_padding.to_string()),
            ("--seed", self.seed.to_string()),
            ("--threads", self.threads.to_string()),
            ("--image-size", IMAGE.to_string()),
            ("--patch-size", PATCH.to_string()),
            ("--dim", DIM.to_string()),
            ("--heads", HEADS.to_string()),
            ("--key-dim", KEY_DIM.to_string()),
            ("--layers", LAYERS.to_string()),
            ("--mlp-units", MLP.map(|u| u.to_string()).join(",")),
            ("--parameters", Self::parameters().to_string()),
        ];
        pairs.into_iter().flat_map(|(k, v)| [k.to_string(), v]).collect()
    }
}

impl Options {
    pub fn parse(args: &[String], root: &Path) -> Result<Self, String> {
        let env_path = |key: &str| std::env::var_os(key).map(PathBuf::from);
        let mut o = Options {
            targets: vec![0.97, 0.985],
            rounds: 2,
            python: env_path("VIT_REFERENCE_PYTHON").unwrap_or_else(|| root.join(".venv-reference/bin/python")),
            data_dir: env_path("VIT_DATA_DIR").unwrap_or_default(),
            out: root.join("target/time-to-accuracy/result.json"),
            recipe: Recipe::default(),
            vit: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
            let number = |name: &str, v: String| v.parse::<f64>().map_err(|e| format!("{name} `{v}`: {e}"));
            let count = |name: &str, v: String| {
                v.parse::<usize>().map_err(|e| format!("{name} `{v}`: {e} (a whole number is expected)"))
            };
            match a.as_str() {
                "--targets" => {
                    let v = value("--targets")?;
                    o.targets = v.split(',').map(|t| number("--targets", t.to_string())).collect::<Result<_, _>>()?;
                }
                "--rounds" => o.rounds = count("--rounds", value("--rounds")?)?,
                "--epochs" => o.recipe.epochs = count("--epochs", value("--epochs")?)?,
                "--threads" => o.recipe.threads = count("--threads", value("--threads")?)?,
                "--python" => o.python = value("--python")?.into(),
                "--data-dir" => o.data_dir = value("--data-dir")?.into(),
                "--out" => o.out = value("--out")?.into(),
                "--vit" => o.vit = Some(value("--vit")?.into()),
                other => return Err(format!("time-to-accuracy: unknown option `{other}`")),
            }
        }
        if o.targets.is_empty() || o.targets.iter().any(|t| !(*t > 0.0 && *t < 1.0)) {
            return Err(format!("--targets must be accuracies in (0, 1), got {:?}", o.targets));
        }
        o.targets.sort_by(f64::total_cmp);
        if o.rounds == 0 || o.recipe.epochs == 0 || o.recipe.threads == 0 {
            return Err("--rounds, --epochs and --threads must be at least 1".into());
        }
        if o.data_dir.as_os_str().is_empty() {
            return Err("time-to-accuracy needs MNIST: pass --data-dir DIR or set VIT_DATA_DIR".into());
        }
        if !o.python.exists() {
            return Err(format!(
                "time-to-accuracy needs PyTorch: {} does not exist (python3 -m venv .venv-reference && \
                 .venv-reference/bin/pip install torch numpy), or pass --python / set VIT_REFERENCE_PYTHON",
                o.python.display()
            ));
        }
        Ok(o)
    }
}

/// One side's run: the test top-1 after each epoch, with the seconds since spawning it.
#[derive(Debug, Default)]
struct Run {
    epochs: Vec<(f64, f64)>,
}

impl Run {
    fn seconds_to(&self, target: f64) -> Option<f64> {
        self.epochs.iter().find(|(_, top1)| *top1 >= target).map(|(s, _)| *s)
    }
}

pub fn run(root: &Path, vit: &Path, o: &Options) -> Result<(), String> {
    let work = root.join("target/time-to-accuracy");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let recipe_path = work.join("recipe.toml");
    std::fs::write(&recipe_path, o.recipe.toml(&o.data_dir)).map_err(|e| format!("{}: {e}", recipe_path.display()))?;
    let script = root.join("xtask/time-to-accuracy/torch_mnist.py");
    let last_target = *o.targets.last().expect("checked non-empty");
    println!("machine: {}", machine());
    println!("recipe: {}", recipe_path.display());
    let mut results: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    for round in 0..o.rounds {
        // Alternate who goes first, so that a drift of the machine hits both alike.
        let sides = if round % 2 == 0 { ["vit", "torch"] } else { ["torch", "vit"] };
        for side in sides {
            let run = match side {
                "vit" => {
                    let dir = work.join(format!("vit-run-{round}"));
                    let _ = std::fs::remove_dir_all(&dir);
                    let mut command = Command::new(vit);
                    command.args(["--threads", &o.recipe.threads.to_string(), "train", "--no-report", "--recipe"]);
                    command.arg(&recipe_path).arg("--out").arg(&dir);
                    run_vit(command, &dir.join("metrics.jsonl"), last_target)?
                }
                _ => {
                    let mut command = Command::new(&o.python);
                    command.arg(&script).args(o.recipe.torch_args(&o.data_dir));
                    run_torch(command, last_target)?
                }
            };
            let reached: Vec<String> = o
                .targets
                .iter()
                .map(|t| {
                    format!("{:.1}%: {}", t * 100.0, run.seconds_to(*t).map_or("-".into(), |s| format!("{s:.1} s")))
                })
                .collect();
            println!("round {} {side:5}: epochs {:?} -> {}", round + 1, run.epochs, reached.join(", "));
            results.entry(side).or_default().push(run);
        }
    }
    let median = |mut v: Vec<f64>| -> Option<f64> {
        if v.len() < o.rounds {
            return None; // a round that never reached it: no honest median
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) })
    };
    let mut json = String::from("{\n  \"targets\": [\n");
    println!("\ntarget   vit (median s)   torch (median s)   torch / vit");
    for (i, target) in o.targets.iter().enumerate() {
        let side = |name: &str| median(results[name].iter().filter_map(|r| r.seconds_to(*target)).collect());
        let (v, t) = (side("vit"), side("torch"));
        let show = |x: Option<f64>| x.map_or("not reached".to_string(), |s| format!("{s:.1}"));
        let ratio = match (v, t) {
            (Some(v), Some(t)) => format!("{:.2}", t / v),
            _ => "-".into(),
        };
        println!("{:5.1}%   {:>14}   {:>16}   {ratio:>11}", target * 100.0, show(v), show(t));
        let field = |x: Option<f64>| x.map_or("null".to_string(), |s| format!("{s:.3}"));
        json += &format!(
            "    {{\"target\": {target}, \"vit_seconds\": {}, \"torch_seconds\": {}}}{}\n",
            field(v),
            field(t),
            if i + 1 < o.targets.len() { "," } else { "" }
        );
    }
    json += "  ],\n  \"runs\": {\n";
    let runs: Vec<String> = results
        .iter()
        .map(|(side, runs)| {
            let rounds: Vec<String> = runs
                .iter()
                .map(|r| {
                    let epochs: Vec<String> = r.epochs.iter().map(|(s, a)| format!("[{s:.3}, {a}]")).collect();
                    format!("[{}]", epochs.join(", "))
                })
                .collect();
            format!("    \"{side}\": [{}]", rounds.join(", "))
        })
        .collect();
    json += &runs.join(",\n");
    json += &format!("\n  }},\n  \"machine\": {:?}\n}}\n", machine());
    std::fs::write(&o.out, json).map_err(|e| format!("{}: {e}", o.out.display()))?;
    println!("\nwritten: {}", o.out.display());
    Ok(())
}

/// Runs `vit train`, timing each line of its `metrics.jsonl` as it appears.
fn run_vit(mut command: Command, metrics: &Path, last_target: f64) -> Result<Run, String> {
    let start = Instant::now();
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| format!("vit: {e}"))?;
    let stderr = drain(&mut child);
    let mut run = Run::default();
    loop {
        let text = std::fs::read_to_string(metrics).unwrap_or_default();
        let now = start.elapsed().as_secs_f64();
        for line in text.lines().skip(run.epochs.len()) {
            let top1 = number_after(line, "\"val_top1\":")
                .ok_or_else(|| format!("{}: no val_top1 in `{line}`", metrics.display()))?;
            run.epochs.push((now, top1));
        }
        if run.epochs.last().is_some_and(|(_, a)| *a >= last_target) {
            stop(&mut child);
            return Ok(run);
        }
        if let Some(status) = child.try_wait().map_err(|e| format!("vit: {e}"))? {
            if !status.success() {
                return Err(format!("vit train failed ({status}):\n{}", stderr.join().unwrap_or_default()));
            }
            if std::fs::read_to_string(metrics).unwrap_or_default().lines().count() == run.epochs.len() {
                return Ok(run);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the PyTorch script, timing each `EPOCH` line as it is printed.
fn run_torch(mut command: Command, last_target: f64) -> Result<Run, String> {
    let start = Instant::now();
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| format!("torch: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = drain(&mut child);
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send((start.elapsed().as_secs_f64(), line)).is_err() {
                return;
            }
        }
    });
    let mut run = Run::default();
    for (seconds, line) in receive {
        if let Some(top1) = line.strip_prefix("EPOCH ").and_then(|l| number_after(l, "test_top1=")) {
            run.epochs.push((seconds, top1));
            if top1 >= last_target {
                stop(&mut child);
                return Ok(run);
            }
        }
    }
    let status = child.wait().map_err(|e| format!("torch: {e}"))?;
    if !status.success() {
        return Err(format!("the PyTorch script failed ({status}):\n{}", stderr.join().unwrap_or_default()));
    }
    Ok(run)
}

/// Reads the child's standard error as it comes, on a thread of its own, keeping its last
/// 16 KiB for an error message: unread, a full pipe (vit's progress lines, Python's warnings)
/// would block the child and stop its clock-watched run.
fn drain(child: &mut Child) -> std::thread::JoinHandle<String> {
    const KEEP: usize = 16 << 10;
    let stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut tail = Vec::new();
        for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
            tail.extend(line);
            tail.push(b'\n');
            if tail.len() > 2 * KEEP {
                tail.drain(..tail.len() - KEEP);
            }
        }
        let start = tail.len().saturating_sub(KEEP);
        String::from_utf8_lossy(&tail[start..]).into_owned()
    })
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The number right after `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<f64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end =
        rest.find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+'))).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The CPU, as `/proc/cpuinfo` names it, and whether it has AVX-512.
fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':']));
    let cores = info.lines().filter(|l| l.starts_with("processor")).count();
    let avx512 = info.contains(" avx512f");
    format!(
        "machine: {} ({cores} logical cores, AVX-512: {})",
        model.unwrap_or("unknown CPU"),
        if avx512 { "yes" } else { "no" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_must_be_whole_numbers() {
        let root = Path::new("/nowhere");
        let parse = |args: &[&str]| Options::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>(), root);
        for (flag, value) in [("--rounds", "2.5"), ("--epochs", "-1"), ("--threads", "two")] {
            let error = parse(&[flag, value]).err().expect("refused");
            assert!(error.contains(flag) && error.contains(value), "{error}");
        }
    }

    #[test]
    fn the_parameter_count_is_the_mnist_presets() {
        assert_eq!(Recipe::parameters(), 205_834);
    }

    #[test]
    fn a_child_that_writes_much_to_its_standard_error_is_not_blocked() {
        // 256 KiB of warnings, then the epoch line: with the pipe unread the child would block
        // on a full pipe before printing it, and the run would never end.
        let script = "head -c 262144 /dev/zero | tr '\\0' w >&2; echo EPOCH epoch=1 test_top1=0.99 elapsed_s=0";
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || {
            let mut command = Command::new("sh");
            command.args(["-c", script]);
            let _ = send.send(run_torch(command, 0.98));
        });
        let run = receive.recv_timeout(Duration::from_secs(60)).expect("the run ends").unwrap();
        assert_eq!(run.epochs.len(), 1);
        assert_eq!(run.epochs[0].1, 0.99);
        // A failing child's error carries the end of what it wrote there.
        let mut failing = Command::new("sh");
        failing.args(["-c", "echo the reason >&2; exit 3"]);
        let error = run_torch(failing, 0.98).unwrap_err();
        assert!(error.contains("the reason"), "{error}");
    }

    #[test]
    fn numbers_are_read_after_their_key() {
        assert_eq!(number_after("{\"val_top1\":0.9812,\"x\":1}", "\"val_top1\":"), Some(0.9812));
        assert_eq!(number_after("EPOCH epoch=2 test_top1=0.975000 train_loss=0.3", "test_top1="), Some(0.975));
        assert_eq!(number_after("{\"val_top1\":null}", "\"val_top1\":"), None);
    }
}
