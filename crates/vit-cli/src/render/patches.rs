//! `vit patches`: an image with the patch grid and each patch's index, and beside it the
//! patches cut apart, as the Keras example shows them.

use anyhow::Result;
use image::RgbImage;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{blit, bold, drawing, font, picture, zoomed};

/// `image` `[H, W, 3]` bytes and its `patches` (`rows x cols` of `patch x patch x 3` bytes,
/// row-major, as `extract_patches` returns them).
pub fn patches_picture(
    image: &[u8],
    side: usize,
    patches: &[u8],
    (rows, cols): (usize, usize),
    patch: usize,
) -> Result<RgbImage> {
    let zoom = (360 / side.max(1)).max(1) as u32;
    let shown = side as u32 * zoom;
    let cell = patch as u32 * zoom;
    let gap = 3u32;
    let grid_w = cols as u32 * (cell + gap);
    let grid_h = rows as u32 * (cell + gap);
    let top = 40u32;
    let patch_len = patch * patch * 3;
    if patches.len() != rows * cols * patch_len {
        anyhow::bail!("{} patch values do not make {rows}x{cols} patches of {patch}x{patch}x3", patches.len());
    }
    picture(shown + 40 + grid_w + 20, top + shown.max(grid_h) + 20, |root| {
        let title = format!("{side}x{side} image, {rows}x{cols} patches of {patch}x{patch}");
        root.draw_text(&title, &bold(16.0), (10, 10)).map_err(drawing)?;
        let (x0, y0) = (10i32, top as i32);
        blit(root, &zoomed(image, (side, side, 3), zoom)?, (x0, y0))?;
        let line = ShapeStyle::from(&WHITE.mix(0.8)).stroke_width(1);
        for r in 0..=rows as i32 {
            let y = y0 + r * cell as i32;
            root.draw(&PathElement::new(vec![(x0, y), (x0 + cols as i32 * cell as i32, y)], line)).map_err(drawing)?;
        }
        for c in 0..=cols as i32 {
            let x = x0 + c * cell as i32;
            root.draw(&PathElement::new(vec![(x, y0), (x, y0 + rows as i32 * cell as i32)], line)).map_err(drawing)?;
        }
        // Indices where they fit: the order of the patches (and of the tokens) the model sees.
        let size = (f64::from(cell) * 0.4).min(14.0);
        if size >= 7.0 {
            let style = font(size).color(&WHITE).pos(Pos::new(HPos::Center, VPos::Center));
            let shadow = font(size).color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center));
            for r in 0..rows {
                for c in 0..cols {
                    let (x, y) = (x0 + (c as u32 * cell + cell / 2) as i32, y0 + (r as u32 * cell + cell / 2) as i32);
                    let index = (r * cols + c).to_string();
                    root.draw_text(&index, &shadow, (x + 1, y + 1)).map_err(drawing)?;
                    root.draw_text(&index, &style, (x, y)).map_err(drawing)?;
                }
            }
        }
        let left = (shown + 40) as i32;
        for r in 0..rows {
            for c in 0..cols {
                let values = &patches[(r * cols + c) * patch_len..][..patch_len];
                let at = (left + (c as u32 * (cell + gap)) as i32, y0 + (r as u32 * (cell + gap)) as i32);
                blit(root, &zoomed(values, (patch, patch, 3), zoom)?, at)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_patch_is_drawn_where_its_index_says() {
        // A 4x4 image, 2x2 patches: patch k filled with the value 60 k.
        let mut image = vec![0u8; 4 * 4 * 3];
        let mut patches = Vec::new();
        for k in 0..4u8 {
            patches.extend(std::iter::repeat_n(60 * k, 2 * 2 * 3));
            let (r, c) = (k as usize / 2, k as usize % 2);
            for y in 0..2 {
                for x in 0..2 {
                    let i = ((r * 2 + y) * 4 + c * 2 + x) * 3;
                    image[i..i + 3].fill(60 * k);
                }
            }
        }
        let img = patches_picture(&image, 4, &patches, (2, 2), 2).unwrap();
        let zoom = 90;
        let cell = 2 * zoom;
        let left = 4 * zoom + 40;
        // The last patch, bottom right of the cut-apart grid, away from its edges.
        let p = img.get_pixel(left + (cell + 3) + 10, 40 + (cell + 3) + 10).0;
        assert_eq!(p, [180, 180, 180]);
        assert!(patches_picture(&image, 4, &patches[..10], (2, 2), 2).is_err());
    }
}
