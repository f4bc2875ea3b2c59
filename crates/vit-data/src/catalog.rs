//! The data sets known by name: where each lives under a data directory, and how to load its
//! training and test splits.

use std::path::{Path, PathBuf};

use crate::cifar::{Cifar100Labels, load_cifar10, load_cifar100};
use crate::classes::{FASHION_MNIST_CLASSES, digit_names};
use crate::dataset::Dataset;
use crate::error::DataError;
use crate::folder::{FolderOptions, SkippedImage, class_folders, folder_names, load_folder_with};
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

/// The class names of a named data set, in label order, without loading its images: of an
/// image folder, its class folders (those of `train/` when it has one); of the others, their
/// published classes.
pub fn class_names(kind: &DatasetKind, data_dir: Option<&Path>) -> Result<Vec<String>, DataError> {
    let owned = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
    Ok(match kind {
        DatasetKind::EmbeddedMnist | DatasetKind::Mnist => digit_names(),
        DatasetKind::FashionMnist => owned(&FASHION_MNIST_CLASSES),
        DatasetKind::Cifar10 => owned(&crate::cifar::CIFAR10_CLASSES),
        DatasetKind::Cifar100 => owned(&crate::cifar::CIFAR100_FINE),
        DatasetKind::Folder => {
            let dir = resolve_dir(kind, data_dir)?;
            let train = dir.join("train");
            folder_names(&class_folders(if train.is_dir() { &train } else { &dir })?)
        }
    })
}

/// The share of a single image folder (class folders, no `train/`) held out as its test split.
pub const FOLDER_TEST_FRACTION: f64 = 0.2;
/// The seed of that split: fixed, so that training, `vit eval` and every later run hold out the
/// same images whatever their own seed.
pub const FOLDER_SPLIT_SEED: u64 = 0x5eed_f01d;

/// Loads the training and test splits of a named data set. `image_size` and `channels` are
/// used by image folders, which are resized on load: `dir/train` and `dir/test` (or `dir/val`),
/// or a single `dir/<class>/<image>` split into train and test by a stratified, seeded split
/// ([`FOLDER_TEST_FRACTION`], [`FOLDER_SPLIT_SEED`]).
pub fn load_splits(
    kind: &DatasetKind,
    data_dir: Option<&Path>,
    image_size: (usize, usize),
    channels: usize,
) -> Result<(Dataset, Dataset), DataError> {
    let (train, test, _) = load_splits_with(kind, data_dir, image_size, channels, &FolderOptions::default())?;
    Ok((train, test))
}

/// [`load_splits`] with the options of image folders; also returns the images skipped.
pub fn load_splits_with(
    kind: &DatasetKind,
    data_dir: Option<&Path>,
    image_size: (usize, usize),
    channels: usize,
    folder: &FolderOptions,
) -> Result<(Dataset, Dataset, Vec<SkippedImage>), DataError> {
    if *kind == DatasetKind::EmbeddedMnist {
        let (train, test) = embedded_mnist()?;
        return Ok((train, test, Vec::new()));
    }
    if *kind == DatasetKind::Folder {
        return load_image_folder(&resolve_dir(kind, data_dir)?, image_size, channels, folder);
    }
    let dir = resolve_dir(kind, data_dir)?;
    let fashion = || FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Ok(match kind {
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
        DatasetKind::EmbeddedMnist | DatasetKind::Folder => unreachable!("handled above"),
    })
    .map(|(train, test)| (train, test, Vec::new()))
}

/// An image folder as people have it: `train/` beside `test/` (or `val/`), or class folders
/// alone, split by [`FOLDER_TEST_FRACTION`] and [`FOLDER_SPLIT_SEED`].
fn load_image_folder(
    dir: &Path,
    (h, w): (usize, usize),
    channels: usize,
    options: &FolderOptions,
) -> Result<(Dataset, Dataset, Vec<SkippedImage>), DataError> {
    let train_dir = dir.join("train");
    if !train_dir.is_dir() {
        let (all, skipped) = load_folder_with(dir, h, w, channels, options)?;
        check_classes_to_learn(&all, dir)?;
        let (mut train, mut test) = all.split_validation(FOLDER_TEST_FRACTION, FOLDER_SPLIT_SEED)?;
        train.name = format!("{}-train", all.name);
        test.name = format!("{}-test", all.name);
        return Ok((train, test, skipped));
    }
    let held_out = held_out_dir(dir).ok_or_else(|| DataError::MissingFiles {
        dir: dir.into(),
        missing: "a `test/` or `val/` folder beside `train/`".into(),
        hint: "lay the images out as <dir>/train/<class>/<image> and <dir>/test/<class>/<image>, or as \
                   <dir>/<class>/<image> to hold out a seeded 20% as the test split"
            .into(),
    })?;
    let (train, mut skipped) = load_folder_with(&train_dir, h, w, channels, options)?;
    check_classes_to_learn(&train, &train_dir)?;
    let (test, more) = load_folder_with(&held_out, h, w, channels, options)?;
    skipped.extend(more);
    if train.class_names != test.class_names {
        return Err(DataError::Malformed {
            path: held_out,
            message: format!("its classes {:?} are not train/'s {:?}", test.class_names, train.class_names),
        });
    }
    Ok((train, test, skipped))
}

/// The held-out images' folder as people lay it out: `dir/test`, else `dir/val` (ImageNet's).
fn held_out_dir(dir: &Path) -> Option<PathBuf> {
    ["test", "val"].iter().map(|s| dir.join(s)).find(|p| p.is_dir())
}

/// Errs unless the training images of `dir` fall in at least two classes: with one, every
/// prediction is right and the run would report 100%.
fn check_classes_to_learn(train: &Dataset, dir: &Path) -> Result<(), DataError> {
    if train.num_classes() >= 2 {
        return Ok(());
    }
    Err(DataError::Malformed {
        path: dir.into(),
        message: format!(
            "holds one class folder ({}): a classifier learns to tell at least two classes apart; lay the images out \
             as <dir>/<class>/<image> with a folder per class",
            train.class_names.join(", ")
        ),
    })
}

/// The test split of a named data set alone, as `vit eval` takes it: of an image folder, its
/// `test/` (or `val/`) folder when it has one, with or without `train/` beside it, else the
/// seeded share of its class folders that training held out ([`load_splits`]); of the other
/// data sets, their test split. Also returns the images skipped.
pub fn load_test_split_with(
    kind: &DatasetKind,
    data_dir: Option<&Path>,
    image_size: (usize, usize),
    channels: usize,
    folder: &FolderOptions,
) -> Result<(Dataset, Vec<SkippedImage>), DataError> {
    if *kind == DatasetKind::Folder {
        let dir = resolve_dir(kind, data_dir)?;
        if let Some(held_out) = held_out_dir(&dir) {
            return load_folder_with(&held_out, image_size.0, image_size.1, channels, folder);
        }
    }
    let (_, test, skipped) = load_splits_with(kind, data_dir, image_size, channels, folder)?;
    Ok((test, skipped))
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
