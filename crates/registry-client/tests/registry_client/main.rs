//! Integration tests against real `docker-registry` processes (imagelib-testkit), with a
//! fault-injecting proxy in front of them where a test needs a misbehaving registry.

mod auth;
mod common;
mod dockerhub;
mod faults;
mod gar;
mod ghcr;
mod harbor;
mod hostile;
mod network;
mod open;
mod referrers;
mod trust;
use imagelib_testkit::proxy;
