//! MNIST-style IDX files, raw or gzipped (detected from the content, not the name).

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dataset::Dataset;
use crate::error::DataError;

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Reads a whole file, un-gzipping it if it starts with the gzip magic bytes.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_maybe_gz(raw, path)
}

/// Un-gzips `raw` if it is gzip data; `path` is used in errors. The output is bounded by the
/// size the gzip trailer declares (the uncompressed size modulo 2^32, so files up to 4 GiB):
/// a stream that inflates past it is an error, not an unbounded allocation.
pub fn decode_maybe_gz(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>, DataError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let malformed = |message: String| DataError::Malformed { path: path.into(), message };
    let declared = match raw.len().checked_sub(4).and_then(|at| raw.get(at..)) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]) as usize,
        _ => return Err(malformed("gzip data too short for its trailer".into())),
    };
    // The trailer is not trusted for the allocation: a few bytes can declare 4 GiB.
    let mut out = Vec::with_capacity(declared.min(raw.len().saturating_mul(16)));
    let mut decoder = flate2::read::GzDecoder::new(&raw[..]).take(declared as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| malformed(format!("corrupt or truncated gzip data: {e}")))?;
    if out.len() != declared {
        return Err(malformed(format!(
            "gzip data inflates to {}{} bytes, but its trailer declares {declared}",
            out.len(),
            if out.len() > declared { " or more" } else { "" }
        )));
    }
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize, path: &Path) -> Result<u32, DataError> {
    bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or_else(|| DataError::WrongLength {
        path: path.into(),
        what: "IDX header",
        expected: at + 4,
        found: bytes.len(),
    })
}

/// Parses IDX image bytes: `(count, rows, cols, pixels)`.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<(usize, usize, usize, Vec<u8>), DataError> {
    let magic = be_u32(bytes, 0, path)?;
    if magic != IMAGES_MAGIC {
        return Err(DataError::BadMagic {
            path: path.into(),
            expected: IMAGES_MAGIC,
            found: magic,
            what: "IDX images: u8, 3 dimensions",
        });
    }
    let (n, rows, cols) =
        (be_u32(bytes, 4, path)? as usize, be_u32(bytes, 8, path)? as usize, be_u32(bytes, 12, path)? as usize);
    if rows == 0 || cols == 0 {
        return Err(DataError::Malformed {
            path: path.into(),
            message: format!("the header declares {rows}x{cols} images: both sides must be at least 1"),
        });
    }
    let expected = n.checked_mul(rows).and_then(|p| p.checked_mul(cols)).and_then(|p| p.checked_add(16));
    let expected = expected.ok_or_else(|| DataError::Malformed {
        path: path.into(),
        message: format!("the header declares {n} images of {rows}x{cols}, more bytes than can be addressed"),
    })?;
    if bytes.len() != expected {
        return Err(DataError::WrongLength { path: path.into(), what: "IDX images", expected, found: bytes.len() });
    }
    Ok((n, rows, cols, bytes[16..].to_vec()))
}

/// Parses IDX label bytes.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u32>, DataError> {
    let magic = be_u32(bytes, 0, path)?;
    if magic != LABELS_MAGIC {
        return Err(DataError::BadMagic {
            path: path.into(),
            expected: LABELS_MAGIC,
            found: magic,
            what: "IDX labels: u8, 1 dimension",
        });
    }
    let n = be_u32(bytes, 4, path)? as usize;
    let expected = n.saturating_add(8);
    if bytes.len() != expected {
        return Err(DataError::WrongLength { path: path.into(), what: "IDX labels", expected, found: bytes.len() });
    }
    Ok(bytes[8..].iter().map(|&b| u32::from(b)).collect())
}

/// Builds a data set from an image file and a label file.
pub fn load_pair(
    name: &str,
    images_path: &Path,
    labels_path: &Path,
    class_names: Vec<String>,
) -> Result<Dataset, DataError> {
    let images = read_maybe_gz(images_path)?;
    let labels = read_maybe_gz(labels_path)?;
    from_bytes(name, &images, images_path, &labels, labels_path, class_names)
}

/// Builds a data set from IDX bytes already in memory.
pub fn from_bytes(
    name: &str,
    images: &[u8],
    images_path: &Path,
    labels: &[u8],
    labels_path: &Path,
    class_names: Vec<String>,
) -> Result<Dataset, DataError> {
    let (n, rows, cols, pixels) = parse_images(images, images_path)?;
    let labels = parse_labels(labels, labels_path)?;
    if labels.len() != n {
        return Err(DataError::CountMismatch {
            images: images_path.into(),
            image_count: n,
            labels: labels_path.into(),
            label_count: labels.len(),
        });
    }
    Dataset::new(name, pixels, labels, (rows, cols, 1), class_names, labels_path)
}

/// Which split of an IDX data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training records.
    Train,
    /// The test records.
    Test,
}

/// The four canonical file names (without `.gz`).
pub fn canonical_names(split: Split) -> [&'static str; 2] {
    match split {
        Split::Train => ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
        Split::Test => ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    }
}

/// Finds `base`, `base.gz`, or the dotted variant (`train-images.idx3-ubyte`) in `dir`.
fn find(dir: &Path, base: &str) -> Option<PathBuf> {
    let dotted = base.replacen("-idx", ".idx", 1);
    [format!("{base}.gz"), base.to_string(), format!("{dotted}.gz"), dotted]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Loads one split of MNIST or Fashion-MNIST from `dir` (raw or `.gz` files).
pub fn load_dir(dir: &Path, split: Split, name: &str, class_names: Vec<String>) -> Result<Dataset, DataError> {
    let [images, labels] = canonical_names(split);
    match (find(dir, images), find(dir, labels)) {
        (Some(i), Some(l)) => load_pair(&format!("{name}-{}", split_name(split)), &i, &l, class_names),
        (i, l) => {
            let missing: Vec<String> = [(i, images), (l, labels)]
                .into_iter()
                .filter(|(found, _)| found.is_none())
                .map(|(_, n)| format!("{n}(.gz)"))
                .collect();
            Err(DataError::MissingFiles {
                dir: dir.into(),
                missing: missing.join(", "),
                hint: format!("put the four {name} IDX files there, or run `vit download {name} --dir <DIR>`"),
            })
        }
    }
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}
