//! Registry types whose vendor differs from a plain Docker Registry: how an address is
//! normalised, which names mean what, and where credentials may go.

pub mod dockerhub;
pub mod gar;
pub mod ghcr;
pub mod harbor;
