//! The registry-registry's domain: what a registry and its credentials are, checked at the
//! edge so that the rest of the service only handles valid values.

pub mod credentials;
pub mod profiles;
pub mod registry;
pub mod webhook;
