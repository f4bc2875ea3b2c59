//! An image file of an image folder (any format the `image` crate reads), decoded and resized.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.img");
    let _ = vit_data::decode_image(data, path, 8, 8, 1);
    let _ = vit_data::decode_image(data, path, 5, 7, 3);
});
