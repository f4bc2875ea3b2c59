//! The typed values of the command line: each flag that takes one of a fixed set of values is an
//! enum, so `--help` lists the choices and a typo is a usage error that names them.

use candle_core::Device;
use clap::ValueEnum;
use vit_data::DatasetKind;
use vit_train::Precision;

/// `--device`: where to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    /// CUDA, then Metal, then the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
    /// The Metal device.
    Metal,
}

/// Parses `auto`, `cpu`, `cuda`, `cuda:N` or `metal` (clap's value parser for `--device`).
pub fn parse_device(s: &str) -> Result<DeviceArg, String> {
    let expected = "expected one of auto, cpu, cuda, cuda:N (N a GPU number), metal";
    match s {
        "auto" => Ok(DeviceArg::Auto),
        "cpu" => Ok(DeviceArg::Cpu),
        "cuda" => Ok(DeviceArg::Cuda(0)),
        "metal" => Ok(DeviceArg::Metal),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(DeviceArg::Cuda(n)),
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
            Self::Cuda(n) => Device::new_cuda(n).with_context(|| {
                format!("--device cuda:{n}: this build has no CUDA support (build with --features cuda) or no such GPU")
            })?,
        })
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

/// `--data` of `vit eval`: a data set by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataArg {
    /// The MNIST test set compiled into `vit`.
    EmbeddedMnist,
    /// MNIST IDX files.
    Mnist,
    /// Fashion-MNIST IDX files.
    FashionMnist,
    /// CIFAR-10 binary batches.
    Cifar10,
    /// CIFAR-100 binary files, fine labels.
    Cifar100,
    /// An image folder: `DIR/test/<class>/<image>`.
    Folder,
}

impl DataArg {
    pub fn kind(self) -> DatasetKind {
        match self {
            Self::EmbeddedMnist => DatasetKind::EmbeddedMnist,
            Self::Mnist => DatasetKind::Mnist,
            Self::FashionMnist => DatasetKind::FashionMnist,
            Self::Cifar10 => DatasetKind::Cifar10,
            Self::Cifar100 => DatasetKind::Cifar100,
            Self::Folder => DatasetKind::Folder,
        }
    }
}

/// The data sets `vit download` fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DownloadArg {
    Mnist,
    FashionMnist,
    Cifar10,
    Cifar100,
}

impl DownloadArg {
    pub fn kind(self) -> DatasetKind {
        match self {
            Self::Mnist => DatasetKind::Mnist,
            Self::FashionMnist => DatasetKind::FashionMnist,
            Self::Cifar10 => DatasetKind::Cifar10,
            Self::Cifar100 => DatasetKind::Cifar100,
        }
    }
}

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
        assert_eq!(parse_device("cuda:3"), Ok(DeviceArg::Cuda(3)));
        assert_eq!(parse_device("cuda"), Ok(DeviceArg::Cuda(0)));
        assert_eq!(parse_device("cpu"), Ok(DeviceArg::Cpu));
        for bad in ["gpu", "cuda:", "cuda:x", "CPU"] {
            let err = parse_device(bad).unwrap_err();
            assert!(err.contains(bad) && err.contains("auto, cpu, cuda, cuda:N"), "{err}");
        }
    }
}
