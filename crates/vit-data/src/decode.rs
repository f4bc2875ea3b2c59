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
    let mut reader = complete_image(bytes, path)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(1 << 13);
    limits.max_image_height = Some(1 << 13);
    limits.max_alloc = Some(1 << 28);
    reader.limits(limits);
    reader.decode().map_err(|e| unreadable(e.to_string()))
}

/// A reader of the encoded image `bytes` (`path` names it in errors), its format guessed from
/// the content, refused when the file stops before its format's end ([`cut_off`]).
pub(crate) fn complete_image<'a>(
    bytes: &'a [u8],
    path: &Path,
) -> Result<image::ImageReader<std::io::Cursor<&'a [u8]>>, DataError> {
    let unreadable = |message: String| DataError::UnreadableImage { path: path.into(), message };
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| unreadable(e.to_string()))?;
    match reader.format().and_then(|format| cut_off(bytes, format)) {
        Some(what) => Err(unreadable(what)),
        None => Ok(reader),
    }
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

/// What is missing when an encoded image stops before its format's end: a file cut off in a
/// copy or a download. The decoders of some formats fill what is missing (the lower part of a
/// JPEG comes out grey) rather than fail, so the end is checked here, as PIL refuses a
/// truncated file: a PNG must reach its `IEND` chunk, a JPEG must end its last scan with an
/// end-of-image marker, a GIF must end with its trailer byte. `None`: complete, or a format
/// that is not checked.
fn cut_off(bytes: &[u8], format: image::ImageFormat) -> Option<String> {
    match format {
        image::ImageFormat::Png => png_cut_off(bytes),
        image::ImageFormat::Jpeg => {
            // Markers cannot occur inside entropy-coded data (a 0xFF byte there is followed by
            // 0x00), so the last start-of-scan must be followed by an end-of-image marker; an
            // EXIF thumbnail's own markers come before the first scan.
            let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
            match (last(0xDA), last(0xD9)) {
                (Some(scan), Some(end)) if end > scan => None,
                _ => Some("the JPEG data stops before its end-of-image marker: the file is cut off".into()),
            }
        }
        image::ImageFormat::Gif if bytes.last() != Some(&0x3B) => {
            Some("the GIF data stops before its trailer byte: the file is cut off".into())
        }
        _ => None,
    }
}

/// [`cut_off`] of a PNG: its chunks (length, type, data, CRC) followed from the signature to
/// `IEND`.
fn png_cut_off(bytes: &[u8]) -> Option<String> {
    let mut at = 8usize;
    while let Some(header) = at.checked_add(8).and_then(|end| bytes.get(at..end)) {
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if &header[4..8] == b"IEND" && bytes.len() - at >= 12 {
            return None;
        }
        at = at.saturating_add(12).saturating_add(length);
    }
    Some("the PNG data stops before its IEND chunk: the file is cut off".into())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A 128x128 RGB image with detail everywhere, encoded in `format`.
    fn encoded(format: image::ImageFormat) -> Vec<u8> {
        let img = image::RgbImage::from_fn(128, 128, |x, y| {
            image::Rgb([(x * 2) as u8, (y * 2) as u8, ((x * y) % 251) as u8])
        });
        let mut bytes = Vec::new();
        image::DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut bytes), format).unwrap();
        bytes
    }

    #[test]
    fn an_image_cut_off_is_unreadable_not_padded() {
        for format in [image::ImageFormat::Jpeg, image::ImageFormat::Gif, image::ImageFormat::Png] {
            let whole = encoded(format);
            assert!(decode_image(&whole, Path::new("whole"), 8, 8, 3).is_ok(), "{format:?}");
            for keep in [whole.len() / 2, whole.len() - 1] {
                let err = decode_image(&whole[..keep], Path::new("cut.img"), 8, 8, 3).unwrap_err();
                let DataError::UnreadableImage { path, message } = &err else { panic!("{format:?}: {err}") };
                assert_eq!(path, Path::new("cut.img"));
                assert!(message.contains("cut off"), "{format:?}: {message}");
            }
        }
    }
}
