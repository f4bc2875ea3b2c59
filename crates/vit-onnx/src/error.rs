//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong exporting a model.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Loading the checkpoint failed (the message names the file).
    #[error(transparent)]
    Model(#[from] vit_model::ModelError),
    /// Reading a tensor failed.
    #[error("reading a parameter: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The model lacks a parameter its config implies.
    #[error("the model has no parameter `{0}`")]
    MissingParameter(String),
    /// A parameter has a shape the export does not expect.
    #[error("{0}")]
    Shape(String),
    /// The metadata does not fit the model.
    #[error("{0}")]
    Metadata(String),
    /// The serialised model is over protobuf's 2 GiB limit on one message.
    #[error(
        "the model is {bytes} bytes serialised, over the 2 GiB that one ONNX protobuf file can hold \
         (weights in an external data file are not supported yet)"
    )]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// Writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}
