//! Patch extraction: `[B, H, W, C]` images to `[B, out_rows, out_cols, kh*kw*C]` patches.

use candle_core::{D, Tensor};

use crate::spec::axis_indices;
use crate::{PatchError, PatchGeometry, PatchSpec};

/// Checks that `t` has rank 4 and returns its dims.
pub(crate) fn dims4(
    t: &Tensor,
    argument: &'static str,
    layout: &'static str,
) -> Result<(usize, usize, usize, usize), PatchError> {
    match *t.dims() {
        [a, b, c, d] => Ok((a, b, c, d)),
        _ => Err(PatchError::WrongRank { argument, expected: 4, layout, shape: t.dims().to_vec() }),
    }
}

/// Extracts patches exactly as TensorFlow's `tf.image.extract_patches` does.
///
/// `out[b, i, j, (u*kw + v)*C + c] = images[b, i*sh - pad_top + u*rh, j*sw - pad_left + v*rw, c]`,
/// and zero where that position falls outside the image (SAME padding only).
///
/// Non-overlapping specs (stride equal to size, rate 1) take a reshape/permute fast path;
/// everything else gathers rows and columns with `index_select`. Both are plain candle ops,
/// so gradients flow back to `images` and any device and dtype works.
///
/// # Shapes
/// - `images`: `[B, H, W, C]` (NHWC)
/// - returns: `[B, out_rows, out_cols, kh * kw * C]`, see [`PatchSpec::geometry`]
///
/// # Errors
/// An invalid spec, an input that is not rank 4, or a patch larger than the image under VALID.
pub fn extract_patches(images: &Tensor, spec: &PatchSpec) -> Result<Tensor, PatchError> {
    if spec.is_tiling() {
        let (geometry, padded) = prepare(images, spec)?;
        tile(&padded, spec, &geometry)
    } else {
        extract_patches_gather(images, spec)
    }
}

/// The general gather path of [`extract_patches`], for any spec.
///
/// [`extract_patches`] picks the faster reshape/permute path by itself when it applies; this
/// function exists so that the two can be compared (tests, benchmarks).
///
/// # Shapes
/// - `images`: `[B, H, W, C]`
/// - returns: `[B, out_rows, out_cols, kh * kw * C]`
pub fn extract_patches_gather(images: &Tensor, spec: &PatchSpec) -> Result<Tensor, PatchError> {
    let (geometry, padded) = prepare(images, spec)?;
    let (b, _, _, c) = padded.dims4()?;
    let (out_rows, out_cols) = geometry.out;
    let (kh, kw) = spec.size;
    let device = images.device();
    let rows = axis_indices(out_rows, kh, spec.stride.0, spec.rate.0);
    let cols = axis_indices(out_cols, kw, spec.stride.1, spec.rate.1);
    let rows = Tensor::from_vec(rows, out_rows * kh, device)?;
    let cols = Tensor::from_vec(cols, out_cols * kw, device)?;
    // [B, out_rows*kh, Wp, C] then [B, out_rows*kh, out_cols*kw, C]
    let gathered = padded.contiguous()?.index_select(&rows, 1)?.index_select(&cols, 2)?;
    Ok(gathered.reshape((b, out_rows, kh, out_cols, kw, c))?.permute((0, 1, 3, 2, 4, 5))?.reshape((
        b,
        out_rows,
        out_cols,
        kh * kw * c,
    ))?)
}

/// [`extract_patches`] flattened to a token sequence, row-major over the patch grid.
///
/// # Shapes
/// - `images`: `[B, H, W, C]`
/// - returns: `[B, out_rows * out_cols, kh * kw * C]`
pub fn extract_patch_tokens(images: &Tensor, spec: &PatchSpec) -> Result<Tensor, PatchError> {
    Ok(extract_patches(images, spec)?.flatten(1, 2)?)
}

/// [`extract_patches`] for channels-first images, candle's usual layout.
///
/// The output is the same as for the NHWC input `images.permute((0, 2, 3, 1))`: TF's element
/// order, channel fastest.
///
/// # Shapes
/// - `images`: `[B, C, H, W]` (NCHW)
/// - returns: `[B, out_rows, out_cols, kh * kw * C]`
pub fn extract_patches_nchw(images: &Tensor, spec: &PatchSpec) -> Result<Tensor, PatchError> {
    dims4(images, "images", "[B, C, H, W]")?;
    extract_patches(&images.permute((0, 2, 3, 1))?, spec)
}

/// [`extract_patch_tokens`] for channels-first images.
///
/// # Shapes
/// - `images`: `[B, C, H, W]`
/// - returns: `[B, out_rows * out_cols, kh * kw * C]`
pub fn extract_patch_tokens_nchw(images: &Tensor, spec: &PatchSpec) -> Result<Tensor, PatchError> {
    Ok(extract_patches_nchw(images, spec)?.flatten(1, 2)?)
}

/// Validates the input, computes the geometry and applies the zero padding.
fn prepare(images: &Tensor, spec: &PatchSpec) -> Result<(PatchGeometry, Tensor), PatchError> {
    let (_, h, w, _) = dims4(images, "images", "[B, H, W, C]")?;
    let geometry = spec.geometry(h, w)?;
    let mut padded = images.clone();
    if geometry.pad_before.0 + geometry.pad_after.0 > 0 {
        padded = padded.pad_with_zeros(1, geometry.pad_before.0, geometry.pad_after.0)?;
    }
    if geometry.pad_before.1 + geometry.pad_after.1 > 0 {
        padded = padded.pad_with_zeros(2, geometry.pad_before.1, geometry.pad_after.1)?;
    }
    Ok((geometry, padded))
}

/// Fast path for tiling specs: crop the remainder VALID leaves, then reshape and permute.
fn tile(padded: &Tensor, spec: &PatchSpec, geometry: &PatchGeometry) -> Result<Tensor, PatchError> {
    let (b, hp, wp, c) = padded.dims4()?;
    let (out_rows, out_cols) = geometry.out;
    let (kh, kw) = spec.size;
    let mut x = padded.clone();
    if out_rows * kh != hp {
        x = x.narrow(1, 0, out_rows * kh)?;
    }
    if out_cols * kw != wp {
        x = x.narrow(2, 0, out_cols * kw)?;
    }
    Ok(x.reshape((b, out_rows, kh, out_cols, kw, c))?.permute((0, 1, 3, 2, 4, 5))?.reshape((
        b,
        out_rows,
        out_cols,
        kh * kw * c,
    ))?)
}

/// Number of channels implied by a patch tensor's last dim.
pub(crate) fn channels_of(patches: &Tensor, spec: &PatchSpec) -> Result<usize, PatchError> {
    let patch_dim = patches.dim(D::Minus1)?;
    let kernel_area = spec.size.0 * spec.size.1;
    if kernel_area == 0 || patch_dim % kernel_area != 0 || patch_dim == 0 {
        return Err(PatchError::ChannelsUnknown { patch_dim, kernel_area });
    }
    Ok(patch_dim / kernel_area)
}
