//! Downloads of the public data sets, for users who are online.
//!
//! Files are fetched over https with the system's `curl` (archives unpacked with `tar`), so the
//! crate carries no HTTP or TLS stack. Every file is checked against a checksum fixed here: the
//! sha256 of MNIST's decompressed IDX files, and the md5 that the authors of Fashion-MNIST and
//! CIFAR publish for their files; then the readers parse everything and the record counts must
//! be the published ones. Offline, the error says which files are expected and where to put
//! them. Tests never call it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, anyhow, bail};
use md5::Md5;
use sha2::{Digest, Sha256};
use vit_data::{Cifar100Labels, DataError, DatasetKind, digit_names, idx, load_cifar10, load_cifar100};

/// How a fetched file is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checksum {
    /// sha256 of the content after gunzip.
    ContentSha256(&'static str),
    /// md5 of the file as downloaded.
    FileMd5(&'static str),
}

/// A file to fetch: its name in the cache directory, where it comes from, and its checksum.
struct Remote {
    file: &'static str,
    url: &'static str,
    checksum: Checksum,
}

const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];
const MNIST_MIRROR: &str = "https://ossci-datasets.s3.amazonaws.com/mnist/";
/// Zalando's repository (their S3 website endpoint serves plain http only).
const FASHION_MIRROR: &str = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/";
const CIFAR_MIRROR: &str = "https://www.cs.toronto.edu/~kriz/";

fn remotes(kind: &DatasetKind) -> Vec<Remote> {
    let idx_files = |url: &'static str, sums: [Checksum; 4]| {
        IDX_FILES.into_iter().zip(sums).map(|(file, checksum)| Remote { file, url, checksum }).collect::<Vec<_>>()
    };
    match kind {
        DatasetKind::Mnist => idx_files(
            MNIST_MIRROR,
            [
                Checksum::ContentSha256("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
                Checksum::ContentSha256("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
                Checksum::ContentSha256("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
                Checksum::ContentSha256("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
            ],
        ),
        // The md5 sums of Fashion-MNIST's README.
        DatasetKind::FashionMnist => idx_files(
            FASHION_MIRROR,
            [
                Checksum::FileMd5("8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                Checksum::FileMd5("25c81989df183df01b3e8a0aad5dffbe"),
                Checksum::FileMd5("bef4ecab320f06d8554ea6380940ec79"),
                Checksum::FileMd5("bb300cfdad3c16e7a12a480ee83cd310"),
            ],
        ),
        // The md5 sums of the CIFAR page.
        DatasetKind::Cifar10 => vec![Remote {
            file: "cifar-10-binary.tar.gz",
            url: CIFAR_MIRROR,
            checksum: Checksum::FileMd5("c32a1d4ab5d03f1284b67883e8d87530"),
        }],
        DatasetKind::Cifar100 => vec![Remote {
            file: "cifar-100-binary.tar.gz",
            url: CIFAR_MIRROR,
            checksum: Checksum::FileMd5("03b5dce01913d631647c71ecec9e9cb8"),
        }],
        DatasetKind::EmbeddedMnist | DatasetKind::Folder => vec![],
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The checksum `remote` has, computed over `path`.
fn checksum_of(path: &Path, checksum: Checksum) -> Result<String> {
    Ok(match checksum {
        Checksum::ContentSha256(_) => hex(&Sha256::digest(idx::read_maybe_gz(path)?)),
        Checksum::FileMd5(_) => hex(&Md5::digest(std::fs::read(path).map_err(|e| anyhow!("{}: {e}", path.display()))?)),
    })
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
        let (what, want) = match remote.checksum {
            Checksum::ContentSha256(sum) => ("sha256 of the content", sum),
            Checksum::FileMd5(sum) => ("md5", sum),
        };
        let got = checksum_of(&path, remote.checksum)?;
        if got != want {
            let _ = std::fs::remove_file(&path);
            bail!("{}: {what} is {got}, expected {want}; removed", path.display());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_downloadable_file_comes_over_https_with_a_fixed_checksum() {
        for kind in crate::args::DOWNLOADABLE {
            let files = remotes(&kind);
            assert!(!files.is_empty(), "{kind:?}");
            for remote in files {
                assert!(remote.url.starts_with("https://"), "{}: {}", remote.file, remote.url);
                let (Checksum::ContentSha256(sum) | Checksum::FileMd5(sum)) = remote.checksum;
                let length = if matches!(remote.checksum, Checksum::FileMd5(_)) { 32 } else { 64 };
                assert!(sum.len() == length && sum.chars().all(|c| c.is_ascii_hexdigit()), "{}", remote.file);
            }
        }
    }

    #[test]
    fn checksums_are_computed_as_published() {
        let dir = std::env::temp_dir().join(format!("vit-download-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("abc");
        std::fs::write(&path, b"abc").unwrap();
        // RFC 1321 and FIPS 180-2 test vectors.
        assert_eq!(checksum_of(&path, Checksum::FileMd5("")).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            checksum_of(&path, Checksum::ContentSha256("")).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
