//! # vit-patches
//!
//! An exact equivalent of TensorFlow's [`tf.image.extract_patches`] on [candle] tensors, and
//! its inverse.
//!
//! A Vision Transformer starts by cutting the image into patches. This crate does that with
//! every option TensorFlow has (`size`, `stride`, `rate` for dilation, `VALID`/`SAME` padding)
//! and TensorFlow's element order, so that models and weights ported from Keras see the same
//! numbers:
//!
//! ```text
//! out[b, i, j, (u*kw + v)*C + c] = in[b, i*sh - pad_top + u*rh, j*sw - pad_left + v*rw, c]
//! ```
//!
//! (zero where that position is outside the image). The output grid has, per axis and with
//! `k_eff = k + (k-1)(r-1)`, `(in - k_eff + s) / s` patches under VALID and `ceil(in / s)` under
//! SAME, where SAME pads `max(0, (out-1)*s + k_eff - in)` zeros, the smaller half before.
//!
//! - [`extract_patches`]: `[B, H, W, C]` to `[B, out_rows, out_cols, kh*kw*C]`;
//!   [`extract_patch_tokens`] flattens to the token sequence `[B, N, kh*kw*C]`;
//!   `*_nchw` variants take channels-first input.
//! - [`reconstruct`]: the fold back to `[B, H, W, C]`, averaging overlaps; a pixel that no patch
//!   reads is an error, or a zero count in [`reconstruct_with_coverage`]'s [`Coverage`].
//! - Non-overlapping specs (the ViT case) are a reshape and a permute with no gather; other specs
//!   gather with `index_select`. Both are candle ops: gradients flow, and every device and dtype
//!   works. The `cuda` and `metal` features turn on candle's backends.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use vit_patches::{extract_patch_tokens, extract_patches, reconstruct, Padding, PatchSpec};
//!
//! // TensorFlow's documented example: a 10x10 image holding 1..=100.
//! let image = Tensor::arange(1f32, 101., &Device::Cpu)?.reshape((1, 10, 10, 1))?;
//! let spec = PatchSpec::new(3, 3).with_stride(5, 5).with_rate(2, 2);
//! let patches = extract_patches(&image, &spec)?; // [1, 2, 2, 9]
//! let first = patches.get(0)?.get(0)?.get(0)?.to_vec1::<f32>()?;
//! assert_eq!(first, [1., 3., 5., 21., 23., 25., 41., 43., 45.]);
//!
//! // The ViT case: 16 non-overlapping 4x4 patches as tokens, and back again.
//! let x = Tensor::randn(0f32, 1., (2, 16, 16, 3), &Device::Cpu)?;
//! let spec = PatchSpec::square(4);
//! let tokens = extract_patch_tokens(&x, &spec)?;
//! assert_eq!(tokens.dims(), [2, 16, 48]);
//! let back = reconstruct(&tokens, (16, 16), &spec)?;
//! let diff = (back - &x)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert_eq!(diff, 0.0);
//!
//! // Overlapping SAME patches are averaged back where they overlap.
//! let spec = PatchSpec::new(3, 3).with_stride(2, 2).with_padding(Padding::Same);
//! let back = reconstruct(&extract_patches(&x, &spec)?, (16, 16), &spec)?;
//! assert!((back - &x)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`tf.image.extract_patches`]: https://www.tensorflow.org/api_docs/python/tf/image/extract_patches
//! [candle]: https://github.com/huggingface/candle

mod error;
mod extract;
mod reconstruct;
mod spec;

pub use error::PatchError;
pub use extract::{
    extract_patch_tokens, extract_patch_tokens_nchw, extract_patches, extract_patches_gather, extract_patches_nchw,
};
pub use reconstruct::{Coverage, reconstruct, reconstruct_with_coverage};
pub use spec::{Padding, PatchGeometry, PatchSpec};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
