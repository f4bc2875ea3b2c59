//! Data sets: readers for MNIST/Fashion-MNIST IDX files, CIFAR-10/100 binary batches and image
//! folders, the embedded MNIST subset, and where to find each on disk.

mod cifar;
mod dataset;
pub mod embedded;
mod error;
mod folder;
pub mod idx;

use std::path::{Path, PathBuf};

pub use cifar::{
    CIFAR10_CLASSES, CIFAR100_COARSE, CIFAR100_FINE, Cifar100Labels, load_cifar10, load_cifar100, parse_cifar10,
    parse_cifar100,
};
pub use dataset::Dataset;
pub use error::DataError;
pub use folder::{load_folder, read_image};

/// Environment variable naming the data directory when no `--data-dir` is given.
pub const DATA_DIR_ENV: &str = "VIT_DATA_DIR";

/// The digits as class names.
pub fn digit_names() -> Vec<String> {
    (0..10).map(|d| d.to_string()).collect()
}

/// Fashion-MNIST's classes in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// The data sets the tools know by name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// The MNIST subset compiled into the crate (train) and the real MNIST test set.
    EmbeddedMnist,
    /// MNIST IDX files.
    Mnist,
    /// Fashion-MNIST IDX files.
    FashionMnist,
    /// CIFAR-10 binary batches.
    Cifar10,
    /// CIFAR-100 binary files, fine labels.
    Cifar100,
    /// An image folder with one sub-folder per class.
    Folder,
}

impl DatasetKind {
    /// Parses a name as written on the command line or in a recipe.
    pub fn parse(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }

    /// The sub-directory of the data directory where it is looked for first.
    pub fn default_subdir(&self) -> &'static str {
        match self {
            Self::EmbeddedMnist => "",
            Self::Mnist => "mnist",
            Self::FashionMnist => "fashion-mnist",
            Self::Cifar10 => "cifar-10-batches-bin",
            Self::Cifar100 => "cifar-100-binary",
            Self::Folder => "",
        }
    }
}

/// Where a data set lives: `data_dir/<default subdir>` if that exists, else `data_dir` itself.
/// `data_dir` comes from the caller (a flag) or from `VIT_DATA_DIR`.
pub fn resolve_dir(kind: &DatasetKind, data_dir: Option<&Path>) -> Result<PathBuf, DataError> {
    let base = match data_dir {
        Some(d) => d.to_path_buf(),
        None => match std::env::var_os(DATA_DIR_ENV) {
            Some(d) => PathBuf::from(d),
            None => {
                return Err(DataError::MissingFiles {
                    dir: PathBuf::from("."),
                    missing: format!("a data directory for {kind:?}"),
                    hint: format!("pass --data-dir <DIR> or set {DATA_DIR_ENV}"),
                });
            }
        },
    };
    let sub = base.join(kind.default_subdir());
    Ok(if sub.is_dir() { sub } else { base })
}

/// Loads the training and test splits of a named data set. `image_size` and `channels` are
/// used by image folders (`dir/train` and `dir/test`), which are resized on load.
pub fn load_splits(
    kind: &DatasetKind,
    data_dir: Option<&Path>,
    image_size: (usize, usize),
    channels: usize,
) -> Result<(Dataset, Dataset), DataError> {
    if *kind == DatasetKind::EmbeddedMnist {
        return Ok((embedded::mnist_subset_train()?, embedded::mnist_test()?));
    }
    let dir = resolve_dir(kind, data_dir)?;
    let fashion = || FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Ok(match kind {
        DatasetKind::EmbeddedMnist => unreachable!("handled above"),
        DatasetKind::Mnist => (
            idx::load_dir(&dir, idx::Split::Train, "mnist", digit_names())?,
            idx::load_dir(&dir, idx::Split::Test, "mnist", digit_names())?,
        ),
        DatasetKind::FashionMnist => (
            idx::load_dir(&dir, idx::Split::Train, "fashion-mnist", fashion())?,
            idx::load_dir(&dir, idx::Split::Test, "fashion-mnist", fashion())?,
        ),
        DatasetKind::Cifar10 => (load_cifar10(&dir, true)?, load_cifar10(&dir, false)?),
        DatasetKind::Cifar100 => {
            (load_cifar100(&dir, true, Cifar100Labels::Fine)?, load_cifar100(&dir, false, Cifar100Labels::Fine)?)
        }
        DatasetKind::Folder => {
            let (h, w) = image_size;
            (load_folder(&dir.join("train"), h, w, channels)?, load_folder(&dir.join("test"), h, w, channels)?)
        }
    })
}
