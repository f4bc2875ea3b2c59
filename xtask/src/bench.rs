//! `cargo xtask bench`: the project's model against the PyTorch and Keras references, side by side.
//!
//! Each measurement runs in a process of its own (so that its peak memory is its own) and prints
//! one `ANCHOR key=value ...` line: `vit bench` for this project, `torch_vit.py` and
//! `keras_vit.py` from the reference directory for the others. With `--vs-reference` the three
//! alternate within each round, so that a disturbance of the shared machine hits all of them,
//! and the medians over rounds are compared.
//!
//! The standard ViTs (`--configs Ti,S,B`) are measured against `std_vit.py`'s sides in
//! classes of precision: `vit-rs` against PyTorch and ONNX Runtime in float32, `vit-rs-bf16`
//! against PyTorch's bf16 autocast, `vit-rs-int8` against ONNX Runtime's int8 dynamic
//! quantization; each row's ratio is to the best peer of its class.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

type Fields = BTreeMap<String, String>;

pub struct Options {
    pub vs_reference: bool,
    pub python: PathBuf,
    pub anchors: PathBuf,
    pub configs: Vec<String>,
    pub modes: Vec<String>,
    /// For the standard ViTs: which precision classes to measure (`f32`, `bf16`, `int8`).
    pub precisions: Vec<String>,
    pub rounds: usize,
    pub out: PathBuf,
    pub threads: usize,
    /// A `vit` binary to measure instead of building this tree's (to compare two builds).
    pub vit: Option<PathBuf>,
}

impl Options {
    pub fn parse(args: &[String], root: &Path) -> Result<Self, String> {
        let env_path = |key: &str| std::env::var_os(key).map(PathBuf::from);
        let mut o = Options {
            vs_reference: false,
            python: env_path("VIT_REFERENCE_PYTHON").unwrap_or_else(|| root.join(".venv-reference/bin/python")),
            anchors: env_path("VIT_ANCHORS_DIR").unwrap_or_else(|| root.join("../shared/anchors")),
            configs: vec!["K".into(), "M".into()],
            modes: vec!["train".into(), "infer".into(), "latency".into()],
            precisions: vec!["f32".into(), "bf16".into(), "int8".into()],
            rounds: 3,
            out: root.join("target/bench/bench.json"),
            threads: 2,
            vit: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
            match a.as_str() {
                "--vs-reference" => o.vs_reference = true,
                "--python" => o.python = value("--python")?.into(),
                "--anchors" => o.anchors = value("--anchors")?.into(),
                "--configs" => o.configs = value("--configs")?.split(',').map(String::from).collect(),
                "--modes" => o.modes = value("--modes")?.split(',').map(String::from).collect(),
                "--precisions" => o.precisions = value("--precisions")?.split(',').map(String::from).collect(),
                "--rounds" => o.rounds = value("--rounds")?.parse().map_err(|e| format!("--rounds: {e}"))?,
                "--threads" => o.threads = value("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?,
                "--out" => o.out = value("--out")?.into(),
                "--vit" => o.vit = Some(value("--vit")?.into()),
                other => return Err(format!("bench: unknown option `{other}`")),
            }
        }
        for c in &o.configs {
            if !["K", "M", "Ti", "S", "B"].contains(&c.as_str()) {
                return Err(format!("--configs: `{c}` is none of K, M, Ti, S, B"));
            }
        }
        for m in &o.modes {
            if !["train", "infer", "latency"].contains(&m.as_str()) {
                return Err(format!("--modes: `{m}` is none of train, infer, latency"));
            }
        }
        for p in &o.precisions {
            if !["f32", "bf16", "int8"].contains(&p.as_str()) {
                return Err(format!("--precisions: `{p}` is none of f32, bf16, int8"));
            }
        }
        if o.vs_reference && !o.python.exists() {
            return Err(format!(
                "--vs-reference needs the reference environment: {} does not exist. Create it as \
                 {}/README.md says (python3 -m venv .venv-reference && .venv-reference/bin/pip install \
                 torch tensorflow-cpu keras), or pass --python / set VIT_REFERENCE_PYTHON",
                o.python.display(),
                o.anchors.display()
            ));
        }
        Ok(o)
    }
}

/// Runs `command`, returning the fields of the last `ANCHOR` line it printed.
fn anchor(mut command: Command, what: &str) -> Result<Fields, String> {
    let out = command.output().map_err(|e| format!("{what}: could not start: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{what}: {}\n{}{}", out.status, stdout, String::from_utf8_lossy(&out.stderr)));
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("ANCHOR "))
        .ok_or_else(|| format!("{what}: printed no ANCHOR line:\n{stdout}"))?;
    Ok(line
        .trim_start_matches("ANCHOR ")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn num(f: &Fields, key: &str) -> Option<f64> {
    f.get(key).and_then(|v| v.parse().ok())
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    Some(if xs.len() % 2 == 1 { xs[m] } else { 0.5 * (xs[m - 1] + xs[m]) })
}

struct Side {
    /// As printed: `vit-rs`, `vit-rs-int8`, `torch`, `ort-int8`, ...
    name: String,
    /// The precision class whose sides are compared: `f32`, `bf16` or `int8`.
    class: &'static str,
    /// Whether this is the project's own side.
    ours: bool,
    invocation: Invocation,
    runs: Vec<Fields>,
}

/// A command kept as its parts, to be started once per round.
struct Invocation {
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl Invocation {
    fn of(command: &Command) -> Self {
        Self {
            program: command.get_program().to_owned(),
            args: command.get_args().map(|a| a.to_owned()).collect(),
            envs: command.get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))).collect(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).envs(self.envs.iter().map(|(k, v)| (k, v)));
        command
    }
}

impl Side {
    fn median(&self, key: &str) -> Option<f64> {
        median(self.runs.iter().filter_map(|f| num(f, key)).collect())
    }
}

/// `vit bench` for a config, mode and precision.
type Ours<'a> = dyn Fn(&str, &str, &str) -> Command + 'a;
/// A reference script with its arguments.
type Reference<'a> = dyn Fn(&str, &[&str]) -> Command + 'a;

/// The sides measured for one row: this project's first, then (with `--vs-reference`) the
/// peers. K and M: float32 against PyTorch and Keras; the standard ViTs: each precision class
/// of `--precisions` against `std_vit.py`'s sides of that class (ONNX Runtime and int8 measure
/// inference only).
fn sides_of(config: &str, mode: &str, o: &Options, ours: &Ours, reference: &Reference) -> Vec<Side> {
    let side = |name: &str, class: &'static str, is_ours: bool, command: Command| Side {
        name: name.to_string(),
        class,
        ours: is_ours,
        invocation: Invocation::of(&command),
        runs: vec![],
    };
    let ours_in = |precision: &str| ours(config, mode, precision);
    let script = |name: &str, args: &[&str]| reference(name, args);
    let mut sides = Vec::new();
    if config == "K" || config == "M" {
        sides.push(side("vit-rs", "f32", true, ours_in("f32")));
        if o.vs_reference {
            let args = ["--config", config, "--mode", mode];
            sides.push(side("torch", "f32", false, script("torch_vit.py", &args)));
            sides.push(side("keras", "f32", false, script("keras_vit.py", &args)));
        }
        return sides;
    }
    let model = match config {
        "Ti" => "tiny",
        "S" => "small",
        _ => "base",
    };
    let threads = o.threads.to_string();
    let peer =
        |name: &str| script("std_vit.py", &["--model", model, "--mode", mode, "--side", name, "--threads", &threads]);
    for precision in &o.precisions {
        let inference_only = precision == "int8";
        if inference_only && mode == "train" {
            continue;
        }
        match precision.as_str() {
            "f32" => {
                sides.push(side("vit-rs", "f32", true, ours_in("f32")));
                if o.vs_reference {
                    sides.push(side("torch", "f32", false, peer("torch")));
                    if mode != "train" {
                        sides.push(side("ort", "f32", false, peer("ort")));
                    }
                }
            }
            "bf16" => {
                sides.push(side("vit-rs-bf16", "bf16", true, ours_in("bf16")));
                if o.vs_reference {
                    sides.push(side("torch-bf16", "bf16", false, peer("torch-bf16")));
                }
            }
            _ => {
                sides.push(side("vit-rs-int8", "int8", true, ours_in("int8")));
                if o.vs_reference {
                    sides.push(side("ort-int8", "int8", false, peer("ort-int8")));
                }
            }
        }
    }
    sides
}

pub fn run(root: &Path, vit: &Path, o: &Options) -> Result<(), String> {
    let threads = o.threads.to_string();
    let ours = |config: &str, mode: &str, precision: &str| {
        let mut c = Command::new(vit);
        c.args(["--device", "cpu", "--threads", &threads, "bench", "--config", config, "--mode", mode]);
        c.args(["--precision", precision]);
        c
    };
    let reference = |script: &str, args: &[&str]| {
        let mut c = Command::new(&o.python);
        c.arg(o.anchors.join(script)).args(args);
        if script == "torch_vit.py" {
            c.args(["--threads", &threads]);
        }
        c.env("KERAS_BACKEND", "tensorflow").env("TF_NUM_INTRAOP_THREADS", &threads).env("TF_NUM_INTEROP_THREADS", "1");
        c
    };

    println!("==> machine fp32 matmul peak (2048x2048)");
    let ours_peak = anchor(ours("K", "matmul", "f32"), "vit bench --mode matmul")?;
    let peak_candle = num(&ours_peak, "gflops_median").unwrap_or(f64::NAN);
    let mut peak_torch = f64::NAN;
    if o.vs_reference {
        let mut c = Command::new(&o.python);
        c.arg(o.anchors.join("matmul_peak.py")).args(["--threads", &threads]);
        peak_torch = num(&anchor(c, "matmul_peak.py")?, "gflops_median").unwrap_or(f64::NAN);
    }
    let peak = if peak_torch.is_finite() { peak_torch.max(peak_candle) } else { peak_candle };
    println!("    candle {peak_candle:.1} GFLOP/s, torch {peak_torch:.1} GFLOP/s; peak used: {peak:.1}");
    let mut peak_bf16 = f64::NAN;
    if o.precisions.iter().any(|p| p == "bf16") {
        println!("==> machine bf16 matmul peak (2048x2048, f32 sums, weight packed once)");
        let fields = anchor(ours("K", "matmul", "bf16"), "vit bench --mode matmul --precision bf16")?;
        peak_bf16 = num(&fields, "gflops_median").unwrap_or(f64::NAN);
        let kernel = fields.get("kernel").map_or("?", String::as_str);
        println!("    vit-rs {peak_bf16:.1} GFLOP/s on the {kernel} kernel (the % of peak column stays against f32)");
    }

    let mut rows = Vec::new();
    for config in &o.configs {
        for mode in &o.modes {
            let mut sides = sides_of(config, mode, o, &ours, &reference);
            for round in 0..o.rounds {
                // Alternate the order so that no side always runs first (or last).
                let mut order: Vec<usize> = (0..sides.len()).collect();
                order.rotate_left(round % sides.len().max(1));
                for i in order {
                    let what = format!("{} {config} {mode}", sides[i].name);
                    println!("    round {}: {what}", round + 1);
                    let fields = anchor(sides[i].invocation.command(), &what)?;
                    sides[i].runs.push(fields);
                }
            }
            rows.push((config.clone(), mode.clone(), sides));
        }
    }

    println!();
    println!(
        "{:<3} {:<8} {:<12} {:>10} {:>11} {:>9} {:>8} {:>10} {:>10}",
        "cfg", "mode", "side", "img/s", "latency ms", "peak MB", "GFLOP/s", "% of peak", "ratio"
    );
    let mut json_rows = Vec::new();
    for (config, mode, sides) in &rows {
        for s in sides {
            // The best peer of the same precision class (for latency, img/s is 1 / latency).
            let best_ref = sides
                .iter()
                .filter(|p| !p.ours && p.class == s.class)
                .filter_map(|p| p.median("img_per_s"))
                .fold(f64::NAN, |a, b| if a.is_nan() { b } else { a.max(b) });
            let ips = s.median("img_per_s");
            let lat = s.median("latency_ms");
            let mem = s.median("peak_rss_mb");
            let gf = s.median("gflops");
            let ratio = match (s.ours, ips) {
                (true, Some(v)) if best_ref.is_finite() => format!("{:.2}x", v / best_ref),
                _ => String::new(),
            };
            let fmt = |v: Option<f64>, p: usize| v.map(|v| format!("{v:.p$}")).unwrap_or_else(|| "-".into());
            println!(
                "{:<3} {:<8} {:<12} {:>10} {:>11} {:>9} {:>8} {:>10} {:>10}",
                config,
                mode,
                s.name,
                fmt(ips, 1),
                fmt(lat, 2),
                fmt(mem, 0),
                fmt(gf, 1),
                fmt(gf.map(|g| 100.0 * g / peak), 1),
                ratio
            );
            let other_cpu = median(s.runs.iter().filter_map(|f| num(f, "other_cpu")).collect());
            json_rows.push(format!(
                "    {{\"config\": \"{config}\", \"mode\": \"{mode}\", \"side\": \"{}\", \"class\": \"{}\", \"img_per_s\": {}, \"latency_ms\": {}, \"peak_rss_mb\": {}, \"gflops\": {}, \"runs\": {}, \"other_cpu\": {}, \"ratio_to_best_reference\": {}}}",
                s.name,
                s.class,
                json(ips),
                json(lat),
                json(mem),
                json(gf),
                s.runs.len(),
                json(other_cpu),
                if s.ours && best_ref.is_finite() { json(ips.map(|v| v / best_ref)) } else { "null".into() }
            ));
        }
    }
    let text = format!(
        "{{\n  \"matmul_peak_gflops\": {{\"candle\": {}, \"torch\": {}, \"vit_rs_bf16\": {}}},\n  \"threads\": {},\n  \"rounds\": {},\n  \"rows\": [\n{}\n  ]\n}}\n",
        json(Some(peak_candle)),
        json(Some(peak_torch)),
        json(Some(peak_bf16)),
        o.threads,
        o.rounds,
        json_rows.join(",\n")
    );
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&o.out, text).map_err(|e| format!("{}: {e}", o.out.display()))?;
    println!("\nwrote {}", o.out.strip_prefix(root).unwrap_or(&o.out).display());
    Ok(())
}

fn json(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.4}"),
        _ => "null".into(),
    }
}
