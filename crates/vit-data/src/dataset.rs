use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::DataError;

/// Where a data set's pixels are.
#[derive(Debug, Clone, PartialEq)]
enum Pixels {
    /// Decoded, `len * height * width * channels` bytes, NHWC.
    Memory(Vec<u8>),
    /// One image file per record, decoded (and resized) each time it is read: data sets larger
    /// than memory.
    Files(Arc<[PathBuf]>),
}

/// Images (u8, HWC each) with labels and class names: decoded in memory, or streamed from
/// their files ([`Dataset::from_files`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// A short name, e.g. `mnist-train`.
    pub name: String,
    pixels: Pixels,
    /// One class index per image.
    pub labels: Vec<u32>,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Channels (1 or 3).
    pub channels: usize,
    /// One name per class, in label order.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Checks sizes and labels; `source` names the origin in errors.
    pub fn new(
        name: impl Into<String>,
        images: Vec<u8>,
        labels: Vec<u32>,
        (height, width, channels): (usize, usize, usize),
        class_names: Vec<String>,
        source: &Path,
    ) -> Result<Self, DataError> {
        if height == 0 || width == 0 || channels == 0 {
            return Err(DataError::Malformed {
                path: source.into(),
                message: format!("images of {height}x{width}x{channels}: every dimension must be at least 1"),
            });
        }
        let expected =
            [height, width, channels].iter().try_fold(labels.len(), |n, &d| n.checked_mul(d)).ok_or_else(|| {
                DataError::Malformed {
                    path: source.into(),
                    message: format!("{} images of {height}x{width}x{channels} do not fit in memory", labels.len()),
                }
            })?;
        if images.len() != expected {
            return Err(DataError::WrongLength {
                path: source.into(),
                what: "image data",
                expected,
                found: images.len(),
            });
        }
        if labels.is_empty() {
            return Err(DataError::Empty { path: source.into() });
        }
        if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l as usize >= class_names.len()) {
            return Err(DataError::LabelOutOfRange {
                path: source.into(),
                index,
                label,
                num_classes: class_names.len(),
            });
        }
        Ok(Self { name: name.into(), pixels: Pixels::Memory(images), labels, height, width, channels, class_names })
    }

    /// A data set whose images stay in their `files` (one per label), decoded and resized to
    /// `height x width x channels` each time one is read: for data sets larger than memory.
    /// The files' headers are not checked here; an image that does not decode is an error
    /// naming it when it is read.
    pub fn from_files(
        name: impl Into<String>,
        files: Vec<PathBuf>,
        labels: Vec<u32>,
        (height, width, channels): (usize, usize, usize),
        class_names: Vec<String>,
        source: &Path,
    ) -> Result<Self, DataError> {
        if files.len() != labels.len() {
            return Err(DataError::WrongLength {
                path: source.into(),
                what: "file list",
                expected: labels.len(),
                found: files.len(),
            });
        }
        // The checks of `new`, on one image's worth of pixels: sizes, labels, classes.
        let one = vec![0u8; height.max(1) * width.max(1) * channels.max(1)];
        let first = labels.first().map(|&l| vec![l]).unwrap_or_default();
        let mut data = Self::new(name, one, first, (height, width, channels), class_names, source)?;
        if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l as usize >= data.class_names.len()) {
            return Err(DataError::LabelOutOfRange {
                path: source.into(),
                index,
                label,
                num_classes: data.class_names.len(),
            });
        }
        data.pixels = Pixels::Files(files.into());
        data.labels = labels;
        Ok(data)
    }

    /// Whether the images are read from their files as needed rather than held decoded.
    pub fn is_streamed(&self) -> bool {
        matches!(self.pixels, Pixels::Files(_))
    }

    /// All decoded pixels, NHWC, when they are held in memory.
    pub fn pixels(&self) -> Option<&[u8]> {
        match &self.pixels {
            Pixels::Memory(bytes) => Some(bytes),
            Pixels::Files(_) => None,
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes of one image.
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Image `i`, HWC bytes: borrowed when held in memory, decoded from its file when
    /// streamed (an image that does not decode is an error naming the file).
    pub fn image(&self, i: usize) -> Result<Cow<'_, [u8]>, DataError> {
        match &self.pixels {
            Pixels::Memory(bytes) => {
                let n = self.image_len();
                Ok(Cow::Borrowed(&bytes[i * n..(i + 1) * n]))
            }
            Pixels::Files(files) => {
                Ok(Cow::Owned(crate::decode::read_image(&files[i], self.height, self.width, self.channels)?))
            }
        }
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// A new data set of the given records, in that order.
    pub fn select(&self, indices: &[usize], name: impl Into<String>) -> Self {
        let pixels = match &self.pixels {
            Pixels::Memory(bytes) => {
                let n = self.image_len();
                let mut images = Vec::with_capacity(indices.len() * n);
                for &i in indices {
                    images.extend_from_slice(&bytes[i * n..(i + 1) * n]);
                }
                Pixels::Memory(images)
            }
            Pixels::Files(files) => Pixels::Files(indices.iter().map(|&i| files[i].clone()).collect()),
        };
        Self {
            name: name.into(),
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            height: self.height,
            width: self.width,
            channels: self.channels,
            class_names: self.class_names.clone(),
        }
    }

    /// The records of `classes` only, relabelled `0..classes.len()` in the order given, with
    /// their names: a task on part of a data set (pretraining on some classes, fine-tuning
    /// on the others). A class outside the data set, a repeated one, or a selection that
    /// holds no record is an error.
    pub fn keep_classes(&self, classes: &[u32]) -> Result<Self, DataError> {
        let source = std::path::PathBuf::from(&self.name);
        let bad = |message: String| DataError::Malformed { path: source.clone(), message };
        let mut relabel = vec![None; self.num_classes()];
        for (new, &class) in classes.iter().enumerate() {
            match relabel.get_mut(class as usize) {
                Some(slot @ None) => *slot = Some(new as u32),
                Some(Some(_)) => return Err(bad(format!("class {class} is selected twice"))),
                None => return Err(bad(format!("class {class} asked for, but there are {}", self.num_classes()))),
            }
        }
        let kept: Vec<usize> = (0..self.len()).filter(|&i| relabel[self.labels[i] as usize].is_some()).collect();
        if kept.is_empty() {
            return Err(bad(format!("classes {classes:?} hold no record")));
        }
        let mut subset = self.select(&kept, self.name.clone());
        subset.labels = kept.iter().map(|&i| relabel[self.labels[i] as usize].unwrap_or(0)).collect();
        subset.class_names = classes.iter().map(|&c| self.class_names[c as usize].clone()).collect();
        Ok(subset)
    }

    /// The same images labelled by the class names of a model, `names` (in its logit order):
    /// each of this data set's classes is matched by name, not by position, so a data set that
    /// holds some of the model's classes, in any order, is scored on those. A class name the
    /// model does not know is an error listing both sets.
    pub fn relabel_by_name(&self, names: &[String]) -> Result<Self, DataError> {
        let mut to_model = Vec::with_capacity(self.num_classes());
        for name in &self.class_names {
            match names.iter().position(|n| n == name) {
                Some(i) => to_model.push(i as u32),
                None => {
                    return Err(DataError::Malformed {
                        path: self.name.clone().into(),
                        message: format!(
                            "class `{name}` is not one of the model's; the data's classes: [{}]; the model's: [{}]",
                            self.class_names.join(", "),
                            names.join(", ")
                        ),
                    });
                }
            }
        }
        let mut out = self.clone();
        out.labels = self.labels.iter().map(|&l| to_model[l as usize]).collect();
        out.class_names = names.to_vec();
        Ok(out)
    }

    /// Splits off `fraction` of the records as a validation set, stratified and seeded: from
    /// each class, `round(fraction * its count)` records drawn by a shuffle keyed by `seed`
    /// and the class (at least one record of every class stays for training). Both parts keep
    /// the file's order. A fraction that leaves no validation record, or no training record,
    /// is an error.
    pub fn split_validation(&self, fraction: f64, seed: u64) -> Result<(Self, Self), DataError> {
        let source = std::path::PathBuf::from(&self.name);
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(DataError::Malformed {
                path: source,
                message: format!("a validation split must be a fraction in (0, 1), got {fraction}"),
            });
        }
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.num_classes()];
        for (i, &label) in self.labels.iter().enumerate() {
            by_class[label as usize].push(i);
        }
        let mut held_out = vec![false; self.len()];
        for (class, members) in by_class.iter().enumerate() {
            let take = ((members.len() as f64 * fraction).round() as usize).min(members.len().saturating_sub(1));
            let order = crate::shuffle::shuffled(members.len(), seed ^ 0x7661_6c69_6461_7465, class as u64);
            for &k in &order[..take] {
                held_out[members[k]] = true;
            }
        }
        let (val, train): (Vec<usize>, Vec<usize>) = (0..self.len()).partition(|&i| held_out[i]);
        if val.is_empty() {
            return Err(DataError::Malformed {
                path: source,
                message: format!(
                    "a validation split of {fraction} of {} records in {} classes holds no record: choose a larger fraction",
                    self.len(),
                    self.num_classes()
                ),
            });
        }
        Ok((self.select(&train, self.name.clone()), self.select(&val, format!("{}-val", self.name))))
    }
}
