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
//! The products are unsigned bytes by signed bytes (`vpdpbusd`'s operands), summed exactly in
//! int32, so the AVX512-VNNI kernel and the portable one give the same sums and the same
//! outputs to the bit. `in` is limited to [`MAX_IN`] so that no sum can overflow.
//!
//! # Layout
//! Output channels are packed in panels of [`PANEL`] (64) and the input dimension in groups of
//! 4: the 256 bytes of one group of a panel are one load of four 512-bit registers, 4 input
//! values for each of 64 channels, as `vpdpbusd` takes them. The last panel and group are
//! padded with zero weights; rows are padded to a multiple of [`TILE_ROWS`].

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::activation::{gelu_grad_scale, gelu_rows_in_place};
use crate::cpu::f32_slice;
use crate::dense::Product;
use crate::isa::Int8Kernel;
use crate::simd::{lanes_fold, simd_kernel};

/// Output channels per packed panel: four 512-bit registers of 16 int32 sums.
pub const PANEL: usize = 64;
/// Rows per micro-tile: 6 rows x 4 registers = 24 accumulators, plus 4 weight registers and
/// one broadcast, of the 32 AVX-512 registers.
pub const TILE_ROWS: usize = 6;
/// Rows per parallel task (a multiple of [`TILE_ROWS`]): its quantized rows stay in L2 while
/// it passes over its panels.
const TASK_ROWS: usize = 8 * TILE_ROWS;
/// Panels per parallel task: 256 channels, whose weights (at most 256 x in bytes) stay in L2
/// while the task passes over its rows.
const TASK_PANELS: usize = 4;
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
        let groups = in_dim.div_ceil(4);
        let panels = out_dim.div_ceil(PANEL);
        let mut packed = vec![0i8; panels * groups * PANEL * 4];
        let mut scales = vec![0f32; out_dim];
        let mut column_sums = vec![0i32; out_dim];
        for c in 0..out_dim {
            let row = &weight[c * in_dim..(c + 1) * in_dim];
            let max = row.iter().fold(0f32, |m, w| m.max(w.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            scales[c] = scale;
            let (panel, lane) = (c / PANEL, c % PANEL);
            let mut sum = 0i32;
            for (k, &w) in row.iter().enumerate() {
                let q = (w / scale).round().clamp(-127.0, 127.0) as i8;
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
        let groups = self.in_dim.div_ceil(4);
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
            let panel_end = panels.min((chunk + 1) * TASK_PANELS);
            let mut sums = [[0i32; PANEL]; TILE_ROWS];
            for tile in (block * TASK_ROWS..row_end).step_by(TILE_ROWS) {
                for panel in chunk * TASK_PANELS..panel_end {
                    self.tile(&activations, tile, panel, kernel, &mut sums);
                    let cols = panel * PANEL..n.min((panel + 1) * PANEL);
                    for (r, row_sums) in sums.iter().enumerate().take(row_end.saturating_sub(tile).min(TILE_ROWS)) {
                        let row = tile + r;
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
        let weights = &self.packed[panel * groups * PANEL * 4..(panel + 1) * groups * PANEL * 4];
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
        let groups = in_dim.div_ceil(4);
        let width = groups * 4;
        let padded_rows = rows.next_multiple_of(TILE_ROWS);
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
                let (lo, hi) = (lanes_fold(row, 0.0, f32::min), lanes_fold(row, 0.0, f32::max));
                // `min` and `max` pass over NaN: a row that is not finite gets a NaN scale, so its
                // outputs are NaN, as a float product's would be, not numbers that look right.
                let finite = lo.is_finite() && hi.is_finite() && !row.iter().any(|v| v.is_nan());
                let s = if !finite {
                    f32::NAN
                } else if hi > lo {
                    (hi - lo) / 255.0
                } else {
                    1.0
                };
                let z = if finite { (-lo / s).round().clamp(0.0, 255.0) } else { 0.0 };
                quantize_row(q, row, 1.0 / s, z);
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
    fn quantize_row(q: &mut [u8], row: &[f32], inverse_scale: f32, zero: f32) {
        for (q, &v) in q.iter_mut().zip(row) {
            *q = ((v * inverse_scale + zero).clamp(0.0, 255.0) + 0.5) as u8;
        }
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
mod vnni {
    use std::arch::x86_64::*;

    use super::{PANEL, TILE_ROWS};

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
