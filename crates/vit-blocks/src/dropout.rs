//! Dropout as a module, with a seeded, resumable random stream.

use candle_core::{Result, Tensor};
use vit_kernels::DropoutMask;
use vit_rng::SharedRng;

/// Inverted dropout: in training each element is zeroed with probability `p` and the rest are
/// scaled by `1 / (1 - p)`; at inference it is the identity.
///
/// Masks come from a [`SharedRng`], so a run is reproducible from its seed and can be resumed
/// exactly (candle's own `dropout` uses an unseedable generator on the CPU). On the CPU with
/// `f32` the mask is never stored: the backward pass draws it again (see
/// [`vit_kernels::DropoutMask`]). On a GPU the mask is drawn by the device's generator,
/// reseeded from the stream for each call: reproducible on that device, but not the same masks
/// as on the CPU.
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

    /// The mask of the next `n` elements of the stream when it is active (`train` and `p > 0`),
    /// for ops that apply dropout inside a fused pass; `None` otherwise, drawing nothing.
    pub fn mask(&self, n: usize, train: bool) -> Option<DropoutMask> {
        (train && self.p > 0.0).then(|| DropoutMask::draw(&self.rng, self.p, n))
    }

    /// Applies dropout when `train` is true.
    ///
    /// # Shapes
    /// - `x`: any; returns the same shape.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self.mask(x.elem_count(), train) {
            Some(mask) => vit_kernels::dropout(x, &mask),
            None => Ok(x.clone()),
        }
    }
}
