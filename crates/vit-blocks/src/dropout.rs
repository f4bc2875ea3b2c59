//! Dropout with a seeded, resumable random stream.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use crate::rng::{SharedRng, block_u64, unit_f32};

/// Inverted dropout: in training each element is zeroed with probability `p` and the rest are
/// scaled by `1 / (1 - p)`; at inference it is the identity.
///
/// Masks come from a [`SharedRng`], so a run is reproducible from its seed and can be resumed
/// exactly (candle's own `dropout` uses an unseedable generator on the CPU).
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f32,
    rng: SharedRng,
}

impl Dropout {
    /// Dropout with probability `p` in `[0, 1)`, drawing from `rng`.
    pub fn new(p: f32, rng: SharedRng) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            candle_core::bail!("dropout probability must be in [0, 1), got {p}");
        }
        Ok(Self { p, rng })
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// Applies dropout when `train` is true.
    ///
    /// # Shapes
    /// - `x`: any; returns the same shape.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        let mask = self.mask(x.shape().elem_count())?;
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x * mask
    }

    /// A scaled keep mask of `n` elements: `1 / (1 - p)` or `0`.
    fn mask(&self, n: usize) -> Result<Vec<f32>> {
        let (seed, first) = self.rng.reserve(n as u64);
        let scale = 1.0 / (1.0 - self.p);
        let mut mask = vec![0f32; n];
        mask.par_chunks_mut(1 << 14).enumerate().for_each(|(c, chunk)| {
            let base = (c << 14) as u64;
            for (i, m) in chunk.iter_mut().enumerate() {
                let u = unit_f32(block_u64(seed, first, base + i as u64));
                *m = if u >= self.p { scale } else { 0.0 };
            }
        });
        Ok(mask)
    }
}
