//! The patch specification (`ksizes`, `strides`, `rates`, `padding` in TensorFlow's terms)
//! and the output geometry it implies for a given image size.

use crate::PatchError;

/// How the image border is treated, as in TensorFlow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Padding {
    /// Only patches that lie fully inside the image; no padding.
    #[default]
    Valid,
    /// Zero padding so that there are `ceil(in / stride)` patches per axis; the top/left side gets
    /// `floor(total / 2)` of the padding and the bottom/right side the rest.
    Same,
}

/// Size, stride, rate (dilation) and padding of the patches, per axis `(rows, cols)`.
///
/// ```
/// use vit_patches::{Padding, PatchSpec};
/// // The ViT case: non-overlapping 16x16 patches.
/// let vit = PatchSpec::square(16);
/// assert_eq!(vit.stride, (16, 16));
/// // TF's `extract_patches(sizes=[1,3,3,1], strides=[1,5,5,1], rates=[1,2,2,1], padding="SAME")`.
/// let tf = PatchSpec::new(3, 3).with_stride(5, 5).with_rate(2, 2).with_padding(Padding::Same);
/// assert_eq!(tf.effective_size(), (5, 5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PatchSpec {
    /// Patch height and width `(kh, kw)`.
    pub size: (usize, usize),
    /// Step between the top-left corners of neighbouring patches `(sh, sw)`.
    pub stride: (usize, usize),
    /// Dilation `(rh, rw)`: a patch samples every `rate`-th pixel.
    pub rate: (usize, usize),
    /// Border handling.
    pub padding: Padding,
}

/// Where the patches of a [`PatchSpec`] fall on an image of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PatchGeometry {
    /// Input image height and width.
    pub image: (usize, usize),
    /// Number of patches along the rows and the columns.
    pub out: (usize, usize),
    /// Zero rows added above and columns added to the left.
    pub pad_before: (usize, usize),
    /// Zero rows added below and columns added to the right.
    pub pad_after: (usize, usize),
}

impl PatchGeometry {
    /// Number of patches, `out_rows * out_cols`: the length of the token sequence.
    pub fn num_patches(&self) -> usize {
        self.out.0 * self.out.1
    }

    /// Image size after padding.
    pub fn padded(&self) -> (usize, usize) {
        (self.image.0 + self.pad_before.0 + self.pad_after.0, self.image.1 + self.pad_before.1 + self.pad_after.1)
    }
}

impl PatchSpec {
    /// Patches of `rows x cols`, stride equal to the size (non-overlapping), rate 1, VALID.
    pub fn new(rows: usize, cols: usize) -> Self {
        Self { size: (rows, cols), stride: (rows, cols), rate: (1, 1), padding: Padding::Valid }
    }

    /// Non-overlapping `p x p` patches with VALID padding: what every ViT uses.
    pub fn square(p: usize) -> Self {
        Self::new(p, p)
    }

    /// Sets the stride `(rows, cols)`.
    pub fn with_stride(mut self, rows: usize, cols: usize) -> Self {
        self.stride = (rows, cols);
        self
    }

    /// Sets the rate (dilation) `(rows, cols)`.
    pub fn with_rate(mut self, rows: usize, cols: usize) -> Self {
        self.rate = (rows, cols);
        self
    }

    /// Sets the padding.
    pub fn with_padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// The extent a dilated patch spans: `k + (k - 1)(r - 1)` per axis.
    pub fn effective_size(&self) -> (usize, usize) {
        (effective(self.size.0, self.rate.0), effective(self.size.1, self.rate.1))
    }

    /// Length of one flattened patch for `channels` channels: `kh * kw * C`.
    pub fn patch_dim(&self, channels: usize) -> usize {
        self.size.0 * self.size.1 * channels
    }

    /// Checks that size, stride and rate are all at least 1.
    pub fn validate(&self) -> Result<(), PatchError> {
        for (argument, value) in [("size", self.size), ("stride", self.stride), ("rate", self.rate)] {
            if value.0 == 0 || value.1 == 0 {
                return Err(PatchError::ZeroArgument { argument, value });
            }
        }
        Ok(())
    }

    /// True when the patches tile the (padded) image exactly, so extraction is a pure
    /// reshape/permute: stride equal to size and rate 1.
    pub fn is_tiling(&self) -> bool {
        self.stride == self.size && self.rate == (1, 1)
    }

    /// The geometry for an image of `height x width`, with TF's output-size and padding rules.
    ///
    /// ```
    /// use vit_patches::{Padding, PatchSpec};
    /// let g = PatchSpec::new(3, 3).with_stride(2, 2).with_padding(Padding::Same).geometry(7, 8)?;
    /// assert_eq!(g.out, (4, 4));
    /// assert_eq!((g.pad_before, g.pad_after), ((1, 0), (1, 1)));
    /// # Ok::<(), vit_patches::PatchError>(())
    /// ```
    pub fn geometry(&self, height: usize, width: usize) -> Result<PatchGeometry, PatchError> {
        self.validate()?;
        let (k_rows, k_cols) = self.effective_size();
        let rows = axis(self.padding, "height", height, k_rows, self.stride.0)?;
        let cols = axis(self.padding, "width", width, k_cols, self.stride.1)?;
        Ok(PatchGeometry {
            image: (height, width),
            out: (rows.out, cols.out),
            pad_before: (rows.before, cols.before),
            pad_after: (rows.after, cols.after),
        })
    }
}

fn effective(k: usize, r: usize) -> usize {
    k + (k.saturating_sub(1)) * (r.saturating_sub(1))
}

struct Axis {
    out: usize,
    before: usize,
    after: usize,
}

fn axis(padding: Padding, name: &'static str, extent: usize, k_eff: usize, stride: usize) -> Result<Axis, PatchError> {
    if extent == 0 {
        return Err(PatchError::EmptyImage { axis: name });
    }
    match padding {
        Padding::Valid => {
            if k_eff > extent {
                return Err(PatchError::PatchLargerThanImage { axis: name, effective_size: k_eff, extent });
            }
            Ok(Axis { out: (extent - k_eff + stride) / stride, before: 0, after: 0 })
        }
        Padding::Same => {
            let out = extent.div_ceil(stride);
            let total = ((out - 1) * stride + k_eff).saturating_sub(extent);
            Ok(Axis { out, before: total / 2, after: total - total / 2 })
        }
    }
}

/// For one axis: how many (patch, kernel offset) pairs read each image position.
/// The coverage of pixel `(y, x)` is `rows[y] * cols[x]`.
pub(crate) fn axis_coverage(
    extent: usize,
    out: usize,
    k: usize,
    stride: usize,
    rate: usize,
    pad_before: usize,
) -> Vec<u32> {
    let mut count = vec![0u32; extent];
    for i in 0..out {
        for u in 0..k {
            let pos = (i * stride + u * rate) as isize - pad_before as isize;
            if (0..extent as isize).contains(&pos) {
                count[pos as usize] += 1;
            }
        }
    }
    count
}

/// Source positions along one axis in padded coordinates, ordered patch index first and
/// kernel offset second: `index[i * k + u] = i * stride + u * rate`.
pub(crate) fn axis_indices(out: usize, k: usize, stride: usize, rate: usize) -> Vec<u32> {
    let mut index = Vec::with_capacity(out * k);
    for i in 0..out {
        for u in 0..k {
            index.push((i * stride + u * rate) as u32);
        }
    }
    index
}
