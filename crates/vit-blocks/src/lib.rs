//! # vit-blocks
//!
//! Transformer building blocks for Vision Transformers on [candle], built so that training
//! works: every op carries gradients.
//!
//! - [`MultiHeadAttention`]: Keras' `MultiHeadAttention` semantics (`num_heads`, per-head
//!   `key_dim` independent of the width, optional `value_dim`, biases, dropout on the attention
//!   weights), and it can return the attention weights for attention maps. On the CPU with
//!   `f32` all heads run in one kernel, parallel over batch and heads, that reads the
//!   projections through strides, stores no scores or dropout mask (the backward pass draws
//!   the same mask again), and keeps the `[B, H, N, N]` weights only in training, for the
//!   backward pass (tested equal to the composed candle ops in forward and backward, dropout
//!   included).
//! - [`Mlp`]: dense layers with GELU and dropout after each, **carrying its own residual
//!   connection**. In the Keras example a block ends with `mlp(LayerNorm(x2)) + x2`; here the MLP
//!   owns that addition, so a block is two residual units each closed by one module, and the
//!   addition happens where the MLP's output is produced rather than as a separate step.
//! - [`TransformerBlock`]: pre-norm, `LayerNorm -> attention -> +residual; LayerNorm -> Mlp`,
//!   with optional stochastic depth and layer scale.
//! - [`ops`]: softmax, LayerNorm, the dense layer and GELU with a backward pass. candle's fused
//!   `candle_nn::ops::softmax_last_dim`, `layer_norm`, `rms_norm` and `candle_nn::LayerNorm` on its
//!   fused path record no backward, so gradients silently stop there. The versions here run
//!   fused CPU kernels with fused backward kernels, and fall back to composed candle ops
//!   elsewhere; tests prove the two equal in forward and backward.
//! - [`Linear`]: flattens its input to a contiguous matrix first. candle 0.11's CPU batched
//!   matmul gives wrong values for some non-contiguous 3-D left operands (`candle_nn::Linear` on
//!   `x.transpose(1, 2)`), and a 2-D matmul is faster anyway.
//! - [`device_tests!`]: one test per device the build enables (CPU, and CUDA or Metal behind
//!   their features), so the same tests prove the GPU path.
//! - [`Dropout`] and [`SeededVarMap`]: dropout masks and initial weights from a seeded,
//!   resumable generator ([`SharedRng`]); candle's CPU generator cannot be seeded.
//! - Mixed precision: every layer has `map_weights`, which applies one function (a cast to
//!   `bf16`, a detach) to each of its parameters; softmax and LayerNorm compute in `f32` for
//!   half-precision input.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use vit_blocks::{AttentionConfig, BlockConfig, MlpConfig, SeededVarMap, SharedRng, TransformerBlock};
//!
//! let store = SeededVarMap::new(42);
//! let vb = store.var_builder(DType::F32, &Device::Cpu);
//! // The Keras example's block: width 64, 4 heads of key_dim 64, MLP [128, 64].
//! let cfg = BlockConfig {
//!     attention: AttentionConfig { dropout: 0.1, ..AttentionConfig::new(64, 4, 64) },
//!     mlp: MlpConfig { dim: 64, hidden_units: vec![128, 64], dropout: 0.1, activation_on_last: true },
//!     layer_norm_eps: 1e-6,
//!     drop_path: 0.0,
//!     layer_scale: None,
//! };
//! let block = TransformerBlock::new(&cfg, SharedRng::new(0), vb.pp("block"))?;
//! let x = Tensor::randn(0f32, 1., (2, 144, 64), &Device::Cpu)?;
//! let (y, attention) = block.forward_with_attention(&x, false)?;
//! assert_eq!(y.dims(), [2, 144, 64]);
//! assert_eq!(attention.dims(), [2, 4, 144, 144]);
//!
//! // Training: every parameter receives a gradient.
//! let loss = block.forward_t(&x, true)?.sqr()?.mean_all()?;
//! let grads = loss.backward()?;
//! for var in store.varmap().all_vars() {
//!     assert!(grads.get(&var).is_some());
//! }
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! [candle]: https://github.com/huggingface/candle

mod attached;
mod attention;
mod attention_kernel;
mod block;
mod dense_kernel;
mod dropout;
pub mod init;
mod linear;
mod mlp;
mod norm;
pub mod ops;
pub mod rng;
mod testing;

pub use attention::{AttentionConfig, MultiHeadAttention};
pub use block::{BlockConfig, TransformerBlock};
pub use dropout::Dropout;
pub use init::SeededVarMap;
pub use linear::{Linear, WeightMap};
pub use mlp::{Mlp, MlpConfig};
pub use norm::LayerNorm;
pub use rng::{RngState, SharedRng};
