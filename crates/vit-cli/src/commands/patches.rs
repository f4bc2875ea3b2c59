//! `vit patches`: an image and its patches, as the Keras example draws them.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use clap::Args;
use vit_data::read_image;
use vit_patches::{PatchSpec, extract_patches};

use crate::render::{patches::patches_picture, save_png};

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

/// Draws an image (resized to `resize x resize`) with its patch grid and indices and, beside
/// it, its `patch x patch` patches cut apart, as the Keras example shows them. The patches are
/// cut with `vit_patches::extract_patches`. Returns the number of patches.
pub fn draw_patches(input: &Path, output: &Path, patch: usize, resize: usize) -> Result<usize> {
    let rgb = read_image(input, resize, resize, 3)?;
    let image =
        Tensor::from_vec(rgb.iter().map(|&v| f32::from(v)).collect::<Vec<_>>(), (1, resize, resize, 3), &Device::Cpu)?;
    let spec = PatchSpec::square(patch);
    let patches = extract_patches(&image, &spec).map_err(candle_core::Error::wrap)?; // [1, rows, cols, p*p*3]
    let (_, rows, cols, _) = patches.dims4()?;
    let patches = patches.squeeze(0)?.to_dtype(DType::U8)?.flatten_all()?.to_vec1::<u8>()?;
    let picture = patches_picture(&rgb, resize, &patches, (rows, cols), patch)?;
    save_png(&picture, output)?;
    Ok(rows * cols)
}
