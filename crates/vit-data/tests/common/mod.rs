//! Small data sets in the real file formats, written by the tests themselves.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

pub fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vit-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn idx_images(images: &[Vec<u8>], rows: usize, cols: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [0x803u32, images.len() as u32, rows as u32, cols as u32] {
        out.extend(v.to_be_bytes());
    }
    for img in images {
        out.extend(img);
    }
    out
}

pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [0x801u32, labels.len() as u32] {
        out.extend(v.to_be_bytes());
    }
    out.extend(labels);
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An 8x8 image of class `class` (0..10): a bright bar whose position and direction encode the
/// class, plus deterministic noise.
pub fn pattern(class: u8, variant: usize) -> Vec<u8> {
    let mut img: Vec<u8> = (0..64).map(|i| ((i * 37 + variant * 101) % 23) as u8).collect();
    let k = class as usize;
    for t in 0..8 {
        let (r, c) = if k < 5 { (k + 1, t) } else { (t, k - 4) };
        img[r * 8 + c] = 200 + (variant % 50) as u8;
        if k >= 5 && r + 1 < 8 {
            img[(r) * 8 + (c + 1).min(7)] = 150;
        }
    }
    img
}

/// Writes a 10-class 8x8 data set in MNIST's IDX layout (gzipped train, raw test) to `dir`.
pub fn write_pattern_mnist(dir: &Path, per_class_train: usize, per_class_test: usize) {
    for (split, per_class, gz) in [("train", per_class_train, true), ("t10k", per_class_test, false)] {
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for v in 0..per_class {
            for c in 0..10u8 {
                images.push(pattern(c, v + if split == "t10k" { 1000 } else { 0 }));
                labels.push(c);
            }
        }
        let (i, l) = (idx_images(&images, 8, 8), idx_labels(&labels));
        let (i, l, ext) = if gz { (gzip(&i), gzip(&l), ".gz") } else { (i, l, "") };
        std::fs::write(dir.join(format!("{split}-images-idx3-ubyte{ext}")), i).unwrap();
        std::fs::write(dir.join(format!("{split}-labels-idx1-ubyte{ext}")), l).unwrap();
    }
}

/// A recipe for the pattern data: a tiny ViT on 8x8x1 images.
pub fn pattern_recipe(dir: &Path, epochs: usize, lr: f64) -> String {
    pattern_recipe_with(dir, epochs, lr, 0.1, 0.05)
}

/// [`pattern_recipe`] with the dropout and the random zoom given.
pub fn pattern_recipe_with(dir: &Path, epochs: usize, lr: f64, dropout: f64, zoom: f64) -> String {
    format!(
        r#"
name = "patterns"

[model]
preset = "mnist"
image_size = [8, 8]
patch_size = 4
projection_dim = 16
num_heads = 2
key_dim = 8
num_layers = 2
mlp_units = [32, 16]
dropout = {dropout:?}

[data]
dataset = "mnist"
dir = "{}"
validation_split = 0.2

[augment]
zoom = {zoom:?}

[train]
epochs = {epochs}
batch_size = 16
learning_rate = {lr:e}
warmup_epochs = 1
weight_decay = 0.01
clip_grad_norm = 1.0
label_smoothing = 0.05
seed = 3
eval_batch_size = 32
"#,
        dir.display()
    )
}

/// The committed fuzzing inputs of `target` (`fuzz/inputs/<target>/`), by file name, sorted;
/// there must be some.
pub fn fuzz_inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/inputs").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no inputs", dir.display());
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}
