//! bfloat16 matrix products with float32 sums, for mixed precision on the CPU: both operands
//! are rounded to bf16 (nearest, ties to even) as they are packed, the products are summed in
//! f32, and the result is f32. The `f32` tensors around them stay as they are: softmax,
//! LayerNorm, GELU and the optimizer run in f32, as PyTorch's CPU autocast does.
//!
//! # Layout
//! The left operand is packed as rows of bf16, its shared dimension padded to a multiple of
//! [`DEPTH_CHUNK`] (32 values, one 64-byte AMX tile row); the right one in panels of
//! [`PANEL`] (64) columns by pairs of the shared dimension (`[panel][pair][64][2]`), the
//! pairs that `tdpbf16ps` and `vdpbf16ps` multiply and add. Padding is zeros.
//!
//! The kernels ([`Bf16Kernel`]): AMX-BF16 tiles (32 x 32 blocks) and a portable one that sums
//! the same bf16 products in f32. Their sums round differently (AMX adds each pair's
//! products before accumulating, with its own rounding); tests hold both to the f64 product of
//! the bf16 values within f32 rounding.

use rayon::prelude::*;

use crate::isa::Bf16Kernel;
use crate::simd::simd_kernel;

/// Columns per packed panel of the right operand.
pub const PANEL: usize = 64;
/// bf16 values per AMX tile row (64 bytes): the shared dimension is padded to this.
pub const DEPTH_CHUNK: usize = 32;
/// Rows per AMX block (two tiles of 16).
pub const BLOCK_ROWS: usize = 32;
/// Rows per parallel task: a multiple of [`BLOCK_ROWS`].
const TASK_ROWS: usize = 4 * BLOCK_ROWS;
/// Panels per parallel task.
const TASK_PANELS: usize = 2;

/// `f32` to bf16, rounded to nearest with ties to even; NaN stays NaN.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16;
    // A select rather than an early return, so that loops of it vectorise.
    if x.is_nan() { ((bits >> 16) as u16) | 0x40 } else { rounded }
}

simd_kernel! {
    /// `dst[i] = to_bf16(src[i])`.
    fn convert_run(dst: &mut [u16], src: &[f32]) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = to_bf16(v);
        }
    }
}

simd_kernel! {
    /// `dst[i * stride] = to_bf16(src[i])`: one column of a block, written down its rows.
    fn convert_strided(dst: &mut [u16], stride: usize, src: &[f32]) {
        for (i, &v) in src.iter().enumerate() {
            dst[i * stride] = to_bf16(v);
        }
    }
}

/// bf16 to `f32` (exact).
#[inline(always)]
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits(u32::from(x) << 16)
}

/// A matrix operand read from `f32` memory through strides: element `(i, j)` is at
/// `data[offset + i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Strided<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose, by strides.
    pub fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    fn check(&self, what: &str) -> candle_core::Result<()> {
        if self.rows == 0 || self.cols == 0 {
            return Ok(());
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .and_then(|r| (self.cols - 1).checked_mul(self.col_stride).and_then(|c| r.checked_add(c)));
        match last {
            Some(last) if last < self.data.len() => Ok(()),
            _ => candle_core::bail!(
                "bf16 gemm: {what} of {}x{} with strides ({}, {}) does not fit {} values",
                self.rows,
                self.cols,
                self.row_stride,
                self.col_stride,
                self.data.len()
            ),
        }
    }

    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

/// The left operand packed: `[padded rows][depth]` bf16.
struct PackedLeft {
    values: Vec<u16>,
    depth: usize,
}

fn pack_left(a: &Strided, padded_rows: usize) -> PackedLeft {
    let depth = a.cols.next_multiple_of(DEPTH_CHUNK);
    let mut values = vec![0u16; padded_rows * depth];
    if a.col_stride == 1 {
        values.par_chunks_mut(depth).take(a.rows).enumerate().for_each(|(i, row)| {
            convert_run(row, &a.data[i * a.row_stride..i * a.row_stride + a.cols]);
        });
    } else {
        // A transposed operand (a weight gradient's `g^T`): blocks of 32 rows, each column of
        // the block read as a contiguous run where the strides allow.
        values.par_chunks_mut(BLOCK_ROWS * depth).enumerate().for_each(|(block, dst)| {
            let first = block * BLOCK_ROWS;
            let rows = BLOCK_ROWS.min(a.rows.saturating_sub(first));
            if rows == 0 {
                return; // padding rows: zeros
            }
            if a.row_stride == 1 {
                for j in 0..a.cols {
                    let start = first + j * a.col_stride;
                    convert_strided(&mut dst[j..], depth, &a.data[start..start + rows]);
                }
            } else {
                for j in 0..a.cols {
                    for r in 0..rows {
                        dst[r * depth + j] = to_bf16(a.at(first + r, j));
                    }
                }
            }
        });
    }
    PackedLeft { values, depth }
}

/// The right operand packed: `[panel][pair][PANEL][2]` bf16.
struct PackedRight {
    values: Vec<u16>,
    pairs: usize,
    panels: usize,
}

fn pack_right(b: &Strided) -> PackedRight {
    let pairs = b.rows.next_multiple_of(DEPTH_CHUNK) / 2;
    let panels = b.cols.div_ceil(PANEL);
    let mut values = vec![0u16; panels * pairs * PANEL * 2];
    values.par_chunks_mut(pairs * PANEL * 2).enumerate().for_each(|(p, panel)| {
        let cols = PANEL.min(b.cols.saturating_sub(p * PANEL));
        if b.row_stride == 1 && b.col_stride != 1 {
            // A transposed weight (`W^T` of a dense layer): each column is a contiguous row of W.
            for c in 0..cols {
                let start = (p * PANEL + c) * b.col_stride;
                let column = &b.data[start..start + b.rows];
                // Even and odd rows of the column go to the two halves of each pair.
                for half in 0..2 {
                    let values: Vec<f32> = column.iter().skip(half).step_by(2).copied().collect();
                    convert_strided(&mut panel[c * 2 + half..], PANEL * 2, &values);
                }
            }
        } else {
            for k in 0..b.rows {
                if b.col_stride == 1 {
                    let start = k * b.row_stride + p * PANEL;
                    convert_strided(&mut panel[k / 2 * PANEL * 2 + k % 2..], 2, &b.data[start..start + cols]);
                } else {
                    for c in 0..cols {
                        panel[(k / 2 * PANEL + c) * 2 + k % 2] = to_bf16(b.at(k, p * PANEL + c));
                    }
                }
            }
        }
    });
    PackedRight { values, pairs, panels }
}

/// `out (= or +=) a · b` for `a: m x k` and `b: k x n` read through strides, out row-major
/// `m x n`, with both operands rounded to bf16 and the products summed in f32, on `kernel`.
pub fn gemm(a: Strided, b: Strided, out: &mut [f32], accumulate: bool, kernel: Bf16Kernel) -> candle_core::Result<()> {
    a.check("lhs")?;
    b.check("rhs")?;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || out.len() != m * n {
        candle_core::bail!("bf16 gemm: {m}x{k} by {}x{n} into {} values", b.rows, out.len());
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let padded_rows = m.next_multiple_of(TASK_ROWS);
    let left = pack_left(&a, padded_rows);
    let right = pack_right(&b);
    let (row_tasks, panel_tasks) = (padded_rows / TASK_ROWS, right.panels.div_ceil(TASK_PANELS));
    let dst = out.as_mut_ptr() as usize;
    (0..row_tasks * panel_tasks).into_par_iter().for_each(|t| {
        let (chunk, block) = (t / row_tasks, t % row_tasks);
        let row_end = m.min((block + 1) * TASK_ROWS);
        let panels = chunk * TASK_PANELS..right.panels.min((chunk + 1) * TASK_PANELS);
        let mut sums = [[0f32; PANEL]; BLOCK_ROWS];
        #[cfg(target_arch = "x86_64")]
        let _tiles = (kernel == Bf16Kernel::Amx && crate::isa::amx_bf16_ready()).then(amx::Tiles::configure);
        for first in (block * TASK_ROWS..row_end).step_by(BLOCK_ROWS) {
            for panel in panels.clone() {
                let weights = &right.values[panel * right.pairs * PANEL * 2..(panel + 1) * right.pairs * PANEL * 2];
                let rows = &left.values[first * left.depth..(first + BLOCK_ROWS) * left.depth];
                match kernel {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the tiles are configured on this thread (`_tiles`, made when the
                    // kernel is AMX and AMX-BF16 is ready); both slices hold whole blocks.
                    Bf16Kernel::Amx if _tiles.is_some() => unsafe { amx::block(rows, left.depth, weights, &mut sums) },
                    _ => portable_block(rows, left.depth, weights, &mut sums),
                }
                let cols = panel * PANEL..n.min((panel + 1) * PANEL);
                for (r, row_sums) in sums.iter().enumerate().take(row_end - first) {
                    let row = first + r;
                    // SAFETY: tasks write disjoint (row, column) blocks of `out`, which holds
                    // m x n values.
                    let out_row = unsafe {
                        std::slice::from_raw_parts_mut((dst as *mut f32).add(row * n + cols.start), cols.len())
                    };
                    if accumulate {
                        out_row.iter_mut().zip(row_sums).for_each(|(o, s)| *o += s);
                    } else {
                        out_row.copy_from_slice(&row_sums[..cols.len()]);
                    }
                }
            }
        }
    });
    Ok(())
}

/// The f32 sums of 32 packed rows with one panel, in plain Rust.
fn portable_block(rows: &[u16], depth: usize, weights: &[u16], sums: &mut [[f32; PANEL]; BLOCK_ROWS]) {
    *sums = [[0.0; PANEL]; BLOCK_ROWS];
    for (r, row_sums) in sums.iter_mut().enumerate() {
        let row = &rows[r * depth..(r + 1) * depth];
        for pair in 0..depth / 2 {
            let (a0, a1) = (from_bf16(row[2 * pair]), from_bf16(row[2 * pair + 1]));
            let w = &weights[pair * PANEL * 2..(pair + 1) * PANEL * 2];
            for (c, s) in row_sums.iter_mut().enumerate() {
                *s += a0 * from_bf16(w[2 * c]) + a1 * from_bf16(w[2 * c + 1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod amx {
    //! `tdpbf16ps` on tiles, as the int8 kernel's AMX block (see `crate::int8`).

    use std::arch::asm;

    use crate::bf16::{BLOCK_ROWS, DEPTH_CHUNK, PANEL};

    pub(super) use crate::amx::Tiles;

    /// The f32 sums of 32 packed rows (`depth` bf16 each, a multiple of 32) with one panel.
    ///
    /// # Safety
    /// Tiles configured on this thread ([`Tiles::configure`]); `rows` holds 32 rows of `depth`
    /// values and `weights` `depth / 2` pairs of PANEL x 2 values.
    pub(super) unsafe fn block(rows: &[u16], depth: usize, weights: &[u16], sums: &mut [[f32; PANEL]; BLOCK_ROWS]) {
        assert!(depth.is_multiple_of(DEPTH_CHUNK) && rows.len() >= BLOCK_ROWS * depth);
        assert!(weights.len() >= depth / 2 * PANEL * 2);
        let (a, w, out) = (rows.as_ptr(), weights.as_ptr(), sums.as_mut_ptr().cast::<f32>());
        let row_bytes = depth * 2;
        let pair_bytes = PANEL * 4;
        for half in 0..2 {
            // SAFETY: no memory access.
            unsafe {
                asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem))
            };
            for chunk in 0..depth / DEPTH_CHUNK {
                // SAFETY (loads): 16 rows of 64 bytes at each address and stride, inside the
                // slices checked above (activations: rows 0-31, this chunk's 32 values; weights:
                // pairs chunk * 16.. + 16, columns half * 32.. + 32).
                unsafe {
                    let a0 = a.add(chunk * DEPTH_CHUNK);
                    let a1 = a0.add(16 * depth);
                    let b0 = w.add(chunk * 16 * PANEL * 2 + half * 64);
                    let b1 = b0.add(32);
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1,
                        sa = in(reg) row_bytes, sb = in(reg) pair_bytes,
                        options(nostack, readonly),
                    );
                }
            }
            // SAFETY: four 16 x 16 f32 stores into `sums` (32 rows of 64 f32).
            unsafe {
                let c0 = out.add(half * 32);
                let c1 = c0.add(16);
                let c2 = c0.add(16 * PANEL);
                let c3 = c2.add(16);
                asm!(
                    "tilestored [{c0} + {s}*1], tmm0",
                    "tilestored [{c1} + {s}*1], tmm1",
                    "tilestored [{c2} + {s}*1], tmm2",
                    "tilestored [{c3} + {s}*1], tmm3",
                    c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) PANEL * 4,
                    options(nostack),
                );
            }
        }
    }
}
