//! Trust groundwork for imagelib: deciding whether an image's signature can be believed.
//!
//! Pure functions over bytes the caller already fetched — no network and no I/O — so the
//! same code serves sync-scanner (discovery), catalog-projector and serving-deployer
//! (policy) and can be fuzzed. Everything read here is untrusted registry content: sizes
//! are bounded and a bad signature or a malformed payload is a [`cosign::Verdict`] value,
//! never a panic.
//!
//! Built on the RustCrypto crates rather than the `sigstore` crate, which pulls in an HTTP
//! stack, TUF and OCI clients this library must not have.

pub mod cosign;
