//! Pretrained weights from other libraries, read into this crate's parameter layout.
//!
//! - [`hf`]: Hugging Face `transformers` ViTs (the `google/vit-base-patch16-224` layout).

pub mod hf;
