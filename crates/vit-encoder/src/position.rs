//! Position embeddings: the fixed 2-D sin-cos table, and resizing a learned grid.

use candle_core::{DType, Device, Result, Tensor};
use serde::{Deserialize, Serialize};

/// How positions are encoded; in config files `learned` or `sincos2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionEmbedding {
    /// A learned table, one row per token (Keras' `Embedding`).
    #[default]
    Learned,
    /// The fixed 2-D sine-cosine table of MAE and big_vision ([`sincos_2d`]): no parameters.
    #[serde(rename = "sincos2d")]
    SinCos2d,
}

/// The 2-D sin-cos table for a `rows x cols` grid, `[rows * cols, dim]`, row-major.
///
/// As MAE's `get_2d_sincos_pos_embed` and big_vision's `posemb_sincos_2d` lay it out (and
/// timm's `build_sincos2d_pos_embed` with `reverse_coord` and `interleave_sin_cos`): the first
/// half of the features encodes the column, the second the row; each half is `sin` then `cos`
/// at frequencies `1 / 10000^(i / (dim / 4))`. `dim` must be a multiple of 4.
pub fn sincos_2d(rows: usize, cols: usize, dim: usize, device: &Device) -> Result<Tensor> {
    if !dim.is_multiple_of(4) || dim == 0 {
        candle_core::bail!("2-D sin-cos position embedding needs a dim that is a multiple of 4, got {dim}");
    }
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter).map(|i| 1.0 / 10000f64.powf(i as f64 / quarter as f64)).collect();
    let mut table = Vec::with_capacity(rows * cols * dim);
    for r in 0..rows {
        for c in 0..cols {
            for pos in [c as f64, r as f64] {
                table.extend(omega.iter().map(|w| (pos * w).sin() as f32));
                table.extend(omega.iter().map(|w| (pos * w).cos() as f32));
            }
        }
    }
    Tensor::from_vec(table, (rows * cols, dim), device)
}

/// Interpolation used by [`resize_grid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Interpolation {
    /// Linear in each axis (PyTorch's `bilinear`, `align_corners=False`).
    #[default]
    Bilinear,
    /// Cubic convolution with `a = -0.75` (PyTorch's `bicubic`, `align_corners=False`).
    Bicubic,
}

/// Resamples a learned position table from one patch grid to another, so a model trained at
/// one resolution runs or fine-tunes at another. A leading class-token row (when
/// `class_token`) is kept as it is. Built from matmuls, so gradients flow and any device works.
///
/// # Shapes
/// - `table`: `[class_token + from.0 * from.1, D]`
/// - returns: `[class_token + to.0 * to.1, D]`
pub fn resize_grid(
    table: &Tensor,
    from: (usize, usize),
    to: (usize, usize),
    class_token: bool,
    interpolation: Interpolation,
) -> Result<Tensor> {
    let (n, d) = table.dims2()?;
    let prefix = usize::from(class_token);
    if n != prefix + from.0 * from.1 {
        candle_core::bail!(
            "position table has {n} rows, expected {} for a {}x{} grid{}",
            prefix + from.0 * from.1,
            from.0,
            from.1,
            if class_token { " plus the class token" } else { "" }
        );
    }
    if to.0 == 0 || to.1 == 0 {
        candle_core::bail!("cannot resize a position grid to {}x{}", to.0, to.1);
    }
    let grid = table.narrow(0, prefix, from.0 * from.1)?.reshape((from.0, from.1, d))?;
    let rows = resize_matrix(from.0, to.0, interpolation, table.device())?; // [to.0, from.0]
    let cols = resize_matrix(from.1, to.1, interpolation, table.device())?; // [to.1, from.1]
    let dtype = table.dtype();
    // [D, from.0, from.1] -> [D, to.0, from.1] -> [D, to.0, to.1]
    let channels_first = grid.permute((2, 0, 1))?.to_dtype(DType::F32)?.contiguous()?;
    let resized =
        rows.broadcast_left(d)?.matmul(&channels_first)?.matmul(&cols.t()?.broadcast_left(d)?.contiguous()?)?;
    let resized = resized.permute((1, 2, 0))?.reshape((to.0 * to.1, d))?.to_dtype(dtype)?;
    if class_token { Tensor::cat(&[&table.narrow(0, 0, 1)?, &resized], 0) } else { Ok(resized) }
}

/// The `[out, in]` matrix that resamples one axis.
fn resize_matrix(input: usize, output: usize, interpolation: Interpolation, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; output * input];
    let scale = input as f64 / output as f64;
    let clamp = |i: isize| i.clamp(0, input as isize - 1) as usize;
    for o in 0..output {
        let src = (o as f64 + 0.5) * scale - 0.5;
        match interpolation {
            Interpolation::Bilinear => {
                let src = src.max(0.0);
                let i0 = src.floor() as isize;
                let t = (src - i0 as f64) as f32;
                m[o * input + clamp(i0)] += 1.0 - t;
                m[o * input + clamp(i0 + 1)] += t;
            }
            Interpolation::Bicubic => {
                let i0 = src.floor() as isize;
                let t = src - i0 as f64;
                for (k, w) in cubic_weights(t).into_iter().enumerate() {
                    m[o * input + clamp(i0 - 1 + k as isize)] += w as f32;
                }
            }
        }
    }
    Tensor::from_vec(m, (output, input), device)
}

/// Keys' cubic convolution weights for the four taps around `t` in `[0, 1)`, `a = -0.75`.
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}
