//! Every picture the `vit` command draws, with plotters into an RGB buffer that `image`
//! encodes as PNG: training curves, confusion matrices, sample predictions, attention maps,
//! patches, and the HTML report that inlines them.

pub mod attention;
pub mod confusion;
pub mod curves;
pub mod patches;
pub mod report;
pub mod samples;

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// The one font family every picture uses: DejaVu Sans, embedded.
pub const FONT: &str = "sans-serif";

/// Makes the embedded font known to plotters (once per process).
fn register_fonts() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        // The bytes are DejaVu's TTF files as the `dejavu` crate ships them; they parse, or
        // the crate is broken, and every picture would say so by its missing text.
        let _ = register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// The drawing area handed to a picture's code.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Draws a `width x height` picture on white with `draw` and returns it.
pub fn picture(width: u32, height: u32, draw: impl FnOnce(&Area) -> Result<()>) -> Result<RgbImage> {
    register_fonts();
    let mut buffer = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(|e| anyhow!("drawing: {e}"))?;
    }
    RgbImage::from_raw(width, height, buffer)
        .ok_or_else(|| anyhow!("drawing: the buffer does not match {width}x{height}"))
}

/// Writes `image` as a PNG at `path`, committed by a rename (a reader never sees half a file),
/// and returns the PNG's bytes (for a page that inlines them).
pub fn save_png(image: &RgbImage, path: &Path) -> Result<Vec<u8>> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut bytes = Vec::new();
    // The best compression: pictures of flat colours and thin lines shrink by a third.
    let encoder = image::codecs::png::PngEncoder::new_with_quality(
        &mut bytes,
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::Adaptive,
    );
    image.write_with_encoder(encoder).with_context(|| format!("encoding {}", path.display()))?;
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(bytes)
}

/// A plotters error as an `anyhow` one (plotters' errors borrow the backend's type).
pub fn drawing<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

/// The colour of `value` in `[0, 1]` (clamped; NaN is grey) on the viridis scale, which reads
/// the same in greyscale and to colour-blind eyes.
pub fn heat(value: f32) -> RGBColor {
    use plotters::style::colors::colormaps::{ColorMap, ViridisRGB};
    if value.is_nan() { RGBColor(128, 128, 128) } else { ViridisRGB.get_color(value.clamp(0.0, 1.0)) }
}

/// Text in the embedded font.
pub fn font(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

/// Bold text in the embedded font.
pub fn bold(size: f64) -> TextStyle<'static> {
    (FONT, size, FontStyle::Bold).into_font().color(&BLACK)
}

/// An image given as `[H, W, C]` bytes (C = 1 or 3) as RGB, each pixel a `zoom x zoom` square.
pub fn zoomed(pixels: &[u8], (h, w, c): (usize, usize, usize), zoom: u32) -> Result<RgbImage> {
    if pixels.len() != h * w * c || !(c == 1 || c == 3) {
        return Err(anyhow!("an image of {} bytes is not {h}x{w}x{c} (1 or 3 channels)", pixels.len()));
    }
    let zoom = zoom.max(1);
    Ok(RgbImage::from_fn(w as u32 * zoom, h as u32 * zoom, |x, y| {
        let i = (y / zoom) as usize * w + (x / zoom) as usize;
        let p = &pixels[i * c..][..c];
        if c == 1 { image::Rgb([p[0], p[0], p[0]]) } else { image::Rgb([p[0], p[1], p[2]]) }
    }))
}

/// Places `image` with its top-left corner at `(x, y)` of `area`.
pub fn blit(area: &Area, image: &RgbImage, (x, y): (i32, i32)) -> Result<()> {
    let element = BitMapElement::with_owned_buffer((x, y), image.dimensions(), image.as_raw().clone())
        .ok_or_else(|| anyhow!("drawing: a {}x{} image of the wrong size", image.width(), image.height()))?;
    area.draw(&element).map_err(drawing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_has_its_size_and_its_text_is_drawn() {
        let blank = picture(120, 40, |_| Ok(())).unwrap();
        let text = picture(120, 40, |area| area.draw_text("Quick BDFGJKMQWXZ", &font(14.0), (2, 10)).map_err(drawing))
            .unwrap();
        assert_eq!(text.dimensions(), (120, 40));
        // Letters the old pixel font left blank are ink now.
        let ink = |img: &RgbImage| img.pixels().filter(|p| p.0[0] < 128).count();
        assert_eq!(ink(&blank), 0);
        assert!(ink(&text) > 100, "{} dark pixels", ink(&text));
    }

    #[test]
    fn zoomed_checks_its_sizes() {
        let img = zoomed(&[0, 255, 255, 0], (2, 2, 1), 3).unwrap();
        assert_eq!(img.dimensions(), (6, 6));
        assert_eq!(img.get_pixel(3, 0).0, [255, 255, 255]);
        assert!(zoomed(&[0; 5], (2, 2, 1), 1).is_err());
        assert!(zoomed(&[0; 8], (2, 2, 2), 1).is_err());
    }
}
