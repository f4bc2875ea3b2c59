//! What `vit explain` draws for an image: the image, attention rollout, relevance for the
//! explained class, and the last block's attention per head, each map over the patches the
//! model cuts, blended on the image.

use anyhow::{Result, bail};
use image::{Rgb, RgbImage};
use plotters::prelude::*;
use vit_model::explain::{Explanation, Readout};

use super::{blit, bold, drawing, font, heat, picture, zoomed};

/// The image (`[H, W, C]` bytes at the model's input size) with `values` (one per patch of the
/// `grid`, row-major, `patch` pixels a side) scaled to their own range and blended on it in
/// colour; each pixel `zoom` times larger. Pixels outside the grid (cut off by VALID
/// patching) keep their grey.
pub fn overlay(
    pixels: &[u8],
    shape: (usize, usize, usize),
    grid: (usize, usize),
    patch: usize,
    values: &[f32],
    zoom: u32,
) -> Result<RgbImage> {
    if values.len() != grid.0 * grid.1 || patch == 0 {
        bail!("a map of {} values does not fit a {}x{} grid", values.len(), grid.0, grid.1);
    }
    let base = zoomed(pixels, shape, zoom)?;
    let (lo, hi) = values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let zoom = zoom.max(1);
    Ok(RgbImage::from_fn(base.width(), base.height(), |x, y| {
        let (px, py) = ((x / zoom) as usize, (y / zoom) as usize);
        let Rgb([r, g, b]) = *base.get_pixel(x, y);
        let grey = 0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b);
        let (row, col) = (py / patch, px / patch);
        if row >= grid.0 || col >= grid.1 {
            return Rgb([grey as u8; 3]);
        }
        // A faint line on patch borders shows the grid the values belong to.
        let border = (px % patch == 0 && x % zoom == 0) || (py % patch == 0 && y % zoom == 0);
        let value = (values[row * grid.1 + col] - lo) / span;
        let colour = heat(value);
        let mix = |c: u8| {
            let v = 0.4 * grey + 0.6 * f32::from(c);
            if border { v * 0.8 + 255.0 * 0.2 } else { v }
        };
        Rgb([mix(colour.0) as u8, mix(colour.1) as u8, mix(colour.2) as u8])
    }))
}

/// The whole picture of one explained image.
pub fn explanation_picture(
    pixels: &[u8],
    shape: (usize, usize, usize),
    patch: usize,
    explanation: &Explanation,
    class_names: &[String],
) -> Result<RgbImage> {
    let e = explanation;
    let name = |i: usize| class_names.get(i).cloned().unwrap_or_else(|| format!("class {i}"));
    let side = shape.0.max(shape.1).max(1);
    let zoom = (168 / side).max(1) as u32;
    let (panel_w, panel_h) = (shape.1 as u32 * zoom, shape.0 as u32 * zoom);
    let columns = 4u32;
    let cell_w = panel_w.max(150) + 24;
    let cell_h = panel_h + 34;
    let head_rows = e.heads.len().div_ceil(columns as usize) as u32;
    let top = 64u32;
    let height = top + cell_h * (1 + head_rows) + 34;
    let mut panels: Vec<(String, RgbImage)> = vec![
        ("image".into(), zoomed(pixels, shape, zoom)?),
        ("attention rollout".into(), overlay(pixels, shape, e.grid, patch, &e.rollout, zoom)?),
        (format!("relevance for {}", name(e.target)), overlay(pixels, shape, e.grid, patch, &e.relevance, zoom)?),
    ];
    let mut heads = Vec::new();
    for (k, map) in e.heads.iter().enumerate() {
        let title = match e.class_token_share.get(k) {
            Some(share) => format!("head {} ({:.0}% to class token)", k + 1, share * 100.0),
            None => format!("last block, head {}", k + 1),
        };
        heads.push((title, overlay(pixels, shape, e.grid, patch, map, zoom)?));
    }
    picture(cell_w * columns, height, |root| {
        let p = e.probabilities.get(e.predicted).copied().unwrap_or(f32::NAN);
        let heading = format!("predicted {} ({:.1}%)", name(e.predicted), p * 100.0);
        root.draw_text(&heading, &bold(17.0), (12, 10)).map_err(drawing)?;
        let whose = match e.readout {
            Readout::ClassToken => "maps follow the class token",
            Readout::MeanOverTokens => "maps follow the mean over all tokens (the head reads every token)",
        };
        let note = format!("{whose}; each map scaled to its own range, dark = low, yellow = high");
        root.draw_text(&note, &font(13.0), (12, 36)).map_err(drawing)?;
        let place = |title: &str, image: &RgbImage, col: u32, row_y: u32| -> Result<()> {
            let x = (col * cell_w + 12) as i32;
            root.draw_text(title, &font(13.0), (x, row_y as i32)).map_err(drawing)?;
            blit(root, image, (x, (row_y + 20) as i32))
        };
        for (col, (title, image)) in panels.drain(..).enumerate() {
            place(&title, &image, col as u32, top)?;
        }
        for (k, (title, image)) in heads.iter().enumerate() {
            let (col, row) = (k as u32 % columns, k as u32 / columns);
            place(title, image, col, top + cell_h * (1 + row))?;
        }
        // The colour scale.
        let y = (height - 24) as i32;
        for i in 0..200 {
            let c = heat(i as f32 / 199.0);
            root.draw(&Rectangle::new([(60 + i, y), (61 + i, y + 12)], c.filled())).map_err(drawing)?;
        }
        root.draw_text("low", &font(12.0), (28, y)).map_err(drawing)?;
        root.draw_text("high", &font(12.0), (266, y)).map_err(drawing)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heat_lands_on_the_right_patch() {
        // A 4x4 image of 2x2 patches; all weight on the top-right patch.
        let pixels = vec![0u8; 16];
        let img = overlay(&pixels, (4, 4, 1), (2, 2), 2, &[0.0, 1.0, 0.0, 0.0], 10).unwrap();
        assert_eq!(img.dimensions(), (40, 40));
        let hot = heat(1.0);
        let cold = heat(0.0);
        let expect =
            |c: RGBColor| [(0.6 * f32::from(c.0)) as u8, (0.6 * f32::from(c.1)) as u8, (0.6 * f32::from(c.2)) as u8];
        // Inside the top-right patch (away from the border lines), and inside the others.
        assert_eq!(img.get_pixel(30, 5).0, expect(hot));
        assert_eq!(img.get_pixel(5, 5).0, expect(cold));
        assert_eq!(img.get_pixel(30, 35).0, expect(cold));
        assert!(overlay(&pixels, (4, 4, 1), (2, 2), 2, &[0.0; 3], 1).is_err());
    }
}
