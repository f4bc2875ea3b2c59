//! # vit-encoder
//!
//! The Vision Transformer's patch encoder on [candle]: each flattened patch is projected to
//! `projection_dim` and a position embedding is added, as the Keras example's `PatchEncoder`.
//!
//! - learned positions (one row per token, Keras' `Embedding`) or the fixed 2-D sin-cos table;
//! - an optional learned class token, prepended with a position of its own;
//! - [`resize_grid`] / [`PatchEncoder::with_grid`]: bilinear or bicubic resampling of the
//!   learned position grid (class token kept), so a model trained at one resolution runs or
//!   fine-tunes at another.
//!
//! Input comes from [`vit_patches`]: `[B, N, patch_dim]` tokens, or NHWC images through
//! [`PatchEncoder::forward_images`], which cuts them with the config's patch spec (the one
//! place a model keeps it).
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use vit_blocks::SeededVarMap;
//! use vit_encoder::{Interpolation, PatchEncoder, PatchEncoderConfig};
//! use vit_patches::PatchSpec;
//!
//! let store = SeededVarMap::new(0);
//! let vb = store.var_builder(DType::F32, &Device::Cpu);
//! // The Keras example: 72x72x3 images, 6x6 patches -> a 12x12 grid of 108-long patches.
//! let cfg = PatchEncoderConfig::new(PatchSpec::square(6), 3, (12, 12), 64);
//! let encoder = PatchEncoder::new(&cfg, vb.pp("patch_encoder"))?;
//! let images = Tensor::rand(0f32, 1., (2, 72, 72, 3), &Device::Cpu)?;
//! let tokens = encoder.forward_images(&images)?;
//! assert_eq!(tokens.dims(), [2, 144, 64]);
//!
//! // The same model at 96x96: a 16x16 grid, the position table resampled.
//! let larger = encoder.with_grid((16, 16), Interpolation::Bicubic)?;
//! let images = Tensor::rand(0f32, 1., (2, 96, 96, 3), &Device::Cpu)?;
//! assert_eq!(larger.forward_images(&images)?.dims(), [2, 256, 64]);
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! [candle]: https://github.com/huggingface/candle

mod encoder;
mod position;

pub use encoder::{PatchEncoder, PatchEncoderConfig};
pub use position::{Interpolation, PositionEmbedding, resize_grid, sincos_2d};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
