//! What a module says about its parameters: their full names (the checkpoint keys) and whether
//! weight decay applies, so that an optimizer asks the model instead of guessing from names.

use candle_core::Tensor;

/// One parameter of a module.
#[derive(Debug, Clone)]
pub struct NamedParameter {
    /// The full name, as in checkpoints and the `VarBuilder` that made it (`blocks.0.norm1.weight`).
    pub name: String,
    /// The tensor (that of the variable, for a model built from a `SeededVarMap`).
    pub tensor: Tensor,
    /// Whether decoupled weight decay applies: weight matrices yes; biases, norms, position
    /// embeddings, class tokens and layer scales no (as timm and most ViT recipes do).
    pub weight_decay: bool,
}

impl NamedParameter {
    /// The parameter `local` of the module made under the `VarBuilder` prefix `prefix`.
    pub fn new(prefix: &str, local: &str, tensor: &Tensor, weight_decay: bool) -> Self {
        let name = if prefix.is_empty() { local.to_string() } else { format!("{prefix}.{local}") };
        Self { name, tensor: tensor.clone(), weight_decay }
    }
}
