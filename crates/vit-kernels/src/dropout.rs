//! Dropout masks from a counter-based hash: any element's keep/drop decision is computed on
//! its own, so the backward pass draws the mask again instead of storing it.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::f32_slice;
use crate::simd::simd_kernel;
use vit_rng::{SharedRng, block_u64};

/// The keep/drop decision of each element of one dropout call over `n` elements, with drop
/// probability `p`: kept elements are scaled by `1 / (1 - p)` (inverted dropout).
///
/// Element `i` draws `h(h(i ^ key_lo) ^ key_hi)` with a 32-bit integer hash `h` (Wellons'
/// lowbias32) and the call's 64-bit key: a counter-based generator, so any element's draw is
/// computed alone and whole rows vectorise (32-bit multiplies; a 64-bit generator does not).
/// Indices wrap at 2^32 elements per call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropoutMask {
    key: u64,
    /// The index of this call's first element in the call's whole stream: the shard's place in
    /// the global batch in data-parallel training, else 0.
    offset: usize,
    p: f32,
    threshold: u32,
    scale: f32,
}

impl DropoutMask {
    /// The mask of the next `n` elements of `rng`'s stream with drop probability `p` in
    /// `[0, 1)`. The stream advances as if 4 elements took one 64-bit draw; each call gets a key.
    /// With a [`vit_rng::BatchShard`] set, the elements are this shard's of the global
    /// batch's mask (the leading dimension being the batch).
    pub fn draw(rng: &SharedRng, p: f32, n: usize) -> Self {
        let (seed, first, offset) = rng.reserve_batch(n, 4);
        Self { key: block_u64(seed, first, 0), offset, p, threshold: threshold(p), scale: 1.0 / (1.0 - p) }
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// The factor of elements `start..start + out.len()`: `1 / (1 - p)` kept, `0` dropped.
    pub fn factors(&self, start: usize, out: &mut [f32]) {
        mask_factors(self.key, self.threshold, self.scale, start.wrapping_add(self.offset), out);
    }

    /// Multiplies `values` (elements `start..`) by the mask, in place.
    pub(crate) fn scale_in_place(&self, start: usize, values: &mut [f32]) {
        let mut factors = vec![0f32; values.len()];
        self.factors(start, &mut factors);
        values.iter_mut().zip(&factors).for_each(|(v, f)| *v *= f);
    }

    /// The mask as an `f32` tensor of `shape` on `device`, for the composed path. On the CPU it
    /// holds the same factors as the fused kernels use. On a GPU it is drawn there (building
    /// it on the host and copying it over would move gigabytes per step): the device generator
    /// is reseeded from this call's key, so the masks still follow from the seed and the
    /// stream position, though they differ from the CPU's.
    pub fn to_tensor(&self, shape: &Shape, device: &Device) -> Result<Tensor> {
        if device.is_cpu() {
            return Tensor::from_vec(self.values(shape.elem_count()), shape, device);
        }
        device.set_seed(self.key)?;
        Tensor::rand(0f32, 1f32, shape, device)?.ge(f64::from(self.p))?.to_dtype(DType::F32)? * f64::from(self.scale)
    }

    /// Multiplies `values` (elements `offset..`) by the mask.
    fn apply(&self, values: &[f32], offset: usize, out: &mut [f32]) {
        self.factors(offset, out);
        out.iter_mut().zip(values).for_each(|(o, &v)| *o *= v);
    }

    /// The factors of the first `n` elements.
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

/// Elements whose 32-bit draw is below this are dropped.
fn threshold(p: f32) -> u32 {
    (f64::from(p) * 4_294_967_296.0).round().min(f64::from(u32::MAX)) as u32
}

#[inline(always)]
fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

simd_kernel! {
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

/// `x * mask` on the CPU in `f32`, the mask never stored.
impl CustomOp1 for DropoutMask {
    fn name(&self) -> &'static str {
        "vit-dropout"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let values = f32_slice(storage, layout, self.name())?;
        let mut out = vec![0f32; values.len()];
        self.fill(values, &mut out);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // The same draws again: the gradient passes where the value did, scaled alike.
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vit_rng::BatchShard;

    #[test]
    fn a_shard_of_the_global_batch_draws_its_rows_of_the_global_mask() {
        // 5 rows of 6 elements: one process, then the same split 2 + 3 over two processes.
        let whole = SharedRng::new(11);
        let mask = DropoutMask::draw(&whole, 0.5, 30).values(30);
        let mut pieces = Vec::new();
        for (first, len) in [(0, 2), (2, 3)] {
            let rank = SharedRng::new(11);
            rank.set_shard(Some(BatchShard { first, len, global: 5 }));
            pieces.extend(DropoutMask::draw(&rank, 0.5, len * 6).values(len * 6));
            // Every process's stream moves as the single process's does.
            assert_eq!(rank.state(), whole.state());
        }
        assert_eq!(pieces, mask);
        assert!(mask.contains(&0.0) && mask.contains(&2.0));
    }
}
