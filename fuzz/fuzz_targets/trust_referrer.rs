//! Referrer manifests and their blobs as a registry serves them: planning what to fetch and
//! reading signatures, attestations, reports and SBOMs out of them.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

const SUBJECT: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fuzz_target!(|input: (&[u8], Vec<(String, Vec<u8>)>)| {
    let (manifest, blobs) = input;
    let _ = imagelib_trust::referrer::plan(manifest);
    let blobs: BTreeMap<String, Vec<u8>> = blobs.into_iter().collect();
    let _ = imagelib_trust::referrer::interpret(SUBJECT, manifest, &blobs);
});
