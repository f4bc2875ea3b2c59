//! A training recipe (TOML), with its model config.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(recipe) = vit_train::Recipe::parse(text, Path::new("fuzz.toml")) {
        let _ = recipe.model_config(Path::new("fuzz.toml"));
        let _ = recipe.to_toml();
    }
});
