//! The training loop: a tiny model fits tiny data, an interrupted and resumed run ends exactly
//! where an uninterrupted one does, and the NaN guard stops a diverging run.

#[path = "../../vit-data/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use common::*;
use vit_train::{EpochRecord, Recipe, Silent, StepRecord, TrainError, TrainOptions, TrainOutcome, read_steps};

fn options(recipe_text: &str, run_dir: &Path, resume: bool, stop_after_steps: Option<u64>) -> TrainOptions {
    TrainOptions {
        recipe: Recipe::parse(recipe_text, Path::new("test.toml")).unwrap(),
        recipe_origin: "test.toml".into(),
        data_dir: None,
        run_dir: run_dir.to_path_buf(),
        device: Device::Cpu,
        resume,
        stop: Arc::new(AtomicBool::new(false)),
        stop_after_steps,
        step_metrics_every: Some(1),
    }
}

fn train(opts: TrainOptions) -> Result<TrainOutcome, TrainError> {
    vit_train::train(opts, &mut Silent)
}

fn records(run_dir: &Path) -> Vec<EpochRecord> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every tensor of a file (the model's and, in `last.safetensors`, the optimizer's) as the
/// bits of its values (f32 and the f64 step count alike, through f64, which is exact).
fn tensors(path: &Path) -> HashMap<String, Vec<u64>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            let values = v.flatten_all().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap();
            (k, values.iter().map(|x| x.to_bits()).collect())
        })
        .collect()
}

/// Runs `recipe` into `run` interrupted after step 1 (in epoch 1, before any checkpoint was
/// best), resumed, interrupted again after step 3 (in epoch 2), and resumed to the end.
fn train_interrupted_twice(recipe: &str, run: &Path) {
    let first = train(options(recipe, run, false, Some(1))).unwrap();
    assert!(matches!(first, TrainOutcome::Interrupted { step: 1, .. }), "{first:?}");
    let second = train(options(recipe, run, true, Some(3))).unwrap();
    assert!(matches!(second, TrainOutcome::Interrupted { step: 3, .. }), "{second:?}");
    let third = train(options(recipe, run, true, None)).unwrap();
    assert!(matches!(third, TrainOutcome::Finished(_)), "{third:?}");
}

#[test]
fn a_tiny_vit_fits_a_tiny_data_set_and_writes_its_run_directory() {
    let data = tmp_dir("fit-data");
    write_pattern_mnist(&data, 4, 2);
    let run = data.join("run");
    // No dropout or augmentation, so the accuracy measured while training is the real one.
    let recipe =
        pattern_recipe_with(&data, 60, 3e-3, 0.0, 0.0).replace("label_smoothing = 0.05", "label_smoothing = 0.0");
    let outcome = train(options(&recipe, &run, false, None)).unwrap();
    let TrainOutcome::Finished(report) = outcome else { panic!("not finished") };
    let last = records(&run).pop().unwrap();
    assert_eq!(last.epoch, 60);
    assert_eq!(last.train_top1, 1.0, "training accuracy must reach 100%: {last:?}");
    assert!(report.test_top1 > 0.5, "chance is 0.1: {report:?}");
    assert_eq!(report.test_images, 20);
    // curves.png is drawn by the `vit` command's observer: its test checks it.
    for file in ["config.toml", "metrics.jsonl", "best.safetensors", "last.safetensors", "summary.json"] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    // Starting a new run over an old one is refused rather than overwriting it.
    let err = train(options(&pattern_recipe(&data, 1, 3e-3), &run, false, None)).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn an_interrupted_run_resumes_exactly() {
    let data = tmp_dir("resume-data");
    write_pattern_mnist(&data, 4, 1);
    // 32 training images, batch 16: 2 steps per epoch; 3 epochs.
    let recipe = pattern_recipe(&data, 3, 2e-3);
    let straight = data.join("straight");
    train(options(&recipe, &straight, false, None)).unwrap();

    let resumed = data.join("resumed");
    train_interrupted_twice(&recipe, &resumed);
    assert_eq!(tensors(&straight.join("last.safetensors")), tensors(&resumed.join("last.safetensors")));
    assert_eq!(tensors(&straight.join("best.safetensors")), tensors(&resumed.join("best.safetensors")));
    let strip = |r: Vec<EpochRecord>| -> Vec<EpochRecord> {
        r.into_iter().map(|e| EpochRecord { train_seconds: 0.0, images_per_second: 0.0, ..e }).collect()
    };
    assert_eq!(strip(records(&straight)), strip(records(&resumed)));
    // The per-step log too: every step once, in order, the same losses and learning rates.
    let steps = |run: &Path| -> Vec<StepRecord> {
        let records = read_steps(&run.join("steps.jsonl")).unwrap();
        records.into_iter().map(|r| StepRecord { images_per_second: 0.0, train_seconds: 0.0, ..r }).collect()
    };
    let straight_steps = steps(&straight);
    assert_eq!(straight_steps.iter().map(|r| r.step).collect::<Vec<_>>(), (1..=6).collect::<Vec<u64>>());
    assert_eq!(straight_steps, steps(&resumed));
    let csv = std::fs::read_to_string(resumed.join("steps.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7, "a header and six steps:\n{csv}");
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn mixed_precision_runs_fit_and_resume_exactly() {
    let data = tmp_dir("mixed-data");
    write_pattern_mnist(&data, 4, 2);
    for precision in ["bf16", "f16"] {
        let fit = pattern_recipe_with(&data, 40, 3e-3, 0.0, 0.0)
            .replace("label_smoothing = 0.05", &format!("label_smoothing = 0.0\nprecision = \"{precision}\""));
        let run = data.join(format!("fit-{precision}"));
        let TrainOutcome::Finished(report) = train(options(&fit, &run, false, None)).unwrap() else {
            panic!("{precision}: not finished")
        };
        let last = records(&run).pop().unwrap();
        assert!(last.train_top1 >= 0.9, "{precision}: training accuracy {last:?}");
        assert!(report.test_top1 > 0.5, "{precision}: chance is 0.1: {report:?}");
        // The checkpoint holds the f32 master weights.
        let saved = candle_core::safetensors::load(run.join("last.safetensors"), &Device::Cpu).unwrap();
        for (name, t) in saved.into_iter().filter(|(name, _)| !name.starts_with("train.")) {
            assert_eq!(t.dtype(), candle_core::DType::F32, "{precision}: {name}");
        }

        // The loss scale and the count of skipped steps are part of the resumed state.
        let recipe =
            pattern_recipe(&data, 3, 2e-3).replace("[train]\n", &format!("[train]\nprecision = \"{precision}\"\n"));
        let straight = data.join(format!("straight-{precision}"));
        train(options(&recipe, &straight, false, None)).unwrap();
        let resumed = data.join(format!("resumed-{precision}"));
        train(options(&recipe, &resumed, false, Some(3))).unwrap();
        train(options(&recipe, &resumed, true, None)).unwrap();
        assert_eq!(
            tensors(&straight.join("last.safetensors")),
            tensors(&resumed.join("last.safetensors")),
            "{precision}: the resumed run ended elsewhere"
        );
    }
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn a_diverging_run_stops_on_the_nan_guard_without_saving() {
    let data = tmp_dir("nan-data");
    write_pattern_mnist(&data, 4, 1);
    let recipe = pattern_recipe(&data, 3, 1e30).replace("clip_grad_norm = 1.0\n", "");
    let run = data.join("run");
    let err = train(options(&recipe, &run, false, None)).unwrap_err();
    match &err {
        TrainError::NonFiniteLoss { epoch: 1, last_good, .. } => assert!(last_good.starts_with("none"), "{err}"),
        other => panic!("expected the NaN guard, got {other}"),
    }
    assert!(err.to_string().contains("training stopped"), "{err}");
    assert!(!run.join("last.safetensors").exists() && !run.join("best.safetensors").exists());
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn recipes_report_bad_fields_by_name() {
    for (name, _) in vit_train::recipe::BUILTIN {
        let recipe = Recipe::load(name).unwrap();
        recipe.model_config(Path::new(name)).unwrap();
    }
    let keras = Recipe::load("keras-cifar100").unwrap();
    assert_eq!(keras.model_config(Path::new("k")).unwrap(), vit_model::VitConfig::keras_cifar100());
    assert_eq!((keras.train.batch_size, keras.train.epochs, keras.train.learning_rate), (256, 100, 1e-3));
    assert_eq!(keras.train.weight_decay, 1e-4);

    let base = pattern_recipe(Path::new("/nowhere"), 1, 1e-3);
    let err = Recipe::parse(&base.replace("num_layers = 2", "num_layer = 2"), Path::new("r.toml")).unwrap_err();
    assert!(err.to_string().contains("r.toml") && err.to_string().contains("num_layer"), "{err}");
    let err = Recipe::parse(&base.replace("epochs = 1", "epochs = 0"), Path::new("r.toml")).unwrap_err();
    assert!(err.to_string().contains("train.epochs"), "{err}");
    let err =
        Recipe::parse(&base.replace("preset = \"mnist\"", "preset = \"mnist2\""), Path::new("r.toml")).unwrap_err();
    assert!(err.to_string().contains("mnist2"), "{err}");
    let err = Recipe::parse(&base.replace("zoom = 0.05", "zooom = 0.05"), Path::new("r.toml")).unwrap_err();
    assert!(err.to_string().contains("zooom"), "{err}");
    for (bad, says) in [
        ("auto_augment = \"rand-m9-mstd0.5\"", "inc1"),
        ("auto_augment = \"rand-m12-inc1\"", "[0, 10]"),
        ("mixup_alpha = -0.8", "augment.mixup_alpha"),
        ("erase_probability = 1.25", "augment.erase_probability"),
        ("zoom_width = 1.0", "augment.zoom_width"),
        ("erase_mode = \"noise\"", "erase_mode"),
    ] {
        let text = base.replace("zoom = 0.05", &format!("zoom = 0.05\n{bad}"));
        let err = Recipe::parse(&text, Path::new("r.toml")).unwrap_err().to_string();
        assert!(err.contains("r.toml") && err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn a_recipe_sets_any_model_field_and_a_timm_style_model_trains() {
    // qkv_bias and fc_norm serialise to nothing at their defaults, so a preset's table lacks
    // them; a recipe setting them was refused as naming no field.
    let data = tmp_dir("timm-style-data");
    write_pattern_mnist(&data, 4, 2);
    let run = data.join("run");
    let recipe = pattern_recipe(&data, 2, 3e-3)
        .replace("dropout = 0.1", "dropout = 0.1\nhead = \"mean_pool\"\nfc_norm = true\nqkv_bias = false");
    let parsed = Recipe::parse(&recipe, Path::new("timm.toml")).unwrap();
    let cfg = parsed.model_config(Path::new("timm.toml")).unwrap();
    assert!(cfg.fc_norm && !cfg.qkv_bias && cfg.head == vit_model::HeadKind::MeanPool, "{cfg:?}");
    let outcome = train(options(&recipe, &run, false, None)).unwrap();
    assert!(matches!(outcome, TrainOutcome::Finished(_)), "{outcome:?}");
    let weights = tensors(&run.join("best.safetensors"));
    assert!(weights.keys().any(|k| k.contains("query.weight")));
    assert!(!weights.keys().any(|k| k.contains("query.bias")), "qkv_bias = false: {:?}", weights.keys());
    // The recipe written beside the run keeps both fields, so the run can be repeated.
    let written = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(written.contains("qkv_bias = false") && written.contains("fc_norm = true"), "{written}");
    // A field no config has is still refused by name.
    let err = Recipe::parse(&recipe.replace("fc_norm = true", "fc_norms = true"), Path::new("timm.toml")).unwrap_err();
    assert!(err.to_string().contains("fc_norms") && err.to_string().contains("timm.toml"), "{err}");
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn deit_augmentation_trains_and_resumes_exactly() {
    let data = tmp_dir("deit-data");
    write_pattern_mnist(&data, 4, 1);
    let plain = pattern_recipe(&data, 3, 2e-3);
    let recipe = plain.replace(
        "zoom = 0.05",
        "zoom = 0.05\nzoom_width = 0.1\nauto_augment = \"rand-m9-mstd0.5-inc1\"\nerase_probability = 0.25\n\
         mixup_alpha = 0.8\ncutmix_alpha = 1.0",
    );
    let straight = data.join("straight");
    train(options(&recipe, &straight, false, None)).unwrap();
    let resumed = data.join("resumed");
    train_interrupted_twice(&recipe, &resumed);
    assert_eq!(tensors(&straight.join("last.safetensors")), tensors(&resumed.join("last.safetensors")));
    let losses =
        |run: &Path| -> Vec<f64> { read_steps(&run.join("steps.jsonl")).unwrap().iter().map(|r| r.loss).collect() };
    assert_eq!(losses(&straight), losses(&resumed));
    // And the augmentation did something: the same recipe without it trains otherwise.
    let unaugmented = data.join("plain");
    train(options(&plain, &unaugmented, false, None)).unwrap();
    assert!(losses(&unaugmented).iter().zip(losses(&straight)).all(|(a, b)| a != &b));
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn a_model_with_nan_weights_scores_no_hit_and_says_so() {
    let data = tmp_dir("nan-eval");
    write_pattern_mnist(&data, 4, 2);
    let run = data.join("run");
    train(options(&pattern_recipe(&data, 1, 3e-3), &run, false, None)).unwrap();
    let (model, store, meta) = vit_model::Vit::load(run.join("best.safetensors"), &Device::Cpu).unwrap();
    for var in store.vars().values() {
        var.set(&(var.as_tensor() * f64::NAN).unwrap()).unwrap();
    }
    let normalizer = meta.preprocessing().normalizer;
    let (_, test) = vit_data::load_splits(&vit_data::DatasetKind::Mnist, Some(&data), (8, 8), 1).unwrap();
    let pipeline = vit_data::Pipeline { size: (8, 8), normalizer };
    let tally = vit_train::evaluate(&model, &Arc::new(test), &pipeline, 7, &Device::Cpu).unwrap();
    assert_eq!((tally.count, tally.non_finite, tally.top1, tally.top5), (20, 20, 0, 0), "{tally:?}");
    assert_eq!(tally.top1(), 0.0);
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn a_time_to_accuracy_run_evaluates_the_test_set_every_epoch_and_says_the_choice_is_optimistic() {
    let data = tmp_dir("on-test");
    write_pattern_mnist(&data, 4, 1);
    let run = data.join("run");
    let recipe = pattern_recipe(&data, 3, 3e-3)
        .replace("validation_split = 0.2", "validation_split = 0.0\nvalidate_on_test = true");
    let TrainOutcome::Finished(report) = train(options(&recipe, &run, false, None)).unwrap() else { panic!() };
    let epochs = records(&run);
    assert_eq!(epochs.len(), 3);
    assert!(epochs.iter().all(|r| r.val_top1.is_some()), "every epoch is evaluated");
    // The chosen epoch's score on the test set is the test score: the same images.
    let best = report.best_epoch.expect("a model is chosen");
    assert_eq!(epochs[best - 1].val_top1, Some(report.test_top1));
    assert!(report.model_selection.contains("optimistic"), "{}", report.model_selection);
    let both = recipe.replace("validation_split = 0.0", "validation_split = 0.1");
    let err = Recipe::parse(&both, Path::new("t.toml")).unwrap_err().to_string();
    assert!(err.contains("data.validate_on_test") && err.contains("validation_split"), "{err}");
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn without_a_validation_split_no_model_is_chosen_and_the_summary_says_so() {
    let data = tmp_dir("no-val");
    write_pattern_mnist(&data, 4, 1);
    let run = data.join("run");
    let recipe = pattern_recipe(&data, 2, 3e-3).replace("validation_split = 0.2", "validation_split = 0.0");
    let TrainOutcome::Finished(report) = train(options(&recipe, &run, false, None)).unwrap() else { panic!() };
    assert_eq!((report.best_epoch, report.best_val_top1), (None, None));
    assert!(report.model_selection.contains("no validation split"), "{}", report.model_selection);
    assert!(!run.join("best.safetensors").exists(), "no model was chosen, so none is written as the best");
    assert!(records(&run).iter().all(|r| r.val_top1.is_none()));
    // A split that rounds to no image is an error, not an epoch that scores 0.
    let tiny = pattern_recipe(&data, 1, 3e-3).replace("validation_split = 0.2", "validation_split = 0.01");
    let err = train(options(&tiny, &data.join("run2"), false, None)).unwrap_err().to_string();
    assert!(err.contains("holds no record"), "{err}");
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn the_whole_run_state_is_one_file_and_stale_temporary_files_are_removed() {
    let data = tmp_dir("one-file");
    write_pattern_mnist(&data, 4, 1);
    let run = data.join("run");
    train(options(&pattern_recipe(&data, 3, 2e-3), &run, false, Some(3))).unwrap();
    assert!(!run.join("last.optimizer.safetensors").exists());
    let names: Vec<String> = tensors(&run.join("last.safetensors")).into_keys().collect();
    assert!(names.iter().any(|n| n.starts_with("train.optimizer.m.")), "{names:?}");
    // A killed process's temporary file does not survive the next start.
    let stale = run.join(".last.safetensors.tmp-4242");
    std::fs::write(&stale, b"half a file").unwrap();
    train(options(&pattern_recipe(&data, 3, 2e-3), &run, true, None)).unwrap();
    assert!(!stale.exists());
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn a_recipe_changed_in_code_is_validated_when_training_starts() {
    let data = tmp_dir("validate");
    write_pattern_mnist(&data, 4, 1);
    for (field, change) in [
        ("train.batch_size", &(|r: &mut Recipe| r.train.batch_size = 0) as &dyn Fn(&mut Recipe)),
        ("train.learning_rate", &|r: &mut Recipe| r.train.learning_rate = -1.0),
        ("data.limit_train", &|r: &mut Recipe| r.data.limit_train = Some(0)),
        ("train.epochs", &|r: &mut Recipe| r.train.epochs = 0),
        ("train.backbone_lr_scale", &|r: &mut Recipe| r.train.backbone_lr_scale = Some(0.0)),
    ] {
        let mut opts = options(&pattern_recipe(&data, 1, 1e-3), &data.join(field), false, None);
        change(&mut opts.recipe);
        let err = train(opts).unwrap_err().to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn fine_tuning_starts_from_a_checkpoint_with_a_new_head_at_a_new_resolution() {
    let data = tmp_dir("fine-tune");
    write_pattern_mnist(&data, 4, 1);
    let source_run = data.join("source");
    train(options(&pattern_recipe(&data, 2, 3e-3), &source_run, false, None)).unwrap();
    let source = source_run.join("best.safetensors");

    // Three classes of 12x12 images in an image folder: a new head and a 3x3 patch grid.
    let folder = data.join("folder");
    for (split, per_class) in [("train", 6), ("test", 2)] {
        for class in 0..3u8 {
            let dir = folder.join(split).join(format!("c{class}"));
            std::fs::create_dir_all(&dir).unwrap();
            for v in 0..per_class {
                let image = image::GrayImage::from_raw(8, 8, pattern(class, v)).unwrap();
                image.save(dir.join(format!("{v}.png"))).unwrap();
            }
        }
    }
    let recipe = pattern_recipe(&data, 2, 1e-3)
        .replace("image_size = [8, 8]", "image_size = [12, 12]\nnum_classes = 3")
        .replace("dataset = \"mnist\"", "dataset = \"folder\"")
        .replace(&format!("dir = \"{}\"", data.display()), &format!("dir = \"{}\"", folder.display()))
        .replace("[train]\n", &format!("[train]\ninit_from = \"{}\"\n", source.display()));
    let TrainOutcome::Finished(report) = train(options(&recipe, &data.join("tuned"), false, None)).unwrap() else {
        panic!("not finished")
    };
    assert_eq!(report.test_images, 6);
    // The images were normalised as the source's weights expect, not by the folder's own
    // statistics (which differ: other images, other classes).
    let normalizer = |path: &Path| vit_model::checkpoint::read_meta(path).unwrap().preprocessing().normalizer;
    assert_eq!(normalizer(&data.join("tuned/best.safetensors")), normalizer(&source));
    let scratch = recipe.replace(&format!("init_from = \"{}\"\n", source.display()), "");
    train(options(&scratch, &data.join("scratch"), false, None)).unwrap();
    assert_ne!(normalizer(&data.join("scratch/best.safetensors")), normalizer(&source));

    // What was taken: every block and norm copied, the 2x2 positions resampled to 3x3, the
    // 10-class classifier replaced by a fresh 3-class one.
    let cfg = Recipe::parse(&recipe, Path::new("tuned.toml")).unwrap().model_config(Path::new("t")).unwrap();
    let (_, store) = vit_model::Vit::init(&cfg, 9, &Device::Cpu).unwrap();
    let checkpoint = vit_model::checkpoint::load(&source, &Device::Cpu).unwrap();
    let transfer = vit_model::init_from(&store, &cfg, &checkpoint, false).unwrap();
    assert_eq!(transfer.resampled, Some(((2, 2), (3, 3))));
    assert_eq!(transfer.fresh, ["head.classifier.bias", "head.classifier.weight"]);
    assert!(transfer.unused.is_empty());
    let name = "blocks.1.mlp.layers.0.weight";
    assert!(transfer.copied.iter().any(|n| n == name));
    let bits = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(bits(store.vars()[name].as_tensor()), bits(&checkpoint.tensors[name]));
    assert!(transfer.to_string().contains("positions resampled from a 2x2 to a 3x3 grid"), "{transfer}");

    // The same classes keep the head; other classes, even as many, get a fresh one.
    let source_cfg = checkpoint.meta.config.clone();
    let (_, same) = vit_model::Vit::init(&source_cfg, 9, &Device::Cpu).unwrap();
    let kept = vit_model::init_from(&same, &source_cfg, &checkpoint, true).unwrap();
    assert!(kept.fresh.is_empty() && kept.resampled.is_none(), "{kept}");
    let renewed = vit_model::init_from(&same, &source_cfg, &checkpoint, false).unwrap();
    assert_eq!(renewed.fresh, ["head.classifier.bias", "head.classifier.weight"]);

    // Another width cannot start from these weights: an error naming a tensor and both shapes.
    let wider = vit_model::VitConfig { projection_dim: 32, mlp_units: vec![32, 32], ..cfg };
    let (_, store) = vit_model::Vit::init(&wider, 9, &Device::Cpu).unwrap();
    let err = vit_model::init_from(&store, &wider, &checkpoint, false).unwrap_err().to_string();
    assert!(err.contains("cannot start a model whose") && err.contains("best.safetensors"), "{err}");
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn a_frozen_backbone_keeps_its_weights_bit_for_bit_while_the_head_trains() {
    let data = tmp_dir("freeze");
    write_pattern_mnist(&data, 4, 1);
    let run = data.join("run");
    let recipe = pattern_recipe(&data, 2, 3e-3).replace("[train]\n", "[train]\nfreeze_backbone = true\n");
    train(options(&recipe, &run, false, None)).unwrap();
    let cfg = Recipe::parse(&recipe, Path::new("r")).unwrap().model_config(Path::new("r")).unwrap();
    let (_, initial) = vit_model::Vit::init(&cfg, 3, &Device::Cpu).unwrap();
    let trained = tensors(&run.join("last.safetensors"));
    let bits = |t: &candle_core::Tensor| {
        let v = t.flatten_all().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap();
        v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    };
    let (mut frozen, mut moved) = (0, 0);
    for (name, var) in initial.vars() {
        if name.starts_with("head.") {
            moved += usize::from(trained[&name] != bits(var.as_tensor()));
        } else {
            assert_eq!(trained[&name], bits(var.as_tensor()), "{name} moved although frozen");
            frozen += 1;
        }
    }
    assert!(frozen > 10 && moved > 0, "{frozen} frozen, {moved} head tensors trained");
    let both = recipe.replace("[train]\n", "[train]\nfrozen_blocks = 1\n");
    let err = Recipe::parse(&both, Path::new("r.toml")).unwrap_err().to_string();
    assert!(err.contains("train.frozen_blocks"), "{err}");
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn a_single_image_folder_trains_and_unreadable_images_are_skipped_only_when_asked() {
    let data = tmp_dir("folder-run");
    let images = data.join("images");
    for class in 0..3u8 {
        let dir = images.join(format!("class{class}"));
        std::fs::create_dir_all(&dir).unwrap();
        for v in 0..10 {
            image::GrayImage::from_raw(8, 8, pattern(class, v)).unwrap().save(dir.join(format!("{v}.png"))).unwrap();
        }
    }
    std::fs::write(images.join("class1").join("truncated.png"), b"\x89PNG\r\n\x1a\n").unwrap();
    let recipe = pattern_recipe(&data, 1, 1e-3)
        .replace("dataset = \"mnist\"", "dataset = \"folder\"")
        .replace(&format!("dir = \"{}\"", data.display()), &format!("dir = \"{}\"", images.display()))
        .replace("mlp_units = [32, 16]", "mlp_units = [32, 16]\nnum_classes = 3");
    assert!(recipe.contains("dataset = \"folder\"") && recipe.contains("num_classes = 3"), "{recipe}");
    let err = train(options(&recipe, &data.join("strict"), false, None)).unwrap_err().to_string();
    assert!(err.contains("truncated.png"), "{err}");

    struct Started(Vec<vit_train::RunStarted>);
    impl vit_train::TrainObserver for Started {
        fn run_started(&mut self, run: &vit_train::RunStarted) {
            self.0.push(run.clone());
        }
    }
    let lenient = recipe.replace("validation_split = 0.2", "validation_split = 0.2\nskip_unreadable = true");
    let mut seen = Started(Vec::new());
    let outcome = vit_train::train(options(&lenient, &data.join("lenient"), false, None), &mut seen).unwrap();
    let TrainOutcome::Finished(report) = outcome else { panic!("{outcome:?}") };
    // 30 readable images; a fixed 20% of each class (2 of 10) is the test split.
    assert_eq!(report.test_images, 6);
    let started = &seen.0[0];
    assert_eq!(started.skipped_images.len(), 1);
    assert!(started.skipped_images[0].path.ends_with("class1/truncated.png"), "{:?}", started.skipped_images);
    assert_eq!(started.images.0 + started.images.1, 24);
    // Streamed from the files instead of decoded into memory first: the same run exactly.
    let streamed = lenient.replace("skip_unreadable = true", "skip_unreadable = true\nstream = true");
    assert!(streamed.contains("stream = true"));
    let mut seen = Started(Vec::new());
    vit_train::train(options(&streamed, &data.join("streamed"), false, None), &mut seen).unwrap();
    assert_eq!(seen.0[0].skipped_images.len(), 1);
    assert_eq!(tensors(&data.join("lenient/last.safetensors")), tensors(&data.join("streamed/last.safetensors")));
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn the_weights_moving_average_is_validated_chosen_saved_and_resumed_exactly() {
    let data = tmp_dir("ema");
    write_pattern_mnist(&data, 4, 1);
    let recipe =
        pattern_recipe(&data, 3, 2e-3).replace("[train]\n", "[train]\nema_decay = 0.9\nselect_by_ema = true\n");
    let straight = data.join("straight");
    let TrainOutcome::Finished(report) = train(options(&recipe, &straight, false, None)).unwrap() else {
        panic!("not finished")
    };
    assert!(report.model_selection.contains("moving average"), "{}", report.model_selection);
    let last = tensors(&straight.join("last.safetensors"));
    let averaged: Vec<&String> = last.keys().filter(|k| k.starts_with("train.ema.")).collect();
    assert!(!averaged.is_empty());
    // The average is not the raw weights, and best.safetensors holds the average of its epoch.
    let name = "blocks.0.mlp.layers.0.weight";
    assert_ne!(last[&format!("train.ema.{name}")], last[name]);
    let records = records(&straight);
    assert!(records.iter().all(|r| r.ema_val_top1.is_some() && r.val_top1.is_some()));
    let best_epoch = report.best_epoch.unwrap();
    let best_ema = records.iter().map(|r| r.ema_val_top1.unwrap()).fold(f64::MIN, f64::max);
    assert_eq!(report.best_val_top1, Some(best_ema));
    assert_eq!(records[best_epoch - 1].ema_val_top1, Some(best_ema));
    if best_epoch == 3 {
        assert_eq!(tensors(&straight.join("best.safetensors"))[name], last[&format!("train.ema.{name}")]);
    }

    // Interrupted in the first and second epochs and resumed: the same average, bit for bit.
    let resumed = data.join("resumed");
    train_interrupted_twice(&recipe, &resumed);
    assert_eq!(tensors(&straight.join("last.safetensors")), tensors(&resumed.join("last.safetensors")));
    assert_eq!(tensors(&straight.join("best.safetensors")), tensors(&resumed.join("best.safetensors")));
    let err = Recipe::parse(
        &pattern_recipe(&data, 1, 1e-3).replace("[train]\n", "[train]\nselect_by_ema = true\n"),
        Path::new("e.toml"),
    )
    .and_then(|r| r.validate(Path::new("e.toml")))
    .unwrap_err()
    .to_string();
    assert!(err.contains("select_by_ema"), "{err}");
    std::fs::remove_dir_all(data).unwrap();
}

/// One rank of a backend that is not `SingleProcess` (as `mpirun -n 1` or a 1-GPU NCCL job
/// are): every sum is the identity, counted.
struct Alone {
    sums: usize,
}

impl vit_train::distributed::Collective for Alone {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _buffer: &mut [f32]) -> Result<(), TrainError> {
        self.sums += 1;
        Ok(())
    }
    fn all_gather_u64(&mut self, value: u64) -> Result<Vec<u64>, TrainError> {
        Ok(vec![value])
    }
    fn barrier(&mut self) -> Result<(), TrainError> {
        Ok(())
    }
}

#[test]
fn a_backend_alone_takes_the_data_parallel_path_and_gives_the_single_process_weights_bit_for_bit() {
    let data = tmp_dir("alone-data");
    write_pattern_mnist(&data, 4, 1);
    // Dropout and zoom on: their draws, keyed by the global row, must be the plain run's.
    let recipe = pattern_recipe(&data, 3, 2e-3);
    let plain = data.join("plain");
    train(options(&recipe, &plain, false, None)).unwrap();
    let alone_run = data.join("alone");
    let mut alone = Alone { sums: 0 };
    vit_train::train_with(options(&recipe, &alone_run, false, None), &mut Silent, &mut alone).unwrap();
    // Each of the 6 steps sums its fused gradient buffer once (an evaluation of one rank has
    // nothing to sum).
    assert_eq!(alone.sums, 6);
    assert_eq!(tensors(&plain.join("last.safetensors")), tensors(&alone_run.join("last.safetensors")));
    let losses =
        |run: &Path| -> Vec<f64> { read_steps(&run.join("steps.jsonl")).unwrap().iter().map(|r| r.loss).collect() };
    assert_eq!(losses(&plain), losses(&alone_run));
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn a_timm_model_without_qkv_bias_fine_tunes_on_a_folder_with_no_recipe_file() {
    let dir = tmp_dir("timm-no-qkv-finetune");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vit-model/tests/fixtures/timm_hub_no_qkv_bias_bin");
    let (_, store, meta) = vit_model::import::timm::load(&fixture, &Device::Cpu).unwrap();
    assert!(!meta.config.qkv_bias);
    let init = dir.join("imported.safetensors");
    vit_model::checkpoint::save(&init, store.varmap(), &meta).unwrap();
    // A folder of two classes the model never saw: red and blue 12x10 pictures.
    let folder = dir.join("pictures");
    for (class, colour) in [("red", [220u8, 30, 30]), ("blue", [30, 30, 220])] {
        std::fs::create_dir_all(folder.join(class)).unwrap();
        for i in 0..10u8 {
            let pixel = image::Rgb([colour[0] - i * 3, colour[1] + i * 5, colour[2] - i * 2]);
            image::RgbImage::from_pixel(12, 10, pixel).save(folder.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let mut recipe = Recipe::fine_tune(&init, vit_data::DatasetKind::Folder, Some(&folder)).unwrap();
    recipe.train.epochs = 2;
    recipe.train.warmup_epochs = 0.0;
    // The recipe says what the checkpoint is: no qkv bias, its sizes, a head for two classes.
    let cfg = recipe.model_config(Path::new("fine-tune")).unwrap();
    assert!(!cfg.qkv_bias && cfg.num_classes == 2 && cfg.drop_path == 0.1, "{cfg:?}");
    assert_eq!((cfg.projection_dim, cfg.num_layers, cfg.image_size), (meta.config.projection_dim, 2, [8, 8]));
    let run = dir.join("run");
    let opts = TrainOptions {
        recipe,
        recipe_origin: "fine-tune".into(),
        data_dir: None,
        run_dir: run.clone(),
        device: Device::Cpu,
        resume: false,
        stop: Arc::new(AtomicBool::new(false)),
        stop_after_steps: None,
        step_metrics_every: None,
    };
    let TrainOutcome::Finished(report) = train(opts).unwrap() else { panic!("not finished") };
    assert_eq!(report.test_images, 4, "20% of each class held out");
    let weights = tensors(&run.join("best.safetensors"));
    assert!(weights.keys().any(|k| k.contains("query.weight")));
    assert!(!weights.keys().any(|k| k.contains("query.bias")), "{:?}", weights.keys());
    let written = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(written.contains("qkv_bias = false") && written.contains("num_classes = 2"), "{written}");
    assert!(written.contains("init_from = ") && written.contains("imported.safetensors"), "{written}");
    std::fs::remove_dir_all(dir).unwrap();
}
