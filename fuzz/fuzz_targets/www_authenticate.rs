//! `WWW-Authenticate` challenges (RFC 9110 §11.6.1) of a registry's 401 answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_client::auth::parse_challenges;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for challenge in parse_challenges(text) {
            let _ = challenge.param("realm");
        }
    }
});
