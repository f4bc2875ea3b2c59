//! `curves.png`: loss and accuracy against epochs, drawn with the `image` crate and a tiny
//! built-in pixel font (no font files, no plotting dependency).

use std::path::Path;

use image::{Rgb, RgbImage};

use vit_train::EpochRecord;

const TRAIN: Rgb<u8> = Rgb([31, 119, 180]);
const VAL: Rgb<u8> = Rgb([255, 127, 14]);
const AXIS: Rgb<u8> = Rgb([60, 60, 60]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const SCALE: u32 = 2;

/// 3x5 glyphs, one row per entry, bit 2 = left column.
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'A' => [2, 5, 7, 5, 5],
        'C' => [3, 4, 4, 4, 3],
        'E' => [7, 4, 6, 4, 7],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'L' => [4, 4, 4, 4, 7],
        'N' => [5, 7, 7, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'Y' => [5, 5, 2, 2, 2],
        _ => [0; 5],
    }
}

fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, color: Rgb<u8>) {
    for (i, c) in s.chars().enumerate() {
        let rows = glyph(c);
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..3u32 {
                if bits & (4 >> col) != 0 {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            let px = x + (i as u32 * 4 + col) * SCALE + dx;
                            let py = y + r as u32 * SCALE + dy;
                            if px < img.width() && py < img.height() {
                                img.put_pixel(px, py, color);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: Rgb<u8>, thick: i64) {
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
    for s in 0..=steps {
        let x = x0 + (x1 - x0) * s / steps;
        let y = y0 + (y1 - y0) * s / steps;
        for dx in 0..thick {
            for dy in 0..thick {
                let (px, py) = (x + dx, y + dy);
                if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                    img.put_pixel(px as u32, py as u32, color);
                }
            }
        }
    }
}

struct Panel {
    x: i64,
    y: i64,
    w: i64,
    h: i64,
}

fn draw_panel(img: &mut RgbImage, p: &Panel, title: &str, series: [&[f64]; 2]) {
    let values: Vec<f64> = series.iter().flat_map(|s| s.iter().copied()).filter(|v| v.is_finite()).collect();
    let (mut lo, mut hi) = values.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    if values.is_empty() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    let pad = (hi - lo) * 0.05;
    let (lo, hi) = (lo - pad, hi + pad);
    let n = series.iter().map(|s| s.len()).max().unwrap_or(0).max(2);
    for k in 0..=4 {
        let y = p.y + p.h * k / 4;
        line(img, (p.x, y), (p.x + p.w, y), GRID, 1);
    }
    line(img, (p.x, p.y), (p.x, p.y + p.h), AXIS, 2);
    line(img, (p.x, p.y + p.h), (p.x + p.w, p.y + p.h), AXIS, 2);
    let to_px = |i: usize, v: f64| {
        let x = p.x + (p.w as f64 * i as f64 / (n - 1) as f64).round() as i64;
        let y = p.y + p.h - (p.h as f64 * (v - lo) / (hi - lo)).round() as i64;
        (x, y)
    };
    for (s, color) in series.iter().zip([TRAIN, VAL]) {
        let pts: Vec<(i64, i64)> =
            s.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| to_px(i, v)).collect();
        for pair in pts.windows(2) {
            line(img, pair[0], pair[1], color, 2);
        }
        for &(x, y) in &pts {
            line(img, (x - 2, y - 2), (x + 2, y - 2), color, 5);
        }
    }
    text(img, p.x as u32, (p.y - 24) as u32, title, AXIS);
    text(img, (p.x - 62).max(0) as u32, (p.y - 4) as u32, &format!("{hi:.3}"), AXIS);
    text(img, (p.x - 62).max(0) as u32, (p.y + p.h - 6) as u32, &format!("{lo:.3}"), AXIS);
    text(img, p.x as u32, (p.y + p.h + 10) as u32, "EPOCH 1", AXIS);
    let last = format!("{n}");
    text(img, (p.x + p.w - 8 * last.len() as i64) as u32, (p.y + p.h + 10) as u32, &last, AXIS);
}

/// Draws training and validation loss (left) and top-1 accuracy (right) per epoch.
pub fn write_curves(path: &Path, records: &[EpochRecord]) -> Result<(), image::ImageError> {
    let mut img = RgbImage::from_pixel(960, 380, Rgb([255, 255, 255]));
    let train_loss: Vec<f64> = records.iter().map(|r| r.train_loss).collect();
    let val_loss: Vec<f64> = records.iter().map(|r| r.val_loss.unwrap_or(f64::NAN)).collect();
    let train_acc: Vec<f64> = records.iter().map(|r| r.train_top1).collect();
    let val_acc: Vec<f64> = records.iter().map(|r| r.val_top1.unwrap_or(f64::NAN)).collect();
    draw_panel(&mut img, &Panel { x: 80, y: 50, w: 370, h: 270 }, "LOSS", [&train_loss, &val_loss]);
    draw_panel(&mut img, &Panel { x: 560, y: 50, w: 370, h: 270 }, "ACCURACY", [&train_acc, &val_acc]);
    text(&mut img, 380, 12, "TRAIN", TRAIN);
    text(&mut img, 440, 12, "VAL", VAL);
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)?;
    std::fs::rename(&tmp, path).map_err(image::ImageError::IoError)
}
