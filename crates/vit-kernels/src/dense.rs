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

use crate::activation::{gelu_grad_scale, gelu_rows_in_place};
use crate::bf16::{Strided, gemm as bf16_gemm};
use crate::cpu::{ColumnSum, chunk_rows, f32_slice};
use crate::gemm::gemm_f32;
use crate::isa::Bf16Kernel;
/// Inputs of at most this many rows are split over output columns (see `Dense::cpu_fwd`).
const FEW_ROWS: usize = 4;
/// Inputs of at most this many rows (a batch-1 ViT's 197 tokens) are split over output columns
/// too, when the weight is too large for the blocked path.
const SPLIT_COLUMNS_ROWS: usize = 256;
/// Output columns worth a task of their own in that split.
const MIN_COLUMNS_PER_TASK: usize = 64;
/// Weights of at most this many elements (256 KB) are small enough for every block of rows to
/// pack them again: the products then run one block per task, each in cache.
const SMALL_WEIGHT: usize = 1 << 16;
/// Output elements of such a block (256 KB).
pub(crate) const BLOCK_ELEMS: usize = 1 << 16;
/// Rows of the shared dimension worth a task of a weight gradient's split.
const MIN_DEPTH_PER_TASK: usize = 1024;
/// The most tasks a weight gradient's split uses. A constant, not the thread count: the
/// partial sums, and so the gradient's rounding, are then the same on any machine and with
/// any `--threads`, and a resumed run ends where an uninterrupted one does whatever threads
/// each had.
const MAX_DEPTH_TASKS: usize = 8;

/// Rows per block for `rows` rows of `width` outputs: at most [`BLOCK_ELEMS`] outputs, and a
/// number of equal blocks that `threads` divides, so that no thread waits for another's last
/// block (measured: `docs/measurements/kernel-notes.md`).
fn block_rows(rows: usize, width: usize, threads: usize) -> usize {
    let most = (BLOCK_ELEMS / width.max(1)).max(1);
    let blocks = rows.div_ceil(most).next_multiple_of(threads.max(1));
    rows.div_ceil(blocks).max(1)
}

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

/// Writes `b` into each row of `part` (whole rows of `b.len()`).
fn write_rows(part: &mut [std::mem::MaybeUninit<f32>], b: &[f32]) {
    if b.is_empty() {
        return; // no outputs: `part` is empty too
    }
    for row in part.chunks_exact_mut(b.len()) {
        row.iter_mut().zip(b).for_each(|(o, &v)| {
            o.write(v);
        });
    }
}

/// `rows` copies of `b`, written in parallel into fresh memory (no zero-fill first).
pub(crate) fn bias_rows(b: &[f32], rows: usize) -> Vec<f32> {
    let len = rows * b.len();
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(chunk_rows(b.len())).for_each(|part| write_rows(part, b));
    // SAFETY: the chunks, whole rows, cover 0..len, and every element was written.
    unsafe { out.set_len(len) };
    out
}

/// `x W^T + b` with `x: [R, in]`, `W: [out, in]`, `b: [out]`, all contiguous `f32` on the CPU;
/// with `gelu`, GELU of that, for inference only (the backward pass needs the product itself).
pub(crate) struct Dense {
    pub gelu: bool,
    /// The products in bf16 with f32 sums (forward and backward), on this kernel; `None`: f32.
    pub bf16: Option<Bf16Kernel>,
}

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
        if let Some(kernel) = self.bf16 {
            let mut out = bias_rows(b, rows);
            let lhs = Strided::row_major(x, rows, in_dim);
            bf16_gemm(lhs, Strided::row_major(w, out_dim, in_dim).t(), &mut out, true, kernel)?;
            if self.gelu {
                out.par_chunks_mut(BLOCK_ELEMS).for_each(gelu_rows_in_place);
            }
            return Ok((CpuStorage::F32(out), Shape::from((rows, out_dim))));
        }
        let out = dense_f32(x, (rows, in_dim), WeightF32 { data: w, out_dim, strides: (1, in_dim) }, b, self.gelu);
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
        if self.gelu {
            candle_core::bail!("vit-dense: the GELU variant is for inference and has no backward pass");
        }
        let grad = grad.contiguous()?;
        // An input that records no graph (the patches, a frozen layer) needs no gradient.
        let bf16 = self.bf16;
        let grad_x = if x.track_op() {
            Some(grad.apply_op2_no_bwd(weight, &Product { bf16, ..Product::default() })?)
        } else {
            None
        };
        let grad_w = if weight.track_op() {
            Some(grad.apply_op2_no_bwd(x, &Product { transpose_lhs: true, transpose_rhs: false, bf16 })?)
        } else {
            None
        };
        let grad_b =
            if bias.track_op() { Some(grad.apply_op1_no_bwd(&ColumnSum { cols: bias.elem_count() })?) } else { None };
        Ok((grad_x, grad_w, grad_b))
    }
}

/// A dense layer's weight in `f32` as the forward product reads it: `W^T` (`in x out`) through
/// `strides` (row, column) into `data`: a trained layer's `[out, in]` weight is `(1, in)`; a
/// narrow one stored `[in, out]` for inference ([`crate::F32Weight`]) is `(out, 1)`, which `gemm`
/// packs with whole-vector loads instead of one value at a time.
#[derive(Clone, Copy)]
pub(crate) struct WeightF32<'a> {
    pub data: &'a [f32],
    pub out_dim: usize,
    pub strides: (usize, usize),
}

/// `x W^T + b` (GELU of it with `gelu`) for `x: [rows, in_dim]` contiguous and `b: [out]`: blocks of rows in
/// cache for a small weight, each thread its own output columns for one image's rows, else one
/// parallel product.
pub(crate) fn dense_f32(
    x: &[f32],
    (rows, in_dim): (usize, usize),
    w: WeightF32<'_>,
    b: &[f32],
    gelu: bool,
) -> Vec<f32> {
    let out_dim = w.out_dim;
    let threads = rayon::current_num_threads();
    // SAFETY (all products below): `dst` addresses `rows` rows of out_dim values, x holds
    // rows x in_dim from `x_at`, and `w` read through its strides is W^T (in_dim x
    // out_dim), from column `cols.start`.
    let product = |dst: *mut f32, rows: usize, x_at: usize, cols: std::ops::Range<usize>, parallelism| unsafe {
        gemm_f32(
            (rows, cols.len(), in_dim),
            dst.wrapping_add(cols.start),
            (out_dim, 1),
            true,
            x.as_ptr().wrapping_add(x_at),
            (in_dim, 1),
            w.data.as_ptr().wrapping_add(cols.start * w.strides.1),
            w.strides,
            1.0,
            parallelism,
        )
    };
    if rows > FEW_ROWS && w.data.len() <= SMALL_WEIGHT {
        // Blocks of rows, one task each, that stay in cache from the bias through the product
        // to the activation; gemm packs the small weight again per block.
        let block = block_rows(rows, out_dim, threads);
        let len = rows * out_dim;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        out.spare_capacity_mut()[..len].par_chunks_mut((block * out_dim).max(1)).enumerate().for_each(|(i, part)| {
            write_rows(part, b);
            // SAFETY: every element of `part` was written just above.
            let part = unsafe { &mut *(part as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
            let block_rows = part.len() / out_dim.max(1);
            product(part.as_mut_ptr(), block_rows, i * block * in_dim, 0..out_dim, Parallelism::None);
            if gelu {
                gelu_rows_in_place(part);
            }
        });
        // SAFETY: the blocks, whole rows, cover 0..len, and every element was written.
        unsafe { out.set_len(len) };
        out
    } else {
        let mut out = bias_rows(b, rows);
        let dst = out.as_mut_ptr() as usize;
        if rows <= SPLIT_COLUMNS_ROWS && threads > 1 && out_dim >= 2 * MIN_COLUMNS_PER_TASK {
            // Few rows (one image's tokens, or a matrix-vector product): gemm splits them
            // poorly over threads (a 197-row product of ViT-B used 1.5 of 2 cores) and
            // streams the whole weight; each thread takes its own columns instead, and
            // packs only its part of the weight.
            let per_task = out_dim.div_ceil(threads).max(MIN_COLUMNS_PER_TASK);
            (0..out_dim.div_ceil(per_task)).into_par_iter().for_each(|t| {
                // Tasks write disjoint columns of out.
                product(dst as *mut f32, rows, 0, t * per_task..out_dim.min((t + 1) * per_task), Parallelism::None);
            });
        } else {
            product(dst as *mut f32, rows, 0, 0..out_dim, all_threads());
        }
        if gelu {
            out.par_chunks_mut(BLOCK_ELEMS).for_each(gelu_rows_in_place);
        }
        out
    }
}

/// The forward pass of a dense layer whose weight was prepared once for inference (packed
/// bf16, `f32` stored transposed): `x: [rows, in_dim]` checked against the weight's input
/// width, then `rows_of(x, rows, gelu)`, the layer's product.
pub(crate) fn prepared_fwd(
    name: &str,
    (storage, layout): (&CpuStorage, &Layout),
    (in_dim, out_dim): (usize, usize),
    gelu: bool,
    rows_of: impl Fn(&[f32], usize, bool) -> Result<Vec<f32>>,
) -> Result<(CpuStorage, Shape)> {
    let x = f32_slice(storage, layout, name)?;
    let (rows, width) = layout.shape().dims2()?;
    if width != in_dim {
        candle_core::bail!("{name}: input width {width}, the weight takes {in_dim}");
    }
    Ok((CpuStorage::F32(rows_of(x, rows, gelu)?), Shape::from((rows, out_dim))))
}

/// The input's gradient of such a layer (relevance maps): with `gelu`, the upstream gradient
/// scaled by GELU's derivative at the product, computed again by `rows_of` (the forward pass
/// kept only GELU's output); then that times the weight, `product` of it and `weight`.
pub(crate) fn prepared_input_grad(
    x: &Tensor,
    grad: &Tensor,
    gelu: bool,
    rows_of: impl Fn(&[f32], usize, bool) -> Result<Vec<f32>>,
    weight: &Tensor,
    product: Product,
) -> Result<Tensor> {
    let grad = if gelu {
        let (rows, out_dim) = grad.dims2()?;
        let mut grad = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let pre = rows_of(&x.flatten_all()?.to_vec1::<f32>()?, rows, false)?;
        gelu_grad_scale(&mut grad, &pre);
        Tensor::from_vec(grad, (rows, out_dim), x.device())?
    } else {
        grad.contiguous()?
    };
    grad.apply_op2_no_bwd(weight, &product)
}

/// `op(lhs) · op(rhs)` for contiguous 2-D `f32` matrices, `op` the identity or the transpose.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Product {
    pub transpose_lhs: bool,
    pub transpose_rhs: bool,
    /// The product in bf16 with f32 sums, on this kernel; `None`: f32.
    pub bf16: Option<Bf16Kernel>,
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
        if let Some(kernel) = self.bf16 {
            let lhs = Strided::row_major(lhs, r1, c1);
            let rhs = Strided::row_major(rhs, r2, c2);
            let lhs = if self.transpose_lhs { lhs.t() } else { lhs };
            let rhs = if self.transpose_rhs { rhs.t() } else { rhs };
            let mut out = vec![0f32; m * n];
            bf16_gemm(lhs, rhs, &mut out, false, kernel)?;
            return Ok((CpuStorage::F32(out), Shape::from((m, n))));
        }
        // SAFETY (all products below): the operands are m x k and k x n through their strides,
        // `lhs_at`/`rhs_at` move to a block of rows of lhs (or of the shared dimension), and
        // `dst` addresses `rows` x n values; without accumulation gemm writes all of them.
        let product = |dst: *mut f32, (rows, depth): (usize, usize), lhs_at: usize, rhs_at: usize, parallelism| unsafe {
            gemm_f32(
                (rows, n, depth),
                dst,
                (n, 1),
                false,
                lhs.as_ptr().wrapping_add(lhs_at),
                lhs_strides,
                rhs.as_ptr().wrapping_add(rhs_at),
                rhs_strides,
                1.0,
                parallelism,
            )
        };
        let threads = rayon::current_num_threads();
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        if !self.transpose_lhs && k * n <= SMALL_WEIGHT && m > FEW_ROWS {
            // A dense layer's input gradient, `grad · W`: blocks of rows in cache, as forward.
            let block = block_rows(m, n, threads);
            let dst = out.as_mut_ptr() as usize;
            (0..m.div_ceil(block)).into_par_iter().for_each(|i| {
                let rows = block.min(m - i * block);
                // Tasks write disjoint blocks of rows of out.
                let at = (dst as *mut f32).wrapping_add(i * block * n);
                product(at, (rows, k), i * block * lhs_strides.0, 0, Parallelism::None);
            });
        } else if self.transpose_lhs && !self.transpose_rhs && m * n <= SMALL_WEIGHT && k >= 2 * MIN_DEPTH_PER_TASK {
            // A weight's gradient, `grad^T · x`: long in the shared dimension (every row of the
            // batch) and small in the result, which gemm parallelises poorly. Each task sums
            // its own stretch of rows; the partial results are added afterwards.
            let tasks = (k / MIN_DEPTH_PER_TASK).clamp(1, MAX_DEPTH_TASKS);
            let depth = k.div_ceil(tasks);
            let partials: Vec<Vec<f32>> = (0..k.div_ceil(depth))
                .into_par_iter()
                .map(|t| {
                    let (from, to) = (t * depth, k.min((t + 1) * depth));
                    let mut part: Vec<f32> = Vec::with_capacity(m * n);
                    product(
                        part.as_mut_ptr(),
                        (m, to - from),
                        from * lhs_strides.1,
                        from * rhs_strides.0,
                        Parallelism::None,
                    );
                    // SAFETY: gemm wrote all m x n values.
                    unsafe { part.set_len(m * n) };
                    part
                })
                .collect();
            let mut partials = partials.into_iter();
            out = partials.next().expect("at least one task");
            for part in partials {
                out.iter_mut().zip(&part).for_each(|(o, p)| *o += p);
            }
        } else {
            product(out.as_mut_ptr(), (m, k), 0, 0, all_threads());
        }
        // SAFETY: every branch wrote all m x n values (the reduction returns a full vector).
        unsafe { out.set_len(m * n) };
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}
