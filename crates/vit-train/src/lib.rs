//! # vit-train
//!
//! Train, evaluate and run Vision Transformers built with [`vit_model`]: data sets,
//! augmentation, the training loop, metrics, evaluation, prediction, and the `vit` command.
//!
//! - [`data`]: MNIST and Fashion-MNIST IDX files (raw or `.gz`), CIFAR-10/100 binary batches,
//!   image folders; corrupt input is an error naming the file and what is wrong.
//! - [`augment`]: normalisation with the training split's statistics, resizing, random flip,
//!   rotation and zoom (the Keras example's), random crop; reproducible from a seed.
//! - [`optim`]: AdamW with decoupled weight decay that skips biases, norms, positions and the
//!   class token; warm-up + cosine schedule; global-norm clipping.
//! - [`trainer`]: the loop, with best/last checkpoints written atomically, exact resume
//!   (weights, optimizer, schedule, data order, augmentation and dropout streams), a NaN guard,
//!   `metrics.jsonl` and `curves.png`.
//! - [`recipe`]: TOML recipes (`default`, `mnist`, `fashion-mnist`, `cifar10`, `keras-cifar100`).
//!
//! ## The embedded data set
//!
//! `vit train` with no arguments uses MNIST compiled into the crate (`data/mnist-subset/`):
//! the first 1,000 training images of each digit (10,000 images, file order kept) and the whole
//! real MNIST test set (10,000 images), 3.1 MB in all. They were cut from the canonical MNIST
//! IDX files (decompressed sha256 `ba891046…76db` train images, `65a50cbb…01c5` train labels,
//! `0fa7898d…ce7` test images, `ff7bcfd4…f33f2` test labels) by `data/make_mnist_subset.py`,
//! which is deterministic. sha256 of the files as committed:
//!
//! | file | sha256 |
//! |---|---|
//! | `train-images-idx3-ubyte.gz` | `26caff5ba6f746326c6d53a178f1e53b728f8a72f041746bd77f97880c8960b0` |
//! | `train-labels-idx1-ubyte.gz` | `2c86dff031253db103804c4362d483d164f8981eb0add3f982af362ced9eba3b` |
//! | `t10k-images-idx3-ubyte.gz` | `5634745efa576a17e7d4cf5cd9d09123c75e6538e5114267c2d156edaf519341` |
//! | `t10k-labels-idx1-ubyte.gz` | `ae18e77e031ccde52407f794d123116439864147d33ac992975f85dd4dc42af6` |
//!
//! A test checks that the embedded test set decompresses to the canonical MNIST test files.
//!
//! ```
//! use vit_train::data::{embedded, Dataset};
//! use vit_train::augment::{AugmentConfig, Normalizer};
//! use vit_train::loader::Pipeline;
//!
//! let train: Dataset = embedded::mnist_subset_train()?;
//! assert_eq!(train.len(), 10_000);
//! assert_eq!(train.class_counts(), vec![1_000; 10]);
//! let pipeline = Pipeline { size: (28, 28), normalizer: Normalizer::fit(&train) };
//! let batch = pipeline.batch(&train, &[0, 1, 2], Some((&AugmentConfig { zoom: 0.1, ..Default::default() }, 7, 1)));
//! assert_eq!(batch.images.len(), 3 * 28 * 28);
//! # Ok::<(), vit_train::data::DataError>(())
//! ```

pub mod augment;
pub mod bench;
pub mod data;
pub mod download;
mod error;
pub mod loader;
pub mod metadata;
pub mod metrics;
pub mod optim;
pub mod plot;
pub mod predict;
pub mod recipe;
pub mod trainer;

pub use error::TrainError;
pub use recipe::{Precision, Recipe};
pub use trainer::{EpochRecord, TrainOptions, TrainOutcome, TrainReport, evaluate, train};
