//! The matrix products of the CPU kernels: one wrapper over the `gemm` crate (the kernels
//! candle itself uses), operands given by pointer and strides.

use gemm::Parallelism;

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
