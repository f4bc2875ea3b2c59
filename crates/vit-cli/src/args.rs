//! The typed values of the command line: each flag that takes one of a fixed set of values is an
//! enum, so `--help` lists the choices and a typo is a usage error that names them.

use candle_core::Device;
use clap::ValueEnum;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use vit_data::DatasetKind;
use vit_train::Precision;

/// `--device`: where to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    /// CUDA, then Metal, then the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// A CUDA device: GPU N for `cuda:N`; for `cuda`, GPU 0, or in an NCCL job the GPU of the
    /// rank's local rank.
    Cuda(Option<usize>),
    /// The Metal device.
    Metal,
}

/// Parses `auto`, `cpu`, `cuda`, `cuda:N` or `metal` (clap's value parser for `--device`).
pub fn parse_device(s: &str) -> Result<DeviceArg, String> {
    let expected = "expected one of auto, cpu, cuda, cuda:N (N a GPU number), metal";
    match s {
        "auto" => Ok(DeviceArg::Auto),
        "cpu" => Ok(DeviceArg::Cpu),
        "cuda" => Ok(DeviceArg::Cuda(None)),
        "metal" => Ok(DeviceArg::Metal),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(DeviceArg::Cuda(Some(n))),
            _ => Err(format!("`{s}`: {expected}")),
        },
    }
}

impl DeviceArg {
    /// Opens the device; an unavailable one is an error saying what the build or machine lacks.
    pub fn open(self) -> anyhow::Result<Device> {
        use anyhow::Context;
        Ok(match self {
            Self::Cpu => Device::Cpu,
            Self::Metal => Device::new_metal(0).context("--device metal: this build has no Metal support or no GPU")?,
            Self::Auto => {
                if candle_core::utils::cuda_is_available() {
                    Device::new_cuda(0)?
                } else if candle_core::utils::metal_is_available() {
                    Device::new_metal(0)?
                } else {
                    Device::Cpu
                }
            }
            Self::Cuda(n) => {
                let n = n.unwrap_or(0);
                Device::new_cuda(n).with_context(|| {
                    format!(
                        "--device cuda:{n}: this build has no CUDA support (build with --features cuda) or no such GPU"
                    )
                })?
            }
        })
    }

    /// Opens the GPU of a rank whose rank on its machine is `local_rank` (an NCCL job: one GPU
    /// per rank). `cuda` and `auto` mean that GPU; a numbered GPU, the CPU or Metal is an error.
    #[cfg_attr(not(feature = "nccl"), allow(dead_code))]
    pub fn open_local_gpu(self, local_rank: usize) -> anyhow::Result<Device> {
        use anyhow::{Context, bail};
        match self {
            Self::Cuda(None) | Self::Auto => Device::new_cuda(local_rank).with_context(|| {
                format!(
                    "--distributed nccl: GPU {local_rank} (this rank's local rank) cannot be opened: fewer GPUs than ranks on this machine, no GPU driver, or no CUDA support in this build"
                )
            }),
            Self::Cuda(Some(n)) => bail!(
                "--device cuda:{n} with --distributed nccl: each rank takes the GPU of its local rank; pass --device cuda"
            ),
            Self::Cpu | Self::Metal => bail!(
                "--distributed nccl needs CUDA GPUs (--device cuda); on CPUs use --distributed mpi"
            ),
        }
    }
}

/// The short name of a device, as `vit` prints it.
pub fn device_name(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

/// `--epochs`, `--batch-size`, `--limit-train`: a whole number of at least 1.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}`: expected a whole number of at least 1")),
    }
}

/// `--lr`: a positive, finite number.
pub fn positive_number(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("`{s}`: expected a positive number")),
    }
}

/// `--log-every`: a finite number of seconds, at least 0 (at most a day).
pub fn at_least_zero(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=86_400.0).contains(&x) => Ok(x),
        _ => Err(format!("`{s}`: expected a number of seconds from 0 to 86400")),
    }
}

/// A value parser for a data set named on the command line, one of `kinds`: `--help` lists
/// their names and any other is a usage error that lists them.
pub fn dataset_parser(kinds: &'static [DatasetKind]) -> impl TypedValueParser<Value = DatasetKind> {
    PossibleValuesParser::new(kinds.iter().map(|k| k.name()))
        .try_map(|name| DatasetKind::parse(&name).ok_or_else(|| format!("`{name}` is no data set")))
}

/// The data sets `vit download` fetches.
pub const DOWNLOADABLE: [DatasetKind; 4] =
    [DatasetKind::Mnist, DatasetKind::FashionMnist, DatasetKind::Cifar10, DatasetKind::Cifar100];

/// `--precision`: the compute dtype of training and of `vit bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// Everything in f32.
    F32,
    /// bfloat16 compute, f32 master weights.
    Bf16,
    /// float16 compute, f32 master weights, dynamic loss scaling.
    F16,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
            PrecisionArg::F16 => Precision::F16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_a_typo_names_the_choices() {
        assert_eq!(parse_device("cuda:3"), Ok(DeviceArg::Cuda(Some(3))));
        assert_eq!(parse_device("cuda"), Ok(DeviceArg::Cuda(None)));
        assert_eq!(parse_device("cpu"), Ok(DeviceArg::Cpu));
        for bad in ["gpu", "cuda:", "cuda:x", "CPU"] {
            let err = parse_device(bad).unwrap_err();
            assert!(err.contains(bad) && err.contains("auto, cpu, cuda, cuda:N"), "{err}");
        }
    }

    #[test]
    fn counts_and_rates_reject_zero_negative_and_non_finite_values() {
        assert_eq!(at_least_one("3"), Ok(3));
        for bad in ["0", "-1", "1.5", ""] {
            assert!(at_least_one(bad).unwrap_err().contains("at least 1"), "{bad}");
        }
        assert_eq!(positive_number("1e-3"), Ok(1e-3));
        for bad in ["0", "-1", "NaN", "inf", "x"] {
            assert!(positive_number(bad).unwrap_err().contains("positive"), "{bad}");
        }
    }
}
