//! The number formats a trained model can run inference in.

use std::fmt;
use std::str::FromStr;

/// How a model computes at inference (`vit eval`, `predict`, `explain`, `bench`
/// `--precision`). Training has its own choice (f32, or bf16/f16 with f32 master weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InferencePrecision {
    /// Everything in `f32`.
    #[default]
    F32,
    /// The parameters cast to `bfloat16`, softmax and LayerNorm in `f32`.
    Bf16,
    /// Every dense layer in int8 on the CPU: weights quantized once per output channel,
    /// inputs per row at run time, int32 sums; attention, softmax, LayerNorm and GELU in `f32`
    /// (see `vit_kernels::int8`).
    Int8,
}

impl InferencePrecision {
    /// Every precision, in the order `--help` lists them.
    pub const ALL: [Self; 3] = [Self::F32, Self::Bf16, Self::Int8];

    /// The name on the command line: `f32`, `bf16`, `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Int8 => "int8",
        }
    }
}

impl fmt::Display for InferencePrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InferencePrecision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("inference precision must be f32, bf16 or int8, not `{s}`"))
    }
}
