//! A dense layer, `x W^T + b`, as one graph node on the CPU: the bias is the matrix product's
//! starting value, and the backward pass calls `gemm` with the transposes in the strides.
//!
//! Through candle ops the same layer is three nodes (`W^T`, the product, the bias add), and
//! candle's backward pass allocates a zeroed tensor and adds into it for every input of every
//! node: for the Keras example's model that is a `[B * N, width]` tensor per dense layer and
//! step, besides the separate pass that adds the bias and the zero-filled output of the product.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::ops::{ColumnSum, chunk_rows, f32_slice};

/// `dst (= or +=) alpha * lhs · rhs` for an `m x k` by `k x n` product, every operand given by
/// pointer and (row, column) strides in elements.
///
/// # Safety
/// The pointers and strides must address valid `m x k`, `k x n` and `m x n` matrices, and `dst`
/// must not alias the operands. Without `accumulate`, `dst` is only written.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
    alpha: f32,
    parallelism: Parallelism,
) {
    // gemm computes dst = beta_dst * dst + alpha_prod * lhs * rhs, strides column first; with
    // read_dst false it never reads dst.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Inputs of at most this many rows are split over output columns (see `Dense::cpu_fwd`).
const FEW_ROWS: usize = 4;
/// Output columns worth a task of their own in that split.
const MIN_COLUMNS_PER_TASK: usize = 64;

/// All of rayon's threads: the dense products are the large ones of a step.
fn all_threads() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// The `(rows, cols)` of a 2-D layout, or an error naming the operand.
fn dims2(layout: &Layout, what: &str) -> Result<(usize, usize)> {
    match layout.dims() {
        &[rows, cols] => Ok((rows, cols)),
        dims => candle_core::bail!("vit-dense: {what} must be 2-D, got {dims:?}"),
    }
}

/// `rows` copies of `b`, written in parallel into fresh memory (no zero-fill first).
fn bias_rows(b: &[f32], rows: usize) -> Vec<f32> {
    let len = rows * b.len();
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(chunk_rows(b.len())).for_each(|part| {
        for row in part.chunks_exact_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(o, &v)| {
                o.write(v);
            });
        }
    });
    // SAFETY: the chunks, whole rows, cover 0..len, and every element was written.
    unsafe { out.set_len(len) };
    out
}

/// `x W^T + b` with `x: [R, in]`, `W: [out, in]`, `b: [out]`, all contiguous `f32` on the CPU.
pub(crate) struct Dense;

impl CustomOp3 for Dense {
    fn name(&self) -> &'static str {
        "vit-dense"
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
        let (x, w, b) =
            (f32_slice(s1, l1, self.name())?, f32_slice(s2, l2, self.name())?, f32_slice(s3, l3, self.name())?);
        let ((rows, in_dim), (out_dim, w_in)) = (dims2(l1, "x")?, dims2(l2, "weight")?);
        if w_in != in_dim || b.len() != out_dim {
            candle_core::bail!(
                "vit-dense: weight {:?} and bias {:?} do not fit input {:?} (expected [out, {in_dim}] and [out])",
                l2.dims(),
                l3.dims(),
                l1.dims()
            );
        }
        let mut out = bias_rows(b, rows);
        // Each call computes output columns `cols` from the rows of W they need.
        // SAFETY (callers): `dst` addresses out, rows x out_dim; x is rows x in_dim, and W^T
        // is W read column-wise.
        let columns = |dst: *mut f32, cols: std::ops::Range<usize>, parallelism| unsafe {
            gemm_f32(
                (rows, cols.len(), in_dim),
                dst.wrapping_add(cols.start),
                (out_dim, 1),
                true,
                x.as_ptr(),
                (in_dim, 1),
                w.as_ptr().wrapping_add(cols.start * in_dim),
                (1, in_dim),
                1.0,
                parallelism,
            )
        };
        let threads = rayon::current_num_threads();
        if rows <= FEW_ROWS && threads > 1 && out_dim >= 2 * MIN_COLUMNS_PER_TASK {
            // A matrix-vector product (batch 1): gemm runs it on one thread, and it streams the
            // whole weight from memory (75 MB for the Keras example's head), so split the
            // output columns across threads.
            let per_task = out_dim.div_ceil(threads).max(MIN_COLUMNS_PER_TASK);
            let dst = out.as_mut_ptr() as usize;
            (0..out_dim.div_ceil(per_task)).into_par_iter().for_each(|t| {
                let cols = t * per_task..out_dim.min((t + 1) * per_task);
                // Tasks write disjoint columns of out.
                columns(dst as *mut f32, cols, Parallelism::None);
            });
        } else {
            columns(out.as_mut_ptr(), 0..out_dim, all_threads());
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, out_dim))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // An input that records no graph (the patches, a frozen layer) needs no gradient.
        let grad_x = if x.track_op() { Some(grad.apply_op2_no_bwd(weight, &Product::default())?) } else { None };
        let grad_w = if weight.track_op() {
            Some(grad.apply_op2_no_bwd(x, &Product { transpose_lhs: true, transpose_rhs: false })?)
        } else {
            None
        };
        let grad_b =
            if bias.track_op() { Some(grad.apply_op1_no_bwd(&ColumnSum { cols: bias.elem_count() })?) } else { None };
        Ok((grad_x, grad_w, grad_b))
    }
}

/// `op(lhs) · op(rhs)` for contiguous 2-D `f32` matrices, `op` the identity or the transpose.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Product {
    pub transpose_lhs: bool,
    pub transpose_rhs: bool,
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "vit-product"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (lhs, rhs) = (f32_slice(s1, l1, self.name())?, f32_slice(s2, l2, self.name())?);
        let ((r1, c1), (r2, c2)) = (dims2(l1, "lhs")?, dims2(l2, "rhs")?);
        // (rows, cols) as used, and the strides that read the stored matrix that way.
        let ((m, k), lhs_strides) = if self.transpose_lhs { ((c1, r1), (1, c1)) } else { ((r1, c1), (c1, 1)) };
        let ((k2, n), rhs_strides) = if self.transpose_rhs { ((c2, r2), (1, c2)) } else { ((r2, c2), (c2, 1)) };
        if k != k2 {
            candle_core::bail!("vit-product: {:?} and {:?} do not chain ({self:?})", l1.dims(), l2.dims());
        }
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        // SAFETY: the operands are m x k and k x n through their strides; gemm writes all
        // m x n elements of out (read_dst false: it never reads them), and only then is the
        // length set.
        unsafe {
            gemm_f32(
                (m, n, k),
                out.as_mut_ptr(),
                (n, 1),
                false,
                lhs.as_ptr(),
                lhs_strides,
                rhs.as_ptr(),
                rhs_strides,
                1.0,
                all_threads(),
            );
            out.set_len(m * n);
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}
