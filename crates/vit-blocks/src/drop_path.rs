//! Stochastic depth as a module.

use candle_core::{Result, Tensor};
use vit_rng::{SharedRng, block_u64, unit_f32};

/// Stochastic depth (drop path): in training, each sample's residual branch is dropped with
/// probability `p` and kept ones are scaled by `1 / (1 - p)`; at inference it is the identity.
/// The per-sample draws come from a [`SharedRng`], so they are reproducible and resumable.
#[derive(Debug, Clone)]
pub struct DropPath {
    p: f32,
    rng: SharedRng,
}

impl DropPath {
    /// Drop path with probability `p` in `[0, 1)`, drawing from `rng`.
    pub fn new(p: f32, rng: SharedRng) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            candle_core::bail!("drop_path must be in [0, 1), got {p}");
        }
        Ok(Self { p, rng })
    }

    /// Whether it does anything when `train`.
    pub fn is_active(&self, train: bool) -> bool {
        train && self.p > 0.0
    }

    /// Drops whole samples of `branch` when `train`.
    ///
    /// # Shapes
    /// - `branch`: `[B, ..]`; returns the same shape.
    pub fn forward_t(&self, branch: &Tensor, train: bool) -> Result<Tensor> {
        if !self.is_active(train) {
            return Ok(branch.clone());
        }
        let b = branch.dim(0)?;
        // Keyed by the sample's row in the global batch (see `BatchShard`).
        let (seed, first, offset) = self.rng.reserve_batch(b, 1);
        let keep = 1.0 - self.p;
        let mask: Vec<f32> = (0..b as u64)
            .map(|i| if unit_f32(block_u64(seed, first, offset as u64 + i)) < keep { 1.0 / keep } else { 0.0 })
            .collect();
        let mut shape = vec![1usize; branch.rank()];
        shape[0] = b;
        let mask = Tensor::from_vec(mask, shape, branch.device())?.to_dtype(branch.dtype())?;
        branch.broadcast_mul(&mask)
    }
}
