//! int8 dense layers for inference: weights quantized once per output channel, activations per
//! row at run time, integer products summed in int32, and the dequantization, the bias and
//! (optionally) GELU applied to each block of the output while it is in cache.
//!
//! # Scheme
//! - Weight `W: [out, in]`: symmetric per output channel, `w_q = round(w / s_c)` in
//!   `[-127, 127]`, `s_c = max |W[c, :]| / 127`.
//! - Activation row `x: [in]`: asymmetric per row (per token), `x_q = round(x / s_r) + z_r` in
//!   `[0, 255]`, its range widened to hold 0. The output of a GELU is almost all positive: a
//!   symmetric scale would leave half of the 256 codes unused.
//! - `y[r, c] = s_r s_c (sum_k x_q w_q - z_r sum_k w_q[c, k]) + b[c]`: the column sums are
//!   computed once with the weights, so the zero point costs one multiply-add per output.
//!
//! The products are unsigned bytes by signed bytes (the operands of `vpdpbusd` and AMX's
//! `tdpbusd`), summed exactly in int32, so the AMX, AVX512-VNNI and portable kernels give the
//! same sums and the same outputs to the bit. `in` is limited to [`MAX_IN`] so that no sum
//! can overflow. [`crate::isa`] picks the kernel.
//!
//! # Layout
//! Output channels are packed in panels of [`PANEL`] (64) and the input dimension in groups of
//! 4: the 256 bytes of one group of a panel are one load of four 512-bit registers, 4 input
//! values for each of 64 channels, as `vpdpbusd` takes them; 16 consecutive groups of 16
//! channels (a stride of 256 bytes) are one AMX weight tile. The input width is padded to a
//! multiple of [`DEPTH_CHUNK`] and the last panel to 64 channels, with zero weights; the
//! quantized rows are padded to whole tasks, so no kernel reads past them.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::activation::{gelu_grad_scale, gelu_rows_in_place};
use crate::cpu::f32_slice;
use crate::dense::Product;
use crate::isa::Int8Kernel;
use crate::simd::simd_kernel;

/// Output channels per packed panel: four 512-bit registers of 16 int32 sums.
pub const PANEL: usize = 64;
/// Rows per micro-tile: 6 rows x 4 registers = 24 accumulators, plus 4 weight registers and
/// one broadcast, of the 32 AVX-512 registers.
pub const TILE_ROWS: usize = 6;
/// Rows per parallel task (a multiple of [`TILE_ROWS`]): its quantized rows stay in L2 while
/// it passes over its panels.
/// A multiple of [`AMX_ROWS`] too.
const TASK_ROWS: usize = 16 * TILE_ROWS;
/// Panels per parallel task: 256 channels, whose weights (at most 256 x in bytes) stay in L2
/// while the task passes over its rows.
const TASK_PANELS: usize = 2;

/// The groups of 4 inputs a row of `in_dim` is stored in: whole [`DEPTH_CHUNK`]s.
fn groups_of(in_dim: usize) -> usize {
    in_dim.next_multiple_of(DEPTH_CHUNK) / 4
}
/// Input bytes per AMX tile row: the input width is padded to a multiple of this (with zero
/// weights), so that every kernel walks whole 64-byte chunks.
pub const DEPTH_CHUNK: usize = 64;
/// Rows per AMX block: two tiles of 16 rows.
pub const AMX_ROWS: usize = 32;
/// The largest input width whose int32 sums cannot overflow: 255 x 127 x MAX_IN < 2^31.
pub const MAX_IN: usize = (i32::MAX as usize) / (255 * 127);

/// The weights of a dense layer quantized to int8 per output channel and packed for the
/// int8 kernels, with the layer's bias.
#[derive(Clone)]
pub struct Int8Weight {
    out_dim: usize,
    in_dim: usize,
    /// `[panels][groups][PANEL][4]` signed bytes.
    packed: Vec<i8>,
    /// `s_c` per output channel.
    scales: Vec<f32>,
    /// `sum_k w_q[c, k]` per output channel.
    column_sums: Vec<i32>,
    /// The bias, zeros when the layer has none.
    bias: Vec<f32>,
}

impl std::fmt::Debug for Int8Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Int8Weight([{}, {}])", self.out_dim, self.in_dim)
    }
}

/// The weight quantization of the scheme (see the module): `weight: [out, in]` row-major to
/// its int8 values (the same layout) and one scale per output channel, `s_c = max |W[c, :]| /
/// 127` (1 for a row of zeros), `w_q = round(w / s_c)`, halves away from zero. Exporters that
/// write the scheme in another format take it from here.
pub fn quantize_per_output_channel(weight: &[f32], out_dim: usize, in_dim: usize) -> (Vec<i8>, Vec<f32>) {
    let mut values = vec![0i8; out_dim * in_dim];
    let mut scales = vec![0f32; out_dim];
    for (c, row) in weight.chunks_exact(in_dim.max(1)).take(out_dim).enumerate() {
        let max = row.iter().fold(0f32, |m, w| m.max(w.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        scales[c] = scale;
        for (q, &w) in values[c * in_dim..(c + 1) * in_dim].iter_mut().zip(row) {
            *q = (w / scale).round().clamp(-127.0, 127.0) as i8;
        }
    }
    (values, scales)
}

impl Int8Weight {
    /// Quantizes `weight: [out, in]` (row-major) and keeps `bias: [out]`.
    ///
    /// Errors: sizes that do not fit, a width over [`MAX_IN`], or a weight that is not finite.
    pub fn quantize(weight: &[f32], out_dim: usize, in_dim: usize, bias: Option<&[f32]>) -> Result<Self> {
        if out_dim.checked_mul(in_dim) != Some(weight.len()) {
            candle_core::bail!("int8: weight has {} values, not out {out_dim} x in {in_dim}", weight.len());
        }
        if in_dim == 0 || out_dim == 0 {
            candle_core::bail!("int8: a dense layer of {out_dim} x {in_dim} has nothing to quantize");
        }
        if in_dim > MAX_IN {
            candle_core::bail!("int8: input width {in_dim} exceeds {MAX_IN}, above which int32 sums can overflow");
        }
        if let Some(b) = bias
            && b.len() != out_dim
        {
            candle_core::bail!("int8: bias has {} values, expected {out_dim}", b.len());
        }
        if weight.iter().any(|w| !w.is_finite()) {
            candle_core::bail!("int8: the weight holds a value that is not finite");
        }
        let groups = groups_of(in_dim);
        let panels = out_dim.div_ceil(PANEL);
        let mut packed = vec![0i8; panels * groups * PANEL * 4];
        let mut column_sums = vec![0i32; out_dim];
        let (values, scales) = quantize_per_output_channel(weight, out_dim, in_dim);
        for c in 0..out_dim {
            let (panel, lane) = (c / PANEL, c % PANEL);
            let mut sum = 0i32;
            for (k, &q) in values[c * in_dim..(c + 1) * in_dim].iter().enumerate() {
                sum += i32::from(q);
                packed[((panel * groups + k / 4) * PANEL + lane) * 4 + k % 4] = q;
            }
            column_sums[c] = sum;
        }
        let bias = bias.map_or_else(|| vec![0.0; out_dim], <[f32]>::to_vec);
        Ok(Self { out_dim, in_dim, packed, scales, column_sums, bias })
    }

    /// [`quantize`](Self::quantize) from tensors: `weight: [out, in]`, `bias: [out]`, any
    /// float dtype and device (the packed weights live in host memory).
    pub fn from_tensors(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        let host = |t: &Tensor| t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>();
        let w = host(weight)?;
        let b = bias.map(host).transpose()?;
        Self::quantize(&w, out_dim, in_dim, b.as_deref())
    }

    /// Output channels.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// The weights as the kernels see them, dequantized: `[out, in]` row-major, `w_q s_c`.
    pub fn dequantized(&self) -> Vec<f32> {
        let groups = groups_of(self.in_dim);
        let mut out = vec![0f32; self.out_dim * self.in_dim];
        for c in 0..self.out_dim {
            for k in 0..self.in_dim {
                let q = self.packed[((c / PANEL * groups + k / 4) * PANEL + c % PANEL) * 4 + k % 4];
                out[c * self.in_dim + k] = f32::from(q) * self.scales[c];
            }
        }
        out
    }

    /// `x W^T + b` (then GELU with `gelu`) for `x: [rows, in]` row-major, with `kernel`.
    pub fn forward_rows(&self, x: &[f32], rows: usize, gelu: bool, kernel: Int8Kernel) -> Result<Vec<f32>> {
        if rows.checked_mul(self.in_dim) != Some(x.len()) {
            candle_core::bail!("int8: input has {} values, not {rows} rows of {}", x.len(), self.in_dim);
        }
        let activations = QuantizedRows::new(x, rows, self.in_dim);
        let (n, panels) = (self.out_dim, self.out_dim.div_ceil(PANEL));
        let row_tasks = activations.padded_rows.div_ceil(TASK_ROWS);
        let panel_tasks = panels.div_ceil(TASK_PANELS);
        let mut out: Vec<f32> = Vec::with_capacity(rows * n);
        let dst = out.as_mut_ptr() as usize;
        // Task t covers panel chunk t / row_tasks and row block t % row_tasks: a thread's run of
        // consecutive tasks shares its weights.
        (0..row_tasks * panel_tasks).into_par_iter().for_each(|t| {
            let (chunk, block) = (t / row_tasks, t % row_tasks);
            let row_end = rows.min((block + 1) * TASK_ROWS);
            let panels = chunk * TASK_PANELS..panels.min((chunk + 1) * TASK_PANELS);
            // Writes the sums of `sums.len()` rows from `first` with `panel`'s channels into
            // `out`, as outputs (the rows below `row_end` only).
            let emit = |sums: &[[i32; PANEL]], first: usize, panel: usize| {
                let cols = panel * PANEL..n.min((panel + 1) * PANEL);
                for (r, row_sums) in sums.iter().enumerate().take(row_end.saturating_sub(first)) {
                    let row = first + r;
                    // SAFETY: `out` has room for rows x n values; each (row, column) is
                    // written by exactly one task (tasks are disjoint blocks of rows and
                    // panels), and every one is written before `set_len` below.
                    let out_row = unsafe {
                        std::slice::from_raw_parts_mut((dst as *mut f32).add(row * n + cols.start), cols.len())
                    };
                    self.dequantize_into(out_row, row_sums, &activations, row, cols.start);
                    if gelu {
                        gelu_rows_in_place(out_row);
                    }
                }
            };
            match kernel {
                #[cfg(target_arch = "x86_64")]
                Int8Kernel::Amx if crate::isa::amx_ready() => {
                    let mut sums = [[0i32; PANEL]; AMX_ROWS];
                    let _tiles = amx::Tiles::configure();
                    for first in (block * TASK_ROWS..row_end).step_by(AMX_ROWS) {
                        for panel in panels.clone() {
                            // SAFETY: AMX is ready on this thread (`_tiles`); the activations
                            // hold whole blocks of AMX_ROWS rows of `groups` groups (padded),
                            // and the panel `groups` groups of PANEL x 4 bytes.
                            unsafe {
                                amx::block(&activations, first, self.panel(panel, activations.groups), &mut sums)
                            };
                            emit(&sums, first, panel);
                        }
                    }
                }
                _ => {
                    let mut sums = [[0i32; PANEL]; TILE_ROWS];
                    for tile in (block * TASK_ROWS..row_end).step_by(TILE_ROWS) {
                        for panel in panels.clone() {
                            self.tile(&activations, tile, panel, kernel, &mut sums);
                            emit(&sums, tile, panel);
                        }
                    }
                }
            }
        });
        // SAFETY: the tasks cover every row below `rows` and every column below n.
        unsafe { out.set_len(rows * n) };
        Ok(out)
    }

    /// The int32 sums of rows `tile..tile + TILE_ROWS` (of the padded activations) with the
    /// 64 channels of `panel`.
    fn tile(
        &self,
        a: &QuantizedRows,
        tile: usize,
        panel: usize,
        kernel: Int8Kernel,
        sums: &mut [[i32; PANEL]; TILE_ROWS],
    ) {
        let groups = a.groups;
        let rows = &a.values[tile * groups * 4..(tile + TILE_ROWS) * groups * 4];
        let weights = self.panel(panel, groups);
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx512Vnni if crate::isa::cpu_has_avx512_vnni() => {
                // SAFETY: the CPU has the features (checked just above); both slices hold
                // TILE_ROWS x groups x 4 and groups x PANEL x 4 bytes.
                unsafe { vnni::tile(rows, weights, groups, sums) }
            }
            _ => portable_tile(rows, weights, groups, sums),
        }
    }

    /// The packed weights of one panel: `groups` groups of PANEL x 4 bytes.
    fn panel(&self, panel: usize, groups: usize) -> &[i8] {
        &self.packed[panel * groups * PANEL * 4..(panel + 1) * groups * PANEL * 4]
    }

    /// One output row's channels from `first` on, from their int32 sums.
    fn dequantize_into(&self, out: &mut [f32], sums: &[i32; PANEL], a: &QuantizedRows, row: usize, first: usize) {
        let channels = first..first + out.len();
        dequantize_row(
            out,
            sums,
            &self.scales[channels.clone()],
            &self.column_sums[channels.clone()],
            &self.bias[channels],
            a.scales[row],
            a.zero_points[row],
        );
    }
}

/// Activation rows quantized to unsigned bytes, asymmetric per row, padded to whole tiles and
/// whole groups of 4.
struct QuantizedRows {
    /// `[padded_rows][groups * 4]`.
    values: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    groups: usize,
    padded_rows: usize,
}

impl QuantizedRows {
    fn new(x: &[f32], rows: usize, in_dim: usize) -> Self {
        let groups = groups_of(in_dim);
        let width = groups * 4;
        // Whole tiles of every kernel: the last tile or block reads padding, never past the end.
        let padded_rows = rows.next_multiple_of(TASK_ROWS);
        let mut values = vec![0u8; padded_rows * width];
        let mut scales = vec![0f32; padded_rows];
        let mut zero_points = vec![0i32; padded_rows];
        values
            .par_chunks_mut(width)
            .zip(scales.par_iter_mut().zip(zero_points.par_iter_mut()))
            .take(rows)
            .enumerate()
            .for_each(|(r, (q, (scale, zero)))| {
                let row = &x[r * in_dim..(r + 1) * in_dim];
                let mut range = [0f32; 3];
                row_range(&mut range, row);
                let [lo, hi, nan] = range;
                // A row that is not finite gets a NaN scale, so its outputs are NaN, as a float
                // product's would be, not numbers that look right (its codes stay 0).
                let finite = lo.is_finite() && hi.is_finite() && nan == 0.0;
                let s = if !finite {
                    f32::NAN
                } else if hi > lo {
                    (hi - lo) / 255.0
                } else {
                    1.0
                };
                let z = if finite { (-lo / s).round().clamp(0.0, 255.0) } else { 0.0 };
                if finite {
                    quantize_row(q, row, 1.0 / s, z);
                }
                *scale = s;
                *zero = z as i32;
            });
        Self { values, scales, zero_points, groups, padded_rows }
    }
}

simd_kernel! {
    /// `q = round(x / s) + z`, clamped to `[0, 255]`, given `1 / s`: the value is clamped first,
    /// so it is never negative and `+ 0.5` then truncation rounds it (one vector instruction
    /// each, where `round` is a library call on the baseline target). Rounding `x / s + z` in
    /// one step is the same as `round(x / s) + z` for a whole `z` up to ties.
    /// The row must be finite.
    fn quantize_row(q: &mut [u8], row: &[f32], inverse_scale: f32, zero: f32) {
        for (q, &v) in q.iter_mut().zip(row) {
            let v = (v * inverse_scale + zero).clamp(0.0, 255.0) + 0.5;
            // SAFETY: v is finite and in [0.5, 255.5] (the row is finite, and so are the scale
            // and zero point), so it fits an i32; the truncation is the rounding.
            *q = unsafe { v.to_int_unchecked::<i32>() } as u8;
        }
    }
}

simd_kernel! {
    /// `[min(row, 0), max(row, 0), 1 if a value is NaN else 0]`, in 16 lanes so that it
    /// vectorises.
    fn row_range(out: &mut [f32; 3], row: &[f32]) {
        let (mut lo, mut hi, mut nan) = ([0f32; 16], [0f32; 16], [false; 16]);
        let chunks = row.chunks_exact(16);
        let tail = chunks.remainder();
        for c in chunks {
            for j in 0..16 {
                lo[j] = if c[j] < lo[j] { c[j] } else { lo[j] };
                hi[j] = if c[j] > hi[j] { c[j] } else { hi[j] };
                nan[j] |= c[j].is_nan();
            }
        }
        let (mut l, mut h, mut n) = (0f32, 0f32, false);
        for j in 0..16 {
            l = l.min(lo[j]);
            h = h.max(hi[j]);
            n |= nan[j];
        }
        for &v in tail {
            l = if v < l { v } else { l };
            h = if v > h { v } else { h };
            n |= v.is_nan();
        }
        *out = [l, h, f32::from(u8::from(n))];
    }
}

simd_kernel! {
    /// `out[c] = (sum[c] - z col[c]) s_r s[c] + b[c]` over one row's channels.
    fn dequantize_row(out: &mut [f32], sums: &[i32], scales: &[f32], column_sums: &[i32], bias: &[f32], row_scale: f32, zero: i32) {
        let n = out.len().min(sums.len()).min(scales.len()).min(column_sums.len()).min(bias.len());
        for c in 0..n {
            out[c] = (sums[c] - zero * column_sums[c]) as f32 * (row_scale * scales[c]) + bias[c];
        }
    }
}

/// The int32 sums of one tile in plain Rust: the same sums as `vpdpbusd`'s.
fn portable_tile(rows: &[u8], weights: &[i8], groups: usize, sums: &mut [[i32; PANEL]; TILE_ROWS]) {
    *sums = [[0; PANEL]; TILE_ROWS];
    for (r, row_sums) in sums.iter_mut().enumerate() {
        let row = &rows[r * groups * 4..(r + 1) * groups * 4];
        for g in 0..groups {
            let a = &row[g * 4..g * 4 + 4];
            let w = &weights[g * PANEL * 4..(g + 1) * PANEL * 4];
            for (c, sum) in row_sums.iter_mut().enumerate() {
                let w = &w[c * 4..c * 4 + 4];
                *sum += (0..4).map(|j| i32::from(a[j]) * i32::from(w[j])).sum::<i32>();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod amx {
    //! The int8 product on AMX tiles (`tdpbusd`: a 16 x 64 tile of unsigned bytes by a
    //! 16 x 64 tile of signed bytes in groups of 4, into 16 x 16 int32), through inline
    //! assembly: Rust's AMX intrinsics are not stable. The compiler never uses the tile
    //! registers, so they keep their values between the `asm!` blocks of one block.

    use std::arch::asm;

    use crate::int8::{AMX_ROWS, DEPTH_CHUNK, PANEL, QuantizedRows};

    pub(super) use crate::amx::Tiles;

    /// The int32 sums of activation rows `first..first + 32` with the 64 channels of `panel`.
    ///
    /// # Safety
    /// The tiles must be configured on this thread ([`Tiles::configure`]); `a` must hold rows
    /// up to `first + 32` of `a.groups * 4` bytes (a multiple of 64), and `panel` `a.groups`
    /// groups of PANEL x 4 bytes.
    pub(super) unsafe fn block(a: &QuantizedRows, first: usize, panel: &[i8], sums: &mut [[i32; PANEL]; AMX_ROWS]) {
        let width = a.groups * 4;
        assert!(width.is_multiple_of(DEPTH_CHUNK) && a.values.len() >= (first + AMX_ROWS) * width);
        assert!(panel.len() >= a.groups * PANEL * 4);
        let rows = a.values[first * width..].as_ptr();
        let weights = panel.as_ptr();
        let out = sums.as_mut_ptr().cast::<i32>();
        let weight_stride = PANEL * 4;
        let sums_stride = PANEL * 4;
        for half in 0..2 {
            // SAFETY: no memory access.
            unsafe {
                asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem))
            };
            for chunk in 0..width / DEPTH_CHUNK {
                // SAFETY (loads): 16 rows of 64 bytes from each address at its stride, inside the
                // slices checked above: activations rows first..first + 32, bytes of this chunk;
                // weights groups chunk * 16.. + 16, channels half * 32.. + 32.
                unsafe {
                    let a0 = rows.add(chunk * DEPTH_CHUNK);
                    let a1 = a0.add(16 * width);
                    let b0 = weights.add(chunk * 16 * weight_stride + half * 128);
                    let b1 = b0.add(64);
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbusd tmm0, tmm4, tmm6",
                        "tdpbusd tmm1, tmm4, tmm7",
                        "tdpbusd tmm2, tmm5, tmm6",
                        "tdpbusd tmm3, tmm5, tmm7",
                        a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1,
                        sa = in(reg) width, sb = in(reg) weight_stride,
                        options(nostack, readonly),
                    );
                }
            }
            // SAFETY: four 16 x 16 int32 stores into `sums` (32 rows of 64 int32): rows 0-15 and
            // 16-31, channels half * 32.. + 16 and + 16.. + 32.
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
                    c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) sums_stride,
                    options(nostack),
                );
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use crate::int8::{PANEL, TILE_ROWS};

    /// [`super::portable_tile`] with `vpdpbusd`: per group of 4 inputs, four 512-bit loads of
    /// the panel's weights and one broadcast of each row's 4 bytes feed 24 accumulators.
    ///
    /// # Safety
    /// The CPU must have AVX512F, AVX512BW and AVX512-VNNI; `rows` must hold
    /// `TILE_ROWS * groups * 4` bytes and `weights` `groups * PANEL * 4`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile(rows: &[u8], weights: &[i8], groups: usize, sums: &mut [[i32; PANEL]; TILE_ROWS]) {
        assert!(rows.len() >= TILE_ROWS * groups * 4 && weights.len() >= groups * PANEL * 4);
        let width = groups * 4;
        let (a, w) = (rows.as_ptr(), weights.as_ptr());
        let mut acc = [[_mm512_setzero_si512(); 4]; TILE_ROWS];
        for g in 0..groups {
            // SAFETY (loads): within the lengths asserted above.
            let wg = unsafe { w.add(g * PANEL * 4) };
            let b = unsafe {
                [
                    _mm512_loadu_si512(wg.cast()),
                    _mm512_loadu_si512(wg.add(64).cast()),
                    _mm512_loadu_si512(wg.add(128).cast()),
                    _mm512_loadu_si512(wg.add(192).cast()),
                ]
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                let four = unsafe { a.add(r * width + g * 4).cast::<i32>().read_unaligned() };
                let x = _mm512_set1_epi32(four);
                for (acc, &b) in acc.iter_mut().zip(&b) {
                    *acc = _mm512_dpbusd_epi32(*acc, x, b);
                }
            }
        }
        for (acc, out) in acc.iter().zip(sums.iter_mut()) {
            for (i, &v) in acc.iter().enumerate() {
                // SAFETY: each store writes 16 of the row's 64 int32.
                unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(16 * i).cast(), v) };
            }
        }
    }
}

/// `x W^T + b` (GELU of it with `gelu`) in int8, as a candle op. Its backward pass gives the
/// input's gradient through the dequantized weights, the rounding of the input taken as the
/// identity (the straight-through estimate): what relevance maps of an int8 model need. The
/// weights get no gradient; an int8 layer is not trained.
pub(crate) struct DenseInt8 {
    pub weight: Arc<Int8Weight>,
    pub gelu: bool,
    pub kernel: Int8Kernel,
}

impl CustomOp1 for DenseInt8 {
    fn name(&self) -> &'static str {
        "vit-dense-int8"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, self.name())?;
        let (rows, in_dim) = layout.shape().dims2()?;
        if in_dim != self.weight.in_dim {
            candle_core::bail!("vit-dense-int8: input width {in_dim}, the weight takes {}", self.weight.in_dim);
        }
        let out = self.weight.forward_rows(x, rows, self.gelu, self.kernel)?;
        Ok((CpuStorage::F32(out), Shape::from((rows, self.weight.out_dim))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (rows, out_dim) = grad.dims2()?;
        let mut grad = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        if self.gelu {
            // GELU's derivative at the product, computed again (the forward pass kept only GELU's
            // output).
            let pre = self.weight.forward_rows(&x.flatten_all()?.to_vec1::<f32>()?, rows, false, self.kernel)?;
            gelu_grad_scale(&mut grad, &pre);
        }
        let grad = Tensor::from_vec(grad, (rows, out_dim), x.device())?;
        let weight = Tensor::from_vec(self.weight.dequantized(), (out_dim, self.weight.in_dim), x.device())?;
        Ok(Some(grad.apply_op2_no_bwd(&weight, &Product::default())?))
    }
}
