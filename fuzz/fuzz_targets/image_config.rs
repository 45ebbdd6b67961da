//! Image config blobs: the labels, platform and creation time a builder wrote.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_client::manifest::ImageConfig;

fuzz_target!(|data: &[u8]| {
    let _ = ImageConfig::parse(data);
});
