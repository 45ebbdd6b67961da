//! `Link` headers of a registry's listings (RFC 8288): parsed, and the `rel="next"` target
//! resolved against the page's URL, for any bytes a registry sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_client::pagination::{next_link, parse_link_header};
use reqwest::header::{HeaderMap, HeaderValue, LINK};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_link_header(text);
    }
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(LINK, value);
        let base = url::Url::parse("https://registry.example:5000/v2/_catalog?n=100").unwrap();
        let _ = next_link(&headers, &base);
    }
});
