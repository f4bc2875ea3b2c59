//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong building, saving or loading a model. File errors name the file; tensor
/// errors name the tensor and the expected and found shapes.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A config file could not be parsed (the message names the field and line).
    #[error("{path}: invalid config: {message}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A config value is out of range or inconsistent.
    #[error("invalid config: `{field}` {message}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What was expected.
        message: String,
    },
    /// The file is not a valid safetensors file.
    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A metadata entry is missing or malformed.
    #[error("{path}: metadata `{key}`: {message}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// A parameter of the model is not in the file.
    #[error("{path}: tensor `{name}` is missing (expected shape {expected:?})")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The parameter's name.
        name: String,
        /// Its shape in the model.
        expected: Vec<usize>,
    },
    /// The file holds a tensor the model does not have.
    #[error("{path}: tensor `{name}` (shape {found:?}) is not a parameter of this model")]
    UnexpectedTensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// Its shape in the file.
        found: Vec<usize>,
    },
    /// A tensor's shape differs from the parameter's.
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// Its shape in the model.
        expected: Vec<usize>,
        /// Its shape in the file.
        found: Vec<usize>,
    },
    /// An argument a caller passed is out of range.
    #[error("{what}: {message}")]
    InvalidArgument {
        /// The argument.
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// An image that cannot be read or prepared.
    #[error(transparent)]
    Data(#[from] vit_data::DataError),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidConfig { field, message: message.into() }
    }
}
