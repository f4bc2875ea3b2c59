//! The classification head: pooling of the token stream, an optional MLP, the classifier.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use vit_blocks::ModuleTree;
use vit_blocks::{Dropout, Linear, NamedParameter, SharedRng, WeightMap};

use crate::{HeadKind, VitConfig};

/// Pools the normalised tokens into one vector per image ([`HeadKind`]), runs the head MLP
/// (GELU and dropout after each layer) and the classifier.
///
/// Parameters: `layers.{j}.*` (the MLP) and `classifier.*`, under the model's `head`.
#[derive(Debug, Clone)]
pub struct ClassifierHead {
    pool: HeadKind,
    input_dropout: Dropout,
    layers: Vec<Linear>,
    dropout: Dropout,
    classifier: Linear,
}

impl ClassifierHead {
    /// The head of `cfg`; dropout draws from `rng`.
    pub fn new(cfg: &VitConfig, rng: SharedRng, vb: VarBuilder) -> Result<Self> {
        let mut layers = Vec::with_capacity(cfg.head_units.len());
        let mut prev = cfg.head_input_dim();
        for (j, &units) in cfg.head_units.iter().enumerate() {
            layers.push(Linear::new(prev, units, true, vb.pp(format!("layers.{j}")))?);
            prev = units;
        }
        let classifier = Linear::new(prev, cfg.num_classes, true, vb.pp("classifier"))?;
        // Only the Keras example's flatten head drops out its (very wide) input.
        let input_dropout = if cfg.head == HeadKind::Flatten { cfg.head_dropout } else { 0.0 };
        Ok(Self {
            pool: cfg.head,
            input_dropout: Dropout::new(input_dropout, rng.clone())?,
            layers,
            dropout: Dropout::new(cfg.head_dropout, rng)?,
            classifier,
        })
    }

    /// The classifier, the last layer.
    pub fn classifier(&self) -> &Linear {
        &self.classifier
    }

    /// Normalised tokens to logits, in the compute dtype; dropout only when `train`.
    ///
    /// # Shapes
    /// - `tokens`: `[B, T, D]`; returns `[B, num_classes]`.
    pub fn forward_t(&self, tokens: &Tensor, train: bool) -> Result<Tensor> {
        self.classify_t(&self.pool(tokens, train)?, train)
    }

    /// The tokens pooled into one vector per image (flatten with its dropout, the class
    /// token, or the mean).
    ///
    /// # Shapes
    /// - `tokens`: `[B, T, D]`; returns `[B, T * D]` (flatten) or `[B, D]`.
    pub fn pool(&self, tokens: &Tensor, train: bool) -> Result<Tensor> {
        match self.pool {
            HeadKind::Flatten => self.input_dropout.forward_t(&tokens.flatten_from(1)?, train),
            HeadKind::ClassToken => tokens.narrow(1, 0, 1)?.squeeze(1),
            HeadKind::MeanPool => tokens.mean(1),
        }
    }

    /// Pooled vectors to logits: the head MLP and the classifier.
    ///
    /// # Shapes
    /// - `pooled`: `[B, head_input_dim]`; returns `[B, num_classes]`.
    pub fn classify_t(&self, pooled: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = pooled.clone();
        for layer in &self.layers {
            h = layer.forward_dropout(&h, true, &self.dropout, train)?;
        }
        candle_core::Module::forward(&self.classifier, &h)
    }
}

impl ModuleTree for ClassifierHead {
    /// The same head with `f` applied to each parameter.
    fn map_weights(&self, f: &dyn WeightMap) -> Result<Self> {
        Ok(Self {
            layers: self.layers.iter().map(|l| l.map_weights(f)).collect::<Result<_>>()?,
            classifier: self.classifier.map_weights(f)?,
            ..self.clone()
        })
    }

    /// Its parameters.
    fn parameters(&self) -> Vec<NamedParameter> {
        self.layers.iter().chain([&self.classifier]).flat_map(Linear::parameters).collect()
    }
}
