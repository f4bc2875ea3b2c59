//! # vit-kernels
//!
//! Every fused op of the Vision Transformer with its backward pass, its composed reference, and
//! the one place ([`path::select`]) that picks how it runs for the device and dtype of its
//! inputs. The modules of `vit-blocks` are built on these; nothing here knows about modules,
//! parameters or models.
//!
//! candle's fused `candle_nn::ops::softmax_last_dim`, `layer_norm` and `rms_norm` (and
//! `candle_nn::LayerNorm` on its fused path) record no backward pass, so gradients silently
//! stop there. The ops here always carry gradients:
//!
//! - on the CPU with `f32` input they run this crate's kernels (SIMD row kernels compiled for
//!   the baseline and for AVX2+FMA, chosen at run time; gemm-based dense and attention
//!   kernels), whose backward passes are fused kernels too;
//! - on a GPU in `f32`, softmax and LayerNorm run candle's fused forward kernels with a
//!   backward pass attached by formula; the rest are composed candle ops;
//! - elsewhere they run the [`composed`] versions, built from candle ops that have a backward;
//! - softmax and LayerNorm compute in `f32` for `bf16` or `f16` input and return the input's
//!   dtype.
//!
//! Dropout masks ([`DropoutMask`]) come from the counter-based generator of `vit-rng`, so the
//! backward pass draws a mask again instead of storing it, and a run is reproducible from its
//! seed. [`device_tests!`] writes one test per device the build enables.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use vit_kernels::{composed, layer_norm};
//!
//! let x = Var::from_tensor(&Tensor::randn(0f32, 1., (4, 16), &Device::Cpu)?)?;
//! let (w, b) = (Tensor::ones(16, candle_core::DType::F32, &Device::Cpu)?, Tensor::zeros(16, candle_core::DType::F32, &Device::Cpu)?);
//! let fused = layer_norm(&x, &w, &b, 1e-6)?; // the CPU kernel
//! let reference = composed::layer_norm(&x, &w, &b, 1e-6)?;
//! let diff = (&fused - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-5);
//! // Unlike candle_nn::ops::layer_norm, the gradient reaches the input.
//! let grads = fused.sqr()?.sum_all()?.backward()?;
//! assert!(grads.get(&x).is_some());
//! # Ok::<(), candle_core::Error>(())
//! ```

mod activation;
#[cfg(target_arch = "x86_64")]
mod amx;
mod attached;
mod attention;
pub mod bf16;
pub mod composed;
mod cpu;
mod dense;
mod dense_bf16;
mod dense_f32;
mod dropout;
mod gemm;
pub mod int8;
pub mod isa;
mod layer_norm;
mod ops;
pub mod path;
mod simd;
mod softmax;
mod testing;

pub use composed::AttentionDims;
pub use dense_bf16::Bf16Weight;
pub use dense_f32::F32Weight;
pub use dropout::DropoutMask;
pub use int8::{Int8Weight, quantize_per_output_channel};
pub use isa::{Bf16Kernel, Int8Kernel, with_bf16_matmuls};
pub use ops::{
    attention, attention_qkv, attention_with_probe, attention_with_weights, dense, dense_bf16, dense_bf16_with,
    dense_dropout, dense_f32_transposed, dense_gelu, dense_int8, dense_int8_with, dropout, gelu, layer_norm,
    softmax_last_dim,
};
pub use path::KernelPath;
pub use simd::{erf, exp};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
