//! The confusion matrix as a heat map: rows the true class, columns the prediction, each row
//! coloured by its share (so that rare classes show as clearly as common ones), counts written
//! in the cells.

use anyhow::{Result, bail};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{bold, drawing, font, heat, picture};

const TITLE_HEIGHT: u32 = 50;

/// Where the cells go: `cell` pixels a side, the first at `(x0, y0)` below the title.
struct Layout {
    cell: u32,
    /// Column labels short enough to stand upright above their column.
    upright: bool,
    side: u32,
    x0: i32,
    y0: i32,
    width: u32,
    height: u32,
}

impl Layout {
    fn of(n: usize, class_names: &[String]) -> Self {
        let cell = (640 / n as u32).clamp(6, 64);
        let longest = class_names.iter().map(|s| s.chars().count()).max().unwrap_or(1).min(24) as u32;
        // Room for the rotated "true class" title, then for the row labels.
        let label_room = 26 + if n <= 40 { 12 + longest * 8 } else { 8 };
        let side = cell * n as u32;
        let upright = longest <= 3;
        let y0 = 26
            + if n > 40 {
                0
            } else if upright {
                18
            } else {
                longest as i32 * 7
            };
        let (width, height) = (label_room + side + 110, TITLE_HEIGHT + y0 as u32 + side + 20);
        Self { cell, upright, side, x0: label_room as i32, y0, width, height }
    }
}

/// The picture of `confusion[true][predicted]` counts, labelled with `class_names`.
pub fn confusion_matrix(confusion: &[Vec<usize>], class_names: &[String], title: &str) -> Result<image::RgbImage> {
    let n = confusion.len();
    if n == 0 || confusion.iter().any(|row| row.len() != n) || class_names.len() != n {
        bail!("a confusion matrix must be square with one name per class ({n} rows, {} names)", class_names.len());
    }
    let Layout { cell, side, x0, y0, width, height, upright } = Layout::of(n, class_names);
    picture(width, height, |root| {
        let (top, rest) = root.split_vertically(TITLE_HEIGHT);
        top.draw_text(title, &bold(17.0), (12, 14)).map_err(drawing)?;
        // Column labels above the cells are the predictions, row labels on the left the truth.
        rest.draw_text("predicted class →", &font(14.0), (x0, 0)).map_err(drawing)?;
        for (r, row) in confusion.iter().enumerate() {
            let total: usize = row.iter().sum();
            for (c, &count) in row.iter().enumerate() {
                let share = if total == 0 { f32::NAN } else { count as f32 / total as f32 };
                let (x, y) = (x0 + c as i32 * cell as i32, y0 + r as i32 * cell as i32);
                rest.draw(&Rectangle::new([(x, y), (x + cell as i32, y + cell as i32)], heat(share).filled()))
                    .map_err(drawing)?;
                if n <= 20 && count > 0 {
                    let ink: &'static RGBColor = if share > 0.6 { &BLACK } else { &WHITE };
                    let style = font((cell as f64 * 0.32).clamp(8.0, 14.0))
                        .color(ink)
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    rest.draw_text(&count.to_string(), &style, (x + cell as i32 / 2, y + cell as i32 / 2))
                        .map_err(drawing)?;
                }
            }
        }
        if n <= 40 {
            let size = (cell as f64 * 0.45).clamp(9.0, 14.0);
            for (i, name) in class_names.iter().enumerate() {
                let name: String = name.chars().take(24).collect();
                let centre = i as i32 * cell as i32 + cell as i32 / 2;
                let left = font(size).pos(Pos::new(HPos::Right, VPos::Center));
                rest.draw_text(&name, &left, (x0 - 6, y0 + centre)).map_err(drawing)?;
                if upright {
                    let above = font(size).pos(Pos::new(HPos::Center, VPos::Bottom));
                    rest.draw_text(&name, &above, (x0 + centre, y0 - 4)).map_err(drawing)?;
                } else {
                    let up = font(size).transform(FontTransform::Rotate270).pos(Pos::new(HPos::Left, VPos::Center));
                    rest.draw_text(&name, &up, (x0 + centre, y0 - 4)).map_err(drawing)?;
                }
            }
        }
        let side_text = font(14.0).transform(FontTransform::Rotate270).pos(Pos::new(HPos::Center, VPos::Top));
        rest.draw_text("true class →", &side_text, (4, y0 + side as i32 / 2)).map_err(drawing)?;
        // The colour scale: share of the row.
        let bar_x = x0 + side as i32 + 24;
        for k in 0..side as i32 {
            let v = 1.0 - k as f32 / side as f32;
            rest.draw(&Rectangle::new([(bar_x, y0 + k), (bar_x + 14, y0 + k + 1)], heat(v).filled()))
                .map_err(drawing)?;
        }
        for (v, y) in [(1.0, y0), (0.5, y0 + side as i32 / 2), (0.0, y0 + side as i32)] {
            let style = font(12.0).pos(Pos::new(HPos::Left, VPos::Center));
            rest.draw_text(&format!("{v:.1}"), &style, (bar_x + 18, y)).map_err(drawing)?;
        }
        let bar_text = font(12.0).transform(FontTransform::Rotate270).pos(Pos::new(HPos::Center, VPos::Top));
        rest.draw_text("share of the row", &bar_text, (bar_x + 46, y0 + side as i32 / 2)).map_err(drawing)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heat_map_colours_each_row_by_its_share() {
        let names: Vec<String> = ["zero", "one", "two"].iter().map(|s| s.to_string()).collect();
        let counts = [vec![9, 1, 0], vec![0, 0, 0], vec![0, 5, 15]];
        let img = confusion_matrix(&counts, &names, "test").unwrap();
        let layout = Layout::of(3, &names);
        assert_eq!(img.dimensions(), (layout.width, layout.height));
        // A corner of each cell, away from its count.
        let at = |r: u32, c: u32| {
            let x = layout.x0 as u32 + c * layout.cell + 2;
            let y = TITLE_HEIGHT + layout.y0 as u32 + r * layout.cell + 2;
            let p = img.get_pixel(x, y).0;
            RGBColor(p[0], p[1], p[2])
        };
        assert_eq!(at(0, 0), heat(0.9));
        assert_eq!(at(0, 1), heat(0.1));
        assert_eq!(at(2, 2), heat(0.75));
        assert_eq!(at(2, 1), heat(0.25));
        // A class without images is grey, not a row of zeros.
        assert_eq!(at(1, 1), heat(f32::NAN));
        let names = &names[..2];
        assert!(confusion_matrix(&[vec![1, 2]], names, "bad").is_err());
        assert!(confusion_matrix(&[vec![1]], names, "names").is_err());
        let many: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let big = vec![vec![1usize; 100]; 100];
        assert!(confusion_matrix(&big, &many, "100 classes").is_ok());
    }
}
