//! Downloads of the public data sets, for users who are online.
//!
//! Files are fetched with the system's `curl` (archives unpacked with `tar`), so the crate
//! carries no HTTP or TLS stack. MNIST is checked against the published sha256 of its
//! decompressed IDX files; the others are checked by parsing them and counting their records.
//! Offline, the error says which files are expected and where to put them. Tests never call it.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use anyhow::{Result, anyhow, bail};
use vit_data::{Cifar100Labels, DataError, DatasetKind, digit_names, idx, load_cifar10, load_cifar100};

/// A file to fetch: its name in the cache directory, where it comes from, and the sha256 of its
/// content after gunzip, where a published one exists.
struct Remote {
    file: &'static str,
    url: &'static str,
    content_sha256: Option<&'static str>,
}

const MNIST_MIRROR: &str = "https://ossci-datasets.s3.amazonaws.com/mnist/";
const FASHION_MIRROR: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";

fn remotes(kind: &DatasetKind) -> Vec<Remote> {
    let idx_files = |mirror: &'static str, sums: [Option<&'static str>; 4]| {
        let names = [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ];
        names
            .into_iter()
            .zip(sums)
            .map(|(file, content_sha256)| Remote { file, url: mirror, content_sha256 })
            .collect::<Vec<_>>()
    };
    match kind {
        DatasetKind::Mnist => idx_files(
            MNIST_MIRROR,
            [
                Some("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
                Some("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
                Some("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
                Some("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
            ],
        ),
        DatasetKind::FashionMnist => idx_files(FASHION_MIRROR, [None; 4]),
        DatasetKind::Cifar10 => vec![Remote {
            file: "cifar-10-binary.tar.gz",
            url: "https://www.cs.toronto.edu/~kriz/",
            content_sha256: None,
        }],
        DatasetKind::Cifar100 => vec![Remote {
            file: "cifar-100-binary.tar.gz",
            url: "https://www.cs.toronto.edu/~kriz/",
            content_sha256: None,
        }],
        DatasetKind::EmbeddedMnist | DatasetKind::Folder => vec![],
    }
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn run(command: &mut Command, what: &str, expected: &str, dir: &Path) -> Result<()> {
    let status = command.status();
    match status {
        Ok(s) if s.success() => Ok(()),
        other => Err(anyhow::Error::from(DataError::MissingFiles {
            dir: dir.into(),
            missing: expected.into(),
            hint: format!(
                "{what} failed ({}); offline, download them elsewhere and put them in {}",
                match other {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                },
                dir.display()
            ),
        })),
    }
}

/// Downloads `kind` into `cache/<its folder>` and checks it; returns the folder to pass as
/// `--data-dir` (the cache). Files already present and valid are not fetched again.
pub fn download(kind: &DatasetKind, cache: &Path) -> Result<PathBuf> {
    let files = remotes(kind);
    if files.is_empty() {
        bail!(
            "{}: {} is not downloadable (embedded-mnist is built in; folders are your own)",
            cache.display(),
            kind.name()
        );
    }
    let expected: Vec<&str> = files.iter().map(|r| r.file).collect();
    let archive = matches!(kind, DatasetKind::Cifar10 | DatasetKind::Cifar100);
    let dir = if archive { cache.to_path_buf() } else { cache.join(kind.default_subdir()) };
    std::fs::create_dir_all(&dir).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    for remote in &files {
        let path = dir.join(remote.file);
        if !path.exists() {
            let partial = dir.join(format!("{}.part", remote.file));
            let url = format!("{}{}", remote.url, remote.file);
            eprintln!("downloading {url}");
            run(
                Command::new("curl").args(["-fL", "--retry", "3", "-o"]).arg(&partial).arg(&url),
                &format!("curl {url}"),
                &expected.join(", "),
                &dir,
            )?;
            std::fs::rename(&partial, &path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        }
        if let Some(want) = remote.content_sha256 {
            let content = idx::read_maybe_gz(&path)?;
            let got = hex(&content);
            if got != want {
                let _ = std::fs::remove_file(&path);
                bail!("{}: sha256 of the content is {got}, expected {want}; removed", path.display());
            }
        }
        if archive {
            let unpacked = dir.join(kind.default_subdir());
            if !unpacked.is_dir() {
                run(Command::new("tar").arg("-xzf").arg(&path).arg("-C").arg(&dir), "tar -xzf", remote.file, &dir)?;
            }
        }
    }
    // Structural check: the readers parse every file and the record counts are the published ones.
    let counts = match kind {
        DatasetKind::Mnist | DatasetKind::FashionMnist => {
            let d = cache.join(kind.default_subdir());
            let train = idx::load_dir(&d, idx::Split::Train, "check", digit_names())?;
            let test = idx::load_dir(&d, idx::Split::Test, "check", digit_names())?;
            (train.len(), test.len(), 60_000, 10_000)
        }
        DatasetKind::Cifar10 => {
            let d = cache.join(kind.default_subdir());
            (load_cifar10(&d, true)?.len(), load_cifar10(&d, false)?.len(), 50_000, 10_000)
        }
        DatasetKind::Cifar100 => {
            let d = cache.join(kind.default_subdir());
            let (a, b) =
                (load_cifar100(&d, true, Cifar100Labels::Fine)?, load_cifar100(&d, false, Cifar100Labels::Fine)?);
            (a.len(), b.len(), 50_000, 10_000)
        }
        DatasetKind::EmbeddedMnist | DatasetKind::Folder => unreachable!("rejected above"),
    };
    if (counts.0, counts.1) != (counts.2, counts.3) {
        bail!(
            "{}: found {} train / {} test records, expected {} / {}",
            dir.display(),
            counts.0,
            counts.1,
            counts.2,
            counts.3
        );
    }
    Ok(cache.to_path_buf())
}
