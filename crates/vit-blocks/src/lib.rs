//! # vit-blocks
//!
//! The transformer modules of a Vision Transformer on [candle], built so that training works:
//! every op they run carries gradients ([`vit_kernels`]). Modules only: each holds its
//! parameters, says which they are ([`NamedParameter`], with weight decay or not), and runs
//! the ops of `vit-kernels`, which pick the CPU kernel, the GPU path or the composed ops.
//!
//! - [`MultiHeadAttention`]: Keras' `MultiHeadAttention` semantics (`num_heads`, per-head
//!   `key_dim` independent of the width, optional `value_dim`, biases, dropout on the attention
//!   weights), and it can return the attention weights for attention maps.
//! - [`Mlp`]: dense layers with GELU and dropout after each, **carrying its own residual
//!   connection**. In the Keras example a block ends with `mlp(LayerNorm(x2)) + x2`; here the MLP
//!   owns that addition, so a block is two residual units each closed by one module.
//! - [`TransformerBlock`]: pre-norm, `LayerNorm -> attention -> +residual; LayerNorm -> Mlp`,
//!   with optional stochastic depth ([`DropPath`]) and layer scale ([`LayerScale`]).
//! - [`Linear`] and [`LayerNorm`]: the dense layer (flattened to a contiguous matrix first:
//!   candle 0.11's CPU batched matmul gives wrong values for some non-contiguous 3-D left
//!   operands) and a LayerNorm with gradients for its input and parameters.
//! - [`Dropout`] and [`SeededVarMap`]: dropout masks and initial weights from a seed, resumable
//!   (candle's CPU generator cannot be seeded).
//! - Mixed precision: every module has `map_weights`, which applies one function (a cast to
//!   `bf16`, a detach) to each of its parameters.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use vit_blocks::{AttentionConfig, BlockConfig, MlpConfig, ModuleTree, SeededVarMap, SharedRng, TransformerBlock};
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
//! // Training: every parameter receives a gradient, and the block names each one.
//! let loss = block.forward_t(&x, true)?.sqr()?.mean_all()?;
//! let grads = loss.backward()?;
//! let vars = store.vars();
//! for p in block.parameters() {
//!     assert!(grads.get(&vars[&p.name]).is_some(), "{}", p.name);
//! }
//! assert_eq!(block.parameters().len(), vars.len());
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! [candle]: https://github.com/huggingface/candle

mod attention;
mod block;
mod drop_path;
mod dropout;
pub mod init;
mod layer_scale;
mod linear;
mod mlp;
mod norm;
mod parameters;

pub use attention::{AttentionConfig, MultiHeadAttention};
pub use block::{BlockConfig, TransformerBlock};
pub use drop_path::DropPath;
pub use dropout::Dropout;
pub use init::{SeededVarMap, SourceOutcome};
pub use layer_scale::LayerScale;
pub use linear::{Detach, Linear, ModuleTree, PackBf16, QuantizeInt8, TransposeF32, WeightMap};
pub use mlp::{Mlp, MlpConfig};
pub use norm::LayerNorm;
pub use parameters::NamedParameter;
/// The random stream of dropout and stochastic depth, from `vit-kernels` (whose dropout masks
/// draw from it), re-exported because the modules' constructors take it.
pub use vit_rng::{RngState, SharedRng};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
