//! # vit-data
//!
//! Image classification data for Vision Transformers, with no model or trainer attached:
//! readers for MNIST / Fashion-MNIST IDX files (raw or `.gz`), CIFAR-10/100 binary batches and
//! image folders ([`Dataset`]; corrupt input is an error naming the file and what is wrong),
//! the data sets known by name ([`DatasetKind`], [`load_splits`]), validation splits,
//! augmentation reproducible from a seed ([`augment`]; mixup and cutmix in [`mix`]), and the batch loader that prepares
//! batches on a background thread ([`Loader`]).
//!
//! With the `embedded` feature (on by default), 10,000 real MNIST training images (the first 1,000 of each
//! digit) and the real MNIST test set are compiled in ([`embedded`], 3.1 MB): cut from the
//! canonical MNIST IDX files (decompressed sha256 `ba891046…76db` train images, `65a50cbb…01c5`
//! train labels, `0fa7898d…ce7` test images, `ff7bcfd4…f33f2` test labels) by
//! `data/make_mnist_subset.py`, which is deterministic. sha256 of the files as committed:
//!
//! | file | sha256 |
//! |---|---|
//! | `train-images-idx3-ubyte.gz` | `26caff5ba6f746326c6d53a178f1e53b728f8a72f041746bd77f97880c8960b0` |
//! | `train-labels-idx1-ubyte.gz` | `2c86dff031253db103804c4362d483d164f8981eb0add3f982af362ced9eba3b` |
//! | `t10k-images-idx3-ubyte.gz` | `5634745efa576a17e7d4cf5cd9d09123c75e6538e5114267c2d156edaf519341` |
//! | `t10k-labels-idx1-ubyte.gz` | `ae18e77e031ccde52407f794d123116439864147d33ac992975f85dd4dc42af6` |
//!
//! Load MNIST, hold out a validation split, and iterate augmented batches (with the
//! `embedded` feature this runs anywhere; with a data directory, `load_splits(&DatasetKind::Mnist,
//! Some(dir), ..)` reads the real files):
//!
//! ```
//! # #[cfg(feature = "embedded")] {
//! use std::sync::Arc;
//! use vit_data::augment::{AugmentConfig, Normalizer};
//! use vit_data::{DatasetKind, Loader, Pipeline, load_splits, shuffled};
//!
//! let (train, _test) = load_splits(&DatasetKind::EmbeddedMnist, None, (28, 28), 1)?;
//! assert_eq!(train.class_counts(), vec![1_000; 10]);
//! let (train, val) = train.split_validation(0.1, 7)?;
//! assert_eq!((train.len(), val.len()), (9_000, 1_000));
//! assert_eq!(val.class_counts(), vec![100; 10]); // stratified
//!
//! let pipeline = Pipeline { size: (28, 28), normalizer: Normalizer::fit(&train)? };
//! let augment = AugmentConfig { rotation: 0.05, zoom: 0.1, ..Default::default() };
//! let (seed, epoch) = (7, 1);
//! let order = shuffled(train.len(), seed, epoch);
//! let train = Arc::new(train);
//! let mut batches = Loader::spawn(train, pipeline, order, 256, 0, Some((augment, seed, epoch)))?;
//! let batch = batches.next().expect("a first batch")?;
//! let (images, labels) = batch.to_tensors(&candle_core::Device::Cpu)?;
//! assert_eq!(images.dims(), [256, 28, 28, 1]);
//! assert_eq!(labels.dims(), [256]);
//! assert_eq!(batches.count(), 35); // 9,000 images: 36 batches in all
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod augment;
mod catalog;
mod cifar;
mod classes;
mod dataset;
mod decode;
#[cfg(feature = "embedded")]
pub mod embedded;
mod error;
mod folder;
pub mod idx;
mod loader;
pub mod mix;
mod preprocessing;
mod resize;
mod shuffle;

pub use catalog::{
    DATA_DIR_ENV, DatasetKind, FOLDER_SPLIT_SEED, FOLDER_TEST_FRACTION, class_names, load_splits, load_splits_with,
    load_test_split_with, resolve_dir,
};
pub use cifar::{
    CIFAR10_CLASSES, CIFAR100_COARSE, CIFAR100_FINE, Cifar100Labels, load_cifar10, load_cifar100, parse_cifar10,
    parse_cifar100,
};
pub use classes::{FASHION_MNIST_CLASSES, digit_names};
pub use dataset::Dataset;
pub use decode::{decode_image, read_image};
pub use error::DataError;
pub use folder::{FolderOptions, SkippedImage, load_folder, load_folder_with};
pub use loader::{Batch, Loader, Pipeline};
pub use mix::{Mix, MixKind, mix_images};
pub use preprocessing::{DATA_SIZE_KEY, NORMALIZER_KEY, PREPROCESSING_KEYS, PreparedImage, Preprocessing, RESIZE_KEY};
pub use resize::{Interpolation, ResizeSpec, decode_with};
pub use shuffle::shuffled;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
