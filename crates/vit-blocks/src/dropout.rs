//! Dropout with a seeded, resumable random stream.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::rng::{SharedRng, block_u64};

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
        // The stream advances as if 4 elements took one 64-bit draw; each call gets a key.
        let (seed, first) = self.rng.reserve(n.div_ceil(4) as u64);
        MaskDraw { key: block_u64(seed, first, 0), threshold: threshold(self.p), scale: 1.0 / (1.0 - self.p) }
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
        let mask = self.reserve(n);
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
            device.set_seed(mask.key)?;
            (Tensor::rand(0f32, 1f32, x.shape(), device)?.ge(f64::from(self.p))?.to_dtype(DType::F32)?
                * f64::from(mask.scale))?
        };
        x * mask.to_dtype(x.dtype())?
    }
}

/// Elements whose 32-bit draw is below this are dropped.
fn threshold(p: f32) -> u32 {
    (f64::from(p) * 4_294_967_296.0).round().min(f64::from(u32::MAX)) as u32
}

/// The keep/drop decision of each element of one dropout call.
///
/// Element `i` draws `h(h(i ^ key_lo) ^ key_hi)` with a 32-bit integer hash `h` (Wellons'
/// lowbias32) and the call's 64-bit key: a counter-based generator, so any element's draw is
/// computed alone (the backward pass draws again instead of storing the mask) and whole rows
/// vectorise (32-bit multiplies; a 64-bit generator does not, and it was 11% of a training
/// step). Indices wrap at 2^32 elements per call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaskDraw {
    key: u64,
    threshold: u32,
    scale: f32,
}

#[inline(always)]
fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

crate::ops::simd_kernel! {
    /// The factors of elements `start..start + out.len()` of the call keyed `key`.
    fn mask_factors(key: u64, threshold: u32, scale: f32, start: usize, out: &mut [f32]) {
        let (lo, hi) = (key as u32, (key >> 32) as u32);
        for (j, o) in out.iter_mut().enumerate() {
            let i = start.wrapping_add(j) as u32;
            let draw = lowbias32(lowbias32(i ^ lo) ^ hi);
            *o = if draw >= threshold { scale } else { 0.0 };
        }
    }
}

impl MaskDraw {
    /// The factor of elements `start..start + out.len()`: `1 / (1 - p)` kept, `0` dropped.
    pub(crate) fn factors(&self, start: usize, out: &mut [f32]) {
        mask_factors(self.key, self.threshold, self.scale, start, out);
    }

    /// Multiplies `values` (elements `start..`) by the mask, in place.
    pub(crate) fn scale_in_place(&self, start: usize, values: &mut [f32]) {
        let mut factors = vec![0f32; values.len()];
        self.factors(start, &mut factors);
        values.iter_mut().zip(&factors).for_each(|(v, f)| *v *= f);
    }

    /// Multiplies `values` (elements `offset..`) by the mask.
    fn apply(&self, values: &[f32], offset: usize, out: &mut [f32]) {
        self.factors(offset, out);
        out.iter_mut().zip(values).for_each(|(o, &v)| *o *= v);
    }

    /// The mask itself, for devices without the fused kernel.
    fn values(&self, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n];
        out.par_chunks_mut(Self::CHUNK).enumerate().for_each(|(c, out)| self.factors(c * Self::CHUNK, out));
        out
    }

    /// Elements per parallel task.
    const CHUNK: usize = 1 << 14;

    fn fill(&self, values: &[f32], out: &mut [f32]) {
        out.par_chunks_mut(Self::CHUNK)
            .zip(values.par_chunks(Self::CHUNK))
            .enumerate()
            .for_each(|(c, (out, values))| self.apply(values, c * Self::CHUNK, out));
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
