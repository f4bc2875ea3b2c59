//! CIFAR-10 and CIFAR-100 binary batches.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vit_data::Cifar100Labels;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.bin");
    let _ = vit_data::parse_cifar10(data, path);
    let _ = vit_data::parse_cifar100(data, path, Cifar100Labels::Fine);
    let _ = vit_data::parse_cifar100(data, path, Cifar100Labels::Coarse);
});
