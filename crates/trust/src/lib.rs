//! Trust groundwork for imagelib: deciding whether an image's signature and its
//! attestations can be believed, and what they say.
//!
//! Pure functions over bytes the caller already fetched — no network and no I/O — so the
//! same code serves sync-scanner (discovery), catalog-projector and serving-deployer
//! (policy) and can be fuzzed. Everything read here is untrusted registry content: sizes
//! are bounded and a bad signature is a [`cosign::Verdict`] value, a malformed report an
//! error value, never a panic.
//!
//! Built on the RustCrypto crates rather than the `sigstore` crate, which pulls in an HTTP
//! stack, TUF and OCI clients this library must not have.

pub mod attestation;
pub mod bundle;
pub mod cosign;
pub mod dsse;
pub mod evidence;
pub mod keyless;
pub mod notation;
pub mod policy;
pub mod referrer;
pub mod sbom;
pub mod trust_root;
pub mod vuln;
pub mod x509;
