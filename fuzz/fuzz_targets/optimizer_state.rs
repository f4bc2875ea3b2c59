//! The optimizer's saved moments, as a resume reads them (safetensors tensors).
#![no_main]

use candle_core::{Device, Var};
use libfuzzer_sys::fuzz_target;
use vit_train::optim::{AdamW, AdamWConfig, Param};

fuzz_target!(|data: &[u8]| {
    let Ok(tensors) = candle_core::safetensors::load_buffer(data, &Device::Cpu) else { return };
    let var = |n: usize| Var::new(vec![0.5f32; n].as_slice(), &Device::Cpu).unwrap();
    let params = [
        Param { name: "w".into(), var: var(4), weight_decay: true, lr_scale: 1.0 },
        Param { name: "w.bias".into(), var: var(2), weight_decay: false, lr_scale: 1.0 },
    ];
    let mut optimizer = AdamW::new(&params, AdamWConfig::default()).unwrap();
    let _ = optimizer.load_state(&tensors);
});
