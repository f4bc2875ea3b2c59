//! Helpers shared by the CPU kernels: contiguous slices, row chunks for rayon tasks, and
//! outputs written in parallel into fresh memory.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;

/// Rows shorter than this are batched into one rayon task so that tiny rows do not drown in
/// scheduling overhead.
pub(crate) const ROWS_PER_TASK_MIN_ELEMS: usize = 1 << 14;

/// Elements per parallel task of the elementwise kernels.
pub(crate) const ELEMS_PER_TASK: usize = ROWS_PER_TASK_MIN_ELEMS;

/// The contiguous `f32` values of a CPU storage, or an error naming the kernel.
pub(crate) fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what}: fused kernel needs a contiguous input"),
    }
}

/// Splits `rows` of `width` elements into chunks of whole rows large enough to be worth a task.
pub(crate) fn chunk_rows(width: usize) -> usize {
    (ROWS_PER_TASK_MIN_ELEMS / width.max(1)).max(1) * width.max(1)
}

/// A new vector of `len` values, written by `fill(chunk_index, chunk)` over chunks of `chunk`
/// elements in parallel. Each chunk is zeroed by its own task just before `fill` overwrites it,
/// in cache, instead of the whole vector in one single-threaded pass at allocation
/// (`vec![0.0; len]` is a memset inside the allocator).
pub(crate) fn par_rows(len: usize, chunk: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(chunk.max(1)).enumerate().for_each(|(c, part)| {
        part.iter_mut().for_each(|v| {
            v.write(0.0);
        });
        // SAFETY: every element of `part` was initialised just above.
        let part = unsafe { &mut *(part as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
        fill(c, part);
    });
    // SAFETY: the chunks cover 0..len, and each was initialised.
    unsafe { out.set_len(len) };
    out
}

/// Sums a `[R, cols]` matrix over its rows, in parallel blocks of rows.
pub(crate) struct ColumnSum {
    pub cols: usize,
}

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "vit-column-sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, self.name())?;
        let n = self.cols;
        let partials: Vec<Vec<f32>> = x
            .par_chunks(chunk_rows(n))
            .map(|block| {
                let mut acc = vec![0f32; n];
                for row in block.chunks_exact(n) {
                    acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                }
                acc
            })
            .collect();
        let mut sum = vec![0f32; n];
        for p in partials {
            sum.iter_mut().zip(p).for_each(|(a, v)| *a += v);
        }
        Ok((CpuStorage::F32(sum), Shape::from(n)))
    }
}
