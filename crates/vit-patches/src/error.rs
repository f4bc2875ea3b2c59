//! The one error type of the crate.

/// Everything that can go wrong when extracting or reconstructing patches.
///
/// Each variant names the argument at fault and the value it had.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// `size`, `stride` or `rate` has a zero component.
    #[error("invalid patch spec: `{argument}` must be at least 1 on both axes, got {value:?}")]
    ZeroArgument {
        /// `"size"`, `"stride"` or `"rate"`.
        argument: &'static str,
        /// The offending `(rows, cols)` pair.
        value: (usize, usize),
    },
    /// A tensor argument does not have the rank the function expects.
    #[error("`{argument}` must have rank {expected} ({layout}), got shape {shape:?}")]
    WrongRank {
        /// Name of the argument.
        argument: &'static str,
        /// Expected rank.
        expected: usize,
        /// Expected layout, e.g. `[B, H, W, C]`.
        layout: &'static str,
        /// The shape that was passed.
        shape: Vec<usize>,
    },
    /// The image has a zero-sized spatial axis.
    #[error("image {axis} is 0: there is nothing to cut into patches")]
    EmptyImage {
        /// `"height"` or `"width"`.
        axis: &'static str,
    },
    /// Under VALID padding a (dilated) patch does not fit in the image.
    #[error(
        "under VALID padding the patch's effective {axis} ({effective_size}, size dilated by rate) \
         exceeds the image {axis} ({extent}); use a smaller patch or SAME padding"
    )]
    PatchLargerThanImage {
        /// `"height"` or `"width"`.
        axis: &'static str,
        /// `k + (k - 1)(rate - 1)`.
        effective_size: usize,
        /// The image's extent on that axis.
        extent: usize,
    },
    /// The patch tensor given to `reconstruct` does not match the spec and image size.
    #[error("`patches` must have shape {expected:?} for this spec and image size, got {shape:?}")]
    PatchShapeMismatch {
        /// The shape implied by the spec, image size and channel count.
        expected: Vec<usize>,
        /// The shape that was passed.
        shape: Vec<usize>,
    },
    /// `kh * kw` does not divide the patch dimension, so the channel count is unknown.
    #[error("`patches` last dim {patch_dim} is not a multiple of kh*kw = {kernel_area}")]
    ChannelsUnknown {
        /// Last dimension of the patch tensor.
        patch_dim: usize,
        /// `kh * kw`.
        kernel_area: usize,
    },
    /// Some pixel is read by no patch (stride larger than the dilated patch, or a VALID
    /// remainder), so it cannot be reconstructed.
    #[error(
        "pixel (row {row}, col {col}) of the {height}x{width} image is covered by no patch \
         ({uncovered} pixels uncovered); use `reconstruct_with_coverage` to get a coverage mask"
    )]
    UncoveredPixel {
        /// Row of the first uncovered pixel.
        row: usize,
        /// Column of the first uncovered pixel.
        col: usize,
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
        /// How many pixels are uncovered in all.
        uncovered: usize,
    },
    /// An error from candle (device, dtype or allocation).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
