//! Drives the real `vit` binary end to end on a tiny data set: train, eval, predict, patches.

#[path = "../../vit-data/tests/common/mod.rs"]
mod common;
mod support;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn vit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vit")).args(args).env_remove("VIT_DATA_DIR").output().expect("the vit binary runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn train_eval_predict_and_patches_through_the_binary() {
    let data = tmp_dir("cli");
    write_pattern_mnist(&data, 4, 2);
    let recipe = data.join("patterns.toml");
    std::fs::write(&recipe, pattern_recipe(&data, 3, 3e-3)).unwrap();
    let run = data.join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();

    let out = vit(&[
        "train",
        "--device",
        "cpu",
        "--recipe",
        &s(&recipe),
        "--out",
        &s(&run),
        "--epochs",
        "2",
        "--log-every",
        "0",
        "--log-steps",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(log.contains("epoch   2/2") && log.contains("done: best epoch") && log.contains("test top-1"), "{log}");
    // Standard error is a pipe here, so no bar is drawn: progress lines with the time left.
    assert!(log.contains("step 1/2") && log.contains("% of the run, about") && log.contains("left"), "{log}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    // The curves are drawn by the command's progress observer after each epoch.
    let png = image::open(run.join("curves.png")).unwrap();
    assert_eq!((png.width(), png.height()), (1100, 760));
    // Per-step metrics: every step of the 2 epochs (2 steps each for the pattern recipe).
    let steps = std::fs::read_to_string(run.join("steps.jsonl")).unwrap();
    assert_eq!(steps.lines().count(), 4, "{steps}");
    assert!(std::fs::read_to_string(run.join("steps.csv")).unwrap().starts_with("epoch,step,loss,"));
    // Validation and test evaluation say what they do when standard error is no terminal.
    assert!(log.contains("evaluating test: 20 images"), "{log}");
    // The report and its pictures, written when the run finished.
    assert!(log.contains("report: "), "{log}");
    for file in ["report.html", "confusion.png", "samples.png", "explain-1.png"] {
        assert!(run.join(file).is_file(), "{file} missing: {log}");
    }
    for file in ["confusion.png", "samples.png", "explain-1.png"] {
        let img = image::open(run.join(file)).unwrap();
        assert!(img.width() > 200 && img.height() > 150, "{file}: {}x{}", img.width(), img.height());
    }
    assert!(std::fs::read_to_string(run.join("config.toml")).unwrap().contains("epochs = 2"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["test_images"], 20);

    let best = s(&run.join("best.safetensors"));
    let out = vit(&["eval", &best, "--data", "mnist", "--data-dir", &s(&data)]);
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(
        log.contains("mnist-test: 20 images") && log.contains("top-5") && log.contains("confusion matrix"),
        "{log}"
    );
    let heat_map = data.join("confusion.png");
    let out = vit(&["eval", &best, "--data", "mnist", "--data-dir", &s(&data), "--plot", &s(&heat_map)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(image::open(&heat_map).unwrap().width() > 200);

    let images: Vec<String> = (0..2)
        .map(|c| {
            let path = data.join(format!("digit{c}.png"));
            image::GrayImage::from_raw(8, 8, pattern(c as u8, 7)).unwrap().save(&path).unwrap();
            s(&path)
        })
        .collect();
    let explained = data.join("explained");
    let out = vit(&["explain", &best, &images[0], &images[1], "-o", &s(&explained)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).matches("predicted").count(), 2, "{}", text(&out));
    for name in ["digit0.explain.png", "digit1.explain.png"] {
        assert!(image::open(explained.join(name)).unwrap().width() > 400, "{name}");
    }
    let out = vit(&["explain", &best, &images[0], "--class", "eleven", "-o", &s(&explained)]);
    assert!(!out.status.success() && text(&out).contains("--class: `eleven`"), "{}", text(&out));
    let out = vit(&["predict", &best, &images[0], &images[1], "--top", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert_eq!(log.matches('%').count(), 6, "{log}");
    assert!(log.contains("digit1.png"), "{log}");

    let picture = data.join("picture.png");
    image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, 128])).save(&picture).unwrap();
    let drawn = data.join("patches.png");
    let out = vit(&["patches", &s(&picture), "--size", "6", "--resize", "72", "-o", &s(&drawn)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("144 patches of 108 values"), "{}", text(&out));
    assert!(image::open(&drawn).unwrap().width() > 256);

    let out = vit(&["summary", "keras_cifar100"]);
    assert!(text(&out).contains("21,759,012"), "{}", text(&out));

    let out = vit(&["train", "--recipe", &s(&data.join("absent.toml")), "--out", &s(&data.join("x"))]);
    assert!(!out.status.success());
    assert!(text(&out).contains("absent.toml"), "{}", text(&out));
    let out = vit(&["eval", &best, "--data", "mnist"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("VIT_DATA_DIR"), "{}", text(&out));
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn flags_with_a_fixed_set_of_values_list_them_and_reject_a_typo() {
    for (args, choices) in [
        (
            &["eval", "model.safetensors", "--data", "mnsit"][..],
            "embedded-mnist, mnist, fashion-mnist, cifar10, cifar100, folder",
        ),
        (&["download", "cifar"][..], "mnist, fashion-mnist, cifar10, cifar100"),
        (&["bench", "--config", "X"][..], "K, M"),
        (&["bench", "--mode", "speed"][..], "train, infer, latency, matmul"),
        (&["train", "--precision", "f64"][..], "f32, bf16, f16"),
        (&["--device", "gpu", "summary"][..], "auto, cpu, cuda, cuda:N"),
        (&["train", "--batch-size", "0"][..], "--batch-size"),
        (&["train", "--lr=-1"][..], "--lr"),
        (&["train", "--epochs", "0"][..], "--epochs"),
        (&["train", "--limit-train", "0"][..], "--limit-train"),
        (&["eval", "model.safetensors", "--data", "mnist", "--batch-size", "0"][..], "--batch-size"),
    ] {
        let out = vit(args);
        assert_eq!(out.status.code(), Some(2), "{args:?} must be a usage error: {}", text(&out));
        assert!(text(&out).contains(choices), "{args:?}: {}", text(&out));
    }
    let help = text(&vit(&["eval", "--help"]));
    assert!(help.contains("embedded-mnist") && help.contains("fashion-mnist"), "{help}");
}

#[test]
fn a_user_error_prints_its_message_without_a_backtrace_unless_asked() {
    let dir = tmp_dir("cli-user-error");
    let recipe = dir.join("bad.toml");
    let text = pattern_recipe(&dir, 1, 1e-3).replace("num_layers = 2", "num_layers = 2\nno_such_field = 1");
    std::fs::write(&recipe, text).unwrap();
    let run = |extra: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vit"));
        command.args(["train", "--device", "cpu", "--recipe", recipe.to_str().unwrap()]);
        command.env_remove("VIT_DATA_DIR").env_remove("VIT_BACKTRACE").env("RUST_BACKTRACE", "1");
        command.envs(extra.iter().copied()).output().unwrap()
    };
    // RUST_BACKTRACE=1 is common in a Rust user's shell: the message alone, with its cause.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.starts_with("error: ") && stderr.contains("no_such_field") && stderr.contains("bad.toml"),
        "{stderr}"
    );
    assert!(!stderr.to_lowercase().contains("backtrace") && stderr.lines().count() < 10, "{stderr}");
    // Asked for, the trace follows the message.
    let stderr = String::from_utf8_lossy(&run(&[("VIT_BACKTRACE", "1")]).stderr).to_string();
    assert!(stderr.contains("no_such_field") && stderr.contains("Stack backtrace:"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs `vit ARGS` until `metrics.jsonl` in `run` has more than `lines` lines, then sends
/// SIGTERM; returns the exit code.
fn train_until_then_terminate(args: &[&str], run: &Path, lines: usize) -> Option<i32> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vit")).args(args).env_remove("VIT_DATA_DIR").spawn().unwrap();
    let started = std::time::Instant::now();
    let written = || std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.lines().count());
    while written() <= lines {
        assert!(started.elapsed().as_secs() < 120, "no new epoch in 2 minutes");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    child.wait().unwrap().code()
}

#[test]
fn sigterm_saves_the_run_exits_143_and_the_run_resumes() {
    let data = tmp_dir("sigterm");
    write_pattern_mnist(&data, 4, 1);
    let recipe = data.join("patterns.toml");
    // Far more epochs than the test lets it run.
    std::fs::write(&recipe, pattern_recipe(&data, 10_000, 3e-3)).unwrap();
    let run = data.join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let fresh = ["train", "--device", "cpu", "--quiet", "--recipe", &s(&recipe), "--out", &s(&run)];
    assert_eq!(train_until_then_terminate(&fresh, &run, 0), Some(143), "SIGTERM exits with 128 + 15");
    let saved = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().count();
    assert!(saved >= 1 && run.join("last.safetensors").is_file());
    // The run continues from where it was saved, and a second SIGTERM stops it the same way.
    let resume = ["train", "--device", "cpu", "--quiet", "--resume", "--out", &s(&run)];
    assert_eq!(train_until_then_terminate(&resume, &run, saved), Some(143));
    let records: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let epochs: Vec<u64> = records.iter().map(|r| r["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, (1..=epochs.len() as u64).collect::<Vec<_>>(), "every epoch once, in order");
    assert!(epochs.len() > saved);
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn pretrained_timm_weights_import_and_predict_with_their_preprocessing() {
    let data = tmp_dir("import");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vit-model/tests/fixtures/timm_hub");
    let out = data.join("imported.safetensors");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let run = vit(&["import", &s(&source), "-o", &s(&out)]);
    assert!(run.status.success(), "{}", text(&run));
    let log = text(&run);
    assert!(log.contains("timm ViT") && log.contains("4 classes") && log.contains("mean [0.5, 0.5, 0.5]"), "{log}");
    assert!(log.contains("resized (bicubic) with a centre crop of 0.9"), "{log}");
    let picture = data.join("picture.png");
    image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 30) as u8, (y * 30) as u8, 90])).save(&picture).unwrap();
    let predicted = vit(&["predict", &s(&out), &s(&picture), "--top", "4"]);
    assert!(predicted.status.success(), "{}", text(&predicted));
    assert_eq!(text(&predicted).matches('%').count(), 4, "{}", text(&predicted));
    let refused = vit(&["import", &s(&data), "-o", &s(&out)]);
    assert!(!refused.status.success() && text(&refused).contains("config.json"), "{}", text(&refused));
    std::fs::remove_dir_all(data).unwrap();
}

/// The browser to load the report in: `$CHROMIUM`, else `chromium` or `chromium-browser` on the
/// path.
fn chromium() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(path.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

#[test]
fn the_report_renders_in_a_headless_browser() {
    let Some(browser) = chromium() else {
        // CI installs Chromium (.ci/run), so there a missing browser is a failure.
        assert!(std::env::var_os("CI").is_none(), "CI must have chromium: .ci/run installs it");
        eprintln!("skipped: no chromium on PATH (set $CHROMIUM, or apt-get install chromium)");
        return;
    };
    let data = tmp_dir("cli-report");
    write_pattern_mnist(&data, 4, 2);
    let recipe = data.join("patterns.toml");
    std::fs::write(&recipe, pattern_recipe(&data, 2, 3e-3)).unwrap();
    let run = data.join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out = vit(&["train", "--device", "cpu", "--recipe", &s(&recipe), "--out", &s(&run), "--quiet", "--no-report"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!run.join("report.html").exists(), "--no-report");
    let out = vit(&["report", &s(&run), "--samples", "8", "--explain", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let page = run.join("report.html");
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let browse = |extra: &[&str]| {
        Command::new(&browser)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs")
    };
    let dom = browse(&["--dump-dom"]);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    // The page's own check, run on load: every picture decoded, no script error.
    let body = dom_text.split("<body").nth(1).and_then(|b| b.split('>').next()).unwrap_or_default();
    // Curves, confusion matrix, sample predictions, two explained images.
    assert!(body.contains("data-images=\"5\"") && body.contains("data-decoded=\"5\""), "{body}\n{}", text(&dom));
    assert!(body.contains("data-errors=\"none\""), "{body}");
    let shot = data.join("report.png");
    let out = browse(&["--window-size=1200,2000", &format!("--screenshot={}", s(&shot))]);
    assert!(out.status.success(), "{}", text(&out));
    let shot = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(shot.dimensions(), (1200, 2000));
    // Rendered, not blank: dark text and coloured pictures on the white page.
    let coloured = shot.pixels().filter(|p| p.0.iter().max().unwrap() - p.0.iter().min().unwrap() > 60).count();
    assert!(coloured > 10_000, "{coloured} coloured pixels in the screenshot");
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn a_model_is_fetched_from_a_hub_checked_and_imported() {
    use sha2::{Digest, Sha256};
    let root = tmp_dir("hub");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vit-model/tests/fixtures/timm_hub");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let files = root.join("timm/tiny-test/resolve").join(commit);
    std::fs::create_dir_all(&files).unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(name), files.join(name)).unwrap();
    }
    let weights = std::fs::read(files.join("model.safetensors")).unwrap();
    let sha: String = Sha256::digest(&weights).iter().map(|b| format!("{b:02x}")).collect();
    let config_size = std::fs::metadata(files.join("config.json")).unwrap().len();
    let listing = |sha256: &str| {
        serde_json::json!({
            "sha": commit,
            "siblings": [
                {"rfilename": "README.md"},
                {"rfilename": "config.json", "size": config_size, "blobId": "c0ffee0123456789abcdef0123456789abcdef01"},
                {"rfilename": "model.safetensors", "size": weights.len(), "lfs": {"sha256": sha256, "size": weights.len()}},
            ]
        })
        .to_string()
    };
    let api = root.join("api/models/timm/tiny-test/revision");
    std::fs::create_dir_all(&api).unwrap();
    let cache = root.join("cache");
    let import = |out: &str| {
        Command::new(env!("CARGO_BIN_EXE_vit"))
            .args(["import", "hf://timm/tiny-test", "--cache", cache.to_str().unwrap(), "-o"])
            .arg(root.join(out))
            .env("VIT_HUB_ENDPOINT", format!("file://{}", root.display()))
            .output()
            .unwrap()
    };

    // A listing whose checksum the file does not have: the download is refused and removed.
    std::fs::write(api.join("main"), listing(&"0".repeat(64))).unwrap();
    let out = import("bad.safetensors");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("sha256") && text(&out).contains("removed"), "{}", text(&out));
    let model_dir = cache.join("models--timm--tiny-test");
    let cached = model_dir.join("snapshots").join(commit);
    assert!(!cached.join("model.safetensors").exists());

    std::fs::write(api.join("main"), listing(&sha)).unwrap();
    let out = import("tiny.safetensors");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("downloading") && text(&out).contains("timm ViT from"), "{}", text(&out));
    assert!(cached.join("model.safetensors").is_file() && cached.join("config.json").is_file());
    // In the layout of Python's huggingface_hub: blobs named by etag (an LFS file's sha256, a
    // git blob id), the snapshot's files relative links to them, the branch's commit in refs/.
    assert_eq!(std::fs::read_link(cached.join("model.safetensors")).unwrap(), Path::new("../../blobs").join(&sha));
    assert_eq!(std::fs::read(model_dir.join("blobs").join(&sha)).unwrap(), weights);
    let config_blob = model_dir.join("blobs/c0ffee0123456789abcdef0123456789abcdef01");
    assert_eq!(std::fs::read(&config_blob).unwrap(), std::fs::read(fixture.join("config.json")).unwrap());
    assert_eq!(std::fs::read_to_string(model_dir.join("refs/main")).unwrap(), commit);
    hub_python_finds(&cache, commit);
    // The imported checkpoint equals the import of the same files from disk.
    let from_disk = vit_model::Vit::load(root.join("tiny.safetensors"), &candle_core::Device::Cpu).unwrap().2;
    let (_, _, local) = vit_model::import::timm::load(&fixture, &candle_core::Device::Cpu).unwrap();
    assert_eq!(from_disk.config, local.config);
    // Cached and still matching: nothing is fetched again.
    let out = import("again.safetensors");
    assert!(out.status.success() && !text(&out).contains("downloading"), "{}", text(&out));
    // Offline (the hub answers nothing): the revision the cache knows is imported from it, as
    // huggingface_hub does; one it does not know is an error saying so.
    std::fs::remove_file(api.join("main")).unwrap();
    let out = import("offline.safetensors");
    assert!(out.status.success() && text(&out).contains("cannot be reached"), "{}", text(&out));
    std::fs::remove_file(model_dir.join("refs/main")).unwrap();
    let out = import("unknown.safetensors");
    assert!(!out.status.success() && text(&out).contains("is not in the cache"), "{}", text(&out));
    std::fs::remove_dir_all(root).unwrap();
}

/// Python's huggingface_hub, where the test machine has it (CI installs it beside onnx), reads
/// the cache `vit import` wrote: the file of `main` is found, and its cache scan sees one
/// model, one revision, and nothing it would call corrupted.
fn hub_python_finds(cache: &Path, commit: &str) {
    let Some(python) = support::test_python("huggingface_hub") else { return };
    let script = r#"
import sys
from huggingface_hub import scan_cache_dir, try_to_load_from_cache
cache, commit = sys.argv[1], sys.argv[2]
path = try_to_load_from_cache("timm/tiny-test", "model.safetensors", cache_dir=cache, revision="main")
assert isinstance(path, str) and path.endswith(f"snapshots/{commit}/model.safetensors"), path
info = scan_cache_dir(cache)
assert not info.warnings, info.warnings
(repo,) = info.repos
assert repo.repo_id == "timm/tiny-test" and [r.commit_hash for r in repo.revisions] == [commit], repo
assert {f.file_name for r in repo.revisions for f in r.files} == {"config.json", "model.safetensors"}
print("OK")
"#;
    let out = Command::new(&python).args(["-c", script]).arg(cache).arg(commit).output().unwrap();
    assert!(out.status.success() && text(&out).contains("OK"), "{}", text(&out));
}

/// `dir/<digit>/<i>.png` for `per_class` images of each digit of `digits`, from the embedded
/// MNIST training subset (the first of each, in file order).
fn write_digit_folder(dir: &Path, digits: &[u32], per_class: usize) {
    let mnist = vit_data::embedded::mnist_subset_train().unwrap();
    for &digit in digits {
        let class = dir.join(digit.to_string());
        std::fs::create_dir_all(&class).unwrap();
        let images = (0..mnist.len()).filter(|&i| mnist.labels[i] == digit).take(per_class);
        for (n, i) in images.enumerate() {
            let pixels = mnist.image(i).unwrap().to_vec();
            image::GrayImage::from_raw(28, 28, pixels).unwrap().save(class.join(format!("{n}.png"))).unwrap();
        }
    }
}

/// A one-block model of the digits 0-4, trained for a few steps: the checkpoint to fine-tune.
const SOURCE_RECIPE: &str = r#"name = "source"
[model]
preset = "mnist"
num_classes = 5
num_layers = 1
patch_size = 7
projection_dim = 32
num_heads = 2
key_dim = 16
mlp_units = [64, 32]
dropout = 0.0
[data]
dataset = "embedded-mnist"
validation_split = 0.1
classes = [0, 1, 2, 3, 4]
limit_train = 2500
[train]
epochs = 3
batch_size = 64
learning_rate = 3e-3
warmup_epochs = 0
seed = 1
"#;

#[test]
fn a_checkpoint_fine_tunes_on_an_image_folder_in_one_command() {
    let data = tmp_dir("finetune");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    std::fs::write(data.join("source.toml"), SOURCE_RECIPE).unwrap();
    let source = data.join("source");
    let out = vit(&[
        "train",
        "--device",
        "cpu",
        "--recipe",
        &s(&data.join("source.toml")),
        "--out",
        &s(&source),
        "--quiet",
        "--no-report",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // The user's folder: the digits 5-9, classes the source never saw, 100 images each.
    let folder = data.join("digits");
    write_digit_folder(&folder, &[5, 6, 7, 8, 9], 200);

    let init = s(&source.join("best.safetensors"));
    let tuned = data.join("tuned");
    let args =
        ["train", "--device", "cpu", "--init", &init, "--data-dir", &s(&folder), "--epochs", "10", "--lr", "3e-3"];
    let out = vit(&[&args[..], &["--out", &s(&tuned), "--quiet", "--no-report"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tuned.join("summary.json")).unwrap()).unwrap();
    // 20% of the folder held out (200 images); five classes: chance is 0.2. (0.79 when written,
    // on an AVX-512 Xeon; the same recipe from random weights: 0.755.)
    assert_eq!(summary["test_images"], 200);
    let top1 = summary["test_top1"].as_f64().unwrap();
    assert!(top1 >= 0.7, "fine-tuned test top-1 {top1}: {}", text(&out));
    // The recipe it used, whole: the checkpoint's model with a head for the folder's classes,
    // the fine-tuning settings, the flags.
    let config = std::fs::read_to_string(tuned.join("config.toml")).unwrap();
    for line in ["num_classes = 5", "projection_dim = 32", "dataset = \"folder\"", "layer_decay = 0.75", "epochs = 10"]
    {
        assert!(config.contains(line), "{line} missing from:\n{config}");
    }
    assert!(config.contains("init_from = ") && config.contains("source/best.safetensors"), "{config}");
    // ... which repeats the run.
    let again = data.join("again");
    let out = vit(&[
        "train",
        "--device",
        "cpu",
        "--recipe",
        &s(&tuned.join("config.toml")),
        "--out",
        &s(&again),
        "--quiet",
        "--no-report",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let metrics = |run: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                for timing in ["train_seconds", "images_per_second"] {
                    v.as_object_mut().unwrap().remove(timing);
                }
                v
            })
            .collect()
    };
    assert_eq!(metrics(&again), metrics(&tuned));

    // Evaluation pairs classes by name: a folder of test/ alone, with two of the five classes.
    let eval_dir = data.join("eval");
    write_digit_folder(&eval_dir.join("test"), &[9, 5], 10);
    let best = s(&tuned.join("best.safetensors"));
    let out = vit(&["eval", &best, "--data", "folder", "--data-dir", &s(&eval_dir)]);
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(log.contains("test: 20 images") && log.contains("no images"), "{log}");
    // A class the model does not know is an error naming both sets.
    write_digit_folder(&eval_dir.join("test"), &[3], 2);
    let out = vit(&["eval", &best, "--data", "folder", "--data-dir", &s(&eval_dir)]);
    let log = text(&out);
    assert!(
        !out.status.success() && log.contains("`3` is not one of the model's") && log.contains("[5, 6, 7, 8, 9]"),
        "{log}"
    );
    std::fs::remove_dir_all(data).unwrap();
}
