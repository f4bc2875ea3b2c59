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

use std::cell::Cell;

use rayon::prelude::*;

use crate::isa::Bf16Kernel;
use crate::simd::simd_kernel;

/// Columns per packed panel of the right operand.
pub const PANEL: usize = 64;
/// bf16 values per AMX tile row (64 bytes): the shared dimension is padded to this.
pub const DEPTH_CHUNK: usize = 32;
/// Rows per AMX block (two tiles of 16).
pub const BLOCK_ROWS: usize = 32;
/// Rows per parallel task, packed together: a multiple of [`BLOCK_ROWS`].
const TASK_ROWS: usize = 4 * BLOCK_ROWS;

/// `f32` to bf16, rounded to nearest with ties to even; NaN stays NaN.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16;
    // A select rather than an early return, so that loops of it vectorise.
    if x.is_nan() { ((bits >> 16) as u16) | 0x40 } else { rounded }
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

thread_local! {
    /// The right operand's packing buffer, kept between products on this thread so that a
    /// product does not map and fault in fresh memory for it. Taken while in use: a product
    /// that runs inside another's parallel section (a stolen task) allocates its own.
    static RIGHT_BUFFER: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
    /// A task's block of left rows, packed where the task runs (in its core's cache).
    static LEFT_BLOCK: Cell<Vec<u16>> = const { Cell::new(Vec::new()) };
    /// All left rows, packed before the tasks where several tasks read the same rows.
    static LEFT_SHARED: Cell<Vec<u16>> = const { Cell::new(Vec::new()) };
}

/// `buffer` resized to `len` elements (their values are then overwritten in full).
fn sized<T: Copy + Default>(mut buffer: Vec<T>, len: usize) -> Vec<T> {
    buffer.truncate(len);
    buffer.resize(len, T::default());
    buffer
}

simd_kernel! {
    /// `dst[i] = to_bf16(src[i])`.
    fn convert_run(dst: &mut [u16], src: &[f32]) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = to_bf16(v);
        }
    }
}

/// `dst[i] = to_bf16(src[i])`, with AVX512-BF16's `vcvtneps2bf16` (16 values an instruction)
/// where the CPU has it: the same rounding to nearest even and quiet NaNs, except that values
/// below f32's normal range (under 1.2e-38 in magnitude) become zero, as the instruction
/// flushes them.
pub fn to_bf16_run(dst: &mut [u16], src: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::isa::bf16_conversions() {
        // SAFETY: the CPU has AVX512F and AVX512-BF16 (checked once by bf16_conversions).
        unsafe { convert_avx512_bf16(dst, src) };
        return;
    }
    convert_run(dst, src);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512vl")]
unsafe fn convert_avx512_bf16(dst: &mut [u16], src: &[f32]) {
    use std::arch::x86_64::*;
    let n = dst.len().min(src.len());
    let whole = n - n % 16;
    for i in (0..whole).step_by(16) {
        // SAFETY: i + 16 <= n: 16 values to read in src and 16 to write in dst.
        unsafe {
            let v = _mm512_loadu_ps(src.as_ptr().add(i));
            let b: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
            _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), b);
        }
    }
    for i in whole..n {
        dst[i] = to_bf16(src[i]);
    }
}

simd_kernel! {
    /// Rows `first..first + rows` of a matrix stored by columns (`col_stride` apart, each row
    /// a contiguous run) as bf16 rows of `depth` into `dst`: squares of 32 x 32 converted along
    /// memory and transposed in cache, in one call (a call per run of 32 values cost more
    /// than the conversion).
    fn pack_transposed(dst: &mut [u16], depth: usize, data: &[f32], first: usize, rows: usize, cols: usize, col_stride: usize) {
        let mut square = [[0u16; BLOCK_ROWS]; BLOCK_ROWS];
        for j0 in (0..cols).step_by(BLOCK_ROWS) {
            let width = BLOCK_ROWS.min(cols - j0);
            for (j, line) in square.iter_mut().enumerate().take(width) {
                let start = first + (j0 + j) * col_stride;
                for (d, &v) in line[..rows].iter_mut().zip(&data[start..start + rows]) {
                    *d = to_bf16(v);
                }
            }
            for r in 0..rows {
                let out = &mut dst[r * depth + j0..r * depth + j0 + width];
                for (j, o) in out.iter_mut().enumerate() {
                    *o = square[j][r];
                }
            }
        }
    }
}

/// Two values as the bf16 pair `tdpbf16ps` and `vdpbf16ps` multiply: `lo` in the low half.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(to_bf16(lo)) | (u32::from(to_bf16(hi)) << 16)
}

simd_kernel! {
    /// `dst[i] = pair(lo[i], hi[i])`: two rows of the right operand interleaved.
    fn pair_rows(dst: &mut [u32], lo: &[f32], hi: &[f32]) {
        for ((d, &l), &h) in dst.iter_mut().zip(lo).zip(hi) {
            *d = pair(l, h);
        }
    }
}

/// Rows `first..first + BLOCK_ROWS` of `a` as bf16 into `dst` (`BLOCK_ROWS` rows of `depth`),
/// zeros past `a`'s rows and columns.
fn pack_block(a: &Strided, first: usize, depth: usize, dst: &mut [u16]) {
    let rows = BLOCK_ROWS.min(a.rows.saturating_sub(first));
    if rows == 0 {
        dst.fill(0); // a block of padding rows
        return;
    }
    if a.col_stride == 1 {
        for r in 0..rows {
            let start = (first + r) * a.row_stride;
            to_bf16_run(&mut dst[r * depth..r * depth + a.cols], &a.data[start..start + a.cols]);
        }
    } else if a.row_stride == 1 {
        // A transposed operand (a weight gradient's `g^T`): its rows are columns in memory.
        pack_transposed(dst, depth, a.data, first, rows, a.cols, a.col_stride);
    } else {
        for r in 0..rows {
            for j in 0..a.cols {
                dst[r * depth + j] = to_bf16(a.at(first + r, j));
            }
        }
    }
    // The padding: the shared dimension past `cols`, and whole rows past `rows`.
    for r in 0..rows {
        dst[r * depth + a.cols..(r + 1) * depth].fill(0);
    }
    dst[rows * depth..BLOCK_ROWS * depth].fill(0);
}

/// The right operand of a product packed for the kernels: panels of [`PANEL`] columns, each
/// `[pair][PANEL]` of bf16 pairs (rows `2p` and `2p + 1` of a column in one `u32`), the
/// shared dimension padded with zeros to a multiple of [`DEPTH_CHUNK`] and the last panel's
/// columns likewise. A layer's weight packed once ([`PackedRight::weight`]) serves every
/// product with it.
#[derive(Debug, Clone)]
pub struct PackedRight {
    values: Vec<u32>,
    rows: usize,
    cols: usize,
    pairs: usize,
    panels: usize,
}

impl PackedRight {
    /// `b` packed, after checking that its strides stay inside its data.
    pub fn new(b: Strided) -> candle_core::Result<Self> {
        b.check("rhs")?;
        Ok(Self::pack(&b, Vec::new(), true))
    }

    /// `W^T` of a dense layer's weight `W: [out_dim, in_dim]` (row-major), the right operand
    /// of `x W^T`.
    pub fn weight(w: &[f32], out_dim: usize, in_dim: usize) -> candle_core::Result<Self> {
        if out_dim.checked_mul(in_dim) != Some(w.len()) {
            candle_core::bail!("bf16 weight: {} values are not {out_dim}x{in_dim}", w.len());
        }
        Self::new(Strided::row_major(w, out_dim, in_dim).t())
    }

    /// `(rows, cols)` of the operand, before padding.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn pack(b: &Strided, buffer: Vec<u32>, parallel: bool) -> Self {
        let pairs = b.rows.next_multiple_of(DEPTH_CHUNK) / 2;
        let panels = b.cols.div_ceil(PANEL);
        let mut values = sized(buffer, panels * pairs * PANEL);
        if parallel {
            values.par_chunks_mut(pairs * PANEL).enumerate().for_each(|(p, panel)| Self::pack_panel(b, p, panel));
        } else {
            values.chunks_mut(pairs * PANEL).enumerate().for_each(|(p, panel)| Self::pack_panel(b, p, panel));
        }
        Self { values, rows: b.rows, cols: b.cols, pairs, panels }
    }

    /// Columns `p * PANEL..` of `b` into `panel`.
    fn pack_panel(b: &Strided, p: usize, panel: &mut [u32]) {
        let first_col = p * PANEL;
        let cols = PANEL.min(b.cols - first_col);
        let full_pairs = b.rows / 2;
        if b.col_stride == 1 {
            // Rows in memory: two of them interleaved per pair.
            let row = |k: usize| &b.data[k * b.row_stride + first_col..][..cols];
            for pr in 0..full_pairs {
                pair_rows(&mut panel[pr * PANEL..pr * PANEL + cols], row(2 * pr), row(2 * pr + 1));
            }
            if b.rows % 2 == 1 {
                let dst = &mut panel[full_pairs * PANEL..full_pairs * PANEL + cols];
                dst.iter_mut().zip(row(b.rows - 1)).for_each(|(d, &v)| *d = pair(v, 0.0));
            }
        } else {
            // Columns in memory (`W^T` of a dense layer, `K^T` in attention) or arbitrary
            // strides. A column in memory is rounded as a run (a vector instruction per 16
            // values where the CPU has one), its pairs then placed down the panel.
            let mut rounded = vec![0u16; if b.row_stride == 1 { b.rows.next_multiple_of(2) } else { 0 }];
            for c in 0..cols {
                let col = first_col + c;
                if b.row_stride == 1 {
                    to_bf16_run(&mut rounded[..b.rows], &b.data[col * b.col_stride..][..b.rows]);
                    for (pr, two) in rounded.chunks_exact(2).enumerate() {
                        panel[pr * PANEL + c] = u32::from(two[0]) | (u32::from(two[1]) << 16);
                    }
                } else {
                    for pr in 0..b.rows.div_ceil(2) {
                        let hi = if 2 * pr + 1 < b.rows { b.at(2 * pr + 1, col) } else { 0.0 };
                        panel[pr * PANEL + c] = pair(b.at(2 * pr, col), hi);
                    }
                }
            }
        }
        // The padding: columns past the last, and pairs past the shared dimension.
        for pr in 0..b.rows.div_ceil(2) {
            panel[pr * PANEL + cols..(pr + 1) * PANEL].fill(0);
        }
        panel[b.rows.div_ceil(2) * PANEL..].fill(0);
    }

    /// The packed values of panel `p`.
    fn panel(&self, p: usize) -> &[u32] {
        &self.values[p * self.pairs * PANEL..(p + 1) * self.pairs * PANEL]
    }
}

/// `out (= or +=) a · b` for `a: m x k` and `b: k x n` read through strides, out row-major
/// `m x n`, with both operands rounded to bf16 and the products summed in f32, on `kernel`.
pub fn gemm(a: Strided, b: Strided, out: &mut [f32], accumulate: bool, kernel: Bf16Kernel) -> candle_core::Result<()> {
    b.check("rhs")?;
    let right = PackedRight::pack(&b, RIGHT_BUFFER.take(), true);
    let result = gemm_packed(a, &right, out, accumulate, kernel);
    RIGHT_BUFFER.set(right.values);
    result
}

/// [`gemm()`] with the right operand packed beforehand (a layer's weight, packed once).
pub fn gemm_packed(
    a: Strided,
    right: &PackedRight,
    out: &mut [f32],
    accumulate: bool,
    kernel: Bf16Kernel,
) -> candle_core::Result<()> {
    let (m, n) = (a.rows, right.cols);
    if m.checked_mul(n) != Some(out.len()) {
        candle_core::bail!("bf16 gemm: {m}x{} by {}x{n} into {} values", a.cols, right.rows, out.len());
    }
    let epilogue = if accumulate { Epilogue::Accumulate } else { Epilogue::Store };
    // SAFETY: `out` holds the m x n values written.
    unsafe { multiply(a, right, out.as_mut_ptr(), epilogue, kernel) }
}

/// `dst = alpha · a · b` on this thread alone, both operands rounded to bf16 and the products
/// summed in f32, into rows `dst_row_stride` apart: the products of one attention head, run
/// inside a task that is already one of many.
///
/// # Safety
/// `dst` addresses `a.rows` rows of `b.cols` writable values, `dst_row_stride` apart, that
/// overlap neither operand.
pub(crate) unsafe fn gemm_serial(
    a: Strided,
    b: Strided,
    dst: *mut f32,
    dst_row_stride: usize,
    alpha: f32,
    kernel: Bf16Kernel,
) -> candle_core::Result<()> {
    a.check("lhs")?;
    b.check("rhs")?;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        candle_core::bail!("bf16 gemm: {m}x{k} by {}x{n}", b.rows);
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let right = PackedRight::pack(&b, RIGHT_BUFFER.take(), false);
    let depth = k.next_multiple_of(DEPTH_CHUNK);
    let mut left = sized(LEFT_BLOCK.take(), m.next_multiple_of(BLOCK_ROWS) * depth);
    for (i, block) in left.chunks_exact_mut(BLOCK_ROWS * depth).enumerate() {
        pack_block(&a, i * BLOCK_ROWS, depth, block);
    }
    let mut sums = [[0f32; PANEL]; BLOCK_ROWS];
    #[cfg(target_arch = "x86_64")]
    let _tiles = (kernel == Bf16Kernel::Amx && crate::isa::amx_bf16_ready()).then(amx::Tiles::configure);
    #[cfg(not(target_arch = "x86_64"))]
    let _tiles = ();
    for panel in 0..right.panels {
        let weights = right.panel(panel);
        let cols = panel * PANEL..n.min((panel + 1) * PANEL);
        for (i, rows) in left.chunks_exact(BLOCK_ROWS * depth).enumerate() {
            run_block(kernel, tiles_ready(&_tiles), rows, depth, weights, &mut sums);
            let first = i * BLOCK_ROWS;
            for (r, row_sums) in sums.iter().enumerate().take(m.saturating_sub(first)) {
                // SAFETY: the caller's promise: row `first + r` of the destination holds n
                // values from `dst_row_stride * row`.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(dst.add((first + r) * dst_row_stride + cols.start), cols.len())
                };
                store_scaled(out, &row_sums[..cols.len()], alpha);
            }
        }
    }
    LEFT_BLOCK.set(left);
    RIGHT_BUFFER.set(right.values);
    Ok(())
}

/// What becomes of a block of sums.
#[derive(Clone, Copy)]
enum Epilogue<'a> {
    /// Written over the output.
    Store,
    /// Added to the output.
    Accumulate,
    /// The bias (one value per column) added, then GELU where asked, and written: the output
    /// need not hold anything before.
    Bias { bias: &'a [f32], gelu: bool },
}

/// `a · right` into the row-major `m x n` output at `out`, each block of sums finished by
/// `epilogue` while it is in cache.
///
/// # Safety
/// `out` addresses `a.rows * right.cols` writable `f32` (readable too with `Accumulate`).
unsafe fn multiply(
    a: Strided,
    right: &PackedRight,
    out: *mut f32,
    epilogue: Epilogue,
    kernel: Bf16Kernel,
) -> candle_core::Result<()> {
    a.check("lhs")?;
    let (m, k, n) = (a.rows, a.cols, right.cols);
    if right.rows != k {
        candle_core::bail!("bf16 gemm: {m}x{k} by {}x{n}", right.rows);
    }
    if let Epilogue::Bias { bias, .. } = epilogue
        && bias.len() != n
    {
        candle_core::bail!("bf16 gemm: a bias of {} values for {n} columns", bias.len());
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    // Tasks of up to TASK_ROWS rows by a run of panels. Each packs its rows where it runs
    // (they stay in that core's cache for all its panels); rows are split further by panels
    // only where there are too few of them to keep every thread busy (batch 1).
    let depth = k.next_multiple_of(DEPTH_CHUNK);
    let row_tasks = m.div_ceil(TASK_ROWS);
    let wanted = 4 * rayon::current_num_threads();
    let panel_tasks = wanted.div_ceil(row_tasks).clamp(1, right.panels);
    let panels_per_task = right.panels.div_ceil(panel_tasks);
    let dst = out as usize;
    // Where several tasks share rows, the rows are packed once beforehand, in parallel.
    let shared = (panels_per_task < right.panels).then(|| {
        let mut left = sized(LEFT_SHARED.take(), m.next_multiple_of(BLOCK_ROWS) * depth);
        left.par_chunks_mut(BLOCK_ROWS * depth)
            .enumerate()
            .for_each(|(i, dst)| pack_block(&a, i * BLOCK_ROWS, depth, dst));
        left
    });
    (0..row_tasks * right.panels.div_ceil(panels_per_task)).into_par_iter().for_each(|t| {
        let (chunk, block) = (t / row_tasks, t % row_tasks);
        let (row_start, row_end) = (block * TASK_ROWS, m.min((block + 1) * TASK_ROWS));
        let blocks = (row_end - row_start).div_ceil(BLOCK_ROWS);
        let mut own = Vec::new();
        let left = match &shared {
            Some(all) => &all[row_start * depth..(row_start + blocks * BLOCK_ROWS) * depth],
            None => {
                own = sized(LEFT_BLOCK.take(), blocks * BLOCK_ROWS * depth);
                for (i, dst) in own.chunks_exact_mut(BLOCK_ROWS * depth).enumerate() {
                    pack_block(&a, row_start + i * BLOCK_ROWS, depth, dst);
                }
                &own[..]
            }
        };
        let panels = chunk * panels_per_task..right.panels.min((chunk + 1) * panels_per_task);
        let mut sums = [[0f32; PANEL]; BLOCK_ROWS];
        #[cfg(target_arch = "x86_64")]
        let _tiles = (kernel == Bf16Kernel::Amx && crate::isa::amx_bf16_ready()).then(amx::Tiles::configure);
        #[cfg(not(target_arch = "x86_64"))]
        let _tiles = ();
        for panel in panels {
            let weights = right.panel(panel);
            let cols = panel * PANEL..n.min((panel + 1) * PANEL);
            for (i, rows) in left.chunks_exact(BLOCK_ROWS * depth).enumerate() {
                run_block(kernel, tiles_ready(&_tiles), rows, depth, weights, &mut sums);
                let first = row_start + i * BLOCK_ROWS;
                let count = BLOCK_ROWS.min(row_end - first);
                let mut outs: [&mut [f32]; BLOCK_ROWS] = std::array::from_fn(|r| -> &mut [f32] {
                    if r >= count {
                        return &mut [];
                    }
                    // SAFETY: tasks write disjoint (row, column) blocks of the output, which
                    // holds m x n values (and with `Accumulate`, values to read).
                    unsafe {
                        std::slice::from_raw_parts_mut((dst as *mut f32).add((first + r) * n + cols.start), cols.len())
                    }
                });
                let (finish, bias) = match epilogue {
                    Epilogue::Store => (Finish::Store, &[][..]),
                    Epilogue::Accumulate => (Finish::Accumulate, &[][..]),
                    Epilogue::Bias { bias, gelu } => {
                        (if gelu { Finish::BiasGelu } else { Finish::Bias }, &bias[cols.clone()])
                    }
                };
                finish_block(&mut outs, &sums, bias, finish);
            }
        }
        if shared.is_none() {
            LEFT_BLOCK.set(own);
        }
    });
    if let Some(left) = shared {
        LEFT_SHARED.set(left);
    }
    Ok(())
}

/// What [`finish_block`] does with each sum.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Finish {
    Store,
    Accumulate,
    Bias,
    BiasGelu,
}

simd_kernel! {
    /// A block of sums into its output rows (`outs`, each as long as the block's columns;
    /// empty past the last row): written, added, or with the bias added (and GELU), in one
    /// call per block, so that the choice of build and the loops' set-up are paid once for its
    /// 32 rows, not for each.
    fn finish_block(outs: &mut [&mut [f32]; BLOCK_ROWS], sums: &[[f32; PANEL]; BLOCK_ROWS], bias: &[f32], finish: Finish) {
        for (out, row) in outs.iter_mut().zip(sums) {
            let row = &row[..out.len()];
            match finish {
                Finish::Store => out.iter_mut().zip(row).for_each(|(o, &v)| *o = v),
                Finish::Accumulate => out.iter_mut().zip(row).for_each(|(o, &v)| *o += v),
                Finish::Bias => out.iter_mut().zip(row).zip(bias).for_each(|((o, &v), &b)| *o = v + b),
                Finish::BiasGelu => out
                    .iter_mut()
                    .zip(row)
                    .zip(bias)
                    .for_each(|((o, &v), &b)| *o = crate::simd::gelu_and_grad::<FMA>(v + b).0),
            }
        }
    }
}

simd_kernel! {
    /// `out[i] = alpha * sums[i]`.
    fn store_scaled(out: &mut [f32], sums: &[f32], alpha: f32) {
        for (o, &s) in out.iter_mut().zip(sums) {
            *o = alpha * s;
        }
    }
}

/// Whether this thread's AMX tiles are configured (`tiles`, made where the kernel is AMX and
/// AMX-BF16 is ready).
#[cfg(target_arch = "x86_64")]
fn tiles_ready(tiles: &Option<amx::Tiles>) -> bool {
    tiles.is_some()
}

#[cfg(not(target_arch = "x86_64"))]
fn tiles_ready(_tiles: &()) -> bool {
    false
}

/// The f32 sums of one block of 32 packed rows (`depth` bf16 each) with one panel, on
/// `kernel`; `tiles`: whether this thread's AMX tiles are configured. The one place the bf16
/// kernels are chosen between.
fn run_block(
    kernel: Bf16Kernel,
    tiles: bool,
    rows: &[u16],
    depth: usize,
    weights: &[u32],
    sums: &mut [[f32; PANEL]; BLOCK_ROWS],
) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the tiles are configured on this thread; both slices hold whole blocks.
        Bf16Kernel::Amx if tiles => unsafe { amx::block(rows, depth, weights, sums) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX512F and AVX512-BF16 (checked here); whole blocks as above.
        Bf16Kernel::Avx512Bf16 if crate::isa::cpu_has_avx512_bf16() => unsafe {
            avx512_bf16::block(rows, depth, weights, sums)
        },
        _ => portable_block(rows, depth, weights, sums),
    }
}

/// The f32 sums of 32 packed rows with one panel, in plain Rust.
fn portable_block(rows: &[u16], depth: usize, weights: &[u32], sums: &mut [[f32; PANEL]; BLOCK_ROWS]) {
    *sums = [[0.0; PANEL]; BLOCK_ROWS];
    for (r, row_sums) in sums.iter_mut().enumerate() {
        let row = &rows[r * depth..(r + 1) * depth];
        for p in 0..depth / 2 {
            let (a0, a1) = (from_bf16(row[2 * p]), from_bf16(row[2 * p + 1]));
            let w = &weights[p * PANEL..(p + 1) * PANEL];
            for (s, &two) in row_sums.iter_mut().zip(w) {
                *s += a0 * from_bf16(two as u16) + a1 * from_bf16((two >> 16) as u16);
            }
        }
    }
}

/// `x W^T + b` (GELU of it with `gelu`) for `x: [rows, in]` and a weight packed once
/// (`right`, from [`PackedRight::weight`]), the bias added and GELU applied as each block of
/// sums is stored.
pub(crate) fn dense_rows(
    x: &[f32],
    rows: usize,
    right: &PackedRight,
    bias: &[f32],
    gelu: bool,
    kernel: Bf16Kernel,
) -> candle_core::Result<Vec<f32>> {
    let (in_dim, out_dim) = (right.rows, right.cols);
    if bias.len() != out_dim || x.len() != rows.saturating_mul(in_dim) {
        candle_core::bail!(
            "bf16 dense: {} inputs of width {in_dim} and {} biases for {out_dim} outputs",
            x.len(),
            bias.len()
        );
    }
    let len = rows.checked_mul(out_dim).ok_or_else(|| candle_core::Error::Msg("bf16: output too large".into()))?;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: `out` has room for rows x out_dim values, and the bias epilogue writes them
    // all without reading any.
    unsafe {
        multiply(Strided::row_major(x, rows, in_dim), right, out.as_mut_ptr(), Epilogue::Bias { bias, gelu }, kernel)?;
        out.set_len(len);
    }
    Ok(out)
}

#[cfg(target_arch = "x86_64")]
mod avx512_bf16 {
    //! `vdpbf16ps`: for each of 16 f32 lanes, the two products of a pair of bf16 values added
    //! to the sum. The packed layouts suit it as they are: a panel's pair `p` is 64 `u32`, a
    //! column's two values each (four vectors), and a packed row's pair `p` is one `u32`,
    //! broadcast to every lane.

    use std::arch::x86_64::*;

    use crate::bf16::{BLOCK_ROWS, DEPTH_CHUNK, PANEL};

    /// Pairs of the shared dimension per slice: a slice of the panel (16 KB) stays in L1 while
    /// every six rows of the block pass over it.
    const SLICE_PAIRS: usize = 64;

    /// The f32 sums of 32 packed rows (`depth` bf16 each, a multiple of 32) with one panel,
    /// a slice of the shared dimension at a time, six rows at a time within it (24 vectors of
    /// sums in registers), the last two after.
    ///
    /// # Safety
    /// The CPU has AVX512F and AVX512-BF16; `rows` holds 32 rows of `depth` values and
    /// `weights` `depth / 2` pairs of PANEL values.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn block(rows: &[u16], depth: usize, weights: &[u32], sums: &mut [[f32; PANEL]; BLOCK_ROWS]) {
        assert!(depth.is_multiple_of(DEPTH_CHUNK) && rows.len() >= BLOCK_ROWS * depth);
        assert!(weights.len() >= depth / 2 * PANEL);
        *sums = [[0.0; PANEL]; BLOCK_ROWS];
        for start in (0..depth / 2).step_by(SLICE_PAIRS) {
            let pairs = start..(depth / 2).min(start + SLICE_PAIRS);
            let mut first = 0;
            while first + 6 <= BLOCK_ROWS {
                // SAFETY: as this function's, for rows first..first + 6.
                unsafe { rows_block::<6>(rows, first, depth, pairs.clone(), weights, sums) };
                first += 6;
            }
            // SAFETY: likewise for the last BLOCK_ROWS % 6 rows.
            unsafe { rows_block::<{ BLOCK_ROWS % 6 }>(rows, first, depth, pairs, weights, sums) };
        }
    }

    /// Adds the products over `pairs` of rows `first..first + N` to their sums.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn rows_block<const N: usize>(
        rows: &[u16],
        first: usize,
        depth: usize,
        pairs: std::ops::Range<usize>,
        weights: &[u32],
        sums: &mut [[f32; PANEL]; BLOCK_ROWS],
    ) {
        let starts: [*const u16; N] = std::array::from_fn(|r| rows[(first + r) * depth..].as_ptr());
        let w = weights.as_ptr();
        // SAFETY: row first + r of the sums holds 64 values, 16 from 16 * j.
        let mut acc: [[__m512; 4]; N] = std::array::from_fn(|r| {
            std::array::from_fn(|j| unsafe { _mm512_loadu_ps(sums[first + r].as_ptr().add(16 * j)) })
        });
        for p in pairs {
            // SAFETY: pair p < depth / 2 of the panel (64 u32) and of each row (two u16, read
            // as one u32 wherever it lies) are inside the slices, as the caller promised.
            unsafe {
                let run = w.add(p * PANEL).cast::<__m512i>();
                let b: [__m512bh; 4] = std::array::from_fn(|j| std::mem::transmute(_mm512_loadu_si512(run.add(j))));
                for r in 0..N {
                    let pair = starts[r].add(2 * p).cast::<u32>().read_unaligned();
                    let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair as i32));
                    for j in 0..4 {
                        acc[r][j] = _mm512_dpbf16_ps(acc[r][j], a, b[j]);
                    }
                }
            }
        }
        for (r, row_acc) in acc.iter().enumerate() {
            for (j, &v) in row_acc.iter().enumerate() {
                // SAFETY: as the loads above.
                unsafe { _mm512_storeu_ps(sums[first + r].as_mut_ptr().add(16 * j), v) };
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
    pub(super) unsafe fn block(rows: &[u16], depth: usize, weights: &[u32], sums: &mut [[f32; PANEL]; BLOCK_ROWS]) {
        assert!(depth.is_multiple_of(DEPTH_CHUNK) && rows.len() >= BLOCK_ROWS * depth);
        assert!(weights.len() >= depth / 2 * PANEL);
        let (a, w, out) = (rows.as_ptr(), weights.as_ptr().cast::<u16>(), sums.as_mut_ptr().cast::<f32>());
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

#[cfg(test)]
mod tests {
    use crate::bf16::{Strided, gemm, gemm_serial};
    use crate::isa::Bf16Kernel;
    use vit_rng::{splitmix64, unit_f32};

    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n as u64).map(|i| unit_f32(splitmix64(seed ^ splitmix64(i))) * 2.0 - 1.0).collect()
    }

    /// The single-threaded product of an attention head (strided operands, a strided
    /// destination, a scale) gives `gemm`'s values (tested against f64 in `tests/bf16.rs`)
    /// times the scale, on every kernel, and leaves the destination's other columns alone.
    #[test]
    fn the_serial_product_is_the_parallel_one_scaled_into_strided_rows() {
        for &(m, k, n) in &[(1, 1, 1), (197, 64, 197), (37, 197, 23), (33, 5, 65)] {
            let stride = 3 * k + 1; // a head's columns among others, as in attention
            let a = values(m * stride, 1);
            let b = values(n * stride, 2);
            let (lhs, rhs) = (
                Strided { data: &a[..(m - 1) * stride + k], rows: m, cols: k, row_stride: stride, col_stride: 1 },
                // b^T stored row by row: k x n read down columns (as K^T in `q k^T`).
                Strided { data: &b[..(n - 1) * stride + k], rows: k, cols: n, row_stride: 1, col_stride: stride },
            );
            for kernel in Bf16Kernel::available() {
                let mut want = vec![0f32; m * n];
                gemm(lhs, rhs, &mut want, false, kernel).unwrap();
                let out_stride = n + 7;
                let mut out = vec![f32::NAN; m * out_stride];
                // SAFETY: m rows of n values, out_stride apart, in `out`.
                unsafe { gemm_serial(lhs, rhs, out.as_mut_ptr(), out_stride, 0.25, kernel) }.unwrap();
                for i in 0..m {
                    for j in 0..out_stride {
                        let got = out[i * out_stride + j];
                        if j < n {
                            assert_eq!(got, 0.25 * want[i * n + j], "{kernel:?} {m}x{k}x{n} at ({i}, {j})");
                        } else {
                            assert!(got.is_nan(), "{kernel:?}: column {j} past the product was written");
                        }
                    }
                }
            }
        }
    }
}
