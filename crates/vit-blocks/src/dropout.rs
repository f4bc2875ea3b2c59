//! Dropout with a seeded, resumable random stream.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::rng::{SharedRng, block_u64, splitmix64};

/// Inverted dropout: in training each element is zeroed with probability `p` and the rest are
/// scaled by `1 / (1 - p)`; at inference it is the identity.
///
/// Masks come from a [`SharedRng`], so a run is reproducible from its seed and can be resumed
/// exactly (candle's own `dropout` uses an unseedable generator on the CPU). On the CPU with
/// `f32` the mask is never stored: element `i` keeps or drops by a counter-based draw, which the
/// backward pass draws again, so dropout costs one pass and no memory for the mask (on the
/// Keras example's attention weights that is 84 MB per block at batch 256). On a GPU the mask
/// is drawn by the device's generator, reseeded from the stream for each call: reproducible on
/// that device, but not the same masks as on the CPU.
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

    /// The mask of the next `n` elements in the stream, as `forward_t` on a tensor of `n`
    /// elements would draw it (for kernels that apply dropout inside a fused pass).
    pub(crate) fn reserve(&self, n: usize) -> MaskDraw {
        let (seed, first) = self.rng.reserve(n.div_ceil(4) as u64);
        MaskDraw { seed, first, threshold: threshold(self.p), scale: 1.0 / (1.0 - self.p) }
    }

    /// Applies dropout when `train` is true.
    ///
    /// # Shapes
    /// - `x`: any; returns the same shape.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        let n = x.elem_count();
        // One 64-bit draw decides four elements (16 bits each: p is resolved to 1/65536).
        let mask = self.reserve(n);
        let MaskDraw { seed, first, .. } = mask;
        let device = x.device();
        let mask = if device.is_cpu() {
            if x.dtype() == DType::F32 {
                return x.contiguous()?.apply_op1(mask);
            }
            Tensor::from_vec(mask.values(n), x.shape(), device)?
        } else {
            // On a GPU the mask is drawn there: building it on the host and copying it over
            // would move gigabytes per step. The device generator is reseeded from this call's
            // reservation, so the masks still follow from the seed and the stream position.
            device.set_seed(splitmix64(seed ^ splitmix64(first)))?;
            (Tensor::rand(0f32, 1f32, x.shape(), device)?.ge(f64::from(self.p))?.to_dtype(DType::F32)?
                * f64::from(mask.scale))?
        };
        x * mask.to_dtype(x.dtype())?
    }
}

/// Elements whose 16-bit draw is below this are dropped.
fn threshold(p: f32) -> u32 {
    (f64::from(p) * 65536.0).round() as u32
}

/// The keep/drop decision of element `i`, from the block of draws starting at `first`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaskDraw {
    seed: u64,
    first: u64,
    threshold: u32,
    scale: f32,
}

impl MaskDraw {
    /// The factor of elements `start..start + out.len()`: `1 / (1 - p)` kept, `0` dropped.
    pub(crate) fn factors(&self, start: usize, out: &mut [f32]) {
        let mut bits = 0u64;
        for (j, o) in out.iter_mut().enumerate() {
            let i = start + j;
            if j == 0 || i % 4 == 0 {
                bits = block_u64(self.seed, self.first, (i / 4) as u64);
            }
            let draw = ((bits >> (16 * (i % 4))) & 0xFFFF) as u32;
            *o = if draw >= self.threshold { self.scale } else { 0.0 };
        }
    }

    /// Multiplies `values` (elements `offset..`) by the mask.
    fn apply(&self, values: &[f32], offset: usize, out: &mut [f32]) {
        self.factors(offset, out);
        out.iter_mut().zip(values).for_each(|(o, &v)| *o *= v);
    }

    /// The mask itself, for devices without the fused kernel.
    fn values(&self, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n];
        let ones = vec![1f32; n];
        self.fill(&ones, &mut out);
        out
    }

    fn fill(&self, values: &[f32], out: &mut [f32]) {
        const CHUNK: usize = 1 << 14; // a multiple of 4: draws never straddle chunks
        out.par_chunks_mut(CHUNK)
            .zip(values.par_chunks(CHUNK))
            .enumerate()
            .for_each(|(c, (out, values))| self.apply(values, c * CHUNK, out));
    }
}

impl CustomOp1 for MaskDraw {
    fn name(&self) -> &'static str {
        "vit-dropout"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let values = crate::ops::f32_slice(storage, layout, self.name())?;
        let mut out = vec![0f32; values.len()];
        self.fill(values, &mut out);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // The same draws again: the gradient passes where the value did, scaled alike.
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(self)?))
    }
}
