//! A checkpoint file: safetensors with the metadata of `vit_model::checkpoint` (its
//! preprocessing entries included), built into a model when it reads.
#![no_main]

use std::path::Path;

use candle_core::Device;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    if let Ok(checkpoint) = vit_model::checkpoint::from_bytes(data, path, &Device::Cpu) {
        let _ = vit_model::Vit::from_checkpoint(&checkpoint, &Device::Cpu);
    }
});
