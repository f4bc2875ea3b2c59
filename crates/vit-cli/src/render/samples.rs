//! A grid of images with the model's most probable classes; wrong predictions framed in red.

use anyhow::Result;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{blit, bold, drawing, font, picture, zoomed};

/// One classified image.
pub struct Sample {
    /// `[H, W, C]` bytes, C = 1 or 3.
    pub pixels: Vec<u8>,
    /// `(H, W, C)`.
    pub shape: (usize, usize, usize),
    /// The true class.
    pub label: usize,
    /// The most probable classes with their probabilities, best first (at least one).
    pub top: Vec<(usize, f32)>,
}

const WRONG: RGBColor = RGBColor(214, 39, 40);
const RIGHT: RGBColor = RGBColor(44, 160, 44);

/// The grid, `columns` wide, each image drawn about 96 pixels a side.
pub fn sample_grid(samples: &[Sample], class_names: &[String], columns: usize, title: &str) -> Result<image::RgbImage> {
    let columns = columns.clamp(1, samples.len().max(1));
    let rows = samples.len().div_ceil(columns).max(1);
    let side = samples.iter().map(|s| s.shape.0.max(s.shape.1)).max().unwrap_or(28).max(1);
    let zoom = (96 / side).max(1) as u32;
    let image_side = side as u32 * zoom;
    let (cell_w, cell_h) = ((image_side + 40).max(150), image_side + 78);
    let name = |i: usize| class_names.get(i).cloned().unwrap_or_else(|| format!("class {i}"));
    let wrong = samples.iter().filter(|s| s.top.first().map(|t| t.0) != Some(s.label)).count();
    picture(cell_w * columns as u32, cell_h * rows as u32 + 44, |root| {
        let heading = format!("{title}: {} of {} wrong (red)", wrong, samples.len());
        root.draw_text(&heading, &bold(16.0), (10, 12)).map_err(drawing)?;
        for (i, sample) in samples.iter().enumerate() {
            let (col, row) = ((i % columns) as i32, (i / columns) as i32);
            let (x, y) = (col * cell_w as i32, 44 + row * cell_h as i32);
            let left = x + (cell_w - image_side) as i32 / 2;
            let image = zoomed(&sample.pixels, sample.shape, zoom)?;
            blit(root, &image, (left, y + 4))?;
            let best = sample.top.first().copied().unwrap_or((usize::MAX, f32::NAN));
            let right = best.0 == sample.label;
            let colour: &'static RGBColor = if right { &RIGHT } else { &WRONG };
            let frame = [(left - 3, y + 1), (left + image_side as i32 + 2, y + image_side as i32 + 6)];
            root.draw(&Rectangle::new(frame, ShapeStyle::from(*colour).stroke_width(if right { 1 } else { 3 })))
                .map_err(drawing)?;
            let centre = x + cell_w as i32 / 2;
            let text_y = y + image_side as i32 + 18;
            let centred = |style: TextStyle<'static>| style.pos(Pos::new(HPos::Center, VPos::Center));
            let first = format!("{} {:.1}%", name(best.0), best.1 * 100.0);
            root.draw_text(&first, &centred(bold(13.0).color(colour)), (centre, text_y)).map_err(drawing)?;
            let second = match sample.top.get(1) {
                Some(&(class, p)) => format!("then {} {:.1}%", name(class), p * 100.0),
                None => String::new(),
            };
            root.draw_text(&second, &centred(font(12.0)), (centre, text_y + 18)).map_err(drawing)?;
            let truth = format!("true: {}", name(sample.label));
            root.draw_text(&truth, &centred(font(12.0).color(&RGBColor(90, 90, 90))), (centre, text_y + 36))
                .map_err(drawing)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_predictions_are_framed_in_red() {
        let names: Vec<String> = (0..3).map(|i| format!("c{i}")).collect();
        let sample = |label, best| Sample {
            pixels: vec![200; 28 * 28],
            shape: (28, 28, 1),
            label,
            top: vec![(best, 0.9), (2, 0.05)],
        };
        let img = sample_grid(&[sample(0, 0), sample(1, 0)], &names, 2, "test").unwrap();
        let (cell_w, image_side) = (150u32, 84u32);
        assert_eq!(img.dimensions(), (2 * cell_w, 84 + 78 + 44));
        // The frame's top edge, left of centre, in each cell.
        let frame = |col: u32| img.get_pixel(col * cell_w + (cell_w - image_side) / 2 + 10, 44 + 1).0;
        assert_eq!(frame(0), [RIGHT.0, RIGHT.1, RIGHT.2]);
        assert_eq!(frame(1), [WRONG.0, WRONG.1, WRONG.2]);
    }
}
