//! Replays the committed fuzzing inputs of checkpoints, optimizer states and recipes
//! (`fuzz/inputs/`): each must be read or refused with an error, never panic; those named
//! `valid*` must be read.

#[path = "../../vit-data/tests/common/mod.rs"]
mod common;

use std::path::Path;

use candle_core::{Device, Var};
use vit_train::Recipe;
use vit_train::optim::{AdamW, AdamWConfig, Param};

#[test]
fn checkpoint_inputs() {
    let path = Path::new("fuzz.safetensors");
    for (name, data) in common::fuzz_inputs("checkpoint") {
        let built = vit_model::checkpoint::from_bytes(&data, path, &Device::Cpu)
            .and_then(|checkpoint| vit_model::Vit::from_checkpoint(&checkpoint, &Device::Cpu));
        assert_eq!(built.is_ok(), name.starts_with("valid"), "{name}: {:?}", built.err());
    }
}

#[test]
fn optimizer_state_inputs() {
    for (name, data) in common::fuzz_inputs("optimizer_state") {
        let var = |n: usize| Var::new(vec![0.5f32; n].as_slice(), &Device::Cpu).unwrap();
        let params = [
            Param { name: "w".into(), var: var(4), weight_decay: true, lr_scale: 1.0 },
            Param { name: "w.bias".into(), var: var(2), weight_decay: false, lr_scale: 1.0 },
        ];
        let mut optimizer = AdamW::new(&params, AdamWConfig::default()).unwrap();
        let loaded = candle_core::safetensors::load_buffer(&data, &Device::Cpu)
            .map_err(|e| e.to_string())
            .and_then(|tensors| optimizer.load_state(&tensors));
        assert_eq!(loaded.is_ok(), name.starts_with("valid"), "{name}: {loaded:?}");
    }
}

#[test]
fn recipe_inputs() {
    for (name, data) in common::fuzz_inputs("recipe") {
        let text = String::from_utf8_lossy(&data);
        let parsed = Recipe::parse(&text, Path::new(&name));
        if let Ok(recipe) = &parsed {
            recipe.model_config(Path::new(&name)).unwrap();
        }
        // The built-in recipes read; the broken ones do not.
        let builtin = vit_train::recipe::BUILTIN.iter().any(|(n, _)| format!("{n}.toml") == name);
        assert_eq!(parsed.is_ok(), builtin, "{name}: {:?}", parsed.err());
    }
}
