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
//!
//! Signature verification is offline against files: [`trust_root::TrustRoot`] (Sigstore's
//! `trusted_root.json`) for keyless cosign ([`keyless`]), Sigstore bundles ([`bundle`]) and
//! DSSE ([`dsse`]); [`notation::NotationTrustStore`] (CA PEMs) for Notation JWS
//! ([`notation`]). [`evidence::check_signature`] dispatches one stored signature to them;
//! each is a plain function, so a benchmark can time one verification by calling it.

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
pub mod timestamp;
pub mod trust_root;
pub mod vuln;
pub mod x509;
