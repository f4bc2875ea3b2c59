//! Prediction on image files, and the patch picture of the Keras example.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::{Rgb, RgbImage};
use vit_model::{CheckpointMeta, Vit};
use vit_patches::{PatchSpec, extract_patches};

use crate::TrainError;
use crate::augment::prepare;
use crate::data::{Dataset, read_image};
use crate::metadata::pipeline_of;
use crate::metrics::top_k;

/// The `k` most probable classes of each image file: `(class name, probability)`, most
/// probable first. Images are read as the training data was (size, channels) and prepared with
/// the checkpoint's normalisation.
pub fn predict_files(
    model: &Vit,
    meta: &CheckpointMeta,
    files: &[impl AsRef<Path>],
    k: usize,
    device: &Device,
) -> Result<Vec<Vec<(String, f32)>>, TrainError> {
    let cfg = &meta.config;
    let (normalizer, (dh, dw)) = pipeline_of(meta);
    let (h, w) = (cfg.image_size[0], cfg.image_size[1]);
    let mut pixels = Vec::with_capacity(files.len() * h * w * cfg.channels);
    for file in files {
        let file = file.as_ref();
        let bytes = read_image(file, dh, dw, cfg.channels)?;
        let one = Dataset::new("image", bytes, vec![0], (dh, dw, cfg.channels), vec!["?".into()], file)?;
        pixels.extend(prepare(&one, 0, (h, w), &normalizer, None));
    }
    let x = Tensor::from_vec(pixels, (files.len(), h, w, cfg.channels), device)?;
    let probs = model.detached().predict_proba(&x)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(probs
        .iter()
        .map(|row| top_k(row, k).into_iter().map(|(i, p)| (meta.class_names[i].clone(), p)).collect())
        .collect())
}

/// Draws an image (resized to `resize x resize`) and, beside it, its `patch x patch` patches laid
/// out on their grid with gaps, as the Keras example shows them. The patches are cut with
/// `vit_patches::extract_patches`. Returns the number of patches.
pub fn draw_patches(input: &Path, output: &Path, patch: usize, resize: usize) -> Result<usize, TrainError> {
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
    out.save(output).map_err(|e| TrainError::io(output, e))?;
    Ok(rows * cols)
}
