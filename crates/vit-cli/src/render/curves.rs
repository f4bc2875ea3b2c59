//! `curves.png`: loss, top-1, top-5 and learning rate against epochs, training and validation.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;
use vit_train::EpochRecord;

use super::{Area, bold, drawing, font, picture, save_png};

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(255, 127, 14);
const EMA: RGBColor = RGBColor(44, 160, 44);

/// A named, coloured line of `(epoch, value)` points.
type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// One panel: a title, what its values are, and up to two series (training, validation).
struct Panel<'a> {
    title: &'a str,
    y_label: &'a str,
    series: Vec<Series<'a>>,
    /// Accuracies live in [0, 1]: the axis never runs past 1.
    accuracy: bool,
    /// Learning rates: scientific tick labels.
    scientific: bool,
}

/// The axis range of a panel's finite values, padded; an accuracy axis is capped at 1.
fn y_range(panel: &Panel) -> (f64, f64) {
    let values: Vec<f64> =
        panel.series.iter().flat_map(|(_, _, s)| s.iter().map(|p| p.1)).filter(|v| v.is_finite()).collect();
    let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if values.is_empty() {
        return (0.0, 1.0);
    }
    let span = (hi - lo).max(hi.abs() * 1e-3).max(1e-12);
    let (lo, hi) = (lo - span * 0.08, hi + span * 0.08);
    if panel.accuracy {
        (lo.max(0.0), hi.min(1.0))
    } else if panel.scientific {
        (lo.max(0.0), hi)
    } else {
        (lo, hi)
    }
}

fn draw_panel(area: &Area, panel: &Panel, epochs: usize) -> Result<()> {
    let (lo, hi) = y_range(panel);
    let x_max = epochs.max(2) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, bold(17.0))
        .margin(10)
        .x_label_area_size(38)
        .y_label_area_size(62)
        .build_cartesian_2d(1.0..x_max, lo..hi)
        .map_err(drawing)?;
    let scientific = panel.scientific;
    let y_format = move |v: &f64| if scientific { format!("{v:.1e}") } else { format!("{v:.3}") };
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(panel.y_label)
        .label_style(font(13.0))
        .axis_desc_style(font(14.0))
        .x_labels(epochs.clamp(2, 10))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(6)
        .y_label_formatter(&y_format)
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(drawing)?;
    let mut labelled = false;
    for (name, color, points) in &panel.series {
        let finite: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
        if finite.is_empty() {
            continue;
        }
        let style = ShapeStyle::from(color).stroke_width(2);
        chart
            .draw_series(LineSeries::new(finite.clone(), style))
            .map_err(drawing)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        chart.draw_series(finite.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(drawing)?;
        labelled = true;
    }
    if labelled && panel.series.len() > 1 {
        chart
            .configure_series_labels()
            .position(if panel.accuracy { SeriesLabelPosition::LowerRight } else { SeriesLabelPosition::UpperRight })
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font(font(13.0))
            .draw()
            .map_err(drawing)?;
    }
    Ok(())
}

/// The four panels of a run's history, as a picture.
pub fn curves(records: &[EpochRecord]) -> Result<image::RgbImage> {
    let epoch = |r: &EpochRecord| r.epoch as f64;
    let pair = |train: fn(&EpochRecord) -> f64, val: fn(&EpochRecord) -> Option<f64>| {
        vec![
            ("train", TRAIN, records.iter().map(|r| (epoch(r), train(r))).collect::<Vec<_>>()),
            ("validation", VAL, records.iter().map(|r| (epoch(r), val(r).unwrap_or(f64::NAN))).collect()),
        ]
    };
    let panels = [
        Panel {
            title: "Loss",
            y_label: "cross-entropy",
            series: pair(|r| r.train_loss, |r| r.val_loss),
            accuracy: false,
            scientific: false,
        },
        Panel {
            title: "Top-1 accuracy",
            y_label: "accuracy",
            series: pair(|r| r.train_top1, |r| r.val_top1),
            accuracy: true,
            scientific: false,
        },
        Panel {
            title: "Top-5 accuracy",
            y_label: "accuracy",
            series: pair(|r| r.train_top5, |r| r.val_top5),
            accuracy: true,
            scientific: false,
        },
        Panel {
            title: "Learning rate (end of epoch)",
            y_label: "learning rate",
            series: vec![("learning rate", TRAIN, records.iter().map(|r| (epoch(r), r.learning_rate)).collect())],
            accuracy: false,
            scientific: true,
        },
    ];
    let mut panels = panels;
    if records.iter().any(|r| r.ema_val_top1.is_some()) {
        let points = records.iter().map(|r| (epoch(r), r.ema_val_top1.unwrap_or(f64::NAN))).collect();
        panels[1].series.push(("validation, moving average", EMA, points));
    }
    let epochs = records.iter().map(|r| r.epoch).max().unwrap_or(1);
    picture(1100, 760, |root| {
        for (area, panel) in root.split_evenly((2, 2)).iter().zip(&panels) {
            draw_panel(area, panel, epochs)?;
        }
        Ok(())
    })
}

/// Draws [`curves`] to `path`.
pub fn write_curves(path: &Path, records: &[EpochRecord]) -> Result<()> {
    save_png(&curves(records)?, path).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, top1: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            step: epoch as u64 * 10,
            train_loss: 2.0 / epoch as f64,
            train_top1: top1,
            train_top5: 0.99,
            val_loss: Some(2.2 / epoch as f64),
            val_top1: Some(top1 - 0.01),
            val_top5: None,
            ema_val_loss: None,
            ema_val_top1: None,
            ema_val_top5: None,
            learning_rate: 1e-3 / epoch as f64,
            train_seconds: 1.0,
            images_per_second: 100.0,
        }
    }

    #[test]
    fn the_curves_decode_with_their_size_and_accuracy_axes_stop_at_one() {
        let dir = std::env::temp_dir().join(format!("vit-curves-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("curves.png");
        write_curves(&path, &[record(1, 0.9), record(2, 0.999)]).unwrap();
        let img = image::open(&path).unwrap();
        assert_eq!((img.width(), img.height()), (1100, 760));
        let panel = Panel {
            title: "",
            y_label: "",
            series: vec![("", TRAIN, vec![(1.0, 0.5), (2.0, 1.0)])],
            accuracy: true,
            scientific: false,
        };
        assert_eq!(y_range(&panel).1, 1.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_epoch_or_nan_values_still_draw() {
        let mut r = record(1, 0.5);
        r.val_loss = Some(f64::NAN);
        assert_eq!(curves(&[r]).unwrap().dimensions(), (1100, 760));
        assert_eq!(curves(&[]).unwrap().dimensions(), (1100, 760));
    }
}
