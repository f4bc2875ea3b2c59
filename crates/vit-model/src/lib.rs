//! # vit-model
//!
//! A Vision Transformer image classifier on [candle]: [`VitConfig`] with named presets,
//! [`Vit`] (patches, patch encoder, pre-norm blocks, LayerNorm, head), self-describing
//! safetensors [`checkpoint`]s, maps of what it attends to ([`explain`]), and import of pretrained weights ([`import`]: Hugging Face ViTs).
//!
//! Presets: [`VitConfig::keras_cifar100`] (the Keras example exactly, 21.8M parameters),
//! [`VitConfig::mnist`], and the standard [`VitConfig::vit_tiny_16`], [`VitConfig::vit_small_16`],
//! [`VitConfig::vit_base_16`] at 224. Heads: flatten + MLP (Keras), class token, mean pool.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use vit_model::{checkpoint, Vit, VitConfig};
//!
//! let cfg = VitConfig { num_layers: 2, ..VitConfig::mnist() };
//! let (model, store) = Vit::init(&cfg, 42, &Device::Cpu)?;
//! println!("{}", model.summary());
//!
//! let images = Tensor::rand(0f32, 1., (4, 28, 28, 1), &Device::Cpu)?; // NHWC
//! let logits = model.forward(&images, false)?;
//! assert_eq!(logits.dims(), [4, 10]);
//!
//! // A checkpoint carries its config and class names.
//! let dir = std::env::temp_dir().join(format!("vit-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("model.safetensors");
//! let meta = checkpoint::CheckpointMeta::new(cfg.clone(), (0..10).map(|d| d.to_string()).collect());
//! checkpoint::save(&path, store.varmap(), &meta)?;
//! let (reloaded, _, meta) = Vit::load(&path, &Device::Cpu)?;
//! assert_eq!(meta.config, cfg);
//! let again = reloaded.forward(&images, false)?;
//! assert_eq!(again.to_vec2::<f32>()?, logits.to_vec2::<f32>()?);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! To run a checkpoint (a run's, or one `vit import` wrote) on images, encoded or already
//! decoded, batched, prepared as the checkpoint says (its resize, crop and normalisation:
//! [`Preprocessing`]), use [`inference::Classifier`] (`load`, `classify`, `classify_pixels`,
//! `prepare`, `explain`): a server needs this crate, not the trainer.
//!
//! [candle]: https://github.com/huggingface/candle

pub mod checkpoint;
mod config;
mod error;
pub mod explain;
mod head;
pub mod import;
pub mod inference;
mod precision;
mod transfer;
mod vit;

pub use checkpoint::{Checkpoint, CheckpointMeta};
pub use config::{HeadKind, VitConfig};
pub use error::ModelError;
pub use head::ClassifierHead;
pub use precision::InferencePrecision;
pub use transfer::{Transfer, init_from};
pub use vit::{Summary, Vit, group_thousands};
/// `parameters`, `map_weights` and `detached` of a [`Vit`] and of every module in it.
pub use vit_blocks::ModuleTree;
/// How an image becomes the model's input, as a checkpoint records it, from `vit-data`.
pub use vit_data::Preprocessing;
/// How positions are encoded (`position` in a config), from `vit-encoder`.
pub use vit_encoder::PositionEmbedding;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
