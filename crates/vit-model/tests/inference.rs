//! Imported weights prepare a photo of another size as their library does: timm's evaluation
//! transform (shorter side resized with the pretrained interpolation, centre crop by
//! `crop_pct`, normalised) and Hugging Face's `ViTImageProcessor` (stretched with `resample`),
//! each checked against the library's own output for the same PNG
//! (`vit-model/tests/parity/make_*.py`).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use vit_data::{Interpolation, ResizeSpec};
use vit_model::checkpoint;
use vit_model::import::{hf, timm};
use vit_model::inference::Classifier;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The photo prepared by `Classifier::prepare` from a checkpoint of `meta`, against the
/// library's `photo_input` (NCHW): (max, mean) absolute difference.
fn compare(dir: &Path, store: vit_blocks::SeededVarMap, meta: vit_model::CheckpointMeta, name: &str) -> (f32, f32) {
    let tmp = std::env::temp_dir().join(format!("vit-preprocess-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let path = tmp.join("model.safetensors");
    checkpoint::save(&path, store.varmap(), &meta).unwrap();
    let classifier = Classifier::load(&path, &Device::Cpu).unwrap();
    let photo = std::fs::read(dir.join("photo.png")).unwrap();
    let (ours, shown) = classifier.prepare(&[photo.as_slice()]).unwrap();
    assert_eq!(ours.dims(), [1, 8, 8, 3]);
    assert_eq!(shown[0].len(), 8 * 8 * 3);
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let theirs: Tensor = expected["photo_input"].permute((0, 2, 3, 1)).unwrap();
    let diff = (ours - theirs).unwrap().abs().unwrap();
    let max = diff.max_all().unwrap().to_scalar::<f32>().unwrap();
    let mean = diff.mean_all().unwrap().to_scalar::<f32>().unwrap();
    std::fs::remove_dir_all(tmp).unwrap();
    eprintln!("{name}: photo input differs from the library's by max {max:.4}, mean {mean:.5}");
    (max, mean)
}

#[test]
fn a_timm_import_crops_and_resizes_a_photo_as_timm_does() {
    let dir = fixtures().join("timm_hub");
    let (_, store, meta) = timm::load(&dir, &Device::Cpu).unwrap();
    let resize = meta.preprocessing.as_ref().unwrap().resize;
    assert_eq!(resize, Some(ResizeSpec { interpolation: Interpolation::Bicubic, crop_pct: Some(0.9) }));
    let mut stretched = meta.clone();
    let (max, mean) = compare(&dir, store.clone(), meta, "timm");
    // One step of 8 bits is 2/255 after normalising by std 0.5: the filters agree to a step
    // (PIL and the image crate round the resized pixels each their own way).
    assert!(max <= 0.016 && mean <= 0.005, "max {max}, mean {mean}");
    // Without the recorded crop the same photo is stretched, and comes out otherwise.
    stretched.preprocessing.as_mut().unwrap().resize = None;
    let (_, mean) = compare(&dir, store, stretched, "timm-without-crop");
    assert!(mean > 0.1, "the crop must matter for this photo: mean {mean}");
}

#[test]
fn a_hugging_face_import_stretches_a_photo_as_its_processor_does() {
    let dir = fixtures().join("hf_vit");
    let (_, store, meta) = hf::load(dir.join("config.json"), dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let resize = meta.preprocessing.as_ref().unwrap().resize;
    assert_eq!(resize, Some(ResizeSpec { interpolation: Interpolation::Bilinear, crop_pct: None }));
    let (max, mean) = compare(&dir, store, meta, "hf");
    assert!(max <= 0.016 && mean <= 0.005, "max {max}, mean {mean}");
}

#[test]
fn a_checkpoint_written_before_typed_preprocessing_classifies_as_it_did() {
    // `vit predict` of commit 8ad85a7 on this checkpoint and photo printed these (in percent,
    // two decimals): see tests/fixtures/written_by_8ad85a7/README.md.
    let classifier =
        Classifier::load(fixtures().join("written_by_8ad85a7/timm_import.safetensors"), &Device::Cpu).unwrap();
    let photo = std::fs::read(fixtures().join("timm_hub/photo.png")).unwrap();
    let top = classifier.classify(&[photo.as_slice()], 4).unwrap();
    let printed = [("class_0", 0.3203), ("class_2", 0.2952), ("class_1", 0.2579), ("class_3", 0.1267)];
    for ((name, p), (want_name, want)) in top[0].iter().zip(printed) {
        assert_eq!(name, want_name);
        assert!((p - want).abs() <= 5.1e-5, "{name}: {p} against {want}");
    }
}

#[test]
fn classifying_in_batches_gives_each_image_what_it_gets_alone() {
    use vit_model::inference::Pixels;
    let classifier = Classifier::load(fixtures().join("written_by_8ad85a7/run.safetensors"), &Device::Cpu).unwrap();
    let frames: Vec<Vec<u8>> =
        (0..5u64).map(|i| (0..20 * 30).map(|j| (vit_rng::splitmix64(i * 1000 + j) >> 56) as u8).collect()).collect();
    let images: Vec<Pixels<'_>> = frames.iter().map(|data| Pixels { data, height: 20, width: 30 }).collect();
    let together = classifier.with_batch_size(2).classify_pixels(&images, 10).unwrap();
    let classifier = Classifier::load(fixtures().join("written_by_8ad85a7/run.safetensors"), &Device::Cpu).unwrap();
    for (image, batched) in images.iter().zip(&together) {
        let alone = &classifier.classify_pixels(std::slice::from_ref(image), 10).unwrap()[0];
        for ((a, p), (b, q)) in alone.iter().zip(batched) {
            assert_eq!(a, b);
            assert!((p - q).abs() < 1e-6, "{p} against {q}");
        }
    }
    let wrong = Pixels { data: &frames[0][1..], height: 20, width: 30 };
    let err = classifier.classify_pixels(&[images[0], wrong], 1).unwrap_err().to_string();
    assert!(err.contains("<pixels 1>") && err.contains("expected 600"), "{err}");
}
