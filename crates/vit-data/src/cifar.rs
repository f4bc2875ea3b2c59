//! CIFAR-10 and CIFAR-100 binary batches (the "binary version" archives).
//!
//! CIFAR-10 records are 3073 bytes: a label, then 1024 red, 1024 green and 1024 blue bytes
//! (row-major 32x32). CIFAR-100 records are 3074 bytes: a coarse label, a fine label, then the
//! same planes.

use std::path::{Path, PathBuf};

use crate::dataset::Dataset;
use crate::error::DataError;

const PIXELS: usize = 32 * 32;

/// Which labels of CIFAR-100 to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cifar100Labels {
    /// 20 super-classes.
    Coarse,
    /// 100 classes.
    Fine,
}

/// Parses one CIFAR-10 batch file's bytes into images (HWC) and labels.
pub fn parse_cifar10(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, Vec<u32>), DataError> {
    parse(bytes, path, 1, 0, 10)
}

/// Parses one CIFAR-100 file's bytes.
pub fn parse_cifar100(bytes: &[u8], path: &Path, labels: Cifar100Labels) -> Result<(Vec<u8>, Vec<u32>), DataError> {
    let (which, classes) = match labels {
        Cifar100Labels::Coarse => (0, 20),
        Cifar100Labels::Fine => (1, 100),
    };
    parse(bytes, path, 2, which, classes)
}

fn parse(
    bytes: &[u8],
    path: &Path,
    label_bytes: usize,
    which: usize,
    classes: usize,
) -> Result<(Vec<u8>, Vec<u32>), DataError> {
    let record = label_bytes + 3 * PIXELS;
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(DataError::WrongLength {
            path: path.into(),
            what: if label_bytes == 1 { "CIFAR-10 records of 3073 bytes" } else { "CIFAR-100 records of 3074 bytes" },
            expected: bytes.len().div_ceil(record).max(1) * record,
            found: bytes.len(),
        });
    }
    let n = bytes.len() / record;
    let mut images = Vec::with_capacity(n * 3 * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for (index, rec) in bytes.chunks_exact(record).enumerate() {
        let label = u32::from(rec[which]);
        if label as usize >= classes {
            return Err(DataError::LabelOutOfRange { path: path.into(), index, label, num_classes: classes });
        }
        labels.push(label);
        let planes = &rec[label_bytes..];
        for p in 0..PIXELS {
            images.extend_from_slice(&[planes[p], planes[PIXELS + p], planes[2 * PIXELS + p]]);
        }
    }
    Ok((images, labels))
}

fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

fn require(dir: &Path, names: &[String], dataset: &str) -> Result<Vec<PathBuf>, DataError> {
    let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    let missing: Vec<&String> = names.iter().zip(&paths).filter(|(_, p)| !p.is_file()).map(|(n, _)| n).collect();
    if missing.is_empty() {
        Ok(paths)
    } else {
        Err(DataError::MissingFiles {
            dir: dir.into(),
            missing: missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            hint: format!("extract the {dataset} binary archive there, or run `vit download {dataset} --dir <DIR>`"),
        })
    }
}

/// Class names from a meta file (one per line) if present, else the published list.
fn names_from(dir: &Path, file: &str, fallback: &[&str]) -> Vec<String> {
    match std::fs::read_to_string(dir.join(file)) {
        Ok(text) => {
            let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
            if names.len() == fallback.len() { names } else { fallback.iter().map(|s| s.to_string()).collect() }
        }
        Err(_) => fallback.iter().map(|s| s.to_string()).collect(),
    }
}

/// Loads CIFAR-10 from the extracted `cifar-10-batches-bin` directory.
pub fn load_cifar10(dir: &Path, train: bool) -> Result<Dataset, DataError> {
    let names: Vec<String> = if train {
        (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
    } else {
        vec!["test_batch.bin".to_string()]
    };
    let paths = require(dir, &names, "cifar10")?;
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for path in &paths {
        let (i, l) = parse_cifar10(&read(path)?, path)?;
        images.extend(i);
        labels.extend(l);
    }
    let class_names = names_from(dir, "batches.meta.txt", &CIFAR10_CLASSES);
    let name = if train { "cifar10-train" } else { "cifar10-test" };
    Dataset::new(name, images, labels, (32, 32, 3), class_names, &paths[0])
}

/// Loads CIFAR-100 from the extracted `cifar-100-binary` directory.
pub fn load_cifar100(dir: &Path, train: bool, which: Cifar100Labels) -> Result<Dataset, DataError> {
    let file = if train { "train.bin" } else { "test.bin" };
    let paths = require(dir, &[file.to_string()], "cifar100")?;
    let (images, labels) = parse_cifar100(&read(&paths[0])?, &paths[0], which)?;
    let class_names = match which {
        Cifar100Labels::Fine => names_from(dir, "fine_label_names.txt", &CIFAR100_FINE),
        Cifar100Labels::Coarse => names_from(dir, "coarse_label_names.txt", &CIFAR100_COARSE),
    };
    let name = if train { "cifar100-train" } else { "cifar100-test" };
    Dataset::new(name, images, labels, (32, 32, 3), class_names, &paths[0])
}

/// CIFAR-10's classes in label order.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// CIFAR-100's 20 super-classes in label order.
pub const CIFAR100_COARSE: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

/// CIFAR-100's 100 classes in label order (alphabetical, as published).
pub const CIFAR100_FINE: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];
