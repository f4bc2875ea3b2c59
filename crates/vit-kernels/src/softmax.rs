//! Softmax over the last dimension: the CPU kernel, forward and backward, one pass per row.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use crate::cpu::{chunk_rows, f32_slice, par_rows};
use crate::simd::{exp_with, lanes_fold, simd_kernel};

simd_kernel! {
    /// Softmax of one row, in place.
    pub(crate) fn softmax_in_place(row: &mut [f32]) {
        // `f32::max` handles NaN with a compare and a blend per vector; this is one `maxps`,
        // and a NaN still reaches the sum through `exp` below.
        let max = lanes_fold(row, f32::NEG_INFINITY, |a, b| if a > b { a } else { b });
        // The exponentials and their sum in one pass, the sum over 8 lanes.
        let mut lanes = [0f32; 8];
        let mut chunks = row.chunks_exact_mut(8);
        for c in &mut chunks {
            for j in 0..8 {
                c[j] = exp_with::<FMA>(c[j] - max);
                lanes[j] += c[j];
            }
        }
        let mut sum = lanes.iter().sum::<f32>();
        for v in chunks.into_remainder() {
            *v = exp_with::<FMA>(*v - max);
            sum += *v;
        }
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

pub(crate) struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "vit-softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, self.name())?;
        let n = layout.dims().last().copied().unwrap_or(1);
        let chunk = chunk_rows(n);
        let out = par_rows(x.len(), chunk, |c, out| {
            out.copy_from_slice(&x[c * chunk..][..out.len()]);
            out.chunks_exact_mut(n).for_each(softmax_in_place);
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad_res.contiguous()?, &SoftmaxBackward)?))
    }
}

/// `dx = y * (dy - sum(dy * y))`, one pass per row.
struct SoftmaxBackward;

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "vit-softmax-last-dim-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, self.name())?;
        let dy = f32_slice(s2, l2, self.name())?;
        let n = l1.dims().last().copied().unwrap_or(1);
        let chunk = chunk_rows(n);
        let dx = par_rows(y.len(), chunk, |c, dx| {
            dx.copy_from_slice(&dy[c * chunk..][..dx.len()]);
            softmax_grad_rows(dx, &y[c * chunk..][..dx.len()], n);
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

simd_kernel! {
    /// Softmax's backward for rows of `n`, in place: `g = y * (g - sum(g * y))` per row.
    pub(crate) fn softmax_grad_rows(g: &mut [f32], y: &[f32], n: usize) {
        for (g, y) in g.chunks_exact_mut(n).zip(y.chunks_exact(n)) {
            let mut lanes = [0f32; 8];
            let (gc, yc) = (g.chunks_exact(8), y.chunks_exact(8));
            let tail: f32 = gc.remainder().iter().zip(yc.remainder()).map(|(a, b)| a * b).sum();
            for (a, b) in gc.zip(yc) {
                for j in 0..8 {
                    lanes[j] += a[j] * b[j];
                }
            }
            let dot = lanes.iter().sum::<f32>() + tail;
            for i in 0..n {
                g[i] = y[i] * (g[i] - dot);
            }
        }
    }
}
