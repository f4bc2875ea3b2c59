//! What a model looks at, as maps over its patch grid: attention rollout (Abnar & Zuidema,
//! 2020), the last block's attention per head, and gradient-weighted relevance (Chefer, Gur &
//! Wolf, 2021).
//!
//! [`explain`] computes all three for a batch of prepared images; the building blocks
//! ([`attention_rollout`], [`relevance_rollout`], [`read_out`]) take the arrays for users who
//! collect attention themselves.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use vit_model::explain::{Target, explain};
//! use vit_model::{Vit, VitConfig};
//!
//! let cfg = VitConfig { num_layers: 2, ..VitConfig::mnist() };
//! let (model, _) = Vit::init(&cfg, 7, &Device::Cpu)?;
//! let images = Tensor::rand(0f32, 1., (2, 28, 28, 1), &Device::Cpu)?;
//! let maps = explain(&model, &images, Target::Predicted)?;
//! let (rows, cols) = maps[0].grid;
//! assert_eq!(maps[0].rollout.len(), rows * cols);
//! assert_eq!(maps[0].heads.len(), cfg.num_heads);
//! // Each head's map is a distribution over the patches.
//! let total: f32 = maps[0].heads[0].iter().sum();
//! assert!((total - 1.0).abs() < 1e-4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use candle_core::{D, DType, Result, Tensor, Var};

use crate::{HeadKind, ModelError, Vit};
use vit_blocks::ModuleTree;

/// Whose attention a map follows: the class token's (what a class-token head reads), or the
/// mean over all tokens (what mean-pool and flatten heads read, every token feeding them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readout {
    /// The class token's row.
    ClassToken,
    /// The mean of all tokens' rows.
    MeanOverTokens,
}

impl Readout {
    /// The readout that matches how `head` turns tokens into a vector.
    pub fn of(head: HeadKind) -> Self {
        match head {
            HeadKind::ClassToken => Readout::ClassToken,
            HeadKind::Flatten | HeadKind::MeanPool => Readout::MeanOverTokens,
        }
    }
}

/// Which class the relevance map explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Each image's most probable class.
    Predicted,
    /// This class for every image.
    Class(usize),
}

/// The maps of one image. Every map is over the patch grid, row-major, `grid.0 * grid.1`
/// values.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// Class probabilities.
    pub probabilities: Vec<f32>,
    /// The most probable class.
    pub predicted: usize,
    /// The class the relevance explains.
    pub target: usize,
    /// The patch grid `(rows, cols)`.
    pub grid: (usize, usize),
    /// Whose attention the maps follow.
    pub readout: Readout,
    /// Attention rollout over all blocks, read out for the patches.
    pub rollout: Vec<f32>,
    /// The last block's attention, one map per head, each renormalised over the patches so
    /// that it sums to 1.
    pub heads: Vec<Vec<f32>>,
    /// With a class token: the share of each head's last-block attention that went to the
    /// class token itself (left out of `heads`). Empty otherwise.
    pub class_token_share: Vec<f32>,
    /// Gradient-weighted relevance of the patches for `target`.
    pub relevance: Vec<f32>,
}

/// Attention rollout: in each block the heads' mean plus the identity (the residual path),
/// halved so that rows still sum to 1, multiplied from the first block to the last.
///
/// # Shapes
/// - `attention`: one `[B, H, T, T]` per block, rows summing to 1; returns `[B, T, T]`, whose
///   row `i` says how much each input token reaches token `i` at the output.
pub fn attention_rollout(attention: &[Tensor]) -> Result<Tensor> {
    let mut rollout: Option<Tensor> = None;
    for weights in attention {
        let (b, _, t, _) = weights.dims4()?;
        let eye = identity(b, t, weights)?;
        let mixed = ((weights.mean(1)? + eye)? * 0.5)?;
        // Rows of the mean sum to 1, so do those of the mix: renormalising keeps weights that
        // do not (a user's own, or rounding) from drifting.
        let mixed = mixed.broadcast_div(&mixed.sum_keepdim(D::Minus1)?)?;
        rollout = Some(match rollout {
            None => mixed,
            Some(below) => mixed.matmul(&below)?,
        });
    }
    rollout.ok_or_else(|| candle_core::Error::Msg("attention rollout: no blocks".into()))
}

/// Chefer et al.'s relevance propagation with attention as the relevance: `R = I`, then for
/// each block from the first `R = R + mean_h((∇A ⊙ A)⁺) R`.
///
/// # Shapes
/// - `gradient_weighted`: one `[B, H, T, T]` per block, `∂score/∂A ⊙ A`; returns `[B, T, T]`.
pub fn relevance_rollout(gradient_weighted: &[Tensor]) -> Result<Tensor> {
    let first = gradient_weighted.first().ok_or_else(|| candle_core::Error::Msg("relevance: no blocks".into()))?;
    let (b, _, t, _) = first.dims4()?;
    let mut relevance = identity(b, t, first)?;
    for g in gradient_weighted {
        let positive = g.relu()?.mean(1)?;
        relevance = (&relevance + positive.matmul(&relevance)?)?;
    }
    Ok(relevance)
}

/// The patch tokens' values of a token-to-token map, as `readout` follows it, without the
/// `prefix_tokens` (the class token) before the patches.
///
/// # Shapes
/// - `map`: `[..., T, T]`; returns `[..., T - prefix_tokens]`.
pub fn read_out(map: &Tensor, readout: Readout, prefix_tokens: usize) -> Result<Tensor> {
    let t = map.dim(D::Minus1)?;
    if prefix_tokens >= t {
        candle_core::bail!("read_out: {prefix_tokens} prefix tokens of {t}");
    }
    let rows = match readout {
        Readout::ClassToken => map.narrow(D::Minus2, 0, 1)?.squeeze(D::Minus2)?,
        Readout::MeanOverTokens => map.mean(D::Minus2)?,
    };
    rows.narrow(D::Minus1, prefix_tokens, t - prefix_tokens)
}

/// The three maps for each image of `images` (prepared as the model takes them), in one
/// forward and one backward pass.
///
/// # Shapes
/// - `images`: `[B, H, W, C]` as [`Vit::forward`] takes them.
pub fn explain(model: &Vit, images: &Tensor, target: Target) -> std::result::Result<Vec<Explanation>, ModelError> {
    let cfg = model.config();
    if let Target::Class(class) = target
        && class >= cfg.num_classes
    {
        return Err(ModelError::InvalidArgument {
            what: "explain target class".into(),
            message: format!("{class} is not a class of this model (it has {})", cfg.num_classes),
        });
    }
    // Detached weights: only the probes are variables, so the backward pass computes nothing
    // else.
    let model = model.detached();
    let batch = images.dim(0)?;
    let tokens = cfg.num_tokens();
    let probes = (0..cfg.num_layers)
        .map(|_| Var::ones((batch, cfg.num_heads, tokens, tokens), DType::F32, images.device()))
        .collect::<Result<Vec<_>>>()?;
    let probe_tensors: Vec<Tensor> =
        probes.iter().map(|p| p.as_tensor().to_dtype(model.compute_dtype())).collect::<Result<_>>()?;
    let (logits, attention) = model.forward_with_attention_probes(images, &probe_tensors)?;
    let probabilities = vit_kernels::softmax_last_dim(&logits.detach().contiguous()?)?.to_vec2::<f32>()?;
    let predicted: Vec<usize> =
        logits.detach().argmax(D::Minus1)?.to_vec1::<u32>()?.into_iter().map(|i| i as usize).collect();
    let targets: Vec<usize> = match target {
        Target::Predicted => predicted.clone(),
        Target::Class(class) => vec![class; batch],
    };
    // The images do not interact, so the gradient of the sum of each image's target logit is
    // each image's own gradient.
    let pick = Tensor::from_vec(targets.iter().map(|&t| t as u32).collect::<Vec<_>>(), (batch, 1), images.device())?;
    let score = logits.gather(&pick, 1)?.sum_all()?;
    let grads = score.backward()?;
    let attention: Vec<Tensor> = attention.iter().map(|a| a.detach().to_dtype(DType::F32)).collect::<Result<_>>()?;
    let mut weighted = Vec::with_capacity(probes.len());
    for probe in &probes {
        let g = grads
            .get(probe.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("explain: no gradient reached an attention probe".into()))?;
        weighted.push(g.to_dtype(DType::F32)?);
    }

    let readout = Readout::of(cfg.head);
    let prefix = tokens - cfg.num_patches();
    let rollout = read_out(&attention_rollout(&attention)?, readout, prefix)?.to_vec2::<f32>()?;
    let relevance = read_out(&relevance_rollout(&weighted)?, readout, prefix)?.to_vec2::<f32>()?;
    let last = attention.last().ok_or_else(|| candle_core::Error::Msg("explain: the model has no blocks".into()))?;
    let heads = read_out(last, readout, prefix)?.to_vec3::<f32>()?;

    let mut out = Vec::with_capacity(batch);
    for i in 0..batch {
        let mut per_head = Vec::with_capacity(cfg.num_heads);
        let mut shares = Vec::new();
        for map in &heads[i] {
            let total: f32 = map.iter().sum();
            if prefix > 0 {
                shares.push(1.0 - total);
            }
            per_head.push(map.iter().map(|v| v / total).collect());
        }
        out.push(Explanation {
            probabilities: probabilities[i].clone(),
            predicted: predicted[i],
            target: targets[i],
            grid: cfg.grid(),
            readout,
            rollout: rollout[i].clone(),
            heads: per_head,
            class_token_share: shares,
            relevance: relevance[i].clone(),
        });
    }
    Ok(out)
}

fn identity(batch: usize, tokens: usize, like: &Tensor) -> Result<Tensor> {
    Tensor::eye(tokens, like.dtype(), like.device())?.unsqueeze(0)?.broadcast_as((batch, tokens, tokens))?.contiguous()
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::VitConfig;

    fn t4(values: &[f32], shape: (usize, usize, usize, usize)) -> Tensor {
        Tensor::from_slice(values, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn rollout_of_two_hand_built_blocks() {
        // Block 1: token 0 keeps to itself, token 1 splits evenly. Mixed with the identity:
        // [[1, 0], [0.25, 0.75]]. Block 2 swaps the tokens: [[0.5, 0.5], [0.5, 0.5]].
        // Their product, block 2 after block 1: [[0.625, 0.375], [0.625, 0.375]].
        let first = t4(&[1.0, 0.0, 0.5, 0.5], (1, 1, 2, 2));
        let second = t4(&[0.0, 1.0, 1.0, 0.0], (1, 1, 2, 2));
        let rollout = attention_rollout(&[first, second]).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(rollout[0], vec![vec![0.625, 0.375], vec![0.625, 0.375]]);
        // Two heads averaged: heads [[1,0],[0,1]] and [[0,1],[1,0]] mean to 0.5 everywhere.
        let heads = t4(&[1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0], (1, 2, 2, 2));
        let rollout = attention_rollout(&[heads]).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(rollout[0], vec![vec![0.75, 0.25], vec![0.25, 0.75]]);
    }

    #[test]
    fn read_out_follows_the_class_token_or_all_tokens() {
        let map =
            Tensor::from_slice(&[0.1f32, 0.2, 0.7, 0.3, 0.3, 0.4, 0.5, 0.25, 0.25], (1, 3, 3), &Device::Cpu).unwrap();
        let cls = read_out(&map, Readout::ClassToken, 1).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(cls[0], vec![0.2, 0.7]);
        let mean = read_out(&map, Readout::MeanOverTokens, 0).unwrap().to_vec2::<f32>().unwrap();
        for (got, want) in mean[0].iter().zip([0.3, 0.25, 0.45]) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert!(read_out(&map, Readout::ClassToken, 3).is_err());
    }

    #[test]
    fn relevance_of_negative_gradients_is_the_identity() {
        let g = t4(&[-1.0, -2.0, -0.5, -0.1], (1, 1, 2, 2));
        let r = relevance_rollout(&[g]).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(r[0], vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        // One positive entry: R = I + A I.
        let g = t4(&[0.0, 2.0, 0.0, 0.0], (1, 1, 2, 2));
        let r = relevance_rollout(&[g]).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(r[0], vec![vec![1.0, 2.0], vec![0.0, 1.0]]);
    }

    fn tiny(head: HeadKind) -> (Vit, Tensor) {
        let cfg = VitConfig {
            image_size: [8, 8],
            channels: 1,
            patch_size: 4,
            projection_dim: 8,
            num_heads: 2,
            key_dim: 4,
            num_layers: 2,
            mlp_units: vec![16, 8],
            head_units: vec![12],
            head,
            ..VitConfig::mnist()
        };
        let (model, _) = Vit::init(&cfg, 3, &Device::Cpu).unwrap();
        let images = vit_rng::tensors::uniform(0f32, 1., (2, 8, 8, 1), 1, &Device::Cpu).unwrap();
        (model, images)
    }

    /// The relevance of [`explain`] against the same propagation fed with gradients measured by
    /// central differences of the target logit, one probe entry at a time.
    fn relevance_matches_finite_differences(head: HeadKind) {
        let (model, images) = tiny(head);
        let cfg = model.config().clone();
        let explained = explain(&model, &images, Target::Class(3)).unwrap();
        let (b, h, t) = (2, cfg.num_heads, cfg.num_tokens());
        let ones = vec![1f32; b * h * t * t];
        let logit = |probes: &[Vec<f32>]| -> Vec<f64> {
            let probes: Vec<Tensor> = probes.iter().map(|p| t4(p, (b, h, t, t))).collect();
            let (logits, _) = model.forward_with_attention_probes(&images, &probes).unwrap();
            logits.to_vec2::<f32>().unwrap().iter().map(|row| f64::from(row[3])).collect()
        };
        let eps = 1e-2f32;
        let mut weighted = Vec::new();
        for block in 0..cfg.num_layers {
            let mut g = vec![0f32; ones.len()];
            for (j, slot) in g.iter_mut().enumerate() {
                let mut probes = vec![ones.clone(); cfg.num_layers];
                probes[block][j] = 1.0 + eps;
                let up = logit(&probes);
                probes[block][j] = 1.0 - eps;
                let down = logit(&probes);
                // Entry j belongs to image j / (h t t); the other image's logit does not move.
                let image = j / (h * t * t);
                // ∂logit/∂probe = ∂logit/∂A ⊙ A at probe = 1.
                let derivative = ((up[image] - down[image]) / (2.0 * f64::from(eps))) as f32;
                assert!((up[1 - image] - down[1 - image]).abs() < 1e-6, "images interact");
                *slot = derivative;
            }
            weighted.push(t4(&g, (b, h, t, t)));
        }
        let prefix = t - cfg.num_patches();
        let reference = read_out(&relevance_rollout(&weighted).unwrap(), Readout::of(head), prefix)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (e, want) in explained.iter().zip(&reference) {
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (got, want) in e.relevance.iter().zip(want) {
                assert!((got - want).abs() <= 1e-3 * scale.max(1.0), "{head:?}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn relevance_matches_finite_differences_with_a_class_token() {
        relevance_matches_finite_differences(HeadKind::ClassToken);
    }

    #[test]
    fn relevance_matches_finite_differences_with_mean_pool() {
        relevance_matches_finite_differences(HeadKind::MeanPool);
    }

    #[test]
    fn head_maps_are_distributions_and_probes_of_ones_change_nothing() {
        for head in [HeadKind::ClassToken, HeadKind::MeanPool, HeadKind::Flatten] {
            let (model, images) = tiny(head);
            let explained = explain(&model, &images, Target::Predicted).unwrap();
            let plain = model.forward(&images, false).unwrap().to_vec2::<f32>().unwrap();
            let cfg = model.config();
            let ones: Vec<Tensor> = (0..cfg.num_layers)
                .map(|_| {
                    Tensor::ones((2, cfg.num_heads, cfg.num_tokens(), cfg.num_tokens()), DType::F32, &Device::Cpu)
                        .unwrap()
                })
                .collect();
            let probed = model.forward_with_attention_probes(&images, &ones).unwrap().0.to_vec2::<f32>().unwrap();
            for (a, b) in probed.iter().flatten().zip(plain.iter().flatten()) {
                assert!((a - b).abs() < 1e-5, "{head:?}: probed {a} vs plain {b}");
            }
            for (e, logits) in explained.iter().zip(&plain) {
                let best = logits.iter().enumerate().fold(0, |b, (i, v)| if *v > logits[b] { i } else { b });
                assert_eq!((e.predicted, e.target), (best, best));
                assert_eq!(e.heads.len(), 2);
                for (k, map) in e.heads.iter().enumerate() {
                    assert_eq!(map.len(), 4);
                    assert!(map.iter().all(|v| *v >= 0.0));
                    let total: f32 = map.iter().sum();
                    assert!((total - 1.0).abs() < 1e-5, "{head:?} head {k}: sums to {total}");
                }
                assert_eq!(e.class_token_share.len(), if head == HeadKind::ClassToken { 2 } else { 0 });
                let p: f32 = e.probabilities.iter().sum();
                assert!((p - 1.0).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn a_class_the_model_lacks_is_an_error() {
        let (model, images) = tiny(HeadKind::MeanPool);
        let err = explain(&model, &images, Target::Class(10)).unwrap_err().to_string();
        assert!(err.contains("10") && err.contains("it has 10"), "{err}");
    }
}
