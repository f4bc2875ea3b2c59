//! An image folder: one sub-folder per class, any format the `image` crate reads.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dataset::Dataset;
use crate::decode::{complete_image, read_image};
use crate::error::DataError;

/// Whether a folder's file is one of its images: not hidden (`.DS_Store`), with the extension
/// of a format this crate decodes (`png`, `jpg`, `jpeg`, `bmp`, `gif`, any case). Other files
/// (notes, `Thumbs.db`, labels) are not images and are passed over.
fn is_image_file(path: &Path) -> bool {
    let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    !hidden && matches!(extension.as_deref(), Some("png" | "jpg" | "jpeg" | "bmp" | "gif"))
}

/// Loads `root/<class>/<image>` for every class folder (sorted by name), resizing every image
/// to `height x width x channels`. Class names are the folder names; files that are no images
/// by name are passed over, and an image that does not decode is an error naming it.
pub fn load_folder(root: &Path, height: usize, width: usize, channels: usize) -> Result<Dataset, DataError> {
    Ok(load_folder_with(root, height, width, channels, &FolderOptions::default())?.0)
}

/// How an image folder is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FolderOptions {
    /// Leave out images that cannot be read or decoded (each returned with its error) instead
    /// of failing on the first.
    pub skip_unreadable: bool,
    /// Keep the images in their files and decode them as batches are made, instead of
    /// decoding them all into memory: `Some(true)` always, `Some(false)` never, `None` when
    /// the decoded images would take more than half the memory available.
    pub stream: Option<bool>,
}

/// The class folders of `root`, sorted by name: the classes in label order.
pub(crate) fn class_folders(root: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| DataError::io(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::MissingFiles {
            dir: root.into(),
            missing: "class sub-folders".into(),
            hint: "lay the images out as <dir>/<class name>/<image file>".into(),
        });
    }
    Ok(classes)
}

/// The folders' names.
pub(crate) fn folder_names(folders: &[PathBuf]) -> Vec<String> {
    folders.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect()
}

/// Memory the system could give this process now (Linux: `MemAvailable`), if known.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// An image left out by [`FolderOptions::skip_unreadable`], and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedImage {
    /// The file.
    pub path: PathBuf,
    /// What reading or decoding it said.
    pub error: String,
}

/// [`load_folder`] with `options`; also returns the images it skipped, in file order.
pub fn load_folder_with(
    root: &Path,
    height: usize,
    width: usize,
    channels: usize,
    options: &FolderOptions,
) -> Result<(Dataset, Vec<SkippedImage>), DataError> {
    let classes = class_folders(root)?;
    let class_names = folder_names(&classes);
    let mut listed: Vec<(PathBuf, u32)> = Vec::new();
    for (label, dir) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| DataError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image_file(p))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(DataError::Malformed {
                path: dir.clone(),
                message: "this class folder holds no images (png, jpg, jpeg, bmp, gif): fill it or remove it".into(),
            });
        }
        listed.extend(files.into_iter().map(|f| (f, label as u32)));
    }
    let name = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "folder".into());
    let decoded_bytes = (listed.len() as u64).saturating_mul((height * width * channels) as u64);
    let stream = options.stream.unwrap_or_else(|| available_memory().is_some_and(|free| decoded_bytes > free / 2));
    if stream {
        return stream_folder(name, listed, (height, width, channels), (&classes, class_names), root, options);
    }
    // Decoded on every core (decoding, not reading, is the cost), in the listed order; the
    // first unreadable file in that order is the error.
    let decoded: Vec<Result<Vec<u8>, DataError>> =
        listed.par_iter().map(|(file, _)| read_image(file, height, width, channels)).collect();
    let mut images = Vec::with_capacity(listed.len() * height * width * channels);
    let mut labels = Vec::with_capacity(listed.len());
    let mut skipped = Vec::new();
    for (pixels, (file, label)) in decoded.into_iter().zip(&listed) {
        match pixels {
            Ok(pixels) => {
                images.extend(pixels);
                labels.push(*label);
            }
            Err(e) if options.skip_unreadable => {
                skipped.push(SkippedImage { path: file.clone(), error: e.to_string() })
            }
            Err(e) => return Err(e),
        }
    }
    check_every_class_readable(&labels, &classes, &skipped)?;
    Ok((Dataset::new(name, images, labels, (height, width, channels), class_names, root)?, skipped))
}

/// The listed images as a streamed data set: each file's header is read now (on every core),
/// so that a file that is no image is found before training starts; the pixels are decoded
/// when a batch needs them.
fn stream_folder(
    name: String,
    listed: Vec<(PathBuf, u32)>,
    shape: (usize, usize, usize),
    (classes, class_names): (&[PathBuf], Vec<String>),
    root: &Path,
    options: &FolderOptions,
) -> Result<(Dataset, Vec<SkippedImage>), DataError> {
    let header = |path: &Path| -> Result<(), DataError> {
        let unreadable = |message: String| DataError::UnreadableImage { path: path.into(), message };
        // The whole file is read (not decoded), so that one cut off is found now, as decoding
        // it would find it, and skipped with the others when skipping is asked for.
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let reader = complete_image(&bytes, path)?;
        let (w, h) = reader.into_dimensions().map_err(|e| unreadable(e.to_string()))?;
        if w == 0 || h == 0 || w > 1 << 13 || h > 1 << 13 {
            return Err(unreadable(format!("{w}x{h} pixels: each side must be 1 to 8192")));
        }
        Ok(())
    };
    let checked: Vec<Result<(), DataError>> = listed.par_iter().map(|(file, _)| header(file)).collect();
    let (mut files, mut labels, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for (outcome, (file, label)) in checked.into_iter().zip(listed) {
        match outcome {
            Ok(()) => {
                files.push(file);
                labels.push(label);
            }
            Err(e) if options.skip_unreadable => skipped.push(SkippedImage { path: file, error: e.to_string() }),
            Err(e) => return Err(e),
        }
    }
    check_every_class_readable(&labels, classes, &skipped)?;
    Ok((Dataset::from_files(name, files, labels, shape, class_names, root)?, skipped))
}

/// Errs when a class kept none of its images (all skipped as unreadable): a class that
/// cannot be learned or scored, named by its folder, with the first of its files and why it
/// could not be read.
fn check_every_class_readable(labels: &[u32], classes: &[PathBuf], skipped: &[SkippedImage]) -> Result<(), DataError> {
    let mut kept = vec![0usize; classes.len()];
    for &label in labels {
        kept[label as usize] += 1;
    }
    let Some(class) = kept.iter().position(|&n| n == 0) else { return Ok(()) };
    let dir = &classes[class];
    let lost: Vec<&SkippedImage> = skipped.iter().filter(|s| s.path.starts_with(dir)).collect();
    let first = lost.first().map(|s| format!(" (first: {}: {})", s.path.display(), s.error)).unwrap_or_default();
    Err(DataError::Malformed {
        path: dir.clone(),
        message: format!("none of the {} images of this class folder could be read{first}", lost.len()),
    })
}
