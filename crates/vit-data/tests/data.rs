//! Each reader parses its format and rejects each kind of corruption with a named error.

mod common;

use std::path::Path;

use common::*;
use vit_data::{
    Cifar100Labels, DataError, embedded, idx, load_cifar10, load_cifar100, load_folder, parse_cifar10, parse_cifar100,
};

#[test]
fn idx_raw_and_gz_parse_to_the_same_data() {
    let dir = tmp_dir("idx");
    write_pattern_mnist(&dir, 3, 2);
    let train = idx::load_dir(&dir, idx::Split::Train, "mnist", vit_data::digit_names()).unwrap();
    let test = idx::load_dir(&dir, idx::Split::Test, "mnist", vit_data::digit_names()).unwrap();
    assert_eq!((train.len(), test.len()), (30, 20));
    assert_eq!((train.height, train.width, train.channels), (8, 8, 1));
    assert_eq!(&*train.image(11).unwrap(), pattern(1, 1).as_slice());
    assert_eq!(train.labels[11], 1);
    assert_eq!(train.class_counts(), vec![3; 10]);
    std::fs::remove_dir_all(dir).unwrap();
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn idx_corruption_is_reported_with_the_file() {
    let dir = tmp_dir("idx-bad");
    let images = idx_images(&[pattern(0, 0), pattern(1, 0)], 8, 8);
    let labels = idx_labels(&[0, 1]);
    let names = vit_data::digit_names;

    let good_i = write(&dir, "i", &images);
    let good_l = write(&dir, "l", &labels);
    assert_eq!(idx::load_pair("x", &good_i, &good_l, names()).unwrap().len(), 2);

    let bad_magic = write(&dir, "magic", &labels); // a label file where images belong
    let err = idx::load_pair("x", &bad_magic, &good_l, names()).unwrap_err();
    assert!(matches!(err, DataError::BadMagic { expected: 0x803, found: 0x801, .. }), "{err}");
    assert!(err.to_string().contains("magic"), "{err}");

    let truncated = write(&dir, "trunc", &images[..images.len() - 5]);
    let err = idx::load_pair("x", &truncated, &good_l, names()).unwrap_err();
    assert!(matches!(err, DataError::WrongLength { expected: 144, found: 139, .. }), "{err}");
    assert!(err.to_string().contains("trunc"), "{err}");

    let gz_truncated = write(&dir, "trunc.gz", &gzip(&images)[..40]);
    let err = idx::load_pair("x", &gz_truncated, &good_l, names()).unwrap_err();
    assert!(matches!(err, DataError::Malformed { .. }), "{err}");

    let header_only = write(&dir, "tiny", &images[..6]);
    assert!(matches!(idx::load_pair("x", &header_only, &good_l, names()), Err(DataError::WrongLength { .. })));

    let out_of_range = write(&dir, "range", &idx_labels(&[0, 10]));
    let err = idx::load_pair("x", &good_i, &out_of_range, names()).unwrap_err();
    assert!(matches!(err, DataError::LabelOutOfRange { index: 1, label: 10, num_classes: 10, .. }), "{err}");

    let three = write(&dir, "three", &idx_labels(&[0, 1, 2]));
    let err = idx::load_pair("x", &good_i, &three, names()).unwrap_err();
    assert!(matches!(err, DataError::CountMismatch { image_count: 2, label_count: 3, .. }), "{err}");

    let err = idx::load_dir(&dir, idx::Split::Train, "mnist", names()).unwrap_err();
    assert!(matches!(err, DataError::MissingFiles { .. }), "{err}");
    assert!(err.to_string().contains("train-images-idx3-ubyte(.gz)"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn cifar_record(label_bytes: &[u8], r: u8, g: u8, b: u8) -> Vec<u8> {
    let mut rec = label_bytes.to_vec();
    rec.extend(std::iter::repeat_n(r, 1024));
    rec.extend(std::iter::repeat_n(g, 1024));
    rec.extend(std::iter::repeat_n(b, 1024));
    rec
}

#[test]
fn cifar_batches_parse_planes_into_hwc_and_reject_corruption() {
    let p = Path::new("batch.bin");
    let bytes: Vec<u8> = [cifar_record(&[3], 10, 20, 30), cifar_record(&[9], 1, 2, 3)].concat();
    let (images, labels) = parse_cifar10(&bytes, p).unwrap();
    assert_eq!(labels, [3, 9]);
    assert_eq!(&images[..6], &[10, 20, 30, 10, 20, 30]);
    assert_eq!(&images[3072..3075], &[1, 2, 3]);
    let err = parse_cifar10(&bytes[..3000], p).unwrap_err();
    assert!(matches!(err, DataError::WrongLength { found: 3000, .. }), "{err}");
    let err = parse_cifar10(&cifar_record(&[10], 0, 0, 0), p).unwrap_err();
    assert!(matches!(err, DataError::LabelOutOfRange { label: 10, num_classes: 10, .. }), "{err}");

    let hundred = cifar_record(&[19, 99], 5, 6, 7);
    assert_eq!(parse_cifar100(&hundred, p, Cifar100Labels::Fine).unwrap().1, [99]);
    assert_eq!(parse_cifar100(&hundred, p, Cifar100Labels::Coarse).unwrap().1, [19]);
    let err = parse_cifar100(&cifar_record(&[20, 1], 0, 0, 0), p, Cifar100Labels::Coarse).unwrap_err();
    assert!(matches!(err, DataError::LabelOutOfRange { label: 20, num_classes: 20, .. }), "{err}");
    // A CIFAR-10 file read as CIFAR-100 has the wrong record length.
    assert!(matches!(parse_cifar100(&bytes, p, Cifar100Labels::Fine), Err(DataError::WrongLength { .. })));
}

#[test]
fn cifar_directories_load_with_class_names() {
    let dir = tmp_dir("cifar");
    for i in 1..=5 {
        write(&dir, &format!("data_batch_{i}.bin"), &cifar_record(&[i as u8], 0, 0, 0));
    }
    write(&dir, "test_batch.bin", &cifar_record(&[0], 0, 0, 0));
    let train = load_cifar10(&dir, true).unwrap();
    assert_eq!(train.labels, [1, 2, 3, 4, 5]);
    assert_eq!(train.class_names[3], "cat");
    write(&dir, "train.bin", &cifar_record(&[1, 42], 0, 0, 0));
    write(&dir, "fine_label_names.txt", &(0..100).map(|i| format!("f{i}\n")).collect::<String>().into_bytes());
    let hundred = load_cifar100(&dir, true, Cifar100Labels::Fine).unwrap();
    assert_eq!(hundred.class_names[42], "f42");
    std::fs::remove_file(dir.join("data_batch_3.bin")).unwrap();
    let err = load_cifar10(&dir, true).unwrap_err();
    assert!(err.to_string().contains("data_batch_3.bin"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn image_folders_resize_and_name_unreadable_files() {
    let dir = tmp_dir("folder");
    for (class, color) in [("cat", [200u8, 10, 10]), ("dog", [10, 10, 200])] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..2 {
            let img = image::RgbImage::from_pixel(10 + i, 7, image::Rgb(color));
            img.save(dir.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let data = load_folder(&dir, 4, 4, 3).unwrap();
    assert_eq!(data.class_names, ["cat", "dog"]);
    assert_eq!(data.labels, [0, 0, 1, 1]);
    assert_eq!(&data.image(3).unwrap()[..3], &[10, 10, 200]);
    let grey = load_folder(&dir, 4, 4, 1).unwrap();
    assert_eq!(grey.channels, 1);
    // What people's folders hold besides images is passed over.
    std::fs::write(dir.join("cat").join(".DS_Store"), b"\0\0\0\x01Bud1").unwrap();
    std::fs::write(dir.join("cat").join("notes.txt"), b"taken in 2019").unwrap();
    std::fs::write(dir.join("dog").join("Thumbs.db"), b"\xd0\xcf").unwrap();
    assert_eq!(load_folder(&dir, 4, 4, 3).unwrap().labels, [0, 0, 1, 1]);

    std::fs::write(dir.join("dog").join("broken.png"), b"not a png at all").unwrap();
    let err = load_folder(&dir, 4, 4, 3).unwrap_err();
    assert!(matches!(&err, DataError::UnreadableImage { path, .. } if path.ends_with("dog/broken.png")), "{err}");
    // Asked to, the reader skips it and says which and why.
    let options = vit_data::FolderOptions { skip_unreadable: true, stream: Some(false) };
    let (data, skipped) = vit_data::load_folder_with(&dir, 4, 4, 3, &options).unwrap();
    assert_eq!(data.labels, [0, 0, 1, 1]);
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].path.ends_with("dog/broken.png") && !skipped[0].error.is_empty(), "{skipped:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_single_image_folder_is_split_into_train_and_test_by_a_fixed_stratified_split() {
    let dir = tmp_dir("folder-single");
    for (class, count) in [("a", 10u8), ("b", 5)] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..count {
            image::GrayImage::from_pixel(4, 4, image::Luma([i * 10]))
                .save(dir.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let kind = vit_data::DatasetKind::Folder;
    let (train, test) = vit_data::load_splits(&kind, Some(&dir), (4, 4), 1).unwrap();
    // 20% of each class held out: 2 of a, 1 of b.
    assert_eq!((train.len(), test.len()), (12, 3));
    assert_eq!(test.class_counts(), [2, 1]);
    assert_eq!(train.class_names, ["a", "b"]);
    // The same images every time, whoever asks.
    let (_, again) = vit_data::load_splits(&kind, Some(&dir), (4, 4), 1).unwrap();
    let pixels = |d: &vit_data::Dataset| (0..d.len()).map(|i| d.image(i).unwrap().to_vec()).collect::<Vec<_>>();
    assert_eq!(pixels(&test), pixels(&again));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_embedded_test_set_is_the_real_mnist_test_set() {
    use sha2::{Digest, Sha256};
    let test = embedded::mnist_test().unwrap();
    assert_eq!(test.len(), 10_000);
    // Rebuild the canonical IDX bytes and compare with MNIST's published sha256.
    let images = idx_images(&(0..test.len()).map(|i| test.image(i).unwrap().to_vec()).collect::<Vec<_>>(), 28, 28);
    let labels = idx_labels(&test.labels.iter().map(|&l| l as u8).collect::<Vec<_>>());
    let hex = |b: &[u8]| Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(hex(&images), "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7");
    assert_eq!(hex(&labels), "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2");
    assert_eq!(test.class_counts(), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    let train = embedded::mnist_subset_train().unwrap();
    assert_eq!(train.class_counts(), vec![1000; 10]);
}

/// The real MNIST files, when a data directory is given (CI points `VIT_DATA_DIR` at them).
#[test]
fn real_mnist_from_the_data_directory_parses_with_its_published_counts() {
    let Some(dir) = std::env::var_os(vit_data::DATA_DIR_ENV) else {
        // CI always gives the data: there a missing directory is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "CI is set but VIT_DATA_DIR is not: the real-MNIST check cannot run");
        eprintln!("VIT_DATA_DIR is not set: the real-MNIST check is not run");
        return;
    };
    let (train, test) =
        vit_data::load_splits(&vit_data::DatasetKind::Mnist, Some(Path::new(&dir)), (28, 28), 1).unwrap();
    assert_eq!(train.class_counts(), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    assert_eq!(test.class_counts(), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    assert_eq!((train.height, train.width, train.channels), (28, 28, 1));
}

#[test]
fn headers_that_overflow_or_declare_empty_images_and_gzip_that_inflates_past_its_trailer_are_errors() {
    let path = Path::new("bad.idx");
    // Zero rows: images of no pixels.
    let mut zero_rows = Vec::new();
    for v in [0x803u32, 3, 0, 28] {
        zero_rows.extend(v.to_be_bytes());
    }
    let err = idx::parse_images(&zero_rows, path).unwrap_err().to_string();
    assert!(err.contains("0x28") && err.contains("at least 1"), "{err}");
    // A count and sides whose product overflows: an error, not a wrapped length or a panic.
    let mut huge = Vec::new();
    for v in [0x803u32, u32::MAX, u32::MAX, u32::MAX] {
        huge.extend(v.to_be_bytes());
    }
    let err = idx::parse_images(&huge, path).unwrap_err().to_string();
    assert!(err.contains("bad.idx") && (err.contains("addressed") || err.contains("expected")), "{err}");
    // A gzip stream whose trailer understates its size is cut off at the declared size.
    let mut bomb = gzip(&vec![0u8; 1 << 20]);
    let at = bomb.len() - 4;
    bomb[at..].copy_from_slice(&16u32.to_le_bytes());
    let err = idx::decode_maybe_gz(bomb, path).unwrap_err().to_string();
    assert!(err.contains("trailer declares 16"), "{err}");
    assert!(idx::decode_maybe_gz(vec![0x1f, 0x8b, 0], path).is_err());
}

#[test]
fn validation_splits_are_stratified_seeded_and_never_empty() {
    let dir = tmp_dir("split");
    write_pattern_mnist(&dir, 10, 1);
    let train = idx::load_dir(&dir, idx::Split::Train, "mnist", vit_data::digit_names()).unwrap();
    let (rest, val) = train.split_validation(0.2, 1).unwrap();
    // Every class gives 2 of its 10 images, whatever the order of the file.
    assert_eq!(val.class_counts(), vec![2; 10]);
    assert_eq!(rest.class_counts(), vec![8; 10]);
    let (_, again) = train.split_validation(0.2, 1).unwrap();
    assert_eq!(again.pixels(), val.pixels(), "the same seed gives the same split");
    let (_, other) = train.split_validation(0.2, 2).unwrap();
    assert_ne!(other.pixels(), val.pixels(), "another seed gives another split");
    // 1% of 100 images in 10 classes rounds to no image in any class.
    let err = train.split_validation(0.01, 1).unwrap_err().to_string();
    assert!(err.contains("holds no record"), "{err}");
    assert!(train.split_validation(0.0, 1).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_batch_thread_that_panics_ends_the_loader_with_an_error_and_bad_arguments_are_refused() {
    use std::sync::Arc;
    use vit_data::augment::Normalizer;
    use vit_data::{Dataset, Loader, Pipeline};
    let good =
        Dataset::new("d", vec![7; 2 * 4 * 4], vec![0, 1], (4, 4, 1), vec!["a".into(), "b".into()], Path::new("d"))
            .unwrap();
    let pipeline = Pipeline { size: (4, 4), normalizer: Normalizer::fit(&good).unwrap() };
    let err = Loader::spawn(Arc::new(good.clone()), pipeline.clone(), vec![0, 1], 0, 0, None).err().unwrap();
    assert!(err.to_string().contains("batch size is 0"), "{err}");
    let err = pipeline.batch(&good, &[5], None).unwrap_err().to_string();
    assert!(err.contains("image 5 asked for"), "{err}");
    let three = Pipeline { size: (4, 4), normalizer: Normalizer::identity(3) };
    assert!(Loader::spawn(Arc::new(good.clone()), three, vec![0], 1, 0, None).is_err());
    // A data set changed field by field after `Dataset::new`: more labels than images.
    // Preparing the third panics on the batch thread; the loader says so instead of ending
    // quietly.
    let mut broken = good.clone();
    broken.labels.push(0);
    let results: Vec<_> = Loader::spawn(Arc::new(broken), pipeline, vec![0, 1, 2], 1, 0, None).unwrap().collect();
    let last = results.last().unwrap().as_ref().unwrap_err().to_string();
    assert!(last.contains("panicked"), "{last}");
    assert!(
        Dataset::new("z", vec![], vec![0], (0, 4, 1), vec!["a".into()], Path::new("z")).is_err(),
        "zero-height images are refused"
    );
}

#[test]
fn a_subset_of_classes_is_relabelled_in_the_order_given() {
    let dir = tmp_dir("classes");
    write_pattern_mnist(&dir, 3, 1);
    let train = idx::load_dir(&dir, idx::Split::Train, "mnist", vit_data::digit_names()).unwrap();
    let subset = train.keep_classes(&[7, 2]).unwrap();
    assert_eq!(subset.class_names, ["7", "2"]);
    assert_eq!(subset.class_counts(), [3, 3]);
    for (i, &label) in subset.labels.iter().enumerate() {
        let original = train.labels.iter().enumerate().filter(|(_, l)| **l == 7 || **l == 2).nth(i).unwrap().1;
        assert_eq!(label, if *original == 7 { 0 } else { 1 });
    }
    assert!(train.keep_classes(&[2, 2]).unwrap_err().to_string().contains("twice"));
    assert!(train.keep_classes(&[10]).unwrap_err().to_string().contains("there are 10"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_image_folder_data_set_takes_test_or_val_beside_train() {
    let dir = tmp_dir("folder-splits");
    let write = |split: &str, classes: &[&str]| {
        for class in classes {
            std::fs::create_dir_all(dir.join(split).join(class)).unwrap();
            image::GrayImage::from_pixel(5, 5, image::Luma([9]))
                .save(dir.join(split).join(class).join("a.png"))
                .unwrap();
        }
    };
    write("train", &["a", "b"]);
    let kind = vit_data::DatasetKind::Folder;
    let err = vit_data::load_splits(&kind, Some(&dir), (4, 4), 1).unwrap_err().to_string();
    assert!(err.contains("`test/` or `val/`"), "{err}");
    write("val", &["a", "b"]);
    let (train, held_out) = vit_data::load_splits(&kind, Some(&dir), (4, 4), 1).unwrap();
    assert_eq!((train.len(), held_out.len()), (2, 2));
    write("test", &["a", "c"]);
    let err = vit_data::load_splits(&kind, Some(&dir), (4, 4), 1).unwrap_err().to_string();
    assert!(err.contains("are not train/'s"), "test/ comes first, and its classes must be train/'s: {err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_streamed_folder_gives_the_batches_of_the_decoded_one_and_names_a_file_gone_bad() {
    use std::sync::Arc;
    use vit_data::augment::Normalizer;
    use vit_data::{FolderOptions, Loader, Pipeline, load_folder_with};
    let dir = tmp_dir("folder-stream");
    for class in ["a", "b"] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..5u8 {
            let img = image::GrayImage::from_fn(6, 5, |x, y| image::Luma([(x * 30 + y * 7) as u8 + i]));
            img.save(dir.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(dir.join("a").join("broken.png"), b"\x89PNG no more").unwrap();
    let options = |stream| FolderOptions { skip_unreadable: true, stream: Some(stream) };
    let (memory, skipped_memory) = load_folder_with(&dir, 4, 4, 1, &options(false)).unwrap();
    let (streamed, skipped_streamed) = load_folder_with(&dir, 4, 4, 1, &options(true)).unwrap();
    assert!(streamed.is_streamed() && !memory.is_streamed());
    assert!(streamed.pixels().is_none());
    // A file that is no image is found by its header before any batch.
    assert_eq!(skipped_memory.len(), 1);
    assert_eq!(skipped_streamed.len(), 1);
    assert!(skipped_streamed[0].path.ends_with("a/broken.png"));
    assert_eq!((streamed.len(), streamed.labels.clone()), (memory.len(), memory.labels.clone()));
    let (fit_memory, fit_streamed) = (Normalizer::fit(&memory).unwrap(), Normalizer::fit(&streamed).unwrap());
    for (a, b) in fit_memory.mean.iter().zip(&fit_streamed.mean).chain(fit_memory.std.iter().zip(&fit_streamed.std)) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    let pipeline = Pipeline { size: (4, 4), normalizer: fit_memory };
    let batches = |data: vit_data::Dataset| -> Vec<Vec<f32>> {
        let order: Vec<usize> = (0..data.len()).rev().collect();
        Loader::spawn(Arc::new(data), pipeline.clone(), order, 3, 0, None).unwrap().map(|b| b.unwrap().images).collect()
    };
    assert_eq!(batches(memory), batches(streamed.clone()));
    // A file that goes bad after it was listed: the batch that needs it is an error naming it.
    std::fs::write(dir.join("b").join("2.png"), b"overwritten").unwrap();
    let order: Vec<usize> = (0..streamed.len()).collect();
    let results: Vec<_> = Loader::spawn(Arc::new(streamed), pipeline, order, 4, 0, None).unwrap().collect();
    let err = results.iter().find_map(|r| r.as_ref().err()).expect("an error").to_string();
    assert!(err.contains("b/2.png"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `dir/<class>/<i>.png` for each `(class, count)`, grey 6x6 images of the image's number.
fn write_class_folders(dir: &Path, classes: &[(&str, u8)]) {
    for (class, count) in classes {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..*count {
            image::GrayImage::from_pixel(6, 6, image::Luma([i * 20]))
                .save(dir.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
}

#[test]
fn a_class_folder_without_images_or_alone_is_an_error_naming_it() {
    let kind = vit_data::DatasetKind::Folder;
    let dir = tmp_dir("folder-empty-class");
    write_class_folders(&dir, &[("cat", 5), ("dog", 5)]);
    std::fs::create_dir_all(dir.join("owl")).unwrap();
    std::fs::write(dir.join("owl").join("notes.txt"), b"to do").unwrap();
    let err = vit_data::load_splits(&kind, Some(&dir), (4, 4), 1).unwrap_err();
    assert!(matches!(&err, DataError::Malformed { path, .. } if path.ends_with("owl")), "{err}");
    assert!(err.to_string().contains("holds no images"), "{err}");
    std::fs::remove_dir_all(dir.join("owl")).unwrap();
    assert!(vit_data::load_splits(&kind, Some(&dir), (4, 4), 1).is_ok());

    // A class whose every image is unreadable is no class either, even when they are skipped.
    std::fs::create_dir_all(dir.join("owl")).unwrap();
    std::fs::write(dir.join("owl").join("0.png"), b"not a png").unwrap();
    let options = vit_data::FolderOptions { skip_unreadable: true, stream: Some(false) };
    for stream in [false, true] {
        let options = vit_data::FolderOptions { stream: Some(stream), ..options };
        let err = vit_data::load_splits_with(&kind, Some(&dir), (4, 4), 1, &options).unwrap_err();
        assert!(matches!(&err, DataError::Malformed { path, .. } if path.ends_with("owl")), "{err}");
        assert!(err.to_string().contains("none of the 1 images") && err.to_string().contains("0.png"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();

    // One class folder trains a "classifier" that is always right: refused, split or not.
    write_class_folders(&dir, &[("cat", 5)]);
    let err = vit_data::load_splits(&kind, Some(&dir), (4, 4), 1).unwrap_err().to_string();
    assert!(err.contains("holds one class folder (cat)"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    write_class_folders(&dir.join("train"), &[("cat", 5)]);
    write_class_folders(&dir.join("test"), &[("cat", 2)]);
    let err = vit_data::load_splits(&kind, Some(&dir), (4, 4), 1).unwrap_err().to_string();
    assert!(err.contains("train") && err.contains("holds one class folder"), "{err}");
    // To evaluate, a folder of one class is fine: it is scored on that class.
    let options = vit_data::FolderOptions::default();
    let (test, _) = vit_data::load_test_split_with(&kind, Some(&dir), (4, 4), 1, &options).unwrap();
    assert_eq!((test.len(), test.class_names.clone()), (2, vec!["cat".to_string()]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_evaluation_folder_may_hold_test_alone_and_is_paired_with_the_model_by_class_name() {
    let kind = vit_data::DatasetKind::Folder;
    let options = vit_data::FolderOptions::default();
    let dir = tmp_dir("folder-eval");
    write_class_folders(&dir.join("val"), &[("dog", 2), ("cat", 3)]);
    let (test, _) = vit_data::load_test_split_with(&kind, Some(&dir), (4, 4), 1, &options).unwrap();
    assert_eq!(test.class_names, ["cat", "dog"]);
    assert_eq!(test.labels, [0, 0, 0, 1, 1]);
    // A model of three classes in another order: cat is its 2, dog its 0.
    let model: Vec<String> = ["dog", "owl", "cat"].map(String::from).to_vec();
    let paired = test.relabel_by_name(&model).unwrap();
    assert_eq!(paired.labels, [2, 2, 2, 0, 0]);
    assert_eq!(paired.class_names, model);
    assert_eq!(paired.image(3).unwrap(), test.image(3).unwrap());
    let err = test.relabel_by_name(&["dog".to_string(), "owl".to_string()]).unwrap_err().to_string();
    assert!(
        err.contains("`cat` is not one of the model's") && err.contains("[cat, dog]") && err.contains("[dog, owl]"),
        "{err}"
    );
    // Without test/ or val/, the seeded share training held out.
    std::fs::remove_dir_all(&dir).unwrap();
    write_class_folders(&dir, &[("a", 10), ("b", 5)]);
    let (held_out, _) = vit_data::load_test_split_with(&kind, Some(&dir), (4, 4), 1, &options).unwrap();
    let (_, test) = vit_data::load_splits(&kind, Some(&dir), (4, 4), 1).unwrap();
    assert_eq!((held_out.labels.clone(), held_out.len()), (test.labels.clone(), 3));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_jpeg_cut_off_is_skipped_when_listed_whether_the_folder_is_streamed_or_not() {
    let dir = tmp_dir("folder-cut-jpeg");
    write_class_folders(&dir, &[("a", 3), ("b", 3)]);
    let img =
        image::RgbImage::from_fn(128, 128, |x, y| image::Rgb([(x * 2) as u8, (y * 2) as u8, ((x * y) % 251) as u8]));
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    // Half a JPEG: its decoder fills the missing lower half with grey instead of failing.
    std::fs::write(dir.join("b").join("cut.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    for stream in [false, true] {
        let options = vit_data::FolderOptions { skip_unreadable: true, stream: Some(stream) };
        let (data, skipped) = vit_data::load_folder_with(&dir, 4, 4, 1, &options).unwrap();
        assert_eq!(data.len(), 6, "streamed: {stream}");
        assert_eq!(skipped.len(), 1, "streamed: {stream}");
        assert!(skipped[0].path.ends_with("b/cut.jpg") && skipped[0].error.contains("cut off"), "{skipped:?}");
        let strict = vit_data::FolderOptions { skip_unreadable: false, stream: Some(stream) };
        let err = vit_data::load_folder_with(&dir, 4, 4, 1, &strict).unwrap_err();
        assert!(matches!(&err, DataError::UnreadableImage { path, .. } if path.ends_with("b/cut.jpg")), "{err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
