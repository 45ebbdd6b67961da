//! A token server's JSON answer: the token and how long it is used (a huge or odd
//! `expires_in` must neither panic nor keep a token for more than a day).
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_client::auth::token_response_lifetime;

fuzz_target!(|data: &[u8]| {
    if let Some(lifetime) = token_response_lifetime(data) {
        assert!(lifetime <= std::time::Duration::from_secs(24 * 3600));
    }
});
