//! Manifests and indexes as a registry serves them: parsed under each `Content-Type` a
//! registry may claim (the first byte picks one), then classified.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_client::manifest::{Manifest, media_type};

const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some(media_type::OCI_INDEX),
    Some(media_type::OCI_MANIFEST),
    Some(media_type::DOCKER_MANIFEST_LIST),
    Some(media_type::DOCKER_MANIFEST),
    Some("application/octet-stream"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()];
    if let Ok((manifest, _media_type)) = Manifest::parse(content_type, body) {
        let _ = manifest.annotations();
        let _ = manifest.subject();
        let _ = manifest.artifact_type();
        match &manifest {
            Manifest::Image(m) => {
                let _ = m.content_size();
                let _ = m.effective_artifact_type();
            }
            Manifest::Index(i) => {
                let _ = i
                    .manifests
                    .iter()
                    .fold(0u64, |a, d| a.saturating_add(d.size));
            }
        }
    }
});
