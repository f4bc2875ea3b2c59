//! A dense layer whose `f32` weight is stored once for inference (`--precision f32` on the
//! CPU) as `W^T`, in panels of [`PANEL`] output channels when it is wide
//! ([`PANELS_FROM_WIDTH`]): the weight and the op over it. The values are the trained layer's
//! within f32 rounding (`gemm` may sum a product in another order when an operand's layout
//! changes).
//!
//! Why: a trained layer keeps `W: [out, in]`, which the product reads as `W^T` column by
//! column, and the `gemm` crate then packs it one value at a time on every call (a fifth of a
//! ViT-S forward pass at batch 1). Stored as `W^T: [in, out]`, it still packs it, with whole
//! vectors, on every call: 8% of a batch-1 ViT-S profile, a copy that waits on memory before
//! any multiply. A panel, `[in, 64]` contiguous, is what the microkernel reads: a product of a
//! few rows (at most [`UNPACKED_ROWS`], below `gemm`'s threshold for packing) over one panel
//! reads it in place, one stream through memory. Measured:
//! `docs/measurements/cpu-2026-12-06-qkv.md`.

use std::ops::Range;
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::activation::gelu_rows_in_place;
use crate::dense::{Product, WeightF32, bias_rows, dense_f32, prepared_fwd, prepared_input_grad};
use crate::gemm::gemm_f32;

/// Output channels of a panel: 4 vectors of 16 floats, the rows of `gemm`'s AVX-512
/// microkernel (and a whole number of its AVX2 one's).
pub(crate) const PANEL: usize = 64;

/// Rows of one product over a panel at batch 1: `gemm` packs its left operand when the other
/// has more than 8 of its 6-column blocks, 48 columns (`gemm-common` 0.19,
/// `DEFAULT_LHS_PACKING_THRESHOLD_SINGLE_THREAD`). Above, it packs (a copy of the panel,
/// contiguous, cheap beside the product); the results are the same either way.
pub(crate) const UNPACKED_ROWS: usize = 48;

/// Inputs of at most this many rows (one image's tokens) split each panel's product into
/// chunks of [`UNPACKED_ROWS`]; more rows are cut into blocks of [`ROW_BLOCK`], each
/// multiplied by every panel in turn while it is in cache.
const FEW_ROWS: usize = 256;

/// Rows of a block of a larger input.
const ROW_BLOCK: usize = 192;

/// Weights whose inputs and outputs are both at least this wide are stored in panels; narrower
/// ones (ViT-Ti's 192, the Keras example's 64) as `W^T: [in, out]`, whose product by a few
/// rows `gemm` packs cheaply, and which it runs faster on these shapes (measured per layer:
/// `docs/measurements/cpu-2026-12-06-qkv.md`; the MNIST model's batch-1 latency was 12%
/// slower and the Keras example's batch 256 4% slower in panels).
pub(crate) const PANELS_FROM_WIDTH: usize = 384;

/// A dense layer's `f32` weight stored for inference (`x W^T + b`): `W^T` in panels of
/// 64 output channels (`[in, 64]` each, the last one narrower) when both widths are at least
/// 384, else `W^T: [in, out]`; with its bias.
pub struct F32Weight {
    /// `W^T` in panels, or `[in, out]` row-major (`in_panels` false).
    data: Vec<f32>,
    in_panels: bool,
    in_dim: usize,
    out_dim: usize,
    bias: Vec<f32>,
}

impl std::fmt::Debug for F32Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let layout = if self.in_panels { "in panels of 64" } else { "stored [in, out]" };
        write!(f, "F32Weight([{}, {}] {layout})", self.out_dim, self.in_dim)
    }
}

impl F32Weight {
    /// Stores `weight: [out, in]` (any float dtype, on the CPU) in panels and keeps
    /// `bias: [out]` (zeros without one).
    pub fn from_tensors(weight: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        if !weight.device().is_cpu() {
            candle_core::bail!(
                "f32 weight: stored for the CPU, and this weight is on {:?}",
                weight.device().location()
            );
        }
        let bias = match bias {
            Some(b) => b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0.0; out_dim],
        };
        if bias.len() != out_dim {
            candle_core::bail!("f32 weight: a bias of {} values for {out_dim} outputs", bias.len());
        }
        let in_panels = in_dim.min(out_dim) >= PANELS_FROM_WIDTH;
        if !in_panels {
            let data = weight.to_dtype(DType::F32)?.t()?.flatten_all()?.to_vec1::<f32>()?;
            return Ok(Self { data, in_panels, in_dim, out_dim, bias });
        }
        let w = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut data = vec![0f32; w.len()];
        for p in 0..out_dim.div_ceil(PANEL) {
            let (first, width) = (p * PANEL, PANEL.min(out_dim - p * PANEL));
            let panel = &mut data[first * in_dim..][..width * in_dim];
            for (c, row) in w[first * in_dim..][..width * in_dim].chunks_exact(in_dim).enumerate() {
                row.iter().enumerate().for_each(|(k, &v)| panel[k * width + c] = v);
            }
        }
        Ok(Self { data, in_panels, in_dim, out_dim, bias })
    }

    /// Output channels.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// The bias, `[out]` (zeros for a layer without one).
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// Output rows `rows` of the weight, `[rows.len(), in]`, copied out of the panels (for
    /// checkpoints and the input's gradient; the forward pass reads the panels).
    pub fn weight_rows(&self, rows: Range<usize>) -> candle_core::Result<Tensor> {
        if rows.start > rows.end || rows.end > self.out_dim {
            candle_core::bail!("f32 weight: rows {rows:?} of {} outputs", self.out_dim);
        }
        let (k, n) = (self.in_dim, self.out_dim);
        let mut out = Vec::with_capacity(rows.len() * k);
        for o in rows.clone() {
            if self.in_panels {
                let (first, width) = (o / PANEL * PANEL, PANEL.min(n - o / PANEL * PANEL));
                let panel = &self.data[first * k..][..width * k];
                out.extend((0..k).map(|i| panel[i * width + o - first]));
            } else {
                out.extend((0..k).map(|i| self.data[i * n + o]));
            }
        }
        Tensor::from_vec(out, (rows.len(), k), &candle_core::Device::Cpu)
    }

    /// `x W^T + b` (GELU of it with `gelu`) for `x: [rows, in]` contiguous.
    fn rows(&self, x: &[f32], rows: usize, gelu: bool) -> Vec<f32> {
        let (k, n) = (self.in_dim, self.out_dim);
        if !self.in_panels {
            let weight = WeightF32 { data: &self.data, out_dim: n, strides: (n, 1) };
            return dense_f32(x, (rows, k), weight, &self.bias, gelu);
        }
        let panels = n.div_ceil(PANEL);
        // SAFETY (all products): `dst` addresses `r` rows of n values from the panel's first
        // column, x holds r x k values from row `first`, and the panel is k x width.
        let product = |dst: *mut f32, first: usize, r: usize, p: usize| unsafe {
            let (col, width) = (p * PANEL, PANEL.min(n - p * PANEL));
            gemm_f32(
                (r, width, k),
                dst.wrapping_add(first * n + col),
                (n, 1),
                true,
                x.as_ptr().wrapping_add(first * k),
                (k, 1),
                self.data.as_ptr().wrapping_add(col * k),
                (width, 1),
                1.0,
                Parallelism::None,
            )
        };
        let mut out = bias_rows(&self.bias, rows);
        let dst = out.as_mut_ptr() as usize;
        if rows <= FEW_ROWS {
            // One image: (panel, chunk of rows) pairs, panel by panel, in equal shares per
            // thread (ViT-Ti's 9 panels of query-key-value would split 5 and 4 by panels).
            let chunks = rows.div_ceil(UNPACKED_ROWS).max(1);
            let per_chunk = rows.div_ceil(chunks).max(1);
            let jobs = panels * chunks;
            let shares = rayon::current_num_threads().clamp(1, jobs);
            (0..shares).into_par_iter().for_each(|share| {
                for job in share * jobs / shares..(share + 1) * jobs / shares {
                    let (p, first) = (job / chunks, (job % chunks) * per_chunk);
                    let r = per_chunk.min(rows.saturating_sub(first));
                    if r > 0 {
                        // Jobs write disjoint (rows, panel columns) blocks of `out`.
                        product(dst as *mut f32, first, r, p);
                    }
                }
            });
            if gelu {
                out.par_chunks_mut(crate::dense::BLOCK_ELEMS).for_each(gelu_rows_in_place);
            }
        } else {
            // Blocks of rows, one task each: every panel over the block while it is in cache,
            // then GELU.
            out.par_chunks_mut(ROW_BLOCK * n).enumerate().for_each(|(b, part)| {
                let r = part.len() / n;
                let at = part.as_mut_ptr().wrapping_sub(b * ROW_BLOCK * n);
                (0..panels).for_each(|p| product(at, b * ROW_BLOCK, r, p));
                if gelu {
                    gelu_rows_in_place(part);
                }
            });
        }
        out
    }
}

/// `x W^T + b` (GELU of it with `gelu`) on a weight stored transposed.
pub(crate) struct DenseF32 {
    pub weight: Arc<F32Weight>,
    pub gelu: bool,
}

impl DenseF32 {
    fn rows(&self, x: &[f32], rows: usize, gelu: bool) -> candle_core::Result<Vec<f32>> {
        Ok(self.weight.rows(x, rows, gelu))
    }
}

impl CustomOp1 for DenseF32 {
    fn name(&self) -> &'static str {
        "vit-dense-f32"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = (self.weight.in_dim(), self.weight.out_dim());
        prepared_fwd(self.name(), (storage, layout), dims, self.gelu, |x, rows, gelu| self.rows(x, rows, gelu))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // grad · W, with W copied out of the panels (relevance maps only).
        let weight = self.weight.weight_rows(0..self.weight.out_dim())?;
        let rows_of = |x: &[f32], rows, gelu| self.rows(x, rows, gelu);
        Ok(Some(prepared_input_grad(x, grad, self.gelu, rows_of, &weight, Product::default())?))
    }
}
