//! IDX files, raw or gzipped: images and labels, as `vit_data::idx` reads them.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.idx");
    if let Ok(bytes) = vit_data::idx::decode_maybe_gz(data.to_vec(), path) {
        let _ = vit_data::idx::parse_images(&bytes, path);
        let _ = vit_data::idx::parse_labels(&bytes, path);
        // The same bytes as both files of a data set (the first byte picks the class count).
        let classes = (1 + data.first().copied().unwrap_or(0) % 20) as usize;
        let names = (0..classes).map(|c| c.to_string()).collect();
        let _ = vit_data::idx::from_bytes("fuzz", &bytes, path, &bytes, path, names);
    }
});
