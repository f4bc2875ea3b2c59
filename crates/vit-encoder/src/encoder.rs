//! The PatchEncoder: patch projection plus position embedding.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use vit_blocks::ModuleTree;
use vit_blocks::{Linear, NamedParameter, WeightMap};
use vit_patches::{PatchSpec, extract_patch_tokens};

use crate::position::{Interpolation, PositionEmbedding, resize_grid, sincos_2d};

/// Shape and options of a [`PatchEncoder`].
#[derive(Debug, Clone, PartialEq)]
pub struct PatchEncoderConfig {
    /// How images are cut into patches: the one patch spec of a model.
    pub patch: PatchSpec,
    /// Channels of the input images.
    pub channels: usize,
    /// The patch grid `(rows, cols)`: `num_patches = rows * cols`.
    pub grid: (usize, usize),
    /// Width of the token stream.
    pub projection_dim: usize,
    /// Prepend a learned class token (with a position of its own).
    pub class_token: bool,
    /// Learned table or fixed 2-D sin-cos.
    pub position: PositionEmbedding,
}

impl PatchEncoderConfig {
    /// The Keras example's encoder: learned positions, no class token. Images of `channels`
    /// channels are cut by `patch` into a `grid` of patches, each projected to `projection_dim`.
    pub fn new(patch: PatchSpec, channels: usize, grid: (usize, usize), projection_dim: usize) -> Self {
        Self { patch, channels, grid, projection_dim, class_token: false, position: PositionEmbedding::Learned }
    }

    /// Length of one flattened patch, `kh * kw * channels`.
    pub fn patch_dim(&self) -> usize {
        self.patch.size.0 * self.patch.size.1 * self.channels
    }

    /// Number of patches, `rows * cols`.
    pub fn num_patches(&self) -> usize {
        self.grid.0 * self.grid.1
    }

    /// Number of output tokens: the patches, plus one for the class token.
    pub fn num_tokens(&self) -> usize {
        self.num_patches() + usize::from(self.class_token)
    }
}

/// Projects each patch to `projection_dim` and adds a position embedding, as the Keras
/// example's `PatchEncoder`; optionally prepends a class token.
///
/// Parameters: `projection.weight` `[D, P]`, `projection.bias` `[D]`,
/// `position_embedding.weight` `[N(+1), D]` (learned positions only), `class_token` `[1, 1, D]`
/// (with a class token only).
#[derive(Debug, Clone)]
pub struct PatchEncoder {
    projection: Linear,
    position: Tensor,
    class_token: Option<Tensor>,
    cfg: PatchEncoderConfig,
    prefix: String,
}

impl PatchEncoder {
    /// Builds the encoder.
    pub fn new(cfg: &PatchEncoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.projection_dim;
        let projection = Linear::new(cfg.patch_dim(), d, true, vb.pp("projection"))?;
        let class_token = if cfg.class_token {
            Some(vb.get_with_hints((1, 1, d), "class_token", Init::Randn { mean: 0.0, stdev: 0.02 })?)
        } else {
            None
        };
        let position = match cfg.position {
            // Keras' Embedding initialiser: uniform in [-0.05, 0.05].
            PositionEmbedding::Learned => vb.pp("position_embedding").get_with_hints(
                (cfg.num_tokens(), d),
                "weight",
                Init::Uniform { lo: -0.05, up: 0.05 },
            )?,
            PositionEmbedding::SinCos2d => {
                let table = sincos_2d(cfg.grid.0, cfg.grid.1, d, vb.device())?.to_dtype(vb.dtype())?;
                if cfg.class_token { table.pad_with_zeros(0, 1, 0)? } else { table }
            }
        };
        Ok(Self { projection, position, class_token, cfg: cfg.clone(), prefix: vb.prefix() })
    }

    /// The configuration.
    pub fn config(&self) -> &PatchEncoderConfig {
        &self.cfg
    }

    /// The position table in use, `[N(+1), D]`.
    pub fn position_table(&self) -> &Tensor {
        &self.position
    }

    /// The same encoder for another patch grid, e.g. to run at another resolution: the
    /// learned position grid is resampled (class token kept), a sin-cos table recomputed.
    /// The new table is a function of the trained one, so fine-tuning through it still trains
    /// the original parameters.
    pub fn with_grid(&self, grid: (usize, usize), interpolation: Interpolation) -> Result<Self> {
        let cfg = PatchEncoderConfig { grid, ..self.cfg.clone() };
        let position = match self.cfg.position {
            PositionEmbedding::Learned => {
                resize_grid(&self.position, self.cfg.grid, grid, self.cfg.class_token, interpolation)?
            }
            PositionEmbedding::SinCos2d => {
                let table = sincos_2d(grid.0, grid.1, cfg.projection_dim, self.position.device())?
                    .to_dtype(self.position.dtype())?;
                if cfg.class_token { table.pad_with_zeros(0, 1, 0)? } else { table }
            }
        };
        Ok(Self { position, cfg, ..self.clone() })
    }

    /// Cuts NHWC images into patches with the config's patch spec and encodes them.
    ///
    /// # Shapes
    /// - `images`: `[B, H, W, C]`; returns `[B, N(+1), D]`.
    pub fn forward_images(&self, images: &Tensor) -> Result<Tensor> {
        let tokens = extract_patch_tokens(images, &self.cfg.patch).map_err(candle_core::Error::wrap)?;
        self.forward(&tokens)
    }
}

impl ModuleTree for PatchEncoder {
    /// The same encoder with `f` applied to each parameter (a cast for mixed precision, say).
    fn map_weights(&self, f: &dyn WeightMap) -> Result<Self> {
        Ok(Self {
            projection: self.projection.map_weights(f)?,
            position: f.tensor(&self.position)?,
            class_token: self.class_token.as_ref().map(|t| f.tensor(t)).transpose()?,
            ..self.clone()
        })
    }

    /// Its parameters: the projection (its weight decays), the learned position table and the
    /// class token (neither decays). A sin-cos table is no parameter.
    fn parameters(&self) -> Vec<NamedParameter> {
        let mut out = self.projection.parameters();
        if self.cfg.position == PositionEmbedding::Learned {
            out.push(NamedParameter::new(&self.prefix, "position_embedding.weight", &self.position, false));
        }
        out.extend(self.class_token.iter().map(|t| NamedParameter::new(&self.prefix, "class_token", t, false)));
        out
    }
}

impl Module for PatchEncoder {
    /// # Shapes
    /// - `patches`: `[B, N, patch_dim]` (from `vit_patches::extract_patch_tokens`)
    /// - returns: `[B, N(+1), projection_dim]`
    fn forward(&self, patches: &Tensor) -> Result<Tensor> {
        let (b, n, _) = patches.dims3()?;
        if n != self.cfg.num_patches() {
            candle_core::bail!(
                "patch encoder: got {n} patches, expected {} for a {}x{} grid (use with_grid for another resolution)",
                self.cfg.num_patches(),
                self.cfg.grid.0,
                self.cfg.grid.1
            );
        }
        let x = self.projection.forward(patches)?;
        let x = match &self.class_token {
            Some(token) => Tensor::cat(&[&token.broadcast_as((b, 1, self.cfg.projection_dim))?, &x], 1)?,
            None => x,
        };
        x.broadcast_add(&self.position)
    }
}
