//! Replays the committed fuzzing inputs of the readers in this crate (`fuzz/inputs/`): each
//! must be read or refused with an error, never panic; those named `valid*` must be read.

mod common;

use std::path::Path;

use vit_data::{Cifar100Labels, idx};

#[test]
fn idx_inputs() {
    let path = Path::new("fuzz.idx");
    for (name, data) in common::fuzz_inputs("idx") {
        let decoded = idx::decode_maybe_gz(data.clone(), path);
        if let Ok(bytes) = &decoded {
            let images = idx::parse_images(bytes, path);
            let labels = idx::parse_labels(bytes, path);
            if name.starts_with("valid") {
                assert!(images.is_ok() || labels.is_ok(), "{name}");
            }
            let names = (0..10).map(|c| c.to_string()).collect();
            let _ = idx::from_bytes("fuzz", bytes, path, bytes, path, names);
        } else {
            assert!(!name.starts_with("valid"), "{name}: {decoded:?}");
        }
    }
}

#[test]
fn cifar_inputs() {
    let path = Path::new("fuzz.bin");
    for (name, data) in common::fuzz_inputs("cifar") {
        let ten = vit_data::parse_cifar10(&data, path);
        let _ = vit_data::parse_cifar100(&data, path, Cifar100Labels::Fine);
        let _ = vit_data::parse_cifar100(&data, path, Cifar100Labels::Coarse);
        assert!(!name.starts_with("valid") || ten.is_ok(), "{name}");
    }
}

#[test]
fn image_inputs() {
    let path = Path::new("fuzz.img");
    for (name, data) in common::fuzz_inputs("image") {
        let gray = vit_data::decode_image(&data, path, 8, 8, 1);
        let rgb = vit_data::decode_image(&data, path, 5, 7, 3);
        let readable = name.ends_with(".png") && !name.contains("huge") && !name.contains("truncated");
        assert_eq!(gray.is_ok(), readable, "{name}: {gray:?}");
        assert_eq!(rgb.map(|v| v.len()).ok(), readable.then_some(5 * 7 * 3), "{name}");
    }
}
