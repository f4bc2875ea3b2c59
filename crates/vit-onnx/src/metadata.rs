//! What an exported file says about itself, so that a consumer needs nothing else: the class
//! names in output order, and the preprocessing as steps to follow, in JSON.

use serde::Serialize;
use vit_data::Interpolation;
use vit_data::Preprocessing;

/// One step of bringing an image file to the graph's input, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Decode and convert to `mode` (`"RGB"` or `"L"`, grey), 8 bits per channel.
    Convert {
        /// PIL's mode name.
        mode: &'static str,
    },
    /// Resize to exactly `[height, width]` (the aspect ratio not kept).
    Resize {
        /// `[height, width]`.
        size: [usize; 2],
        /// `nearest`, `bilinear` or `bicubic` (PIL's filters).
        interpolation: &'static str,
    },
    /// Resize so that the shorter side is `size`, keeping the aspect ratio (the longer side
    /// rounded down).
    ResizeShorterSide {
        /// The shorter side after resizing.
        size: usize,
        /// `nearest`, `bilinear` or `bicubic`.
        interpolation: &'static str,
    },
    /// Cut out the centre `[height, width]`: offsets `round((size - crop) / 2)` with halves
    /// rounded to even (torchvision's, Python's `round`).
    CenterCrop {
        /// `[height, width]`.
        size: [usize; 2],
    },
    /// `(pixel / 255 - mean[c]) / std[c]` per channel.
    Normalize {
        /// Per channel, of pixels scaled to [0, 1].
        mean: Vec<f32>,
        /// Per channel.
        std: Vec<f32>,
    },
}

/// The preprocessing written into an exported file (key `vit.preprocessing`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreprocessingDescription {
    /// `"NHWC"`: the input is `[batch, height, width, channels]` float32.
    pub layout: &'static str,
    /// `[height, width]` of the input.
    pub input_size: [usize; 2],
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// The steps from an image file to one row of the input.
    pub steps: Vec<Step>,
}

impl PreprocessingDescription {
    /// The steps `prep` takes (`vit predict`'s), as a consumer in another language follows them.
    pub fn of(prep: &Preprocessing) -> Self {
        let (h, w) = prep.input;
        let mode = if prep.channels == 1 { "L" } else { "RGB" };
        let mut steps = vec![Step::Convert { mode }];
        match &prep.resize {
            Some(spec) => {
                let interpolation = spec.interpolation.name();
                match spec.crop_pct {
                    // timm's evaluation transform: the same rounding as `ResizeSpec::apply`.
                    Some(crop) if h == w => {
                        let size = ((h as f64 / crop).floor() as usize).max(1);
                        steps.push(Step::ResizeShorterSide { size, interpolation });
                        steps.push(Step::CenterCrop { size: [h, w] });
                    }
                    Some(crop) => {
                        let scaled = |side: usize| ((side as f64 / crop).floor() as usize).max(side);
                        steps.push(Step::Resize { size: [scaled(h), scaled(w)], interpolation });
                        steps.push(Step::CenterCrop { size: [h, w] });
                    }
                    None => steps.push(Step::Resize { size: [h, w], interpolation }),
                }
            }
            None => {
                // A run's checkpoint: read at the training data's size, then brought to the
                // model's input (the same size unless the recipe resized its data).
                let bilinear = Interpolation::Bilinear.name();
                let (rh, rw) = prep.read_size;
                steps.push(Step::Resize { size: [rh, rw], interpolation: bilinear });
                if (rh, rw) != (h, w) {
                    steps.push(Step::Resize { size: [h, w], interpolation: bilinear });
                }
            }
        }
        steps.push(Step::Normalize { mean: prep.normalizer.mean.clone(), std: prep.normalizer.std.clone() });
        Self { layout: "NHWC", input_size: [h, w], channels: prep.channels, steps }
    }

    /// As JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vit_data::ResizeSpec;
    use vit_data::augment::Normalizer;

    #[test]
    fn a_timm_crop_is_a_shorter_side_resize_then_a_centre_crop() {
        let prep = Preprocessing {
            resize: Some(ResizeSpec { interpolation: Interpolation::Bicubic, crop_pct: Some(0.9) }),
            normalizer: Normalizer { mean: vec![0.5; 3], std: vec![0.5; 3] },
            ..Preprocessing::identity((224, 224), 3)
        };
        let json = PreprocessingDescription::of(&prep).to_json();
        assert_eq!(
            json,
            r#"{"layout":"NHWC","input_size":[224,224],"channels":3,"steps":[{"op":"convert","mode":"RGB"},{"op":"resize_shorter_side","size":248,"interpolation":"bicubic"},{"op":"center_crop","size":[224,224]},{"op":"normalize","mean":[0.5,0.5,0.5],"std":[0.5,0.5,0.5]}]}"#
        );
    }

    #[test]
    fn a_run_reads_at_its_data_size_then_at_the_input() {
        let prep = Preprocessing { read_size: (32, 32), ..Preprocessing::identity((72, 72), 3) };
        let steps = PreprocessingDescription::of(&prep).steps;
        assert_eq!(steps[1], Step::Resize { size: [32, 32], interpolation: "bilinear" });
        assert_eq!(steps[2], Step::Resize { size: [72, 72], interpolation: "bilinear" });
        let grey = PreprocessingDescription::of(&Preprocessing::identity((28, 28), 1)).steps;
        assert_eq!(grey.len(), 3, "{grey:?}");
        assert_eq!(grey[0], Step::Convert { mode: "L" });
    }
}
