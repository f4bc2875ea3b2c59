//! `vit patches`: an image and its patches, as the Keras example draws them.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use clap::Args;
use image::{Rgb, RgbImage};
use vit_data::read_image;
use vit_patches::{PatchSpec, extract_patches};

#[derive(Args)]
pub struct PatchesArgs {
    /// The image file.
    image: PathBuf,
    /// Patch side in pixels.
    #[arg(long, default_value_t = 6)]
    size: usize,
    /// Resize the image to this side first.
    #[arg(long, default_value_t = 72)]
    resize: usize,
    /// Output PNG.
    #[arg(long, short, default_value = "patches.png")]
    output: PathBuf,
}

pub fn run(args: PatchesArgs) -> Result<()> {
    let (size, resize) = (args.size, args.resize);
    let n = draw_patches(&args.image, &args.output, size, resize)?;
    println!(
        "{}: {resize}x{resize} image, {size}x{size} patches: {n} patches of {} values; wrote {}",
        args.image.display(),
        size * size * 3,
        args.output.display()
    );
    Ok(())
}

/// Draws an image (resized to `resize x resize`) and, beside it, its `patch x patch` patches laid
/// out on their grid with gaps, as the Keras example shows them. The patches are cut with
/// `vit_patches::extract_patches`. Returns the number of patches.
pub fn draw_patches(input: &Path, output: &Path, patch: usize, resize: usize) -> Result<usize> {
    let rgb = read_image(input, resize, resize, 3)?;
    let image =
        Tensor::from_vec(rgb.iter().map(|&v| f32::from(v)).collect::<Vec<_>>(), (1, resize, resize, 3), &Device::Cpu)?;
    let spec = PatchSpec::square(patch);
    let patches = extract_patches(&image, &spec).map_err(candle_core::Error::wrap)?; // [1, rows, cols, p*p*3]
    let (_, rows, cols, _) = patches.dims4()?;
    let patches = patches.squeeze(0)?.to_dtype(DType::U8)?.flatten_all()?.to_vec1::<u8>()?;
    let zoom = (256 / resize).max(1) as u32;
    let gap = 2u32;
    let cell = patch as u32 * zoom;
    let left = resize as u32 * zoom;
    let grid_w = cols as u32 * (cell + gap);
    let grid_h = rows as u32 * (cell + gap);
    let mut out = RgbImage::from_pixel(left + 16 + grid_w, left.max(grid_h), Rgb([255, 255, 255]));
    for y in 0..resize {
        for x in 0..resize {
            let p = &rgb[(y * resize + x) * 3..][..3];
            for dy in 0..zoom {
                for dx in 0..zoom {
                    out.put_pixel(x as u32 * zoom + dx, y as u32 * zoom + dy, Rgb([p[0], p[1], p[2]]));
                }
            }
        }
    }
    let patch_len = patch * patch * 3;
    for r in 0..rows {
        for c in 0..cols {
            let values = &patches[(r * cols + c) * patch_len..][..patch_len];
            let (ox, oy) = (left + 16 + c as u32 * (cell + gap), r as u32 * (cell + gap));
            for u in 0..patch {
                for v in 0..patch {
                    let p = &values[(u * patch + v) * 3..][..3];
                    for dy in 0..zoom {
                        for dx in 0..zoom {
                            out.put_pixel(
                                ox + v as u32 * zoom + dx,
                                oy + u as u32 * zoom + dy,
                                Rgb([p[0], p[1], p[2]]),
                            );
                        }
                    }
                }
            }
        }
    }
    out.save(output).map_err(|e| anyhow::anyhow!("{}: {e}", output.display()))?;
    Ok(rows * cols)
}
