//! Decoding image files: any format the `image` crate reads, with limits on what a file may
//! claim, resized to the size a data set or model takes.

use std::path::Path;

use crate::error::DataError;

/// Decodes one image file and resizes it to `height x width` with `channels` (1: grey, 3: RGB).
pub fn read_image(path: &Path, height: usize, width: usize, channels: usize) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_image(&bytes, path, height, width, channels)
}

/// [`read_image`] of a file's bytes; `path` names it in errors. The format is read from the
/// content; images of more than 2^26 pixels (say 8192 x 8192) are refused before decoding.
pub fn decode_image(
    bytes: &[u8],
    path: &Path,
    height: usize,
    width: usize,
    channels: usize,
) -> Result<Vec<u8>, DataError> {
    let img = decode_full(bytes, path, (height, width), channels)?;
    Ok(resized(&img, (height, width), channels))
}

/// Decodes `bytes` at its own size after checking the size it is to be brought to and the
/// channels (1 or 3); images over 8192 pixels a side or 256 MiB decoded are refused.
pub(crate) fn decode_full(
    bytes: &[u8],
    path: &Path,
    (height, width): (usize, usize),
    channels: usize,
) -> Result<image::DynamicImage, DataError> {
    let unreadable = |message: String| DataError::UnreadableImage { path: path.into(), message };
    if !(1..=1 << 14).contains(&height) || !(1..=1 << 14).contains(&width) {
        return Err(DataError::Malformed {
            path: path.into(),
            message: format!("cannot resize to {height}x{width}: each side must be 1 to 16384 pixels"),
        });
    }
    if channels != 1 && channels != 3 {
        return Err(DataError::Malformed {
            path: path.into(),
            message: format!("images can be read with 1 or 3 channels, not {channels}"),
        });
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| unreadable(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(1 << 13);
    limits.max_image_height = Some(1 << 13);
    limits.max_alloc = Some(1 << 28);
    reader.limits(limits);
    reader.decode().map_err(|e| unreadable(e.to_string()))
}

/// The image converted to `channels` (1: grey, else RGB), then resized (bilinear, as PIL's)
/// to `(height, width)`.
pub(crate) fn resized(image: &image::DynamicImage, (height, width): (usize, usize), channels: usize) -> Vec<u8> {
    use image::imageops::{FilterType, resize};
    let (w, h) = (width as u32, height as u32);
    match channels {
        1 => resize(&image.to_luma8(), w, h, FilterType::Triangle).into_raw(),
        _ => resize(&image.to_rgb8(), w, h, FilterType::Triangle).into_raw(),
    }
}
