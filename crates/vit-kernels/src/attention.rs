//! Scaled dot-product attention of all heads in one CPU pass, with its backward pass.
//!
//! The composed version (`softmax(q k^T) v` from candle ops) transposes the heads out of the
//! projections and back, runs `B * H` small matrix products at about half the speed of one large
//! one, and keeps the scores, the weights and the dropout mask (`[B, H, N, N]` each: 85 MB per
//! block for the Keras example at batch 256) alive until the backward pass. Here each
//! `(batch, head)` pair is one task: its `N x N` scores live in a buffer of the task, the
//! projections are read in place through strides, and the backward pass draws the same dropout
//! mask again instead of reading a stored one. In training the weights after the softmax are
//! kept for the backward pass (one `[B, H, N, N]` buffer); otherwise the backward pass
//! recomputes them from `q` and `k`, as flash attention does.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Storage, StorageRef, Tensor};
use rayon::prelude::*;

use crate::bf16::{Strided, gemm_serial};
use crate::cpu::f32_slice;
use crate::dropout::DropoutMask;
use crate::gemm::gemm_f32;
use crate::isa::Bf16Kernel;
use crate::simd::mul_in_place;
use crate::softmax::{softmax_grad_rows, softmax_in_place};
/// `softmax(scale * q k^T) v` per head, with dropout on the weights when `mask` is set.
#[derive(Debug, Clone)]
pub(crate) struct FusedAttention {
    /// Images and tokens per image: `q`, `k` and `v` are `[batch, tokens, heads * dim]`, or
    /// the same rows flattened to `[batch * tokens, heads * dim]`.
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub key_dim: usize,
    pub value_dim: usize,
    pub scale: f32,
    pub mask: Option<DropoutMask>,
    /// In training: where the forward pass keeps the weights (after the softmax, before
    /// dropout) for the backward pass, which otherwise recomputes them. Recomputing costs
    /// `q k^T` again (a fifth of a training step's attention FLOPs) and the softmax; keeping
    /// them costs `[B, H, N, N]` floats per block until the backward pass (85 MB for the
    /// Keras example at batch 256), freed with the graph.
    pub saved_weights: Option<Arc<OnceLock<Vec<f32>>>>,
    /// The products of a head (two forward, four backward) in bf16 with f32 sums on this
    /// kernel; `None`: f32. The softmax and its gradient stay f32.
    pub bf16: Option<Bf16Kernel>,
    /// Row strides in elements of `q` and `k`, and of `v`: `heads * key_dim` and
    /// `heads * value_dim` for three matrices; the whole row's width when the three are column
    /// blocks of one projection's output ([`crate::attention_qkv`]). The output and its
    /// gradient are always `heads * value_dim` wide.
    pub row_strides: (usize, usize),
}

/// A pointer that rayon tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every task writes a disjoint set of elements (its own head's columns).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The element `i` places on (a method, so that closures capture the whole `Shared`).
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// `dst = alpha * lhs · rhs` for an `m x k` by `k x n` product, every operand given by pointer
/// and (row, column) strides in elements, single-threaded (the parallelism is over heads): in
/// f32, or with `bf16` in bf16 with f32 sums.
///
/// # Safety
/// The pointers and strides must address valid `m x k`, `k x n` and `m x n` matrices, and `dst`
/// must not alias the operands.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    bf16: Option<Bf16Kernel>,
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_strides: (usize, usize),
    lhs: *const f32,
    lhs_strides: (usize, usize),
    rhs: *const f32,
    rhs_strides: (usize, usize),
    alpha: f32,
) {
    match bf16 {
        Some(kernel) if dst_strides.1 == 1 && m > 0 && n > 0 && k > 0 => {
            // SAFETY: the caller's matrices, as slices from their first to their last element.
            let (a, b) = unsafe { (operand(lhs, (m, k), lhs_strides), operand(rhs, (k, n), rhs_strides)) };
            // The operands fit their slices by construction, so this cannot fail.
            unsafe { gemm_serial(a, b, dst, dst_strides.0, alpha, kernel) }.expect("attention operands fit");
        }
        _ => {
            let parallelism = gemm::Parallelism::None;
            unsafe {
                gemm_f32((m, n, k), dst, dst_strides, false, lhs, lhs_strides, rhs, rhs_strides, alpha, parallelism)
            }
        }
    }
}

/// The `rows x cols` matrix at `data` through `strides`, as a [`Strided`] over the slice from
/// its first element to its last.
///
/// # Safety
/// `data` addresses such a matrix, alive for `'a`.
unsafe fn operand<'a>(
    data: *const f32,
    (rows, cols): (usize, usize),
    (row_stride, col_stride): (usize, usize),
) -> Strided<'a> {
    let len = (rows - 1) * row_stride + (cols - 1) * col_stride + 1;
    // SAFETY: the caller's promise.
    let data = unsafe { std::slice::from_raw_parts(data, len) };
    Strided { data, rows, cols, row_stride, col_stride }
}

impl FusedAttention {
    /// The weights of head `(b, h)` after the softmax into `p`, and the dropout factors into
    /// `keep` when there is a mask. `q` and `k` point at the head's first element.
    fn weights(&self, task: usize, n: usize, q: *const f32, k: *const f32, p: &mut [f32], keep: &mut [f32]) {
        // SAFETY: the caller's pointers, all n query rows.
        unsafe { self.query_weights(task, (0, n), n, q, k, p, keep) }
    }

    /// The weights of query rows `first..first + rows` of head `task` into `p` (`rows x n`),
    /// and their dropout factors into `keep`. `q` and `k` point at the head's first element.
    ///
    /// # Safety
    /// `q` and `k` must address the head's `n` rows of `key_dim` values, `row_strides.0` apart.
    #[allow(clippy::too_many_arguments)]
    unsafe fn query_weights(
        &self,
        task: usize,
        (first, rows): (usize, usize),
        n: usize,
        q: *const f32,
        k: *const f32,
        p: &mut [f32],
        keep: &mut [f32],
    ) {
        let stride = self.row_strides.0;
        let (p, keep) = (&mut p[..rows * n], &mut keep[..if self.mask.is_some() { rows * n } else { 0 }]);
        let q = q.wrapping_add(first * stride);
        // SAFETY: q and k address n rows of key_dim values, `stride` apart, of which q's rows
        // from `first` are read; p holds rows x n.
        unsafe {
            matmul(
                self.bf16,
                (rows, n, self.key_dim),
                p.as_mut_ptr(),
                (n, 1),
                q,
                (stride, 1),
                k,
                (1, stride),
                self.scale,
            )
        };
        p.chunks_exact_mut(n).for_each(softmax_in_place);
        if let Some(mask) = &self.mask {
            // The composed path drops elements of a [B, H, N, N] tensor: the same indices here.
            mask.factors(task * n * n + first * n, keep);
        }
    }

    /// Parts to cut each head's queries into so that the tasks divide evenly among the
    /// threads: one image of ViT-Ti has 3 heads, which on 2 threads leave one idle for a third
    /// of the attention; cut in 2, the 6 parts are 3 per thread. 1 when the heads already
    /// divide evenly or are many (a batch).
    fn query_parts(&self, heads: usize, n: usize) -> usize {
        let threads = rayon::current_num_threads().max(1);
        if heads == 0 || heads.is_multiple_of(threads) || heads >= 8 * threads || self.tasks_per_split(n) > 1 {
            return 1;
        }
        (1..=threads).find(|p| (heads * p).is_multiple_of(threads)).unwrap_or(1).min(n.max(1))
    }

    /// Where head `task` (image `task / heads`) starts: in `q` and `k`, in `v`, and in the
    /// output and its gradient.
    fn offsets(&self, task: usize, n: usize) -> (usize, usize, usize) {
        let (h, dk, dv) = (self.heads, self.key_dim, self.value_dim);
        let (b, head) = (task / h, task % h);
        let (qk_stride, v_stride) = self.row_strides;
        (b * n * qk_stride + head * dk, b * n * v_stride + head * dv, b * n * h * dv + head * dv)
    }

    fn forward(&self, q: &[f32], k: &[f32], v: &[f32], batch: usize, n: usize) -> Vec<f32> {
        let (h, dv) = (self.heads, self.value_dim);
        let len = batch * n * h * dv;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let dst = Shared(out.as_mut_ptr());
        let saved_len = if self.saved_weights.is_some() { batch * h * n * n } else { 0 };
        let mut saved: Vec<f32> = Vec::with_capacity(saved_len);
        let saved_at = Shared(saved.as_mut_ptr());
        // Each head's queries in `parts` tasks of `per_part` rows (the last may have fewer).
        let parts = self.query_parts(batch * h, n);
        let per_part = n.div_ceil(parts);
        (0..batch * h * parts).into_par_iter().with_min_len(self.tasks_per_split(n)).for_each_init(
            || (vec![0f32; per_part * n], vec![0f32; if self.mask.is_some() { per_part * n } else { 0 }]),
            |(p, keep), part| {
                let (task, first) = (part / parts, (part % parts) * per_part);
                let rows = per_part.min(n.saturating_sub(first));
                if rows == 0 {
                    return;
                }
                let (qk_at, v_at, out_at) = self.offsets(task, n);
                // SAFETY: q and k from the head's first element hold its n rows.
                unsafe {
                    self.query_weights(task, (first, rows), n, q[qk_at..].as_ptr(), k[qk_at..].as_ptr(), p, keep)
                };
                let (p, keep) = (&mut p[..rows * n], &mut keep[..if self.mask.is_some() { rows * n } else { 0 }]);
                if saved_len > 0 {
                    // SAFETY: each task writes its own rows x n stretch of `saved`.
                    unsafe {
                        std::ptr::copy_nonoverlapping(p.as_ptr(), saved_at.at(task * n * n + first * n), rows * n)
                    };
                }
                if self.mask.is_some() {
                    mul_in_place(p, keep);
                }
                // SAFETY: this task writes only its own head's columns of its query rows.
                unsafe {
                    matmul(
                        self.bf16,
                        (rows, dv, n),
                        dst.at(out_at + first * h * dv),
                        (h * dv, 1),
                        p.as_ptr(),
                        (n, 1),
                        v[v_at..].as_ptr(),
                        (self.row_strides.1, 1),
                        1.0,
                    )
                };
            },
        );
        // SAFETY: the tasks wrote every head's columns of every row (gemm without
        // accumulation writes all of its destination, reading none of it), and every head's
        // weights into `saved`.
        unsafe {
            out.set_len(len);
            saved.set_len(saved_len);
        }
        if let Some(slot) = &self.saved_weights {
            // A second forward through the same op (it is not reused) would keep the first.
            let _ = slot.set(saved);
        }
        out
    }

    /// The gradients of `q`, `k` and `v` given that of the output, `dout`, for three separate
    /// matrices.
    fn backward(&self, q: &[f32], k: &[f32], v: &[f32], dout: &[f32], batch: usize, n: usize) -> [Vec<f32>; 3] {
        let (mut dq, mut dk, mut dv) = (
            Vec::<f32>::with_capacity(q.len()),
            Vec::<f32>::with_capacity(k.len()),
            Vec::<f32>::with_capacity(v.len()),
        );
        let dst = [Shared(dq.as_mut_ptr()), Shared(dk.as_mut_ptr()), Shared(dv.as_mut_ptr())];
        // SAFETY: the three buffers hold q's, k's and v's lengths, laid out as they are.
        unsafe { self.backward_into(q, k, v, dout, batch, n, dst) };
        // SAFETY: every head's columns of every row of dQ, dK and dV were written.
        unsafe {
            dq.set_len(q.len());
            dk.set_len(k.len());
            dv.set_len(v.len());
        }
        [dq, dk, dv]
    }

    /// The gradients of `q`, `k` and `v` written through `dst`, laid out as the inputs are
    /// (`row_strides`); every head's columns of every row are written.
    ///
    /// # Safety
    /// `dst` must address writable memory of the inputs' layout, aliasing none of them.
    #[allow(clippy::too_many_arguments)]
    unsafe fn backward_into(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dout: &[f32],
        batch: usize,
        n: usize,
        [dq_ptr, dk_ptr, dv_ptr]: [Shared; 3],
    ) {
        let (h, dk, dv) = (self.heads, self.key_dim, self.value_dim);
        let saved = self.saved_weights.as_ref().and_then(|slot| slot.get()).filter(|w| w.len() == batch * h * n * n);
        (0..batch * h).into_par_iter().with_min_len(self.tasks_per_split(n)).for_each_init(
            || (vec![0f32; n * n], vec![0f32; n * n], vec![0f32; if self.mask.is_some() { n * n } else { 0 }]),
            |(p, dp, keep), task| {
                let (qk_at, v_at, out_at) = self.offsets(task, n);
                let (qp, kp, vp, gp) =
                    (q[qk_at..].as_ptr(), k[qk_at..].as_ptr(), v[v_at..].as_ptr(), dout[out_at..].as_ptr());
                // Row strides: q and k (and their gradients), v (and its), the output's gradient.
                let ((ds, vs), gs) = (self.row_strides, h * dv);
                let p: &[f32] = match saved {
                    Some(weights) => {
                        if let Some(mask) = &self.mask {
                            mask.factors(task * n * n, keep);
                        }
                        &weights[task * n * n..][..n * n]
                    }
                    None => {
                        self.weights(task, n, qp, kp, p, keep);
                        p
                    }
                };
                // SAFETY (all products): operands address this head's rows through their strides,
                // destinations are this task's buffers or its own head's columns.
                unsafe {
                    // dP' = dO · V^T (the gradient of the weights after dropout).
                    matmul(self.bf16, (n, n, dv), dp.as_mut_ptr(), (n, 1), gp, (gs, 1), vp, (1, vs), 1.0);
                    let dropped = if self.mask.is_some() {
                        // dP = dP' ⊙ keep; then keep becomes the dropped weights P ⊙ keep.
                        mul_in_place(dp, keep);
                        mul_in_place(keep, p);
                        keep.as_ptr()
                    } else {
                        p.as_ptr()
                    };
                    // dV = (dropped weights)^T · dO.
                    matmul(self.bf16, (n, dv, n), dv_ptr.at(v_at), (vs, 1), dropped, (1, n), gp, (gs, 1), 1.0);
                }
                // dS = P ⊙ (dP - rowsum(dP ⊙ P)), the softmax backward, in place in dp.
                softmax_grad_rows(dp, p, n);
                unsafe {
                    // dQ = scale * dS · K, dK = scale * dS^T · Q.
                    matmul(
                        self.bf16,
                        (n, dk, n),
                        dq_ptr.at(qk_at),
                        (ds, 1),
                        dp.as_ptr(),
                        (n, 1),
                        kp,
                        (ds, 1),
                        self.scale,
                    );
                    matmul(
                        self.bf16,
                        (n, dk, n),
                        dk_ptr.at(qk_at),
                        (ds, 1),
                        dp.as_ptr(),
                        (1, n),
                        qp,
                        (ds, 1),
                        self.scale,
                    );
                }
            },
        );
    }

    /// Heads per rayon task: enough that a task is worth its scheduling (about a million
    /// multiply-adds). One image of the MNIST model has 4 heads of 49 tokens: one task, which
    /// keeps batch-1 latency from paying for thread hand-offs.
    fn tasks_per_split(&self, n: usize) -> usize {
        const MIN_TASK_MACS: usize = 1 << 20;
        let per_head = n * n * (self.key_dim + self.value_dim);
        MIN_TASK_MACS.div_ceil(per_head.max(1))
    }

    fn dims(&self, q: &Layout, v: &Layout) -> Result<(usize, usize)> {
        let (b, n) = (self.batch, self.tokens);
        let fits = |l: &Layout, d: usize| match l.dims() {
            [rows, width] => *rows == b * n && *width == self.heads * d,
            [bb, nn, width] => *bb == b && *nn == n && *width == self.heads * d,
            _ => false,
        };
        if !fits(q, self.key_dim) || !fits(v, self.value_dim) {
            candle_core::bail!(
                "fused attention: q {:?} and v {:?} do not fit {b} images of {n} tokens, {} heads of key_dim {} and value_dim {}",
                q.dims(),
                v.dims(),
                self.heads,
                self.key_dim,
                self.value_dim
            );
        }
        Ok((b, n))
    }

    /// The output's shape: that of `v`'s rows with the value width.
    fn out_shape(&self, v: &Layout) -> Shape {
        let width = self.heads * self.value_dim;
        if v.dims().len() == 2 {
            Shape::from((self.batch * self.tokens, width))
        } else {
            Shape::from((self.batch, self.tokens, width))
        }
    }
}

/// The storage of a tensor that must live on the CPU, and its layout (the backward pass reads
/// its inputs in place rather than copying them out).
fn host_values(t: &Tensor) -> Result<(StorageRef<'_>, &Layout)> {
    let (storage, layout) = t.storage_and_layout();
    if !matches!(&*storage, Storage::Cpu(_)) {
        candle_core::bail!("fused attention: a CPU kernel, given a tensor on {:?}", t.device());
    }
    Ok((storage, layout))
}

fn cpu(storage: &Storage) -> &CpuStorage {
    match storage {
        Storage::Cpu(s) => s,
        _ => unreachable!("checked by host_values"),
    }
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "vit-fused-attention"
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
        let (b, n) = self.dims(l1, l3)?;
        if self.row_strides != (self.heads * self.key_dim, self.heads * self.value_dim) {
            candle_core::bail!("fused attention: separate q, k and v are read with their own widths as row strides");
        }
        if l2.dims() != l1.dims() {
            candle_core::bail!("fused attention: k {:?} differs from q {:?}", l2.dims(), l1.dims());
        }
        let (q, k, v) =
            (f32_slice(s1, l1, self.name())?, f32_slice(s2, l2, self.name())?, f32_slice(s3, l3, self.name())?);
        let out = self.forward(q, k, v, b, n);
        Ok((CpuStorage::F32(out), self.out_shape(l3)))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let [dq, dk, dv] = {
            let ((sq, lq), (sk, lk), (sv, lv), (sg, lg)) =
                (host_values(q)?, host_values(k)?, host_values(v)?, host_values(&grad)?);
            let (b, n) = self.dims(lq, lv)?;
            let name = self.name();
            self.backward(
                f32_slice(cpu(&sq), lq, name)?,
                f32_slice(cpu(&sk), lk, name)?,
                f32_slice(cpu(&sv), lv, name)?,
                f32_slice(cpu(&sg), lg, name)?,
                b,
                n,
            )
        };
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), q.device())?),
            Some(Tensor::from_vec(dk, k.shape(), k.device())?),
            Some(Tensor::from_vec(dv, v.shape(), v.device())?),
        ))
    }
}

/// [`FusedAttention`] on the output of one projection to query, key and value side by side,
/// `[rows, heads * (2 * key_dim + value_dim)]`: the three are read in place as column blocks,
/// and the backward pass writes the three gradients into one matrix of that layout. At
/// inference a model multiplies its input by the three weights as one (one product of one
/// image's tokens instead of three small ones).
#[derive(Debug, Clone)]
pub(crate) struct FusedQkvAttention(pub FusedAttention);

impl FusedQkvAttention {
    /// The projection's width.
    fn width(&self) -> usize {
        let a = &self.0;
        a.heads * (2 * a.key_dim + a.value_dim)
    }

    /// Images and tokens, checked against the input's shape.
    fn dims(&self, layout: &Layout) -> Result<(usize, usize)> {
        let a = &self.0;
        let (b, n, width) = (a.batch, a.tokens, self.width());
        let fits = match layout.dims() {
            [rows, w] => *rows == b * n && *w == width,
            [bb, nn, w] => *bb == b && *nn == n && *w == width,
            _ => false,
        };
        if !fits || a.row_strides != (width, width) {
            candle_core::bail!(
                "fused attention: query-key-value {:?} does not fit {b} images of {n} tokens and {} heads of \
                 key_dim {} and value_dim {} (expected width {width})",
                layout.dims(),
                a.heads,
                a.key_dim,
                a.value_dim
            );
        }
        Ok((b, n))
    }

    /// `q`, `k` and `v` as the slices from their first element on.
    fn split<'a>(&self, qkv: &'a [f32]) -> (&'a [f32], &'a [f32], &'a [f32]) {
        let at = self.0.heads * self.0.key_dim;
        (qkv, &qkv[at..], &qkv[2 * at..])
    }
}

impl CustomOp1 for FusedQkvAttention {
    fn name(&self) -> &'static str {
        "vit-fused-qkv-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, n) = self.dims(layout)?;
        let (q, k, v) = self.split(f32_slice(storage, layout, self.name())?);
        Ok((CpuStorage::F32(self.0.forward(q, k, v, b, n)), self.0.out_shape(layout)))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let dqkv = {
            let ((sx, lx), (sg, lg)) = (host_values(qkv)?, host_values(&grad)?);
            let (b, n) = self.dims(lx)?;
            let name = self.name();
            let x = f32_slice(cpu(&sx), lx, name)?;
            let (q, k, v) = self.split(x);
            let mut dqkv = Vec::<f32>::with_capacity(x.len());
            let at = self.0.heads * self.0.key_dim;
            let base = Shared(dqkv.as_mut_ptr());
            // SAFETY: dqkv has the input's length and layout; the three gradients are its
            // column blocks, and every element of each is written.
            unsafe {
                self.0.backward_into(
                    q,
                    k,
                    v,
                    f32_slice(cpu(&sg), lg, name)?,
                    b,
                    n,
                    [base, Shared(base.at(at)), Shared(base.at(2 * at))],
                );
                dqkv.set_len(x.len());
            }
            dqkv
        };
        Ok(Some(Tensor::from_vec(dqkv, qkv.shape(), qkv.device())?))
    }
}
