//! The inverse of extraction: fold patches back into an image.

use candle_core::{DType, Tensor};

use crate::extract::channels_of;
use crate::spec::{axis_coverage, axis_indices};
use crate::{PatchError, PatchGeometry, PatchSpec};

/// How many times each pixel is read by the patches of a spec: the separable product of the
/// row and column coverage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    rows: Vec<u32>,
    cols: Vec<u32>,
}

impl Coverage {
    /// Coverage of an image of `height x width` by the patches of `spec`.
    pub fn new(spec: &PatchSpec, height: usize, width: usize) -> Result<Self, PatchError> {
        let g = spec.geometry(height, width)?;
        Ok(Self::from_geometry(spec, &g))
    }

    fn from_geometry(spec: &PatchSpec, g: &PatchGeometry) -> Self {
        let (height, width) = g.image;
        let rows = axis_coverage(height, g.out.0, spec.size.0, spec.stride.0, spec.rate.0, g.pad_before.0);
        let cols = axis_coverage(width, g.out.1, spec.size.1, spec.stride.1, spec.rate.1, g.pad_before.1);
        Self { height, width, rows, cols }
    }

    /// How many patch elements read pixel `(row, col)`.
    pub fn count(&self, row: usize, col: usize) -> u32 {
        self.rows[row] * self.cols[col]
    }

    /// The number of pixels read by no patch.
    pub fn uncovered(&self) -> usize {
        let zero_rows = self.rows.iter().filter(|&&n| n == 0).count();
        let zero_cols = self.cols.iter().filter(|&&n| n == 0).count();
        zero_rows * self.width + zero_cols * self.height - zero_rows * zero_cols
    }

    /// The first uncovered pixel in row-major order, if any.
    pub fn first_uncovered(&self) -> Option<(usize, usize)> {
        let first_row = self.rows.iter().position(|&n| n == 0);
        let first_col = self.cols.iter().position(|&n| n == 0);
        match (first_row, first_col) {
            (None, None) => None,
            (Some(r), None) => Some((r, 0)),
            (None, Some(c)) => Some((0, c)),
            (Some(r), Some(c)) => Some(if r == 0 { (0, 0) } else { (0, c) }),
        }
    }

    /// True when some pixel is read more than once.
    pub fn overlaps(&self) -> bool {
        self.rows.iter().any(|&n| n > 1) || self.cols.iter().any(|&n| n > 1)
    }

    /// The counts as a `[H, W]` tensor of `dtype`.
    pub fn to_tensor(&self, dtype: DType, device: &candle_core::Device) -> candle_core::Result<Tensor> {
        let rows = Tensor::from_vec(self.rows.iter().map(|&n| n as f32).collect(), (self.height, 1), device)?;
        let cols = Tensor::from_vec(self.cols.iter().map(|&n| n as f32).collect(), (1, self.width), device)?;
        rows.broadcast_mul(&cols)?.to_dtype(dtype)
    }
}

/// Folds patches back into the image they were cut from, averaging where patches overlap, so
/// that `reconstruct(&extract_patches(&x, &spec)?, (h, w), &spec)? == x`.
///
/// A pixel that no patch reads cannot be recovered: that is an error
/// ([`PatchError::UncoveredPixel`]) rather than a silent zero. Use
/// [`reconstruct_with_coverage`] where gaps are expected.
///
/// # Shapes
/// - `patches`: `[B, out_rows, out_cols, kh * kw * C]` or the token form `[B, N, kh * kw * C]`
/// - returns: `[B, H, W, C]` with `(H, W) = image_size`
pub fn reconstruct(patches: &Tensor, image_size: (usize, usize), spec: &PatchSpec) -> Result<Tensor, PatchError> {
    let (image, coverage) = fold(patches, image_size, spec)?;
    if let Some((row, col)) = coverage.first_uncovered() {
        return Err(PatchError::UncoveredPixel {
            row,
            col,
            height: coverage.height,
            width: coverage.width,
            uncovered: coverage.uncovered(),
        });
    }
    Ok(image)
}

/// Like [`reconstruct`], but uncovered pixels are set to zero and the per-pixel patch counts
/// are returned beside the image (zero marks an uncovered pixel).
///
/// # Shapes
/// - `patches`: `[B, out_rows, out_cols, kh * kw * C]` or `[B, N, kh * kw * C]`
/// - returns: the image `[B, H, W, C]` and its [`Coverage`]
pub fn reconstruct_with_coverage(
    patches: &Tensor,
    image_size: (usize, usize),
    spec: &PatchSpec,
) -> Result<(Tensor, Coverage), PatchError> {
    fold(patches, image_size, spec)
}

fn fold(patches: &Tensor, (height, width): (usize, usize), spec: &PatchSpec) -> Result<(Tensor, Coverage), PatchError> {
    let g = spec.geometry(height, width)?;
    let c = channels_of(patches, spec)?;
    let b = patches.dim(0)?;
    let (out_rows, out_cols) = g.out;
    let (kh, kw) = spec.size;
    let expected = [b, out_rows, out_cols, kh * kw * c];
    let grid_form = patches.dims() == expected;
    let token_form = patches.dims() == [b, out_rows * out_cols, kh * kw * c];
    if !grid_form && !token_form {
        return Err(PatchError::PatchShapeMismatch { expected: expected.to_vec(), shape: patches.dims().to_vec() });
    }
    let coverage = Coverage::from_geometry(spec, &g);
    // [B, out_rows*kh, out_cols*kw, C]: each patch's pixels back in a grid, patches side by side.
    let unfolded = patches.reshape((b, out_rows, out_cols, kh, kw, c))?.permute((0, 1, 3, 2, 4, 5))?.reshape((
        b,
        out_rows * kh,
        out_cols * kw,
        c,
    ))?;
    let (hp, wp) = g.padded();
    let summed = if spec.is_tiling() {
        // Every padded pixel is read once, except the remainder VALID leaves at the far edge.
        unfolded.pad_with_zeros(1, 0, hp - out_rows * kh)?.pad_with_zeros(2, 0, wp - out_cols * kw)?
    } else {
        let device = patches.device();
        let rows = Tensor::from_vec(axis_indices(out_rows, kh, spec.stride.0, spec.rate.0), out_rows * kh, device)?;
        let cols = Tensor::from_vec(axis_indices(out_cols, kw, spec.stride.1, spec.rate.1), out_cols * kw, device)?;
        let by_cols =
            Tensor::zeros((b, out_rows * kh, wp, c), patches.dtype(), device)?.index_add(&cols, &unfolded, 2)?;
        Tensor::zeros((b, hp, wp, c), patches.dtype(), device)?.index_add(&rows, &by_cols, 1)?
    };
    let image = summed.narrow(1, g.pad_before.0, height)?.narrow(2, g.pad_before.1, width)?;
    let image = if coverage.overlaps() {
        let divisor = coverage.to_tensor(patches.dtype(), patches.device())?.maximum(1f64)?;
        image.broadcast_div(&divisor.unsqueeze(0)?.unsqueeze(3)?)?
    } else {
        image
    };
    Ok((image, coverage))
}
