//! The MNIST subset compiled into the crate, so the main job runs on any machine without a
//! download. Provenance and checksums: see the crate docs.

use std::path::Path;

use crate::classes::digit_names;
use crate::dataset::Dataset;
use crate::error::DataError;
use crate::idx;

const TRAIN_IMAGES: &[u8] = include_bytes!("../data/mnist-subset/train-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../data/mnist-subset/train-labels-idx1-ubyte.gz");
const TEST_IMAGES: &[u8] = include_bytes!("../data/mnist-subset/t10k-images-idx3-ubyte.gz");
const TEST_LABELS: &[u8] = include_bytes!("../data/mnist-subset/t10k-labels-idx1-ubyte.gz");

fn load(name: &str, images: &'static [u8], labels: &'static [u8], file: &str) -> Result<Dataset, DataError> {
    let images_path = Path::new("<embedded>").join(format!("{file}-images-idx3-ubyte.gz"));
    let labels_path = Path::new("<embedded>").join(format!("{file}-labels-idx1-ubyte.gz"));
    let images = idx::decode_maybe_gz(images.to_vec(), &images_path)?;
    let labels = idx::decode_maybe_gz(labels.to_vec(), &labels_path)?;
    idx::from_bytes(name, &images, &images_path, &labels, &labels_path, digit_names())
}

/// 10,000 real MNIST training images: the first 1,000 of each digit.
pub fn mnist_subset_train() -> Result<Dataset, DataError> {
    load("mnist-subset-train", TRAIN_IMAGES, TRAIN_LABELS, "train")
}

/// The full real MNIST test set, 10,000 images.
pub fn mnist_test() -> Result<Dataset, DataError> {
    load("mnist-test", TEST_IMAGES, TEST_LABELS, "t10k")
}
