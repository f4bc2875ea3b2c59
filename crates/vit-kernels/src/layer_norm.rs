//! LayerNorm over the last dimension: the CPU kernel, forward and backward (input, weight and
//! bias), one pass per row.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{chunk_rows, f32_slice, par_rows};
use crate::simd::{lanes_fold, simd_kernel};

pub(crate) struct LayerNorm {
    pub eps: f32,
}

/// Mean and reciprocal standard deviation of one row, summed over 8 lanes so that it vectorises.
#[inline(always)]
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = lanes_fold(x, 0.0, |a, b| a + b) / n;
    let mut squares = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum::<f32>();
    for c in chunks {
        for j in 0..8 {
            squares[j] += (c[j] - mean) * (c[j] - mean);
        }
    }
    let var = (squares.iter().sum::<f32>() + tail) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

simd_kernel! {
    /// LayerNorm of whole rows of `w.len()`.
    fn layer_norm_rows(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
        let d = w.len();
        for (out, x) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            let (mean, rstd) = moments(x, eps);
            for i in 0..d {
                out[i] = (x[i] - mean) * rstd * w[i] + b[i];
            }
        }
    }
}

simd_kernel! {
    /// LayerNorm's backward for whole rows: writes `dx`, adds into `dw` and `db`.
    fn layer_norm_grad_rows(dx: &mut [f32], x: &[f32], g: &[f32], w: &[f32], eps: f32, dw: &mut [f32], db: &mut [f32]) {
        let d = w.len();
        for ((dx, x), g) in dx.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(g.chunks_exact(d)) {
            let (mean, rstd) = moments(x, eps);
            for i in 0..d {
                dw[i] += g[i] * (x[i] - mean) * rstd;
                db[i] += g[i];
            }
            let (mut sum_gw, mut sum_gw_xhat) = ([0f32; 8], [0f32; 8]);
            let rows = x.chunks_exact(8).zip(g.chunks_exact(8)).zip(w.chunks_exact(8));
            let tail = d - d % 8;
            for ((x, g), w) in rows {
                for j in 0..8 {
                    let gw = g[j] * w[j];
                    sum_gw[j] += gw;
                    sum_gw_xhat[j] += gw * (x[j] - mean) * rstd;
                }
            }
            for i in tail..d {
                let gw = g[i] * w[i];
                sum_gw[0] += gw;
                sum_gw_xhat[0] += gw * (x[i] - mean) * rstd;
            }
            let mean_gw = sum_gw.iter().sum::<f32>() / d as f32;
            let mean_gw_xhat = sum_gw_xhat.iter().sum::<f32>() / d as f32;
            for i in 0..d {
                let xhat = (x[i] - mean) * rstd;
                dx[i] = rstd * (g[i] * w[i] - mean_gw - xhat * mean_gw_xhat);
            }
        }
    }
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "vit-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let b = f32_slice(s3, l3, self.name())?;
        let d = w.len();
        let chunk = chunk_rows(d);
        let out = par_rows(x.len(), chunk, |c, out| layer_norm_rows(out, &x[c * chunk..][..out.len()], w, b, self.eps));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = weight.dim(0)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ws = weight.to_vec1::<f32>()?;
        let gs = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let mut dx = vec![0f32; xs.len()];
        let chunk = chunk_rows(d);
        // Each task returns its partial sums for dweight and dbias; they are added afterwards.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(chunk)
            .zip(xs.par_chunks(chunk).zip(gs.par_chunks(chunk)))
            .map(|(dx, (x, g))| {
                let mut dw = vec![0f32; d];
                let mut db = vec![0f32; d];
                layer_norm_grad_rows(dx, x, g, &ws, self.eps, &mut dw, &mut db);
                (dw, db)
            })
            .collect();
        let (mut dw, mut db) = (vec![0f32; d], vec![0f32; d]);
        for (pw, pb) in partials {
            dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
        }
        let device = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), device)?),
            Some(Tensor::from_vec(dw, d, device)?),
            Some(Tensor::from_vec(db, d, device)?),
        ))
    }
}
