use std::path::PathBuf;

/// Why a data set could not be read. Every variant names the file and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not start with the expected magic number.
    #[error("{path}: wrong magic number 0x{found:08x}, expected 0x{expected:08x} ({what})")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The expected magic number.
        expected: u32,
        /// The one found.
        found: u32,
        /// What kind of file was expected.
        what: &'static str,
    },
    /// The file is shorter (or longer) than its header says.
    #[error("{path}: {what}: expected {expected} bytes, found {found}")]
    WrongLength {
        /// The file.
        path: PathBuf,
        /// Which part.
        what: &'static str,
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// A label is not a valid class index.
    #[error("{path}: record {index} has label {label}, but there are only {num_classes} classes")]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// The record.
        index: usize,
        /// Its label.
        label: u32,
        /// The number of classes.
        num_classes: usize,
    },
    /// Image and label files disagree on the number of records.
    #[error("{images} holds {image_count} images but {labels} holds {label_count} labels")]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// Its record count.
        image_count: usize,
        /// The label file.
        labels: PathBuf,
        /// Its record count.
        label_count: usize,
    },
    /// An image could not be decoded.
    #[error("{path}: unreadable image: {message}")]
    UnreadableImage {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// Expected files are not there.
    #[error("{dir}: missing {missing}; {hint}")]
    MissingFiles {
        /// Where they were looked for.
        dir: PathBuf,
        /// The missing files.
        missing: String,
        /// What to do.
        hint: String,
    },
    /// The data set has no records.
    #[error("{path}: no records")]
    Empty {
        /// Where.
        path: PathBuf,
    },
    /// A batch cannot be prepared as asked.
    #[error("{dataset}: {message}")]
    Pipeline {
        /// The data set.
        dataset: String,
        /// What was wrong.
        message: String,
    },
    /// Any other malformed content.
    #[error("{path}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
