//! The data sets known by name: where each lives under a data directory, and how to load its
//! training and test splits.

use std::path::{Path, PathBuf};

use crate::cifar::{Cifar100Labels, load_cifar10, load_cifar100};
use crate::classes::{FASHION_MNIST_CLASSES, digit_names};
use crate::dataset::Dataset;
use crate::error::DataError;
use crate::folder::load_folder;
use crate::idx;

/// Environment variable naming the data directory when no `--data-dir` is given.
pub const DATA_DIR_ENV: &str = "VIT_DATA_DIR";

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
    /// Every kind, in the order the tools list them.
    pub const ALL: [Self; 6] =
        [Self::EmbeddedMnist, Self::Mnist, Self::FashionMnist, Self::Cifar10, Self::Cifar100, Self::Folder];

    /// The name as written on the command line and in recipes (`fashion-mnist`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::EmbeddedMnist => "embedded-mnist",
            Self::Mnist => "mnist",
            Self::FashionMnist => "fashion-mnist",
            Self::Cifar10 => "cifar10",
            Self::Cifar100 => "cifar100",
            Self::Folder => "folder",
        }
    }

    /// Parses a name as written on the command line or in a recipe.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
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
        return embedded_mnist();
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
            // The held-out images as people lay them out: `test/`, or `val/` (ImageNet's).
            let held_out = ["test", "val"].iter().map(|s| dir.join(s)).find(|p| p.is_dir()).ok_or_else(|| {
                DataError::MissingFiles {
                    dir: dir.clone(),
                    missing: "a `test/` or `val/` folder beside `train/`".into(),
                    hint: "lay the images out as <dir>/train/<class>/<image> and <dir>/test/<class>/<image>".into(),
                }
            })?;
            let (train, test) =
                (load_folder(&dir.join("train"), h, w, channels)?, load_folder(&held_out, h, w, channels)?);
            if train.class_names != test.class_names {
                return Err(DataError::Malformed {
                    path: held_out,
                    message: format!("its classes {:?} are not train/'s {:?}", test.class_names, train.class_names),
                });
            }
            (train, test)
        }
    })
}

#[cfg(feature = "embedded")]
fn embedded_mnist() -> Result<(Dataset, Dataset), DataError> {
    Ok((crate::embedded::mnist_subset_train()?, crate::embedded::mnist_test()?))
}

#[cfg(not(feature = "embedded"))]
fn embedded_mnist() -> Result<(Dataset, Dataset), DataError> {
    Err(DataError::MissingFiles {
        dir: PathBuf::from("<embedded>"),
        missing: "the embedded MNIST subset".into(),
        hint: "this build leaves it out: build vit-data with its `embedded` feature (the `vit` command has it)".into(),
    })
}
